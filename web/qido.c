/* QIDO-RS (PS3.18 10.6): the URL's parameters become a C-FIND identifier
 * (Study Root, relational), which goes through the same parser, the same
 * SQL and the same response builder as C-FIND; each match is written in
 * the DICOM JSON model as the client reads, so memory does not grow with
 * the number of matches (docs/web.md). */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attr_levels.h"
#include "audit.h"
#include "find.h"
#include "search.h"
#include "log.h"
#include "web_internal.h"

#define UID_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define TAG_CHARSET 0x00080005u
#define TAG_LEVEL 0x00080052u
#define TAG_RETRIEVE_URL 0x00081190u
#define TAG_STUDY_UID 0x0020000Du
#define TAG_SERIES_UID 0x0020000Eu
#define TAG_SOP_UID 0x00080018u
#define MAX_INCLUDES 256
#define CHUNK (64 * 1024)

/* The default return attributes: PS3.18 tables 10.6.3-3 (study), -4
 * (series) and -5 (instance), and a few a viewer shows at once (issuer,
 * descriptions). Retrieve URL is added per match. */
static const uint32_t study_defaults[] = {
    0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090, 0x00080201, 0x00081030, 0x00100010,
    0x00100020, 0x00100021, 0x00100030, 0x00100040, 0x0020000D, 0x00200010, 0x00201206, 0x00201208,
};
static const uint32_t series_defaults[] = {
    0x00080060, 0x00080201, 0x0008103E, 0x0020000E, 0x00200011, 0x00201209, 0x00400244, 0x00400245,
};
static const uint32_t instance_defaults[] = {
    0x00080016, 0x00080018, 0x00080056, 0x00080201, 0x00200013, 0x00280008, 0x00280010, 0x00280011, 0x00280100,
};

typedef struct {
	pn_web_req *r;
	pn_dcm_ds *id;
	int level;
	bool include_all;
	bool fuzzy;              /* person names folded (fuzzymatching, else the configuration) */
	bool phonetic;           /* and phonetically: fuzzymatching=true */
	long long limit, offset; /* -1: not given */
	char bad[256];           /* the first bad parameter, in words */
} params;

