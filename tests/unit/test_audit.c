/* The audit trail without a node: messages (well-formed, escaped, the
 * codes the standard names), the spool (names, counts, a full spool), and
 * the sender process to a file and to a UDP receiver that is down, then
 * back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../fuzz/xml_check.h"
#include "audit.h"
#include "audit_msg.h"
#include "log.h"

static const pn_audit_source src = {
    .ae_title = "PACSNODE", .hostname = "node1", .pid = 77, .time_us = 1700000000123456};

static char *build(const pn_audit_event *ev)
{
	char *msg = NULL;
	size_t len = 0;
	assert_int_equal(pn_audit_msg_build(&src, ev, &msg, &len), 0);
	assert_int_equal(strlen(msg), len);
	const char *bad = pn_xml_check(msg, len);
	if (bad)
		fail_msg("%s in %s", bad, msg);
	return msg;
}

/* xmllint, a parser nobody here wrote, agrees. */
static void xmllint_ok(const char *msg)
{
	const char *xml = strstr(msg, "\xEF\xBB\xBF");
	assert_non_null(xml);
	FILE *p = popen("xmllint --noout - 2>&1", "w");
	assert_non_null(p);
	fputs(xml + 3, p);
	int st = pclose(p);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("xmllint refused: %s", xml);
}

static void checker_finds_faults(void **state)
{
	(void)state;
	const char *head = "<85>1 2026-01-01T00:00:00Z h pacsnode 1 IHE+RFC-3881 - \xEF\xBB\xBF"
	                   "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
	const char *bodies[] = {"<A><B></A>", "<A x=\"<\"/>", "<A>&x;</A>", "<A>\n</A>", "<A/><B/>", "<A>\xC3\x28</A>"};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char m[512];
		snprintf(m, sizeof(m), "%s%s", head, bodies[i]);
		assert_non_null(pn_xml_check(m, strlen(m)));
	}
	char ok[512];
	snprintf(ok, sizeof(ok), "%s<A x=\"&amp;\"><B/>t&lt;</A>", head);
	assert_null(pn_xml_check(ok, strlen(ok)));
}

