/* A query's matches for the web (search.h): the loop of C-FIND's stream,
 * without the DIMSE side; each match as a dcmtk dataset, or written in the
 * DICOM JSON model straight from the blobs. */
#include "search.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "find_response.h"

#define UID_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define TAG_CHARSET 0x00080005u
#define TAG_LEVEL 0x00080052u
#define TAG_RETRIEVE_AE 0x00080054u
#define TAG_RETRIEVE_URL 0x00081190u
#define TAG_STUDY_UID 0x0020000Du
#define TAG_SERIES_UID 0x0020000Eu
#define TAG_SOP_UID 0x00080018u

struct pn_web_search {
	pn_store_ctx *ctx;
	pn_query *q;
	bool all;
	bool post;            /* some key is matched against the blobs */
	bool direct;          /* the JSON can be written from the blobs (keys in order) */
	long long skip, left; /* left: -1 no limit */
	pn_level_blob blobs[PN_LEVELS];
	pn_web_scratch scratch;
	bool running;
};

pn_dcm_ds *pn_web_identifier(const char *level)
{
	pn_dcm_ds *id = NULL;
	if (pn_dcm_ds_create(&id) < 0)
		return NULL;
	if (pn_dcm_ds_put(id, TAG_CHARSET, "ISO_IR 192") < 0 || pn_dcm_ds_put(id, TAG_LEVEL, level) < 0) {
		pn_dcm_ds_free(id);
		return NULL;
	}
	return id;
}

int pn_web_query(pn_dcm_ds *identifier, bool fuzzy, pn_query **ret, char *why, size_t whylen)
{
	return pn_web_query_flags(identifier, fuzzy ? PN_QUERY_FOLD_NAMES : 0, ret, why, whylen);
}

int pn_web_query_flags(pn_dcm_ds *identifier, unsigned flags, pn_query **ret, char *why, size_t whylen)
{
	unsigned short status = 0;
	return pn_query_parse(identifier, UID_STUDY_ROOT_FIND, PN_QUERY_RELATIONAL | flags, ret, &status, why, whylen);
}

int pn_web_search_start(pn_store_ctx *ctx, pn_query *q, bool all, int order, long long offset, long long limit,
                        pn_web_search **ret)
{
	*ret = NULL;
	pn_web_search *s = calloc(1, sizeof(*s));
	if (!s) {
		pn_query_free(q);
		return -ENOMEM;
	}
	s->ctx = ctx;
	s->q = q;
	s->all = all;
	s->skip = offset > 0 ? offset : 0;
	s->left = limit;
	s->direct = true;
	for (size_t i = 0; i < q->n_keys; i++) {
		s->post |= q->keys[i].post;
		if (q->keys[i].item_tags || (i > 0 && q->keys[i].tag <= q->keys[i - 1].tag))
			s->direct = false;
	}
	q->sql.order = order;
	if (pn_find_response_direct_ok(q) && (offset > 0 || limit >= 0)) {
		q->sql.offset = s->skip;
		q->sql.limit = limit > 0 ? limit : 0;
		s->skip = 0;
	}
	if (!ctx->db || pn_find_start(ctx->db, &q->sql) < 0) {
		pn_web_search_free(s);
		return -EIO;
	}
	s->running = true;
	*ret = s;
	return 0;
}

/* --- the general way: a dcmtk dataset ------------------------------------ */

static int merge_each(void *ctx, const pn_dcm_elem *e)
{
	pn_dcm_ds **pair = ctx;
	char *have = NULL;
	if (e->tag == TAG_CHARSET || pn_dcm_ds_get(pair[0], e->tag, &have) == 0) {
		free(have);
		return 0;
	}
	int rc = pn_dcm_ds_copy(pair[0], pair[1], e->tag, NULL);
	return rc == -ENOMEM ? rc : 0;
}

