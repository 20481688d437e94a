#include "find_query.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attr_levels.h"
#include "charset.h"
#include "dicom_values.h"
#include "status.h"
#include "uid.h"

#define TAG_CHARSET PN_TAG(0x0008, 0x0005)
#define TAG_LEVEL PN_TAG(0x0008, 0x0052)
#define TAG_RETRIEVE_AE PN_TAG(0x0008, 0x0054)
#define TAG_AVAILABILITY PN_TAG(0x0008, 0x0056)
#define TAG_TZ_OFFSET PN_TAG(0x0008, 0x0201)
#define TAG_MODALITIES PN_TAG(0x0008, 0x0061)
#define TAG_PATIENT_ID PN_TAG(0x0010, 0x0020)
#define TAG_STUDY_UID PN_TAG(0x0020, 0x000D)
#define TAG_SERIES_UID PN_TAG(0x0020, 0x000E)

#define UID_PATIENT_ROOT_FIND "1.2.840.10008.5.1.4.1.2.1.1"
#define UID_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"

static const struct {
	uint32_t tag;
	unsigned bit;
} computed_tags[] = {
    {PN_TAG(0x0020, 0x1200), PN_FIND_C_PATIENT_STUDIES},
    {PN_TAG(0x0020, 0x1202), PN_FIND_C_PATIENT_SERIES},
    {PN_TAG(0x0020, 0x1204), PN_FIND_C_PATIENT_INSTANCES},
    {PN_TAG(0x0020, 0x1206), PN_FIND_C_STUDY_SERIES},
    {PN_TAG(0x0020, 0x1208), PN_FIND_C_STUDY_INSTANCES},
    {PN_TAG(0x0020, 0x1209), PN_FIND_C_SERIES_INSTANCES},
    {TAG_MODALITIES, PN_FIND_C_MODALITIES},
    {PN_TAG(0x0008, 0x0062), PN_FIND_C_SOP_CLASSES},
};

static const char *const level_names[PN_LEVELS] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};

/* Keys collected from the identifier before classification. */
typedef struct {
	uint32_t tag;
	char vr[3];
	bool vr_from_dict;
	char *value;
	bool is_sequence;
	size_t n_items;
} raw_key;

typedef struct {
	raw_key *keys;
	size_t n, cap;
	bool nomem;
} raw_keys;

static int collect(void *ctx, const pn_dcm_elem *e)
{
	raw_keys *rk = ctx;
	if (rk->n == rk->cap) {
		size_t cap = rk->cap ? rk->cap * 2 : 16;
		raw_key *k = realloc(rk->keys, cap * sizeof *k);
		if (!k) {
			rk->nomem = true;
			return -ENOMEM;
		}
		rk->keys = k;
		rk->cap = cap;
	}
	raw_key *k = &rk->keys[rk->n];
	k->tag = e->tag;
	memcpy(k->vr, e->vr, sizeof k->vr);
	k->vr_from_dict = e->vr_from_dict;
	k->value = strdup(e->value ? e->value : "");
	if (!k->value) {
		rk->nomem = true;
		return -ENOMEM;
	}
	pn_trim(k->value);
	k->is_sequence = e->is_sequence;
	k->n_items = e->n_items;
	rk->n++;
	return 0;
}

static void raw_keys_free(raw_keys *rk)
{
	for (size_t i = 0; i < rk->n; i++)
		free(rk->keys[i].value);
	free(rk->keys);
}

static const raw_key *find_raw(const raw_keys *rk, uint32_t tag)
{
	for (size_t i = 0; i < rk->n; i++)
		if (rk->keys[i].tag == tag)
			return &rk->keys[i];
	return NULL;
}

static int text_decode(void *ctx, const char *in, size_t len, char **ret_out)
{
	return pn_charset_to_utf8(ctx, in, len, ret_out);
}

