/* Deleting from the index (delete.h): one READ COMMITTED transaction of
 * parameterised statements, run again after a deadlock. Deletes are rare
 * and each runs a handful of statements: nothing is prepared. */
#include "delete.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db_internal.h"

enum {
	DELETE_RETRIES = 5, /* re-runs after deadlocks, serialization failures, rows gone under us */
	RETRY_BASE_MS = 20,
	RETRY_CAP_MS = 1000,
};

/* A growing list of strings (pks as text, UIDs). */
typedef struct {
	char **v;
	size_t n, cap;
} strv;

static int strv_add(strv *l, const char *s)
{
	return pn_db_strings_add(&l->v, &l->n, &l->cap, s);
}

static void strv_free(strv *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* What a target covers, resolved to primary keys. */
typedef struct {
	char p[24], s[24], x[24], i[24]; /* patient, study, series, instance; "" when not the target's */
	char *patient_id, *issuer, *name;
	strv studies, study_uids; /* the studies it touches, by pk, and their UIDs */
	strv series;              /* the series that go whole */
	bool instance_alone;      /* INSTANCE: only the instance goes, its series keeps others */
	bool studies_whole;       /* every study in `studies` goes */
	bool patient_whole;
} scope;

static void scope_free(scope *sc)
{
	free(sc->patient_id);
	free(sc->issuer);
	free(sc->name);
	strv_free(&sc->studies);
	strv_free(&sc->study_uids);
	strv_free(&sc->series);
	memset(sc, 0, sizeof(*sc));
}

/* A statement with text parameters; its result if it returned `want`,
 * else NULL with the outcome of pn_db_fail in *r. */
static PGresult *exec(pn_db *db, const char *sql, int n, const char *const *params, ExecStatusType want, int *r)
{
	PGresult *res = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != want) {
		*r = pn_db_fail(db, res);
		return NULL;
	}
	return res;
}

static int command(pn_db *db, const char *sql, int n, const char *const *params)
{
	int r = 0;
	PGresult *res = exec(db, sql, n, params, PGRES_COMMAND_OK, &r);
	PQclear(res);
	return res ? 0 : r;
}

/* The first column of every row into l. */
static int column(pn_db *db, const char *sql, int n, const char *const *params, strv *l, strv *second)
{
	int r = 0;
	PGresult *res = exec(db, sql, n, params, PGRES_TUPLES_OK, &r);
	if (!res)
		return r;
	for (int row = 0; row < PQntuples(res) && r == 0; row++) {
		r = strv_add(l, PQgetvalue(res, row, 0));
		if (r == 0 && second)
			r = strv_add(second, PQgetvalue(res, row, 1));
	}
	PQclear(res);
	return r;
}

/* A one-row, one-boolean statement. */
static int boolean(pn_db *db, const char *sql, int n, const char *const *params, bool *ret)
{
	int r = 0;
	PGresult *res = exec(db, sql, n, params, PGRES_TUPLES_OK, &r);
	if (!res)
		return r;
	*ret = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	return 0;
}

static char *literal(const strv *l)
{
	return pn_db_array_literal((const char *const *)l->v, l->n);
}

#define RESOLVE_COLUMNS "p.pk, t.pk, s.pk, i.pk, p.patient_id, p.issuer, coalesce(p.patient_name, '')"

static const char *const resolve_sql[] = {
    [PN_DELETE_PATIENT] = "SELECT p.pk, NULL, NULL, NULL, p.patient_id, p.issuer, coalesce(p.patient_name, '')"
                          " FROM patient p WHERE p.patient_id = $1 AND p.issuer = $2",
    [PN_DELETE_STUDY] = "SELECT p.pk, t.pk, NULL, NULL, p.patient_id, p.issuer, coalesce(p.patient_name, '')"
                        " FROM study t JOIN patient p ON p.pk = t.patient_fk WHERE t.study_uid = $1",
    [PN_DELETE_SERIES] = "SELECT p.pk, t.pk, s.pk, NULL, p.patient_id, p.issuer, coalesce(p.patient_name, '')"
                         " FROM series s JOIN study t ON t.pk = s.study_fk JOIN patient p ON p.pk = t.patient_fk"
                         " WHERE s.series_uid = $1",
    [PN_DELETE_INSTANCE] = "SELECT " RESOLVE_COLUMNS " FROM instance i JOIN series s ON s.pk = i.series_fk"
                           " JOIN study t ON t.pk = s.study_fk JOIN patient p ON p.pk = t.patient_fk"
                           " WHERE i.sop_uid = $1",
};