/* Every attribute the index keeps for the levels returned. */
static int merge_all(pn_dcm_ds *rsp, pn_dcm_ds *const levels[PN_LEVELS], int level)
{
	for (int l = 0; l <= level; l++) {
		if (!levels[l])
			continue;
		pn_dcm_ds *pair[2] = {rsp, levels[l]};
		int rc = pn_dcm_ds_each(levels[l], merge_each, pair);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Appends s at *at if it fits before end. */
static bool cat(char **at, const char *end, const char *s)
{
	size_t n = strlen(s);
	if ((size_t)(end - *at) <= n)
		return false;
	memcpy(*at, s, n + 1);
	*at += n;
	return true;
}

/* Retrieve URL (0008,1190) of a match at `level` into url; false when it
 * has none (a UID missing, too long). */
static bool url_of(char url[PN_WEB_URL_MAX], const char *base, int level, const char *study, const char *series,
                   const char *sop)
{
	char *at = url;
	const char *end = url + PN_WEB_URL_MAX;
	if (!study || (level >= PN_LEVEL_SERIES && !series) || (level >= PN_LEVEL_INSTANCE && !sop) ||
	    level < PN_LEVEL_STUDY)
		return false;
	bool ok = cat(&at, end, base) && cat(&at, end, "/studies/") && cat(&at, end, study);
	if (ok && level >= PN_LEVEL_SERIES)
		ok = cat(&at, end, "/series/") && cat(&at, end, series);
	if (ok && level >= PN_LEVEL_INSTANCE)
		ok = cat(&at, end, "/instances/") && cat(&at, end, sop);
	return ok;
}

static void put_url(pn_dcm_ds *rsp, const char *base, int level)
{
	if (!base || !base[0])
		return;
	char *study = NULL, *series = NULL, *sop = NULL;
	pn_dcm_ds_get(rsp, TAG_STUDY_UID, &study);
	if (level >= PN_LEVEL_SERIES)
		pn_dcm_ds_get(rsp, TAG_SERIES_UID, &series);
	if (level >= PN_LEVEL_INSTANCE)
		pn_dcm_ds_get(rsp, TAG_SOP_UID, &sop);
	char url[PN_WEB_URL_MAX];
	if (url_of(url, base, level, study, series, sop))
		pn_dcm_ds_put(rsp, TAG_RETRIEVE_URL, url);
	free(study);
	free(series);
	free(sop);
}

int pn_web_match_ds(const pn_query *q, const pn_find_row *row, pn_dcm_ds *const levels[PN_LEVELS], bool all,
                    const char *our_ae, const char *base, pn_dcm_ds **ret_rsp)
{
	pn_dcm_ds *rsp = NULL;
	int rc = pn_find_response_build(q, row, levels, our_ae, NULL, &rsp);
	if (rc == 0 && all)
		rc = merge_all(rsp, levels, q->level);
	if (rc < 0) {
		pn_dcm_ds_free(rsp);
		return rc;
	}
	pn_dcm_ds_remove(rsp, TAG_LEVEL);
	put_url(rsp, base, q->level);
	*ret_rsp = rsp;
	return 0;
}

/* --- the direct way: JSON from the blobs --------------------------------- */

static int scratch_reserve(pn_web_scratch *sc, size_t n)
{
	if (n <= sc->cap)
		return 0;
	size_t cap = sc->cap ? sc->cap : 64;
	while (cap < n)
		cap *= 2;
	pn_find_value *a = realloc(sc->a, cap * sizeof *a);
	if (a)
		sc->a = a;
	pn_find_value *b = realloc(sc->b, cap * sizeof *b);
	if (b)
		sc->b = b;
	if (!a || !b)
		return -ENOMEM;
	sc->cap = cap;
	return 0;
}

void pn_web_scratch_free(pn_web_scratch *sc)
{
	free(sc->a);
	free(sc->b);
	free(sc->texts);
	memset(sc, 0, sizeof *sc);
}

static const pn_find_value *find_field(const pn_find_value *f, size_t n, uint32_t tag)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (f[mid].tag < tag)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && f[lo].tag == tag ? &f[lo] : NULL;
}

static pn_find_value text_field(uint32_t tag, const char *vr, const char *text)
{
	pn_find_value v = {.tag = tag, .value = (const unsigned char *)text, .len = (uint32_t)strlen(text)};
	memcpy(v.vr, vr, 2);
	return v;
}

/* A UID of the response as pn_dcm_ds_get gives it, into out: 0, -ENOENT
 * (not in the response), 1 (a value only dcmtk's reading gives exactly:
 * anything but digits and dots before the NUL padding). */
static int uid_text(const pn_find_value *f, size_t n, uint32_t tag, char *out, size_t outlen)
{
	const pn_find_value *v = find_field(f, n, tag);
	if (!v)
		return -ENOENT;
	size_t len = v->len;
	if (v->from_blob) {
		if (v->vr[0] != 'U' || v->vr[1] != 'I')
			return 1;
		while (len > 0 && v->value[len - 1] == '\0')
			len--;
	}
	if (len >= outlen)
		return 1;
	for (size_t i = 0; i < len; i++)
		if (!((v->value[i] >= '0' && v->value[i] <= '9') || v->value[i] == '.'))
			return 1;
	memcpy(out, v->value, len);
	out[len] = '\0';
	return 0;
}

/* Adds Retrieve URL to the fields (sorted), as put_url does to a dataset. */
static int add_url(pn_web_scratch *sc, size_t *n, const char *base, int level)
{
	char uid[3][PN_WEB_URL_MAX];
	const uint32_t tags[3] = {TAG_STUDY_UID, TAG_SERIES_UID, TAG_SOP_UID};
	const char *have[3] = {NULL, NULL, NULL};
	for (int i = 0; i < 3 && i < level; i++) {
		int rc = uid_text(sc->a, *n, tags[i], uid[i], sizeof uid[i]);
		if (rc > 0)
			return 1;
		if (rc == 0)
			have[i] = uid[i];
	}
	if (!url_of(sc->url, base, level, have[0], have[1], have[2]))
		return 0;
	pn_find_value u = text_field(TAG_RETRIEVE_URL, "UR", sc->url);
	size_t at = 0;
	while (at < *n && sc->a[at].tag < TAG_RETRIEVE_URL)
		at++;
	if (at < *n && sc->a[at].tag == TAG_RETRIEVE_URL) {
		sc->a[at] = u;
		return 0;
	}
	memmove(sc->a + at + 1, sc->a + at, (*n - at) * sizeof *sc->a);
	sc->a[at] = u;
	(*n)++;
	return 0;
}

/* Merges a level blob's elements that the response lacks into the fields
 * (sorted), as merge_all does: the first level to have a tag gives it. */
static size_t merge_blob(pn_web_scratch *sc, size_t n, const pn_level_blob *lb)
{
	size_t i = 0, j = 0, m = 0;
	while (i < n || j < lb->n_elems) {
		const pn_blob_elem *e = j < lb->n_elems ? &lb->elems[j] : NULL;
		if (e && (e->tag == TAG_CHARSET || e->tag == TAG_LEVEL || (e->tag & 0xffff) == 0)) {
			j++;
			continue;
		}
		if (!e || (i < n && sc->a[i].tag <= e->tag)) {
			if (e && sc->a[i].tag == e->tag)
				j++;
			sc->b[m++] = sc->a[i++];
			continue;
		}
		pn_find_value v = {.tag = e->tag, .value = lb->bytes + e->off, .len = e->len, .from_blob = true};
		memcpy(v.vr, e->vr, 2);
		sc->b[m++] = v;
		j++;
	}
	pn_find_value *t = sc->a;
	sc->a = sc->b;
	sc->b = t;
	return m;
}

int pn_web_match_json(pn_web_scratch *sc, const pn_query *q, const pn_find_row *row,
                      pn_level_blob *const blobs[PN_LEVELS], bool all, const char *our_ae, const char *base,
                      pn_json_buf *out)
{
	size_t need = q->n_keys + 2;
	for (int l = 0; l <= q->level; l++) {
		if (!blobs[l] || !blobs[l]->have)
			continue;
		if (!pn_level_blob_json_ok(blobs[l]))
			return 1;
		if (all)
			need += blobs[l]->n_elems;
	}
	if (scratch_reserve(sc, need) < 0)
		return -ENOMEM;
	if (sc->n_texts < q->n_keys) {
		char(*t)[24] = realloc(sc->texts, q->n_keys * sizeof *t);
		if (!t)
			return -ENOMEM;
		sc->texts = t;
		sc->n_texts = q->n_keys;
	}
	/* The keys, in the order of the identifier (by tag), with Retrieve AE
	 * Title in its place when not asked; the level is not returned. */
	size_t n = 0;
	bool ae_done = q->asked_retrieve_ae;
	for (size_t i = 0; i < q->n_keys; i++) {
		const pn_query_key *k = &q->keys[i];
		if (!ae_done && k->tag > TAG_RETRIEVE_AE) {
			sc->a[n++] = text_field(TAG_RETRIEVE_AE, "AE", our_ae);
			ae_done = true;
		}
		if (k->role == PN_KEY_LEVEL)
			continue;
		int rc = pn_find_response_value(q, k, row, blobs, our_ae, sc->texts[i], &sc->a[n]);
		if (rc == PN_FIND_VALUE_GENERAL)
			return 1;
		if (rc == 0)
			n++;
	}
	if (!ae_done)
		sc->a[n++] = text_field(TAG_RETRIEVE_AE, "AE", our_ae);
	for (int l = 0; all && l <= q->level; l++)
		if (blobs[l] && blobs[l]->have)
			n = merge_blob(sc, n, blobs[l]);
	if (base && base[0] && add_url(sc, &n, base, q->level) != 0)
		return 1;

	size_t start = out->len;
	int rc = pn_json_put(out, "{", 1);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (i > 0)
			rc = pn_json_put(out, ",", 1);
		if (rc == 0)
			rc = pn_json_attr(out, sc->a[i].tag, sc->a[i].vr, sc->a[i].value, sc->a[i].len);
	}
	if (rc == 0)
		rc = pn_json_put(out, "}", 1);
	if (rc < 0 && !out->oom) {
		out->len = start; /* a VR the writer does not know: dcmtk's way */
		return 1;
	}
	return rc;
}

