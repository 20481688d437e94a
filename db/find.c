/* C-FIND queries over the index, streamed row by row (docs/find.md).
 *
 * A statement is sent unnamed with PQsendQueryParams so that the planner
 * sees the values: a LIKE 'SMI%' then becomes a B-tree range and a leading
 * '%' a trigram index scan. One whose every condition is one exact value,
 * a UID or an identifier among them, is prepared once per connection
 * instead: its plan does not depend on the values, and planning the join
 * of four tables cost several times its execution (0.4-0.6 ms of a 0.8 ms
 * QIDO-RS request). Rows come in single-row mode, so neither libpq nor we
 * hold more than one at a time. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "find.h"

#define TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

enum {
	MAX_CONDS = 64,
	SQL_MAX = 16384,
	PREPARED_MAX = 32, /* statements prepared per connection */
};

/* Aliases used in the fragments: p patient, st study, se series, i instance. */
static const struct column {
	uint32_t tag;
	int level;
	pn_find_col_kind kind;
	const char *expr;      /* as matched */
	const char *fold_expr; /* person names matched case-insensitively */
	const char *ph_expr;   /* and their phonetic keys, "x_ph" for x_ph1, x_ph2 (migration 012) */
} columns[] = {
    {TAG(0x0008, 0x0016), PN_FIND_IMAGE, PN_FIND_COL_UID, "i.sop_class_uid", NULL, NULL},
    {TAG(0x0008, 0x0018), PN_FIND_IMAGE, PN_FIND_COL_UID, "i.sop_uid", NULL, NULL},
    {TAG(0x0008, 0x0020), PN_FIND_STUDY, PN_FIND_COL_DATE, "st.study_date", NULL, NULL},
    {TAG(0x0008, 0x0021), PN_FIND_SERIES, PN_FIND_COL_DATE, "se.series_date", NULL, NULL},
    {TAG(0x0008, 0x0022), PN_FIND_IMAGE, PN_FIND_COL_DATE, "i.acquisition_date", NULL, NULL},
    {TAG(0x0008, 0x0023), PN_FIND_IMAGE, PN_FIND_COL_DATE, "i.content_date", NULL, NULL},
    {TAG(0x0008, 0x0030), PN_FIND_STUDY, PN_FIND_COL_TIME, "st.study_time", NULL, NULL},
    {TAG(0x0008, 0x0031), PN_FIND_SERIES, PN_FIND_COL_TIME, "se.series_time", NULL, NULL},
    {TAG(0x0008, 0x0032), PN_FIND_IMAGE, PN_FIND_COL_TIME, "i.acquisition_time", NULL, NULL},
    {TAG(0x0008, 0x0033), PN_FIND_IMAGE, PN_FIND_COL_TIME, "i.content_time", NULL, NULL},
    {TAG(0x0008, 0x0050), PN_FIND_STUDY, PN_FIND_COL_TEXT, "st.accession_number", NULL, NULL},
    {TAG(0x0008, 0x0060), PN_FIND_SERIES, PN_FIND_COL_TEXT, "se.modality", NULL, NULL},
    {TAG(0x0008, 0x0061), PN_FIND_STUDY, PN_FIND_COL_MODALITIES, "m.modality", NULL, NULL},
    {TAG(0x0008, 0x0090), PN_FIND_STUDY, PN_FIND_COL_NAME, "st.referring_physician_name",
     "st.referring_physician_name_fold", "st.referring_physician_name_ph"},
    {TAG(0x0008, 0x1030), PN_FIND_STUDY, PN_FIND_COL_TEXT, "st.study_description", NULL, NULL},
    {TAG(0x0008, 0x103E), PN_FIND_SERIES, PN_FIND_COL_TEXT, "se.series_description", NULL, NULL},
    {TAG(0x0010, 0x0010), PN_FIND_PATIENT, PN_FIND_COL_NAME, "p.patient_name", "p.patient_name_fold",
     "p.patient_name_ph"},
    {TAG(0x0010, 0x0020), PN_FIND_PATIENT, PN_FIND_COL_TEXT, "p.patient_id", NULL, NULL},
    {TAG(0x0010, 0x0021), PN_FIND_PATIENT, PN_FIND_COL_TEXT, "p.issuer", NULL, NULL},
    {TAG(0x0010, 0x0030), PN_FIND_PATIENT, PN_FIND_COL_DATE, "p.patient_birth_date", NULL, NULL},
    {TAG(0x0010, 0x0040), PN_FIND_PATIENT, PN_FIND_COL_TEXT, "p.patient_sex", NULL, NULL},
    {TAG(0x0018, 0x0015), PN_FIND_SERIES, PN_FIND_COL_TEXT, "se.body_part_examined", NULL, NULL},
    {TAG(0x0018, 0x0050), PN_FIND_IMAGE, PN_FIND_COL_FLOAT, "i.slice_thickness", NULL, NULL},
    {TAG(0x0018, 0x0088), PN_FIND_IMAGE, PN_FIND_COL_FLOAT, "i.spacing_between_slices", NULL, NULL},
    {TAG(0x0018, 0x1030), PN_FIND_SERIES, PN_FIND_COL_TEXT, "se.protocol_name", NULL, NULL},
    {TAG(0x0020, 0x000D), PN_FIND_STUDY, PN_FIND_COL_UID, "st.study_uid", NULL, NULL},
    {TAG(0x0020, 0x000E), PN_FIND_SERIES, PN_FIND_COL_UID, "se.series_uid", NULL, NULL},
    {TAG(0x0020, 0x0010), PN_FIND_STUDY, PN_FIND_COL_TEXT, "st.study_id", NULL, NULL},
    {TAG(0x0020, 0x0011), PN_FIND_SERIES, PN_FIND_COL_INT, "se.series_number", NULL, NULL},
    {TAG(0x0020, 0x0013), PN_FIND_IMAGE, PN_FIND_COL_INT, "i.instance_number", NULL, NULL},
    {TAG(0x0028, 0x0002), PN_FIND_IMAGE, PN_FIND_COL_INT, "i.samples_per_pixel", NULL, NULL},
    {TAG(0x0028, 0x0004), PN_FIND_IMAGE, PN_FIND_COL_TEXT, "i.photometric_interpretation", NULL, NULL},
    {TAG(0x0028, 0x0008), PN_FIND_IMAGE, PN_FIND_COL_INT, "i.number_of_frames", NULL, NULL},
    {TAG(0x0028, 0x0010), PN_FIND_IMAGE, PN_FIND_COL_INT, "i.rows", NULL, NULL},
    {TAG(0x0028, 0x0011), PN_FIND_IMAGE, PN_FIND_COL_INT, "i.columns", NULL, NULL},
};

