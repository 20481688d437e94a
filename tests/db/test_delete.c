/* db/delete.c, hold.c and garbage.c against a real PostgreSQL: each
 * level's rows go with the parents they leave empty and their paths are
 * queued; the kept counts stay exact; a held study is not deleted; stores
 * into a study that is being deleted again and again all succeed and
 * every stored file ends either named by a row or queued; the queue is
 * walked in batches. PN_TEST_PG_CONNINFO as for test_db_index. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "db.h"
#include "delete.h"
#include "garbage.h"
#include "hold.h"
#include "index.h"
#include "testdb.h"
#include "testenv.h"
#include "testrec.h"

enum { STORERS = 4, STORES_EACH = 40, DELETES = 25 };

static char *test_conninfo;
static pn_db *db;
static PGconn *check;

static long count(const char *sql, const char *param)
{
	PGresult *res = PQexecParams(check, sql, param ? 1 : 0, NULL, &param, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		fail_msg("\"%s\": %s", sql, PQresultErrorMessage(res));
	long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

static void sql(const char *text)
{
	PGresult *res = PQexec(check, text);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("\"%s\": %s", text, PQresultErrorMessage(res));
	PQclear(res);
}

/* Rows whose kept counts differ from the rows, and empty parents, once
 * every connection's deltas are folded (the integration tests' check). */
static long wrong(void)
{
	for (int i = 0;
	     i < 100 && count("SELECT (SELECT count(*) FROM series_count) + (SELECT count(*) FROM study_count)"
	                      " + (SELECT count(*) FROM patient_count)",
	                      NULL) > 0;
	     i++) {
		sql("SELECT pn_fold_orphans()");
		struct timespec ts = {.tv_nsec = 20 * 1000000L}; /* a backend that is going */
		nanosleep(&ts, NULL);
	}
	return count(
	    "SELECT (SELECT count(*) FROM series s WHERE s.n_instances <>"
	    "   (SELECT count(*) FROM instance i WHERE i.series_fk = s.pk) OR s.n_instances = 0)"
	    " + (SELECT count(*) FROM study t WHERE t.n_series <> (SELECT count(*) FROM series s"
	    "   WHERE s.study_fk = t.pk) OR t.n_series = 0 OR t.n_instances <> (SELECT count(*) FROM instance i"
	    "   JOIN series s ON s.pk = i.series_fk WHERE s.study_fk = t.pk)"
	    "   OR t.modalities IS DISTINCT FROM (SELECT string_agg(DISTINCT x.modality, '\\' ORDER BY"
	    "   x.modality) FROM series x WHERE x.study_fk = t.pk))"
	    " + (SELECT count(*) FROM patient p WHERE p.n_studies <> (SELECT count(*) FROM study t"
	    "   WHERE t.patient_fk = p.pk) OR p.n_studies = 0 OR p.n_series <> (SELECT count(*) FROM series s"
	    "   JOIN study t ON t.pk = s.study_fk WHERE t.patient_fk = p.pk) OR p.n_instances <>"
	    "   (SELECT count(*) FROM instance i JOIN series s ON s.pk = i.series_fk JOIN study t"
	    "   ON t.pk = s.study_fk WHERE t.patient_fk = p.pk))"
	    " + (SELECT count(*) FROM series_count) + (SELECT count(*) FROM study_count)"
	    " + (SELECT count(*) FROM patient_count)",
	    NULL);
}

static void store(test_rec *t, const char *modality)
{
	pn_index_outcome outcome;
	t->rec.modality = modality;
	if (pn_index_store(db, &t->rec, PN_DUP_IGNORE, &outcome, NULL) != 0 || outcome != PN_INDEX_STORED)
		fail_msg("store: %s", pn_db_errmsg(db));
	assert_int_equal(pn_index_fold_send(db), 0);
	assert_int_equal(pn_index_fold_wait(db), 0);
}

