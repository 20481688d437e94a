/* db/ against a real PostgreSQL: migrations, pn_index_store() outcomes,
 * concurrent writers, reconnect.
 *
 * PN_TEST_PG_CONNINFO names a server and a role allowed to CREATE DATABASE;
 * each run works in its own database pn_test_<pid>_<random>, dropped at the
 * end (kept when PN_TEST_KEEP_DB is set). tests/db/run-pg-test.sh starts a
 * private server for it. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "db.h"
#include "db_internal.h" /* the session's own settings */
#include "index.h"
#include "node.h"
#include "migrations.h"
#include "testdb.h"
#include "testenv.h"
#include "testrec.h"

enum { WORKERS = 8, PARALLEL_ROUNDS = 3 };

static char *test_conninfo; /* the test database */
static pn_db *db;           /* the connection under test */
static PGconn *check;       /* a separate connection for verification */

/* ---- helpers ------------------------------------------------------------ */

/* One text value of a one-parameter query on the verification connection. */
static char *query1(const char *sql, const char *param)
{
	PGresult *res = PQexecParams(check, sql, param ? 1 : 0, NULL, &param, NULL, NULL, 0);
	char *value;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		fail_msg("\"%s\": %s", sql, PQresultErrorMessage(res));
	value = strdup(PQgetisnull(res, 0, 0) ? "<null>" : PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

static long count1(const char *sql, const char *param)
{
	char *v = query1(sql, param);
	long n = strtol(v, NULL, 10);

	free(v);
	return n;
}

/* A digest of every row of the four tables: equal digests, untouched DB. */
static char *fingerprint(void)
{
	return query1("SELECT md5(concat_ws('#',"
	              " (SELECT string_agg(t::text, '|' ORDER BY pk) FROM patient t),"
	              " (SELECT string_agg(t::text, '|' ORDER BY pk) FROM study t),"
	              " (SELECT string_agg(t::text, '|' ORDER BY pk) FROM series t),"
	              " (SELECT string_agg(t::text, '|' ORDER BY pk) FROM instance t)))",
	              NULL);
}

static void store_ok(const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome expect, char **ret_old_path)
{
	pn_index_outcome outcome = (pn_index_outcome)-1;
	int r = pn_index_store(db, rec, policy, &outcome, ret_old_path);

	if (r != 0)
		fail_msg("pn_index_store: %d: %s", r, pn_db_errmsg(db));
	assert_int_equal(outcome, expect);
}

/* ---- tests -------------------------------------------------------------- */

static int migrate_worker(pn_db *mine, int i, void *arg)
{
	(void)arg;
	if (pn_db_migrate(mine) != 0) {
		fprintf(stderr, "worker %d: migrate: %s\n", i, pn_db_errmsg(mine));
		return 1;
	}
	return 0;
}

static void test_migrate_concurrently_then_twice(void **state)
{
	const pn_migration *last = &pn_migrations[pn_migrations_count - 1];
	char *before, *after;
	int version = -1;

	(void)state;
	assert_int_equal(pn_db_schema_version(db, &version), 0);
	assert_int_equal(version, 0); /* fresh database */

	/* Worker processes starting together all migrate. */
	assert_int_equal(run_forked(test_conninfo, WORKERS, migrate_worker, NULL), WORKERS);
	assert_int_equal(pn_db_schema_version(db, &version), 0);
	assert_int_equal(version, last->version);

	before = query1("SELECT string_agg(version || name || applied_at, ',' ORDER BY version)"
	                " FROM schema_version",
	                NULL);
	assert_int_equal(pn_db_migrate(db), 0);
	assert_int_equal(pn_db_migrate(db), 0);
	after = query1("SELECT string_agg(version || name || applied_at, ',' ORDER BY version)"
	               " FROM schema_version",
	               NULL);
	assert_string_equal(before, after);
	assert_int_equal(count1("SELECT count(*) FROM schema_version", NULL), (long)pn_migrations_count);
	assert_int_equal(pn_db_schema_version(db, &version), 0);
	assert_int_equal(version, last->version);
	free(before);
	free(after);
}

static int setup_migrated(void **state)
{
	(void)state;
	return pn_db_migrate(db) == 0 ? 0 : -1;
}

static void test_store_new(void **state)
{
	char *old_path = (char *)"untouched";
	test_rec t;
	PGresult *res;
	bool referenced;
	const char *param;

	(void)state;
	make_rec(&t, "PID-NEW", "", NULL, NULL);
	store_ok(&t.rec, PN_DUP_IGNORE, PN_INDEX_STORED, &old_path);
	assert_null(old_path);

	param = t.sop;
	res = PQexecParams(check,
	                   "SELECT p.patient_name, p.patient_birth_date::text, st.study_time::text,"
	                   " i.attrs, i.calling_ae, p.issuer"
	                   " FROM instance i JOIN series se ON se.pk = i.series_fk"
	                   " JOIN study st ON st.pk = se.study_fk JOIN patient p ON p.pk = st.patient_fk"
	                   " WHERE i.sop_uid = $1",
	                   1, NULL, &param, NULL, NULL, 1 /* binary, for attrs */);
	assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
	assert_int_equal(PQntuples(res), 1);
	assert_string_equal(PQgetvalue(res, 0, 0), "Müller^Jürgen");
	assert_string_equal(PQgetvalue(res, 0, 1), "1970-01-31");
	assert_string_equal(PQgetvalue(res, 0, 2), "13:14:15.123456");
	assert_int_equal(PQgetlength(res, 0, 3), sizeof attrs_bytes);
	assert_memory_equal(PQgetvalue(res, 0, 3), attrs_bytes, sizeof attrs_bytes);
	assert_string_equal(PQgetvalue(res, 0, 4), "CT_SCANNER_1");
	assert_string_equal(PQgetvalue(res, 0, 5), "");
	PQclear(res);

	res = PQexecParams(check,
	                   "SELECT se.series_number, i.rows, i.slice_thickness, i.size,"
	                   " i.number_of_frames IS NULL, se.protocol_name IS NULL, i.content_time"
	                   " FROM instance i JOIN series se ON se.pk = i.series_fk WHERE i.sop_uid = $1",
	                   1, NULL, &param, NULL, NULL, 0);
	assert_int_equal(PQntuples(res), 1);
	assert_string_equal(PQgetvalue(res, 0, 0), "3");
	assert_string_equal(PQgetvalue(res, 0, 1), "512");
	assert_string_equal(PQgetvalue(res, 0, 2), "1.25");
	assert_string_equal(PQgetvalue(res, 0, 3), "526336");
	assert_string_equal(PQgetvalue(res, 0, 4), "t");
	assert_string_equal(PQgetvalue(res, 0, 5), "t");
	assert_string_equal(PQgetvalue(res, 0, 6), "13:15:02.5");
	PQclear(res);

	assert_int_equal(pn_index_path_referenced(db, t.path, &referenced), 0);
	assert_true(referenced);
	assert_int_equal(pn_index_path_referenced(db, "zz/zz/absent.dcm", &referenced), 0);
	assert_false(referenced);
}

static void test_duplicate_policies(void **state)
{
	test_rec first, again;
	char *fp, *fp2, *old_path = NULL, *v;

	(void)state;
	make_rec(&first, "PID-DUP", "", NULL, NULL);
	store_ok(&first.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);

	/* Same SOP, another file, even another patient/study/series: ignore
	 * and reject leave every table as it was. */
	make_rec(&again, "PID-DUP-OTHER", "", NULL, NULL);
	again.rec.sop_uid = first.sop;
	fp = fingerprint();
	store_ok(&again.rec, PN_DUP_IGNORE, PN_INDEX_DUP_IGNORED, &old_path);
	assert_null(old_path);
	fp2 = fingerprint();
	assert_string_equal(fp, fp2);
	free(fp2);
	store_ok(&again.rec, PN_DUP_REJECT, PN_INDEX_DUP_REJECTED, &old_path);
	assert_null(old_path);
	fp2 = fingerprint();
	assert_string_equal(fp, fp2);
	free(fp2);
	free(fp);
	assert_int_equal(count1("SELECT count(*) FROM patient WHERE patient_id = $1", "PID-DUP-OTHER"), 0);
	v = query1("SELECT path FROM instance WHERE sop_uid = $1", first.sop);
	assert_string_equal(v, first.path);
	free(v);

	/* Replace: a new file in a new series of the same study. */
	make_rec(&again, "PID-DUP", "", first.study, NULL);
	again.rec.sop_uid = first.sop;
	again.rec.size = 42;
	again.rec.calling_ae = "MR_2";
	again.rec.rows = "256";
	again.rec.spacing_between_slices = "2.5";
	store_ok(&again.rec, PN_DUP_REPLACE, PN_INDEX_REPLACED, &old_path);
	assert_non_null(old_path);
	assert_string_equal(old_path, first.path);
	free(old_path);
	old_path = NULL;
	assert_int_equal(count1("SELECT count(*) FROM instance WHERE sop_uid = $1", first.sop), 1);
	v = query1("SELECT concat_ws(',', i.path, i.size, i.calling_ae, i.rows, i.spacing_between_slices,"
	           " se.series_uid, i.received_at > st.created_at)"
	           " FROM instance i JOIN series se ON se.pk = i.series_fk"
	           " JOIN study st ON st.pk = se.study_fk WHERE i.sop_uid = $1",
	           first.sop);
	{
		char expect[256];

		snprintf(expect, sizeof expect, "%s,42,MR_2,256,2.5,%s,t", again.path, again.series);
		assert_string_equal(v, expect);
	}
	free(v);

	/* The same file again (a re-run after a lost COMMIT answer): it is
	 * ours, whatever the policy. */
	fp = fingerprint();
	store_ok(&again.rec, PN_DUP_REJECT, PN_INDEX_STORED, &old_path);
	assert_null(old_path);
	fp2 = fingerprint();
	assert_string_equal(fp, fp2);
	free(fp);
	free(fp2);
}

static void test_study_of_another_patient(void **state)
{
	test_rec first, other;
	char *fp, *fp2;

	(void)state;
	make_rec(&first, "PID-A", "", NULL, NULL);
	store_ok(&first.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);

	make_rec(&other, "PID-B", "", first.study, NULL); /* new patient, new series */
	fp = fingerprint();
	store_ok(&other.rec, PN_DUP_REPLACE, PN_INDEX_CONFLICT_STUDY, NULL);
	fp2 = fingerprint();
	assert_string_equal(fp, fp2);
	assert_int_equal(count1("SELECT count(*) FROM patient WHERE patient_id = $1", "PID-B"), 0);
	free(fp);
	free(fp2);
}

static void test_series_of_another_study(void **state)
{
	test_rec first, other;
	char *fp, *fp2;

	(void)state;
	make_rec(&first, "PID-C", "", NULL, NULL);
	store_ok(&first.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);

	make_rec(&other, "PID-C", "", NULL, first.series); /* new study, old series */
	fp = fingerprint();
	store_ok(&other.rec, PN_DUP_IGNORE, PN_INDEX_CONFLICT_SERIES, NULL);
	fp2 = fingerprint();
	assert_string_equal(fp, fp2);
	assert_int_equal(count1("SELECT count(*) FROM study WHERE study_uid = $1", other.study), 0);
	free(fp);
	free(fp2);
}

static void test_issuer_is_part_of_the_key(void **state)
{
	test_rec a, b, c;

	(void)state;
	make_rec(&a, "PID-ISS", "", NULL, NULL);
	make_rec(&b, "PID-ISS", "HOSPITAL_B", NULL, NULL);
	make_rec(&c, "PID-ISS", "", NULL, NULL);
	store_ok(&a.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	store_ok(&b.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	store_ok(&c.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	assert_int_equal(count1("SELECT count(*) FROM patient WHERE patient_id = $1", "PID-ISS"), 2);
	assert_int_equal(count1("SELECT count(DISTINCT patient_fk) FROM study st JOIN patient p"
	                        " ON p.pk = st.patient_fk WHERE p.patient_id = $1",
	                        "PID-ISS"),
	                 2);
}

static int store_worker(pn_db *mine, int i, void *arg)
{
	const test_rec *base = arg;
	pn_instance_rec rec = base->rec;
	char sop[sizeof base->sop + 16], path[sizeof base->path + 16];
	pn_index_outcome outcome;
	int r;

	/* Same patient, study and series; own SOP instance and file. */
	snprintf(sop, sizeof sop, "%s.%d", base->sop, i);
	snprintf(path, sizeof path, "%s.%d", base->path, i);
	rec.sop_uid = sop;
	rec.path = path;
	r = pn_index_store(mine, &rec, PN_DUP_IGNORE, &outcome, NULL);
	if (r != 0 || outcome != PN_INDEX_STORED) {
		fprintf(stderr, "worker %d: %d outcome %d: %s\n", i, r, (int)outcome, pn_db_errmsg(mine));
		return 1;
	}
	return 0;
}

static void test_parallel_writers_one_hierarchy(void **state)
{
	(void)state;
	for (int round = 0; round < PARALLEL_ROUNDS; round++) {
		char patient_id[32];
		test_rec base;

		snprintf(patient_id, sizeof patient_id, "PID-PAR-%d", round);
		make_rec(&base, patient_id, "", NULL, NULL);
		assert_int_equal(run_forked(test_conninfo, WORKERS, store_worker, &base), WORKERS);
		assert_int_equal(count1("SELECT count(*) FROM patient WHERE patient_id = $1", patient_id), 1);
		assert_int_equal(count1("SELECT count(*) FROM study WHERE study_uid = $1", base.study), 1);
		assert_int_equal(count1("SELECT count(*) FROM series WHERE series_uid = $1", base.series), 1);
		assert_int_equal(count1("SELECT count(*) FROM instance i JOIN series se ON se.pk = i.series_fk"
		                        " WHERE se.series_uid = $1",
		                        base.series),
		                 WORKERS);
	}
}

static void test_invalid_value_is_eio(void **state)
{
	pn_index_outcome outcome;
	test_rec t;
	char *fp, *fp2;

	(void)state;
	make_rec(&t, "PID-BAD", "", NULL, NULL);
	t.rec.content_date = "2024-02-30";
	fp = fingerprint();
	assert_int_equal(pn_index_store(db, &t.rec, PN_DUP_IGNORE, &outcome, NULL), -EIO);
	assert_string_equal(pn_db_sqlstate(db), "22008");
	assert_non_null(strstr(pn_db_errmsg(db), "SQLSTATE 22008"));
	fp2 = fingerprint();
	assert_string_equal(fp, fp2);
	free(fp);
	free(fp2);

	t.rec.sop_uid = NULL;
	assert_int_equal(pn_index_store(db, &t.rec, PN_DUP_IGNORE, &outcome, NULL), -EINVAL);
}

static void exec_check(const char *sql, const char *param)
{
	PGresult *res = PQexecParams(check, sql, param ? 1 : 0, NULL, &param, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("\"%s\": %s", sql, PQresultErrorMessage(res));
	PQclear(res);
}

/* The fold runs while the connection's owner goes on: the next call
 * collects it first, and pn_index_fold_wait() reports a failed one, also
 * after another call collected it. Deltas a failed fold leaves are folded
 * by the next. */
static void test_fold_async(void **state)
{
	test_rec a, b, c;
	pn_index_outcome outcome;
	bool referenced;
	const char *series_n = "SELECT n_instances FROM series WHERE series_uid = $1";
	const char *patient_n =
	    "SELECT p.n_series || '/' || p.n_instances FROM patient p WHERE p.patient_id = 'PID-FOLD'";

	(void)state;
	make_rec(&a, "PID-FOLD", "", NULL, NULL);
	store_ok(&a.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	assert_int_equal(count1(series_n, a.series), 0); /* committed, not folded */
	assert_int_equal(pn_index_fold_send(db), 0);
	/* the next call, with the fold in flight */
	assert_int_equal(pn_index_path_referenced(db, a.path, &referenced), 0);
	assert_true(referenced);
	assert_int_equal(count1(series_n, a.series), 1);
	char *v = query1(patient_n, NULL);
	assert_string_equal(v, "1/1");
	free(v);
	assert_int_equal(pn_index_fold_wait(db), 0);

	/* A fold that fails: the store after it still works, the failure is
	 * reported once, the deltas wait for the next fold. */
	exec_check("ALTER FUNCTION pn_fold_counts(integer) RENAME TO pn_fold_counts_away", NULL);
	make_rec(&b, "PID-FOLD", "", a.study, a.series);
	store_ok(&b.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	assert_int_equal(pn_index_fold_send(db), 0);
	make_rec(&c, "PID-FOLD", "", a.study, a.series);
	assert_int_equal(pn_index_store(db, &c.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(outcome, PN_INDEX_STORED);
	assert_int_equal(pn_index_fold_wait(db), -EIO);
	assert_non_null(strstr(pn_db_errmsg(db), "pn_fold_counts"));
	assert_int_equal(pn_index_fold_wait(db), 0);
	assert_int_equal(count1(series_n, a.series), 1);
	exec_check("ALTER FUNCTION pn_fold_counts_away(integer) RENAME TO pn_fold_counts", NULL);
	assert_int_equal(pn_index_fold_send(db), 0);
	assert_int_equal(pn_index_fold_wait(db), 0);
	assert_int_equal(count1(series_n, a.series), 3);
	v = query1(patient_n, NULL);
	assert_string_equal(v, "1/3");
	free(v);
}

/* Rows of `table` this connection's transaction updated since `before`:
 * PostgreSQL 15's "xact" counters also hold earlier transactions' updates
 * until the backend reports them, so a test reads them before and after
 * inside one transaction. */
static long updated_since(const char *table, long before)
{
	return count1("SELECT pg_stat_get_xact_tuples_updated($1::regclass)", table) - before;
}

/* A fold updates each patient and study row once however many of their
 * series it folds (migration 017): under 006 one fold of three new series
 * updated the patient and the study four times each, and a bulk fold left
 * a row in as many versions. Counted in the folding transaction itself
 * (updated_since), on the check connection. */
static void test_fold_updates_each_row_once(void **state)
{
	test_rec r[6];
	(void)state;
	make_rec(&r[0], "PID-ONCE", "", NULL, NULL);
	store_ok(&r[0].rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	for (int i = 1; i < 6; i++) {
		/* three series of one study, two instances each */
		make_rec(&r[i], "PID-ONCE", "", r[0].study, i % 2 ? r[i - 1].series : NULL);
		store_ok(&r[i].rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	}
	assert_int_equal(count1("SELECT count(DISTINCT series_fk) FROM series_count", NULL), 3);
	char *shard = query1("SELECT min(shard)::text FROM series_count", NULL);
	exec_check("BEGIN", NULL);
	long patients = updated_since("patient", 0), studies = updated_since("study", 0),
	     series = updated_since("series", 0);
	exec_check("SELECT pn_fold_counts($1::integer)", shard);
	free(shard);
	patients = updated_since("patient", patients);
	studies = updated_since("study", studies);
	series = updated_since("series", series);
	exec_check("COMMIT", NULL); /* before any assertion: the next tests share the connection */
	assert_int_equal(patients, 1);
	assert_int_equal(studies, 1);
	assert_int_equal(series, 3);
	char *v =
	    query1("SELECT p.n_studies || '/' || p.n_series || '/' || p.n_instances || ' ' || t.n_series || '/' ||"
	           " t.n_instances FROM patient p JOIN study t ON t.patient_fk = p.pk WHERE p.patient_id = 'PID-ONCE'",
	           NULL);
	assert_string_equal(v, "1/3/6 3/6");
	free(v);
	assert_int_equal(count1("SELECT count(*) FROM series WHERE n_instances = 2 AND study_fk ="
	                        " (SELECT pk FROM study WHERE study_uid = $1)",
	                        r[0].study),
	                 3);
}

/* A fold per PN_FOLD_EVERY stores, or once the first unfolded one is
 * PN_FOLD_LAG_MS old; pending says whether deltas wait. */
static void test_fold_note(void **state)
{
	test_rec a, b;
	const char *series_n = "SELECT n_instances FROM series WHERE series_uid = $1";

	(void)state;
	assert_false(pn_index_fold_pending(db)); /* nothing noted yet */
	make_rec(&a, "PID-NOTE", "", NULL, NULL);
	store_ok(&a.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	assert_int_equal(pn_index_fold_note(db), 0);
	assert_true(pn_index_fold_pending(db)); /* too early: nothing sent */
	assert_int_equal(pn_index_fold_wait(db), 0);
	assert_int_equal(count1(series_n, a.series), 0);

	/* the lag: the next store's note sends it */
	struct timespec ts = {.tv_nsec = (PN_FOLD_LAG_MS + 10) * 1000000L};
	nanosleep(&ts, NULL);
	make_rec(&b, "PID-NOTE", "", a.study, a.series);
	store_ok(&b.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	assert_int_equal(pn_index_fold_note(db), 0);
	assert_false(pn_index_fold_pending(db));
	assert_int_equal(pn_index_fold_wait(db), 0);
	assert_int_equal(count1(series_n, a.series), 2);

	/* the number: the PN_FOLD_EVERY-th note sends one (a fold with no
	 * deltas is harmless) */
	for (int i = 1; i < PN_FOLD_EVERY; i++) {
		assert_int_equal(pn_index_fold_note(db), 0);
		assert_true(pn_index_fold_pending(db));
	}
	assert_int_equal(pn_index_fold_note(db), 0);
	assert_false(pn_index_fold_pending(db));
	assert_int_equal(pn_index_fold_wait(db), 0);

	/* an explicit fold takes what waits */
	assert_int_equal(pn_index_fold_note(db), 0);
	assert_true(pn_index_fold_pending(db));
	assert_int_equal(pn_index_fold_send(db), 0);
	assert_false(pn_index_fold_pending(db));
	assert_int_equal(pn_index_fold_wait(db), 0);
}

/* Waits (bounded) until the backend named appname waits for a lock. */
static void wait_until_blocked(const char *appname)
{
	PGconn *watch = PQconnectdb(test_conninfo);
	const char *param = appname;

	assert_int_equal(PQstatus(watch), CONNECTION_OK);
	for (int i = 0; i < 500; i++) {
		PGresult *res = PQexecParams(watch,
		                             "SELECT 1 FROM pg_stat_activity"
		                             " WHERE application_name = $1 AND wait_event_type = 'Lock'",
		                             1, NULL, &param, NULL, NULL, 0);
		int n = PQntuples(res);

		PQclear(res);
		if (n == 1)
			break;
		nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
	}
	PQfinish(watch);
}

/* Retried after a deadlock the server broke by aborting us. */
static void test_deadlock_is_retried(void **state)
{
	char appname[64], *conninfo, *v;
	const char *params[2];
	test_rec first, again;
	PGresult *res;
	int status;
	pid_t pid;

	(void)state;
	make_rec(&first, "PID-DEADLOCK", "", NULL, NULL);
	store_ok(&first.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	make_rec(&again, "PID-DEADLOCK", "", first.study, NULL); /* into a new series */
	again.rec.sop_uid = first.sop;
	snprintf(appname, sizeof appname, "pn_test_deadlock_%ld", (long)getpid());
	assert_true(asprintf(&conninfo, "%s application_name=%s", test_conninfo, appname) > 0);

	/* We hold the instance; the child inserts the new series, then waits
	 * for the instance; we insert the same series: a cycle. */
	exec_check("BEGIN", NULL);
	exec_check("SELECT 1 FROM instance WHERE sop_uid = $1 FOR UPDATE", first.sop);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pn_index_outcome outcome;
		char *old_path = NULL;
		pn_db *mine;
		int r;

		if (pn_db_connect(conninfo, &mine, NULL, 0) != 0)
			_exit(100);
		r = pn_index_store(mine, &again.rec, PN_DUP_REPLACE, &outcome, &old_path);
		if (r != 0 || outcome != PN_INDEX_REPLACED || strcmp(pn_db_sqlstate(mine), "40P01") != 0) {
			fprintf(stderr, "deadlock child: %d outcome %d: %s\n", r, (int)outcome, pn_db_errmsg(mine));
			_exit(1);
		}
		_exit(0);
	}
	wait_until_blocked(appname);
	params[0] = again.series;
	params[1] = first.series;
	assert_int_equal(PQsendQueryParams(check,
	                                   "INSERT INTO series (study_fk, series_uid)"
	                                   " SELECT study_fk, $1 FROM series WHERE series_uid = $2",
	                                   2, NULL, params, NULL, NULL, 0),
	                 1);
	res = PQgetResult(check); /* once the child's transaction is aborted */
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	assert_null(PQgetResult(check));
	exec_check("ROLLBACK", NULL); /* lets the child's retry through */

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	v = query1("SELECT se.series_uid FROM instance i JOIN series se ON se.pk = i.series_fk"
	           " WHERE i.sop_uid = $1",
	           first.sop);
	assert_string_equal(v, again.series);
	free(v);
	free(conninfo);
}

/* Our backend, found by the application_name our conninfo sets. */
static char *backend_pid(const char *appname)
{
	return query1("SELECT pid FROM pg_stat_activity WHERE application_name = $1", appname);
}

static void terminate(const char *pid)
{
	char *v = query1("SELECT pg_terminate_backend($1::integer, 10000)", pid);

	assert_string_equal(v, "t");
	free(v);
}

/* A connection of its own, named so that its backend can be found. */
static pn_db *connect_named(const char *prefix, char appname[64])
{
	char *conninfo, err[256];
	pn_db *mine = NULL;

	snprintf(appname, 64, "%s_%ld", prefix, (long)getpid());
	assert_true(asprintf(&conninfo, "%s application_name=%s", test_conninfo, appname) > 0);
	if (pn_db_connect(conninfo, &mine, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	free(conninfo);
	return mine;
}

/* A named connection that stored `first` (a new patient) and whose
 * backend was then terminated; *ret_pid: that backend. */
static pn_db *stored_then_terminated(const char *prefix, const char *patient, test_rec *first, char appname[64],
                                     char **ret_pid)
{
	pn_index_outcome outcome;
	pn_db *mine = connect_named(prefix, appname);

	make_rec(first, patient, "", NULL, NULL);
	assert_int_equal(pn_index_store(mine, &first->rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	*ret_pid = backend_pid(appname);
	terminate(*ret_pid);
	return mine;
}

static void test_reconnect_after_terminate(void **state)
{
	char appname[64], *pid1, *pid2, *pid3;
	pn_db *mine = NULL;
	pn_index_outcome outcome;
	bool referenced;
	test_rec t, u;

	(void)state;
	mine = stored_then_terminated("pn_test_reconnect", "PID-RECONNECT", &t, appname, &pid1);

	/* The prepared statements died with the backend: re-prepared. */
	make_rec(&u, "PID-RECONNECT", "", t.study, t.series);
	if (pn_index_store(mine, &u.rec, PN_DUP_IGNORE, &outcome, NULL) != 0)
		fail_msg("store after terminate: %s", pn_db_errmsg(mine));
	assert_int_equal(outcome, PN_INDEX_STORED);
	pid2 = backend_pid(appname);
	assert_string_not_equal(pid1, pid2);

	terminate(pid2);
	assert_int_equal(pn_index_path_referenced(mine, u.path, &referenced), 0);
	assert_true(referenced);
	pid3 = backend_pid(appname);
	assert_string_not_equal(pid2, pid3);
	assert_int_equal(pn_db_ensure_connected(mine), 0);

	pn_db_free(mine);
	free(pid1);
	free(pid2);
	free(pid3);
}

/* Deltas a connection committed and could not fold before it died are
 * folded by the first fold on its replacement (pn_fold_orphans). */
static void test_fold_after_reconnect_takes_orphans(void **state)
{
	char appname[64], *pid;
	pn_db *mine = NULL;
	pn_index_outcome outcome;
	test_rec a, b, c;
	const char *series_n = "SELECT n_instances FROM series WHERE series_uid = $1";

	(void)state;
	mine = connect_named("pn_test_orphans", appname);

	make_rec(&a, "PID-ORPHANS", "", NULL, NULL);
	assert_int_equal(pn_index_store(mine, &a.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(outcome, PN_INDEX_STORED);
	assert_int_equal(pn_index_fold_send(mine), 0);
	assert_int_equal(pn_index_fold_wait(mine), 0);
	assert_int_equal(count1(series_n, a.series), 1);

	make_rec(&b, "PID-ORPHANS", "", a.study, a.series);
	assert_int_equal(pn_index_store(mine, &b.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(outcome, PN_INDEX_STORED);
	pid = backend_pid(appname);
	terminate(pid); /* before its fold: the delta is left behind */
	assert_int_equal(count1(series_n, a.series), 1);

	make_rec(&c, "PID-ORPHANS", "", a.study, a.series);
	if (pn_index_store(mine, &c.rec, PN_DUP_IGNORE, &outcome, NULL) != 0)
		fail_msg("store after terminate: %s", pn_db_errmsg(mine));
	assert_int_equal(outcome, PN_INDEX_STORED);
	assert_int_equal(pn_index_fold_send(mine), 0);
	assert_int_equal(pn_index_fold_wait(mine), 0);
	assert_int_equal(count1(series_n, a.series), 3);

	pn_db_free(mine);
	free(pid);
}

/* The ended connections' shards are folded in one pass (migration 017):
 * two orphaned shards of one patient update its row once, not once each. */
static void test_orphans_fold_together(void **state)
{
	char appname[2][64], *pid[2];
	pn_index_outcome outcome;
	test_rec first, r[2];
	(void)state;
	exec_check("SELECT pn_fold_orphans()", NULL); /* what earlier tests left */
	make_rec(&first, "PID-TOGETHER", "", NULL, NULL);
	store_ok(&first.rec, PN_DUP_IGNORE, PN_INDEX_STORED, NULL);
	assert_int_equal(pn_index_fold_send(db), 0);
	assert_int_equal(pn_index_fold_wait(db), 0);
	for (int i = 0; i < 2; i++) {
		pn_db *mine = connect_named(i ? "pn_test_together_b" : "pn_test_together_a", appname[i]);
		make_rec(&r[i], "PID-TOGETHER", "", first.study, NULL); /* a new series each */
		assert_int_equal(pn_index_store(mine, &r[i].rec, PN_DUP_IGNORE, &outcome, NULL), 0);
		assert_int_equal(outcome, PN_INDEX_STORED);
		pid[i] = backend_pid(appname[i]);
		terminate(pid[i]); /* before its fold */
		pn_db_free(mine);
	}
	exec_check("BEGIN", NULL);
	long patients = updated_since("patient", 0), studies = updated_since("study", 0);
	long folded = count1("SELECT pn_fold_orphans()", NULL);
	patients = updated_since("patient", patients);
	studies = updated_since("study", studies);
	exec_check("COMMIT", NULL);
	assert_int_equal(folded, 2);
	assert_int_equal(patients, 1);
	assert_int_equal(studies, 1);
	char *v = query1("SELECT p.n_series || '/' || p.n_instances || ' ' || t.modalities FROM patient p"
	                 " JOIN study t ON t.patient_fk = p.pk WHERE p.patient_id = 'PID-TOGETHER'",
	                 NULL);
	assert_string_equal(v, "3/3 CT");
	free(v);
	free(pid[0]);
	free(pid[1]);
}

/* A backend that died while its connection was idle is found out by the
 * pipelined first step: it falls back to the ordinary one, which
 * reconnects, and the store succeeds. */
static void test_pipelined_store_after_terminate(void **state)
{
	char appname[64], *pid;
	pn_db *mine = NULL;
	pn_index_outcome outcome;
	test_rec a, b;

	(void)state;
	mine = stored_then_terminated("pn_test_pipeline", "PID-PIPE", &a, appname, &pid);

	make_rec(&b, "PID-PIPE", "", a.study, a.series);
	assert_int_equal(pn_index_begin_send(mine, &b.rec), 1);
	if (pn_index_begin_finish(mine, &b.rec, PN_DUP_IGNORE, &outcome, NULL) != 0)
		fail_msg("begin after terminate: %s", pn_db_errmsg(mine));
	assert_int_equal(outcome, PN_INDEX_STORED);
	assert_int_equal(pn_index_commit_send(mine), 0);
	assert_int_equal(pn_index_commit_wait(mine), 0);
	assert_int_equal(count1("SELECT count(*) FROM instance WHERE sop_uid = $1", b.sop), 1);
	pn_db_free(mine);
	free(pid);
}

/* A worker's connection holds its lock from its first statement on;
 * another connection can take it only once that session has ended. */
/* What `SHOW name` answers on the pn_db's own session. */
static void session_setting(pn_db *d, const char *name, char *out, size_t outlen)
{
	char sql[96];
	snprintf(sql, sizeof sql, "SHOW %s", name);
	PGresult *res = PQexec(d->conn, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(d->conn));
	snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
}

/* synchronous_commit off would let a COMMIT answer before its WAL is on
 * disk: a session raises it to on, at connect and at every reconnect; the
 * site's other levels stay. */
static void test_synchronous_commit_never_off(void **state)
{
	static const struct {
		const char *set, *want;
	} cases[] = {{"off", "on"}, {"local", "local"}, {"remote_write", "remote_write"}, {"on", "on"}};
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char conninfo[1024], err[256], got[32];
		pn_db *d = NULL;
		snprintf(conninfo, sizeof conninfo, "%s options='-c synchronous_commit=%s'", test_conninfo,
		         cases[i].set);
		if (pn_db_connect(conninfo, &d, err, sizeof err) != 0)
			fail_msg("connect: %s", err);
		session_setting(d, "synchronous_commit", got, sizeof got);
		assert_string_equal(got, cases[i].want);
		pn_db_restart(d); /* a new session: the conninfo's options again */
		session_setting(d, "synchronous_commit", got, sizeof got);
		assert_string_equal(got, cases[i].want);
		pn_db_free(d);
	}
}

static void test_worker_lock(void **state)
{
	pn_db *mine = NULL;
	pn_index_outcome outcome;
	bool taken = true;
	test_rec a, b;
	char err[256];
	const int pid = 424242;

	(void)state;
	if (pn_db_connect(test_conninfo, &mine, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	pn_index_set_worker(mine, "test-wlock", pid);
	pn_index_set_worker(db, "test-wlock", 0); /* the same node's locks */
	make_rec(&a, "PID-WLOCK", "", NULL, NULL);
	assert_int_equal(pn_index_store(mine, &a.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(pn_index_worker_take(db, false, pid, 0, &taken), 0);
	assert_false(taken);
	/* held: the pipelined path is open to it */
	make_rec(&b, "PID-WLOCK", "", a.study, a.series);
	assert_int_equal(pn_index_begin_send(mine, &b.rec), 1);
	assert_int_equal(pn_index_begin_finish(mine, &b.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	pn_index_rollback(mine);
	assert_int_equal(pn_index_worker_take(db, false, pid, 100, &taken), 0);
	assert_false(taken);
	/* a connection whose lock another session holds stays off it */
	pn_db *twin = NULL;
	test_rec c;
	if (pn_db_connect(test_conninfo, &twin, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	pn_index_set_worker(twin, "test-wlock", pid);
	make_rec(&c, "PID-WLOCK", "", a.study, a.series);
	assert_int_equal(pn_index_store(twin, &c.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(pn_index_begin_send(twin, &c.rec), 0);
	pn_db_free(twin);
	pn_db_free(mine); /* its backend goes, and the lock with it */
	assert_int_equal(pn_index_worker_take(db, false, pid, 5000, &taken), 0);
	assert_true(taken);
	/* another node's worker of the same pid: a lock of its own */
	pn_db *other = NULL;
	bool other_taken = false;
	if (pn_db_connect(test_conninfo, &other, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	pn_index_set_worker(other, "test-wlock-2", 0);
	assert_int_equal(pn_index_worker_take(other, false, pid, 0, &other_taken), 0);
	assert_true(other_taken);
	pn_db_free(other);
	pn_index_worker_release(db, false, pid);
	pn_index_set_worker(db, NULL, 0);
	/* PQfinish does not wait for the backend to end: other's lock goes
	 * with it a moment later */
	long left = 1;
	for (int i = 0; i < 100 && left; i++) {
		left = count1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1", "424242");
		if (left)
			usleep(50 * 1000);
	}
	assert_int_equal(left, 0);
}

/* A node's workers hold its node lock shared; while another session
 * holds it exclusively (settling that node's files), they store nothing. */
static void test_node_lock(void **state)
{
	pn_db *worker = NULL, *settler = NULL;
	pn_index_outcome outcome;
	test_rec a;
	char err[256];
	int num = 0, num2 = 0;
	bool taken = false;

	(void)state;
	if (pn_db_connect(test_conninfo, &worker, err, sizeof err) != 0 ||
	    pn_db_connect(test_conninfo, &settler, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	assert_int_equal(pn_node_register(settler, "test-nlock", true, &num), 0);
	assert_int_equal(pn_node_register(settler, "test-nlock", false, &num2), 0);
	assert_int_equal(num, num2);
	assert_int_equal(pn_node_lock(settler, num, 0, &taken), 0);
	assert_true(taken);
	pn_index_set_worker(worker, "test-nlock", 31337);
	make_rec(&a, "PID-NLOCK", "", NULL, NULL);
	assert_true(pn_index_store(worker, &a.rec, PN_DUP_IGNORE, &outcome, NULL) < 0);
	pn_node_unlock(settler, num);
	assert_int_equal(pn_index_store(worker, &a.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	/* held shared by the worker now: no exclusive hold for anyone else */
	assert_int_equal(pn_node_lock(settler, num, 100, &taken), 0);
	assert_false(taken);
	pn_db_free(worker);
	assert_int_equal(pn_node_lock(settler, num, 5000, &taken), 0);
	assert_true(taken);
	/* shared from an exclusive hold, without a moment between */
	assert_int_equal(pn_node_share(settler, num), 0);
	char num_text[16];
	snprintf(num_text, sizeof num_text, "%d", num);
	assert_int_equal(count1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1347309105"
	                        " AND objid = $1::oid AND mode = 'ShareLock' AND granted",
	                        num_text),
	                 1);
	assert_int_equal(count1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1347309105"
	                        " AND objid = $1::oid AND mode = 'ExclusiveLock'",
	                        num_text),
	                 0);
	pn_db_free(settler);
}

static bool files_gone(void *arg)
{
	(*(int *)arg)++;
	return false;
}

/* The keeper's hold (pn_node_hold): taken once, then seen held, never
 * stacked; refused while another session holds the lock exclusively. A
 * worker whose files check fails stores nothing on that connection's first
 * call, and goes on afterwards. */
static void test_node_hold(void **state)
{
	pn_db *keeper = NULL, *settler = NULL, *worker = NULL;
	char err[256];
	int num = 0, asked = 0;
	bool held = false, again = false, taken = false;
	pn_index_outcome outcome;
	test_rec a;

	(void)state;
	if (pn_db_connect(test_conninfo, &keeper, err, sizeof err) != 0 ||
	    pn_db_connect(test_conninfo, &settler, err, sizeof err) != 0 ||
	    pn_db_connect(test_conninfo, &worker, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	assert_int_equal(pn_node_register(settler, "test-nhold", true, &num), 0);
	assert_int_equal(pn_node_lock(settler, num, 0, &taken), 0);
	assert_true(taken);
	assert_int_equal(pn_node_hold(keeper, num, &held, &again), 0);
	assert_false(held);
	pn_node_unlock(settler, num);
	assert_int_equal(pn_node_hold(keeper, num, &held, &again), 0);
	assert_true(held && again);
	assert_int_equal(pn_node_hold(keeper, num, &held, &again), 0);
	assert_true(held && !again);
	char num_text[16];
	snprintf(num_text, sizeof num_text, "%d", num);
	assert_int_equal(count1("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1347309105"
	                        " AND objid = $1::oid AND granted",
	                        num_text),
	                 1);
	assert_int_equal(pn_node_lock(settler, num, 0, &taken), 0);
	assert_false(taken);

	pn_index_set_worker(worker, "test-nhold", 31338);
	pn_index_set_files_check(worker, files_gone, &asked);
	make_rec(&a, "PID-NHOLD", "", NULL, NULL);
	assert_true(pn_index_store(worker, &a.rec, PN_DUP_IGNORE, &outcome, NULL) < 0);
	assert_int_equal(asked, 1);
	assert_int_equal(pn_index_store(worker, &a.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(asked, 1); /* once a connection */
	pn_db_free(worker);
	pn_db_free(keeper);
	pn_db_free(settler);
}

/* The id of an open storing transaction, asked about on another
 * connection: in progress, then committed; one rolled back: aborted. The
 * pipelined first step and a replacing UPDATE record it too. */
static void test_xact_outcome(void **state)
{
	pn_db *other = NULL;
	pn_index_outcome outcome;
	bool committed = false;
	test_rec a, b, c;
	char xa[32], xb[32], err[256], *old = NULL;

	(void)state;
	if (pn_db_connect(test_conninfo, &other, err, sizeof err) != 0)
		fail_msg("connect: %s", err);
	make_rec(&a, "PID-XACT", "", NULL, NULL);
	assert_int_equal(pn_index_begin(db, &a.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(outcome, PN_INDEX_STORED);
	snprintf(xa, sizeof xa, "%s", pn_index_xact(db));
	assert_true(xa[0] && strspn(xa, "0123456789") == strlen(xa));
	assert_int_equal(pn_index_xact_committed(other, xa, &committed), -EAGAIN);
	assert_int_equal(pn_index_commit_send(db), 0);
	assert_int_equal(pn_index_commit_wait(db), 0);
	assert_int_equal(pn_index_xact_committed(other, xa, &committed), 0);
	assert_true(committed);

	make_rec(&b, "PID-XACT", "", a.study, a.series);
	assert_int_equal(pn_index_begin_send(db, &b.rec), 1);
	assert_int_equal(pn_index_begin_finish(db, &b.rec, PN_DUP_IGNORE, &outcome, NULL), 0);
	assert_int_equal(outcome, PN_INDEX_STORED);
	snprintf(xb, sizeof xb, "%s", pn_index_xact(db));
	assert_true(xb[0] && strcmp(xb, xa) != 0);
	pn_index_rollback(db);
	assert_int_equal(pn_index_xact_committed(other, xb, &committed), 0);
	assert_false(committed);

	make_rec(&c, "PID-XACT", "", a.study, a.series);
	c.rec.sop_uid = a.sop;
	assert_int_equal(pn_index_begin(db, &c.rec, PN_DUP_REPLACE, &outcome, &old), 0);
	assert_int_equal(outcome, PN_INDEX_REPLACED);
	free(old);
	assert_true(pn_index_xact(db)[0] && strcmp(pn_index_xact(db), xb) != 0);
	pn_index_rollback(db);

	/* an id never handed out is "in the future", as a transaction a
	 * promoted standby never received: the server does not know it */
	assert_int_equal(pn_index_xact_committed(other, "999999999999", &committed), -ENOENT);
	pn_db_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_migrate_concurrently_then_twice),
	    cmocka_unit_test_setup(test_store_new, setup_migrated),
	    cmocka_unit_test_setup(test_duplicate_policies, setup_migrated),
	    cmocka_unit_test_setup(test_study_of_another_patient, setup_migrated),
	    cmocka_unit_test_setup(test_series_of_another_study, setup_migrated),
	    cmocka_unit_test_setup(test_issuer_is_part_of_the_key, setup_migrated),
	    cmocka_unit_test_setup(test_parallel_writers_one_hierarchy, setup_migrated),
	    cmocka_unit_test_setup(test_invalid_value_is_eio, setup_migrated),
	    cmocka_unit_test_setup(test_deadlock_is_retried, setup_migrated),
	    cmocka_unit_test_setup(test_reconnect_after_terminate, setup_migrated),
	    cmocka_unit_test_setup(test_fold_async, setup_migrated),
	    cmocka_unit_test_setup(test_fold_note, setup_migrated),
	    cmocka_unit_test_setup(test_fold_updates_each_row_once, setup_migrated),
	    cmocka_unit_test_setup(test_fold_after_reconnect_takes_orphans, setup_migrated),
	    cmocka_unit_test_setup(test_orphans_fold_together, setup_migrated),
	    cmocka_unit_test_setup(test_xact_outcome, setup_migrated),
	    cmocka_unit_test_setup(test_synchronous_commit_never_off, setup_migrated),
	    cmocka_unit_test_setup(test_worker_lock, setup_migrated),
	    cmocka_unit_test_setup(test_node_lock, setup_migrated),
	    cmocka_unit_test_setup(test_node_hold, setup_migrated),
	    cmocka_unit_test_setup(test_pipelined_store_after_terminate, setup_migrated),
	};
	testenv e = {0};
	int failed = testenv_open(&e, "test_db_index");
	if (failed == 0) {
		test_conninfo = e.conninfo;
		db = e.db;
		check = e.check;
		failed = cmocka_run_group_tests(tests, NULL, NULL);
	}
	return testenv_close(&e, "test_db_index", failed);
}
