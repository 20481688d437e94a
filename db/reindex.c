/* pacsnodectl reindex's bulk load (reindex.h). A batch: the keys it names
 * are looked up at once (four queries), its items decided in order in
 * memory as store_once() in index.c decides one store, the new rows'
 * keys taken from the tables' sequences, then one COPY per table, in
 * text format with the values pn_index_*_params() give the store's
 * INSERTs, so that each column's input function reads what it reads
 * there. */
#include "reindex.h"

#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db_internal.h"

/* The reindex's own advisory lock ("PNRX"): one reindex at a time. */
#define REINDEX_LOCK "1347310168, 0"

/* COPY data goes out in pieces of about this size. */
#define COPY_CHUNK (256 * 1024)

int pn_reindex_state_get(pn_db *db, pn_reindex_state *ret)
{
	memset(ret, 0, sizeof(*ret));
	pn_db_settle(db);
	pn_db_clear_error(db);
	PGresult *res = PQexec(db->conn, "SELECT (SELECT count(*) FROM patient), (SELECT count(*) FROM instance),"
	                                 " r.started_at, r.last_mtime_ns, r.last_path, r.files, r.indexed,"
	                                 " r.not_indexed"
	                                 " FROM (SELECT 1) AS one LEFT JOIN reindex_progress r ON true");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pn_db_fail(db, res);
		return -EIO;
	}
	ret->patients = atoll(PQgetvalue(res, 0, 0));
	ret->instances = atoll(PQgetvalue(res, 0, 1));
	ret->in_progress = !PQgetisnull(res, 0, 2);
	if (ret->in_progress) {
		snprintf(ret->started_at, sizeof(ret->started_at), "%s", PQgetvalue(res, 0, 2));
		ret->last_mtime_ns = atoll(PQgetvalue(res, 0, 3));
		snprintf(ret->last_path, sizeof(ret->last_path), "%s", PQgetvalue(res, 0, 4));
		ret->files = atoll(PQgetvalue(res, 0, 5));
		ret->indexed = atoll(PQgetvalue(res, 0, 6));
		ret->not_indexed = atoll(PQgetvalue(res, 0, 7));
	}
	PQclear(res);
	return 0;
}

int pn_reindex_other_sessions(pn_db *db, int *ret_n, char *pids, size_t len)
{
	pn_db_settle(db);
	pn_db_clear_error(db);
	PGresult *res = PQexec(db->conn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
	                                 " AND pid <> pg_backend_pid()"
	                                 " AND application_name = current_setting('application_name') ORDER BY pid");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pn_db_fail(db, res);
		return -EIO;
	}
	*ret_n = PQntuples(res);
	size_t at = 0;
	if (len)
		pids[0] = '\0';
	for (int i = 0; i < PQntuples(res) && at < len; i++) {
		int w = snprintf(pids + at, len - at, "%s%s", i ? ", " : "", PQgetvalue(res, i, 0));
		at += w > 0 ? (size_t)w : 0;
	}
	PQclear(res);
	return 0;
}

int pn_reindex_begin(pn_db *db)
{
	pn_db_settle(db);
	pn_db_clear_error(db);
	PGresult *res = PQexec(db->conn, "SELECT pg_try_advisory_lock(" REINDEX_LOCK ")");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pn_db_fail(db, res);
		return -EIO;
	}
	bool locked = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	if (!locked)
		return -EBUSY;
	return pn_db_command(db, "SET synchronous_commit = off") == 0 ? 0 : -EIO;
}

/* ---- one batch ------------------------------------------------------- */

enum { K_PATIENT, K_STUDY, K_SERIES, K_INSTANCE, K_KINDS };
enum { E_NEW = 0, E_EXISTS, E_CREATED };

/* A key the batch names: a patient (id, issuer), a study, series or
 * instance (its UID). */
typedef struct rkey {
	int kind;
	const char *k1, *k2;
	int state;
	int64_t pk, parent_pk; /* E_EXISTS: from the database; E_CREATED: pk taken */
	struct rkey *parent;   /* E_CREATED: the patient or study it was made under */
	char *path;            /* instance, E_EXISTS: its row's file */
	size_t item;           /* E_CREATED: the item that made it (instance: whose file is indexed) */
} rkey;

typedef struct {
	rkey *key[K_KINDS];
	bool creates[K_SERIES + 1];
	bool indexed;            /* its instance row goes in */
	bool replaces_committed; /* and a committed row of its instance goes */
} item_state;

