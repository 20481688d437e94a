/* The audit messages without a node: every kind well-formed (our checker
 * and xmllint), the codes and the structure of the A.5.1 schema, hostile
 * strings escaped, cut and never a raw control character or newline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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

/* xmllint, a parser nobody here wrote, agrees (when it is installed). */
static void xmllint_ok(const char *msg)
{
	if (system("command -v xmllint >/dev/null 2>&1") != 0)
		return;
	const char *xml = strstr(msg, "\xEF\xBB\xBF");
	assert_non_null(xml);
	FILE *p = popen("xmllint --noout - 2>&1", "w");
	assert_non_null(p);
	fputs(xml + 3, p);
	int st = pclose(p);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("xmllint refused: %s", xml);
}

/* The text between `open` and the next `close` after it, or NULL. */
static char *between(const char *m, const char *open, const char *close)
{
	const char *a = strstr(m, open);
	if (!a)
		return NULL;
	a += strlen(open);
	const char *b = strstr(a, close);
	if (!b)
		return NULL;
	return strndup(a, (size_t)(b - a));
}

static void checker_finds_faults(void **state)
{
	(void)state;
	const char *head = "<85>1 2026-01-01T00:00:00Z h pacsnode 1 IHE+RFC-3881 - \xEF\xBB\xBF"
	                   "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
	const char *bodies[] = {"<A><B></A>", "<A x=\"<\"/>",    "<A>&x;</A>",  "<A>\n</A>",
	                        "<A/><B/>",   "<A>\xC3\x28</A>", "<A>\x01</A>", "<A>a>b</A>"};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char m[512];
		snprintf(m, sizeof(m), "%s%s", head, bodies[i]);
		if (!pn_xml_check(m, strlen(m)))
			fail_msg("the checker takes %s", bodies[i]);
	}
	char ok[512];
	snprintf(ok, sizeof(ok), "%s<A x=\"&amp;\"><B/>t&lt;</A>", head);
	assert_null(pn_xml_check(ok, strlen(ok)));
}

static void frame(void **state)
{
	(void)state;
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_APP_START};
	char *m = build(&ev);
	/* <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD BOM MSG */
	const char *want = "<85>1 2023-11-14T22:13:20.123456Z node1 pacsnode 77 IHE+RFC-3881 - \xEF\xBB\xBF"
	                   "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>";
	if (strncmp(m, want, strlen(want)) != 0)
		fail_msg("frame: %.160s", m);
	assert_non_null(strstr(m, "EventDateTime=\"2023-11-14T22:13:20.123456Z\""));
	assert_int_equal(strcmp(m + strlen(m) - strlen("</AuditMessage>"), "</AuditMessage>"), 0);
	free(m);
	/* a host name RFC 5424 cannot carry is made printable US-ASCII */
	pn_audit_source odd = src;
	odd.hostname = "a b\nc";
	size_t len;
	assert_int_equal(pn_audit_msg_build(&odd, &ev, &m, &len), 0);
	assert_non_null(strstr(m, " a_b_c pacsnode "));
	free(m);
}

