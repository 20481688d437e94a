/* Writing instances into the index (patient / study / series / instance).
 *
 * The caller (scp/store.c) has already validated UIDs and normalised every
 * typed value; this module only maps the record to parameterised SQL. */
#ifndef PN_INDEX_H
#define PN_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

typedef enum {
	PN_DUP_IGNORE = 0, /* keep the first copy, report success */
	PN_DUP_REPLACE,    /* the new copy replaces the old one */
	PN_DUP_REJECT,     /* refuse the new copy */
} pn_dup_policy;

typedef enum {
	PN_INDEX_STORED = 0,      /* new instance row committed */
	PN_INDEX_REPLACED,        /* existing row now points at the new file */
	PN_INDEX_DUP_IGNORED,     /* row existed, nothing changed */
	PN_INDEX_DUP_REJECTED,    /* row existed, nothing changed */
	PN_INDEX_CONFLICT_STUDY,  /* study belongs to another patient */
	PN_INDEX_CONFLICT_SERIES, /* series belongs to another study */
} pn_index_outcome;

/* A byte blob: an encoded dataset (explicit VR little endian, UTF-8 text)
 * holding the non-bulk attributes of one level. */
typedef struct {
	const void *data;
	size_t len;
} pn_blob;

/* All strings are NUL-terminated UTF-8, or NULL when the attribute is absent
 * or its value could not be normalised. Dates are "YYYY-MM-DD", times
 * "HH:MM:SS[.ffffff]", integers and decimals in C locale text, as accepted by
 * PostgreSQL's date/time/integer/float8 input functions. */
typedef struct {
	/* patient: key is (patient_id, issuer); issuer is "" when absent */
	const char *patient_id; /* never NULL: "" when absent */
	const char *issuer;     /* never NULL: "" when absent */
	const char *patient_name;
	const char *patient_birth_date;
	const char *patient_sex;
	pn_blob patient_attrs;

	/* study */
	const char *study_uid; /* validated, never NULL */
	const char *study_date;
	const char *study_time;
	const char *accession_number;
	const char *study_id;
	const char *study_description;
	const char *referring_physician_name;
	/* (0008,0201) TimezoneOffsetFromUTC as minutes east of UTC ("-300"),
	 * NULL when absent or invalid */
	const char *timezone_offset;
	pn_blob study_attrs;

	/* series */
	const char *series_uid; /* validated, never NULL */
	const char *modality;
	const char *series_number;
	const char *series_description;
	const char *series_date;
	const char *series_time;
	const char *body_part_examined;
	const char *protocol_name;
	pn_blob series_attrs;

	/* instance */
	const char *sop_uid;       /* validated, never NULL */
	const char *sop_class_uid; /* validated, never NULL */
	const char *instance_number;
	const char *image_type;
	const char *rows;
	const char *columns;
	const char *number_of_frames;
	const char *samples_per_pixel;
	const char *photometric_interpretation;
	const char *slice_thickness;
	const char *spacing_between_slices;
	const char *acquisition_date;
	const char *acquisition_time;
	const char *content_date;
	const char *content_time;
	pn_blob instance_attrs;

	/* storage facts */
	const char *transfer_syntax_uid;    /* never NULL */
	const char *path;                   /* relative to the storage root, never NULL */
	int64_t size;                       /* bytes of the Part-10 file */
	const char *checksum;               /* of the file: "xxh3-128:" and 32 lower-case hex digits */
	const char *calling_ae;             /* never NULL */
	const char *specific_character_set; /* as received, NULL when absent */
} pn_instance_rec;

/* Runs the whole index update for one instance in one transaction:
 * upsert patient, study and series (INSERT ... ON CONFLICT, never
 * check-then-insert), check the hierarchy, insert or apply the duplicate
 * policy to the instance, commit. Anything but STORED/REPLACED leaves the
 * database exactly as it was.
 *
 * Serialization failures and deadlocks are retried a bounded number of times;
 * a broken connection is re-established once and the transaction re-run.
 *
 * On PN_INDEX_REPLACED, *ret_old_path (if ret_old_path is given) receives the
 * previous relative path, malloc'ed, for the caller to unlink after commit.
 * Returns 0 with *ret_outcome set, or a negative code (-EIO, -ECONNREFUSED,
 * -ENOMEM) with nothing committed. */
int pn_index_store(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome *ret_outcome,
                   char **ret_old_path);

/* The same in two steps, so that the caller can make its file durable
 * while the statements run and overlap the COMMIT with its last fsync:
 * pn_index_begin() leaves the transaction open when the outcome is STORED
 * or REPLACED (rolled back otherwise); then pn_index_commit_send() and
 * pn_index_commit_wait(), or pn_index_rollback(). commit_wait returns 0,
 * -EIO (not committed) or -ECONNRESET (the connection broke: whether it
 * committed is unknown: keep pn_index_xact() and ask
 * pn_index_xact_committed()). */
