/* db/commitment.c against a real PostgreSQL: a request is recorded with its
 * references in order; the same request again is a retry (result and
 * attempts reset), another with the same Transaction UID is refused; the
 * result joins the index; a claim is a lease that two senders never share
 * (FOR UPDATE SKIP LOCKED); finish and reschedule move the row.
 * PN_TEST_PG_CONNINFO as for test_db_index. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "commitment.h"
#include "db.h"
#include "testenv.h"

static char *test_conninfo;
static pn_db *db;
static PGconn *check;

static char *value(const char *sql, const char *param)
{
	PGresult *res = PQexecParams(check, sql, param ? 1 : 0, NULL, &param, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		fail_msg("\"%s\": %s", sql, PQresultErrorMessage(res));
	static char buf[256];
	snprintf(buf, sizeof(buf), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return buf;
}

static void sql(const char *text)
{
	PGresult *res = PQexec(check, text);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("\"%s\": %s", text, PQresultErrorMessage(res));
	PQclear(res);
}

/* A db/ call's result, with its error text when it failed. */
static long long ok(long long r)
{
	if (r < 0 && *pn_db_errmsg(db))
		print_error("db: %s\n", pn_db_errmsg(db));
	return r;
}

static int setup(void **state)
{
	(void)state;
	if (pn_db_migrate(db) != 0)
		return -1;
	sql("DELETE FROM commitment");
	return 0;
}

static const pn_commit_ref refs[] = {
    {"1.2.840.10008.5.1.4.1.1.7", "1.2.3.1"},
    {"1.2.840.10008.5.1.4.1.1.7", "1.2.3.2"},
    {"1.2.840.10008.5.1.4.1.1.2", "1.2.3.3"},
};

static void test_record_retry_duplicate(void **state)
{
	(void)state;
	long long pk = 0, pk2 = 0;
	assert_int_equal(ok(pn_commit_record(db, "2.25.1", "MODALITY", refs, 3, 60, &pk)), 0);
	assert_string_equal(value("SELECT string_agg(sop_uid, ',' ORDER BY ord) FROM commitment_item", NULL),
	                    "1.2.3.1,1.2.3.2,1.2.3.3");
	/* claimed by the recorder: not due for a sender */
	pn_commit_job job;
	double wait = 0;
	assert_int_equal(ok(pn_commit_claim(db, 60, &job, &wait)), 0);
	assert_true(wait > 50);

	pn_commit_item items[3] = {{0}};
	items[1].failure_reason = 0x0112;
	assert_int_equal(ok(pn_commit_set_result(db, pk, items, 3)), 0);
	assert_string_equal(value("SELECT event_type FROM commitment", NULL), "2");
	assert_string_equal(value("SELECT string_agg(coalesce(failure_reason, 0)::text, ',' ORDER BY ord)"
	                          " FROM commitment_item",
	                          NULL),
	                    "0,274,0");

	/* the same again: a retry, its result forgotten */
	assert_int_equal(ok(pn_commit_record(db, "2.25.1", "MODALITY", refs, 3, 60, &pk2)), 1);
	assert_int_equal(pk2, pk);
	assert_string_equal(value("SELECT coalesce(event_type, 0) FROM commitment", NULL), "0");
	assert_string_equal(value("SELECT count(failure_reason) FROM commitment_item", NULL), "0");
	/* another AE, other references, fewer references: taken */
	assert_int_equal(ok(pn_commit_record(db, "2.25.1", "OTHER", refs, 3, 60, &pk2)), -EEXIST);
	assert_int_equal(ok(pn_commit_record(db, "2.25.1", "MODALITY", refs, 2, 60, &pk2)), -EEXIST);
	const pn_commit_ref swapped[] = {refs[1], refs[0], refs[2]};
	assert_int_equal(ok(pn_commit_record(db, "2.25.1", "MODALITY", swapped, 3, 60, &pk2)), -EEXIST);
	assert_string_equal(value("SELECT count(*) FROM commitment_item", NULL), "3");
}

