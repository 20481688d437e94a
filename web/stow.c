/* STOW-RS (PS3.18 10.5): POST /dicomweb/studies[/{study}] with
 * multipart/related; type="application/dicom". Each part is written into a
 * temporary file as it arrives (our meta header, then its dataset's bytes
 * as sent) and stored by exactly the C-STORE path when it ends
 * (pn_store_instance_*): validation, durable file, index row, duplicate
 * policy, hierarchy conflicts. The answer lists what was stored and what
 * failed, with the C-STORE status as Failure Reason (docs/web.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_tally.h"
#include "log.h"
#include "metrics.h"
#include "multipart.h"
#include "part10.h"
#include "status.h"
#include "uid.h"
#include "web_internal.h"

/* A part's File Meta Information is read whole before anything is
 * written: beyond this it is not a Part 10 header we take. */
#define META_MAX (64 * 1024)
/* Results kept for the answer; a request with more parts is refused. */
#define MAX_PARTS 100000

typedef struct {
	char sop_class[PN_UID_MAX + 1], sop_uid[PN_UID_MAX + 1];
	pn_store_where where;
	unsigned short status; /* 0: stored */
	bool warning;          /* stored, with a warning status */
} result;

struct pn_web_stow {
	pn_web_req *r;
	pn_store_ctx *ctx;
	pn_multipart *mp;
	char study[PN_UID_MAX + 1]; /* from the URL, "" for none */
	char source[64];
	uint64_t received, limit;
	/* the current part */
	bool skipping; /* failed early: the rest of its bytes are dropped */
	unsigned short part_status;
	char part_why[160];
	char *head; /* the part's first bytes, until its meta header is read */
	size_t head_len;
	bool have_meta;
	pn_part10_meta meta;
	pn_store_instance *instance;
	result *results;
	size_t n_results, cap_results;
	unsigned long long stored, failed;
	pn_audit_tally *tally;
	/* What follows the stores (pn_store_after): a part's before the next
	 * part begins; the last one's counts folded before the answer, its
	 * next temporary files made once the answer is sent
	 * (pn_web_stow_free, from on_completed). */
	bool after_due;
	unsigned after_committed;
	bool settled;
	uint64_t discarded;
	int error;           /* a reason to stop reading: an HTTP status */
	char error_why[256]; /* and its words */
};

