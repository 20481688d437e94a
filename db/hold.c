/* Holds (hold.h): a retrieve's shared advisory locks. */
#include "hold.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"

static int add(pn_hold *h, const char *prefix, const char *value)
{
	size_t len = strlen(prefix) + strlen(value) + 1;
	char *k = malloc(len);
	if (!k)
		return -ENOMEM;
	snprintf(k, len, "%s%s", prefix, value);
	int r = pn_db_strings_add(&h->keys, &h->n, &h->cap, k);
	free(k);
	return r;
}

int pn_hold_study(pn_hold *h, const char *study_uid)
{
	return add(h, "study:", study_uid);
}

int pn_hold_patient(pn_hold *h, const char *patient_id)
{
	return add(h, "patient:", patient_id);
}

/* One statement over every key: lock or unlock. */
static int each_key(pn_db *db, const pn_hold *h, const char *fn)
{
	char *lit = pn_db_array_literal((const char *const *)h->keys, h->n);
	if (!lit)
		return -ENOMEM;
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT count(%s(" PN_HOLD_SPACE ", hashtext(k))) FROM unnest($1::text[]) k", fn);
	const char *params[] = {lit};
	PGresult *res = PQexecParams(db->conn, sql, 1, NULL, params, NULL, NULL, 0);
	free(lit);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_public_error(pn_db_fail(db, res));
	PQclear(res);
	return 0;
}

int pn_hold_take(pn_db *db, pn_hold *h)
{
	if (!h)
		return -EINVAL;
	if (h->n == 0 || h->held)
		return 0;
	int r = pn_db_call_begin(db);
	if (r < 0)
		return r;
	r = each_key(db, h, "pg_advisory_lock_shared");
	if (r == 0) {
		h->held = true;
		h->gen = db->conn_gen;
	}
	return r;
}

void pn_hold_release(pn_db *db, pn_hold *h)
{
	if (!h)
		return;
	if (db && h->held && h->gen == db->conn_gen && PQstatus(db->conn) == CONNECTION_OK) {
		pn_db_settle(db);
		each_key(db, h, "pg_advisory_unlock_shared"); /* a failure: the session's end releases them */
	}
	for (size_t i = 0; i < h->n; i++)
		free(h->keys[i]);
	free(h->keys);
	memset(h, 0, sizeof(*h));
}