static bool all_digits(const char *s)
{
	if (!*s || strlen(s) > 9)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* A keyword ("PatientName") or eight hex digits ("00100010"). */
static int attribute_tag(const char *name, uint32_t *tag)
{
	size_t n = strlen(name);
	if (n == 8 && strspn(name, "0123456789abcdefABCDEF") == 8) {
		*tag = (uint32_t)strtoul(name, NULL, 16);
		return 0;
	}
	return pn_dcm_tag_from_keyword(name, tag);
}

static void put_empty(params *p, uint32_t tag)
{
	char *have = NULL;
	if (pn_dcm_ds_get(p->id, tag, &have) == 0 && have) {
		free(have);
		return; /* a match on it is there already */
	}
	if (pn_dcm_ds_put(p->id, tag, "") < 0 && !p->bad[0])
		snprintf(p->bad, sizeof(p->bad), "cannot return (%04X,%04X)", tag >> 16, tag & 0xffff);
}

static void include_fields(params *p, const char *value)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", value);
	char *save = NULL;
	for (char *f = strtok_r(buf, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
		uint32_t tag;
		if (strcmp(f, "all") == 0) {
			p->include_all = true;
		} else if (strchr(f, '.')) {
			snprintf(p->bad, sizeof(p->bad),
			         "includefield \"%.64s\": attributes inside sequences are not "
			         "selected one by one (the whole sequence is returned)",
			         f);
		} else if (attribute_tag(f, &tag) < 0) {
			snprintf(p->bad, sizeof(p->bad), "includefield \"%.64s\" is not an attribute keyword or tag",
			         f);
		} else if (tag == TAG_RETRIEVE_URL || pn_attr_level(tag) == PN_LEVEL_NONE) {
			/* Retrieve URL is written per match. Bulk data (Pixel
			 * Data, overlays, waveforms, documents, icons) is not in
			 * the index and the node has no Bulkdata resource for a
			 * BulkDataURI: PS3.18 10.6.3.3 returns the attributes the
			 * server supports, so they are left out, not refused. */
		} else {
			put_empty(p, tag);
			/* A private element comes with its Private Creator
			 * (PS3.18 10.6.3.3); (gggg,xxyy)'s is (gggg,00xx). */
			if (((tag >> 16) & 1) && (tag & 0xffff) >= 0x1000)
				put_empty(p, (tag & 0xffff0000u) | ((tag >> 8) & 0xffu));
		}
	}
}

static bool is_uid_vr(uint32_t tag)
{
	char vr[3];
	return pn_dcm_tag_vr(tag, vr) == 0 && strcmp(vr, "UI") == 0;
}

static enum MHD_Result each_param(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	params *p = cls;
	if (p->bad[0])
		return MHD_NO;
	const char *v = value ? value : "";
	if (strcmp(key, "limit") == 0 || strcmp(key, "offset") == 0) {
		if (!all_digits(v)) {
			snprintf(p->bad, sizeof(p->bad), "%s must be a non-negative integer", key);
			return MHD_NO;
		}
		*(key[0] == 'l' ? &p->limit : &p->offset) = atoll(v);
		return MHD_YES;
	}
	if (strcmp(key, "includefield") == 0) {
		include_fields(p, v);
		return p->bad[0] ? MHD_NO : MHD_YES;
	}
	if (strcmp(key, "fuzzymatching") == 0) {
		if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
			snprintf(p->bad, sizeof(p->bad), "fuzzymatching is true or false");
			return MHD_NO;
		}
		p->fuzzy = strcmp(v, "true") == 0;
		p->phonetic = p->fuzzy;
		return MHD_YES;
	}
	uint32_t tag;
	if (strchr(key, '.')) {
		snprintf(p->bad, sizeof(p->bad), "\"%.64s\": matching inside sequences is not supported", key);
		return MHD_NO;
	}
	if (attribute_tag(key, &tag) < 0) {
		snprintf(p->bad, sizeof(p->bad), "\"%.64s\" is neither a query parameter nor an attribute", key);
		return MHD_NO;
	}
	if (tag == TAG_CHARSET || tag == TAG_LEVEL || tag == TAG_RETRIEVE_URL || (tag >> 16) <= 0x0002) {
		snprintf(p->bad, sizeof(p->bad), "(%04X,%04X) cannot be matched", tag >> 16, tag & 0xffff);
		return MHD_NO;
	}
	if (strlen(v) > 1024) {
		snprintf(p->bad, sizeof(p->bad), "the value of \"%.64s\" is too long", key);
		return MHD_NO;
	}
	/* PS3.18 lists UIDs with commas; the identifier with backslashes. */
	char val[1100];
	snprintf(val, sizeof(val), "%s", v);
	if (is_uid_vr(tag))
		for (char *c = val; *c; c++)
			if (*c == ',')
				*c = '\\';
	if (pn_dcm_ds_put(p->id, tag, val) < 0) {
		snprintf(p->bad, sizeof(p->bad), "\"%.64s\" cannot be matched", key);
		return MHD_NO;
	}
	return MHD_YES;
}

static void put_defaults(params *p, const uint32_t *tags, size_t n)
{
	for (size_t i = 0; i < n; i++)
		put_empty(p, tags[i]);
}

#define PUT_DEFAULTS(p, a) put_defaults(p, a, sizeof(a) / sizeof(a[0]))