static void every_kind_well_formed(void **state)
{
	(void)state;
	pn_audit_assoc who = {.calling_ae = "CT1", .called_ae = "PACSNODE", .peer_addr = "127.0.0.1"};
	pn_audit_assoc dest = {.calling_ae = "WS1", .called_ae = "WS1", .peer_addr = "10.0.0.9", .tls = true};
	pn_audit_class_count cls[] = {{"1.2.840.10008.5.1.4.1.1.2", 3}, {"1.2.840.10008.5.1.4.1.1.4", 2}};
	pn_audit_study st = {"1.2.3.4", "PID1", "Doe^John", cls, 2};
	struct {
		pn_audit_event ev;
		const char *must[6];
	} cases[] = {
	    {{.kind = PN_AUDIT_MSG_APP_START},
	     {"csd-code=\"110100\"", "<EventTypeCode csd-code=\"110120\"", "csd-code=\"110150\"",
	      "EventActionCode=\"E\"", NULL}},
	    {{.kind = PN_AUDIT_MSG_APP_STOP}, {"<EventTypeCode csd-code=\"110121\"", "<85>1 ", NULL}},
	    {{.kind = PN_AUDIT_MSG_ALERT, .who = &who, .alert = PN_AUDIT_ALERT_NODE_AUTH, .detail = "wrong host"},
	     {"<84>1 ", "<EventID csd-code=\"110113\"", "<EventTypeCode csd-code=\"110126\"",
	      "<EventOutcomeDescription>wrong host</EventOutcomeDescription>",
	      "type=\"Alert Description\" value=\"d3JvbmcgaG9zdA==\"", "<ParticipantObjectName>CT1<"}},
	    {{.kind = PN_AUDIT_MSG_ALERT, .who = &who, .alert = PN_AUDIT_ALERT_UNAUTHORIZED, .detail = "x"},
	     {"<EventTypeCode csd-code=\"110132\"", "EventOutcomeIndicator=\"4\"", NULL}},
	    {{.kind = PN_AUDIT_MSG_ALERT, .who = &who, .alert = PN_AUDIT_ALERT_CONFIGURATION, .detail = "x"},
	     {"<EventTypeCode csd-code=\"110131\"", "EventOutcomeIndicator=\"0\"", NULL}},
	    {{.kind = PN_AUDIT_MSG_RECEIVED, .who = &who, .study = &st},
	     {"EventActionCode=\"C\"", "<EventID csd-code=\"110104\"",
	      "<ParticipantObjectDescription><SOPClass UID=\"1.2.840.10008.5.1.4.1.1.2\" NumberOfInstances=\"3\"/>",
	      "<Encrypted>false</Encrypted></ParticipantObjectDescription>", "<ParticipantObjectName>Doe^John<",
	      "csd-code=\"2\" codeSystemName=\"RFC-3881\" originalText=\"Patient Number\""}},
	    {{.kind = PN_AUDIT_MSG_SENT, .who = &who, .dest = &dest, .study = &st, .failed = true},
	     {"EventActionCode=\"R\"", "EventOutcomeIndicator=\"4\"", "UserID=\"WS1\"", "csd-code=\"110152\"",
	      "<Encrypted>true</Encrypted>", NULL}},
	    {{.kind = PN_AUDIT_MSG_BEGIN, .who = &who, .dest = &dest, .study = &st},
	     {"<EventID csd-code=\"110102\"", "ParticipantObjectID=\"1.2.3.4\"", "ParticipantObjectID=\"PID1\"", NULL}},
	    {{.kind = PN_AUDIT_MSG_QUERY,
	      .who = &who,
	      .sop_class_uid = "1.2.840.10008.5.1.4.1.2.2.1",
	      .transfer_syntax_uid = "1.2.840.10008.1.2.1",
	      .query = "abc",
	      .query_len = 3},
	     {"<EventID csd-code=\"110112\"", "<ParticipantObjectQuery>YWJj</ParticipantObjectQuery>",
	      "csd-code=\"110181\"", "ParticipantObjectID=\"1.2.840.10008.5.1.4.1.2.2.1\"",
	      /* base64("1.2.840.10008.1.2.1") */
	      "type=\"TransferSyntax\" value=\"MS4yLjg0MC4xMDAwOC4xLjIuMQ==\"", NULL}},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *m = build(&cases[i].ev);
		for (int k = 0; k < 6 && cases[i].must[k]; k++)
			if (!strstr(m, cases[i].must[k]))
				fail_msg("message %zu lacks %s: %s", i, cases[i].must[k], m);
		assert_non_null(strstr(m, "<AuditSourceIdentification AuditSourceID=\"PACSNODE\">"
		                          "<AuditSourceTypeCode csd-code=\"4\"/></AuditSourceIdentification>"));
		/* the schema's order: EventIdentification, ActiveParticipant+,
		 * AuditSourceIdentification, ParticipantObjectIdentification* */
		const char *ev = strstr(m, "<EventIdentification "), *ap = strstr(m, "<ActiveParticipant "),
		           *as = strstr(m, "<AuditSourceIdentification "),
		           *po = strstr(m, "<ParticipantObjectIdentification ");
		assert_true(ev && ap && as && ev < ap && ap < as && (!po || as < po));
		assert_null(strstr(as, "<ActiveParticipant "));
		/* SOPClass only inside a ParticipantObjectDescription */
		char *desc = between(m, "<ParticipantObjectDescription>", "</ParticipantObjectDescription>");
		if (strstr(m, "<SOPClass "))
			assert_true(desc && strstr(desc, "<SOPClass "));
		free(desc);
		/* at most one requestor (A.5.2: "shall not identify multiple") */
		const char *r = strstr(m, "UserIsRequestor=\"true\"");
		assert_true(!r || !strstr(r + 1, "UserIsRequestor=\"true\""));
		xmllint_ok(m);
		free(m);
	}
}