static int add_result(pn_web_stow *s, const char *cls, const char *uid, const pn_store_where *where,
                      unsigned short status)
{
	if (s->n_results == MAX_PARTS) {
		s->error = MHD_HTTP_CONTENT_TOO_LARGE;
		snprintf(s->error_why, sizeof(s->error_why), "more than %d instances in one request", MAX_PARTS);
		return -EMSGSIZE;
	}
	if (s->n_results == s->cap_results) {
		size_t cap = s->cap_results ? s->cap_results * 2 : 16;
		result *n = realloc(s->results, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->results = n;
		s->cap_results = cap;
	}
	result *x = &s->results[s->n_results++];
	snprintf(x->sop_class, sizeof(x->sop_class), "%s", cls ? cls : "");
	snprintf(x->sop_uid, sizeof(x->sop_uid), "%s", uid ? uid : "");
	if (where)
		x->where = *where;
	else
		memset(&x->where, 0, sizeof(x->where));
	x->warning = status == 0xB000 || status == 0xB006 || status == 0xB007;
	x->status = status == PN_STATUS_SUCCESS || x->warning ? 0 : status;
	if (x->status)
		s->failed++;
	else
		s->stored++;
	return 0;
}

/* A part that cannot be stored, known before its end: its bytes are
 * dropped and it is answered as failed. */
static void skip_part(pn_web_stow *s, unsigned short status, const char *why)
{
	s->skipping = true;
	s->part_status = status;
	snprintf(s->part_why, sizeof(s->part_why), "%s", why);
	pn_store_instance_discard(s->instance);
	s->instance = NULL;
}

static void run_after(pn_web_stow *s)
{
	if (!s->after_due)
		return;
	pn_store_after(s->ctx, s->after_committed);
	s->after_due = false;
	s->after_committed = 0;
}

static int on_begin(void *ctx, const char *headers, size_t len)
{
	(void)len;
	pn_web_stow *s = ctx;
	run_after(s);
	s->skipping = false;
	s->have_meta = false;
	s->head_len = 0;
	char type[256] = "", media[128] = "";
	if (pn_multipart_header(headers, "Content-Type", type, sizeof(type)) == 0)
		pn_content_type_param(type, NULL, media, sizeof(media));
	/* The request's type says application/dicom; a part may repeat it. */
	if (media[0] && strcmp(media, "application/dicom") != 0) {
		skip_part(s, PN_STATUS_CANNOT_PARSE, "a part that is not application/dicom");
		return 0;
	}
	char why[256];
	int rc = pn_store_instance_begin(s->ctx, &s->instance, why, sizeof(why));
	if (rc == 0)
		pn_store_instance_defer_after(s->instance);
	if (rc == 0 && s->study[0])
		pn_store_instance_expect_study(s->instance, s->study);
	if (rc < 0) {
		skip_part(s, PN_STATUS_OUT_OF_STORAGE,
		          rc == -ENOSPC ? "storage full" : "could not create a temporary file");
		if (rc == -ENOSPC)
			pn_warning("http %s: STOW-RS part refused (0x%04X): %s", s->r->peer, PN_STATUS_OUT_OF_STORAGE,
			           why);
		else
			pn_error("http %s: STOW-RS: %s", s->r->peer, why);
	}
	return 0;
}

/* The part's first bytes until its File Meta Information is whole; then
 * our meta header and the dataset's bytes that came with it. */
static int take_meta(pn_web_stow *s, const char *buf, size_t len)
{
	size_t want = s->head_len + len;
	if (want > META_MAX)
		want = META_MAX;
	char *h = realloc(s->head, want ? want : 1);
	if (!h)
		return -ENOMEM;
	s->head = h;
	size_t take = want - s->head_len;
	memcpy(s->head + s->head_len, buf, take);
	s->head_len += take;
	int rc = pn_part10_meta_parse(s->head, s->head_len, &s->meta);
	if (rc == -EAGAIN && s->head_len < META_MAX)
		return 0;
	if (rc < 0) {
		skip_part(s, PN_STATUS_CANNOT_PARSE,
		          "not a DICOM Part 10 file (preamble, DICM, File Meta Information)");
		return 0;
	}
	if (!pn_uid_valid(s->meta.sop_instance_uid) || !pn_uid_valid(s->meta.sop_class_uid)) {
		skip_part(s, PN_STATUS_BAD_UID, "Media Storage SOP Class/Instance UID is not a valid UID");
		return 0;
	}
	s->have_meta = true;
	rc = pn_store_instance_meta(s->instance, s->meta.sop_class_uid, s->meta.sop_instance_uid, s->meta.ts_uid,
	                            s->source);
	/* what followed the meta header: in head, and in this buffer */
	if (rc == 0 && s->head_len > s->meta.dataset_offset)
		rc = pn_store_instance_write(s->instance, s->head + s->meta.dataset_offset,
		                             s->head_len - s->meta.dataset_offset);
	if (rc == 0 && take < len)
		rc = pn_store_instance_write(s->instance, buf + take, len - take);
	return 0; /* a write error is answered at the part's end */
}

static int on_data(void *ctx, const char *buf, size_t len)
{
	pn_web_stow *s = ctx;
	if (s->skipping)
		return 0;
	if (!s->have_meta)
		return take_meta(s, buf, len);
	pn_store_instance_write(s->instance, buf, len);
	return 0;
}

static int on_end(void *ctx)
{
	pn_web_stow *s = ctx;
	if (!s->skipping && !s->have_meta)
		skip_part(s, PN_STATUS_CANNOT_PARSE, "not a DICOM Part 10 file (too short)");
	if (s->skipping) {
		pn_warning("http %s: STOW-RS: a part refused (0x%04X): %s", s->r->peer, s->part_status, s->part_why);
		pn_metrics_instance(s->part_status, 0);
		return add_result(s, s->have_meta ? s->meta.sop_class_uid : "",
		                  s->have_meta ? s->meta.sop_instance_uid : "", NULL, s->part_status);
	}
	char why[512] = "";
	pn_store_where where;
	unsigned short status =
	    pn_store_instance_finish(s->ctx, s->instance, "STOW-RS", s->meta.sop_class_uid, s->meta.sop_instance_uid,
	                             s->source, s->tally, &where, why, sizeof(why));
	s->instance = NULL;
	s->after_due = true;
	if (where.committed)
		s->after_committed++;
	return add_result(s, s->meta.sop_class_uid, s->meta.sop_instance_uid, &where, status);
}

static void settle(pn_web_stow *s);

/* DICOM Instances Transferred (C), per study: the user stored them here. */
static void audit_study(void *ctx, const pn_audit_study *study, bool failed)
{
	pn_web_stow *s = ctx;
	pn_audit_assoc who = {.calling_ae = s->r->user[0] ? s->r->user : "HTTP",
	                      .called_ae = s->ctx->cfg->ae_title,
	                      .peer_addr = s->r->peer,
	                      .tls = s->r->https};
	pn_audit_instances_transferred(s->ctx->audit, &who, true, NULL, study, failed);
}

pn_web_stow *pn_web_stow_begin(pn_web_req *r, const char *study)
{
	const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	char media[128] = "", type[128] = "", boundary[PN_MULTIPART_BOUNDARY_MAX + 1] = "";
	if (!ct || pn_content_type_param(ct, NULL, media, sizeof(media)) < 0 ||
	    strcmp(media, "multipart/related") != 0 ||
	    (pn_content_type_param(ct, "type", type, sizeof(type)) == 0 && strcmp(type, "application/dicom") != 0)) {
		pn_web_refuse_body(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
		                   "STOW-RS takes multipart/related; type=\"application/dicom\" (Part 10 files)");
		return NULL;
	}
	if (pn_content_type_param(ct, "boundary", boundary, sizeof(boundary)) < 0) {
		pn_web_refuse_body(r, MHD_HTTP_BAD_REQUEST, "the multipart Content-Type has no boundary");
		return NULL;
	}
	uint64_t limit = (uint64_t)r->ctx->cfg->http_max_body_mib << 20;
	const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && strtoull(cl, NULL, 10) > limit) {
		pn_web_refuse_body(r, MHD_HTTP_CONTENT_TOO_LARGE,
		                   "the body is larger than [http] max_body_mib (%d MiB)",
		                   r->ctx->cfg->http_max_body_mib);
		return NULL;
	}
	pn_web_stow *s = calloc(1, sizeof(*s));
	if (!s || pn_audit_tally_create(&s->tally) < 0) {
		free(s);
		pn_web_refuse_body(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
		return NULL;
	}
	s->r = r;
	s->ctx = r->ctx;
	s->limit = limit;
	snprintf(s->study, sizeof(s->study), "%s", study ? study : "");
	/* the index row's and the meta header's source: the user (an AE title
	 * is at most 16 characters) */
	snprintf(s->source, sizeof(s->source), "%.16s", r->user[0] ? r->user : "DICOMWEB");
	pn_multipart_cb cb = {.begin = on_begin, .data = on_data, .end = on_end};
	if (pn_multipart_create(boundary, &cb, s, &s->mp) < 0) {
		pn_web_refuse_body(r, MHD_HTTP_BAD_REQUEST, "the multipart boundary is not one RFC 2046 allows");
		pn_audit_tally_free(s->tally);
		free(s);
		return NULL;
	}
	return s;
}

void pn_web_stow_free(pn_web_stow *s)
{
	if (!s)
		return;
	pn_store_instance_discard(s->instance);
	s->instance = NULL;
	settle(s); /* a request cut short: its stores counted all the same */
	run_after(s);
	pn_multipart_free(s->mp);
	if (pn_audit_enabled(s->ctx->audit) && !pn_audit_tally_empty(s->tally))
		pn_audit_tally_each(s->tally, audit_study, s);
	pn_audit_tally_free(s->tally);
	free(s->head);
	free(s->results);
	free(s);
}

/* After a refusal the rest of the body is read and dropped, up to this
 * much, so that the client, still sending, gets to read the answer (a
 * close with unread bytes would reset the connection under it). */
#define DISCARD_MAX (64ull << 20)

int pn_web_stow_feed(pn_web_stow *s, const char *data, size_t len)
{
	if (s->error) {
		s->discarded += len;
		return s->discarded > DISCARD_MAX ? -2 : -1;
	}
	s->received += len;
	if (s->received > s->limit) {
		s->error = MHD_HTTP_CONTENT_TOO_LARGE;
		snprintf(s->error_why, sizeof(s->error_why), "the body is larger than [http] max_body_mib (%d MiB)",
		         s->ctx->cfg->http_max_body_mib);
		return -1;
	}
	int rc = pn_multipart_feed(s->mp, data, len);
	if (rc < 0 && !s->error) {
		s->error = rc == -ENOMEM ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_REQUEST;
		snprintf(s->error_why, sizeof(s->error_why), "%s",
		         rc == -EMSGSIZE ? "a part's headers are too long" : "the multipart body is malformed");
	}
	return s->error ? -1 : 0;
}

/* One item of the Referenced / Failed SOP Sequence. */
static int item_json(const result *x, const char *base, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "{\"00081150\":{\"vr\":\"UI\"%s%s%s},\"00081155\":{\"vr\":\"UI\"%s%s%s}",
	                 x->sop_class[0] ? ",\"Value\":[\"" : "", x->sop_class, x->sop_class[0] ? "\"]" : "",
	                 x->sop_uid[0] ? ",\"Value\":[\"" : "", x->sop_uid, x->sop_uid[0] ? "\"]" : "");
	if (x->status)
		n += snprintf(out + n, outlen - (size_t)n, ",\"00081197\":{\"vr\":\"US\",\"Value\":[%u]}", x->status);
	else if (base[0] && x->where.study_uid[0] && x->where.series_uid[0])
		n += snprintf(out + n, outlen - (size_t)n,
		              ",\"00081190\":{\"vr\":\"UR\",\"Value\":[\"%s/studies/%s/series/%s/instances/%s\"]}",
		              base, x->where.study_uid, x->where.series_uid, x->sop_uid);
	if (x->warning)
		n += snprintf(out + n, outlen - (size_t)n, ",\"00081196\":{\"vr\":\"US\",\"Value\":[45056]}");
	n += snprintf(out + n, outlen - (size_t)n, "}");
	return n;
}

