/* The web's own lookups (browse.h). */
#include "browse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

static int one_file(pn_db *db, const char *sql, int n, const char *const *params, pn_instance_file *ret)
{
	if (pn_db_ensure_connected(db) < 0)
		return -EIO;
	pn_db_settle(db);
	pn_db_clear_error(db);
	PGresult *res = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pn_db_fail(db, res);
		return -EIO;
	}
	int found = PQntuples(res) > 0;
	if (found) {
		snprintf(ret->path, sizeof(ret->path), "%s", PQgetvalue(res, 0, 0));
		snprintf(ret->sop_uid, sizeof(ret->sop_uid), "%s", PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return found;
}

int pn_browse_middle_instance(pn_db *db, const char *series_uid, pn_instance_file *ret)
{
	const char *params[] = {series_uid};
	return one_file(db,
	                "WITH s AS (SELECT pk FROM series WHERE series_uid = $1)"
	                " SELECT i.path, i.sop_uid FROM instance i, s WHERE i.series_fk = s.pk"
	                " ORDER BY i.instance_number NULLS LAST, i.sop_uid"
	                " OFFSET (SELECT count(*) / 2 FROM instance i2, s WHERE i2.series_fk = s.pk) LIMIT 1",
	                1, params, ret);
}

int pn_browse_instance(pn_db *db, const char *study_uid, const char *series_uid, const char *sop_uid,
                       pn_instance_file *ret)
{
	const char *params[] = {study_uid, series_uid, sop_uid};
	return one_file(db,
	                "SELECT i.path, i.sop_uid FROM instance i JOIN series se ON se.pk = i.series_fk"
	                " JOIN study st ON st.pk = se.study_fk"
	                " WHERE i.sop_uid = $3 AND se.series_uid = $2 AND st.study_uid = $1",
	                3, params, ret);
}

int pn_browse_totals(pn_db *db, pn_index_totals *t)
{
	if (pn_db_ensure_connected(db) < 0)
		return -EIO;
	pn_db_settle(db);
	pn_db_clear_error(db);
	PGresult *res =
	    PQexec(db->conn, "SELECT (SELECT count(*) FROM patient), (SELECT count(*) FROM study),"
	                     " (SELECT count(*) FROM series), count(*), coalesce(sum(size), 0) FROM instance");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pn_db_fail(db, res);
		return -EIO;
	}
	t->patients = atoll(PQgetvalue(res, 0, 0));
	t->studies = atoll(PQgetvalue(res, 0, 1));
	t->series = atoll(PQgetvalue(res, 0, 2));
	t->instances = atoll(PQgetvalue(res, 0, 3));
	t->bytes = atoll(PQgetvalue(res, 0, 4));
	PQclear(res);
	return 0;
}

#define FILES_FROM                                                                                                     \
	" FROM instance i JOIN series se ON se.pk = i.series_fk JOIN study st ON st.pk = se.study_fk"                  \
	" WHERE ($1::text IS NULL OR st.study_uid = $1) AND ($2::date IS NULL OR i.received_at >= $2::date)"

int pn_browse_files_count(pn_db *db, const char *study_uid, const char *since, long long *ret_n)
{
	if (pn_db_ensure_connected(db) < 0)
		return -EIO;
	pn_db_settle(db);
	pn_db_clear_error(db);
	const char *params[] = {study_uid, since};
	PGresult *res = PQexecParams(db->conn, "SELECT count(*)" FILES_FROM, 2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		pn_db_fail(db, res);
		return -EIO;
	}
	*ret_n = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

/* The walk's current row, cleared at the next. */
static PGresult *files_row;

int pn_browse_files_start(pn_db *db, const char *study_uid, const char *since)
{
	if (pn_db_ensure_connected(db) < 0)
		return -EIO;
	pn_db_settle(db);
	pn_db_clear_error(db);
	const char *params[] = {study_uid, since};
	if (!PQsendQueryParams(
	        db->conn, "SELECT i.sop_uid, i.sop_class_uid, i.path, i.size, i.checksum" FILES_FROM " ORDER BY i.path",
	        2, NULL, params, NULL, NULL, 0) ||
	    !PQsetSingleRowMode(db->conn)) {
		pn_db_set_error_result(db, NULL);
		return -EIO;
	}
	return 0;
}

int pn_browse_files_next(pn_db *db, pn_stored_file *f)
{
	PQclear(files_row);
	files_row = NULL;
	PGresult *res = PQgetResult(db->conn);
	if (!res)
		return 0;
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_TUPLES_OK) {
		PQclear(res);
		while ((res = PQgetResult(db->conn)) != NULL)
			PQclear(res);
		return 0;
	}
	if (st != PGRES_SINGLE_TUPLE) {
		pn_db_set_error_result(db, res);
		PQclear(res);
		while ((res = PQgetResult(db->conn)) != NULL)
			PQclear(res);
		return -EIO;
	}
	files_row = res;
	f->sop_uid = PQgetvalue(res, 0, 0);
	f->sop_class_uid = PQgetvalue(res, 0, 1);
	f->path = PQgetvalue(res, 0, 2);
	f->size = atoll(PQgetvalue(res, 0, 3));
	f->checksum = PQgetvalue(res, 0, 4);
	return 1;
}

void pn_browse_files_stop(pn_db *db)
{
	PQclear(files_row);
	files_row = NULL;
	PGresult *res;
	PGcancel *c = PQgetCancel(db->conn);
	if (c) {
		char err[64];
		PQcancel(c, err, sizeof(err));
		PQfreeCancel(c);
	}
	while ((res = PQgetResult(db->conn)) != NULL)
		PQclear(res);
}

int pn_browse_path_known(pn_db *db, const char *path)
{
	pn_db_clear_error(db);
	const char *params[] = {path};
	PGresult *res =
	    PQexecParams(db->conn, "SELECT 1 FROM instance WHERE path = $1", 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		pn_db_fail(db, res);
		return -EIO;
	}
	int known = PQntuples(res) > 0;
	PQclear(res);
	return known;
}

int pn_browse_mark_missing(pn_db *db, const char *sop_uid)
{
	pn_db_clear_error(db);
	const char *params[] = {sop_uid};
	PGresult *res = PQexecParams(
	    db->conn, "UPDATE instance SET missing_since = coalesce(missing_since, now()) WHERE sop_uid = $1", 1, NULL,
	    params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		pn_db_fail(db, res);
		return -EIO;
	}
	PQclear(res);
	return 0;
}