int pn_index_begin(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome *ret_outcome,
                   char **ret_old_path);
/* The same first step, pipelined, for an instance of the series this
 * connection committed into last (the common case): BEGIN and the INSERT
 * are sent at once and the caller can fsync while PostgreSQL works.
 * begin_send returns 1 when sent, 0 when the fast path does not apply (call
 * pn_index_begin instead). begin_finish collects the outcome exactly as
 * pn_index_begin would give it, falling back to it on any trouble. */
int pn_index_begin_send(pn_db *db, const pn_instance_rec *rec);
int pn_index_begin_finish(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome *ret_outcome,
                          char **ret_old_path);
int pn_index_commit_send(pn_db *db);
int pn_index_commit_wait(pn_db *db);
void pn_index_rollback(pn_db *db);

/* Kept counts (migrations 004-006): a committed store leaves its count
 * deltas in shard rows of this connection, to be added to the patient,
 * study and series rows by a fold, in a transaction of its own.
 * fold_send starts one (outside a transaction) and returns at once: the
 * fold runs while the caller answers and reads its next request. Any later
 * call on this connection collects it first; fold_wait collects it and
 * returns its outcome, also of one an earlier call collected. fold_orphans
 * folds the deltas of connections that are gone (a crash, a lost
 * connection); fold_send calls it first on each new connection. 0 or
 * negative errno (-ECONNREFUSED, -EIO, -ENOMEM); a failed fold leaves the
 * deltas for the next.
 *
 * A fold costs about as much for one store's deltas as for fifty (a
 * transaction, the parents' UPDATEs): fold_note, after each committed
 * store, sends one only when PN_FOLD_EVERY stores or PN_FOLD_LAG_MS have
 * passed since the first unfolded one; fold_pending tells the caller to
 * fold when it goes idle. */
#define PN_FOLD_EVERY 32
#define PN_FOLD_LAG_MS 50
int pn_index_fold_send(pn_db *db);
int pn_index_fold_wait(pn_db *db);
int pn_index_fold_note(pn_db *db);
bool pn_index_fold_pending(const pn_db *db);
int pn_index_fold_orphans(pn_db *db, int *ret_shards);

/* Replaced files: a REPLACED outcome queues the old path in the same
 * transaction; the caller unlinks the file, then calls garbage_done.
 * What a crash left queued is worked off at start-up (garbage.h). */
int pn_index_garbage_done(pn_db *db, const char *path);

/* The id of the storing transaction pn_index_begin() left open (xid8 as
 * text), "" if it has none. Valid until the next begin. */
const char *pn_index_xact(const pn_db *db);
/* Whether that transaction committed, asked on this connection
 * (reconnecting if it is broken): 0 with *ret_committed, -EAGAIN while it
 * is still in progress (a backend whose client went away finishes the
 * COMMIT it has read), -ENOENT if the server no longer knows it or never
 * did (a standby promoted before the transaction reached it), -ECONNREFUSED,
 * -EIO. */
int pn_index_xact_committed(pn_db *db, const char *xact, bool *ret_committed);

/* Worker locks: a worker holds a session-level advisory lock named by its
 * node's number and its process id on every connection it stores
 * through, taken before the connection's first statement, after the
 * node lock shared (node.h; without that no statement runs). Whoever
 * takes a worker's lock knows that no session of that worker is left,
 * not even one still finishing a COMMIT whose client died: its files in
 * the node's tmp/ folder can be settled.
 * set_worker names the caller's node ([node] node_id; NULL or "" for
 * none) and process; worker_take tries to take the lock of worker `pid`
 * of the caller's node (legacy: of the key before node ids, for files
 * left in tmp/ itself by an earlier build) for up to wait_ms (0 with
 * *ret_taken; held until worker_release or the end of the connection). */
void pn_index_set_worker(pn_db *db, const char *node_id, int pid);
/* Asked on every new connection of the worker, once it holds the node
 * lock shared again: whether the caller's temporary files are all still
 * there. While none of the node's sessions held that lock (the database
 * restarted, failed over, or the network was cut), another node may have
 * taken the node for gone and settled its temporary folder: a file in
 * progress then has no name left, and the statement that was to index it
 * fails (-EIO) instead of committing a row without a file. NULL: none. */
void pn_index_set_files_check(pn_db *db, bool (*fn)(void *arg), void *arg);
int pn_index_worker_take(pn_db *db, bool legacy, int pid, int wait_ms, bool *ret_taken);
void pn_index_worker_release(pn_db *db, bool legacy, int pid);

/* Crash recovery: whether an instance row references this relative path. */
int pn_index_path_referenced(pn_db *db, const char *path, bool *ret_referenced);

#endif