static void who_requests(void **state)
{
	(void)state;
	pn_audit_assoc who = {.calling_ae = "MOVER", .peer_addr = "10.0.0.1"};
	pn_audit_assoc dest = {.calling_ae = "DEST", .peer_addr = "10.0.0.2"};
	pn_audit_study st = {"1.2.3", "P", "N", NULL, 0};
	/* C-MOVE: the requester requests, we are the source, dest receives */
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_SENT, .who = &who, .dest = &dest, .study = &st};
	char *m = build(&ev);
	assert_non_null(strstr(m, "UserID=\"MOVER\" AlternativeUserID=\"AETITLES=MOVER\" UserIsRequestor=\"true\""));
	char *d = between(m, "UserID=\"DEST\"", "</ActiveParticipant>");
	assert_true(d && strstr(d, "UserIsRequestor=\"false\"") && strstr(d, "110152"));
	free(d);
	char *s = between(m, "UserID=\"PACSNODE\"", "</ActiveParticipant>");
	assert_true(s && strstr(s, "UserIsRequestor=\"false\"") && strstr(s, "110153"));
	free(s);
	free(m);
	/* C-STORE received: the peer is the source and the requestor */
	ev = (pn_audit_event){.kind = PN_AUDIT_MSG_RECEIVED, .who = &who, .study = &st};
	m = build(&ev);
	s = between(m, "UserID=\"MOVER\"", "</ActiveParticipant>");
	assert_true(s && strstr(s, "UserIsRequestor=\"true\"") && strstr(s, "110153") &&
	            strstr(s, "NetworkAccessPointID=\"10.0.0.1\" NetworkAccessPointTypeCode=\"2\""));
	free(s);
	free(m);
}