static int deleted(pn_delete_level level, const char *key, const char *issuer, pn_delete_summary *s)
{
	pn_delete_target t = {.level = level, .key = key, .issuer = issuer};
	return pn_delete_run(db, &t, s);
}

static int setup(void **state)
{
	(void)state;
	if (pn_db_migrate(db) != 0)
		return -1;
	sql("DELETE FROM storage_garbage");
	return 0;
}

static void test_levels(void **state)
{
	(void)state;
	/* P: study A (series CT of 3, series MR of 1), study B (1) */
	test_rec a1, a2, a3, m1, b1;
	make_rec(&a1, "PID-DEL", "ISS", NULL, NULL);
	store(&a1, "CT");
	make_rec(&a2, "PID-DEL", "ISS", a1.study, a1.series);
	store(&a2, "CT");
	make_rec(&a3, "PID-DEL", "ISS", a1.study, a1.series);
	store(&a3, "CT");
	make_rec(&m1, "PID-DEL", "ISS", a1.study, NULL);
	store(&m1, "MR");
	make_rec(&b1, "PID-DEL", "ISS", NULL, NULL);
	store(&b1, "CT");
	assert_int_equal(wrong(), 0);

	pn_delete_summary s, p;
	pn_delete_target t = {.level = PN_DELETE_STUDY, .key = a1.study};
	assert_int_equal(pn_delete_preview(db, &t, &p), 1);
	assert_int_equal(p.instances, 4);
	assert_int_equal(p.series, 2);
	assert_int_equal(p.n_study, 1);
	assert_string_equal(p.study[0].modalities, "CT\\MR");
	assert_false(p.patient_whole);
	pn_delete_summary_free(&p);

	/* an instance, the series keeping two */
	assert_int_equal(deleted(PN_DELETE_INSTANCE, a2.sop, NULL, &s), 1);
	assert_int_equal(s.instances, 1);
	assert_int_equal(s.series, 0);
	assert_false(s.study[0].whole);
	pn_delete_summary_free(&s);
	assert_int_equal(count("SELECT count(*) FROM storage_garbage WHERE path = $1", a2.path), 1);
	assert_int_equal(wrong(), 0);
	/* the only instance of a series: it goes, the study keeps CT */
	assert_int_equal(deleted(PN_DELETE_INSTANCE, m1.sop, NULL, &s), 1);
	assert_int_equal(s.series, 1);
	pn_delete_summary_free(&s);
	assert_int_equal(count("SELECT count(*) FROM study WHERE study_uid = $1 AND modalities = 'CT'", a1.study), 1);
	assert_int_equal(wrong(), 0);
	/* a series that is its study's last: the study goes, the patient stays */
	assert_int_equal(deleted(PN_DELETE_SERIES, a1.series, NULL, &s), 1);
	assert_true(s.study[0].whole);
	assert_false(s.patient_whole);
	assert_int_equal(s.instances, 2);
	pn_delete_summary_free(&s);
	assert_int_equal(count("SELECT count(*) FROM study WHERE study_uid = $1", a1.study), 0);
	assert_int_equal(wrong(), 0);
	/* the patient key is (PatientID, issuer) */
	assert_int_equal(deleted(PN_DELETE_PATIENT, "PID-DEL", "", &s), 0);
	assert_int_equal(deleted(PN_DELETE_PATIENT, "PID-DEL", "ISS", &s), 1);
	assert_true(s.patient_whole);
	assert_int_equal(s.studies, 1);
	pn_delete_summary_free(&s);
	assert_int_equal(count("SELECT count(*) FROM patient WHERE patient_id = 'PID-DEL'", NULL), 0);
	assert_int_equal(count("SELECT count(*) FROM storage_garbage", NULL), 5);
	assert_int_equal(deleted(PN_DELETE_STUDY, a1.study, NULL, &s), 0);
	assert_int_equal(wrong(), 0);
}

