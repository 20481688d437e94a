/* Storage commitment (PS3.4 Annex J): the requests recorded before their
 * N-ACTION-RSP, their results, and the queue of reports owed to peers
 * (migration 013, docs/storage-commitment.md).
 *
 * A report is delivered by whoever holds its claim: the worker that
 * answered the request (on the same association, at once), else a sender
 * (pn_commit_claim) on a new association. A claim is a lease: it moves
 * the row's next_attempt_at `lease_s` ahead, so that a holder that dies
 * leaves the row due again once the lease has run out. */
#ifndef PN_COMMITMENT_H
#define PN_COMMITMENT_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"

typedef struct {
	const char *sop_class_uid, *sop_uid;
} pn_commit_ref;

/* Records a request with its references (in order), claimed by the caller
 * for lease_s seconds. 0: a new request (*ret_pk); 1: the same requester
 * sent the same Transaction UID with the same references again (a retry
 * after a lost answer): its result is computed and reported again
 * (*ret_pk); -EEXIST: the Transaction UID belongs to another request;
 * -ECONNREFUSED, -EIO (pn_db_errmsg), -ENOMEM. */
int pn_commit_record(pn_db *db, const char *transaction_uid, const char *calling_ae, const pn_commit_ref *refs,
                     size_t n, int lease_s, long long *ret_pk);

/* One reference of a request, with what the index holds for it. */
typedef struct {
	char *sop_class_uid, *sop_uid; /* as requested */
	/* the instance row with that SOP Instance UID; NULL: none */
	char *stored_class, *path, *checksum;
	long long size;
	bool missing; /* verify --repair found its file missing */
	/* the result: 0 committed, else the Failure Reason (0008,1197);
	 * read back from the row once computed */
	unsigned short failure_reason;
} pn_commit_item;

/* The request's references in order, joined with the index. *ret_event_type
 * is 0 while its result is not computed (else 1 or 2). 0, -ENOENT (no such
 * request), -ECONNREFUSED, -EIO, -ENOMEM. */
int pn_commit_items(pn_db *db, long long pk, pn_commit_item **ret_items, size_t *ret_n, int *ret_event_type);
void pn_commit_items_free(pn_commit_item *items, size_t n); /* NULL is a no-op */

/* Writes the result: each item's failure_reason (0: committed) and the
 * event type (2 when any failed, else 1). */
int pn_commit_set_result(pn_db *db, long long pk, const pn_commit_item *items, size_t n);

typedef struct {
	long long pk;
	char transaction_uid[65];
	char calling_ae[17];
	int attempts;    /* before this one */
	double age_s;    /* since the request was recorded */
	bool has_result; /* event_type set */
} pn_commit_job;

/* Claims the pending request due first (FOR UPDATE SKIP LOCKED), for
 * lease_s seconds, counting an attempt. 1: claimed (*ret_job); 0: none due,
 * *ret_wait_s the seconds until the next is due (-1: none pending);
 * -ECONNREFUSED, -EIO. */
int pn_commit_claim(pn_db *db, int lease_s, pn_commit_job *ret_job, double *ret_wait_s);

/* The report was delivered (done) or given up (expired, `error` why; a
 * NULL error keeps the last failure's). */
int pn_commit_finish(pn_db *db, long long pk, bool delivered, const char *error);
/* A delivery failed: due again in delay_s seconds, `error` kept. Also
 * wakes the senders (pn_commit_wait) when delay_s is 0. */
int pn_commit_reschedule(pn_db *db, long long pk, double delay_s, const char *error);

/* For pacsnodectl status: reports owed (pending), given up (expired),
 * and the age in seconds of the oldest one owed (0 when none). */
typedef struct {
	long long pending, expired;
	double oldest_pending_s;
} pn_commit_counts;
int pn_commit_count(pn_db *db, pn_commit_counts *ret);

/* Senders: LISTEN for new due reports, then wait up to timeout_ms for one
 * to be announced. pn_commit_wait: 1 announced, 0 not, -ECONNREFUSED. */
int pn_commit_listen(pn_db *db);
int pn_commit_wait(pn_db *db, int timeout_ms);

#endif
