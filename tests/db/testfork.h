/* Forked writers for the db/ tests. */
#ifndef PN_TESTFORK_H
#define PN_TESTFORK_H

#include "db.h"

enum { FORK_MAX = 16 };

/* Runs fn(connection, i, arg) in n forked processes (n <= FORK_MAX), each
 * with its own connection to conninfo, released together once all are
 * connected; fn's return is the process's exit status. Returns how many
 * exited 0, -1 when they could not be started. */
int run_forked(const char *conninfo, int n, int (*fn)(pn_db *, int, void *), void *arg);

#endif