/* The date / time pairs of Timezone query adjustment, by PN_FIND_TZ_*. */
static const struct pair {
	uint32_t date, time;
	int level;
	const char *date_expr, *time_expr;
} pairs[PN_FIND_TZ_PAIRS] = {
    {TAG(0x0008, 0x0020), TAG(0x0008, 0x0030), PN_FIND_STUDY, "st.study_date", "st.study_time"},
    {TAG(0x0008, 0x0021), TAG(0x0008, 0x0031), PN_FIND_SERIES, "se.series_date", "se.series_time"},
    {TAG(0x0008, 0x0022), TAG(0x0008, 0x0032), PN_FIND_IMAGE, "i.acquisition_date", "i.acquisition_time"},
    {TAG(0x0008, 0x0023), TAG(0x0008, 0x0033), PN_FIND_IMAGE, "i.content_date", "i.content_time"},
};

static const struct pair *pair_of(uint32_t tag)
{
	for (size_t i = 0; i < PN_FIND_TZ_PAIRS; i++)
		if (pairs[i].date == tag || pairs[i].time == tag)
			return &pairs[i];
	return NULL;
}

static const struct column *column_of(uint32_t tag)
{
	for (size_t i = 0; i < sizeof columns / sizeof columns[0]; i++)
		if (columns[i].tag == tag)
			return &columns[i];
	return NULL;
}

int pn_find_column(uint32_t tag, int *ret_level, pn_find_col_kind *ret_kind)
{
	const struct column *c = column_of(tag);
	if (!c)
		return 0;
	if (ret_level)
		*ret_level = c->level;
	if (ret_kind)
		*ret_kind = c->kind;
	return 1;
}

/* Computed attributes: the level whose row they describe, and the
 * sub-query. Index order is the bit order of PN_FIND_C_*. */
static const struct computed {
	int min_level;
	bool is_count;
	const char *sql;
} computed[PN_FIND_C_COUNT] = {
    /* Kept in the rows by triggers (migrations 004 and 005). */
    {PN_FIND_PATIENT, true, "p.n_studies"},
    {PN_FIND_PATIENT, true, "p.n_series"},
    {PN_FIND_PATIENT, true, "p.n_instances"},
    {PN_FIND_STUDY, true, "st.n_series"},
    {PN_FIND_STUDY, true, "st.n_instances"},
    {PN_FIND_SERIES, true, "se.n_instances"},
    {PN_FIND_STUDY, false, "st.modalities"},
    /* The study's classes, kept by triggers (migration 011): a range of
     * one to a few rows, where the instances were a scan of the study. */
    {PN_FIND_STUDY, false,
     "(SELECT string_agg(c.sop_class_uid, '\\' ORDER BY c.sop_class_uid)"
     " FROM study_sop_class c WHERE c.study_fk = st.pk)"},
    /* by level: availability_sql */
    {PN_FIND_PATIENT, false, NULL},
};

