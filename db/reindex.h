/* pacsnodectl reindex's side of the index (docs/operations.md): the rows
 * of the files found under the storage root, loaded in bulk (COPY), batch
 * by batch, each batch in one transaction with the progress marker
 * (migration 009).
 *
 * The caller hands the files in the order they were received, and each is
 * decided as pn_index_store() decided it then: the patient, study and
 * series rows are made of the first instance that names them; an instance
 * whose study belongs to another patient, or whose series to another
 * study, is not indexed; of two files of one instance the first stays
 * (duplicate_policy = replace: the later one). Nothing is merged silently:
 * every file not indexed has its verdict.
 *
 * The count triggers (migrations 004-006) leave their deltas in this
 * connection's shard rows, batch after batch; pn_reindex_finish() folds
 * them once. */
#ifndef PN_REINDEX_H
#define PN_REINDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "db.h"
#include "index.h"

#define PN_REINDEX_PATH_MAX 128

typedef struct {
	long long patients, instances;
	/* a reindex_progress row: a reindex began and did not finish */
	bool in_progress;
	char started_at[40];
	int64_t last_mtime_ns;               /* the key of the last file taken, */
	char last_path[PN_REINDEX_PATH_MAX]; /* "" when no batch committed */
	long long files, indexed, not_indexed;
} pn_reindex_state;

/* What the database holds, and of a reindex in progress. 0 or -EIO. */
int pn_reindex_state_get(pn_db *db, pn_reindex_state *ret);

/* The other sessions connected to this database under this connection's
 * application name (a node's workers, an import, another pacsnodectl):
 * how many, and their process ids ("123, 456", cut to len). 0 or -EIO. */
int pn_reindex_other_sessions(pn_db *db, int *ret_n, char *pids, size_t len);

/* Takes the reindex's own session lock (-EBUSY: another reindex holds it)
 * and sets the session up for a bulk load: its commits do not wait for
 * the WAL flush (a batch lost in a crash is lost with its marker, and
 * taken again). 0, -EBUSY or -EIO. */
int pn_reindex_begin(pn_db *db);

typedef enum {
	PN_REINDEX_INDEXED = 0,
	PN_REINDEX_REPLACING,       /* indexed; other_path, an earlier file of the instance, no longer is */
	PN_REINDEX_ALREADY,         /* a row names this very file already */
	PN_REINDEX_DUPLICATE,       /* not indexed: an earlier file of the instance (other_path) is */
	PN_REINDEX_REPLACED,        /* not indexed: a later file of the instance (other_path) is */
	PN_REINDEX_CONFLICT_STUDY,  /* not indexed: its study belongs to another patient (other_path's) */
	PN_REINDEX_CONFLICT_SERIES, /* not indexed: its series belongs to another study (other_path's) */
} pn_reindex_verdict;

typedef struct {
	const pn_instance_rec *rec; /* in: complete, path and checksum too */
	int64_t mtime_ns;           /* in: its received_at, and created_at of the rows it makes */
	pn_reindex_verdict verdict; /* out */
	/* out: the file the verdict names; "" when the other file's row was
	 * committed by an earlier batch and is not known by path */
	char other_path[PN_REINDEX_PATH_MAX];
} pn_reindex_item;

/* The end of a batch: the key of the last file it took (indexed or not),
 * and how many files it took and did not hand over as items (not DICOM,
 * unreadable, ...), for the progress row. */
typedef struct {
	int64_t mtime_ns;
	const char *path;
	long long files, not_indexed;
} pn_reindex_mark;

/* Decides items[0..n) in order, sends their rows by COPY (patients,
 * studies, series, then instances) and moves the marker, in one
 * transaction. 0 with every verdict set, or -EIO, -ECONNREFUSED or
 * -ENOMEM with nothing committed (the verdicts then mean nothing). n may
 * be 0 (only the marker moves). */
int pn_reindex_batch(pn_db *db, pn_reindex_item *items, size_t n, pn_dup_policy policy, const pn_reindex_mark *mark);

/* The end of the reindex: folds the count deltas (this session's and those
 * of interrupted runs), removes the progress row in the same transaction,
 * then updates the planner's statistics of the four tables. 0 or -EIO. */
int pn_reindex_finish(pn_db *db);

#endif