static void hostile_strings_escaped(void **state)
{
	(void)state;
	pn_audit_assoc who = {.calling_ae = "A&B<C>\"D'", .called_ae = "X", .peer_addr = "1.2.3.4\n<evil/>"};
	pn_audit_class_count cls[] = {{"1.2\"/><x", 1}};
	pn_audit_study st = {"]]>&", "\x01\x02\x1f\t\r\n", "M\xC3\xBCller\xC3\x28\xEF\xBF\xBE\xED\xA0\x80\xC0\xAF", cls,
	                     1};
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_RECEIVED, .who = &who, .study = &st};
	char *m = build(&ev);
	assert_non_null(strstr(m, "A&amp;B&lt;C&gt;&quot;D&apos;"));
	assert_non_null(strstr(m, "ParticipantObjectID=\"]]&gt;&amp;\""));
	/* invalid UTF-8, U+FFFE, a surrogate and an overlong form: U+FFFD */
	assert_non_null(strstr(m, "M\xC3\xBCller\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD"));
	assert_null(strstr(m, "\xED\xA0\x80"));
	assert_null(strstr(m, "\xC0\xAF"));
	for (const char *p = m; *p; p++)
		if ((unsigned char)*p < 0x20)
			fail_msg("control character 0x%02x at %td", *p, p - m);
	xmllint_ok(m);
	free(m);
	/* every byte value, in every field of every kind */
	char all[256];
	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	pn_audit_assoc w2 = {.calling_ae = all, .called_ae = all, .peer_addr = all, .tls = true};
	pn_audit_class_count c2[] = {{all, 1}};
	pn_audit_study s2 = {all, all, all, c2, 1};
	for (int kind = PN_AUDIT_MSG_APP_START; kind <= PN_AUDIT_MSG_QUERY; kind++) {
		pn_audit_event e2 = {.kind = (pn_audit_msg_kind)kind,
		                     .who = &w2,
		                     .dest = kind == PN_AUDIT_MSG_SENT ? &w2 : NULL,
		                     .study = &s2,
		                     .detail = all,
		                     .sop_class_uid = all,
		                     .transfer_syntax_uid = all,
		                     .query = all,
		                     .query_len = 255};
		m = build(&e2);
		xmllint_ok(m);
		free(m);
	}
}

static void big_strings_cut(void **state)
{
	(void)state;
	size_t n = 65536;
	char *big = malloc(n);
	memset(big, '<', n - 1);
	big[n - 1] = '\0';
	/* 64 KB in every string: the message stays small enough for UDP */
	pn_audit_assoc who = {.calling_ae = big, .called_ae = big, .peer_addr = big};
	pn_audit_class_count cls[64];
	for (int i = 0; i < 64; i++)
		cls[i] = (pn_audit_class_count){big, 1};
	pn_audit_study st = {big, big, big, cls, 64};
	for (int kind = PN_AUDIT_MSG_APP_START; kind <= PN_AUDIT_MSG_QUERY; kind++) {
		pn_audit_event ev = {.kind = (pn_audit_msg_kind)kind,
		                     .who = &who,
		                     .dest = &who,
		                     .study = &st,
		                     .detail = big,
		                     .sop_class_uid = big,
		                     .transfer_syntax_uid = big,
		                     .query = big,
		                     .query_len = n};
		char *m = build(&ev);
		if (strlen(m) > 65507)
			fail_msg("message kind %d has %zu bytes: more than a UDP datagram holds", kind, strlen(m));
		if (kind != PN_AUDIT_MSG_APP_START && kind != PN_AUDIT_MSG_APP_STOP)
			assert_non_null(strstr(m, "&lt;\xE2\x80\xA6")); /* cut, and said so */
		if (kind == PN_AUDIT_MSG_QUERY)
			/* base64("65536") */
			assert_non_null(strstr(m, "type=\"QueryLength\" value=\"NjU1MzY=\""));
		xmllint_ok(m);
		free(m);
	}
	/* a cut never splits a UTF-8 sequence */
	for (size_t i = 0; i + 1 < n; i += 2)
		memcpy(big + i, "\xC3\xBC", 2);
	big[n - 1] = '\0';
	pn_audit_study s2 = {"1.2", "P", big, NULL, 0};
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_RECEIVED, .who = &who, .study = &s2};
	char *m = build(&ev);
	char *name = between(m, "<ParticipantObjectName>", "</ParticipantObjectName>");
	assert_non_null(name);
	assert_null(strstr(name, "\xEF\xBF\xBD"));
	assert_true(strlen(name) <= 1024 + 3);
	free(name);
	free(m);
	free(big);
}

int main(void)
{
	pn_log_set_level(PN_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(checker_finds_faults),    cmocka_unit_test(frame),
	    cmocka_unit_test(every_kind_well_formed),  cmocka_unit_test(who_requests),
	    cmocka_unit_test(hostile_strings_escaped), cmocka_unit_test(big_strings_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
