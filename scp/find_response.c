/* C-FIND response identifiers, the general way and the direct way
 * (find_response.h). */
#include "find_response.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dicom_values.h"
#include "evr.h"
#include "json_model.h"
#include "log.h"

#define TAG_RETRIEVE_AE 0x00080054u

/* --- blobs ------------------------------------------------------------ */

int pn_blob_index(const unsigned char *data, size_t len, pn_blob_elem **elems, size_t *n, size_t *cap)
{
	size_t off = 0;
	*n = 0;
	while (off < len) {
		/* Undefined lengths are not followed (pn_evr_read refuses them):
		 * the blobs are written with explicit lengths, and anything else
		 * goes the general way. */
		pn_evr_elem el;
		if (pn_evr_read(data + off, len - off, &el) < 0)
			return -EBADMSG;
		uint32_t tag = el.tag;
		if (*n > 0 && tag <= (*elems)[*n - 1].tag)
			return -EBADMSG;
		if (*n == *cap) {
			size_t c = *cap ? *cap * 2 : 32;
			pn_blob_elem *e = realloc(*elems, c * sizeof *e);
			if (!e)
				return -ENOMEM;
			*elems = e;
			*cap = c;
		}
		pn_blob_elem *e = &(*elems)[(*n)++];
		e->tag = tag;
		e->vr[0] = el.vr[0];
		e->vr[1] = el.vr[1];
		e->off = (uint32_t)(off + el.head);
		e->len = el.len;
		off += el.head + el.len;
	}
	return 0;
}

int pn_level_blob_set(pn_level_blob *lb, const pn_blob *b)
{
	if (lb->have && lb->len == b->len && (b->len == 0 || memcmp(lb->bytes, b->data, b->len) == 0))
		return 0;
	pn_dcm_ds_free(lb->ds);
	lb->ds = NULL;
	lb->parsed = false;
	lb->have = false;
	lb->indexed = false;
	lb->json = 0;
	unsigned char *bytes = realloc(lb->bytes, b->len ? b->len : 1);
	if (!bytes)
		return -ENOMEM;
	lb->bytes = bytes;
	memcpy(lb->bytes, b->data, b->len);
	lb->len = b->len;
	lb->have = true;
	int rc = pn_blob_index(lb->bytes, lb->len, &lb->elems, &lb->n_elems, &lb->cap_elems);
	if (rc == -ENOMEM)
		return rc;
	lb->indexed = rc == 0;
	return 0;
}

pn_dcm_ds *pn_level_blob_ds(pn_level_blob *lb, int level)
{
	if (!lb->have)
		return NULL;
	if (!lb->parsed) {
		lb->parsed = true;
		if (pn_dcm_ds_load_buffer(lb->bytes, lb->len, &lb->ds) < 0) {
			pn_warning("C-FIND: a stored attribute blob at level %d cannot be read; left out", level);
			lb->ds = NULL;
		}
	}
	return lb->ds;
}

bool pn_level_blob_json_ok(pn_level_blob *lb)
{
	if (lb->json == 0) {
		/* the table of elements holds the top level's checks already */
		lb->json = lb->indexed ? 1 : -1;
		for (size_t i = 0; lb->json > 0 && i < lb->n_elems; i++) {
			const pn_blob_elem *e = &lb->elems[i];
			if (pn_json_check_elem(e->tag, e->vr, lb->bytes + e->off, e->len) < 0)
				lb->json = -1;
		}
	}
	return lb->json > 0;
}

void pn_level_blob_clear(pn_level_blob *lb)
{
	pn_dcm_ds_free(lb->ds);
	free(lb->bytes);
	free(lb->elems);
	memset(lb, 0, sizeof *lb);
}

/* --- the general way ---------------------------------------------------- */

static int encode_text(void *ctx, const char *in, size_t len, char **ret_out)
{
	return pn_charset_from_utf8(ctx, in, len, ret_out);
}

/* Answers in the request's character set when every value fits in it,
 * otherwise in UTF-8 (values are UTF-8 already). */
static int set_charset(pn_dcm_ds *rsp, pn_charset_encoder *enc, const char *request_charset)
{
	if (enc) {
		int rc = pn_dcm_ds_recode_text(rsp, encode_text, enc, request_charset);
		if (rc != -EILSEQ)
			return rc < 0 ? rc : 0;
	}
	int rc = pn_dcm_ds_recode_text(rsp, NULL, NULL, "ISO_IR 192");
	return rc < 0 ? rc : 0;
}

/* Timezone query adjustment: the value of key k (a date or a time of a
 * pair, whose stored values da and tm the row holds) in the query's zone,
 * into out; false: answered as stored (no time, or values that cannot be
 * read: a date without a time names a day, not an instant). */