/* A unique key of an upper level: present, one value, no wildcard. */
static bool single_unique(const raw_keys *rk, uint32_t tag, bool uid)
{
	const raw_key *k = find_raw(rk, tag);
	if (!k || !k->value[0] || strpbrk(k->value, "*?\\"))
		return false;
	return !uid || pn_uid_valid(k->value);
}

static void describe_tag(char *buf, size_t len, uint32_t tag)
{
	snprintf(buf, len, "(%04X,%04X)", (unsigned)(tag >> 16), (unsigned)(tag & 0xffff));
}

static pn_find_kind cond_kind(pn_match_kind k)
{
	switch (k) {
	case PN_MATCH_LIST:
		return PN_FIND_LIST;
	case PN_MATCH_WILDCARD:
		return PN_FIND_WILDCARD;
	case PN_MATCH_RANGE:
		return PN_FIND_RANGE;
	case PN_MATCH_EMPTY:
		return PN_FIND_EMPTY;
	default:
		return PN_FIND_SINGLE;
	}
}

/* The SQL condition of a parsed key value (its strings stay the match's). */
static void cond_of(pn_find_cond *c, uint32_t tag, const pn_match *m)
{
	*c = (pn_find_cond){.tag = tag,
	                    .kind = cond_kind(m->kind),
	                    .value = m->kind == PN_MATCH_WILDCARD ? m->like : m->value,
	                    .list = (const char *const *)m->list,
	                    .n_list = m->n_list,
	                    .lo = m->lo,
	                    .hi = m->hi};
}

/* Combined date-time matching (PS3.4 C.2.2.2.5): each date condition with
 * its time's condition becomes one DT_RANGE, from the date's lower bound
 * at the time's lower bound (midnight when none) to the date's upper bound
 * at the time's upper bound (the day's end when none); an open date bound
 * stays open. Pairs where either is not a range of a column stay apart. */
const uint32_t pn_query_dt_pairs[PN_FIND_TZ_PAIRS][2] = {{PN_TAG(0x0008, 0x0020), PN_TAG(0x0008, 0x0030)},
                                                         {PN_TAG(0x0008, 0x0021), PN_TAG(0x0008, 0x0031)},
                                                         {PN_TAG(0x0008, 0x0022), PN_TAG(0x0008, 0x0032)},
                                                         {PN_TAG(0x0008, 0x0023), PN_TAG(0x0008, 0x0033)}};
#define dt_pairs pn_query_dt_pairs

static int tz_pair_of(uint32_t tag)
{
	for (int p = 0; p < PN_FIND_TZ_PAIRS; p++)
		if (dt_pairs[p][0] == tag || dt_pairs[p][1] == tag)
			return p;
	return -1;
}

/* "date time" (malloc'ed), NULL when out of memory. */
static char *join_bound(const char *date, const char *time)
{
	size_t n = strlen(date) + strlen(time) + 2;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s %s", date, time);
	return out;
}

static int combine_date_time(pn_query *q)
{
	for (size_t p = 0; p < sizeof dt_pairs / sizeof dt_pairs[0]; p++) {
		long di = -1, ti = -1;
		for (size_t i = 0; i < q->n_conds; i++) {
			if (q->conds[i].kind != PN_FIND_RANGE)
				continue;
			if (q->conds[i].tag == dt_pairs[p][0])
				di = (long)i;
			else if (q->conds[i].tag == dt_pairs[p][1])
				ti = (long)i;
		}
		if (di < 0 || ti < 0 || q->n_dt_bounds + 2 > sizeof q->dt_bounds / sizeof q->dt_bounds[0])
			continue;
		pn_find_cond *d = &q->conds[di], *t = &q->conds[ti];
		char *lo = d->lo ? join_bound(d->lo, t->lo ? t->lo : "00:00:00.000000") : NULL;
		char *hi = d->hi ? join_bound(d->hi, t->hi ? t->hi : "23:59:59.999999") : NULL;
		if ((d->lo && !lo) || (d->hi && !hi)) {
			free(lo);
			free(hi);
			return -ENOMEM;
		}
		q->dt_bounds[q->n_dt_bounds++] = lo;
		q->dt_bounds[q->n_dt_bounds++] = hi;
		/* the time's condition becomes the combined one; the date's stays,
		 * implied by it, so that the date's index still serves */
		*t = (pn_find_cond){.tag = d->tag, .kind = PN_FIND_DT_RANGE, .tag2 = t->tag, .lo = lo, .hi = hi};
	}
	return 0;
}