/* 0 found (sc filled), -ENOENT not, or an attempt's failure. */
static int resolve(pn_db *db, const pn_delete_target *t, scope *sc)
{
	const char *params[] = {t->key, t->issuer ? t->issuer : ""};
	int r = 0;
	PGresult *res =
	    exec(db, resolve_sql[t->level], t->level == PN_DELETE_PATIENT ? 2 : 1, params, PGRES_TUPLES_OK, &r);
	if (!res)
		return r;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return -ENOENT;
	}
	char *pks[] = {sc->p, sc->s, sc->x, sc->i};
	for (int c = 0; c < 4; c++)
		snprintf(pks[c], sizeof(sc->p), "%s", PQgetisnull(res, 0, c) ? "" : PQgetvalue(res, 0, c));
	sc->patient_id = strdup(PQgetvalue(res, 0, 4));
	sc->issuer = strdup(PQgetvalue(res, 0, 5));
	sc->name = strdup(PQgetvalue(res, 0, 6));
	PQclear(res);
	return sc->patient_id && sc->issuer && sc->name ? 0 : -ENOMEM;
}

/* Reads (with `lock`: locks) one row that must be there: 0, or
 * PN_DB_RETRY when it went since the look-up. */
static int one_row(pn_db *db, const char *sql, bool lock, const char *pk)
{
	char full[256];
	snprintf(full, sizeof(full), "%s%s", sql, lock ? " FOR UPDATE" : "");
	strv got = {0};
	const char *params[] = {pk};
	int r = column(db, full, 1, params, &got, NULL);
	if (r == 0 && got.n != 1)
		r = PN_DB_RETRY;
	strv_free(&got);
	return r;
}

/* Whether the parent has no other child than `except`. */
static int none_but(pn_db *db, const char *sql, const char *parent, const char *except, bool *ret)
{
	const char *params[] = {parent, except};
	return boolean(db, sql, 2, params, ret);
}

/* The rows the target takes with it; with `lock`, locked in the folds'
 * order (patient, studies, series, instance), each statement after a lock
 * seeing what the stores it waited for committed. 0 found, -ENOENT not,
 * or an attempt's failure. */
static int find_scope(pn_db *db, const pn_delete_target *t, bool lock, scope *sc)
{
	int r = resolve(db, t, sc);
	if (r != 0)
		return r;
	if (lock && (r = one_row(db, "SELECT pk FROM patient WHERE pk = $1::bigint", true, sc->p)) != 0)
		return r;
	const char *upd = lock ? " FOR UPDATE" : "";
	bool by_patient = t->level == PN_DELETE_PATIENT;
	char sql[256];
	const char *params[] = {by_patient ? sc->p : sc->s};
	snprintf(sql, sizeof(sql), "SELECT pk, study_uid FROM study WHERE %s = $1::bigint ORDER BY pk%s",
	         by_patient ? "patient_fk" : "pk", upd);
	if ((r = column(db, sql, 1, params, &sc->studies, &sc->study_uids)) != 0)
		return r;
	if (!by_patient && sc->studies.n != 1)
		return PN_DB_RETRY; /* gone since the look-up */

	/* PATIENT and STUDY: every series of the studies, every study. */
	if (t->level == PN_DELETE_PATIENT || t->level == PN_DELETE_STUDY) {
		char *lit = literal(&sc->studies);
		if (!lit)
			return -ENOMEM;
		const char *sp[] = {lit};
		snprintf(sql, sizeof(sql), "SELECT pk FROM series WHERE study_fk = ANY ($1::bigint[]) ORDER BY pk%s",
		         upd);
		r = column(db, sql, 1, sp, &sc->series, NULL);
		free(lit);
		sc->studies_whole = true;
		sc->patient_whole = by_patient;
		if (r == 0 && !by_patient)
			r = none_but(db,
			             "SELECT NOT EXISTS (SELECT 1 FROM study WHERE patient_fk = $1::bigint AND pk <> "
			             "$2::bigint)",
			             sc->p, sc->s, &sc->patient_whole);
		return r;
	}
	/* SERIES and INSTANCE: the parents go only when left empty. */
	if ((r = one_row(db, "SELECT pk FROM series WHERE pk = $1::bigint", lock, sc->x)) != 0)
		return r;
	bool series_whole = true;
	if (t->level == PN_DELETE_INSTANCE) {
		if ((r = one_row(db, "SELECT pk FROM instance WHERE pk = $1::bigint", lock, sc->i)) != 0)
			return r;
		r = none_but(
		    db, "SELECT NOT EXISTS (SELECT 1 FROM instance WHERE series_fk = $1::bigint AND pk <> $2::bigint)",
		    sc->x, sc->i, &series_whole);
		if (r != 0)
			return r;
	}
	sc->instance_alone = !series_whole;
	if (!series_whole)
		return 0;
	if ((r = strv_add(&sc->series, sc->x)) != 0)
		return r;
	r = none_but(db, "SELECT NOT EXISTS (SELECT 1 FROM series WHERE study_fk = $1::bigint AND pk <> $2::bigint)",
	             sc->s, sc->x, &sc->studies_whole);
	if (r == 0 && sc->studies_whole)
		r = none_but(
		    db, "SELECT NOT EXISTS (SELECT 1 FROM study WHERE patient_fk = $1::bigint AND pk <> $2::bigint)",
		    sc->p, sc->s, &sc->patient_whole);
	return r;
}