/* Before the answer, once every part's file and index row are durable
 * (pn_store_instance_finish): the counts of what was stored folded in, so
 * that a query anywhere sees them once the client has its answer, as
 * after an association's release. The next temporary files are made
 * after the answer (pn_web_stow_free). The final folders are made durable
 * when the connection ends (pn_web_serve), as at an association's
 * release: until then each instance's durable temporary name is what
 * recovery relinks from, and a client sending one instance a request pays
 * that fsync once a connection, not once a request. */
static void settle(pn_web_stow *s)
{
	if (s->settled || (s->stored == 0 && s->failed == 0))
		return;
	s->settled = true;
	pn_store_count(s->ctx, s->after_committed);
	s->after_committed = 0;
	pn_store_settle(s->ctx);
}

enum MHD_Result pn_web_stow_finish(pn_web_stow *s)
{
	pn_web_req *r = s->r;
	settle(s);
	if (!s->error && pn_multipart_finish(s->mp) < 0) {
		s->error = MHD_HTTP_BAD_REQUEST;
		snprintf(s->error_why, sizeof(s->error_why), "the multipart body ends before its closing delimiter");
	}
	if (s->error)
		return pn_web_error(r, (unsigned)s->error, "%s (%llu instances stored before)", s->error_why,
		                    s->stored);
	if (s->n_results == 0)
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "the request holds no instance");
	char base[300] = "", host[256];
	pn_web_base_url(r, host, sizeof(host));
	if (host[0])
		snprintf(base, sizeof(base), "%s/dicomweb", host);
	/* 800 bytes an item at most (UIDs of 64 characters, a URL of 500) */
	size_t cap = 512 + s->n_results * 900;
	char *out = malloc(cap);
	if (!out)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	size_t n = (size_t)snprintf(out, cap, "{");
	if (base[0] && s->study[0])
		n += (size_t)snprintf(out + n, cap - n, "\"00081190\":{\"vr\":\"UR\",\"Value\":[\"%s/studies/%s\"]},",
		                      base, s->study);
	for (int failed = 1; failed >= 0; failed--) {
		n += (size_t)snprintf(out + n, cap - n, "\"%s\":{\"vr\":\"SQ\"", failed ? "00081198" : "00081199");
		bool any = false;
		for (size_t i = 0; i < s->n_results; i++) {
			const result *x = &s->results[i];
			if ((x->status != 0) != (failed == 1))
				continue;
			n += (size_t)snprintf(out + n, cap - n, "%s", any ? "," : ",\"Value\":[");
			any = true;
			n += (size_t)item_json(x, base, out + n, cap - n);
		}
		n += (size_t)snprintf(out + n, cap - n, "%s}%s", any ? "]" : "", failed ? "," : "");
	}
	n += (size_t)snprintf(out + n, cap - n, "}");
	/* PS3.18 10.5.3: all stored 200, some 202, none 409 */
	unsigned status = s->failed == 0 ? MHD_HTTP_OK : s->stored ? MHD_HTTP_ACCEPTED : MHD_HTTP_CONFLICT;
	pn_log(status == MHD_HTTP_OK ? PN_LOG_INFO : PN_LOG_WARNING, "http %s%s%s: STOW-RS: %llu stored, %llu failed",
	       r->peer, r->user[0] ? " " : "", r->user, s->stored, s->failed);
	struct MHD_Response *resp = MHD_create_response_from_buffer(n, out, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(out);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/dicom+json");
	return pn_web_queue(r, status, resp);
}
