/* Storage commitment requests and their reports (commitment.h). */
#include "commitment.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

/* The channel senders LISTEN on; the payload is not used. */
#define CHANNEL "pn_commitment"

/* An exec with text parameters expecting `want`; on failure as
 * pn_db_fail() (the result cleared). */
static PGresult *exec(pn_db *db, const char *sql, int n, const char *const *params, ExecStatusType want, int *r)
{
	PGresult *res = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != want) {
		*r = pn_db_fail(db, res);
		return NULL;
	}
	return res;
}

static int arrays(const pn_commit_ref *refs, size_t n, char **ret_classes, char **ret_uids)
{
	const char **c = calloc(n ? n : 1, sizeof(*c));
	const char **u = calloc(n ? n : 1, sizeof(*u));
	if (!c || !u) {
		free(c);
		free(u);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		c[i] = refs[i].sop_class_uid;
		u[i] = refs[i].sop_uid;
	}
	*ret_classes = pn_db_array_literal(c, n);
	*ret_uids = pn_db_array_literal(u, n);
	free(c);
	free(u);
	if (!*ret_classes || !*ret_uids) {
		free(*ret_classes);
		free(*ret_uids);
		return -ENOMEM;
	}
	return 0;
}

/* One attempt, inside BEGIN ... COMMIT. */
static int record_once(pn_db *db, const char *const p[5], long long *ret_pk, int *ret_outcome)
{
	int r = 0;
	PGresult *res = NULL;
	if ((r = pn_db_command(db, "BEGIN")) != 0)
		return r;
	/* The unique index decides between two requests racing for one
	 * Transaction UID: the later waits, then finds the row. */
	const char *insp[] = {p[0], p[1], p[4]};
	res = exec(db,
	           "INSERT INTO commitment (transaction_uid, calling_ae, next_attempt_at)"
	           " VALUES ($1, $2, now() + $3::integer * interval '1 second')"
	           " ON CONFLICT (transaction_uid) DO NOTHING RETURNING pk",
	           3, insp, PGRES_TUPLES_OK, &r);
	if (!res)
		goto fail;
	if (PQntuples(res) == 1) {
		char pk[24];
		snprintf(pk, sizeof(pk), "%s", PQgetvalue(res, 0, 0));
		*ret_pk = atoll(pk);
		const char *ip[] = {pk, p[2], p[3]};
		PQclear(res);
		res = exec(
		    db,
		    "INSERT INTO commitment_item (commitment_fk, ord, sop_class_uid, sop_uid)"
		    " SELECT $1::bigint, o, c, u FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(c, u, o)",
		    3, ip, PGRES_COMMAND_OK, &r);
		if (!res)
			goto fail;
		PQclear(res);
		*ret_outcome = 0;
	} else {
		PQclear(res);
		/* Taken: the same request again only when from the same AE with
		 * the same references in the same order. */
		res = exec(db,
		           "SELECT c.pk, c.calling_ae = $2 AND"
		           " (SELECT coalesce(array_agg(sop_class_uid ORDER BY ord), '{}') FROM commitment_item"
		           "  WHERE commitment_fk = c.pk) = $3::text[] AND"
		           " (SELECT coalesce(array_agg(sop_uid ORDER BY ord), '{}') FROM commitment_item"
		           "  WHERE commitment_fk = c.pk) = $4::text[]"
		           " FROM commitment c WHERE c.transaction_uid = $1 FOR UPDATE",
		           4, p, PGRES_TUPLES_OK, &r);
		if (!res)
			goto fail;
		if (PQntuples(res) != 1) { /* deleted meanwhile: try again */
			PQclear(res);
			pn_db_rollback(db);
			return PN_DB_RETRY;
		}
		bool same = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
		*ret_pk = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
		if (!same) {
			pn_db_rollback(db);
			return -EEXIST;
		}
		char pk[24];
		snprintf(pk, sizeof(pk), "%lld", *ret_pk);
		const char *up[] = {pk, p[4]};
		res = exec(
		    db,
		    "UPDATE commitment SET state = 'pending', event_type = NULL, attempts = 0, finished_at = NULL,"
		    " last_error = NULL, next_attempt_at = now() + $2::integer * interval '1 second' WHERE pk = $1",
		    2, up, PGRES_COMMAND_OK, &r);
		if (!res)
			goto fail;
		PQclear(res);
		res = exec(db, "UPDATE commitment_item SET failure_reason = NULL WHERE commitment_fk = $1", 1, up,
		           PGRES_COMMAND_OK, &r);
		if (!res)
			goto fail;
		PQclear(res);
		*ret_outcome = 1;
	}
	if ((r = pn_db_command(db, "COMMIT")) != 0)
		goto fail;
	return 0;
fail:
	pn_db_rollback(db);
	return r;
}