static void test_items_join_index(void **state)
{
	(void)state;
	long long pk = 0;
	assert_int_equal(ok(pn_commit_record(db, "2.25.2", "MODALITY", refs, 3, 0, &pk)), 0);
	pn_commit_item *items = NULL;
	size_t n = 0;
	int event_type = -1;
	assert_int_equal(ok(pn_commit_items(db, pk, &items, &n, &event_type)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(event_type, 0);
	assert_string_equal(items[2].sop_uid, "1.2.3.3");
	assert_null(items[0].stored_class); /* nothing stored */
	assert_null(items[0].path);
	pn_commit_items_free(items, n);
	assert_int_equal(ok(pn_commit_items(db, pk + 1000, &items, &n, &event_type)), -ENOENT);
}

static void test_claim_lease(void **state)
{
	(void)state;
	long long a = 0, b = 0;
	assert_int_equal(ok(pn_commit_record(db, "2.25.3", "A", refs, 1, 0, &a)), 0);
	assert_int_equal(ok(pn_commit_record(db, "2.25.4", "B", refs, 1, 0, &b)), 0);
	sql("UPDATE commitment SET next_attempt_at = now() - interval '1 minute' WHERE transaction_uid = '2.25.3'");

	/* A row locked by another transaction is skipped, not waited for. */
	sql("BEGIN");
	sql("SELECT 1 FROM commitment WHERE transaction_uid = '2.25.3' FOR UPDATE");
	pn_commit_job job;
	double wait = -2;
	assert_int_equal(ok(pn_commit_claim(db, 60, &job, &wait)), 1);
	assert_int_equal(job.pk, b);
	sql("ROLLBACK");
	assert_int_equal(ok(pn_commit_claim(db, 60, &job, &wait)), 1);
	assert_int_equal(job.pk, a);
	assert_string_equal(job.calling_ae, "A");
	assert_int_equal(job.attempts, 0);
	assert_false(job.has_result);
	/* both leased now */
	assert_int_equal(ok(pn_commit_claim(db, 60, &job, &wait)), 0);
	assert_true(wait > 50 && wait <= 60);

	/* rescheduled at once: due again, the attempt counted */
	assert_int_equal(ok(pn_commit_reschedule(db, a, 0, "connection refused")), 0);
	assert_int_equal(ok(pn_commit_claim(db, 60, &job, &wait)), 1);
	assert_int_equal(job.pk, a);
	assert_int_equal(job.attempts, 1);
	assert_int_equal(ok(pn_commit_finish(db, a, true, NULL)), 0);
	assert_int_equal(ok(pn_commit_finish(db, b, false, "retry_for reached")), 0);
	assert_int_equal(ok(pn_commit_claim(db, 60, &job, &wait)), 0);
	assert_true(wait == -1);
	assert_string_equal(value("SELECT string_agg(state, ',' ORDER BY transaction_uid) FROM commitment", NULL),
	                    "done,expired");
	/* a finished row is not rescheduled */
	assert_int_equal(ok(pn_commit_reschedule(db, a, 0, "x")), 0);
	assert_string_equal(value("SELECT state FROM commitment WHERE transaction_uid = '2.25.3'", NULL), "done");
}

static void test_notify(void **state)
{
	(void)state;
	long long a = 0;
	assert_int_equal(ok(pn_commit_listen(db)), 0);
	assert_int_equal(ok(pn_commit_wait(db, 10)), 0);
	assert_int_equal(ok(pn_commit_record(db, "2.25.5", "A", refs, 1, 60, &a)), 0);
	assert_int_equal(ok(pn_commit_reschedule(db, a, 0, "same association closed")), 0);
	assert_int_equal(ok(pn_commit_wait(db, 2000)), 1);
	assert_int_equal(ok(pn_commit_wait(db, 10)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_record_retry_duplicate, setup),
	    cmocka_unit_test_setup(test_items_join_index, setup),
	    cmocka_unit_test_setup(test_claim_lease, setup),
	    cmocka_unit_test_setup(test_notify, setup),
	};
	testenv e = {0};
	int failed = testenv_open(&e, "test_db_commitment");
	if (failed == 0) {
		test_conninfo = e.conninfo;
		db = e.db;
		check = e.check;
		failed = cmocka_run_group_tests(tests, NULL, NULL);
	}
	return testenv_close(&e, "test_db_commitment", failed);
}
