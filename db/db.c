/* Connection to the PostgreSQL index: connect, reconnect, migrate. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "db_internal.h"
#include "find.h"
#include "migrations.h"

enum {
	RECONNECT_ATTEMPTS = 5, /* PQreset calls before giving up */
	RECONNECT_BASE_MS = 50,
	RECONNECT_CAP_MS = 1000,
};

/* Key of the transaction-level advisory lock that serialises migrations
 * between processes: "pndbmigr" in ASCII. */
#define MIGRATE_LOCK_SQL "SELECT pg_advisory_xact_lock(8101800738405313906)"

/* Copies src into dst on one line: newlines become spaces, trailing
 * white space goes. */
static void copy_line(char *dst, size_t dstlen, const char *src)
{
	size_t n = 0;

	if (!dst || dstlen == 0)
		return;
	for (; src && *src && n + 1 < dstlen; src++)
		dst[n++] = (*src == '\n' || *src == '\r' || *src == '\t') ? ' ' : *src;
	while (n > 0 && dst[n - 1] == ' ')
		n--;
	dst[n] = '\0';
}

void pn_db_clear_error(pn_db *db)
{
	db->sqlstate[0] = '\0';
	db->errmsg[0] = '\0';
}

void pn_db_set_error(pn_db *db, const char *sqlstate, const char *msg)
{
	snprintf(db->sqlstate, sizeof db->sqlstate, "%s", sqlstate ? sqlstate : "");
	copy_line(db->errmsg, sizeof db->errmsg, msg);
}

void pn_db_set_error_result(pn_db *db, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	char line[sizeof db->errmsg];

	/* Only the primary message: DETAIL may quote a whole failing row,
	 * patient name included, and this text ends up in logs. */
	if (primary && state) {
		snprintf(line, sizeof line, "%s (SQLSTATE %s)", primary, state);
		pn_db_set_error(db, state, line);
	} else if (res && *PQresultErrorMessage(res)) {
		pn_db_set_error(db, state, PQresultErrorMessage(res));
	} else {
		pn_db_set_error(db, state, PQerrorMessage(db->conn));
	}
	if (!db->errmsg[0])
		pn_db_set_error(db, state, "unknown database error");
}

int pn_db_fail(pn_db *db, PGresult *res)
{
	pn_db_set_error_result(db, res);
	PQclear(res);
	/* No result at all (libpq out of memory) has no SQLSTATE either:
	 * a lost connection too, by pn_db_note_failure(). */
	pn_db_note_failure(db);
	if (pn_db_broken(db) || strncmp(db->sqlstate, "08", 2) == 0)
		return PN_DB_CONN_LOST;
	if (strcmp(db->sqlstate, "40001") == 0 || strcmp(db->sqlstate, "40P01") == 0)
		return PN_DB_RETRY;
	return -EIO;
}

int pn_db_call_begin(pn_db *db)
{
	if (!db)
		return -EINVAL;
	pn_db_settle(db);
	pn_db_clear_error(db);
	if (pn_db_broken(db) && pn_db_ensure_connected(db) < 0)
		return -ECONNREFUSED;
	return 0;
}

bool pn_db_run_again(pn_db *db, pn_db_retry *st, int *r)
{
	if (*r == PN_DB_RETRY && st->retries < st->max_retries) {
		pn_db_backoff(db, st->retries++, st->base_ms, st->cap_ms);
		return true;
	}
	if (*r == PN_DB_CONN_LOST && !st->reconnected) {
		st->reconnected = true;
		if (pn_db_ensure_connected(db) == 0)
			return true;
	}
	*r = pn_db_public_error(*r);
	return false;
}