/* The identifier for the request, or NULL with p->bad said. */
static pn_dcm_ds *identifier(params *p, const char *study, const char *series)
{
	static const char *const levels[] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
	if (pn_dcm_ds_create(&p->id) < 0) {
		snprintf(p->bad, sizeof(p->bad), "out of memory");
		return NULL;
	}
	MHD_get_connection_values(p->r->conn, MHD_GET_ARGUMENT_KIND, each_param, p);
	if (!p->bad[0]) {
		/* A level's defaults: its own, and those of the levels above
		 * that the path does not fix. */
		if (p->level == PN_LEVEL_STUDY || !study)
			PUT_DEFAULTS(p, study_defaults);
		if (p->level >= PN_LEVEL_SERIES && (p->level == PN_LEVEL_SERIES || !series))
			PUT_DEFAULTS(p, series_defaults);
		if (p->level == PN_LEVEL_INSTANCE)
			PUT_DEFAULTS(p, instance_defaults);
		if (pn_dcm_ds_put(p->id, TAG_CHARSET, "ISO_IR 192") < 0 ||
		    pn_dcm_ds_put(p->id, TAG_LEVEL, levels[p->level]) < 0 ||
		    (study && pn_dcm_ds_put(p->id, TAG_STUDY_UID, study) < 0) ||
		    (series && pn_dcm_ds_put(p->id, TAG_SERIES_UID, series) < 0))
			snprintf(p->bad, sizeof(p->bad), "out of memory");
	}
	if (p->bad[0]) {
		pn_dcm_ds_free(p->id);
		p->id = NULL;
	}
	return p->id;
}

typedef struct {
	pn_web_search *search;
	bool xml; /* multipart/related of application/dicom+xml */
	char boundary[33];
	char base[300];  /* "http://host:port/dicomweb", "" for none */
	pn_json_buf out; /* what goes out next, from `pos` on */
	size_t pos;
	bool done, closed, failed;
	unsigned long long matches;
	char peer[64];
} stream;

static void stream_free(void *cls)
{
	stream *s = cls;
	pn_web_search_free(s->search);
	pn_json_buf_free(&s->out);
	free(s);
}

static int merge_each(void *ctx, const pn_dcm_elem *e)
{
	pn_dcm_ds **pair = ctx;
	int rc = pn_dcm_ds_copy(pair[0], pair[1], e->tag, NULL);
	return rc == -ENOMEM ? rc : 0;
}

/* One part of the multipart XML answer. */
static int next_xml(stream *s)
{
	pn_dcm_ds *rsp = NULL;
	pn_find_row row;
	int rc = pn_web_search_next(s->search, s->base, &rsp, &row);
	if (rc <= 0)
		return rc;
	pn_dcm_buf doc = {0};
	rc = pn_dcm_ds_write_xml(rsp, &doc);
	pn_dcm_ds_free(rsp);
	char head[128];
	int n = snprintf(head, sizeof(head), "--%s\r\nContent-Type: application/dicom+xml\r\n\r\n", s->boundary);
	if (rc == 0)
		rc = pn_json_put(&s->out, head, (size_t)n);
	if (rc == 0)
		rc = pn_json_put(&s->out, doc.data, doc.len);
	if (rc == 0)
		rc = pn_json_put(&s->out, "\r\n", 2);
	free(doc.data);
	return rc < 0 ? rc : 1;
}

