#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char path[64];

static const char *write_conf(const char *text)
{
	snprintf(path, sizeof(path), "/tmp/pn_test_config_XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void expect_error(const char *text, const char *fragment1, const char *fragment2)
{
	pn_config *c = NULL;
	char err[512] = "";
	assert_true(pn_config_load(write_conf(text), &c, err, sizeof(err)) < 0);
	assert_null(c);
	unlink(path);
	if (!strstr(err, fragment1) || (fragment2 && !strstr(err, fragment2)))
		fail_msg("error \"%s\" should mention \"%s\" and \"%s\"", err, fragment1, fragment2 ? fragment2 : "");
}

static void defaults(void **state)
{
	(void)state;
	pn_config *c = NULL;
	char err[256];
	assert_int_equal(pn_config_load(NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c->ae_title, "PACSNODE");
	assert_int_equal(c->port, 11112);
	assert_true(c->accept_unknown_calling_ae);
	assert_int_equal(c->duplicate_policy, PN_DUP_IGNORE);
	assert_int_equal(c->commit_retry_for, 86400);
	assert_int_equal(c->max_inflated_mib, 1024);
	assert_int_equal(c->write_mode, PN_WRITE_AUTO);
	assert_true(c->min_free_bytes == UINT64_C(1) << 30);
	/* retention deletes nothing unless told */
	assert_true(c->max_storage_bytes == 0);
	assert_int_equal(c->max_study_age_days, 0);
	assert_false(c->delete_for_free_space);
	assert_int_equal(c->retention_policy, PN_RETENTION_RECEIVED);
	assert_int_equal(c->deletes_per_minute, 30);
	assert_int_equal(c->retention_interval, 60);
	pn_config_free(c);
}

static void full_file(void **state)
{
	(void)state;
	pn_config *c = NULL;
	char err[256];
	const char *p =
	    write_conf("; comment\n[node]\nae_title = MYNODE\nport = 4242\nbind = 127.0.0.1\n"
	               "accept_unknown_calling_ae = no\n[limits]\nworkers = 3\nmax_associations = 9\n"
	               "max_pdu = 32768\ndimse_timeout = 0\n[storage]\nroot = /srv/x\n"
	               "duplicate_policy = reject\nwrite_mode = buffered\n[database]\nconninfo = host=/tmp dbname=x\n"
	               "[log]\nlevel = debug\n[peer.ws]\nae_title = WS1\nhost = 10.0.0.5\nport = 104\n"
	               "allow = find, move\n[retention]\nmin_free_gib = 0.5\nmax_storage_gib = 2.5\n"
	               "max_study_age_days = 3650\ndelete_for_free_space = yes\npolicy = accessed\n"
	               "deletes_per_minute = 5\ninterval = 10\n");
	assert_int_equal(pn_config_load(p, &c, err, sizeof(err)), 0);
	unlink(path);
	assert_string_equal(c->ae_title, "MYNODE");
	assert_int_equal(c->port, 4242);
	assert_false(c->accept_unknown_calling_ae);
	assert_int_equal(c->workers, 3);
	assert_int_equal(c->max_pdu, 32768);
	assert_int_equal(c->dimse_timeout, 0);
	assert_string_equal(c->storage_root, "/srv/x");
	assert_int_equal(c->duplicate_policy, PN_DUP_REJECT);
	assert_int_equal(c->write_mode, PN_WRITE_BUFFERED);
	assert_true(c->min_free_bytes == UINT64_C(1) << 29);
	assert_true(c->max_storage_bytes == UINT64_C(5) << 29);
	assert_int_equal(c->max_study_age_days, 3650);
	assert_true(c->delete_for_free_space);
	assert_int_equal(c->retention_policy, PN_RETENTION_ACCESSED);
	assert_int_equal(c->deletes_per_minute, 5);
	assert_int_equal(c->retention_interval, 10);
	assert_string_equal(c->conninfo, "host=/tmp dbname=x");
	assert_int_equal(c->log_level, PN_LOG_DEBUG);
	const pn_peer *peer = pn_config_find_peer(c, "WS1");
	assert_non_null(peer);
	assert_int_equal(peer->port, 104);
	assert_int_equal(peer->allow, PN_ALLOW_FIND | PN_ALLOW_MOVE);
	assert_null(pn_config_find_peer(c, "OTHER"));
	pn_config_free(c);
}

static void bad_files(void **state)
{
	(void)state;
	expect_error("[node]\nport = 70000\n", ":2:", "70000");
	expect_error("[node]\nae_title = THIS_TITLE_IS_TOO_LONG\n", ":2:", "AE title");
	expect_error("[node]\nae_title = A\\B\n", ":2:", "AE title");
	expect_error("[limits]\n\nworkers = many\n", ":3:", "integer");
	expect_error("[storage]\nduplicate_policy = overwrite\n", ":2:", "ignore, replace or reject");
	expect_error("[storage]\nmax_inflated_mib = 0\n", ":2:", "max_inflated_mib");
	expect_error("[storage]\nroot = /x\nwrite_mode = o_direct\n", ":3:", "auto, direct or buffered");
	expect_error("[node]\nprot = 11112\n", ":2:", "unknown key \"prot\"");
	expect_error("[retention]\nmin_free_gib = -1\n", ":2:", "GiB");
	expect_error("[retention]\nmin_free_gib = lots\n", ":2:", "GiB");
	expect_error("[retention]\nmin_free_gib = 1e9\n", ":2:", "GiB");
	expect_error("[retention]\npolicy = oldest\n", ":2:", "received");
	expect_error("[retention]\ndeletes_per_minute = 0\n", ":2:", "deletes_per_minute");
	expect_error("[retention]\nmax_study_age_days = -3\n", ":2:", "max_study_age_days");
	expect_error("[nodes]\nport = 11112\n", ":2:", "[nodes]");
	expect_error("[node]\nthis line has no equals sign\n", ":2:", "syntax");
	expect_error("[node]\nrequire_called_ae = maybe\n", ":2:", "yes or no");
	expect_error("[log]\nlevel = loud\n", ":2:", "debug");
	expect_error("[limits]\nworkers = 8\nmax_associations = 4\n", "max_associations", NULL);
	expect_error("[peer.a]\nhost = x\n", "ae_title is missing", NULL);
	expect_error("[peer.a]\nallow = store, delete\n", ":2:", "store, find, move, get, commit");
	expect_error("[peer.a]\nae_title = MOD\nhost = 127.0.0.1\nallow = store, commit\n", "allow = commit needs",
	             "host and port");
	expect_error("[commitment]\nretry_for = -1\n", ":2:", "retry_for");
}

static void tls_audit_and_peer_binding(void **state)
{
	(void)state;
	pn_config *c = NULL;
	char err[512];
	const char *p = write_conf(
	    "[node]\nport = 0\n[tls]\nport = 2763\ncertificate = /etc/n.pem\nprivate_key = /etc/n.key\n"
	    "ca = /etc/ca.pem\ncrl = /etc/crl.pem\n[audit]\ntarget = tls://127.0.0.1:6514\nspool = /var/spool/a\n"
	    "spool_max_mib = 8\n[peer.ct]\nae_title = CT1\nhost = 127.0.0.1\nport = 104\n"
	    "addresses = 10.1.2.0/24, 192.168.7.9\ntls = yes\n"
	    "certificate_sha256 = ab:CD:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:"
	    "ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89\n"
	    "[peer.mr]\nae_title = MR1\nhost = 127.0.0.2\ncertificate_subject = CN=mr1,O=Hospital\n"
	    "[peer.us]\nae_title = US1\n");
	if (pn_config_load(p, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	unlink(path);
	assert_int_equal(c->port, 0);
	assert_true(pn_config_tls_listener(c));
	assert_int_equal(c->tls_port, 2763);
	assert_string_equal(c->tls_crl, "/etc/crl.pem");
	assert_true(c->tls_require_client_certificate);
	assert_int_equal(c->audit_kind, PN_AUDIT_TLS);
	assert_string_equal(c->audit_host, "127.0.0.1");
	assert_int_equal(c->audit_port, 6514);
	assert_int_equal(c->audit_spool_max_mib, 8);
	const pn_peer *ct = pn_config_find_peer(c, "CT1");
	assert_true(ct->tls);
	assert_true(ct->has_cert_sha256);
	assert_int_equal(ct->cert_sha256[0], 0xab);
	assert_int_equal(ct->cert_sha256[1], 0xcd);
	assert_int_equal(ct->cert_sha256[31], 0x89);
	/* addresses replace host for admission */
	assert_true(pn_peer_admits_address(ct, "10.1.2.77"));
	assert_true(pn_peer_admits_address(ct, "192.168.7.9"));
	assert_false(pn_peer_admits_address(ct, "127.0.0.1"));
	assert_false(pn_peer_admits_address(ct, "10.1.3.1"));
	assert_false(pn_peer_admits_address(ct, "not an address"));
	const pn_peer *mr = pn_config_find_peer(c, "MR1");
	assert_string_equal(mr->cert_subject, "CN=mr1,O=Hospital");
	assert_true(pn_peer_admits_address(mr, "127.0.0.2"));
	assert_false(pn_peer_admits_address(mr, "127.0.0.1"));
	/* no host, no addresses: from anywhere */
	assert_true(pn_peer_admits_address(pn_config_find_peer(c, "US1"), "203.0.113.5"));
	pn_config_free(c);

	p = write_conf("[audit]\ntarget = file:/var/log/pacsnode-audit.log\n");
	assert_int_equal(pn_config_load(p, &c, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(c->audit_kind, PN_AUDIT_FILE);
	assert_string_equal(c->audit_path, "/var/log/pacsnode-audit.log");
	assert_false(pn_config_tls_listener(c)); /* no certificate: no TLS listener */
	pn_config_free(c);

	p = write_conf("[audit]\ntarget = udp://audit.example:514\n");
	assert_int_equal(pn_config_load(p, &c, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(c->audit_kind, PN_AUDIT_UDP);
	assert_string_equal(c->audit_host, "audit.example");
	assert_int_equal(c->audit_port, 514);
	pn_config_free(c);
}

static void bad_tls_and_audit(void **state)
{
	(void)state;
	expect_error("[node]\nport = 0\n", "nothing to listen on", NULL);
	expect_error("[tls]\ncertificate = /x.pem\n", "private_key", "together");
	expect_error("[tls]\ncertificate = /x.pem\nprivate_key = /x.key\n", "[tls] ca", NULL);
	expect_error("[tls]\nport = 11112\ncertificate = /x.pem\nprivate_key = /x.key\n"
	             "require_client_certificate = no\n",
	             "both 11112", NULL);
	expect_error("[tls]\nport = 99999\n", ":2:", "65535");
	expect_error("[audit]\ntarget = syslog\n", ":2:", "udp://HOST:PORT");
	expect_error("[audit]\ntarget = udp://host\n", ":2:", "udp://HOST:PORT");
	expect_error("[audit]\ntarget = udp://:514\n", ":2:", "udp://HOST:PORT");
	expect_error("[audit]\ntarget = tcp://h:514\n", ":2:", "tls://HOST:PORT");
	expect_error("[audit]\ntarget = tls://h:514\n", "needs [tls] ca", NULL);
	expect_error("[peer.a]\nae_title = A\naddresses = 10.0.0.0/33\n", ":3:", "addresses");
	expect_error("[peer.a]\nae_title = A\naddresses = 10.0.0.1/8\n", ":3:", "host bits");
	expect_error("[peer.a]\nae_title = A\naddresses = 10.0.0.300\n", ":3:", "addresses");
	expect_error("[peer.a]\nae_title = A\naddresses = ,\n", ":3:", "empty");
	expect_error("[peer.a]\nae_title = A\ncertificate_sha256 = abcd\n", ":3:", "64 hex digits");
	expect_error(
	    "[peer.a]\nae_title = A\ncertificate_sha256 = "
	    "zz:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89\n",
	    ":3:", "64 hex digits");
	expect_error("[peer.a]\nae_title = A\ntls = yes\n", "[peer.a]", "no certificate");
	expect_error("[peer.a]\nae_title = A\ncertificate_subject = CN=x\n", "[peer.a]", "no certificate");
}

/* [query] timezone: a tz database name or a fixed offset; the default the
 * host's zone (/etc/timezone), else UTC. */
static void query_timezone(void **state)
{
	(void)state;
	pn_config *c = NULL;
	char err[256];
	assert_int_equal(pn_config_load(NULL, &c, err, sizeof(err)), 0);
	char host[128] = "UTC";
	FILE *f = fopen("/etc/timezone", "r");
	if (f) {
		if (fgets(host, sizeof(host), f))
			host[strcspn(host, " \t\r\n")] = '\0';
		fclose(f);
	}
	assert_string_equal(c->tz_name, host);
	pn_config_free(c);

	assert_int_equal(pn_config_load(write_conf("[query]\ntimezone = Europe/Berlin\n"), &c, err, sizeof(err)), 0);
	unlink(path);
	assert_string_equal(c->tz_name, "Europe/Berlin");
	assert_int_equal(c->tz_offset, 0);
	pn_config_free(c);
	assert_int_equal(pn_config_load(write_conf("[query]\ntimezone = -0330\n"), &c, err, sizeof(err)), 0);
	unlink(path);
	assert_string_equal(c->tz_name, "");
	assert_int_equal(c->tz_offset, -210);
	pn_config_free(c);
	assert_int_equal(pn_config_load(write_conf("[query]\ntimezone = UTC\n"), &c, err, sizeof(err)), 0);
	unlink(path);
	assert_string_equal(c->tz_name, "UTC");
	pn_config_free(c);

	expect_error("[query]\ntimezone = Europe/Atlantis\n", "timezone", "Europe/Atlantis");
	expect_error("[query]\ntimezone = +01\n", "timezone", "+HHMM");
	expect_error("[query]\ntimezone = +1500\n", "timezone", NULL);
	expect_error("[query]\ntimezone = ../../etc/passwd\n", "timezone", NULL);
	expect_error("[query]\ntimezone = /etc/passwd\n", "timezone", NULL);
	expect_error("[query]\ntimezone = Europe\n", "timezone", NULL); /* a folder */
}

static void missing_file(void **state)
{
	(void)state;
	pn_config *c = NULL;
	char err[256] = "";
	assert_true(pn_config_load("/nonexistent/pacsnode.conf", &c, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/pacsnode.conf"));
}

static void example_file_is_valid(void **state)
{
	(void)state;
	const char *src = getenv("PN_SOURCE_DIR");
	assert_non_null(src);
	char p[512];
	snprintf(p, sizeof(p), "%s/conf/pacsnode.conf", src);
	pn_config *c = NULL;
	char err[256] = "";
	if (pn_config_load(p, &c, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_false(c->accept_unknown_calling_ae);
	pn_config_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(defaults),          cmocka_unit_test(full_file),
	    cmocka_unit_test(bad_files),         cmocka_unit_test(tls_audit_and_peer_binding),
	    cmocka_unit_test(bad_tls_and_audit), cmocka_unit_test(query_timezone),
	    cmocka_unit_test(missing_file),      cmocka_unit_test(example_file_is_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
