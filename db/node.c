/* The nodes table and the node lock (node.h). */
#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db_internal.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define NODE_LOCK_SQL(fn) "SELECT " fn "(" STR(PN_NODE_LOCK_SPACE) ", $1::integer)"

/* One statement of at most one parameter returning at most one row: 0
 * with its first value in out ("" when there is no row), or as
 * pn_db_fail() made public. */
static int one_value(pn_db *db, const char *sql, const char *param, char *out, size_t outlen)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	const char *params[1] = {param};
	PGresult *res = PQexecParams(db->conn, sql, param ? 1 : 0, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > 1 || PQnfields(res) < 1)
		return pn_db_public_error(pn_db_fail(db, res));
	snprintf(out, outlen, "%s", PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : "");
	PQclear(res);
	return 0;
}

int pn_node_register(pn_db *db, const char *id, bool started, int *ret_num)
{
	if (!db || !id || !id[0] || !ret_num)
		return -EINVAL;
	char num[24] = "";
	/* Looked up first: an INSERT ... ON CONFLICT would use up a number of
	 * the identity at every start. Two first starts at once: the loser's
	 * INSERT returns nothing and the second round reads the row. */
	for (int round = 0; round < 2 && !num[0]; round++) {
		int r = one_value(db,
		                  started ? "UPDATE node SET last_started = now() WHERE id = $1 RETURNING num"
		                          : "SELECT num FROM node WHERE id = $1",
		                  id, num, sizeof num);
		if (r == 0 && !num[0])
			r = one_value(db,
			              "WITH i AS (INSERT INTO node (id) VALUES ($1) ON CONFLICT (id) DO NOTHING"
			              " RETURNING num) SELECT num FROM i",
			              id, num, sizeof num);
		if (r < 0)
			return r;
	}
	long n = num[0] ? strtol(num, NULL, 10) : 0;
	if (n <= 0) {
		pn_db_set_error(db, "", "could not register the node id");
		return -EIO;
	}
	if (n > PN_NODE_NUM_MAX) {
		pn_db_set_error(db, "", "too many node ids registered (table node)");
		return -ERANGE;
	}
	*ret_num = (int)n;
	return 0;
}

static int lock_call(pn_db *db, const char *sql, int num, bool *ret)
{
	char text[16], v[8];
	snprintf(text, sizeof text, "%d", num);
	int r = one_value(db, sql, text, v, sizeof v);
	if (r == 0 && ret)
		*ret = v[0] == 't';
	return r;
}

int pn_node_lock(pn_db *db, int num, int wait_ms, bool *ret_taken)
{
	if (!db || num <= 0 || !ret_taken)
		return -EINVAL;
	for (int waited = 0;; waited += 100) {
		int r = lock_call(db, NODE_LOCK_SQL("pg_try_advisory_lock"), num, ret_taken);
		if (r < 0 || *ret_taken || waited >= wait_ms)
			return r;
		struct timespec ts = {.tv_nsec = 100 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

void pn_node_unlock(pn_db *db, int num)
{
	if (db && num > 0 && PQstatus(db->conn) == CONNECTION_OK)
		lock_call(db, NODE_LOCK_SQL("pg_advisory_unlock"), num, NULL); /* a lost connection released it */
}

int pn_node_share(pn_db *db, int num)
{
	if (!db || num <= 0)
		return -EINVAL;
	bool held = false;
	int r = lock_call(db, NODE_LOCK_SQL("pg_try_advisory_lock_shared"), num, &held);
	if (r < 0)
		return r;
	if (!held) { /* cannot be: this session holds it exclusively */
		pn_db_set_error(db, "", "could not take the node lock shared");
		return -EIO;
	}
	return lock_call(db, NODE_LOCK_SQL("pg_advisory_unlock"), num, NULL);
}

int pn_node_hold(pn_db *db, int num, bool *ret_held, bool *ret_again)
{
	if (!db || num <= 0 || !ret_held || !ret_again)
		return -EINVAL;
	/* One round trip a call, which also tells a lost session: CASE takes
	 * the lock only when this session holds none (holds stack up). */
	char v[8];
	char text[16];
	snprintf(text, sizeof text, "%d", num);
	int r = one_value(db,
	                  "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
	                  " AND classid = " STR(
	                      PN_NODE_LOCK_SPACE) "::oid AND objid = $1::integer::oid"
	                                          " AND objsubid = 2 AND pid = pg_backend_pid() AND granted) THEN 'h'"
	                                          " WHEN pg_try_advisory_lock_shared(" STR(
	                                              PN_NODE_LOCK_SPACE) ", $1::integer) THEN 't'"
	                                                                  " ELSE 'f' END",
	                  text, v, sizeof v);
	if (r < 0)
		return r;
	*ret_held = v[0] == 'h' || v[0] == 't';
	*ret_again = v[0] == 't';
	return 0;
}

int pn_node_list(pn_db *db, pn_node_row **ret_rows, size_t *ret_n)
{
	if (!db || !ret_rows || !ret_n)
		return -EINVAL;
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	PGresult *res = PQexec(db->conn, "SELECT num, id FROM node ORDER BY num");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_public_error(pn_db_fail(db, res));
	size_t n = (size_t)PQntuples(res);
	pn_node_row *rows = calloc(n ? n : 1, sizeof(*rows));
	if (!rows) {
		PQclear(res);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		rows[i].num = atoi(PQgetvalue(res, (int)i, 0));
		snprintf(rows[i].id, sizeof rows[i].id, "%s", PQgetvalue(res, (int)i, 1));
	}
	PQclear(res);
	*ret_rows = rows;
	*ret_n = n;
	return 0;
}
