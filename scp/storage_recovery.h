/* Settling what a crash left in the storage's tmp/ against the index
 * (storage_recovery.c). See storage.h for the protocol. */
#ifndef PN_STORAGE_RECOVERY_H
#define PN_STORAGE_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "storage.h"
#include "storage_path.h"

/* Callback: does an index row name this relative path? 0 or negative errno. */
typedef int (*pn_storage_referenced_fn)(void *ctx, const char *rel, bool *ret_referenced);

typedef struct {
	unsigned kept;    /* committed before the crash: tmp name removed */
	unsigned removed; /* not committed: tmp and final removed */
	unsigned strays;  /* files in tmp/ holding no stored instance (still being
	                     received at the crash, or not ours): removed */
	unsigned waiting; /* left: their process's database session is still
	                     there (it may be finishing a COMMIT) */
} pn_storage_recovery;

/* Callback: the final relative path the store gave the instance in the
 * temporary file at `path`, whose name carries `generation`. -EBADMSG if
 * the file holds no instance the store could have named; other negative
 * errno codes stop the recovery. */
typedef int (*pn_storage_identify_fn)(void *ctx, const char *path, uint32_t generation, char rel[PN_REL_PATH_MAX]);

/* Callback for abandoned files: 1 if the instance at `rel` was committed,
 * 0 if not, -EAGAIN while that is not known yet, or another negative
 * errno. */
typedef int (*pn_storage_outcome_fn)(void *ctx, const char *rel, const char *note);

bool pn_storage_has_abandoned(const pn_storage *s);
/* Settles the abandoned files whose outcome is now known, as start-up
 * recovery would (kept and removed in *ret_stats). Stops asking at the
 * first failure other than -EAGAIN. Returns how many stay abandoned, or
 * that failure. */
int pn_storage_settle_abandoned(pn_storage *s, pn_storage_outcome_fn outcome, void *ctx,
                                pn_storage_recovery *ret_stats);

/* What settling tmp/ asks of its caller. claim takes the files of process
 * `pid`, whose name they carry: 1 once no database session of that
 * process is left (until release), 0 while one is, or a negative errno
 * (which stops the settling). NULL claim: every file may be settled. */
typedef struct {
	pn_storage_referenced_fn referenced;
	pn_storage_identify_fn identify;
	int (*claim)(void *ctx, int pid);
	void (*release)(void *ctx, int pid);
	void *ctx;
} pn_storage_settler;

/* At start-up, before any worker: finishes or undoes what a crash left in
 * tmp/. A negative return leaves the rest for the next start. */
int pn_storage_recover(pn_storage *s, const pn_storage_settler *k, pn_storage_recovery *ret_stats);

/* While the node runs: the same for the files of processes that have
 * ended (a worker that crashed). A process still running keeps its files;
 * so does one whose session claim cannot take yet, and any file changed
 * since the call began (a new process may carry an ended one's id). */
int pn_storage_settle_ended(pn_storage *s, const pn_storage_settler *k, pn_storage_recovery *ret_stats);

#endif
