/* Holds: what keeps a retrieve's instances from being deleted under it.
 *
 * A retrieve (C-MOVE, C-GET, WADO-RS, a download) takes, before it lists
 * its instances, a shared session-level advisory lock per study it names
 * (per PatientID at PATIENT level), and releases it once its files are
 * sent; pacsnodectl delete takes the same keys exclusively inside its
 * transaction (delete.h), and only by trying, so that it never makes a
 * retrieve wait behind a lock it is itself waiting for. What a delete
 * removed first is then gone from the retrieve's listing, and what a
 * retrieve listed stays until it is sent.
 *
 * Keys are text ("study:" UID, "patient:" PatientID) that PostgreSQL
 * hashes (hashtext) into the second key of the lock space 1347310129
 * ("PNR1"); a collision only makes a delete wait for an unrelated
 * retrieve. They show in pg_locks as locktype 'advisory', classid
 * 1347310129. */
#ifndef PN_HOLD_H
#define PN_HOLD_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"

typedef struct {
	char **keys;
	size_t n, cap;
	bool held;
	unsigned gen; /* the connection they were taken on */
} pn_hold;

/* Adds a study's or a PatientID's key (copied). 0 or -ENOMEM. */
int pn_hold_study(pn_hold *h, const char *study_uid);
int pn_hold_patient(pn_hold *h, const char *patient_id);

/* Takes every key shared, in one statement, waiting while a delete holds
 * one. 0 (also without keys), -ECONNREFUSED, -EIO (pn_db_errmsg). */
int pn_hold_take(pn_db *db, pn_hold *h);

/* Releases what take took (on the same connection: a lost one released
 * it already) and frees the keys; the hold is empty again. */
void pn_hold_release(pn_db *db, pn_hold *h);

#endif
