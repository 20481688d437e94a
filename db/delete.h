/* Deleting a patient, a study, a series or an instance from the index
 * (pacsnodectl delete, docs/operations.md), with the parents it leaves
 * empty, in one transaction that also queues every file it unnamed in
 * storage_garbage; the caller then removes the files and takes them off
 * the queue (garbage.h), which the node's start-up and any later delete
 * finish after a crash. So no row is ever without its file.
 *
 * The transaction locks the rows parents first (patient, studies, series,
 * the order of the count folds), so that no store adds a child while it
 * runs (a store that meets a deleted parent runs again and makes it anew),
 * keeps the counts C-FIND returns exact (migrations 004-006: its own deltas
 * are folded before COMMIT; the folded instance counts of the series it
 * removes are taken off their study and patient, the unfolded deltas of
 * other connections going with the series), and tries the retrieves'
 * locks exclusively (hold.h). */
#ifndef PN_DELETE_H
#define PN_DELETE_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"

typedef enum {
	PN_DELETE_PATIENT,
	PN_DELETE_STUDY,
	PN_DELETE_SERIES,
	PN_DELETE_INSTANCE,
} pn_delete_level;

typedef struct {
	pn_delete_level level;
	const char *key;    /* PatientID, or the level's UID (validated by the caller) */
	const char *issuer; /* PATIENT: IssuerOfPatientID, "" for none */
	int test_pause_ms;  /* tests only: how long pn_delete_run waits holding the row locks */
} pn_delete_target;

/* One SOP class of one study, within what is deleted. */
typedef struct {
	char *sop_class_uid;
	long long instances, bytes;
} pn_delete_class;

typedef struct {
	char *study_uid;
	char *modalities; /* of the series deleted, "\"-separated; "" for none */
	bool whole;       /* the study goes (all its instances, or it is left empty) */
	long long series; /* series of it that go */
	pn_delete_class *classes;
	size_t n_classes;
} pn_delete_study;

/* What a target holds (pn_delete_preview) or what went (pn_delete_run). */
typedef struct {
	char *patient_id, *issuer, *patient_name; /* the patient's; name "" when none */
	bool patient_whole;                       /* the patient row goes */
	long long studies, series, instances, bytes;
	pn_delete_study *study;
	size_t n_study;
} pn_delete_summary;

void pn_delete_summary_free(pn_delete_summary *s); /* zeroes it; NULL is a no-op */

/* What the target would take with it, read without locks: 1 found, 0 no
 * such target, negative errno (-ECONNREFUSED, -EIO, -ENOMEM). */
int pn_delete_preview(pn_db *db, const pn_delete_target *t, pn_delete_summary *ret);

/* PATIENT targets that are not found: the issuers their PatientID has
 * (malloc'ed, each and the array; *ret_n of them). 0 or negative errno. */
int pn_delete_issuers(pn_db *db, const char *patient_id, char ***ret, size_t *ret_n); /* free: pn_garbage_free */

/* Deletes the target: 1 deleted and committed (*ret what went), 0 no such
 * target, -EBUSY a retrieve holds some of it (nothing changed: try again
 * later), -ESTALE the connection broke during COMMIT (whether it committed
 * is unknown: run it again to see), -ECONNREFUSED, -EIO. Deadlocks and
 * serialization failures are retried a bounded number of times. */
int pn_delete_run(pn_db *db, const pn_delete_target *t, pn_delete_summary *ret);

#endif