static void every_kind_well_formed(void **state)
{
	(void)state;
	pn_audit_assoc who = {.calling_ae = "CT1", .called_ae = "PACSNODE", .peer_addr = "127.0.0.1"};
	pn_audit_assoc dest = {.calling_ae = "WS1", .called_ae = "WS1", .peer_addr = "10.0.0.9"};
	pn_audit_class_count cls[] = {{"1.2.840.10008.5.1.4.1.1.2", 3}, {"1.2.840.10008.5.1.4.1.1.4", 2}};
	pn_audit_study st = {"1.2.3.4", "PID1", "Doe^John", cls, 2};
	struct {
		pn_audit_event ev;
		const char *must[4];
	} cases[] = {
	    {{.kind = PN_AUDIT_MSG_APP_START}, {"csd-code=\"110100\"", "csd-code=\"110120\"", "110150", NULL}},
	    {{.kind = PN_AUDIT_MSG_APP_STOP}, {"csd-code=\"110121\"", NULL}},
	    {{.kind = PN_AUDIT_MSG_ALERT, .who = &who, .alert = PN_AUDIT_ALERT_NODE_AUTH, .detail = "wrong host"},
	     {"<84>1 ", "csd-code=\"110113\"", "csd-code=\"110126\"", "wrong host"}},
	    {{.kind = PN_AUDIT_MSG_RECEIVED, .who = &who, .study = &st},
	     {"EventActionCode=\"C\"", "csd-code=\"110104\"", "NumberOfInstances=\"3\"",
	      "<ParticipantObjectName>Doe^John"}},
	    {{.kind = PN_AUDIT_MSG_SENT, .who = &who, .dest = &dest, .study = &st, .failed = true},
	     {"EventActionCode=\"R\"", "EventOutcomeIndicator=\"4\"", "UserID=\"WS1\"", "110152"}},
	    {{.kind = PN_AUDIT_MSG_BEGIN, .who = &who, .dest = &dest, .study = &st},
	     {"csd-code=\"110102\"", "ParticipantObjectID=\"1.2.3.4\"", NULL}},
	    {{.kind = PN_AUDIT_MSG_QUERY,
	      .who = &who,
	      .sop_class_uid = "1.2.840.10008.5.1.4.1.2.2.1",
	      .transfer_syntax_uid = "1.2.840.10008.1.2.1",
	      .query = "abc",
	      .query_len = 3},
	     {"csd-code=\"110112\"", "<ParticipantObjectQuery>YWJj</ParticipantObjectQuery>", "110181", NULL}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *m = build(&cases[i].ev);
		for (int k = 0; k < 4 && cases[i].must[k]; k++)
			if (!strstr(m, cases[i].must[k]))
				fail_msg("message %zu lacks %s: %s", i, cases[i].must[k], m);
		assert_non_null(strstr(m, "IHE+RFC-3881"));
		assert_non_null(strstr(m, "AuditSourceID=\"PACSNODE\""));
		xmllint_ok(m);
		free(m);
	}
}

static void hostile_strings_escaped(void **state)
{
	(void)state;
	char *big = malloc(65536);
	memset(big, '<', 65535);
	big[65535] = '\0';
	pn_audit_assoc who = {.calling_ae = "A&B<C>\"D'", .called_ae = "X", .peer_addr = "1.2.3.4\n<evil/>"};
	pn_audit_class_count cls[] = {{"1.2\"/><x", 1}};
	pn_audit_study st = {"]]>&", "\x01\x02\x1f", "M\xC3\xBCller\xC3\x28\xEF\xBF\xBE", cls, 1};
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_RECEIVED, .who = &who, .study = &st};
	char *m = build(&ev);
	assert_non_null(strstr(m, "A&amp;B&lt;C&gt;&quot;D&apos;"));
	assert_non_null(strstr(m, "M\xC3\xBCller\xEF\xBF\xBD(\xEF\xBF\xBD<"));
	assert_null(strchr(m, '\n'));
	xmllint_ok(m);
	free(m);
	pn_audit_event alert = {.kind = PN_AUDIT_MSG_ALERT, .who = &who, .detail = big};
	m = build(&alert);
	xmllint_ok(m);
	free(m);
	free(big);
}

/* ---- the spool and the sender ------------------------------------------ */

static char dir[64];

static pn_config *config_for(pn_audit_kind kind, const char *path, int port, int max_mib)
{
	snprintf(dir, sizeof(dir), "/tmp/pn_test_audit_XXXXXX");
	assert_non_null(mkdtemp(dir));
	pn_config *c = calloc(1, sizeof(*c));
	snprintf(c->ae_title, sizeof(c->ae_title), "PACSNODE");
	c->audit_kind = kind;
	snprintf(c->audit_host, sizeof(c->audit_host), "127.0.0.1");
	c->audit_port = port;
	char buf[128];
	snprintf(buf, sizeof(buf), "%s/spool", dir);
	c->audit_spool = strdup(buf);
	if (path) {
		snprintf(buf, sizeof(buf), "%s/%s", dir, path);
		c->audit_path = strdup(buf);
	}
	c->audit_spool_max_mib = max_mib;
	return c;
}

static void config_done(pn_config *c)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	free(c->audit_spool);
	free(c->audit_path);
	free(c);
}

static int spool_count(const pn_config *c)
{
	DIR *d = opendir(c->audit_spool);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strstr(de->d_name, ".msg") != NULL;
	closedir(d);
	return n;
}

static void alert(pn_audit *a, int i)
{
	char detail[32];
	snprintf(detail, sizeof(detail), "alert number %d", i);
	pn_audit_assoc who = {.calling_ae = "CT1", .called_ae = "PACSNODE", .peer_addr = "127.0.0.1"};
	pn_audit_security_alert(a, PN_AUDIT_ALERT_UNAUTHORIZED, &who, detail);
}

static void none_is_a_no_op(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_NONE, NULL, 0, 1);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_false(pn_audit_enabled(a));
	alert(a, 1);
	struct stat st;
	assert_int_equal(stat(c->audit_spool, &st), -1); /* nothing made on disk */
	pn_audit_free(a);
	assert_false(pn_audit_enabled(NULL));
	alert(NULL, 1);
	config_done(c);
}