static pn_delete_study *study_entry(pn_delete_summary *s, const char *uid)
{
	for (size_t i = 0; i < s->n_study; i++)
		if (strcmp(s->study[i].study_uid, uid) == 0)
			return &s->study[i];
	return NULL;
}

/* What the scope holds, by study and SOP class, into ret. */
static int summarize(pn_db *db, const scope *sc, pn_delete_summary *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->patient_id = strdup(sc->patient_id);
	ret->issuer = strdup(sc->issuer);
	ret->patient_name = strdup(sc->name);
	ret->patient_whole = sc->patient_whole;
	ret->study = calloc(sc->studies.n ? sc->studies.n : 1, sizeof(*ret->study));
	if (!ret->patient_id || !ret->issuer || !ret->patient_name || !ret->study)
		return -ENOMEM;
	for (size_t i = 0; i < sc->study_uids.n; i++) {
		pn_delete_study *st = &ret->study[ret->n_study++];
		st->whole = sc->studies_whole;
		if (!(st->study_uid = strdup(sc->study_uids.v[i])) || !(st->modalities = strdup("")))
			return -ENOMEM;
	}
	ret->studies = sc->studies_whole ? (long long)sc->studies.n : 0;
	char *lit = literal(&sc->series);
	if (!lit)
		return -ENOMEM;
	const char *params[] = {lit, sc->instance_alone ? sc->i : NULL};
	int r = 0;
	PGresult *res = exec(db,
	                     "SELECT t.study_uid, count(*), coalesce(string_agg(DISTINCT s.modality, '\\'"
	                     " ORDER BY s.modality), '') FROM series s JOIN study t ON t.pk = s.study_fk"
	                     " WHERE s.pk = ANY ($1::bigint[]) GROUP BY 1",
	                     1, params, PGRES_TUPLES_OK, &r);
	for (int row = 0; res && row < PQntuples(res) && r == 0; row++) {
		pn_delete_study *st = study_entry(ret, PQgetvalue(res, row, 0));
		if (!st)
			continue;
		st->series = atoll(PQgetvalue(res, row, 1));
		ret->series += st->series;
		free(st->modalities);
		if (!(st->modalities = strdup(PQgetvalue(res, row, 2))))
			r = -ENOMEM;
	}
	PQclear(res);
	if (r == 0)
		res = exec(db,
		           "SELECT t.study_uid, i.sop_class_uid, count(*), sum(i.size) FROM instance i"
		           " JOIN series s ON s.pk = i.series_fk JOIN study t ON t.pk = s.study_fk"
		           " WHERE i.series_fk = ANY ($1::bigint[]) OR i.pk = $2::bigint GROUP BY 1, 2 ORDER BY 1, 2",
		           2, params, PGRES_TUPLES_OK, &r);
	free(lit);
	for (int row = 0; res && row < PQntuples(res) && r == 0; row++) {
		pn_delete_study *st = study_entry(ret, PQgetvalue(res, row, 0));
		if (!st)
			continue;
		pn_delete_class *c = realloc(st->classes, (st->n_classes + 1) * sizeof(*c));
		if (!c) {
			r = -ENOMEM;
			break;
		}
		st->classes = c;
		c = &st->classes[st->n_classes++];
		c->sop_class_uid = strdup(PQgetvalue(res, row, 1));
		c->instances = atoll(PQgetvalue(res, row, 2));
		c->bytes = atoll(PQgetvalue(res, row, 3));
		ret->instances += c->instances;
		ret->bytes += c->bytes;
		if (!c->sop_class_uid)
			r = -ENOMEM;
	}
	PQclear(res);
	return r;
}