static bool has_reversed(const pn_match *m)
{
	if (m->reversed)
		return true;
	for (size_t i = 0; i < m->n_alts; i++)
		if (m->alts[i].reversed)
			return true;
	return false;
}

/* A TM range from a later to an earlier time of day means something only
 * as half of a combined date-time range (the parser lets it through for
 * that); one left as a range of times alone is refused, as before. The
 * tag of the first such key, 0 when none. */
static uint32_t reversed_time_left(const pn_query *q)
{
	for (size_t i = 0; i < q->n_conds; i++)
		if (q->conds[i].kind != PN_FIND_DT_RANGE && has_reversed(&q->cond_matches[i]))
			return q->conds[i].tag;
	for (size_t i = 0; i < q->n_keys; i++)
		if (q->keys[i].post && has_reversed(&q->keys[i].match))
			return q->keys[i].tag;
	return 0;
}

/* Integer and decimal columns: every value must read as a number. */
static bool numeric_ok(pn_find_col_kind kind, const pn_match *m)
{
	if ((kind != PN_FIND_COL_INT && kind != PN_FIND_COL_FLOAT) || m->kind == PN_MATCH_EMPTY)
		return true;
	if (m->kind == PN_MATCH_ANY) {
		for (size_t i = 0; i < m->n_alts; i++)
			if (!numeric_ok(kind, &m->alts[i]))
				return false;
		return true;
	}
	if (m->kind == PN_MATCH_WILDCARD || m->kind == PN_MATCH_RANGE)
		return false;
	char buf[64];
	size_t n = m->kind == PN_MATCH_LIST ? m->n_list : 1;
	for (size_t i = 0; i < n; i++) {
		const char *v = m->kind == PN_MATCH_LIST ? m->list[i] : m->value;
		bool ok = kind == PN_FIND_COL_INT ? pn_is_normalise(v, buf) : pn_ds_normalise(v, buf);
		if (!ok)
			return false;
	}
	return true;
}

/* The request's first item of a sequence key: its keys with values become
 * item matches. */