static void spool_fills_and_drops(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 1);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_true(pn_audit_enabled(a));
	for (int i = 0; i < 5; i++)
		alert(a, i);
	assert_int_equal(spool_count(c), 5);
	assert_int_equal(pn_audit_dropped(a), 0);
	/* about 1.4 KB each: 1 MiB holds some 700 */
	for (int i = 0; i < 2000; i++)
		alert(a, i);
	int kept = spool_count(c);
	assert_true(kept > 100 && kept < 2005);
	assert_int_equal(pn_audit_dropped(a), 2005 - (unsigned long)kept);
	pn_audit_free(a);
	/* a new start counts what the earlier one left: still full */
	assert_int_equal(pn_audit_create(c, &a), 0);
	alert(a, 0);
	assert_int_equal(spool_count(c), kept);
	assert_int_equal(pn_audit_dropped(a), 1);
	pn_audit_free(a);
	config_done(c);
}

static pid_t start_sender(pn_audit *a)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(pn_audit_sender_main(a));
	return pid;
}

static void stop_sender(pid_t pid)
{
	kill(pid, SIGTERM);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void wait_spool_empty(const pn_config *c, int ms)
{
	for (int i = 0; i < ms / 20 && spool_count(c) > 0; i++) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(spool_count(c), 0);
}

static void sender_to_a_file(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	for (int i = 0; i < 20; i++)
		alert(a, i);
	pid_t pid = start_sender(a);
	wait_spool_empty(c, 5000);
	alert(a, 20); /* spooled while it runs, sent at stop at the latest */
	stop_sender(pid);
	assert_int_equal(spool_count(c), 0);
	FILE *f = fopen(c->audit_path, "r");
	assert_non_null(f);
	char line[8192];
	int n = 0;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		assert_true(len > 1 && line[len - 1] == '\n');
		line[--len] = '\0';
		assert_null(pn_xml_check(line, len));
		char want[32];
		snprintf(want, sizeof(want), "alert number %d<", n);
		if (!strstr(line, want))
			fail_msg("line %d out of order: %s", n, line);
		n++;
	}
	fclose(f);
	assert_int_equal(n, 21);
	pn_audit_free(a);
	config_done(c);
}

static int udp_bind(int port)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void udp_receiver_down_then_back(void **state)
{
	(void)state;
	/* a free port, closed again: the repository is down */
	int probe = udp_bind(0);
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);
	getsockname(probe, (struct sockaddr *)&sa, &l);
	int port = ntohs(sa.sin_port);
	close(probe);
	pn_config *c = config_for(PN_AUDIT_UDP, NULL, port, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	pid_t pid = start_sender(a);
	for (int i = 0; i < 10; i++)
		alert(a, i);
	sleep(1);
	assert_int_equal(spool_count(c), 10); /* nothing lost to the closed port */
	int rx = udp_bind(port);
	for (int i = 10; i < 15; i++)
		alert(a, i);
	char buf[8192];
	int got = 0;
	for (int tries = 0; got < 15 && tries < 100; tries++) {
		ssize_t n = recv(rx, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		char want[32];
		snprintf(want, sizeof(want), "alert number %d<", got);
		if (!strstr(buf, want))
			fail_msg("datagram %d out of order or repeated: %.300s", got, strstr(buf, "alert number"));
		got++;
	}
	assert_int_equal(got, 15);
	assert_true(recv(rx, buf, sizeof(buf), 0) < 0); /* exactly once */
	wait_spool_empty(c, 3000);
	stop_sender(pid);
	close(rx);
	pn_audit_free(a);
	config_done(c);
}

int main(void)
{
	pn_log_set_level(PN_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(checker_finds_faults),        cmocka_unit_test(every_kind_well_formed),
	    cmocka_unit_test(hostile_strings_escaped),     cmocka_unit_test(none_is_a_no_op),
	    cmocka_unit_test(spool_fills_and_drops),       cmocka_unit_test(sender_to_a_file),
	    cmocka_unit_test(udp_receiver_down_then_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