/* InstanceAvailability (PS3.4 C.4.1.1.3.2) of the match: OFFLINE when a
 * file of it was found missing (its recovery from a backup is manual
 * intervention), else ONLINE; the probes go through the partial index of
 * the instances marked missing (migration 011), empty in a healthy
 * archive. */
static const char *const availability_sql[PN_FIND_LEVELS] = {
    "CASE WHEN EXISTS (SELECT 1 FROM instance x JOIN series y ON y.pk = x.series_fk JOIN study z ON"
    " z.pk = y.study_fk WHERE x.missing_since IS NOT NULL AND z.patient_fk = p.pk) THEN 'OFFLINE' ELSE"
    " 'ONLINE' END",
    "CASE WHEN EXISTS (SELECT 1 FROM instance x JOIN series y ON y.pk = x.series_fk WHERE x.missing_since IS"
    " NOT NULL AND y.study_fk = st.pk) THEN 'OFFLINE' ELSE 'ONLINE' END",
    "CASE WHEN EXISTS (SELECT 1 FROM instance x WHERE x.missing_since IS NOT NULL AND x.series_fk = se.pk)"
    " THEN 'OFFLINE' ELSE 'ONLINE' END",
    "CASE WHEN i.missing_since IS NULL THEN 'ONLINE' ELSE 'OFFLINE' END",
};

static const char *const from_clause[PN_FIND_LEVELS] = {
    " FROM patient p",
    " FROM study st JOIN patient p ON p.pk = st.patient_fk",
    " FROM series se JOIN study st ON st.pk = se.study_fk JOIN patient p ON p.pk = st.patient_fk",
    " FROM instance i JOIN series se ON se.pk = i.series_fk JOIN study st ON st.pk = se.study_fk"
    " JOIN patient p ON p.pk = st.patient_fk",
};
static const char *const attrs_column[PN_FIND_LEVELS] = {"p.attrs", "st.attrs", "se.attrs", "i.attrs"};

typedef struct {
	char sql[SQL_MAX];
	size_t len;
	bool overflow;
	const char *values[MAX_CONDS * 2 + 3]; /* and the zones of tz_params() */
	int n;
	bool exact;     /* every condition one exact value */
	bool selective; /* one of them a UID, a patient ID or an accession number */
	/* Timezone query adjustment: the parameters of the zones, numbered
	 * when first used (0: not yet), and their text */
	int tz_zone, tz_fixed, tz_query;
	char tz_fixed_text[16], tz_query_text[16];
} builder;

struct pn_find_state {
	PGresult *row; /* the current single-row result */
	bool running;  /* results still to be read */
	int level;
	unsigned computed;
	int col_computed[PN_FIND_C_COUNT];
	int col_path;                 /* first of sop_uid, sop_class_uid, transfer_syntax_uid, path */
	int col_tz[PN_FIND_TZ_PAIRS]; /* the pairs' data offsets; -1: not selected */
	/* The statement, kept until its first row: a connection found broken
	 * then (the server restarted since the last statement) is re-made and
	 * the statement sent once more. */
	builder *sent;
	bool got_row, resent;
	/* parameter storage: array literals built for LIST conditions */
	char *owned[MAX_CONDS * 2];
	size_t n_owned;
	/* the statements prepared on this connection (generation prep_gen),
	 * named "pn_find_<index>" */
	char *prepared[PREPARED_MAX];
	size_t n_prepared;
	unsigned prep_gen;
};

static void put(builder *b, const char *fmt, ...)
{
	if (b->overflow)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->sql + b->len, sizeof b->sql - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof b->sql - b->len)
		b->overflow = true;
	else
		b->len += (size_t)n;
}

/* The parameter number of a new value. */
static int param(builder *b, const char *value)
{
	b->values[b->n] = value;
	return ++b->n;
}

static const char *cast_of(pn_find_col_kind k)
{
	switch (k) {
	case PN_FIND_COL_DATE:
		return "::date";
	case PN_FIND_COL_TIME:
		return "::time";
	case PN_FIND_COL_INT:
		return "::integer";
	case PN_FIND_COL_FLOAT:
		return "::float8";
	default:
		return "";
	}
}

static const char *array_cast_of(pn_find_col_kind k)
{
	switch (k) {
	case PN_FIND_COL_INT:
		return "::integer[]";
	case PN_FIND_COL_FLOAT:
		return "::float8[]";
	case PN_FIND_COL_DATE:
		return "::date[]";
	case PN_FIND_COL_TIME:
		return "::time[]";
	default:
		return "::text[]";
	}
}