int pn_commit_record(pn_db *db, const char *transaction_uid, const char *calling_ae, const pn_commit_ref *refs,
                     size_t n, int lease_s, long long *ret_pk)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char *classes = NULL, *uids = NULL;
	if ((r = arrays(refs, n, &classes, &uids)) < 0)
		return r;
	char lease[16];
	snprintf(lease, sizeof(lease), "%d", lease_s);
	const char *p[5] = {transaction_uid, calling_ae, classes, uids, lease};
	pn_db_retry st = {.max_retries = 5, .base_ms = 10, .cap_ms = 200};
	long long pk = 0;
	int outcome = 0;
	do
		r = record_once(db, p, &pk, &outcome);
	while (r > 0 && pn_db_run_again(db, &st, &r));
	free(classes);
	free(uids);
	if (r < 0)
		return r;
	*ret_pk = pk;
	return outcome;
}

static char *dup_or_null(const PGresult *res, int row, int col, bool *oom)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	char *s = strdup(PQgetvalue(res, row, col));
	if (!s)
		*oom = true;
	return s;
}

int pn_commit_items(pn_db *db, long long pk, pn_commit_item **ret_items, size_t *ret_n, int *ret_event_type)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char pks[24];
	snprintf(pks, sizeof(pks), "%lld", pk);
	const char *p[] = {pks};
	PGresult *res =
	    exec(db, "SELECT coalesce(event_type, 0) FROM commitment WHERE pk = $1", 1, p, PGRES_TUPLES_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	if (PQntuples(res) != 1) {
		PQclear(res);
		return -ENOENT;
	}
	int event_type = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	res = exec(db,
	           "SELECT c.sop_class_uid, c.sop_uid, i.sop_class_uid, i.path, i.checksum, i.size,"
	           " i.missing_since IS NOT NULL, coalesce(c.failure_reason, 0)"
	           " FROM commitment_item c LEFT JOIN instance i ON i.sop_uid = c.sop_uid"
	           " WHERE c.commitment_fk = $1 ORDER BY c.ord",
	           1, p, PGRES_TUPLES_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	size_t n = (size_t)PQntuples(res);
	pn_commit_item *v = calloc(n ? n : 1, sizeof(*v));
	bool oom = !v;
	for (size_t i = 0; !oom && i < n; i++) {
		int row = (int)i;
		v[i].sop_class_uid = dup_or_null(res, row, 0, &oom);
		v[i].sop_uid = dup_or_null(res, row, 1, &oom);
		v[i].stored_class = dup_or_null(res, row, 2, &oom);
		v[i].path = dup_or_null(res, row, 3, &oom);
		v[i].checksum = dup_or_null(res, row, 4, &oom);
		v[i].size = PQgetisnull(res, row, 5) ? -1 : atoll(PQgetvalue(res, row, 5));
		v[i].missing = strcmp(PQgetvalue(res, row, 6), "t") == 0;
		v[i].failure_reason = (unsigned short)atoi(PQgetvalue(res, row, 7));
	}
	PQclear(res);
	if (oom) {
		pn_commit_items_free(v, n);
		return -ENOMEM;
	}
	*ret_items = v;
	*ret_n = n;
	*ret_event_type = event_type;
	return 0;
}

void pn_commit_items_free(pn_commit_item *items, size_t n)
{
	for (size_t i = 0; items && i < n; i++) {
		free(items[i].sop_class_uid);
		free(items[i].sop_uid);
		free(items[i].stored_class);
		free(items[i].path);
		free(items[i].checksum);
	}
	free(items);
}

int pn_commit_set_result(pn_db *db, long long pk, const pn_commit_item *items, size_t n)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	/* "ord:reason" for the failed ones only: the committed stay NULL. */
	size_t cap = 16 + n * 20, len = 0;
	char *list = malloc(cap);
	if (!list)
		return -ENOMEM;
	len += (size_t)snprintf(list, cap, "{");
	bool failed = false;
	for (size_t i = 0; i < n; i++) {
		if (!items[i].failure_reason)
			continue;
		len += (size_t)snprintf(list + len, cap - len, "%s%zu", failed ? "," : "", i + 1);
		failed = true;
	}
	snprintf(list + len, cap - len, "}");
	char *reasons = malloc(cap);
	if (!reasons) {
		free(list);
		return -ENOMEM;
	}
	len = (size_t)snprintf(reasons, cap, "{");
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		if (!items[i].failure_reason)
			continue;
		len += (size_t)snprintf(reasons + len, cap - len, "%s%u", any ? "," : "", items[i].failure_reason);
		any = true;
	}
	snprintf(reasons + len, cap - len, "}");
	char pks[24];
	snprintf(pks, sizeof(pks), "%lld", pk);
	const char *p[] = {pks, list, reasons, failed ? "2" : "1"};
	/* One statement: the reasons and the event type together. */
	PGresult *res = exec(db,
	                     "WITH f AS (UPDATE commitment_item c SET failure_reason = x.reason"
	                     "  FROM unnest($2::integer[], $3::integer[]) AS x(ord, reason)"
	                     "  WHERE c.commitment_fk = $1 AND c.ord = x.ord RETURNING 1)"
	                     " UPDATE commitment SET event_type = $4::smallint WHERE pk = $1",
	                     4, p, PGRES_COMMAND_OK, &r);
	free(list);
	free(reasons);
	if (!res)
		return pn_db_public_error(r);
	PQclear(res);
	return 0;
}