static bool shifted_value(const pn_query *q, const pn_query_key *k, const pn_find_row *row, char *da, char *tm,
                          char out[24])
{
	if (!q->tz_adjust || k->tz_pair < 0 || k->tz_pair >= PN_FIND_TZ_PAIRS || !tm)
		return false;
	int32_t data = row->tz_offset[k->tz_pair];
	if (data == PN_FIND_TZ_UNKNOWN)
		return false;
	if (da)
		pn_trim(da);
	pn_trim(tm);
	bool date_key = k->tag == pn_query_dt_pairs[k->tz_pair][0];
	if (!tm[0] || (date_key && (!da || !da[0])))
		return false;
	char d2[9], t2[24];
	if (!pn_da_tm_shift(da, tm, q->sql.tz_query_offset - data, d2, t2))
		return false;
	memcpy(out, date_key ? d2 : t2, strlen(date_key ? d2 : t2) + 1);
	return true;
}

/* The same from a level's dataset (the general way). */
static bool shifted_from_ds(const pn_query *q, const pn_query_key *k, const pn_find_row *row, const pn_dcm_ds *ds,
                            char out[24])
{
	if (!q->tz_adjust || k->tz_pair < 0 || !ds)
		return false;
	char *da = NULL, *tm = NULL;
	pn_dcm_ds_get(ds, pn_query_dt_pairs[k->tz_pair][0], &da);
	pn_dcm_ds_get(ds, pn_query_dt_pairs[k->tz_pair][1], &tm);
	bool ok = shifted_value(q, k, row, da, tm, out);
	free(da);
	free(tm);
	return ok;
}

static int bit_index(unsigned bit)
{
	int i = 0;
	while (bit > 1) {
		bit >>= 1;
		i++;
	}
	return i;
}

/* A computed attribute's value as text ("" when the index had none). */
static const char *computed_value(const pn_query_key *k, const pn_find_row *row, char buf[24])
{
	if (k->computed == PN_FIND_C_MODALITIES)
		return row->modalities ? row->modalities : "";
	if (k->computed == PN_FIND_C_SOP_CLASSES)
		return row->sop_classes ? row->sop_classes : "";
	int64_t n = row->counts[bit_index(k->computed)];
	/* the digits from the end (snprintf was a tenth of a QIDO match) */
	char *p = buf + 23;
	*p = '\0';
	if (n < 0)
		return p;
	do {
		*--p = (char)('0' + n % 10);
		n /= 10;
	} while (n > 0);
	return p;
}

int pn_find_response_build(const pn_query *q, const pn_find_row *row, pn_dcm_ds *const levels[PN_LEVELS],
                           const char *our_ae, pn_charset_encoder *enc, pn_dcm_ds **ret_rsp)
{
	pn_dcm_ds *rsp = NULL;
	int rc = pn_dcm_ds_create(&rsp);
	if (rc < 0)
		return rc;
	char buf[24];
	for (size_t i = 0; i < q->n_keys && rc >= 0; i++) {
		const pn_query_key *k = &q->keys[i];
		switch (k->role) {
		case PN_KEY_SKIP:
			break;
		case PN_KEY_TZ:
			rc = pn_dcm_ds_put(rsp, k->tag, q->tz_text);
			break;
		case PN_KEY_LEVEL:
			rc = pn_dcm_ds_put(rsp, k->tag, q->level_name);
			break;
		case PN_KEY_RETRIEVE_AE:
			rc = pn_dcm_ds_put(rsp, k->tag, our_ae);
			break;
		case PN_KEY_AVAILABILITY:
			rc = pn_dcm_ds_put(rsp, k->tag, row->availability ? row->availability : "ONLINE");
			break;
		case PN_KEY_COMPUTED:
			rc = pn_dcm_ds_put(rsp, k->tag, computed_value(k, row, buf));
			break;
		case PN_KEY_RETURN:
			rc = -ENOENT;
			if (k->returned && levels[k->level] && shifted_from_ds(q, k, row, levels[k->level], buf))
				rc = pn_dcm_ds_put(rsp, k->tag, buf);
			else if (k->returned && levels[k->level])
				rc = pn_dcm_ds_copy(rsp, levels[k->level], k->tag, q->identifier);
			if (rc == -ENOENT)
				rc = pn_dcm_ds_put(rsp, k->tag, "");
			break;
		}
	}
	/* Where to retrieve from, in every response (PS3.4 C.4.1.1.3.2): we
	 * keep no media file-sets, so this is the only location we give. */
	if (rc >= 0 && !q->asked_retrieve_ae)
		rc = pn_dcm_ds_put(rsp, TAG_RETRIEVE_AE, our_ae);
	if (rc >= 0)
		rc = set_charset(rsp, enc, q->request_charset);
	if (rc < 0) {
		pn_dcm_ds_free(rsp);
		return rc;
	}
	*ret_rsp = rsp;
	return 0;
}

