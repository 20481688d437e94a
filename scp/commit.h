/* Storage Commitment Push Model SCP (PS3.4 Annex J;
 * docs/storage-commitment.md): the worker answers an N-ACTION-RQ once it
 * is recorded, computes the result from the index and the files, and
 * sends the N-EVENT-REPORT-RQ on the same association; what it could not
 * deliver there the sender process (commit_send.c) delivers on a new
 * association to the peer, with back-off, for [commitment] retry_for. */
#ifndef PN_COMMIT_H
#define PN_COMMIT_H

#include <stddef.h>

#include "commitment.h"
#include "config.h"
#include "dcm/pn_dcm.h"
#include "store.h"

/* At most this many references in one request (0x0213 beyond). */
#define PN_COMMIT_MAX_REFS 100000

/* The seconds a claim (the worker's or a sender's) holds a report: longer
 * than one delivery may take. */
int pn_commit_lease(const pn_config *cfg);

/* Serves an N-ACTION-RQ whose command was just read. 0: the association
 * goes on; 1: the peer asked for release while the report was due (it is
 * acknowledged: the association is over); -1: the association is broken
 * (the caller aborts). A report not delivered here is left to the
 * senders. */
int pn_commit_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                     const pn_peer *peer);

/* The request's result: computed now (files checked under `root`) and
 * written when it is not yet, else read back. 0 or the db's error. */
int pn_commit_result(pn_db *db, const char *root, long long pk, pn_commit_item **ret_items, size_t *ret_n);

/* The report's references from a result (pointing into items; free()). */
pn_dcm_commit_ref *pn_commit_refs(const pn_commit_item *items, size_t n);

/* The sender: one process of its own, forked by the listener while some
 * peer has allow = commit. Returns the exit status. */
int pn_commit_sender_main(const pn_config *cfg);

#endif
