/* Connection to the PostgreSQL index: connect, reconnect, migrate.
 *
 * Everything that speaks SQL lives under db/. Functions return 0 or a
 * negative errno-style code and never log above debug: the caller decides
 * what to tell the operator, using pn_db_errmsg() for the detail. */
#ifndef PN_DB_H
#define PN_DB_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pn_db pn_db;

/* Connects with a libpq conninfo string. On failure *ret_db is untouched and
 * errbuf (if given) receives the reason. Returns 0, -ECONNREFUSED or -ENOMEM. */
int pn_db_connect(const char *conninfo, pn_db **ret_db, char *errbuf, size_t errlen);
void pn_db_free(pn_db *db); /* NULL is a no-op */

/* Applies every embedded migration newer than the schema's version, each in
 * its own transaction, serialised between processes by an advisory lock.
 * Safe to call from several processes at once and on every start. */
int pn_db_migrate(pn_db *db);

/* The schema version currently applied (after pn_db_migrate). */
int pn_db_schema_version(pn_db *db, int *ret_version);

/* If the connection is broken, tries to re-establish it a bounded number of
 * times with jittered back-off. Returns 0 when usable, -ECONNREFUSED if not. */
int pn_db_ensure_connected(pn_db *db);

/* A function called (in this process) each time a lost connection is made
 * again: for the node's metrics. */
void pn_db_on_reconnect(void (*fn)(void));

/* Whether the connection is up as far as libpq knows; tries nothing. For
 * housekeeping that should not wait for a database that is away. */
bool pn_db_connected(const pn_db *db);

/* Last error text (libpq message, with SQLSTATE when there was one). */
const char *pn_db_errmsg(const pn_db *db);
/* Last SQLSTATE ("" if none). */
const char *pn_db_sqlstate(const pn_db *db);

#endif
