/* A throw-away database for the db/ tests and benchmark. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "testdb.h"

/* Appends key='value' to out, quoting as conninfo strings want. */
static void append_pair(char *out, size_t cap, const char *key, const char *val)
{
	size_t len = strlen(out);

	len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s='", key);
	for (; *val && len + 3 < cap; val++) {
		if (*val == '\'' || *val == '\\')
			out[len++] = '\\';
		out[len++] = *val;
	}
	if (len + 3 <= cap)
		memcpy(out + len, "' ", 3);
}

/* conninfo (string or URI) with dbname replaced, as key='value' pairs. */
static char *with_dbname(const char *conninfo, const char *dbname)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	size_t cap = 4 * (strlen(conninfo) + strlen(dbname)) + 512;
	char *out = calloc(1, cap);

	if (!opts || !out) {
		PQconninfoFree(opts);
		free(out);
		return NULL;
	}
	for (const PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val && strcmp(o->keyword, "dbname") != 0)
			append_pair(out, cap, o->keyword, o->val);
	append_pair(out, cap, "dbname", dbname);
	PQconninfoFree(opts);
	return out;
}

static int admin_command(const char *conninfo, const char *verb, const char *dbname, const char *tail)
{
	PGconn *admin = PQconnectdb(conninfo);
	char *ident, sql[512];
	PGresult *res;
	int ok;

	if (PQstatus(admin) != CONNECTION_OK) {
		fprintf(stderr, "testdb: could not connect with PN_TEST_PG_CONNINFO: %s", PQerrorMessage(admin));
		PQfinish(admin);
		return -1;
	}
	ident = PQescapeIdentifier(admin, dbname, strlen(dbname));
	snprintf(sql, sizeof sql, "%s %s %s", verb, ident, tail);
	PQfreemem(ident);
	res = PQexec(admin, sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "testdb: %s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(admin);
	return ok ? 0 : -1;
}

char *testdb_create(const char *admin, char *dbname, size_t dblen)
{
	struct timespec now;
	char *conninfo;

	clock_gettime(CLOCK_REALTIME, &now);
	srand((unsigned)now.tv_nsec ^ ((unsigned)getpid() << 16));
	snprintf(dbname, dblen, "pn_test_%ld_%08x", (long)getpid(), (unsigned)rand());
	if (admin_command(admin, "CREATE DATABASE", dbname, "TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'") != 0)
		return NULL;
	conninfo = with_dbname(admin, dbname);
	if (!conninfo) {
		fprintf(stderr, "testdb: could not parse PN_TEST_PG_CONNINFO\n");
		testdb_drop(admin, dbname);
	}
	return conninfo;
}

int testdb_drop(const char *admin, const char *dbname)
{
	return admin_command(admin, "DROP DATABASE", dbname, "WITH (FORCE)");
}