static void test_held_study_is_not_deleted(void **state)
{
	(void)state;
	test_rec a;
	make_rec(&a, "PID-HOLD", "", NULL, NULL);
	store(&a, "CT");
	pn_db *retriever = NULL;
	char err[256];
	assert_int_equal(pn_db_connect(test_conninfo, &retriever, err, sizeof(err)), 0);
	pn_hold h = {0};
	assert_int_equal(pn_hold_study(&h, a.study), 0);
	assert_int_equal(pn_hold_take(retriever, &h), 0);
	pn_delete_summary s;
	assert_int_equal(deleted(PN_DELETE_INSTANCE, a.sop, NULL, &s), -EBUSY);
	assert_int_equal(count("SELECT count(*) FROM instance WHERE sop_uid = $1", a.sop), 1);
	/* held by PatientID: the same */
	pn_hold_release(retriever, &h);
	assert_int_equal(pn_hold_patient(&h, "PID-HOLD"), 0);
	assert_int_equal(pn_hold_take(retriever, &h), 0);
	assert_int_equal(deleted(PN_DELETE_STUDY, a.study, NULL, &s), -EBUSY);
	pn_hold_release(retriever, &h);
	assert_int_equal(deleted(PN_DELETE_STUDY, a.study, NULL, &s), 1);
	pn_delete_summary_free(&s);
	pn_db_free(retriever);
	assert_int_equal(wrong(), 0);
}

/* What the racing processes share (MAP_SHARED). */
typedef struct {
	test_rec base;
	atomic_int stored, refused, deletes;
} race;

/* Stores into one study (two series), folding after each as the node
 * does. A store that keeps meeting parents deleted under it is refused
 * once its retries are spent (the SCU sends it again): never anything
 * else. */
static int storer(pn_db *mine, int i, void *arg)
{
	race *rc = arg;
	const test_rec *base = &rc->base;
	for (int k = 0; k < STORES_EACH; k++) {
		test_rec t;
		make_rec(&t, base->patient_id, base->issuer, base->study, base->series);
		char series[sizeof base->series + 4], path[sizeof t.path + 16];
		snprintf(series, sizeof(series), "%s.%d", base->series, i % 2);
		snprintf(path, sizeof(path), "%s.%d", t.path, i);
		t.rec.series_uid = series;
		t.rec.path = path;
		t.rec.modality = i % 2 ? "MR" : "CT";
		pn_index_outcome outcome;
		int r = pn_index_store(mine, &t.rec, PN_DUP_IGNORE, &outcome, NULL);
		if (r == -EIO && strcmp(pn_db_sqlstate(mine), "23503") == 0) {
			atomic_fetch_add(&rc->refused, 1);
			continue;
		}
		if (r != 0 || outcome != PN_INDEX_STORED) {
			fprintf(stderr, "storer %d: store %d: %d outcome %d: %s\n", i, k, r, (int)outcome,
			        pn_db_errmsg(mine));
			return 1;
		}
		atomic_fetch_add(&rc->stored, 1);
		pn_index_fold_send(mine);
		pn_index_fold_wait(mine); /* a fold that lost a deadlock leaves its deltas for the next */
	}
	return 0;
}

static int deleter(pn_db *mine, int i, void *arg)
{
	race *rc = arg;
	const test_rec *base = &rc->base;
	(void)i;
	int done = 0;
	for (int k = 0; k < DELETES; k++) {
		pn_delete_target t = {.level = k % 3 == 0 ? PN_DELETE_PATIENT : PN_DELETE_STUDY,
		                      .key = k % 3 == 0 ? base->patient_id : base->study,
		                      .issuer = base->issuer};
		pn_delete_summary s;
		int r = pn_delete_run(mine, &t, &s);
		if (r < 0) {
			fprintf(stderr, "deleter: %d: %s\n", r, pn_db_errmsg(mine));
			return 1;
		}
		done += r;
		pn_delete_summary_free(&s);
		struct timespec ts = {.tv_nsec = 5 * 1000000L};
		nanosleep(&ts, NULL);
	}
	atomic_store(&rc->deletes, done);
	return 0;
}