static int parse_sequence(pn_dcm_ds *identifier, pn_query_key *key, bool fold_names)
{
	pn_dcm_ds *item = NULL;
	int rc = pn_dcm_ds_item_after(identifier, key->tag, NULL, &item);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	raw_keys rk = {0};
	rc = pn_dcm_ds_each(item, collect, &rk);
	pn_dcm_ds_free(item);
	if (rc < 0 || rk.nomem) {
		raw_keys_free(&rk);
		return rc < 0 ? rc : -ENOMEM;
	}
	size_t n = 0;
	key->item_tags = calloc(rk.n ? rk.n : 1, sizeof *key->item_tags);
	key->item_matches = calloc(rk.n ? rk.n : 1, sizeof *key->item_matches);
	if (!key->item_tags || !key->item_matches) {
		raw_keys_free(&rk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < rk.n && rc == 0; i++) {
		raw_key *k = &rk.keys[i];
		if (k->is_sequence || !k->value[0] || k->tag == TAG_CHARSET)
			continue; /* nested sequences are returned, not matched */
		pn_match m;
		rc = pn_match_parse(k->vr, k->value, fold_names && strcmp(k->vr, "PN") == 0, &m);
		if (rc < 0)
			break;
		if (m.kind == PN_MATCH_UNIVERSAL) {
			pn_match_clear(&m);
			continue;
		}
		key->item_tags[n] = k->tag;
		key->item_matches[n] = m;
		n++;
	}
	key->n_item_matches = n;
	raw_keys_free(&rk);
	if (rc == 0 && n > 0)
		key->post = true;
	return rc;
}

/* The hierarchical rule: a unique key of each level above the query
 * level, as a single value. */
static bool unique_keys_present(const pn_query *q, const raw_keys *rk, char *why, size_t whylen)
{
	if (q->patient_root && q->level >= PN_LEVEL_STUDY && !single_unique(rk, TAG_PATIENT_ID, false)) {
		snprintf(why, whylen, "%s level (Patient Root) needs PatientID as a single value", q->level_name);
		return false;
	}
	if (q->level >= PN_LEVEL_SERIES && !single_unique(rk, TAG_STUDY_UID, true)) {
		snprintf(why, whylen, "%s level needs StudyInstanceUID as a single valid UID", q->level_name);
		return false;
	}
	if (q->level >= PN_LEVEL_INSTANCE && !single_unique(rk, TAG_SERIES_UID, true)) {
		snprintf(why, whylen, "IMAGE level needs SeriesInstanceUID as a single valid UID");
		return false;
	}
	return true;
}

int pn_query_parse(pn_dcm_ds *identifier, const char *sop_class_uid, unsigned flags, pn_query **ret_query,
                   unsigned short *ret_status, char *why, size_t whylen)
{
	/* fuzzy semantic matching folds names whatever the configuration */
	bool fold_names = flags & (PN_QUERY_FOLD_NAMES | PN_QUERY_FUZZY_NAMES);
	bool relational = flags & PN_QUERY_RELATIONAL;
	*ret_status = PN_STATUS_UNABLE_TO_PROCESS;
	pn_query *q = calloc(1, sizeof *q);
	if (!q) {
		pn_dcm_ds_free(identifier);
		return -ENOMEM;
	}
	q->identifier = identifier;
	raw_keys rk = {0};
	int rc = -EINVAL;
	char tagbuf[16];

	if (strcmp(sop_class_uid, UID_PATIENT_ROOT_FIND) == 0)
		q->patient_root = true;
	else if (strcmp(sop_class_uid, UID_STUDY_ROOT_FIND) != 0) {
		*ret_status = PN_STATUS_IDENTIFIER_MISMATCH;
		snprintf(why, whylen, "unsupported information model %s", sop_class_uid);
		goto fail;
	}

	/* Text to UTF-8 first, as the index keeps it. */
	char *cs_value = NULL;
	rc = pn_dcm_ds_get(identifier, TAG_CHARSET, &cs_value);
	if (rc == -ENOMEM)
		goto fail;
	if (cs_value) {
		pn_trim(cs_value);
		q->request_charset = cs_value;
	}
	pn_charset *cs = NULL;
	if (pn_charset_create(q->request_charset, &cs) < 0) {
		pn_utf8_sanitise(q->request_charset);
		snprintf(why, whylen, "unknown Specific Character Set \"%.64s\"", q->request_charset);
		rc = -EINVAL;
		goto fail;
	}
	uint32_t bad_tag = 0;
	rc = pn_dcm_ds_convert_text(identifier, text_decode, cs, &bad_tag);
	pn_charset_free(cs);
	if (rc == -ENOMEM)
		goto fail;
	if (rc < 0) {
		/* short: the Error Comment holds 64 characters */
		describe_tag(tagbuf, sizeof tagbuf, bad_tag);
		snprintf(why, whylen, "%s: bytes invalid in %.32s", tagbuf,
		         q->request_charset ? q->request_charset : "ISO_IR 6");
		goto fail;
	}

	rc = pn_dcm_ds_each(identifier, collect, &rk);
	if (rc < 0 || rk.nomem) {
		rc = -ENOMEM;
		goto fail;
	}

	/* Model and level. */
	rc = -EINVAL;
	*ret_status = PN_STATUS_IDENTIFIER_MISMATCH;
	const raw_key *lk = find_raw(&rk, TAG_LEVEL);
	if (!lk || !lk->value[0]) {
		snprintf(why, whylen, "QueryRetrieveLevel (0008,0052) is missing");
		goto fail;
	}
	q->level = -1;
	for (int l = 0; l < PN_LEVELS; l++)
		if (strcmp(lk->value, level_names[l]) == 0)
			q->level = l;
	if (q->level < 0) {
		char v[32];
		snprintf(v, sizeof v, "%s", lk->value);
		pn_utf8_sanitise(v);
		snprintf(why, whylen, "unknown QueryRetrieveLevel \"%s\"", v);
		goto fail;
	}
	q->level_name = level_names[q->level];
	if (q->level == PN_LEVEL_PATIENT && !q->patient_root) {
		snprintf(why, whylen, "PATIENT level is not part of the Study Root model");
		goto fail;
	}
	/* Unique keys of every level above: single values (C.4.1.2.1);
	 * relational queries may give any key of any level above, or none. */
	if (!relational && !unique_keys_present(q, &rk, why, whylen))
		goto fail;

	/* Timezone query adjustment: in force when negotiated and the
	 * identifier says its zone (C.2.2.2); a value that is not an offset is
	 * refused like any key value that cannot be understood. */
	*ret_status = PN_STATUS_UNABLE_TO_PROCESS;
	const raw_key *tzk = flags & PN_QUERY_TZ_ADJUST ? find_raw(&rk, TAG_TZ_OFFSET) : NULL;
	if (tzk && !tzk->is_sequence && tzk->value[0]) {
		int minutes;
		if (!pn_tz_offset_parse(tzk->value, &minutes)) {
			char v[24];
			snprintf(v, sizeof v, "%s", tzk->value);
			pn_utf8_sanitise(v);
			snprintf(why, whylen, "Timezone Offset From UTC \"%s\" is not +HHMM or -HHMM", v);
			rc = -EINVAL;
			goto fail;
		}
		q->tz_adjust = true;
		q->sql.tz_adjust = true;
		q->sql.tz_query_offset = minutes;
		int a = minutes < 0 ? -minutes : minutes;
		snprintf(q->tz_text, sizeof q->tz_text, "%c%02d%02d", minutes < 0 ? '-' : '+', a / 60 % 100, a % 60);
	}

	/* Each key. */
	q->keys = calloc(rk.n ? rk.n : 1, sizeof *q->keys);
	q->conds = calloc(rk.n ? rk.n : 1, sizeof *q->conds);
	q->cond_matches = calloc(rk.n ? rk.n : 1, sizeof *q->cond_matches);
	if (!q->keys || !q->conds || !q->cond_matches) {
		rc = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < rk.n; i++) {
		raw_key *k = &rk.keys[i];
		pn_query_key *key = &q->keys[q->n_keys++];
		key->tag = k->tag;
		key->level = -1;
		key->tz_pair = -1;
		memcpy(key->vr, k->vr, sizeof key->vr);
		key->vr_from_dict = k->vr_from_dict;
		uint16_t group = (uint16_t)(k->tag >> 16), elem = (uint16_t)(k->tag & 0xffff);
		if (k->tag == TAG_CHARSET || group == 0x0000 || group == 0x0002 || elem == 0x0000) {
			key->role = PN_KEY_SKIP;
			continue;
		}
		if (k->tag == TAG_LEVEL) {
			key->role = PN_KEY_LEVEL;
			continue;
		}
		if (q->tz_adjust && k->tag == TAG_TZ_OFFSET) {
			key->role = PN_KEY_TZ; /* not matched: it says how the others are */
			continue;
		}
		if (k->tag == TAG_RETRIEVE_AE || k->tag == TAG_AVAILABILITY) {
			key->role = k->tag == TAG_RETRIEVE_AE ? PN_KEY_RETRIEVE_AE : PN_KEY_AVAILABILITY;
			if (k->tag == TAG_RETRIEVE_AE)
				q->asked_retrieve_ae = true;
			else
				q->sql.computed |= PN_FIND_C_AVAILABILITY;
			if (k->value[0])
				q->unmatched = true;
			continue;
		}
		bool computed = false;
		for (size_t c = 0; c < sizeof computed_tags / sizeof computed_tags[0]; c++)
			if (computed_tags[c].tag == k->tag) {
				key->role = PN_KEY_COMPUTED;
				key->computed = computed_tags[c].bit;
				q->sql.computed |= computed_tags[c].bit;
				computed = true;
			}
		int col_level;
		pn_find_col_kind col_kind;
		bool has_column = pn_find_column(k->tag, &col_level, &col_kind) == 1;
		if (computed && !(has_column && k->value[0])) {
			if (k->value[0])
				q->unmatched = true; /* counts and SOP classes: returned only */
			continue;
		}
		if (!computed)
			key->role = PN_KEY_RETURN;
		int level = has_column ? col_level : pn_attr_level(k->tag);
		if (level < 0) {
			key->role = PN_KEY_SKIP;
			continue;
		}
		key->level = level;
		key->returned = level <= q->level;
		if (q->tz_adjust && key->returned && !computed)
			key->tz_pair = tz_pair_of(k->tag);
		if (key->returned && !computed)
			q->need_levels |= 1u << level;
		bool has_value = k->is_sequence ? k->n_items > 0 : k->value[0] != '\0';
		if (!has_value)
			continue;
		if (!key->returned) {
			q->unmatched = true; /* below the query level: not matched */
			continue;
		}
		if (k->is_sequence) {
			rc = parse_sequence(identifier, key, fold_names);
			if (rc == -ENOMEM)
				goto fail;
			if (rc < 0) {
				describe_tag(tagbuf, sizeof tagbuf, k->tag);
				snprintf(why, whylen, "a value in sequence %s cannot be understood", tagbuf);
				goto fail;
			}
			if (key->post)
				q->need_levels |= 1u << level;
			continue;
		}
		bool fold = fold_names && strcmp(k->vr, "PN") == 0;
		pn_match m;
		/* SQL folds names itself (pn_fold), so values go unfolded. */
		if ((flags & PN_QUERY_EMPTY_VALUE) && strcmp(k->value, "\"\"") == 0) {
			/* Empty Value Matching (PS3.4 C.2.2.2.1.1), negotiated */
			m = (pn_match){.kind = PN_MATCH_EMPTY};
			memcpy(m.vr, k->vr, sizeof m.vr);
			rc = 0;
		} else if (flags & PN_QUERY_MULTI_VALUE)
			rc = pn_match_parse_multi(k->vr, k->value, has_column ? false : fold, &m);
		else
			rc = pn_match_parse(k->vr, k->value, has_column ? false : fold, &m);
		if (rc == 0 && has_column && !numeric_ok(col_kind, &m)) {
			pn_match_clear(&m);
			rc = -EINVAL;
		}
		if (rc == -ENOMEM)
			goto fail;
		if (rc < 0) {
			describe_tag(tagbuf, sizeof tagbuf, k->tag);
			snprintf(why, whylen, "the value of %s (%s) cannot be understood", tagbuf, k->vr);
			goto fail;
		}
		if (m.kind == PN_MATCH_UNIVERSAL) {
			pn_match_clear(&m);
			continue;
		}
		if (has_column) {
			pn_find_cond *c = &q->conds[q->n_conds];
			q->cond_matches[q->n_conds] = m;
			pn_match *cm = &q->cond_matches[q->n_conds];
			q->n_conds++;
			if (cm->kind == PN_MATCH_ANY) {
				/* one condition an alternative, kept with the query */
				pn_find_cond *alts = calloc(cm->n_alts, sizeof *alts);
				pn_find_cond **owned = realloc(q->alt_conds, (q->n_alt_conds + 1) * sizeof *owned);
				if (!alts || !owned) {
					free(alts);
					if (owned)
						q->alt_conds = owned;
					rc = -ENOMEM;
					goto fail;
				}
				q->alt_conds = owned;
				q->alt_conds[q->n_alt_conds++] = alts;
				for (size_t a = 0; a < cm->n_alts; a++)
					cond_of(&alts[a], k->tag, &cm->alts[a]);
				*c = (pn_find_cond){
				    .tag = k->tag, .kind = PN_FIND_ANY, .alts = alts, .n_alts = cm->n_alts};
			} else
				cond_of(c, k->tag, cm);
		} else {
			key->post = true;
			key->match = m;
			q->need_levels |= 1u << level;
		}
	}
	if ((flags & PN_QUERY_COMBINED_DATETIME) && (rc = combine_date_time(q)) < 0)
		goto fail;
	uint32_t rtag;
	if ((rtag = reversed_time_left(q)) != 0) {
		describe_tag(tagbuf, sizeof tagbuf, rtag);
		snprintf(why, whylen, "the time range of %s ends before it starts", tagbuf);
		rc = -EINVAL;
		goto fail;
	}
	q->sql.level = q->level;
	q->sql.conds = q->conds;
	q->sql.n_conds = q->n_conds;
	q->sql.fold_names = fold_names;
	q->sql.fuzzy_names = flags & PN_QUERY_FUZZY_NAMES;
	raw_keys_free(&rk);
	*ret_query = q;
	*ret_status = 0;
	return 0;
fail:
	raw_keys_free(&rk);
	pn_query_free(q);
	return rc < 0 ? rc : -EINVAL;
}

void pn_query_free(pn_query *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->n_keys; i++) {
		pn_match_clear(&q->keys[i].match);
		for (size_t j = 0; j < q->keys[i].n_item_matches; j++)
			pn_match_clear(&q->keys[i].item_matches[j]);
		free(q->keys[i].item_matches);
		free(q->keys[i].item_tags);
	}
	for (size_t i = 0; i < q->n_conds; i++)
		pn_match_clear(&q->cond_matches[i]);
	free(q->keys);
	free(q->conds);
	free(q->cond_matches);
	for (size_t i = 0; i < q->n_alt_conds; i++)
		free(q->alt_conds[i]);
	free(q->alt_conds);
	for (size_t i = 0; i < q->n_dt_bounds; i++)
		free(q->dt_bounds[i]);
	free(q->request_charset);
	pn_dcm_ds_free(q->identifier);
	free(q);
}

