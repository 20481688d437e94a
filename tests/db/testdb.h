/* A throw-away database for the db/ tests and benchmark. */
#ifndef PN_TESTDB_H
#define PN_TESTDB_H

#include <stddef.h>

/* Creates pn_test_<pid>_<random> (UTF8, C locale) on the server named by
 * the conninfo admin, and returns a malloc'ed conninfo for it. The name
 * goes to dbname (dblen >= 64). NULL on failure, reason on stderr. */
char *testdb_create(const char *admin, char *dbname, size_t dblen);

/* Drops it (WITH FORCE). Returns 0, or -1 with the reason on stderr. */
int testdb_drop(const char *admin, const char *dbname);

#endif
