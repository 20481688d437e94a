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
	assert_int_equal(c->max_inflated_mib, 1024);
	assert_int_equal(c->write_mode, PN_WRITE_AUTO);
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
	               "allow = find, move\n");
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
	expect_error("[nodes]\nport = 11112\n", ":2:", "[nodes]");
	expect_error("[node]\nthis line has no equals sign\n", ":2:", "syntax");
	expect_error("[node]\nrequire_called_ae = maybe\n", ":2:", "yes or no");
	expect_error("[log]\nlevel = loud\n", ":2:", "debug");
	expect_error("[limits]\nworkers = 8\nmax_associations = 4\n", "max_associations", NULL);
	expect_error("[peer.a]\nhost = x\n", "ae_title is missing", NULL);
	expect_error("[peer.a]\nallow = store, delete\n", ":2:", "store, find, move, get");
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
	    cmocka_unit_test(defaults),
	    cmocka_unit_test(full_file),
	    cmocka_unit_test(bad_files),
	    cmocka_unit_test(missing_file),
	    cmocka_unit_test(example_file_is_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