void pn_delete_summary_free(pn_delete_summary *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_study; i++) {
		for (size_t k = 0; k < s->study[i].n_classes; k++)
			free(s->study[i].classes[k].sop_class_uid);
		free(s->study[i].classes);
		free(s->study[i].study_uid);
		free(s->study[i].modalities);
	}
	free(s->study);
	free(s->patient_id);
	free(s->issuer);
	free(s->patient_name);
	memset(s, 0, sizeof(*s));
}

int pn_delete_preview(pn_db *db, const pn_delete_target *t, pn_delete_summary *ret)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	memset(ret, 0, sizeof(*ret));
	/* one snapshot for all the statements */
	if ((r = pn_db_command(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0)
		return pn_db_public_error(r);
	scope sc = {0};
	r = find_scope(db, t, false, &sc);
	if (r == 0)
		r = summarize(db, &sc, ret);
	if (r != 0)
		pn_delete_summary_free(ret);
	scope_free(&sc);
	pn_db_rollback(db);
	if (r == -ENOENT)
		return 0;
	/* a row gone between two statements of one snapshot cannot be */
	return r == 0 ? 1 : r == PN_DB_RETRY ? -EIO : pn_db_public_error(r);
}

int pn_delete_issuers(pn_db *db, const char *patient_id, char ***ret, size_t *ret_n)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	strv l = {0};
	const char *params[] = {patient_id};
	r = column(db, "SELECT issuer FROM patient WHERE patient_id = $1 ORDER BY issuer", 1, params, &l, NULL);
	if (r != 0) {
		strv_free(&l);
		return pn_db_public_error(r);
	}
	*ret = l.v;
	*ret_n = l.n;
	return 0;
}

/* The retrieves' keys of the scope, tried exclusively for this
 * transaction: 0 all taken, -EBUSY not all (a retrieve holds one). */
static int try_holds(pn_db *db, const scope *sc)
{
	strv keys = {0};
	size_t len = strlen("patient:") + strlen(sc->patient_id) + 1;
	char *pk = malloc(len);
	int r = pk ? 0 : -ENOMEM;
	if (pk) {
		snprintf(pk, len, "patient:%s", sc->patient_id);
		r = strv_add(&keys, pk);
		free(pk);
	}
	for (size_t i = 0; i < sc->study_uids.n && r == 0; i++) {
		char k[80];
		snprintf(k, sizeof(k), "study:%s", sc->study_uids.v[i]); /* a UID: 64 bytes at most */
		r = strv_add(&keys, k);
	}
	char *lit = r == 0 ? literal(&keys) : NULL;
	strv_free(&keys);
	if (!lit)
		return -ENOMEM;
	bool all = false;
	const char *params[] = {lit};
	r = boolean(
	    db, "SELECT bool_and(pg_try_advisory_xact_lock(" PN_HOLD_SPACE ", hashtext(k))) FROM unnest($1::text[]) k",
	    1, params, &all);
	free(lit);
	return r != 0 ? r : all ? 0 : -EBUSY;
}