typedef struct {
	pn_db *db;
	pn_reindex_item *items;
	item_state *st;
	size_t n;
	void *root[K_KINDS];
	rkey **list[K_KINDS]; /* distinct keys, in order of first appearance */
	size_t count[K_KINDS];
} batch;

static int cmp_entry(const void *a, const void *b)
{
	const rkey *x = a, *y = b;
	int c = strcmp(x->k1, y->k1);
	return c ? c : x->kind == K_PATIENT ? strcmp(x->k2, y->k2) : 0;
}

/* The batch's entry for a key, made on first sight. */
static rkey *key_of(batch *b, int kind, const char *k1, const char *k2)
{
	rkey probe = {.kind = kind, .k1 = k1, .k2 = k2};
	void *found = tfind(&probe, &b->root[kind], cmp_entry);
	if (found)
		return *(rkey **)found;
	rkey *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	*e = probe;
	if (!tsearch(e, &b->root[kind], cmp_entry)) {
		free(e);
		return NULL;
	}
	b->list[kind][b->count[kind]++] = e;
	return e;
}

static void keep_entry(void *e)
{
	(void)e; /* the list frees it */
}

static void batch_free(batch *b)
{
	for (int k = 0; k < K_KINDS; k++) {
		tdestroy(b->root[k], keep_entry);
		for (size_t i = 0; b->list[k] && i < b->count[k]; i++) {
			free(b->list[k][i]->path);
			free(b->list[k][i]);
		}
		free(b->list[k]);
	}
	free(b->st);
}

/* A growing buffer; `failed` once memory ran out. */
typedef struct {
	char *data;
	size_t len, cap;
	bool failed;
} buf;

/* Room for n more bytes and a NUL; false (and `failed`) without memory. */
static bool reserve(buf *b, size_t n)
{
	if (b->failed)
		return false;
	if (b->len + n + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n + 1)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d) {
		b->failed = true;
		return false;
	}
	b->data = d;
	b->cap = cap;
	return true;
}