/* The parameters of Timezone query adjustment: the node's zone name (NULL
 * for a fixed offset), its fixed offset (NULL for a name), the query's
 * offset. A fixed zone goes as minutes, never as text: PostgreSQL reads
 * '+01' the POSIX way, as UTC-1. */
static void tz_params(builder *b, const pn_find_query *q, bool query)
{
	if (!b->tz_zone) {
		bool named = q->tz_node_name && q->tz_node_name[0];
		snprintf(b->tz_fixed_text, sizeof b->tz_fixed_text, "%d", q->tz_node_offset);
		b->tz_zone = param(b, named ? q->tz_node_name : NULL);
		b->tz_fixed = param(b, named ? NULL : b->tz_fixed_text);
	}
	if (query && !b->tz_query) {
		/* numbered only when used: PostgreSQL wants a type for each */
		snprintf(b->tz_query_text, sizeof b->tz_query_text, "%d", q->tz_query_offset);
		b->tz_query = param(b, b->tz_query_text);
	}
}

/* The offset from UTC of a row's stored values of pair pr (migration 015). */
static void put_data_offset(builder *b, const pn_find_query *q, const struct pair *pr)
{
	tz_params(b, q, false);
	put(b, "pn_zone_offset(%s, %s, coalesce(st.timezone_offset::integer, $%d::integer), $%d::text)", pr->date_expr,
	    pr->time_expr, b->tz_fixed, b->tz_zone);
}

/* A stored value of pair pr as the query's zone sees it, into buf: kind
 * PN_FIND_COL_DATE its date (a date without a time as stored), _TIME its
 * time (NULL without one), else its date and time (a date without a time
 * from its midnight). */
static void adjusted_expr(builder *b, const pn_find_query *q, const struct pair *pr, pn_find_col_kind kind, char *buf,
                          size_t len)
{
	tz_params(b, q, true);
	char call[200];
	snprintf(call, sizeof call,
	         "pn_in_zone(%s, %s, coalesce(st.timezone_offset::integer, $%d::integer), $%d::text, $%d::integer)",
	         pr->date_expr, pr->time_expr, b->tz_fixed, b->tz_zone, b->tz_query);
	if (kind == PN_FIND_COL_DATE)
		snprintf(buf, len, "coalesce(%s::date, %s)", call, pr->date_expr);
	else if (kind == PN_FIND_COL_TIME)
		snprintf(buf, len, "%s::time", call);
	else
		snprintf(buf, len, "coalesce(%s, %s + time '00:00')", call, pr->date_expr);
}

/* Whether a LIKE pattern (escape '\\') begins with '%' and does not end
 * with one ("%son", "%s_n"): reversed, it begins with what it matches. */
static bool suffix_pattern(const char *like)
{
	if (like[0] != '%')
		return false;
	bool last_wild = false;
	for (const char *p = like; *p; p++) {
		last_wild = *p == '%';
		if (*p == '\\' && p[1])
			p++; /* an escaped character: never a wildcard */
	}
	return !last_wild;
}

/* Appends the condition of one key; -EINVAL if it cannot be expressed,
 * -ENOMEM. */