int pn_commit_claim(pn_db *db, int lease_s, pn_commit_job *ret_job, double *ret_wait_s)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char lease[16];
	snprintf(lease, sizeof(lease), "%d", lease_s);
	const char *p[] = {lease};
	/* SKIP LOCKED: a row another sender is claiming right now is left to
	 * it; the lease keeps it from being claimed again after that. */
	PGresult *res = exec(db,
	                     "UPDATE commitment c SET attempts = c.attempts + 1,"
	                     " next_attempt_at = now() + $1::integer * interval '1 second'"
	                     " FROM (SELECT pk FROM commitment WHERE state = 'pending' AND next_attempt_at <= now()"
	                     "       ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) d"
	                     " WHERE c.pk = d.pk RETURNING c.pk, c.transaction_uid, c.calling_ae, c.attempts - 1,"
	                     " extract(epoch FROM now() - c.created_at), c.event_type IS NOT NULL",
	                     1, p, PGRES_TUPLES_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	if (PQntuples(res) == 1) {
		pn_commit_job j = {0};
		j.pk = atoll(PQgetvalue(res, 0, 0));
		snprintf(j.transaction_uid, sizeof(j.transaction_uid), "%s", PQgetvalue(res, 0, 1));
		snprintf(j.calling_ae, sizeof(j.calling_ae), "%s", PQgetvalue(res, 0, 2));
		j.attempts = atoi(PQgetvalue(res, 0, 3));
		j.age_s = atof(PQgetvalue(res, 0, 4));
		j.has_result = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
		PQclear(res);
		*ret_job = j;
		return 1;
	}
	PQclear(res);
	res = exec(db,
	           "SELECT extract(epoch FROM min(next_attempt_at) - now())"
	           " FROM commitment WHERE state = 'pending'",
	           0, NULL, PGRES_TUPLES_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	double wait = PQgetisnull(res, 0, 0) ? -1 : atof(PQgetvalue(res, 0, 0));
	*ret_wait_s = PQgetisnull(res, 0, 0) ? -1 : wait < 0 ? 0 : wait;
	PQclear(res);
	return 0;
}

int pn_commit_finish(pn_db *db, long long pk, bool delivered, const char *error)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char pks[24];
	snprintf(pks, sizeof(pks), "%lld", pk);
	const char *p[] = {pks, delivered ? "done" : "expired", error};
	PGresult *res =
	    exec(db,
	         "UPDATE commitment SET state = $2, finished_at = now(), last_error = coalesce($3, last_error)"
	         " WHERE pk = $1",
	         3, p, PGRES_COMMAND_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	PQclear(res);
	return 0;
}

int pn_commit_reschedule(pn_db *db, long long pk, double delay_s, const char *error)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char pks[24], delay[32];
	snprintf(pks, sizeof(pks), "%lld", pk);
	snprintf(delay, sizeof(delay), "%.3f", delay_s);
	const char *p[] = {pks, delay, error};
	/* NOTIFY is sent at commit: the senders wake for a row they can see. */
	PGresult *res =
	    exec(db,
	         "WITH u AS (UPDATE commitment SET next_attempt_at = now() + $2::float8 * interval '1 second',"
	         " last_error = $3 WHERE pk = $1 AND state = 'pending' RETURNING 1)"
	         " SELECT pg_notify('" CHANNEL "', '') FROM u WHERE $2::float8 = 0",
	         3, p, PGRES_TUPLES_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	PQclear(res);
	return 0;
}

int pn_commit_count(pn_db *db, pn_commit_counts *ret)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	/* the pending ones through the partial index; expired rows are few */
	PGresult *res = exec(db,
	                     "SELECT (SELECT count(*) FROM commitment WHERE state = 'pending'),"
	                     " (SELECT count(*) FROM commitment WHERE state = 'expired'),"
	                     " coalesce((SELECT extract(epoch FROM now() - min(created_at)) FROM commitment"
	                     "  WHERE state = 'pending'), 0)",
	                     0, NULL, PGRES_TUPLES_OK, &r);
	if (!res)
		return pn_db_public_error(r);
	ret->pending = atoll(PQgetvalue(res, 0, 0));
	ret->expired = atoll(PQgetvalue(res, 0, 1));
	ret->oldest_pending_s = atof(PQgetvalue(res, 0, 2));
	PQclear(res);
	return 0;
}

int pn_commit_listen(pn_db *db)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	r = pn_db_command(db, "LISTEN " CHANNEL);
	return r ? pn_db_public_error(r) : 0;
}

int pn_commit_wait(pn_db *db, int timeout_ms)
{
	if (!db || PQstatus(db->conn) != CONNECTION_OK)
		return -ECONNREFUSED;
	bool got = false;
	for (int round = 0; round < 2; round++) {
		PGnotify *n;
		if (PQconsumeInput(db->conn) != 1)
			return -ECONNREFUSED;
		while ((n = PQnotifies(db->conn)) != NULL) {
			got = true;
			PQfreemem(n);
		}
		if (got || round == 1)
			break;
		struct pollfd pfd = {.fd = PQsocket(db->conn), .events = POLLIN};
		if (poll(&pfd, 1, timeout_ms) <= 0)
			break;
	}
	return got;
}