/* --- the loop -------------------------------------------------------------- */

static bool level_used(const pn_web_search *s, int l)
{
	return l <= s->q->level && ((s->q->need_levels & (1u << l)) || s->all);
}

static void level_datasets(pn_web_search *s, pn_dcm_ds *levels[PN_LEVELS])
{
	for (int l = 0; l < PN_LEVELS; l++)
		levels[l] = level_used(s, l) ? pn_level_blob_ds(&s->blobs[l], l) : NULL;
}

/* The next row that matches, its blobs taken: 1, 0 at the end, -EIO,
 * -ENOMEM. */
static int next_row(pn_web_search *s, pn_find_row *row)
{
	for (;;) {
		if (s->left == 0 || !s->running)
			return 0;
		int rc = pn_find_next(s->ctx->db, row);
		if (rc == 0) {
			s->running = false;
			pn_find_stop(s->ctx->db);
			return 0;
		}
		if (rc < 0)
			return -EIO;
		for (int l = 0; l < PN_LEVELS && rc >= 0; l++)
			if (level_used(s, l))
				rc = pn_level_blob_set(&s->blobs[l], &row->attrs[l]);
		if (rc < 0)
			return -ENOMEM;
		if (s->post) {
			pn_dcm_ds *levels[PN_LEVELS];
			level_datasets(s, levels);
			if (!pn_query_post_match(s->q, levels))
				continue;
		}
		if (s->skip > 0) {
			s->skip--;
			continue;
		}
		if (s->left > 0)
			s->left--;
		return 1;
	}
}