static int put_condition(builder *b, struct pn_find_state *fs, const pn_find_query *q, const pn_find_cond *c)
{
	if (c->kind == PN_FIND_ANY) {
		if (c->n_alts == 0)
			return -EINVAL;
		b->exact = false;
		put(b, "(");
		for (size_t i = 0; i < c->n_alts; i++) {
			if (i)
				put(b, " OR ");
			if (c->alts[i].kind == PN_FIND_ANY || c->alts[i].tag != c->tag)
				return -EINVAL;
			int rc = put_condition(b, fs, q, &c->alts[i]);
			if (rc < 0)
				return rc;
		}
		put(b, ")");
		return 0;
	}
	const struct column *col = column_of(c->tag);
	if (!col || col->level > q->level)
		return -EINVAL;
	if (c->kind == PN_FIND_DT_RANGE) {
		/* Combined date-time matching: the date and the time as one
		 * instant; an entity without a time counts from its midnight */
		const struct column *tcol = column_of(c->tag2);
		if (col->kind != PN_FIND_COL_DATE || !tcol || tcol->kind != PN_FIND_COL_TIME ||
		    tcol->level != col->level)
			return -EINVAL;
		b->exact = false;
		if (!c->lo && !c->hi)
			return -EINVAL; /* a date range has a bound */
		const struct pair *pr = q->tz_adjust ? pair_of(c->tag) : NULL;
		if (pr) {
			char adj[256];
			adjusted_expr(b, q, pr, PN_FIND_COL_TEXT, adj, sizeof adj);
			put(b, "%s", adj);
		} else
			put(b, "(%s + coalesce(%s, time '00:00'))", col->expr, tcol->expr);
		if (c->lo && c->hi)
			put(b, " BETWEEN $%d::timestamp AND $%d::timestamp", param(b, c->lo), param(b, c->hi));
		else if (c->lo)
			put(b, " >= $%d::timestamp", param(b, c->lo));
		else
			put(b, " <= $%d::timestamp", param(b, c->hi));
		return 0;
	}
	bool fold = col->kind == PN_FIND_COL_NAME && q->fold_names;
	const char *expr = fold ? col->fold_expr : col->expr;
	const char *cast = cast_of(col->kind);
	/* Timezone query adjustment: a date or time of a pair compared as the
	 * query's zone sees it (an absent one stays absent) */
	const struct pair *pr = q->tz_adjust && c->kind != PN_FIND_EMPTY ? pair_of(c->tag) : NULL;
	char adj[256];
	if (pr) {
		adjusted_expr(b, q, pr, col->kind, adj, sizeof adj);
		expr = adj;
	}
	if (pr && col->kind == PN_FIND_COL_DATE && (c->kind == PN_FIND_SINGLE || c->kind == PN_FIND_RANGE)) {
		/* beside the exact test, one the date's B-tree can serve: a
		 * shift is at most 26 hours (-12:00 to +14:00), two days each
		 * side hold every match */
		b->exact = false;
		const char *lo = c->kind == PN_FIND_SINGLE ? c->value : c->lo;
		const char *hi = c->kind == PN_FIND_SINGLE ? c->value : c->hi;
		int plo = lo ? param(b, lo) : 0;
		int phi = !hi ? 0 : hi == lo ? plo : param(b, hi);
		put(b, "(true");
		if (plo)
			put(b, " AND %s >= $%d::date AND %s >= $%d::date - 2", expr, plo, col->expr, plo);
		if (phi)
			put(b, " AND %s <= $%d::date AND %s <= $%d::date + 2", expr, phi, col->expr, phi);
		put(b, ")");
		return 0;
	}
	/* The SQL function pn_fold() folds the value exactly as the column was
	 * folded: both sides go through ICU. */
	const char *fo = fold ? "pn_fold(" : "", *fc = fold ? ")" : "";
	bool modalities = col->kind == PN_FIND_COL_MODALITIES;

	if (c->kind == PN_FIND_EMPTY) {
		/* absent (NULL) or empty; a study without a modality: no series
		 * that has one */
		b->exact = false;
		if (modalities)
			put(b, "NOT EXISTS (SELECT 1 FROM series m WHERE m.study_fk = st.pk AND m.modality <> '')");
		else if (col->kind == PN_FIND_COL_TEXT || col->kind == PN_FIND_COL_NAME || col->kind == PN_FIND_COL_UID)
			put(b, "coalesce(%s, '') = ''", col->expr);
		else
			put(b, "%s IS NULL", col->expr);
		return 0;
	}
	if (modalities)
		put(b, "EXISTS (SELECT 1 FROM series m WHERE m.study_fk = st.pk AND ");
	if (c->kind != PN_FIND_SINGLE || modalities)
		b->exact = false;
	switch (c->kind) {
	case PN_FIND_SINGLE:
		if (!c->value)
			return -EINVAL;
		if (fold && q->fuzzy_names && col->ph_expr) {
			/* fuzzy: folded equal, or the family name sounding the same
			 * and the given name too when the key gives one */
			int v = param(b, c->value);
			b->exact = false;
			put(b,
			    "(%s = pn_fold($%d) OR (%s1 = pn_phonetic($%d, 1) AND (pn_phonetic($%d, 2) IS NULL OR %s2 "
			    "= "
			    "pn_phonetic($%d, 2))))",
			    expr, v, col->ph_expr, v, v, col->ph_expr, v);
			break;
		}
		put(b, "%s = %s$%d%s%s", expr, fo, param(b, c->value), cast, fc);
		if (col->kind == PN_FIND_COL_UID || c->tag == TAG(0x0010, 0x0020) || c->tag == TAG(0x0008, 0x0050))
			b->selective = true;
		break;
	case PN_FIND_WILDCARD:
		if (!c->value || col->kind == PN_FIND_COL_DATE || col->kind == PN_FIND_COL_TIME ||
		    col->kind == PN_FIND_COL_INT || col->kind == PN_FIND_COL_FLOAT || col->kind == PN_FIND_COL_UID)
			return -EINVAL;
		if (fold && suffix_pattern(c->value))
			/* migration 014's B-tree of the reversed folded name: a
			 * range of exactly the matches where the trigrams of a
			 * short suffix are in many names */
			put(b, "reverse(%s) LIKE pn_like_reverse(pn_fold($%d))", expr, param(b, c->value));
		else
			put(b, "%s LIKE %s$%d%s", expr, fo, param(b, c->value), fc);
		break;
	case PN_FIND_LIST: {
		if (c->n_list == 0 || fs->n_owned >= sizeof fs->owned / sizeof fs->owned[0])
			return -EINVAL;
		char *lit = pn_db_array_literal(c->list, c->n_list);
		if (!lit)
			return -ENOMEM;
		fs->owned[fs->n_owned++] = lit;
		if (fold)
			put(b, "%s IN (SELECT pn_fold(v) FROM unnest($%d::text[]) v)", expr, param(b, lit));
		else
			put(b, "%s = ANY ($%d%s)", expr, param(b, lit), array_cast_of(col->kind));
		break;
	}
	case PN_FIND_RANGE:
		if (col->kind != PN_FIND_COL_DATE && col->kind != PN_FIND_COL_TIME)
			return -EINVAL;
		if (c->lo && c->hi)
			put(b, "%s BETWEEN $%d%s AND $%d%s", expr, param(b, c->lo), cast, param(b, c->hi), cast);
		else if (c->lo)
			put(b, "%s >= $%d%s", expr, param(b, c->lo), cast);
		else if (c->hi)
			put(b, "%s <= $%d%s", expr, param(b, c->hi), cast);
		else
			put(b, "true");
		break;
	default:
		return -EINVAL;
	}
	if (modalities)
		put(b, ")");
	return 0;
}