int pn_db_strings_add(char ***v, size_t *n, size_t *cap, const char *s)
{
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 8;
		char **grown = realloc(*v, c * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		*v = grown;
		*cap = c;
	}
	if (!((*v)[*n] = strdup(s)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

char *pn_db_array_literal(const char *const *list, size_t n)
{
	size_t len = 3;
	for (size_t i = 0; i < n; i++)
		len += 3 + 2 * strlen(list[i]);
	char *s = malloc(len), *o = s;
	if (!s)
		return NULL;
	*o++ = '{';
	for (size_t i = 0; i < n; i++) {
		if (i)
			*o++ = ',';
		*o++ = '"';
		for (const char *c = list[i]; *c; c++) {
			if (*c == '"' || *c == '\\')
				*o++ = '\\';
			*o++ = *c;
		}
		*o++ = '"';
	}
	*o++ = '}';
	*o = '\0';
	return s;
}

int pn_db_command(pn_db *db, const char *sql)
{
	PGresult *res = PQexec(db->conn, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return pn_db_fail(db, res);
	PQclear(res);
	return 0;
}

int pn_db_send_async(pn_db *db, const char *sql)
{
	pn_db_settle(db);
	if (PQsendQuery(db->conn, sql) != 1) {
		pn_db_set_error_result(db, NULL);
		return -EIO;
	}
	db->async_sent = true;
	return 0;
}

void pn_db_settle(pn_db *db)
{
	if (!db || !db->async_sent)
		return;
	db->async_sent = false;
	PGresult *res;
	while ((res = PQgetResult(db->conn)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !db->async_failed) {
			db->async_failed = true;
			const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
			copy_line(db->async_errmsg, sizeof db->async_errmsg,
			          primary ? primary : PQerrorMessage(db->conn));
		}
		PQclear(res);
	}
}

int pn_db_async_outcome(pn_db *db)
{
	pn_db_settle(db);
	if (!db->async_failed)
		return 0;
	db->async_failed = false;
	pn_db_set_error(db, "", db->async_errmsg);
	return -EIO;
}

void pn_db_rollback(pn_db *db)
{
	if (PQstatus(db->conn) != CONNECTION_OK || PQtransactionStatus(db->conn) == PQTRANS_IDLE)
		return;
	/* A failed ROLLBACK leaves nothing to do: the server discards the
	 * transaction when the connection goes. */
	PQclear(PQexec(db->conn, "ROLLBACK"));
}

static uint64_t next_random(pn_db *db)
{
	uint64_t x = db->rng; /* xorshift64 */

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	db->rng = x;
	return x;
}

void pn_db_backoff(pn_db *db, unsigned attempt, unsigned base_ms, unsigned cap_ms)
{
	uint64_t ceil_us = (uint64_t)base_ms * 1000u << (attempt < 16 ? attempt : 16);
	uint64_t us;
	struct timespec ts;

	if (ceil_us > (uint64_t)cap_ms * 1000u)
		ceil_us = (uint64_t)cap_ms * 1000u;
	us = ceil_us / 2 + next_random(db) % (ceil_us / 2 + 1);
	ts.tv_sec = (time_t)(us / 1000000u);
	ts.tv_nsec = (long)(us % 1000000u) * 1000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* A success goes to the modality only once its row is durable: with
 * synchronous_commit off (the server's default, a role's or the
 * conninfo's options) PostgreSQL answers COMMIT before the WAL reaches its
 * disk, and a crash of it loses the last acknowledged instances. So a
 * session that finds it off turns it on; local, remote_write, on and
 * remote_apply are the site's choice of what a failover may lose
 * (README, "Database failover"). One round trip per connection. A failed
 * query here is left to the session's first statement to meet. */
static void session_setup(PGconn *conn)
{
	PGresult *res = PQexec(conn, "SELECT set_config('synchronous_commit', 'on', false)"
	                             " WHERE current_setting('synchronous_commit') = 'off'");
	PQclear(res);
}

int pn_db_connect(const char *conninfo, pn_db **ret_db, char *errbuf, size_t errlen)
{
	/* Keywords are applied in order and the conninfo expands in place of
	 * "dbname": what comes before it is a default the conninfo may
	 * override, what comes after it is forced. The index holds UTF-8.
	 * The index is meant to stay in memory (or on SSD): with the default
	 * random_page_cost of 4 the planner hashes whole tables (30,000
	 * patients for a month of studies) rather than following the
	 * indexes, which costs C-FIND its time to the first response.
	 * Every session writes, so it must be on a primary: with several
	 * hosts (host=a,b) libpq skips a hot standby and, after a failover,
	 * finds the promoted one; with one host a standby is refused rather
	 * than used until its first write fails. Forced: "any" or
	 * "prefer-standby" could only break stores. */
	static const char *const keys[] = {"fallback_application_name", "connect_timeout",      "options", "dbname",
	                                   "client_encoding",           "target_session_attrs", NULL};
	const char *values[] = {"pacsnode", "10", "-c random_page_cost=1.1", conninfo, "UTF8", "read-write", NULL};
	struct timespec now;
	PGconn *conn;
	pn_db *db;

	if (!conninfo || !ret_db)
		return -EINVAL;
	db = calloc(1, sizeof *db);
	if (!db) {
		copy_line(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	conn = PQconnectdbParams(keys, values, 1);
	if (!conn) {
		free(db);
		copy_line(errbuf, errlen, "out of memory");
		return -ENOMEM;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		copy_line(errbuf, errlen, PQerrorMessage(conn));
		PQfinish(conn);
		free(db);
		return -ECONNREFUSED;
	}
	/* The server's NOTICEs would go to stderr: this module does not log. */
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	session_setup(conn);

	db->conn = conn;
	db->conn_gen = 1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	/* Distinct per process, so that workers forked together back off
	 * differently; never zero. */
	db->rng = ((uint64_t)getpid() << 32) ^ (uint64_t)now.tv_nsec ^ (uint64_t)now.tv_sec ^ 0x9e3779b97f4a7c15u;
	*ret_db = db;
	return 0;
}

void pn_db_free(pn_db *db)
{
	if (!db)
		return;
	pn_find_state_free(db);
	PQfinish(db->conn);
	free(db);
}

void pn_db_note_failure(pn_db *db)
{
	/* Every error the server sends has a SQLSTATE; one without came from
	 * libpq: "server closed the connection unexpectedly" with PQstatus
	 * still OK (seen after a PostgreSQL restart), a call refused in the
	 * state libpq was left in, no memory. A new connection is the cure
	 * for all of them. */
	if (!db->sqlstate[0])
		db->suspect = true;
}

bool pn_db_broken(const pn_db *db)
{
	return PQstatus(db->conn) != CONNECTION_OK || db->suspect;
}

bool pn_db_connected(const pn_db *db)
{
	return db && !pn_db_broken(db);
}

void pn_db_restart(pn_db *db)
{
	PQreset(db->conn);
	if (PQstatus(db->conn) == CONNECTION_OK) {
		session_setup(db->conn);
		db->conn_gen++;
		db->suspect = false;
	}
}

static void (*on_reconnect)(void);

void pn_db_on_reconnect(void (*fn)(void))
{
	on_reconnect = fn;
}

int pn_db_ensure_connected(pn_db *db)
{
	if (!db)
		return -EINVAL;
	if (!pn_db_broken(db))
		return 0;
	for (unsigned attempt = 0; attempt < RECONNECT_ATTEMPTS; attempt++) {
		if (attempt > 0)
			pn_db_backoff(db, attempt - 1, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
		PQreset(db->conn);
		if (PQstatus(db->conn) == CONNECTION_OK) {
			session_setup(db->conn);
			db->conn_gen++;
			db->suspect = false;
			if (on_reconnect)
				on_reconnect();
			return 0;
		}
		pn_db_set_error(db, "", PQerrorMessage(db->conn));
	}
	return -ECONNREFUSED;
}

const char *pn_db_errmsg(const pn_db *db)
{
	return db ? db->errmsg : "";
}

const char *pn_db_sqlstate(const pn_db *db)
{
	return db ? db->sqlstate : "";
}

int pn_db_public_error(int r)
{
	if (r == PN_DB_CONN_LOST)
		return -ECONNREFUSED;
	if (r == PN_DB_RETRY)
		return -EIO;
	return r;
}

/* The version in schema_version, 0 before the first migration created it. */
static int read_version(pn_db *db, int *ret_version)
{
	PGresult *res;
	bool exists;
	int version;

	/* Not to_regclass(): it answers from the catalog cache, which is not
	 * refreshed while we wait for the migration lock, so it would miss a
	 * table another process just created. This scan uses the statement's
	 * snapshot, taken after the lock. */
	res = PQexec(db->conn, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class"
	                       " WHERE relname = 'schema_version'"
	                       " AND relnamespace = current_schema()::regnamespace)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_fail(db, res);
	exists = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	if (!exists) {
		*ret_version = 0;
		return 0;
	}

	res = PQexec(db->conn, "SELECT coalesce(max(version), 0) FROM schema_version");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_fail(db, res);
	version = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	*ret_version = version;
	return 0;
}

int pn_db_schema_version(pn_db *db, int *ret_version)
{
	int version, r;

	if (!db || !ret_version)
		return -EINVAL;
	pn_db_clear_error(db);
	r = read_version(db, &version);
	if (r != 0)
		return pn_db_public_error(r);
	*ret_version = version;
	return 0;
}

/* Applies m unless a concurrent process did already, in one transaction
 * holding the migration lock. */
static int apply_migration(pn_db *db, const pn_migration *m)
{
	char version_text[16];
	const char *params[2] = {version_text, m->name};
	PGresult *res;
	int current, r;

	r = pn_db_command(db, "BEGIN ISOLATION LEVEL READ COMMITTED");
	if (r != 0)
		return r;
	res = PQexec(db->conn, MIGRATE_LOCK_SQL);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pn_db_fail(db, res);
		goto fail;
	}
	PQclear(res);

	/* Read committed: this snapshot is taken after the lock, so it sees
	 * whatever the previous holder committed. */
	r = read_version(db, &current);
	if (r != 0)
		goto fail;
	if (current >= m->version) {
		pn_db_rollback(db);
		return 0;
	}

	res = PQexec(db->conn, m->sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pn_db_fail(db, res);
		goto fail;
	}
	PQclear(res);

	snprintf(version_text, sizeof version_text, "%d", m->version);
	res = PQexecParams(db->conn, "INSERT INTO schema_version (version, name) VALUES ($1::integer, $2)", 2, NULL,
	                   params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		r = pn_db_fail(db, res);
		goto fail;
	}
	PQclear(res);

	r = pn_db_command(db, "COMMIT");
	if (r != 0)
		goto fail;
	return 0;

fail:
	pn_db_rollback(db);
	return r;
}

int pn_db_migrate(pn_db *db)
{
	int current, r;

	if (!db)
		return -EINVAL;
	pn_db_clear_error(db);
	r = pn_db_ensure_connected(db);
	if (r < 0)
		return r;

	/* The usual case, every start after the first: nothing to do, no lock. */
	r = read_version(db, &current);
	if (r != 0)
		return pn_db_public_error(r);
	if (current >= pn_migrations[pn_migrations_count - 1].version)
		return 0;

	for (size_t i = 0; i < pn_migrations_count; i++) {
		if (pn_migrations[i].version <= current)
			continue;
		r = apply_migration(db, &pn_migrations[i]);
		if (r != 0)
			return pn_db_public_error(r);
	}
	return 0;
}