/* --- the direct way ----------------------------------------------------- */

bool pn_find_response_direct_ok(const pn_query *q)
{
	for (size_t i = 0; i < q->n_keys; i++)
		if (q->keys[i].post || q->keys[i].item_tags)
			return false;
	return true;
}

/* Text whose bytes depend on the character set (PS3.5 6.1.2.3). */
static bool charset_vr(const char vr[2])
{
	static const char *const t[] = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (vr[0] == t[i][0] && vr[1] == t[i][1])
			return true;
	return false;
}

/* VRs written here as the blob holds them: every VR but SQ and UN (whose
 * handling by dcmtk depends on the dictionary). */
static bool plain_vr(const char vr[2])
{
	static const char *const v[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
	                                "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SS",
	                                "ST", "SV", "TM", "UC", "UI", "UL", "UR", "US", "UT", "UV"};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		if (vr[0] == v[i][0] && vr[1] == v[i][1])
			return true;
	return false;
}

/* VRs of the values written from text here (empty keys, constants,
 * computed attributes): string VRs, padded as dcmtk pads them. */
static bool string_vr(const char vr[2])
{
	static const char *const v[] = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT",
	                                "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		if (vr[0] == v[i][0] && vr[1] == v[i][1])
			return true;
	return false;
}

typedef struct {
	unsigned char **buf;
	size_t *len, *cap;
	bool explicit_vr;
	uint32_t last_tag;
	bool any;
} writer;

static int reserve(writer *w, size_t more)
{
	if (*w->cap - *w->len >= more)
		return 0;
	size_t c = *w->cap ? *w->cap : 1024;
	while (c - *w->len < more)
		c *= 2;
	unsigned char *b = realloc(*w->buf, c);
	if (!b)
		return -ENOMEM;
	*w->buf = b;
	*w->cap = c;
	return 0;
}

/* One element; `pad` makes an odd value even (PS3.5 6.2). 1 when it
 * cannot be written here. */
static int put(writer *w, uint32_t tag, const char vr[2], const void *value, size_t vlen, int pad)
{
	if (w->any && tag <= w->last_tag)
		return 1; /* out of order: the general way sorts */
	size_t total = vlen + (vlen & 1);
	if (total > 0xFFFFFFF0u || (w->explicit_vr && !pn_evr_long_vr(vr) && total > 0xFFFF))
		return 1;
	if ((vlen & 1) && pad < 0)
		return 1;
	int rc = reserve(w, 12 + total);
	if (rc < 0)
		return rc;
	unsigned char *p = *w->buf + *w->len;
	p[0] = (unsigned char)(tag >> 16);
	p[1] = (unsigned char)(tag >> 24);
	p[2] = (unsigned char)tag;
	p[3] = (unsigned char)(tag >> 8);
	size_t h = 4;
	uint32_t l = (uint32_t)total;
	if (w->explicit_vr) {
		p[4] = (unsigned char)vr[0];
		p[5] = (unsigned char)vr[1];
		if (pn_evr_long_vr(vr)) {
			p[6] = p[7] = 0;
			h = 8;
		} else {
			p[6] = (unsigned char)l;
			p[7] = (unsigned char)(l >> 8);
			h = 8;
			goto value;
		}
	}
	p[h] = (unsigned char)l;
	p[h + 1] = (unsigned char)(l >> 8);
	p[h + 2] = (unsigned char)(l >> 16);
	p[h + 3] = (unsigned char)(l >> 24);
	h += 4;
value:
	if (vlen)
		memcpy(p + h, value, vlen);
	if (vlen & 1)
		p[h + vlen] = (unsigned char)pad;
	*w->len += h + total;
	w->last_tag = tag;
	w->any = true;
	return 0;
}

/* A text value in a string VR, padded as dcmtk pads it: UI with NUL,
 * the others with a space. */