/* Appends " AND <condition>" for one key. */
static int add_condition(builder *b, struct pn_find_state *fs, const pn_find_query *q, const pn_find_cond *c)
{
	put(b, " AND ");
	return put_condition(b, fs, q, c);
}

static void state_reset(struct pn_find_state *fs)
{
	PQclear(fs->row);
	fs->row = NULL;
	free(fs->sent);
	fs->sent = NULL;
	fs->got_row = false;
	fs->resent = false;
	for (size_t i = 0; i < fs->n_owned; i++)
		free(fs->owned[i]);
	fs->n_owned = 0;
	fs->running = false;
}

/* The index of b's statement prepared on this connection (prepared now
 * if need be), or -1: none, send it unnamed. */
static int prepared(pn_db *db, struct pn_find_state *fs, const builder *b)
{
	if (!b->exact || !b->selective)
		return -1;
	if (fs->prep_gen != db->conn_gen) {
		/* a new connection has none of them */
		for (size_t i = 0; i < fs->n_prepared; i++)
			free(fs->prepared[i]);
		fs->n_prepared = 0;
		fs->prep_gen = db->conn_gen;
	}
	for (size_t i = 0; i < fs->n_prepared; i++)
		if (strcmp(fs->prepared[i], b->sql) == 0)
			return (int)i;
	if (fs->n_prepared == PREPARED_MAX)
		return -1;
	char *sql = strdup(b->sql);
	if (!sql)
		return -1;
	char name[32];
	snprintf(name, sizeof name, "pn_find_%zu", fs->n_prepared);
	PGresult *res = PQprepare(db->conn, name, sql, b->n, NULL);
	bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (!ok) {
		/* sent unnamed, which reports what is wrong */
		free(sql);
		return -1;
	}
	fs->prepared[fs->n_prepared] = sql;
	return (int)fs->n_prepared++;
}

/* Text parameters, binary results: attrs arrive as raw bytes. */
static int send_query(pn_db *db, const builder *b)
{
	int i = prepared(db, db->find, b);
	char name[32];
	snprintf(name, sizeof name, "pn_find_%d", i);
	if ((i >= 0 ? PQsendQueryPrepared(db->conn, name, b->n, b->values, NULL, NULL, 1)
	            : PQsendQueryParams(db->conn, b->sql, b->n, NULL, b->values, NULL, NULL, 1)) != 1 ||
	    PQsetSingleRowMode(db->conn) != 1)
		return -EIO;
	return 0;
}

void pn_find_state_free(pn_db *db)
{
	if (!db || !db->find)
		return;
	pn_find_stop(db);
	for (size_t i = 0; i < db->find->n_prepared; i++)
		free(db->find->prepared[i]);
	free(db->find);
	db->find = NULL;
}

/* After a statement could not be sent: true if the connection is fine
 * and the failure was something else, false if it is gone (worth a new
 * one). */
static bool send_failed_on_live_connection(pn_db *db)
{
	pn_db_set_error_result(db, NULL);
	pn_db_note_failure(db);
	return !pn_db_broken(db);
}

