/* The db/ tests' surroundings: their database and connections, forked
 * writers. */
#ifndef PN_TESTENV_H
#define PN_TESTENV_H

#include <libpq-fe.h>

#include "db.h"

/* What a test program works in: a database of its own (testdb.h) on the
 * server PN_TEST_PG_CONNINFO names, a pn_db connection and a plain libpq
 * one for checks. */
typedef struct {
	const char *admin;
	char *conninfo;
	char dbname[64];
	pn_db *db;
	PGconn *check;
} testenv;

/* 0, or 2 (the program's exit status) with the reason on stderr; a
 * database made is dropped by testenv_close in any case. */
int testenv_open(testenv *e, const char *prog);
/* Closes and drops (kept with PN_TEST_KEEP_DB); returns the program's
 * exit status given cmocka's count of failed tests. */
int testenv_close(testenv *e, const char *prog, int failed);

enum { FORK_MAX = 16 };

/* Runs fn(connection, i, arg) in n forked processes (n <= FORK_MAX), each
 * with its own connection to conninfo, released together once all are
 * connected; fn's return is the process's exit status. Returns how many
 * exited 0, -1 when they could not be started. */
int run_forked(const char *conninfo, int n, int (*fn)(pn_db *, int, void *), void *arg);

#endif