static bool value_matches(const pn_match *m, const pn_dcm_ds *ds, uint32_t tag)
{
	char *v = NULL;
	if (!ds || pn_dcm_ds_get(ds, tag, &v) < 0)
		return pn_match_test(m, NULL);
	bool ok = pn_match_test(m, v);
	free(v);
	return ok;
}

/* Any stored item whose values match every key of the request's item. */
static bool sequence_matches(const pn_query_key *key, const pn_dcm_ds *ds)
{
	pn_dcm_ds *item = NULL;
	while (ds) {
		pn_dcm_ds *next = NULL;
		int rc = pn_dcm_ds_item_after(ds, key->tag, item, &next);
		pn_dcm_ds_free(item);
		if (rc < 0)
			return false;
		item = next;
		bool all = true;
		for (size_t j = 0; j < key->n_item_matches && all; j++)
			all = value_matches(&key->item_matches[j], item, key->item_tags[j]);
		if (all) {
			pn_dcm_ds_free(item);
			return true;
		}
	}
	return false;
}

bool pn_query_post_match(const pn_query *q, pn_dcm_ds *const levels[PN_LEVELS])
{
	for (size_t i = 0; i < q->n_keys; i++) {
		const pn_query_key *key = &q->keys[i];
		if (!key->post || key->level < 0)
			continue;
		const pn_dcm_ds *ds = levels[key->level];
		bool ok = key->n_item_matches ? sequence_matches(key, ds) : value_matches(&key->match, ds, key->tag);
		if (!ok)
			return false;
	}
	return true;
}