int pn_web_search_next(pn_web_search *s, const char *base, pn_dcm_ds **ret_rsp, pn_find_row *row)
{
	*ret_rsp = NULL;
	int rc = next_row(s, row);
	if (rc <= 0)
		return rc;
	pn_dcm_ds *levels[PN_LEVELS];
	level_datasets(s, levels);
	rc = pn_web_match_ds(s->q, row, levels, s->all, s->ctx->cfg->ae_title, base, ret_rsp);
	return rc < 0 ? -ENOMEM : 1;
}

int pn_web_search_next_json(pn_web_search *s, const char *base, pn_json_buf *out)
{
	pn_find_row row;
	int rc = next_row(s, &row);
	if (rc <= 0)
		return rc;
	if (s->direct) {
		pn_level_blob *blobs[PN_LEVELS];
		for (int l = 0; l < PN_LEVELS; l++)
			blobs[l] = level_used(s, l) ? &s->blobs[l] : NULL;
		rc = pn_web_match_json(&s->scratch, s->q, &row, blobs, s->all, s->ctx->cfg->ae_title, base, out);
		if (rc <= 0)
			return rc < 0 ? -ENOMEM : 1;
	}
	pn_dcm_ds *levels[PN_LEVELS], *rsp = NULL;
	level_datasets(s, levels);
	rc = pn_web_match_ds(s->q, &row, levels, s->all, s->ctx->cfg->ae_title, base, &rsp);
	pn_dcm_buf doc = {0};
	if (rc == 0)
		rc = pn_dcm_ds_write_json(rsp, &doc);
	pn_dcm_ds_free(rsp);
	if (rc == 0)
		rc = pn_json_put(out, doc.data, doc.len);
	free(doc.data);
	if (rc == -EINVAL)
		return -EINVAL;
	return rc < 0 ? -ENOMEM : 1;
}

const pn_query *pn_web_search_query(const pn_web_search *s)
{
	return s->q;
}

void pn_web_search_free(pn_web_search *s)
{
	if (!s)
		return;
	if (s->running && s->q->sql.limit > 0) {
		/* A query cut in SQL has at most `limit` rows left: reading them
		 * costs less than a cancel, which opens a connection of its own
		 * (10 ms a page section, and the next request on this connection
		 * waits for it). */
		pn_find_row row;
		while (pn_find_next(s->ctx->db, &row) == 1)
			;
	}
	if (s->running)
		pn_find_stop(s->ctx->db);
	for (int l = 0; l < PN_LEVELS; l++)
		pn_level_blob_clear(&s->blobs[l]);
	pn_web_scratch_free(&s->scratch);
	pn_query_free(s->q);
	free(s);
}
