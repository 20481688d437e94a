/* Retention's reads and writes in the index (retention.h). */
#include "retention.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

/* The lock space of retention's one deleting node ("PNRT"), apart from the
 * retrieves' holds (PN_HOLD_SPACE). */
#define RETENTION_LOCK "1347310164, 1"

static const char *const clock_expr[] = {
    [PN_RETENTION_RECEIVED] = "created_at",
    [PN_RETENTION_ACCESSED] = "coalesce(accessed_at, created_at)",
};

/* The studies in order through study_received_idx / study_accessed_idx;
 * each with what it holds, summed over its instances only (a few hundred
 * rows an instance index scan away). */
#define NEXT_SQL                                                                                                       \
	"SELECT st.pk, st.study_uid, p.patient_id, p.issuer, coalesce(p.patient_name, ''), st.c::text,"                \
	" extract(epoch FROM st.c), x.n, x.b"                                                                          \
	" FROM (SELECT pk, study_uid, patient_fk, %s AS c FROM study %s ORDER BY %s, pk LIMIT $1) st"                  \
	" JOIN patient p ON p.pk = st.patient_fk"                                                                      \
	" CROSS JOIN LATERAL (SELECT count(i.pk), coalesce(sum(i.size), 0) FROM series se"                             \
	"  JOIN instance i ON i.series_fk = se.pk WHERE se.study_fk = st.pk) x (n, b)"                                 \
	" ORDER BY st.c, st.pk"

void pn_retention_studies_free(pn_retention_study *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++) {
		free(list[i].study_uid);
		free(list[i].patient_id);
		free(list[i].issuer);
		free(list[i].patient_name);
	}
	free(list);
}

int pn_retention_next(pn_db *db, pn_retention_policy policy, const pn_retention_cursor *after, size_t max,
                      pn_retention_study **ret, size_t *ret_n)
{
	if ((policy != PN_RETENTION_RECEIVED && policy != PN_RETENTION_ACCESSED) || max == 0 || max > 100000)
		return -EINVAL;
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	const char *expr = clock_expr[policy];
	bool from_start = !after || !after->clock[0];
	char where[128], sql[1024];
	if (from_start)
		where[0] = '\0';
	else
		snprintf(where, sizeof(where), "WHERE (%s, pk) > ($2::timestamptz, $3::bigint)", expr);
	snprintf(sql, sizeof(sql), NEXT_SQL, expr, where, expr);
	char limit[24], pk[24];
	snprintf(limit, sizeof(limit), "%zu", max);
	snprintf(pk, sizeof(pk), "%lld", after ? after->pk : 0);
	const char *params[] = {limit, after ? after->clock : "", pk};
	PGresult *res = PQexecParams(db->conn, sql, from_start ? 1 : 3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_public_error(pn_db_fail(db, res));
	size_t n = (size_t)PQntuples(res);
	pn_retention_study *list = calloc(n ? n : 1, sizeof(*list));
	if (!list) {
		PQclear(res);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		pn_retention_study *s = &list[i];
		int row = (int)i;
		s->at.pk = atoll(PQgetvalue(res, row, 0));
		s->study_uid = strdup(PQgetvalue(res, row, 1));
		s->patient_id = strdup(PQgetvalue(res, row, 2));
		s->issuer = strdup(PQgetvalue(res, row, 3));
		s->patient_name = strdup(PQgetvalue(res, row, 4));
		snprintf(s->at.clock, sizeof(s->at.clock), "%s", PQgetvalue(res, row, 5));
		s->clock_s = strtod(PQgetvalue(res, row, 6), NULL);
		s->instances = atoll(PQgetvalue(res, row, 7));
		s->bytes = atoll(PQgetvalue(res, row, 8));
		if (!s->study_uid || !s->patient_id || !s->issuer || !s->patient_name) {
			PQclear(res);
			pn_retention_studies_free(list, n);
			return -ENOMEM;
		}
	}
	PQclear(res);
	*ret = list;
	*ret_n = n;
	return 0;
}

int pn_retention_stored_bytes(pn_db *db, long long *ret_bytes)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	PGresult *res = PQexec(db->conn, "SELECT coalesce(sum(size), 0) FROM instance");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_public_error(pn_db_fail(db, res));
	*ret_bytes = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

int pn_retention_lock(pn_db *db, bool *ret_got)
{
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	PGresult *res = PQexec(db->conn, "SELECT pg_try_advisory_lock(" RETENTION_LOCK ")");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_public_error(pn_db_fail(db, res));
	*ret_got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return 0;
}

/* The hold's keys are "study:UID" and "patient:PatientID" (hold.c). */
#define TOUCH_SQL                                                                                                      \
	"UPDATE study SET accessed_at = now() WHERE pk IN (SELECT t.pk FROM study t"                                   \
	" WHERE (t.accessed_at IS NULL OR t.accessed_at < now() - interval '10 minutes')"                              \
	" AND (t.study_uid IN (SELECT substr(k, 7) FROM unnest($1::text[]) k WHERE k LIKE 'study:%')"                  \
	"  OR t.patient_fk IN (SELECT p.pk FROM patient p WHERE p.patient_id IN"                                       \
	"   (SELECT substr(k, 9) FROM unnest($1::text[]) k WHERE k LIKE 'patient:%')))"                                \
	" ORDER BY t.pk FOR UPDATE SKIP LOCKED)"

int pn_retention_touch(pn_db *db, const pn_hold *h)
{
	if (!h || h->n == 0)
		return 0;
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	char *lit = pn_db_array_literal((const char *const *)h->keys, h->n);
	if (!lit)
		return -ENOMEM;
	const char *params[] = {lit};
	PGresult *res = PQexecParams(db->conn, TOUCH_SQL, 1, NULL, params, NULL, NULL, 0);
	free(lit);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return pn_db_public_error(pn_db_fail(db, res));
	PQclear(res);
	return 0;
}
