/* The queue of files to remove (garbage.h). */
#include "garbage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

int pn_garbage_count(pn_db *db, long long *ret_n)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	PGresult *res = PQexec(db->conn, "SELECT count(*) FROM storage_garbage");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_public_error(pn_db_fail(db, res));
	*ret_n = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

int pn_garbage_next(pn_db *db, const char *after, size_t max, char ***ret_paths, size_t *ret_n)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char limit[24];
	snprintf(limit, sizeof(limit), "%zu", max);
	const char *params[] = {after, limit};
	/* A path a row names again is a file in use (a new copy that drew the
	 * same name): never removed. */
	PGresult *res =
	    PQexecParams(db->conn,
	                 "SELECT g.path FROM storage_garbage g WHERE g.path > $1 AND NOT EXISTS"
	                 " (SELECT 1 FROM instance i WHERE i.path = g.path) ORDER BY g.path LIMIT $2::integer",
	                 2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_public_error(pn_db_fail(db, res));
	size_t n = (size_t)PQntuples(res);
	char **paths = calloc(n ? n : 1, sizeof(*paths));
	for (size_t i = 0; paths && i < n; i++) {
		if (!(paths[i] = strdup(PQgetvalue(res, (int)i, 0)))) {
			pn_garbage_free(paths, i);
			paths = NULL;
		}
	}
	PQclear(res);
	if (!paths)
		return -ENOMEM;
	*ret_paths = paths;
	*ret_n = n;
	return 0;
}

int pn_garbage_done(pn_db *db, const char *const *paths, size_t n)
{
	if (n == 0)
		return 0;
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char *lit = pn_db_array_literal(paths, n);
	if (!lit)
		return -ENOMEM;
	const char *params[] = {lit};
	PGresult *res = PQexecParams(db->conn, "DELETE FROM storage_garbage WHERE path = ANY ($1::text[])", 1, NULL,
	                             params, NULL, NULL, 0);
	free(lit);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return pn_db_public_error(pn_db_fail(db, res));
	PQclear(res);
	return 0;
}

void pn_garbage_free(char **paths, size_t n)
{
	for (size_t i = 0; paths && i < n; i++)
		free(paths[i]);
	free(paths);
}
