/* What retention reads and writes in the index ([retention], migration
 * 010, docs/operations.md): the studies in the order they are to go, the
 * bytes stored, the lock that lets one node at a time delete, and the
 * access times retrieves leave. The deletions themselves go through
 * delete.h, like pacsnodectl delete's. */
#ifndef PN_DB_RETENTION_H
#define PN_DB_RETENTION_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "hold.h"

typedef enum {
	PN_RETENTION_RECEIVED, /* the study received longest ago goes first */
	PN_RETENTION_ACCESSED, /* the study retrieved (else received) longest ago */
} pn_retention_policy;

/* Where a walk of the studies continues: after this study. */
typedef struct {
	char clock[48]; /* the policy's timestamp as PostgreSQL prints it; "" from the start */
	long long pk;
} pn_retention_cursor;

typedef struct {
	char *study_uid;
	char *patient_id, *issuer, *patient_name;
	double clock_s; /* the policy's time, seconds since 1970 */
	long long instances, bytes;
	pn_retention_cursor at;
} pn_retention_study;

/* The next at most `max` studies after *after in the policy's order
 * (oldest first; malloc'ed, free with pn_retention_studies_free); *ret_n
 * is 0 at the end. 0 or negative errno (-ECONNREFUSED, -EIO, -ENOMEM). */
int pn_retention_next(pn_db *db, pn_retention_policy policy, const pn_retention_cursor *after, size_t max,
                      pn_retention_study **ret, size_t *ret_n);
void pn_retention_studies_free(pn_retention_study *list, size_t n);

/* The bytes the index's instances take (the sum of their sizes). */
int pn_retention_stored_bytes(pn_db *db, long long *ret_bytes);

/* Tries the session-level lock only one deleting node holds at a time;
 * *ret_got says whether this session holds it (it keeps it until the
 * connection ends). 0 or negative errno. */
int pn_retention_lock(pn_db *db, bool *ret_got);

/* A retrieve of what h holds (taken): the studies it names are marked
 * accessed now, at most once in 10 minutes each (a repeated retrieve then
 * writes nothing), skipping rows another transaction has locked (a store
 * folding its counts: the next retrieve marks it). 0 or negative errno. */
int pn_retention_touch(pn_db *db, const pn_hold *h);

#endif