static int race_worker(pn_db *mine, int i, void *arg)
{
	return i == STORERS ? deleter(mine, i, arg) : storer(mine, i, arg);
}

static void test_stores_while_deleting(void **state)
{
	(void)state;
	race *rc = mmap(NULL, sizeof(*rc), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(rc != MAP_FAILED);
	memset(rc, 0, sizeof(*rc));
	make_rec(&rc->base, "PID-RACE", "ISS", NULL, NULL); /* series: base.series + ".0" / ".1" */
	assert_int_equal(run_forked(test_conninfo, STORERS + 1, race_worker, rc), STORERS + 1);
	long kept = count("SELECT count(*) FROM instance i JOIN series s ON s.pk = i.series_fk JOIN study t"
	                  " ON t.pk = s.study_fk WHERE t.study_uid = $1",
	                  rc->base.study);
	long queued = count("SELECT count(*) FROM storage_garbage", NULL);
	int stored = atomic_load(&rc->stored), refused = atomic_load(&rc->refused);
	fprintf(stderr, "race: %d stored (%d refused), %d deletes, %ld instances kept, %ld files queued\n", stored,
	        refused, atomic_load(&rc->deletes), kept, queued);
	/* every stored file either named or queued, nothing else */
	assert_int_equal(stored + refused, STORERS * STORES_EACH);
	assert_int_equal(kept + queued, stored);
	assert_true(atomic_load(&rc->deletes) > 0);
	assert_true(refused < STORERS * STORES_EACH / 4);
	assert_int_equal(wrong(), 0);
	munmap(rc, sizeof(*rc));
}

static void test_garbage_walk(void **state)
{
	(void)state;
	sql("INSERT INTO storage_garbage (path) SELECT 'zz/' || lpad(n::text, 4, '0') FROM generate_series(1, 600) n");
	test_rec a;
	make_rec(&a, "PID-GARBAGE", "", NULL, NULL);
	store(&a, "CT");
	const char *p[] = {a.path};
	PGresult *res =
	    PQexecParams(check, "INSERT INTO storage_garbage (path) VALUES ($1)", 1, NULL, p, NULL, NULL, 0);
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	long long n = 0;
	assert_int_equal(pn_garbage_count(db, &n), 0);
	assert_int_equal(n, 601);
	char *after = strdup("");
	size_t seen = 0, batches = 0;
	for (;;) {
		char **paths;
		size_t got;
		assert_int_equal(pn_garbage_next(db, after, 256, &paths, &got), 0);
		if (got == 0) {
			pn_garbage_free(paths, got);
			break;
		}
		for (size_t i = 0; i < got; i++)
			assert_string_not_equal(paths[i], a.path); /* a row names it: never handed out */
		seen += got;
		batches++;
		free(after);
		after = strdup(paths[got - 1]);
		if (batches == 1)
			assert_int_equal(pn_garbage_done(db, (const char *const *)paths, got), 0);
		pn_garbage_free(paths, got);
	}
	free(after);
	assert_int_equal(seen, 600);
	assert_int_equal(batches, 3);
	assert_int_equal(count("SELECT count(*) FROM storage_garbage", NULL), 601 - 256);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_levels, setup),
	    cmocka_unit_test_setup(test_held_study_is_not_deleted, setup),
	    cmocka_unit_test_setup(test_stores_while_deleting, setup),
	    cmocka_unit_test_setup(test_garbage_walk, setup),
	};
	testenv e = {0};
	int failed = testenv_open(&e, "test_db_delete");
	if (failed == 0) {
		test_conninfo = e.conninfo;
		db = e.db;
		check = e.check;
		failed = cmocka_run_group_tests(tests, NULL, NULL);
	}
	return testenv_close(&e, "test_db_delete", failed);
}