/* The next match into s->out; 0 (s->done at the end), or -1. */
static int next_match(stream *s)
{
	int rc;
	if (s->xml) {
		rc = next_xml(s);
	} else {
		size_t before = s->out.len;
		rc = s->matches > 0 ? pn_json_put(&s->out, ",", 1) : 0;
		if (rc == 0)
			rc = pn_web_search_next_json(s->search, s->base, &s->out);
		if (rc == 0)
			s->out.len = before; /* no match: no comma */
	}
	if (rc == 0) {
		s->done = true;
		return 0;
	}
	if (rc < 0) {
		pn_error("http %s: QIDO-RS: %s", s->peer,
		         rc == -EIO      ? "the index query failed"
		         : rc == -EINVAL ? "a match cannot be written in the DICOM model"
		                         : "out of memory writing a match");
		return -1;
	}
	s->matches++;
	return 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	stream *s = cls;
	if (s->failed)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	/* What the last call left goes to the front: the buffer holds at most
	 * one call's worth and a match, however many matches go out. */
	pn_json_buf *o = &s->out;
	if (s->pos > 0) {
		memmove(o->data, o->data + s->pos, o->len - s->pos);
		o->len -= s->pos;
		s->pos = 0;
	}
	while (o->len < max && !s->done) {
		if (next_match(s) < 0) {
			s->failed = true;
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
	}
	if (s->done && !s->closed) {
		char tail[64];
		int n = s->xml ? snprintf(tail, sizeof(tail), "--%s--\r\n", s->boundary)
		               : snprintf(tail, sizeof(tail), "]");
		if (pn_json_put(o, tail, (size_t)n) < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		s->closed = true;
	}
	if (s->pos == o->len) {
		if (s->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		return 0;
	}
	size_t n = o->len - s->pos < max ? o->len - s->pos : max;
	memcpy(buf, o->data + s->pos, n);
	s->pos += n;
	if (s->pos == o->len)
		s->pos = o->len = 0;
	return (ssize_t)n;
}

/* Whether the client takes JSON: no Accept, or one naming
 * application/dicom+json, application/json or a wildcard. */
static bool accepts_json(const pn_web_req *r)
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	if (!a || !a[0])
		return true;
	return strstr(a, "application/dicom+json") || strstr(a, "application/json") || strstr(a, "*/*") ||
	       strstr(a, "application/*");
}

/* Whether the client asks for XML: multipart/related of
 * application/dicom+xml (and takes no JSON before it). */
static bool wants_xml(const pn_web_req *r)
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	if (!a)
		return false;
	const char *x = strstr(a, "application/dicom+xml");
	const char *j = strstr(a, "application/dicom+json");
	return x && strstr(a, "multipart/related") && (!j || x < j);
}

static void audit(pn_web_req *r, const pn_dcm_ds *id, bool failed)
{
	if (!pn_audit_enabled(r->ctx->audit))
		return;
	pn_dcm_buf buf = {0};
	if (pn_dcm_ds_encode_le(id, true, &buf) < 0)
		return;
	pn_audit_assoc who = {.calling_ae = r->user[0] ? r->user : "HTTP",
	                      .called_ae = r->ctx->cfg->ae_title,
	                      .peer_addr = r->peer,
	                      .tls = r->https};
	pn_audit_query(r->ctx->audit, &who, UID_STUDY_ROOT_FIND, "1.2.840.10008.1.2.1", buf.data, buf.len, failed);
	free(buf.data);
}

static int level_order(int level)
{
	return level == PN_LEVEL_STUDY ? PN_FIND_ORDER_NEWEST : PN_FIND_ORDER_NUMBER;
}

/* Runs the query `p` built and streams its matches. `metadata`: WADO-RS
 * metadata (every stored attribute, no Retrieve URL, 404 when nothing
 * matches). */
static enum MHD_Result answer(pn_web_req *r, params *p, bool metadata)
{
	pn_dcm_ds *for_audit = NULL;
	if (pn_audit_enabled(r->ctx->audit) && pn_dcm_ds_create(&for_audit) == 0) {
		/* the identifier as asked, before the query takes it over */
		pn_dcm_ds *pair[2] = {for_audit, p->id};
		pn_dcm_ds_each(p->id, merge_each, pair);
	}
	pn_query *q = NULL;
	char why[256] = "";
	/* fuzzymatching=true: the same fuzzy semantic matching of names as a
	 * C-FIND that negotiated it; absent: the configured case folding */
	int rc =
	    pn_web_query_flags(p->id, (p->fuzzy ? PN_QUERY_FOLD_NAMES : 0) | (p->phonetic ? PN_QUERY_FUZZY_NAMES : 0),
	                       &q, why, sizeof(why));
	p->id = NULL; /* the query has it */
	if (rc < 0) {
		if (for_audit)
			audit(r, for_audit, true);
		pn_dcm_ds_free(for_audit);
		if (rc == -ENOMEM)
			return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
	}
	stream *s = calloc(1, sizeof(*s));
	if (!s) {
		pn_query_free(q);
		pn_dcm_ds_free(for_audit);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	s->xml = wants_xml(r);
	if (s->xml) {
		unsigned char rnd[16];
		RAND_bytes(rnd, sizeof(rnd));
		for (int i = 0; i < 16; i++)
			snprintf(s->boundary + 2 * i, 3, "%02x", rnd[i]);
	}
	long long limit = p->limit;
	/* The node's cap on C-FIND matches holds here too: a client pages
	 * with limit and offset. */
	int cap = r->ctx->cfg->max_matches;
	if (cap > 0 && !metadata && (limit < 0 || limit > cap))
		limit = cap;
	bool unmatched = q->unmatched;
	/* Pages in a stable order (PS3.18 leaves it to us), cut in SQL when
	 * the index decides every match. */
	int order = !metadata && (p->limit >= 0 || p->offset > 0) ? level_order(p->level) : PN_FIND_ORDER_NONE;
	snprintf(s->peer, sizeof(s->peer), "%s", r->peer);
	char host[256];
	pn_web_base_url(r, host, sizeof(host));
	if (host[0] && !metadata)
		snprintf(s->base, sizeof(s->base), "%s/dicomweb", host);
	rc = pn_web_search_start(r->ctx, q, p->include_all, order, p->offset, limit, &s->search);
	if (for_audit)
		audit(r, for_audit, rc < 0);
	pn_dcm_ds_free(for_audit);
	if (rc < 0) {
		stream_free(s);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer: %s",
		                    r->ctx->db ? pn_db_errmsg(r->ctx->db) : "no database connection");
	}
	/* The first match before the status line: metadata of nothing is a
	 * 404, and a failing query a 503 rather than a cut answer. */
	if ((!s->xml && pn_json_put(&s->out, "[", 1) < 0) || next_match(s) < 0) {
		stream_free(s);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index query failed");
	}
	if (metadata && s->matches == 0) {
		stream_free(s);
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such study, series or instance");
	}
	struct MHD_Response *resp =
	    MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, CHUNK, stream_read, s, stream_free);
	if (!resp) {
		stream_free(s);
		return MHD_NO;
	}
	char type[128];
	if (s->xml)
		snprintf(type, sizeof(type), "multipart/related; type=\"application/dicom+xml\"; boundary=%s",
		         s->boundary);
	else
		snprintf(type, sizeof(type), "application/dicom+json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (unmatched)
		MHD_add_response_header(resp, "Warning",
		                        "299 pacsnode \"some attributes were not matched: they are only returned\"");
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}

enum MHD_Result pn_web_qido(pn_web_req *r, int level, const char *study, const char *series)
{
	if (!accepts_json(r) && !wants_xml(r))
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE,
		                    "QIDO-RS answers application/dicom+json or "
		                    "multipart/related; type=\"application/dicom+xml\"");
	params p = {.r = r, .level = level, .limit = -1, .offset = -1, .fuzzy = r->ctx->cfg->pn_case_insensitive};
	if (!identifier(&p, study, series))
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "%s", p.bad);
	return answer(r, &p, false);
}

enum MHD_Result pn_web_metadata(pn_web_req *r, const char *study, const char *series, const char *sop)
{
	if (!accepts_json(r))
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE, "metadata is served as application/dicom+json");
	params p = {.r = r, .level = PN_LEVEL_INSTANCE, .limit = -1, .offset = -1, .include_all = true};
	p.id = pn_web_identifier("IMAGE");
	if (!p.id)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	if (pn_dcm_ds_put(p.id, TAG_STUDY_UID, study) < 0 ||
	    pn_dcm_ds_put(p.id, TAG_SERIES_UID, series ? series : "") < 0 ||
	    pn_dcm_ds_put(p.id, TAG_SOP_UID, sop ? sop : "") < 0 || pn_dcm_ds_put(p.id, 0x00080016, "") < 0) {
		pn_dcm_ds_free(p.id);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	return answer(r, &p, true);
}