int pn_find_start(pn_db *db, const pn_find_query *q)
{
	if (!db || !q || q->level < 0 || q->level >= PN_FIND_LEVELS || q->n_conds > MAX_CONDS)
		return -EINVAL;
	if (!db->find) {
		db->find = calloc(1, sizeof *db->find);
		if (!db->find)
			return -ENOMEM;
	}
	pn_db_settle(db);
	struct pn_find_state *fs = db->find;
	if (fs->running)
		pn_find_stop(db);
	state_reset(fs);
	pn_db_clear_error(db);

	builder *b = malloc(sizeof *b);
	if (!b)
		return -ENOMEM;
	b->len = 0;
	b->n = 0;
	b->overflow = false;
	/* pages (LIMIT and OFFSET are in the text) are not prepared */
	b->exact = q->limit == 0 && q->offset == 0;
	b->selective = false;
	b->tz_zone = b->tz_fixed = b->tz_query = 0;

	if (q->paths_only && q->level != PN_FIND_IMAGE) {
		free(b);
		return -EINVAL;
	}
	int ncol = 0;
	put(b, "SELECT ");
	fs->level = q->paths_only ? -1 : q->level;
	if (q->paths_only)
		put(b, "true"); /* keeps the column numbering simple */
	for (int l = 0; l <= fs->level; l++)
		put(b, "%s%s", l ? ", " : "", attrs_column[l]);
	ncol = q->paths_only ? 1 : q->level + 1;
	fs->computed = 0;
	for (int c = 0; c < PN_FIND_C_COUNT; c++) {
		fs->col_computed[c] = -1;
		if (q->paths_only || !(q->computed & (1u << c)) || computed[c].min_level > q->level)
			continue;
		put(b, ", %s", computed[c].sql ? computed[c].sql : availability_sql[q->level]);
		fs->col_computed[c] = ncol++;
		fs->computed |= 1u << c;
	}
	for (int t = 0; t < PN_FIND_TZ_PAIRS; t++) {
		fs->col_tz[t] = -1;
		if (!q->tz_adjust || q->paths_only || pairs[t].level > q->level)
			continue;
		put(b, ", ");
		put_data_offset(b, q, &pairs[t]);
		fs->col_tz[t] = ncol++;
	}
	fs->col_path = -1;
	if (q->level == PN_FIND_IMAGE) {
		/* and whose it is, for the audit trail of a retrieval */
		put(b, ", i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid, i.path, st.study_uid, p.patient_id, "
		       "p.patient_name");
		fs->col_path = ncol;
		ncol += 7;
	}
	put(b, "%s WHERE true", from_clause[q->level]);
	int rc = 0;
	for (size_t i = 0; i < q->n_conds && rc == 0; i++)
		rc = add_condition(b, fs, q, &q->conds[i]);
	if (q->order == PN_FIND_ORDER_NEWEST && q->level == PN_FIND_STUDY)
		put(b, " ORDER BY st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.pk DESC");
	else if (q->order == PN_FIND_ORDER_NUMBER && q->level == PN_FIND_SERIES)
		put(b, " ORDER BY se.series_number NULLS LAST, se.pk");
	else if (q->order == PN_FIND_ORDER_NUMBER && q->level == PN_FIND_IMAGE)
		put(b, " ORDER BY i.instance_number NULLS LAST, i.pk");
	/* integers of ours, not values from the request */
	if (q->limit > 0)
		put(b, " LIMIT %lld", q->limit);
	if (q->offset > 0)
		put(b, " OFFSET %lld", q->offset);
	if (rc == 0 && b->overflow)
		rc = -EINVAL;
	if (rc < 0) {
		free(b);
		state_reset(fs);
		pn_db_set_error(db, "", "query cannot be expressed");
		return rc;
	}

	/* Connection lost since the last statement: one fresh connection. */
	rc = pn_db_ensure_connected(db);
	if (rc < 0) {
		free(b);
		state_reset(fs);
		return rc;
	}
	fs->sent = b;
	if (send_query(db, b) < 0 && (send_failed_on_live_connection(db) ||
	                              (fs->resent = true, pn_db_ensure_connected(db) < 0) || send_query(db, b) < 0)) {
		pn_db_set_error_result(db, NULL);
		pn_find_stop(db);
		return pn_db_broken(db) ? -ECONNREFUSED : -EIO;
	}
	fs->running = true;
	return 0;
}

/* Before the first row: true if the connection broke and the statement
 * could be sent again on a new one. */
static bool resend(pn_db *db, struct pn_find_state *fs)
{
	pn_db_note_failure(db); /* the error just recorded */
	if (fs->got_row || fs->resent || !fs->sent || !pn_db_broken(db))
		return false;
	fs->resent = true;
	return pn_db_ensure_connected(db) == 0 && send_query(db, fs->sent) == 0;
}

static int64_t be64(const char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | (unsigned char)p[i];
	return (int64_t)v;
}

static uint32_t be32(const char *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = (v << 8) | (unsigned char)p[i];
	return v;
}

