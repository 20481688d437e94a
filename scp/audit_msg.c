#include "audit_msg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* RFC 5424: facility authpriv (10); notice, warning for security alerts. */
#define PRI_NOTICE (10 * 8 + 5)
#define PRI_WARNING (10 * 8 + 4)

/* The most of each string from the network a message carries (bytes before
 * escaping, which can make 6 of one): an AE title has 16 characters, a UID
 * 64 bytes, an IPv6 address 45; a PN value 3 groups of 64 characters, a
 * reason a line. What goes beyond is cut (and marked "…"). With the
 * tally's 64 SOP classes per study, the largest message (some 40 KB of
 * hostile strings) stays below the 65,507 bytes of a UDP datagram. */
#define SHORT_CAP 64
#define TEXT_CAP 1024
#define QUERY_CAP (16u << 10) /* identifier bytes, before base64 */

typedef struct {
	char *p;
	size_t len, cap;
	bool oom;
} sbuf;

static void sb_grow(sbuf *b, size_t more)
{
	if (b->oom || b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 2048;
	while (cap < b->len + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
	sb_grow(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3))) sb_fmt(sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		sb_put(b, tmp, (size_t)n);
		return;
	}
	sb_grow(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* The length of the valid UTF-8 sequence at s (up to end), or 0. */
static size_t utf8_seq(const unsigned char *s, const unsigned char *end, uint32_t *ret_cp)
{
	size_t n;
	uint32_t cp;
	if (s[0] < 0x80)
		return *ret_cp = s[0], 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2, cp = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3, cp = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if ((size_t)(end - s) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	*ret_cp = cp;
	return n;
}

/* Text for an attribute value or element content: escaped, whatever
 * XML 1.0 cannot hold replaced by U+FFFD, and at most `cap` bytes of it
 * (cut before a character, "…" added), so that a hostile 64 KB name cannot
 * make a message that UDP cannot carry (RFC 5426: 65,507 bytes at most). */
static void sb_esc_cap(sbuf *b, const char *text, size_t cap)
{
	static const char replacement[] = "\xEF\xBF\xBD";
	const unsigned char *s = (const unsigned char *)(text ? text : "");
	size_t len = strnlen((const char *)s, cap + 1);
	bool cut = len > cap;
	if (cut) {
		len = cap;
		while (len > 0 && (s[len] & 0xC0) == 0x80)
			len--;
	}
	const unsigned char *end = s + len;
	while (s < end) {
		uint32_t cp = 0;
		size_t n = utf8_seq(s, end, &cp);
		if (n == 0) {
			sb_str(b, replacement);
			s++;
			continue;
		}
		switch (cp) {
		case '&':
			sb_str(b, "&amp;");
			break;
		case '<':
			sb_str(b, "&lt;");
			break;
		case '>':
			sb_str(b, "&gt;");
			break;
		case '"':
			sb_str(b, "&quot;");
			break;
		case '\'':
			sb_str(b, "&apos;");
			break;
		default:
			if (cp < 0x20 || cp == 0xFFFE || cp == 0xFFFF)
				sb_str(b, replacement);
			else
				sb_put(b, (const char *)s, n);
		}
		s += n;
	}
	if (cut)
		sb_str(b, "\xE2\x80\xA6");
}

static void sb_esc(sbuf *b, const char *text)
{
	sb_esc_cap(b, text, TEXT_CAP);
}

/* AE titles, addresses, UIDs */
static void sb_esc_short(sbuf *b, const char *text)
{
	sb_esc_cap(b, text, SHORT_CAP);
}

static void sb_base64(sbuf *b, const void *data, size_t len)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *d = data;
	sb_grow(b, (len + 2) / 3 * 4);
	for (size_t i = 0; i < len && !b->oom; i += 3) {
		uint32_t v =
		    (uint32_t)d[i] << 16 | (i + 1 < len ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < len ? d[i + 2] : 0);
		char q[4] = {abc[v >> 18 & 63], abc[v >> 12 & 63], i + 1 < len ? abc[v >> 6 & 63] : '=',
		             i + 2 < len ? abc[v & 63] : '='};
		sb_put(b, q, 4);
	}
}

static void code(sbuf *b, const char *element, const char *csd, const char *system, const char *text)
{
	sb_fmt(b, "<%s csd-code=\"%s\" codeSystemName=\"%s\" originalText=\"%s\"/>", element, csd, system, text);
}

static void rfc3339(sbuf *b, int64_t us)
{
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	sb_fmt(b, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	       tm.tm_min, tm.tm_sec, (int)(us % 1000000));
}

/* Our application as a participant. */
static void us(sbuf *b, const pn_audit_source *src, bool requestor, const char *role_code, const char *role_text)
{
	sb_str(b, "<ActiveParticipant UserID=\"");
	sb_esc_short(b, src->ae_title);
	sb_str(b, "\" AlternativeUserID=\"AETITLES=");
	sb_esc_short(b, src->ae_title);
	sb_fmt(b, "\" UserName=\"pacsnode\" UserIsRequestor=\"%s\" NetworkAccessPointID=\"",
	       requestor ? "true" : "false");
	sb_esc(b, src->hostname);
	sb_str(b, "\" NetworkAccessPointTypeCode=\"1\">");
	if (role_code)
		code(b, "RoleIDCode", role_code, "DCM", role_text);
	sb_str(b, "</ActiveParticipant>");
}

/* A peer as a participant: its AE title, and its address when known. */
static void peer(sbuf *b, const pn_audit_assoc *p, bool requestor, const char *role_code, const char *role_text)
{
	static const pn_audit_assoc nobody = {0};
	if (!p)
		p = &nobody;
	const char *ae = p->calling_ae && *p->calling_ae ? p->calling_ae : "(none)";
	sb_str(b, "<ActiveParticipant UserID=\"");
	sb_esc_short(b, ae);
	sb_str(b, "\" AlternativeUserID=\"AETITLES=");
	sb_esc_short(b, ae);
	sb_fmt(b, "\" UserIsRequestor=\"%s\"", requestor ? "true" : "false");
	if (p->peer_addr && *p->peer_addr) {
		sb_str(b, " NetworkAccessPointID=\"");
		sb_esc_short(b, p->peer_addr);
		sb_str(b, "\" NetworkAccessPointTypeCode=\"2\"");
	}
	sb_str(b, ">");
	if (role_code)
		code(b, "RoleIDCode", role_code, "DCM", role_text);
	sb_str(b, "</ActiveParticipant>");
}

static void source_identification(sbuf *b, const pn_audit_source *src)
{
	sb_str(b, "<AuditSourceIdentification AuditSourceID=\"");
	sb_esc_short(b, src->ae_title);
	sb_str(b, "\">");
	/* 4: application server process tier, from the value set of the A.5.1
	 * schema itself (A.5.1.2.1), which takes the bare code: it is not a
	 * "DCM" code, so no codeSystemName is claimed for it. */
	sb_str(b, "<AuditSourceTypeCode csd-code=\"4\"/>");
	sb_str(b, "</AuditSourceIdentification>");
}

/* The study, with its SOP classes and instance counts, and whether it went
 * over TLS (tls < 0: nothing went anywhere, not said), in a
 * ParticipantObjectDescription: the A.5.1 schema puts the DICOM object
 * description (MPPS, Accession, SOPClass, ..., Encrypted) there, not
 * directly in the ParticipantObjectIdentification. */
static void study_object(sbuf *b, const pn_audit_study *st, int tls)
{
	sb_str(b, "<ParticipantObjectIdentification ParticipantObjectID=\"");
	sb_esc_short(b, st->study_uid);
	sb_str(b, "\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">");
	code(b, "ParticipantObjectIDTypeCode", "110180", "DCM", "Study Instance UID");
	sb_str(b, "<ParticipantObjectDescription>");
	for (size_t i = 0; st->classes && i < st->n_classes; i++) {
		sb_str(b, "<SOPClass UID=\"");
		sb_esc_short(b, st->classes[i].sop_class_uid);
		sb_fmt(b, "\" NumberOfInstances=\"%u\"/>", st->classes[i].count);
	}
	if (tls >= 0)
		sb_fmt(b, "<Encrypted>%s</Encrypted>", tls ? "true" : "false");
	sb_str(b, "</ParticipantObjectDescription></ParticipantObjectIdentification>");
}

static void patient_object(sbuf *b, const char *patient_id, const char *patient_name)
{
	sb_str(b, "<ParticipantObjectIdentification ParticipantObjectID=\"");
	sb_esc(b, patient_id);
	sb_str(b, "\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">");
	code(b, "ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number");
	if (patient_name && *patient_name) {
		sb_str(b, "<ParticipantObjectName>");
		sb_esc(b, patient_name);
		sb_str(b, "</ParticipantObjectName>");
	}
	sb_str(b, "</ParticipantObjectIdentification>");
}

static void study_objects(sbuf *b, const pn_audit_study *st, bool tls)
{
	if (!st)
		return;
	study_object(b, st, tls);
	patient_object(b, st->patient_id, st->patient_name);
}

/* The person who asked (pacsnodectl's user), at this host. */
static void operator(sbuf *b, const pn_audit_source *src, const char *user)
{
	const char *u = user && *user ? user : "(unknown)";
	sb_str(b, "<ActiveParticipant UserID=\"");
	sb_esc_short(b, u);
	sb_str(b, "\" UserName=\"");
	sb_esc_short(b, u);
	sb_str(b, "\" UserIsRequestor=\"true\" NetworkAccessPointID=\"");
	sb_esc(b, src->hostname);
	sb_str(b, "\" NetworkAccessPointTypeCode=\"1\"/>");
}

static void event(sbuf *b, const pn_audit_source *src, const char *action, int outcome, const char *id_code,
                  const char *id_text)
{
	sb_fmt(b, "<EventIdentification EventActionCode=\"%s\" EventDateTime=\"", action);
	rfc3339(b, src->time_us);
	sb_fmt(b, "\" EventOutcomeIndicator=\"%d\">", outcome);
	code(b, "EventID", id_code, "DCM", id_text);
}

/* Who sent and who received: for a store the peer sent to us; for a
 * C-MOVE we sent to the destination on the requester's behalf; for a C-GET
 * we sent to the requester. */
static void transfer_participants(sbuf *b, const pn_audit_source *src, const pn_audit_event *ev, bool received)
{
	if (received) {
		peer(b, ev->who, true, "110153", "Source Role ID");
		us(b, src, false, "110152", "Destination Role ID");
	} else if (ev->dest) {
		peer(b, ev->who, true, NULL, NULL);
		us(b, src, false, "110153", "Source Role ID");
		peer(b, ev->dest, false, "110152", "Destination Role ID");
	} else {
		us(b, src, false, "110153", "Source Role ID");
		peer(b, ev->who, true, "110152", "Destination Role ID");
	}
}

/* Whether the instances went over TLS: to the C-MOVE destination, else on
 * the requester's own association. */
static bool carried_over_tls(const pn_audit_event *ev)
{
	const pn_audit_assoc *carrier = ev->dest ? ev->dest : ev->who;
	return carrier && carrier->tls;
}

static void alert_type(sbuf *b, pn_audit_alert_kind kind)
{
	switch (kind) {
	case PN_AUDIT_ALERT_NODE_AUTH:
		code(b, "EventTypeCode", "110126", "DCM", "Node Authentication");
		break;
	case PN_AUDIT_ALERT_UNAUTHORIZED:
		code(b, "EventTypeCode", "110132", "DCM", "Use of Restricted Function");
		break;
	case PN_AUDIT_ALERT_CONFIGURATION:
		code(b, "EventTypeCode", "110131", "DCM", "Software Configuration");
		break;
	}
}

static void body(sbuf *b, const pn_audit_source *src, const pn_audit_event *ev)
{
	switch (ev->kind) {
	case PN_AUDIT_MSG_APP_START:
	case PN_AUDIT_MSG_APP_STOP: {
		bool start = ev->kind == PN_AUDIT_MSG_APP_START;
		event(b, src, "E", 0, "110100", "Application Activity");
		code(b, "EventTypeCode", start ? "110120" : "110121", "DCM",
		     start ? "Application Start" : "Application Stop");
		sb_str(b, "</EventIdentification>");
		us(b, src, false, "110150", "Application");
		source_identification(b, src);
		break;
	}
	case PN_AUDIT_MSG_ALERT: {
		bool config = ev->alert == PN_AUDIT_ALERT_CONFIGURATION;
		event(b, src, "E", config ? 0 : 4, "110113", "Security Alert");
		alert_type(b, ev->alert);
		sb_str(b, "<EventOutcomeDescription>");
		sb_esc(b, ev->detail);
		sb_str(b, "</EventOutcomeDescription></EventIdentification>");
		/* the reporting node, and the one it is about */
		us(b, src, false, NULL, NULL);
		if (ev->who && !config)
			peer(b, ev->who, true, NULL, NULL);
		source_identification(b, src);
		const char *node = config                                                 ? src->hostname
		                   : ev->who && ev->who->peer_addr && *ev->who->peer_addr ? ev->who->peer_addr
		                                                                          : "(unknown)";
		sb_str(b, "<ParticipantObjectIdentification ParticipantObjectID=\"");
		sb_esc_short(b, node);
		sb_str(b, "\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\">");
		code(b, "ParticipantObjectIDTypeCode", "110182", "DCM", "Node ID");
		/* the schema wants a name or a query here: the node's AE title */
		const char *name = config                                                   ? src->ae_title
		                   : ev->who && ev->who->calling_ae && *ev->who->calling_ae ? ev->who->calling_ae
		                                                                            : "(none)";
		sb_str(b, "<ParticipantObjectName>");
		sb_esc_short(b, name);
		sb_str(b, "</ParticipantObjectName>");
		const char *detail = ev->detail ? ev->detail : "";
		sb_str(b, "<ParticipantObjectDetail type=\"Alert Description\" value=\"");
		sb_base64(b, detail, strnlen(detail, TEXT_CAP));
		sb_str(b, "\"/></ParticipantObjectIdentification>");
		break;
	}
	case PN_AUDIT_MSG_RECEIVED:
	case PN_AUDIT_MSG_SENT: {
		bool received = ev->kind == PN_AUDIT_MSG_RECEIVED;
		event(b, src, received ? "C" : "R", ev->failed ? 4 : 0, "110104", "DICOM Instances Transferred");
		sb_str(b, "</EventIdentification>");
		transfer_participants(b, src, ev, received);
		source_identification(b, src);
		study_objects(b, ev->study, carried_over_tls(ev));
		break;
	}
	case PN_AUDIT_MSG_BEGIN:
		event(b, src, "E", 0, "110102", "Begin Transferring DICOM Instances");
		sb_str(b, "</EventIdentification>");
		transfer_participants(b, src, ev, false);
		source_identification(b, src);
		study_objects(b, ev->study, carried_over_tls(ev));
		break;
	case PN_AUDIT_MSG_DELETED_INSTANCES:
	case PN_AUDIT_MSG_DELETED_STUDIES:
	case PN_AUDIT_MSG_DELETED_PATIENT: {
		static const char *const ids[][2] = {{"110103", "DICOM Instances Accessed"},
		                                     {"110105", "DICOM Study Deleted"},
		                                     {"110110", "Patient Record"}};
		int k = ev->kind - PN_AUDIT_MSG_DELETED_INSTANCES;
		event(b, src, "D", ev->failed ? 4 : 0, ids[k][0], ids[k][1]);
		sb_str(b, "</EventIdentification>");
		/* the person and the process (PS3.15 A.5.3: both when known) */
		operator(b, src, ev->user);
		us(b, src, false, NULL, NULL);
		source_identification(b, src);
		for (size_t i = 0; ev->kind != PN_AUDIT_MSG_DELETED_PATIENT && ev->studies && i < ev->n_studies; i++)
			study_object(b, &ev->studies[i], -1);
		patient_object(b, ev->patient_id, ev->patient_name);
		break;
	}
	case PN_AUDIT_MSG_QUERY:
		event(b, src, "E", ev->failed ? 4 : 0, "110112", "Query");
		sb_str(b, "</EventIdentification>");
		peer(b, ev->who, true, "110153", "Source Role ID");
		us(b, src, false, "110152", "Destination Role ID");
		source_identification(b, src);
		sb_str(b, "<ParticipantObjectIdentification ParticipantObjectID=\"");
		sb_esc_short(b, ev->sop_class_uid);
		sb_str(b, "\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">");
		code(b, "ParticipantObjectIDTypeCode", "110181", "DCM", "SOP Class UID");
		size_t qlen = ev->query ? ev->query_len : 0;
		sb_str(b, "<ParticipantObjectQuery>");
		sb_base64(b, ev->query, qlen > QUERY_CAP ? QUERY_CAP : qlen);
		sb_str(b, "</ParticipantObjectQuery><ParticipantObjectDetail type=\"TransferSyntax\" value=\"");
		const char *ts = ev->transfer_syntax_uid ? ev->transfer_syntax_uid : "";
		sb_base64(b, ts, strnlen(ts, TEXT_CAP));
		sb_str(b, "\"/>");
		if (qlen > QUERY_CAP) { /* the query holds the first QUERY_CAP bytes */
			char total[32];
			int n = snprintf(total, sizeof(total), "%zu", qlen);
			sb_str(b, "<ParticipantObjectDetail type=\"QueryLength\" value=\"");
			sb_base64(b, total, (size_t)n);
			sb_str(b, "\"/>");
		}
		sb_str(b, "</ParticipantObjectIdentification>");
		break;
	}
}

int pn_audit_msg_build(const pn_audit_source *src, const pn_audit_event *ev, char **ret_msg, size_t *ret_len)
{
	sbuf b = {0};
	/* RFC 5424 HEADER: HOSTNAME and APP-NAME are printable US-ASCII
	 * without spaces; the node's host name is ours, but check anyway. */
	char host[256];
	size_t n = 0;
	for (const char *h = src->hostname ? src->hostname : ""; *h && n < sizeof(host) - 1; h++)
		host[n++] = (*h > 32 && *h < 127) ? *h : '_';
	host[n] = '\0';
	sb_fmt(&b, "<%d>1 ", ev->kind == PN_AUDIT_MSG_ALERT ? PRI_WARNING : PRI_NOTICE);
	rfc3339(&b, src->time_us);
	sb_fmt(&b, " %s pacsnode %d IHE+RFC-3881 - \xEF\xBB\xBF", n ? host : "-", src->pid);
	sb_str(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
	body(&b, src, ev);
	sb_str(&b, "</AuditMessage>");
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*ret_msg = b.p;
	*ret_len = b.len;
	return 0;
}