static void put(buf *b, const char *s, size_t n)
{
	if (!reserve(b, n))
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void put_s(buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* An element of a text array literal: quoted, \ and " escaped. */
static void put_array_elem(buf *b, const char *s)
{
	put(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			put(b, "\\", 1);
		put(b, p, 1);
	}
	put(b, "\"", 1);
}

/* A value of COPY's text format: \N for NULL, the four characters that
 * mean something escaped. */
static void put_copy_text(buf *b, const char *s)
{
	if (!s) {
		put(b, "\\N", 2);
		return;
	}
	const char *run = s;
	for (const char *p = s; *p; p++) {
		const char *esc = *p == '\\'   ? "\\\\"
		                  : *p == '\n' ? "\\n"
		                  : *p == '\r' ? "\\r"
		                  : *p == '\t' ? "\\t"
		                               : NULL;
		if (!esc)
			continue;
		put(b, run, (size_t)(p - run));
		put(b, esc, 2);
		run = p + 1;
	}
	put_s(b, run);
}

/* A bytea in COPY's text format: "\\x" and hex. */
static void put_copy_bytea(buf *b, const void *data, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	if (!data) {
		put(b, "\\N", 2);
		return;
	}
	put(b, "\\\\x", 3);
	if (!reserve(b, 2 * len))
		return;
	const unsigned char *p = data;
	char *out = b->data + b->len;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	b->len += 2 * len;
	b->data[b->len] = '\0';
}

/* One COPY row: the record's values as the store's statement takes them,
 * then `extra` (a timestamp) and the end of the line. */
static void put_copy_row(buf *b, const char *pk, const pn_params *p, const char *extra)
{
	if (pk) {
		put_s(b, pk);
		put(b, "\t", 1);
	}
	for (int i = 0; i < p->n; i++) {
		if (p->formats[i] == 1)
			put_copy_bytea(b, p->values[i], (size_t)p->lengths[i]);
		else
			put_copy_text(b, p->values[i]);
		put(b, "\t", 1);
	}
	put_s(b, extra);
	put(b, "\n", 1);
}

/* A timestamp in UTC from nanoseconds since 1970, as timestamptz reads it. */
#define TIME_TEXT 64
static void format_time(int64_t ns, char out[TIME_TEXT])
{
	int64_t s = ns / 1000000000, frac = ns % 1000000000;
	if (frac < 0) {
		frac += 1000000000;
		s--;
	}
	time_t t = (time_t)s;
	struct tm tm;
	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	size_t n = strftime(out, TIME_TEXT, "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(out + n, TIME_TEXT - n, ".%06d+00", (int)(frac / 1000));
}

/* Runs a query with text parameters expecting rows; as pn_db_fail(). */
static PGresult *query(pn_db *db, const char *sql, int n, const char *const *values, int *ret)
{
	PGresult *res = PQexecParams(db->conn, sql, n, NULL, values, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
		*ret = pn_db_fail(db, res);
		return NULL;
	}
	*ret = 0;
	return res;
}

/* Looks up every key of the batch: the rows there are, with their keys and
 * parents (instances: their files). */
static int look_up(batch *b)
{
	static const char *const sql[K_KINDS] = {
	    [K_PATIENT] = "SELECT k.i, p.pk, 0 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k (id, issuer, i)"
	                  " JOIN patient p ON p.patient_id = k.id AND p.issuer = k.issuer",
	    [K_STUDY] = "SELECT k.i, s.pk, s.patient_fk FROM unnest($1::text[]) WITH ORDINALITY AS k (uid, i)"
	                " JOIN study s ON s.study_uid = k.uid",
	    [K_SERIES] = "SELECT k.i, s.pk, s.study_fk FROM unnest($1::text[]) WITH ORDINALITY AS k (uid, i)"
	                 " JOIN series s ON s.series_uid = k.uid",
	    [K_INSTANCE] = "SELECT k.i, x.pk, x.series_fk, x.path FROM unnest($1::text[]) WITH ORDINALITY AS k (uid, i)"
	                   " JOIN instance x ON x.sop_uid = k.uid",
	};
	for (int k = 0; k < K_KINDS; k++) {
		if (b->count[k] == 0)
			continue;
		buf a1 = {0}, a2 = {0};
		put(&a1, "{", 1);
		put(&a2, "{", 1);
		for (size_t i = 0; i < b->count[k]; i++) {
			put_array_elem(&a1, b->list[k][i]->k1);
			if (k == K_PATIENT)
				put_array_elem(&a2, b->list[k][i]->k2);
		}
		put(&a1, "}", 1);
		put(&a2, "}", 1);
		if (a1.failed || a2.failed) {
			free(a1.data);
			free(a2.data);
			pn_db_set_error(b->db, "", "out of memory");
			return -ENOMEM;
		}
		const char *values[2] = {a1.data, a2.data};
		int r;
		PGresult *res = query(b->db, sql[k], k == K_PATIENT ? 2 : 1, values, &r);
		free(a1.data);
		free(a2.data);
		if (!res)
			return r;
		for (int row = 0; row < PQntuples(res); row++) {
			long long i = atoll(PQgetvalue(res, row, 0));
			if (i < 1 || (size_t)i > b->count[k])
				continue;
			rkey *e = b->list[k][i - 1];
			e->state = E_EXISTS;
			e->pk = atoll(PQgetvalue(res, row, 1));
			e->parent_pk = atoll(PQgetvalue(res, row, 2));
			if (k == K_INSTANCE && !(e->path = strdup(PQgetvalue(res, row, 3)))) {
				PQclear(res);
				pn_db_set_error(b->db, "", "out of memory");
				return -ENOMEM;
			}
		}
		PQclear(res);
	}
	return 0;
}

/* Whether `child` (a study or series the batch met before) belongs to
 * `parent`, as the store's hierarchy check asks it. */
static bool belongs(const rkey *child, const rkey *parent)
{
	if (child->state == E_CREATED)
		return child->parent == parent;
	return parent->state == E_EXISTS && child->parent_pk == parent->pk;
}

static const char *file_of(const batch *b, const rkey *e)
{
	return e->state == E_EXISTS ? e->path : b->items[e->item].rec->path;
}

static void set_other(pn_reindex_item *it, const char *path)
{
	snprintf(it->other_path, sizeof(it->other_path), "%s", path ? path : "");
}

/* Item i, as the store would have taken it after everything before it. */
static void decide(batch *b, size_t i, pn_dup_policy policy)
{
	pn_reindex_item *it = &b->items[i];
	item_state *st = &b->st[i];
	rkey *p = st->key[K_PATIENT], *s = st->key[K_STUDY], *se = st->key[K_SERIES], *x = st->key[K_INSTANCE];
	it->other_path[0] = '\0';
	if (s->state != E_NEW && !belongs(s, p)) {
		it->verdict = PN_REINDEX_CONFLICT_STUDY;
		if (s->state == E_CREATED)
			set_other(it, b->items[s->item].rec->path);
		return;
	}
	if (se->state != E_NEW && !belongs(se, s)) {
		it->verdict = PN_REINDEX_CONFLICT_SERIES;
		if (se->state == E_CREATED)
			set_other(it, b->items[se->item].rec->path);
		return;
	}
	it->verdict = PN_REINDEX_INDEXED;
	if (x->state != E_NEW) {
		const char *there = file_of(b, x);
		if (strcmp(there, it->rec->path) == 0) {
			it->verdict = PN_REINDEX_ALREADY;
			return;
		}
		set_other(it, there);
		if (policy != PN_DUP_REPLACE) {
			it->verdict = PN_REINDEX_DUPLICATE;
			return;
		}
		it->verdict = PN_REINDEX_REPLACING;
		if (x->state == E_CREATED) {
			pn_reindex_item *earlier = &b->items[x->item];
			earlier->verdict = PN_REINDEX_REPLACED;
			set_other(earlier, it->rec->path);
			b->st[x->item].indexed = false;
			/* what the earlier file replaced, this one does */
			st->replaces_committed = b->st[x->item].replaces_committed;
		} else {
			st->replaces_committed = true;
		}
	}
	x->state = E_CREATED;
	x->item = i;
	st->indexed = true;
	rkey *made[] = {p, s, se};
	for (int k = K_PATIENT; k <= K_SERIES; k++) {
		if (made[k]->state != E_NEW)
			continue;
		made[k]->state = E_CREATED;
		made[k]->item = i;
		made[k]->parent = k == K_PATIENT ? NULL : made[k - 1];
		st->creates[k] = true;
	}
}

/* Keys for the rows the batch makes, from the tables' own sequences. */
static int take_keys(batch *b)
{
	static const char *const table[] = {"patient", "study", "series"};
	for (int k = K_PATIENT; k <= K_SERIES; k++) {
		size_t want = 0;
		for (size_t i = 0; i < b->count[k]; i++)
			want += b->list[k][i]->state == E_CREATED;
		if (want == 0)
			continue;
		char n[24];
		snprintf(n, sizeof(n), "%zu", want);
		const char *values[] = {table[k], n};
		int r;
		PGresult *res = query(
		    b->db, "SELECT nextval(pg_get_serial_sequence($1, 'pk')) FROM generate_series(1, $2::integer)", 2,
		    values, &r);
		if (!res)
			return r;
		if ((size_t)PQntuples(res) != want) {
			PQclear(res);
			pn_db_set_error(b->db, "", "the sequence gave too few keys");
			return -EIO;
		}
		for (size_t i = 0, row = 0; i < b->count[k]; i++)
			if (b->list[k][i]->state == E_CREATED)
				b->list[k][i]->pk = atoll(PQgetvalue(res, (int)row++, 0));
		PQclear(res);
	}
	return 0;
}

/* Sends what `b` holds of a COPY in progress. */
static int copy_flush(pn_db *db, buf *b)
{
	if (b->failed) {
		PQputCopyEnd(db->conn, "out of memory");
		pn_db_set_error(db, "", "out of memory");
		return -ENOMEM;
	}
	if (b->len && PQputCopyData(db->conn, b->data, (int)b->len) != 1) {
		pn_db_set_error_result(db, NULL);
		return PN_DB_CONN_LOST;
	}
	b->len = 0;
	return 0;
}

/* COPY of one table's new rows: the table's rows in the batch's order. */
static int copy_table(batch *b, int kind)
{
	static const char *const sql[K_KINDS] = {
	    [K_PATIENT] = "COPY patient (pk, " PN_PATIENT_COLUMNS ", created_at) FROM STDIN",
	    [K_STUDY] = "COPY study (pk, " PN_STUDY_COLUMNS ", created_at) FROM STDIN",
	    [K_SERIES] = "COPY series (pk, " PN_SERIES_COLUMNS ", created_at) FROM STDIN",
	    [K_INSTANCE] = "COPY instance (" PN_INSTANCE_COLUMNS ", received_at) FROM STDIN",
	};
	bool any = false;
	for (size_t i = 0; i < b->n && !any; i++)
		any = kind == K_INSTANCE ? b->st[i].indexed : b->st[i].creates[kind];
	if (!any)
		return 0;
	PGresult *res = PQexec(b->db->conn, sql[kind]);
	if (PQresultStatus(res) != PGRES_COPY_IN)
		return pn_db_fail(b->db, res);
	PQclear(res);
	buf out = {0};
	int r = 0;
	for (size_t i = 0; i < b->n && r == 0; i++) {
		const item_state *st = &b->st[i];
		const pn_instance_rec *rec = b->items[i].rec;
		if (kind == K_INSTANCE ? !st->indexed : !st->creates[kind])
			continue;
		pn_params p = {0};
		char pk[24], parent[24] = "", size_text[24], when[TIME_TEXT];
		const rkey *e = st->key[kind];
		snprintf(pk, sizeof(pk), "%" PRId64, e->pk);
		if (kind != K_PATIENT) {
			const rkey *up = st->key[kind - 1];
			snprintf(parent, sizeof(parent), "%" PRId64, up->pk);
		}
		format_time(b->items[i].mtime_ns, when);
		switch (kind) {
		case K_PATIENT:
			pn_index_patient_params(&p, rec);
			break;
		case K_STUDY:
			pn_index_study_params(&p, rec, parent);
			break;
		case K_SERIES:
			pn_index_series_params(&p, rec, parent);
			break;
		default:
			snprintf(size_text, sizeof(size_text), "%" PRId64, rec->size);
			pn_index_instance_params(&p, rec, parent, size_text);
			break;
		}
		put_copy_row(&out, kind == K_INSTANCE ? NULL : pk, &p, when);
		if (out.len >= COPY_CHUNK || out.failed)
			r = copy_flush(b->db, &out);
	}
	if (r == 0)
		r = copy_flush(b->db, &out);
	free(out.data);
	if (r == PN_DB_CONN_LOST)
		return r;
	if (r == 0 && PQputCopyEnd(b->db->conn, NULL) != 1) {
		pn_db_set_error_result(b->db, NULL);
		return PN_DB_CONN_LOST;
	}
	/* the COPY's outcome (after -ENOMEM, its failure: the end we sent) */
	res = PQgetResult(b->db->conn);
	if (r == 0)
		r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : pn_db_fail(b->db, res);
	if (r == 0 || r == -ENOMEM)
		PQclear(res);
	while ((res = PQgetResult(b->db->conn)) != NULL)
		PQclear(res);
	return r;
}

/* The committed rows of instances whose later file replaces them. */
static int delete_replaced(batch *b)
{
	buf a = {0};
	put(&a, "{", 1);
	bool any = false;
	for (size_t i = 0; i < b->n; i++) {
		if (b->st[i].replaces_committed && b->st[i].indexed) {
			put_array_elem(&a, b->items[i].rec->sop_uid);
			any = true;
		}
	}
	put(&a, "}", 1);
	int r = a.failed ? -ENOMEM : 0;
	if (any && r == 0) {
		const char *values[] = {a.data};
		PGresult *res = query(b->db, "DELETE FROM instance WHERE sop_uid = ANY($1::text[])", 1, values, &r);
		PQclear(res);
	}
	free(a.data);
	return r;
}

static int move_marker(batch *b, const pn_reindex_mark *mark)
{
	/* a file a row names already was counted when that row went in */
	long long indexed = 0, not_indexed = mark->not_indexed, files = mark->files;
	for (size_t i = 0; i < b->n; i++) {
		if (b->items[i].verdict == PN_REINDEX_ALREADY)
			files--;
		if (b->st[i].indexed) {
			indexed++;
			if (b->st[i].replaces_committed) {
				indexed--;
				not_indexed++;
			}
		} else if (b->items[i].verdict != PN_REINDEX_ALREADY) {
			not_indexed++;
		}
	}
	char mtime[24], nfiles[24], ind[24], skipped[24];
	snprintf(mtime, sizeof(mtime), "%" PRId64, mark->mtime_ns);
	snprintf(nfiles, sizeof(nfiles), "%lld", files);
	snprintf(ind, sizeof(ind), "%lld", indexed);
	snprintf(skipped, sizeof(skipped), "%lld", not_indexed);
	const char *values[] = {mtime, mark->path, nfiles, ind, skipped};
	int r;
	PGresult *res = query(b->db,
	                      "INSERT INTO reindex_progress (id, last_mtime_ns, last_path, files, indexed, not_indexed)"
	                      " VALUES (true, $1::bigint, $2, $3::bigint, $4::bigint, $5::bigint)"
	                      " ON CONFLICT (id) DO UPDATE SET last_mtime_ns = excluded.last_mtime_ns,"
	                      " last_path = excluded.last_path, files = reindex_progress.files + excluded.files,"
	                      " indexed = reindex_progress.indexed + excluded.indexed,"
	                      " not_indexed = reindex_progress.not_indexed + excluded.not_indexed",
	                      5, values, &r);
	PQclear(res);
	return r;
}

static int run_batch(batch *b, pn_dup_policy policy, const pn_reindex_mark *mark)
{
	int r = pn_db_command(b->db, "BEGIN");
	if (r != 0)
		return r;
	for (int k = 0; k < K_KINDS; k++) {
		if (b->n && !(b->list[k] = calloc(b->n, sizeof(rkey *)))) {
			pn_db_set_error(b->db, "", "out of memory");
			return -ENOMEM;
		}
	}
	for (size_t i = 0; i < b->n; i++) {
		const pn_instance_rec *rec = b->items[i].rec;
		item_state *st = &b->st[i];
		st->key[K_PATIENT] = key_of(b, K_PATIENT, rec->patient_id, rec->issuer);
		st->key[K_STUDY] = key_of(b, K_STUDY, rec->study_uid, NULL);
		st->key[K_SERIES] = key_of(b, K_SERIES, rec->series_uid, NULL);
		st->key[K_INSTANCE] = key_of(b, K_INSTANCE, rec->sop_uid, NULL);
		for (int k = 0; k < K_KINDS; k++) {
			if (!st->key[k]) {
				pn_db_set_error(b->db, "", "out of memory");
				return -ENOMEM;
			}
		}
	}
	if ((r = look_up(b)) != 0)
		return r;
	for (size_t i = 0; i < b->n; i++)
		decide(b, i, policy);
	if ((r = take_keys(b)) != 0)
		return r;
	for (int k = K_PATIENT; k <= K_SERIES && r == 0; k++)
		r = copy_table(b, k);
	if (r == 0)
		r = delete_replaced(b);
	if (r == 0)
		r = copy_table(b, K_INSTANCE);
	if (r == 0)
		r = move_marker(b, mark);
	if (r == 0)
		r = pn_db_command(b->db, "COMMIT");
	return r;
}

int pn_reindex_batch(pn_db *db, pn_reindex_item *items, size_t n, pn_dup_policy policy, const pn_reindex_mark *mark)
{
	pn_db_settle(db);
	pn_db_clear_error(db);
	batch b = {.db = db, .items = items, .n = n};
	if (n && !(b.st = calloc(n, sizeof(*b.st)))) {
		pn_db_set_error(db, "", "out of memory");
		return -ENOMEM;
	}
	int r = run_batch(&b, policy, mark);
	if (r != 0)
		pn_db_rollback(db);
	batch_free(&b);
	if (r == 0)
		return 0;
	if (r == -ENOMEM)
		return r;
	return r == PN_DB_CONN_LOST ? -ECONNREFUSED : -EIO;
}

int pn_reindex_finish(pn_db *db)
{
	pn_db_settle(db);
	pn_db_clear_error(db);
	/* One transaction: the counts are right once the row is gone. */
	int r = pn_db_command(db, "BEGIN");
	if (r == 0) {
		PGresult *res = PQexec(db->conn, "SELECT pn_fold_orphans(), pn_fold_counts(pg_backend_pid())");
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			PQclear(res);
		else
			r = pn_db_fail(db, res);
	}
	if (r == 0)
		r = pn_db_command(db, "DELETE FROM reindex_progress");
	if (r == 0)
		r = pn_db_command(db, "COMMIT");
	if (r != 0) {
		pn_db_rollback(db);
		return -EIO;
	}
	/* A bulk load leaves the planner's statistics behind: C-FIND's plans
	 * need them before autovacuum comes by. */
	return pn_db_command(db, "ANALYZE patient, study, series, instance") == 0 ? 0 : -EIO;
}