static int put_text(writer *w, uint32_t tag, const char vr[2], const char *s)
{
	if (!string_vr(vr))
		return 1;
	size_t n = strlen(s);
	for (size_t i = 0; charset_vr(vr) && i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1; /* the general way converts and says which set */
	return put(w, tag, vr, s, n, vr[0] == 'U' && vr[1] == 'I' ? 0 : ' ');
}

static const pn_blob_elem *find_elem(const pn_level_blob *lb, uint32_t tag)
{
	size_t lo = 0, hi = lb->n_elems;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (lb->elems[mid].tag < tag)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < lb->n_elems && lb->elems[lo].tag == tag ? &lb->elems[lo] : NULL;
}

/* A blob's value of tag as text (at most len - 1 bytes), or NULL. */
static char *blob_text(const pn_level_blob *lb, uint32_t tag, char *out, size_t len)
{
	const pn_blob_elem *e = find_elem(lb, tag);
	if (!e || e->len >= len)
		return NULL;
	memcpy(out, lb->bytes + e->off, e->len);
	out[e->len] = '\0';
	return out;
}

static bool blob_shifted(const pn_query *q, const pn_query_key *k, const pn_find_row *row, const pn_level_blob *lb,
                         char out[24])
{
	char da[24], tm[40];
	return shifted_value(q, k, row, blob_text(lb, pn_query_dt_pairs[k->tz_pair][0], da, sizeof da),
	                     blob_text(lb, pn_query_dt_pairs[k->tz_pair][1], tm, sizeof tm), out);
}

int pn_find_response_value(const pn_query *q, const pn_query_key *k, const pn_find_row *row,
                           pn_level_blob *const levels[PN_LEVELS], const char *our_ae, char buf[24], pn_find_value *v)
{
	v->tag = k->tag;
	memcpy(v->vr, k->vr, 2);
	v->from_blob = false;
	const char *text = "";
	switch (k->role) {
	case PN_KEY_SKIP:
		return PN_FIND_VALUE_NONE;
	case PN_KEY_TZ:
		text = q->tz_text;
		break;
	case PN_KEY_LEVEL:
		text = q->level_name;
		break;
	case PN_KEY_RETRIEVE_AE:
		text = our_ae;
		break;
	case PN_KEY_AVAILABILITY:
		text = row->availability ? row->availability : "ONLINE";
		break;
	case PN_KEY_COMPUTED:
		text = computed_value(k, row, buf);
		break;
	case PN_KEY_RETURN: {
		pn_level_blob *lb = k->returned && k->level >= 0 && k->level < PN_LEVELS ? levels[k->level] : NULL;
		if (lb && lb->have) {
			if (!lb->indexed)
				return PN_FIND_VALUE_GENERAL;
			if (k->tz_pair >= 0 && q->tz_adjust && blob_shifted(q, k, row, lb, buf)) {
				text = buf;
				break;
			}
			const pn_blob_elem *e = find_elem(lb, k->tag);
			if (e) {
				memcpy(v->vr, e->vr, 2);
				v->value = lb->bytes + e->off;
				v->len = e->len;
				v->from_blob = true;
				return 0;
			}
		}
		break;
	}
	}
	v->value = (const unsigned char *)text;
	v->len = (uint32_t)strlen(text);
	return 0;
}

static int put_key(writer *w, const pn_query *q, const pn_query_key *k, const pn_find_row *row,
                   pn_level_blob *const levels[PN_LEVELS], const char *our_ae)
{
	char buf[24];
	if (k->role != PN_KEY_SKIP && !k->vr_from_dict)
		return 1; /* dcmtk would write it as UN */
	pn_find_value v;
	int rc = pn_find_response_value(q, k, row, levels, our_ae, buf, &v);
	if (rc != 0)
		return rc == PN_FIND_VALUE_NONE ? 0 : 1;
	if (!v.from_blob)
		return put_text(w, k->tag, k->vr, (const char *)v.value);
	if (!plain_vr(v.vr))
		return 1;
	for (uint32_t i = 0; charset_vr(v.vr) && i < v.len; i++)
		if (v.value[i] >= 0x80)
			return 1;
	return put(w, k->tag, v.vr, v.value, v.len, -1);
}

int pn_find_response_encode(const pn_query *q, const pn_find_row *row, pn_level_blob *const levels[PN_LEVELS],
                            const char *our_ae, bool explicit_vr, unsigned char **out, size_t *len, size_t *cap)
{
	size_t start = *len;
	writer w = {out, len, cap, explicit_vr, 0, false};
	bool ae_done = q->asked_retrieve_ae;
	int rc = 0;
	for (size_t i = 0; i < q->n_keys && rc == 0; i++) {
		const pn_query_key *k = &q->keys[i];
		if (!ae_done && k->tag > TAG_RETRIEVE_AE) {
			rc = put_text(&w, TAG_RETRIEVE_AE, "AE", our_ae);
			ae_done = true;
			if (rc != 0)
				break;
		}
		rc = put_key(&w, q, k, row, levels, our_ae);
	}
	if (rc == 0 && !ae_done)
		rc = put_text(&w, TAG_RETRIEVE_AE, "AE", our_ae);
	if (rc != 0)
		*len = start;
	return rc;
}