static void test_pause(int ms)
{
	if (ms > 0) {
		struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* The deletions, once everything is locked. */
static int remove_rows(pn_db *db, const scope *sc)
{
	int r = 0;
	char *series = literal(&sc->series);
	char *studies = literal(&sc->studies);
	if (!series || !studies) {
		r = -ENOMEM;
		goto out;
	}
	/* The files go to the queue in the statement that unnames them. */
	if (sc->instance_alone) {
		const char *p[] = {sc->i};
		r = command(db,
		            "WITH d AS (DELETE FROM instance WHERE pk = $1::bigint RETURNING path)"
		            " INSERT INTO storage_garbage (path) SELECT path FROM d ON CONFLICT DO NOTHING",
		            1, p);
		goto out; /* the series keeps its other instances: the fold below counts it */
	}
	const char *sp[] = {series};
	r = command(db,
	            "WITH d AS (DELETE FROM instance WHERE series_fk = ANY ($1::bigint[]) RETURNING path)"
	            " INSERT INTO storage_garbage (path) SELECT path FROM d ON CONFLICT DO NOTHING",
	            1, sp);
	/* A series' count deltas go with it, its own and those no fold has
	 * taken yet: what the folds added to its study and patient comes off
	 * here, for the parents that stay. */
	if (r == 0 && !sc->studies_whole) {
		const char *p[] = {sc->s, series};
		r = command(db,
		            "UPDATE study SET n_instances = n_instances - (SELECT coalesce(sum(n_instances), 0)"
		            " FROM series WHERE pk = ANY ($2::bigint[])) WHERE pk = $1::bigint",
		            2, p);
	}
	if (r == 0 && !sc->patient_whole) {
		const char *p[] = {sc->p, series};
		r = command(db,
		            "UPDATE patient SET n_instances = n_instances - (SELECT coalesce(sum(n_instances), 0)"
		            " FROM series WHERE pk = ANY ($2::bigint[])) WHERE pk = $1::bigint",
		            2, p);
	}
	if (r == 0)
		r = command(db, "DELETE FROM series WHERE pk = ANY ($1::bigint[])", 1, sp);
	if (r == 0 && sc->studies_whole) {
		const char *p[] = {studies};
		r = command(db, "DELETE FROM study WHERE pk = ANY ($1::bigint[])", 1, p);
	}
	if (r == 0 && sc->patient_whole) {
		const char *p[] = {sc->p};
		r = command(db, "DELETE FROM patient WHERE pk = $1::bigint", 1, p);
	}
out:
	free(series);
	free(studies);
	return r;
}

/* One attempt: 0 committed, -ENOENT, -EBUSY, -ESTALE, or an attempt's
 * failure; anything but 0 rolled back. */
static int attempt(pn_db *db, const pn_delete_target *t, pn_delete_summary *ret)
{
	scope sc = {0};
	/* A pacsnodectl stopped in the middle (^Z) must not keep the rows
	 * and the retrieves' keys locked for long. */
	int r = pn_db_command(db, "BEGIN ISOLATION LEVEL READ COMMITTED");
	if (r == 0)
		r = pn_db_command(db, "SET LOCAL idle_in_transaction_session_timeout = '60s'");
	if (r == 0)
		r = find_scope(db, t, true, &sc);
	if (r == 0) {
		test_pause(t->test_pause_ms);
		r = try_holds(db, &sc);
	}
	if (r == 0)
		r = summarize(db, &sc, ret);
	if (r == 0)
		r = remove_rows(db, &sc);
	/* The counts exact at COMMIT: this transaction's deltas folded in it. */
	if (r == 0)
		PQclear(exec(db, "SELECT pn_fold_counts(pg_backend_pid())", 0, NULL, PGRES_TUPLES_OK, &r));
	if (r == 0) {
		PGresult *res = PQexec(db->conn, "COMMIT");
		if (PQresultStatus(res) == PGRES_COMMAND_OK && PQtransactionStatus(db->conn) == PQTRANS_IDLE) {
			PQclear(res);
			scope_free(&sc);
			return 0;
		}
		if (PQresultStatus(res) == PGRES_COMMAND_OK) { /* COMMIT of a failed transaction */
			PQclear(res);
			pn_db_set_error(db, "", "transaction was not committed");
			r = -EIO;
		} else {
			int f = pn_db_fail(db, res);
			r = f == PN_DB_CONN_LOST ? -ESTALE : f;
		}
	}
	scope_free(&sc);
	pn_delete_summary_free(ret);
	pn_db_rollback(db);
	return r;
}

int pn_delete_run(pn_db *db, const pn_delete_target *t, pn_delete_summary *ret)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	memset(ret, 0, sizeof(*ret));
	pn_db_retry again = {.max_retries = DELETE_RETRIES, .base_ms = RETRY_BASE_MS, .cap_ms = RETRY_CAP_MS};
	for (;;) {
		r = attempt(db, t, ret);
		if (r == 0 || r == -ENOENT)
			return r == 0 ? 1 : 0;
		if (!pn_db_run_again(db, &again, &r))
			return r;
	}
}