bool pn_find_row_ready(pn_db *db)
{
	if (!db || !db->find || !db->find->running)
		return true; /* nothing to wait for */
	/* Not PQconsumeInput: it would pull all the server has sent into
	 * libpq's buffer, which then grows with the result when we are the
	 * slower side. */
	if (PQisBusy(db->conn) == 0)
		return true;
	struct pollfd p = {.fd = PQsocket(db->conn), .events = POLLIN};
	return poll(&p, 1, 0) > 0;
}

int pn_find_next(pn_db *db, pn_find_row *row)
{
	if (!db || !db->find || !row)
		return -EINVAL;
	struct pn_find_state *fs = db->find;
	PQclear(fs->row);
	fs->row = NULL;
	if (!fs->running)
		return 0;
	PGresult *res = PQgetResult(db->conn);
	if (!res) {
		fs->running = false;
		return 0;
	}
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_TUPLES_OK) {
		/* the end: collect the trailing NULL */
		PQclear(res);
		while ((res = PQgetResult(db->conn)) != NULL)
			PQclear(res);
		fs->running = false;
		return 0;
	}
	if (st != PGRES_SINGLE_TUPLE) {
		pn_db_set_error_result(db, res);
		PQclear(res);
		while ((res = PQgetResult(db->conn)) != NULL)
			PQclear(res);
		if (resend(db, fs))
			return pn_find_next(db, row);
		fs->running = false;
		return -EIO;
	}
	if (!fs->got_row) {
		fs->got_row = true;
		free(fs->sent);
		fs->sent = NULL;
	}
	fs->row = res;
	memset(row, 0, sizeof *row);
	for (int l = 0; l <= fs->level; l++) {
		if (!PQgetisnull(res, 0, l)) {
			row->attrs[l].data = PQgetvalue(res, 0, l);
			row->attrs[l].len = (size_t)PQgetlength(res, 0, l);
		}
	}
	for (int c = 0; c < PN_FIND_C_COUNT; c++) {
		row->counts[c] = -1;
		int col = fs->col_computed[c];
		if (col < 0 || !computed[c].is_count || PQgetisnull(res, 0, col) || PQgetlength(res, 0, col) != 8)
			continue;
		row->counts[c] = be64(PQgetvalue(res, 0, col));
	}
	/* libpq NUL-terminates every value, binary ones too: text columns in
	 * binary format are their UTF-8 bytes, usable as C strings. */
	int cm = fs->col_computed[6], cs = fs->col_computed[7];
	if (cm >= 0 && !PQgetisnull(res, 0, cm))
		row->modalities = PQgetvalue(res, 0, cm);
	if (cs >= 0 && !PQgetisnull(res, 0, cs))
		row->sop_classes = PQgetvalue(res, 0, cs);
	for (int t = 0; t < PN_FIND_TZ_PAIRS; t++) {
		int col = fs->col_tz[t];
		row->tz_offset[t] = PN_FIND_TZ_UNKNOWN;
		if (col >= 0 && !PQgetisnull(res, 0, col) && PQgetlength(res, 0, col) == 4)
			row->tz_offset[t] = (int32_t)be32(PQgetvalue(res, 0, col));
	}
	int ca = fs->col_computed[8];
	if (ca >= 0 && !PQgetisnull(res, 0, ca))
		row->availability = PQgetvalue(res, 0, ca);
	if (fs->col_path >= 0) {
		row->sop_uid = PQgetvalue(res, 0, fs->col_path);
		row->sop_class_uid = PQgetvalue(res, 0, fs->col_path + 1);
		row->transfer_syntax_uid = PQgetvalue(res, 0, fs->col_path + 2);
		row->path = PQgetvalue(res, 0, fs->col_path + 3);
		row->study_uid = PQgetvalue(res, 0, fs->col_path + 4);
		row->patient_id = PQgetvalue(res, 0, fs->col_path + 5);
		row->patient_name = PQgetvalue(res, 0, fs->col_path + 6);
	}
	return 1;
}

void pn_find_stop(pn_db *db)
{
	if (!db || !db->find)
		return;
	struct pn_find_state *fs = db->find;
	PQclear(fs->row);
	fs->row = NULL;
	if (fs->running && PQstatus(db->conn) == CONNECTION_OK) {
		/* Rows still coming: ask the server to stop, then read what is in
		 * flight (ending with the "canceled" error or the last rows). */
		PGcancel *cancel = PQgetCancel(db->conn);
		if (cancel) {
			char err[256];
			PQcancel(cancel, err, sizeof err);
			PQfreeCancel(cancel);
		}
		PGresult *res;
		while ((res = PQgetResult(db->conn)) != NULL)
			PQclear(res);
	}
	state_reset(fs);
}
