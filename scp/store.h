/* The C-STORE SCP: receive one instance, make it durable, index it,
 * answer. Success is sent only after the file, its folder and the index
 * row are all durable. */
#ifndef PN_STORE_H
#define PN_STORE_H

#include "config.h"
#include "db.h"
#include "dcm/pn_dcm.h"
#include "storage.h"
#include "storage_recovery.h"

typedef struct pn_audit pn_audit;
typedef struct pn_audit_tally pn_audit_tally;

typedef struct {
	const pn_config *cfg;
	pn_db *db;
	pn_storage *storage;
	pn_dcm_tls *tls_out; /* for outgoing associations to tls = yes peers; NULL: none configured */
	pn_audit *audit;     /* the audit trail (no-op when [audit] target = none) */
} pn_store_ctx;

/* Serves a C-STORE-RQ whose command was just read, and sends the response;
 * an instance indexed (or refused once parsed) is counted in `tally` (may
 * be NULL) for the audit trail.
 * Returns 0 if the association can go on (whatever status was sent), or a
 * negative code if it cannot (network failure). *ret_status is the status
 * sent. */
int pn_store_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                    pn_audit_tally *tally, unsigned short *ret_status);

/* An instance that arrives another way than C-STORE (STOW-RS; later
 * import): written into a temporary file by the caller (our meta header,
 * then the dataset's bytes as they came), then stored by exactly the
 * C-STORE path: validation, durable file, index row, duplicate policy,
 * hierarchy conflicts. */
typedef struct pn_store_instance pn_store_instance;
/* -ENOSPC below [retention] min_free_gib, or the temporary file's error;
 * why says which (the status is then 0xA700). */
int pn_store_instance_begin(const pn_store_ctx *ctx, pn_store_instance **ret_instance, char *why, size_t whylen);
/* The meta header (as a C-STORE's: these UIDs, the transfer syntax, the
 * source as Source AE Title when it is one). */
int pn_store_instance_meta(pn_store_instance *instance, const char *sop_class_uid, const char *sop_instance_uid,
                           const char *transfer_syntax_uid, const char *source);
int pn_store_instance_write(pn_store_instance *instance, const void *buf, size_t len);
/* Where an instance went: its study and series, once parsed ("" before). */
typedef struct {
	char study_uid[PN_UID_MAX + 1], series_uid[PN_UID_MAX + 1];
	bool duplicate; /* success without a new row: the same instance was there (duplicate_policy = ignore) */
	bool committed; /* a row was committed (what pn_store_after counts) */
} pn_store_where;
/* Stores it and frees `instance`; returns the C-STORE status (PS3.4 B.2.3,
 * also STOW-RS's Failure Reason) with a reason in why. `op` ("STOW-RS") and
 * `source` (who sent it) are for the log and the index row; ret_where may
 * be NULL. */
unsigned short pn_store_instance_finish(const pn_store_ctx *ctx, pn_store_instance *instance, const char *op,
                                        const char *sop_class_uid, const char *sop_instance_uid, const char *source,
                                        pn_audit_tally *tally, pn_store_where *ret_where, char *why, size_t whylen);
/* Leaves what follows the store to the caller: pn_store_count before its
 * answer, pn_store_after once the answer is on its way (STOW-RS: the
 * next temporary files are made while the client reads the answer and
 * sends its next request, as C-STORE makes them after its response). */
void pn_store_instance_defer_after(pn_store_instance *instance);
/* The kept counts of `committed` stores noted for a fold: sent every
 * PN_FOLD_EVERY stores or PN_FOLD_LAG_MS, pn_store_settle for the rest. */
void pn_store_count(const pn_store_ctx *ctx, unsigned committed);
/* What follows stores once their answer is on its way: their counts
 * (pn_store_count), files whose COMMIT answer was lost settled, the next
 * temporary files made. */
void pn_store_after(const pn_store_ctx *ctx, unsigned committed);
/* Refuses it (PN_STATUS_STUDY_MISMATCH) unless it is of this study (STOW-RS
 * to /studies/{study}). */
void pn_store_instance_expect_study(pn_store_instance *instance, const char *study_uid);
/* Drops it (its file removed); NULL is a no-op. */
void pn_store_instance_discard(pn_store_instance *instance);

/* A stored file's dataset, as the store reads it: a deflated one through a
 * scratch file (pn_dcm_ds_load_deflated), refused with -E2BIG beyond
 * max_inflated bytes. Errors as pn_dcm_ds_load and pn_dcm_ds_load_deflated. */
int pn_store_load(const char *path, uint64_t max_inflated, pn_dcm_ds **ret_ds);
/* A stored file's dataset exactly as the store reads a received one: from
 * the file's bytes in memory (all `len` of them, kept until the dataset is
 * freed) unless deflated, else (or data NULL) from the file at `path`; -ELOOP for
 * sequences nested more than PN_DCM_MAX_NESTING levels deep. Errors as
 * pn_store_load. For pacsnodectl reindex. */
int pn_store_load_bytes(const void *data, size_t len, const char *path, uint64_t max_inflated, pn_dcm_ds **ret_ds);

/* The final relative path a store gives the instance in the file at
 * `path` with this generation: for start-up recovery, which must agree
 * with the store. -EBADMSG if the file holds no instance it could store. */
int pn_store_final_path(const char *path, uint32_t generation, char rel[PN_REL_PATH_MAX]);

/* Whose temporary files a recovery settles: this node's (claimed by its
 * workers' locks), those an earlier build left in tmp/ itself (by the
 * locks of that build), or those of another node whose node lock the
 * caller holds exclusively (none of its sessions is left: no claims). */
typedef enum { PN_RECOVER_OWN, PN_RECOVER_LEGACY, PN_RECOVER_GONE_NODE } pn_store_recovery_kind;
/* Start-up recovery of the storage's temporary folder (pn_storage_recover)
 * against the index, waiting up to wait_ms in all for the database
 * sessions of the workers that made the files to end. */
int pn_store_recover(pn_db *db, pn_storage *storage, pn_store_recovery_kind kind, int wait_ms,
                     pn_storage_recovery *ret_stats);
/* The same, while the node runs, for the files of workers that have ended
 * (crashed): at a worker's start and at the end of each association. */
void pn_store_settle_ended(const pn_store_ctx *ctx);
/* Has every new database connection of ctx->db check, once it holds the
 * node lock again, that this process's temporary files are still there
 * (pn_index_set_files_check, pn_storage_lost_files): ctx must outlive
 * ctx->db. */
void pn_store_watch_files(const pn_store_ctx *ctx);

/* Works off the queue of files to remove (storage_garbage: replaced and
 * deleted instances), a batch at a time: each file unlinked, its folder
 * fsync'ed, then taken off the queue; one that cannot be removed stays
 * queued for the next time. step (if given) after each batch with how
 * many files it held. 0, or the first failure (the queue's, or a file's:
 * the other files go on); *ret_removed and *ret_failed count. */
int pn_store_remove_garbage(pn_db *db, pn_storage *storage, void (*step)(void *ctx, size_t n), void *ctx,
                            long long *ret_removed, long long *ret_failed);

/* Folds the kept counts of the stores that no fold took yet, waits for it
 * and logs a failure: before a release is acknowledged, at the end of an
 * association, before a query on it. */
void pn_store_settle(const pn_store_ctx *ctx);
/* Before waiting for the next command: if stores left counts unfolded and
 * the peer sends nothing for 10 ms, folds them (pn_store_settle). */
void pn_store_idle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc);

#endif
