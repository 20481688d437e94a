#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit_tally.h"
#include "dicom_values.h"
#include "db.h"
#include "garbage.h"
#include "index.h"
#include "log.h"
#include "metrics.h"
#include "nodes.h"
#include "part10.h"
#include "record.h"
#include "status.h"
#include "uid.h"
#include "writer.h"

/* pn_storage_file_parts() gives at most this many. */
#define PN_STORE_PARTS_MAX PN_WRITER_SLOTS

/* Phase timings of one instance, for the debug log. */
typedef struct {
	struct timespec t0;
	double receive, parse, index, sync, commit;
} phases;

struct pn_store_instance {
	pn_storage_file *file;
	struct timespec t0;
	int error; /* the first write's failure */
	char expect_study[PN_UID_MAX + 1];
	bool defer_after; /* pn_store_after is the caller's (STOW-RS) */
};

static double lap(struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double ms = (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
	*t = now;
	return ms;
}

static int sink_write(void *ctx, const void *buf, size_t len)
{
	return pn_storage_file_write(ctx, buf, len);
}

/* Sends the response; maps a failure to send to "association unusable". */
static int respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status, const char *comment,
                   unsigned short *ret_status)
{
	*ret_status = status;
	return pn_dcm_store_respond(assoc, cmd, status, comment) < 0 ? -EPROTO : 0;
}

static unsigned short problem_status(pn_record_problem p)
{
	switch (p) {
	case PN_RECORD_UID_MISMATCH:
		return PN_STATUS_UID_MISMATCH;
	case PN_RECORD_CLASS_MISMATCH:
		return PN_STATUS_CLASS_MISMATCH;
	default:
		return PN_STATUS_BAD_UID;
	}
}

/* The outcomes that end before anything is committed. */
static unsigned short refused_outcome(pn_index_outcome outcome, const pn_instance_rec *row, char *why, size_t whylen)
{
	switch (outcome) {
	case PN_INDEX_DUP_IGNORED:
		pn_info("instance %s already stored: kept the first copy (duplicate_policy = ignore)", row->sop_uid);
		return PN_STATUS_SUCCESS;
	case PN_INDEX_DUP_REJECTED:
		snprintf(why, whylen, "instance %s already stored (duplicate_policy = reject)", row->sop_uid);
		return PN_STATUS_DUPLICATE;
	case PN_INDEX_CONFLICT_STUDY:
		snprintf(why, whylen, "hierarchy conflict: study %s belongs to another patient than \"%s\"",
		         row->study_uid, row->patient_id);
		return PN_STATUS_HIERARCHY_CONFLICT;
	case PN_INDEX_CONFLICT_SERIES:
		snprintf(why, whylen, "hierarchy conflict: series %s belongs to another study than %s", row->series_uid,
		         row->study_uid);
		return PN_STATUS_HIERARCHY_CONFLICT;
	default:
		snprintf(why, whylen, "unexpected index outcome %d", (int)outcome);
		return PN_STATUS_OUT_OF_INDEX;
	}
}

/* The old file of a replaced instance: unlink it, then take it off the
 * garbage list (start-up recovery finishes this if we cannot). */
static void remove_replaced(const pn_store_ctx *ctx, const char *old_path)
{
	int rc = pn_storage_remove(ctx->storage, old_path);
	if (rc < 0 && rc != -ENOENT) {
		pn_warning("could not remove replaced file \"%s\": %s", old_path, strerror(-rc));
		return;
	}
	if (pn_index_garbage_done(ctx->db, old_path) < 0)
		pn_warning("replaced file \"%s\" removed but still listed: %s", old_path, pn_db_errmsg(ctx->db));
}

/* [retention] min_free_gib: refused before a byte is written, so that a
 * full disk never tears a file (a write that meets ENOSPC anyway is still
 * removed and answered 0xA700). One statvfs a store: about a microsecond. */
static int space_check(const pn_store_ctx *ctx, char *why, size_t whylen)
{
	uint64_t min = ctx->cfg->min_free_bytes, free_bytes;
	if (min == 0 || pn_storage_free_bytes(ctx->storage, &free_bytes) < 0 || free_bytes >= min)
		return 0;
	snprintf(why, whylen, "%.2f GiB free on the storage, below [retention] min_free_gib (%.2f)",
	         (double)free_bytes / 1073741824.0, (double)min / 1073741824.0);
	return -ENOSPC;
}

static void fold_failed(const pn_store_ctx *ctx)
{
	pn_warning("could not update the kept counts (the next store retries): %s", pn_db_errmsg(ctx->db));
}

/* After a COMMIT whose answer was lost: did it commit? A backend whose
 * client went away still finishes a COMMIT it has read, so first wait (up
 * to wait_ms) until the transaction, asked about by its id, is no longer
 * in progress; then the index says whether a row names our path (a later
 * replace may have taken the row since). -EAGAIN: not known yet. */
#define OUTCOME_WAIT_MS 1000
#define OUTCOME_POLL_MS 20
static int commit_outcome(const pn_store_ctx *ctx, const char *xact, const char *rel, int wait_ms, bool *ret)
{
	for (int waited = 0; xact[0]; waited += OUTCOME_POLL_MS) {
		bool committed;
		int r = pn_index_xact_committed(ctx->db, xact, &committed);
		if (r == 0 || r == -ENOENT)
			break;
		if (r != -EAGAIN)
			return r;
		if (waited >= wait_ms)
			return -EAGAIN;
		struct timespec ts = {.tv_nsec = OUTCOME_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (pn_db_ensure_connected(ctx->db) < 0)
		return -ECONNREFUSED;
	return pn_index_path_referenced(ctx->db, rel, ret);
}

static int abandoned_outcome(void *vctx, const char *rel, const char *xact)
{
	bool committed = false;
	int r = commit_outcome(vctx, xact, rel, 0, &committed);
	if (r == -ECONNREFUSED)
		return -EAGAIN; /* the database is still away */
	return r < 0 ? r : committed;
}

/* Files abandoned after a lost COMMIT answer are settled as soon as the
 * index can tell, not only at the next start. */
static void settle_abandoned(const pn_store_ctx *ctx)
{
	/* not while the database is away: a store reconnects first */
	if (!pn_db_connected(ctx->db) || !pn_storage_has_abandoned(ctx->storage))
		return;
	pn_storage_recovery st = {0};
	int left = pn_storage_settle_abandoned(ctx->storage, abandoned_outcome, (void *)ctx, &st);
	if (st.kept || st.removed)
		pn_warning("settled %u instance file(s) whose COMMIT answer was lost: %u committed and kept, %u not "
		           "committed and removed",
		           st.kept + st.removed, st.kept, st.removed);
	if (left < 0)
		pn_warning("could not settle the files whose COMMIT answer was lost (retried later): %s",
		           pn_db_errmsg(ctx->db));
}

void pn_store_settle(const pn_store_ctx *ctx)
{
	if (!ctx->db)
		return;
	settle_abandoned(ctx);
	if (pn_index_fold_pending(ctx->db) && pn_index_fold_send(ctx->db) < 0) {
		fold_failed(ctx);
		return;
	}
	if (pn_index_fold_wait(ctx->db) < 0)
		fold_failed(ctx);
}

/* How long a peer that stored may stay silent before its counts are
 * folded: a modality sends its next instance well within this. */
#define FOLD_IDLE_MS 10

void pn_store_idle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc)
{
	if (ctx->db && pn_index_fold_pending(ctx->db) && pn_dcm_wait_readable(assoc, FOLD_IDLE_MS) == 0)
		pn_store_settle(ctx);
}

/* Makes the named file durable and commits its row, in the order that
 * keeps every crash recoverable: file and tmp folder, then the link, then
 * COMMIT overlapped with the final folder's fsync. The file is disposed of
 * here. Returns the status to answer. */
static unsigned short commit_instance(const pn_store_ctx *ctx, pn_storage_file *file, pn_instance_rec *row, phases *ph,
                                      bool *ret_committed, char *why, size_t whylen)
{
	pn_index_outcome outcome;
	char *old_path = NULL;
	int rc, sync_rc = 0;
	/* The common case (an instance of the series this worker stored into
	 * last) sends BEGIN and INSERT at once: PostgreSQL works while we
	 * fsync. Otherwise the statements first, then the fsyncs. */
	bool overlapped = pn_index_begin_send(ctx->db, row) == 1;
	if (overlapped) {
		sync_rc = pn_storage_file_sync(file);
		if (sync_rc == 0)
			sync_rc = pn_storage_file_link(file);
		rc = pn_index_begin_finish(ctx->db, row, ctx->cfg->duplicate_policy, &outcome, &old_path);
	} else {
		rc = pn_index_begin(ctx->db, row, ctx->cfg->duplicate_policy, &outcome, &old_path);
	}
	ph->index = lap(&ph->t0);
	if (rc < 0) {
		pn_storage_file_discard(file);
		snprintf(why, whylen, "could not index: %s", pn_db_errmsg(ctx->db));
		return PN_STATUS_OUT_OF_INDEX;
	}
	if (outcome != PN_INDEX_STORED && outcome != PN_INDEX_REPLACED) {
		pn_storage_file_discard(file); /* the transaction was rolled back */
		free(old_path);
		return refused_outcome(outcome, row, why, whylen);
	}
	if (!overlapped) {
		/* Writeback has been running since the data arrived: these
		 * mostly wait for the tail and the journal. */
		sync_rc = pn_storage_file_sync(file);
		if (sync_rc == 0)
			sync_rc = pn_storage_file_link(file);
	}
	if (sync_rc < 0) {
		pn_index_rollback(ctx->db);
		snprintf(why, whylen, "could not store \"%s\": %s", row->path, strerror(-sync_rc));
		pn_storage_file_discard(file);
		free(old_path);
		return PN_STATUS_OUT_OF_STORAGE;
	}
	ph->sync = lap(&ph->t0);
	/* The final folder's fsync is batched (pn_storage_flush): until it,
	 * the durable tmp name is what recovery relinks from. */
	int commit_rc = pn_index_commit_send(ctx->db);
	if (commit_rc == 0)
		commit_rc = pn_index_commit_wait(ctx->db);
	ph->commit = lap(&ph->t0);

	bool committed = commit_rc == 0;
	if (commit_rc == -ECONNRESET) {
		char xact[PN_STORAGE_NOTE_MAX];
		snprintf(xact, sizeof(xact), "%s", pn_index_xact(ctx->db));
		int ask = commit_outcome(ctx, xact, row->path, OUTCOME_WAIT_MS, &committed);
		if (ask < 0) {
			/* Both names stay until the index can tell (settle_abandoned)
			 * or the next start. */
			pn_storage_file_abandon(file, xact);
			free(old_path);
			snprintf(why, whylen, "database connection lost during COMMIT; outcome unknown");
			return PN_STATUS_OUT_OF_INDEX;
		}
	}
	if (!committed) {
		snprintf(why, whylen, "could not commit: %s", pn_db_errmsg(ctx->db));
		pn_storage_file_discard(file);
		free(old_path);
		return PN_STATUS_OUT_OF_INDEX;
	}
	rc = pn_storage_file_done(file);
	if (rc < 0)
		pn_warning("could not fsync stored folders (%s); their tmp/ names stay for start-up recovery",
		           strerror(-rc));
	if (outcome == PN_INDEX_REPLACED) {
		if (old_path)
			remove_replaced(ctx, old_path);
		pn_info("instance %s replaced (duplicate_policy = replace)", row->sop_uid);
	}
	free(old_path);
	*ret_committed = true;
	return PN_STATUS_SUCCESS;
}

/* Whether the meta header at the start of these bytes names the deflated
 * syntax; *ret_offset is where its dataset begins. */
static bool is_deflated(const void *head, size_t len, size_t *ret_offset)
{
	pn_part10_meta m;
	if (pn_part10_meta_parse(head, len, &m) < 0 || strcmp(m.ts_uid, PN_TS_DEFLATED) != 0)
		return false;
	*ret_offset = m.dataset_offset;
	return true;
}

int pn_store_load(const char *path, uint64_t max_inflated, pn_dcm_ds **ret_ds)
{
	pn_part10_meta m;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool deflated = fd >= 0 && pn_part10_meta_read(fd, &m) == 0 && strcmp(m.ts_uid, PN_TS_DEFLATED) == 0;
	if (fd >= 0)
		close(fd);
	if (deflated)
		return pn_dcm_ds_load_deflated(path, m.dataset_offset, max_inflated, ret_ds);
	return pn_dcm_ds_load(path, ret_ds);
}

/* The store's reading of a file's bytes held in memory: -EAGAIN when it
 * must read the file instead (deflated: dcmtk would inflate it all into
 * memory; or the bytes do not parse so). */
static int load_parts(const pn_dcm_part *parts, size_t n, pn_dcm_ds **ret_ds)
{
	size_t offset;
	if (n == 0 || is_deflated(parts[0].data, parts[0].len, &offset))
		return -EAGAIN;
	int rc = pn_dcm_ds_load_parts(parts, n, ret_ds);
	if (rc == 0 || rc == -ENOMEM || rc == -ELOOP) /* the file holds the same */
		return rc;
	return -EAGAIN;
}

/* Refuses a dataset nested deeper than PN_DCM_MAX_NESTING (freed then). */
static int check_nesting(int rc, pn_dcm_ds **ds)
{
	if (rc < 0)
		return rc;
	int depth = pn_dcm_ds_nesting(*ds);
	if (depth >= 0 && depth <= PN_DCM_MAX_NESTING)
		return 0;
	pn_dcm_ds_free(*ds);
	*ds = NULL;
	return depth < 0 ? depth : -ELOOP;
}

/* The received dataset: from the writer's buffers when it fits in them,
 * else (or if they do not parse, or are deflated) from the file once it is
 * written, which is the authority. -EIO: the file could not be written;
 * -E2BIG: deflated, and inflating to more than max_inflated bytes; -ELOOP:
 * sequences nested more than PN_DCM_MAX_NESTING levels deep; other errors
 * as pn_dcm_ds_load. *ret_source says which, for the debug log. */
static int load_dataset(pn_storage_file *file, uint64_t max_inflated, pn_dcm_ds **ret_ds, const char **ret_source)
{
	const pn_storage_part *parts;
	int n = pn_storage_file_parts(file, &parts);
	*ret_source = "memory";
	int rc = -EAGAIN;
	if (n > 0 && n <= PN_STORE_PARTS_MAX) {
		pn_dcm_part p[PN_STORE_PARTS_MAX];
		for (int i = 0; i < n; i++)
			p[i] = (pn_dcm_part){parts[i].data, parts[i].len};
		rc = load_parts(p, (size_t)n, ret_ds);
	}
	if (rc == -EAGAIN) {
		*ret_source = "file";
		if (pn_storage_file_wait(file) < 0)
			return -EIO;
		rc = pn_store_load(pn_storage_file_tmp_path(file), max_inflated, ret_ds);
	}
	return check_nesting(rc, ret_ds);
}

int pn_store_load_bytes(const void *data, size_t len, const char *path, uint64_t max_inflated, pn_dcm_ds **ret_ds)
{
	pn_dcm_part p = {data, len};
	int rc = data ? load_parts(&p, 1, ret_ds) : -EAGAIN;
	if (rc == -EAGAIN)
		rc = pn_store_load(path, max_inflated, ret_ds);
	return check_nesting(rc, ret_ds);
}

int pn_store_final_path(const char *path, uint32_t generation, char rel[PN_REL_PATH_MAX])
{
	pn_dcm_ds *ds = NULL;
	/* No limit here: this file may be a committed instance's only name.
	 * Running short of scratch space is a failure, not "not ours". */
	int rc = pn_store_load(path, UINT64_MAX, &ds);
	/* Too deeply nested to read: this build never stored it. */
	if (rc < 0)
		return rc == -EBADMSG || rc == -ENOENT || rc == -ELOOP ? -EBADMSG : rc;
	char *series = NULL, *sop = NULL;
	rc = pn_record_path_uids(ds, &series, &sop);
	if (rc == 0 && pn_storage_rel_path(series, sop, generation, rel) < 0)
		rc = -EBADMSG;
	free(series);
	free(sop);
	pn_dcm_ds_free(ds);
	return rc;
}

/* How often a worker looks for nodes that are gone (pn_store_settle_ended). */
#define NODES_CHECK_S 10

/* Settling tmp/ against the index. */
typedef struct {
	pn_db *db;
	struct timespec deadline; /* for the claims; in the past: no waiting */
	bool claimed;             /* some ended worker's session is gone */
	bool legacy;              /* files of tmp/ itself: the workers' locks before node ids */
} settle_ctx;

static int settle_referenced(void *vctx, const char *rel, bool *ret)
{
	settle_ctx *c = vctx;
	return pn_index_path_referenced(c->db, rel, ret);
}

static int settle_identify(void *vctx, const char *path, uint32_t generation, char rel[PN_REL_PATH_MAX])
{
	(void)vctx;
	return pn_store_final_path(path, generation, rel);
}

static int settle_claim(void *vctx, int pid)
{
	settle_ctx *c = vctx;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long left = (c->deadline.tv_sec - now.tv_sec) * 1000L + (c->deadline.tv_nsec - now.tv_nsec) / 1000000L;
	bool taken = false;
	int r = pn_index_worker_take(c->db, c->legacy, pid, left > 0 ? (int)left : 0, &taken);
	c->claimed = c->claimed || (r == 0 && taken);
	return r < 0 ? r : taken;
}

static void settle_release(void *vctx, int pid)
{
	settle_ctx *c = vctx;
	pn_index_worker_release(c->db, c->legacy, pid);
}

static int settle_tmp_with(pn_db *db, pn_storage *storage, pn_store_recovery_kind kind, int wait_ms, bool ended_only,
                           pn_storage_recovery *st, bool *ret_claimed)
{
	settle_ctx c = {.db = db, .legacy = kind == PN_RECOVER_LEGACY};
	clock_gettime(CLOCK_MONOTONIC, &c.deadline);
	c.deadline.tv_sec += wait_ms / 1000;
	c.deadline.tv_nsec += (wait_ms % 1000) * 1000000L;
	pn_storage_settler k = {settle_referenced, settle_identify, settle_claim, settle_release, &c};
	if (kind == PN_RECOVER_GONE_NODE)
		k.claim = NULL, k.release = NULL; /* the caller holds that node's lock: none of its sessions is left */
	int rc = ended_only ? pn_storage_settle_ended(storage, &k, st) : pn_storage_recover(storage, &k, st);
	if (ret_claimed)
		*ret_claimed = c.claimed;
	return rc;
}

int pn_store_recover(pn_db *db, pn_storage *storage, pn_store_recovery_kind kind, int wait_ms,
                     pn_storage_recovery *ret_stats)
{
	return settle_tmp_with(db, storage, kind, wait_ms, false, ret_stats, NULL);
}

#define GARBAGE_BATCH 256

int pn_store_remove_garbage(pn_db *db, pn_storage *storage, void (*step)(void *ctx, size_t n), void *ctx,
                            long long *ret_removed, long long *ret_failed)
{
	long long removed = 0, failed = 0;
	int first = 0; /* a file's failure: the others go on */
	char *after = strdup("");
	int rc = after ? 0 : -ENOMEM;
	while (rc == 0) {
		char **paths = NULL;
		size_t n = 0;
		if ((rc = pn_garbage_next(db, after, GARBAGE_BATCH, &paths, &n)) < 0)
			break;
		if (n == 0) {
			pn_garbage_free(paths, n);
			break;
		}
		bool gone[GARBAGE_BATCH];
		const char *done[GARBAGE_BATCH];
		size_t k = 0;
		int frc = pn_storage_remove_many(storage, (const char *const *)paths, n, gone);
		if (frc < 0 && first == 0)
			first = frc;
		for (size_t i = 0; i < n; i++)
			if (gone[i])
				done[k++] = paths[i];
		failed += (long long)(n - k);
		if ((rc = pn_garbage_done(db, done, k)) == 0)
			removed += (long long)k;
		free(after);
		after = strdup(paths[n - 1]); /* a path that stays queued is not met again */
		if (!after && rc == 0)
			rc = -ENOMEM;
		pn_garbage_free(paths, n);
		if (step)
			step(ctx, n);
	}
	free(after);
	*ret_removed = removed;
	*ret_failed = failed;
	return rc < 0 ? rc : first;
}

static bool files_intact(void *arg)
{
	const pn_store_ctx *ctx = arg;
	int spares = 0;
	int lost = pn_storage_lost_files(ctx->storage, &spares);
	if (lost > 0 || spares > 0)
		pn_warning("another node took this node for gone while its database sessions were lost and removed "
		           "its temporary files: %d in progress (refused, not indexed), %d made ahead (made again)",
		           lost, spares);
	return lost == 0;
}

void pn_store_watch_files(const pn_store_ctx *ctx)
{
	pn_index_set_files_check(ctx->db, files_intact, (void *)ctx);
}

void pn_store_settle_ended(const pn_store_ctx *ctx)
{
	/* Housekeeping: never a reconnection, with its back-off, between two
	 * associations. */
	if (!pn_db_connected(ctx->db))
		return;
	pn_storage_recovery st = {0};
	bool claimed = false;
	int rc = settle_tmp_with(ctx->db, ctx->storage, PN_RECOVER_OWN, 0, true, &st, &claimed);
	if (st.kept || st.removed || st.strays)
		pn_warning("settled the temporary files of ended workers: %u committed instances finished, %u "
		           "uncommitted removed, %u stray temporary files removed",
		           st.kept, st.removed, st.strays);
	if (rc < 0)
		pn_warning("could not settle the temporary files of ended workers (retried later): %s (%s)",
		           strerror(-rc), pn_db_errmsg(ctx->db));
	/* Their sessions are gone: so are their backends, whose unfolded
	 * count deltas C-FIND would otherwise miss until a restart. */
	/* Nodes that are gone (their node lock free): now and then, since a
	 * running node's folder always has files (its spares). */
	if (pn_storage_due(ctx->storage, NODES_CHECK_S)) {
		unsigned nodes = 0;
		pn_storage_recovery ns = {0};
		rc = pn_nodes_settle_gone(ctx->db, ctx->cfg, ctx->storage, &nodes, &ns);
		if (nodes)
			pn_warning("settled the temporary files of %u node(s) that are gone: %u committed instances "
			           "finished, %u uncommitted removed, %u stray temporary files removed",
			           nodes, ns.kept, ns.removed, ns.strays);
		if (rc < 0)
			pn_warning(
			    "could not settle the temporary files of nodes that are gone (retried later): %s (%s)",
			    strerror(-rc), pn_db_errmsg(ctx->db));
		claimed = claimed || nodes > 0;
	}
	int shards = 0;
	if (claimed && pn_index_fold_orphans(ctx->db, &shards) < 0)
		pn_warning("could not fold the count deltas of ended workers (retried later): %s",
		           pn_db_errmsg(ctx->db));
	else if (shards > 0)
		pn_warning("count recovery: folded the count deltas left by %d connection(s) of ended workers", shards);
}

/* After the file is received: parse, validate, name, index, make durable,
 * commit (exactly what every way in shares). The file is disposed of here.
 * `op` and `source` name the way in and the sender for the log. Returns
 * the status to answer; *ret_committed when a row was committed. */
static unsigned short store_received(const pn_store_ctx *ctx, pn_storage_file *file, const char *op,
                                     const char *sop_class_uid, const char *sop_instance_uid, const char *source,
                                     const char *expect_study, pn_audit_tally *tally, phases *ph, bool *ret_committed,
                                     pn_store_where *ret_where, char *why, size_t whylen)
{
	unsigned short status;
	*ret_committed = false;
	int rc = pn_storage_file_written(file);
	ph->receive = lap(&ph->t0);
	if (rc < 0) {
		pn_storage_file_discard(file);
		snprintf(why, whylen, "could not write file: %s", strerror(-rc));
		pn_error("%s of %s from \"%s\" refused (0x%04X): %s", op, sop_instance_uid, source,
		         PN_STATUS_OUT_OF_STORAGE, why);
		return PN_STATUS_OUT_OF_STORAGE;
	}

	/* While the writer thread writes the file out and fsyncs it, parse the
	 * bytes still in memory and index them. */
	pn_dcm_ds *ds = NULL;
	pn_record *rec = NULL;
	pn_record_problem problem = PN_RECORD_OK;
	bool charset_ok = true;
	const char *parsed_from = NULL;
	rc = load_dataset(file, (uint64_t)ctx->cfg->max_inflated_mib << 20, &ds, &parsed_from);
	if (rc == -EIO && pn_storage_file_wait(file) < 0) {
		status = PN_STATUS_OUT_OF_STORAGE;
		snprintf(why, whylen, "could not write: %s", strerror(-pn_storage_file_wait(file)));
		goto refuse;
	}
	if (rc == -E2BIG) {
		status = PN_STATUS_OUT_OF_STORAGE;
		snprintf(why, whylen, "the deflated dataset inflates to more than max_inflated_mib (%d MiB)",
		         ctx->cfg->max_inflated_mib);
		goto refuse;
	}
	if (rc == -ELOOP) {
		status = PN_STATUS_CANNOT_PARSE;
		snprintf(why, whylen, "sequences are nested more than %d levels deep", PN_DCM_MAX_NESTING);
		goto refuse;
	}
	if (rc < 0 && rc != -EBADMSG) {
		status = PN_STATUS_OUT_OF_STORAGE;
		snprintf(why, whylen, "could not read the dataset back: %s", strerror(-rc));
		goto refuse;
	}
	if (rc < 0) {
		status = PN_STATUS_CANNOT_PARSE;
		snprintf(why, whylen, "the dataset cannot be parsed");
		goto refuse;
	}
	rc = pn_record_build(ds, sop_class_uid, sop_instance_uid, &rec, &problem, &charset_ok, why, whylen);
	if (rc == -EBADMSG) {
		status = problem_status(problem);
		goto refuse;
	}
	if (rc < 0) {
		status = PN_STATUS_OUT_OF_INDEX;
		snprintf(why, whylen, "could not read the attributes: %s", strerror(-rc));
		goto refuse;
	}
	pn_instance_rec *row = pn_record_row(rec);
	if (expect_study && expect_study[0] && (!row->study_uid || strcmp(row->study_uid, expect_study) != 0)) {
		status = PN_STATUS_STUDY_MISMATCH;
		snprintf(why, whylen, "the instance is of study %s, not of %s",
		         row->study_uid ? row->study_uid : "(none)", expect_study);
		goto refuse;
	}
	if (!charset_ok)
		pn_warning("instance %s: text not decodable from Specific Character Set \"%s\"; indexed with U+FFFD",
		           sop_instance_uid, row->specific_character_set ? row->specific_character_set : "");

	char rel[PN_REL_PATH_MAX];
	rc = pn_storage_rel_path(row->series_uid, row->sop_uid, pn_storage_file_generation(file), rel);
	if (rc == 0)
		rc = pn_storage_file_name(file, rel);
	if (rc < 0) {
		status = PN_STATUS_OUT_OF_STORAGE;
		snprintf(why, whylen, "could not name the file: %s", strerror(-rc));
		goto refuse;
	}
	ph->parse = lap(&ph->t0);
	row->path = pn_storage_file_rel_path(file);
	row->size = pn_storage_file_size(file);
	row->checksum = pn_storage_file_checksum(file);
	row->calling_ae = source;
	if (!ctx->db) {
		status = PN_STATUS_OUT_OF_INDEX;
		snprintf(why, whylen, "could not index: no database connection");
		goto refuse;
	}
	if (pn_index_fold_wait(ctx->db) < 0) /* a fold still running */
		fold_failed(ctx);
	int64_t size = row->size; /* row goes with rec below */
	bool direct = pn_storage_file_direct(file);
	if (ret_where) {
		snprintf(ret_where->study_uid, sizeof(ret_where->study_uid), "%s",
		         row->study_uid ? row->study_uid : "");
		snprintf(ret_where->series_uid, sizeof(ret_where->series_uid), "%s",
		         row->series_uid ? row->series_uid : "");
	}
	status = commit_instance(ctx, file, row, ph, ret_committed, why, whylen);
	if (pn_audit_tally_add(tally, row->study_uid, row->patient_id, row->patient_name, row->sop_class_uid,
	                       status == PN_STATUS_SUCCESS) < 0)
		pn_warning("audit: out of memory counting the instances from \"%s\"", source);
	pn_record_free(rec);
	pn_dcm_ds_free(ds);
	pn_metrics_instance(status, (uint64_t)size);
	if (status == PN_STATUS_SUCCESS) {
		pn_metrics_phase(PN_PHASE_RECEIVE, ph->receive);
		pn_metrics_phase(PN_PHASE_PARSE, ph->parse);
		pn_metrics_phase(PN_PHASE_INDEX, ph->index);
		pn_metrics_phase(PN_PHASE_SYNC, ph->sync);
		pn_metrics_phase(PN_PHASE_COMMIT, ph->commit);
	}
	if (status == PN_STATUS_OUT_OF_INDEX || status == PN_STATUS_OUT_OF_STORAGE)
		pn_error("%s of %s from \"%s\" refused (0x%04X): %s", op, sop_instance_uid, source, status, why);
	else if (status != PN_STATUS_SUCCESS)
		pn_warning("%s of %s from \"%s\" failed (0x%04X): %s", op, sop_instance_uid, source, status, why);
	else
		pn_debug("stored %s (%" PRId64 " bytes, parsed from %s, written %s): receive %.2f ms, parse %.2f, "
		         "index %.2f, fsync+link %.2f, commit %.2f",
		         sop_instance_uid, size, parsed_from, direct ? "direct" : "buffered", ph->receive, ph->parse,
		         ph->index, ph->sync, ph->commit);
	return status;

refuse:
	pn_record_free(rec);
	pn_dcm_ds_free(ds);
	pn_storage_file_discard(file);
	pn_metrics_instance(status, 0);
	if (status == PN_STATUS_OUT_OF_INDEX || status == PN_STATUS_OUT_OF_STORAGE)
		pn_error("%s of %s from \"%s\" refused (0x%04X): %s", op, sop_instance_uid, source, status, why);
	else
		pn_warning("%s of %s from \"%s\" failed (0x%04X): %s", op, sop_instance_uid, source, status, why);
	return status;
}

/* Once the answer is on its way: counts folded, abandoned files settled,
 * the next temporary file prepared. */
void pn_store_count(const pn_store_ctx *ctx, unsigned committed)
{
	for (unsigned i = 0; i < committed; i++)
		if (pn_index_fold_note(ctx->db) < 0) {
			fold_failed(ctx);
			break;
		}
}

void pn_store_after(const pn_store_ctx *ctx, unsigned committed)
{
	/* The counts C-FIND returns are folded in while the SCU reads the
	 * response and sends its next request (migration 006), every few
	 * instances. */
	pn_store_count(ctx, committed);
	if (committed)
		settle_abandoned(ctx);
	pn_storage_prepare(ctx->storage); /* failing, the next begin says why */
}

static void after_store(const pn_store_ctx *ctx, bool committed)
{
	pn_store_after(ctx, committed ? 1 : 0);
}

int pn_store_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                    pn_audit_tally *tally, unsigned short *ret_status)
{
	int timeout = ctx->cfg->dimse_timeout;
	char why[512] = "";

	/* Check the command's UIDs before anything is written, and drain the
	 * dataset that follows. */
	if (!pn_uid_valid(cmd->sop_instance_uid) || !pn_uid_valid(cmd->sop_class_uid)) {
		char shown[PN_UID_MAX + 1];
		snprintf(shown, sizeof(shown), "%s", cmd->sop_instance_uid);
		pn_utf8_sanitise(shown);
		pn_warning("C-STORE from \"%s\" refused: Affected SOP Instance/Class UID \"%s\" is not a valid UID",
		           calling_ae, shown);
		if (cmd->has_dataset && pn_dcm_discard_dataset(assoc, timeout) < 0)
			return -EPROTO;
		return respond(assoc, cmd, PN_STATUS_BAD_UID, "invalid Affected SOP Instance UID", ret_status);
	}

	if (space_check(ctx, why, sizeof(why)) < 0) {
		pn_warning("C-STORE of %s from \"%s\" refused (0x%04X): %s", cmd->sop_instance_uid, calling_ae,
		           PN_STATUS_OUT_OF_STORAGE, why);
		if (cmd->has_dataset && pn_dcm_discard_dataset(assoc, timeout) < 0)
			return -EPROTO;
		return respond(assoc, cmd, PN_STATUS_OUT_OF_STORAGE, "storage full", ret_status);
	}

	phases ph = {0};
	clock_gettime(CLOCK_MONOTONIC, &ph.t0);
	pn_storage_file *file = NULL;
	int rc = pn_storage_file_begin(ctx->storage, &file);
	if (rc < 0) {
		pn_error("C-STORE of %s refused: could not create a temporary file: %s", cmd->sop_instance_uid,
		         strerror(-rc));
		if (pn_dcm_discard_dataset(assoc, timeout) < 0)
			return -EPROTO;
		return respond(assoc, cmd, PN_STATUS_OUT_OF_STORAGE, "could not create file", ret_status);
	}

	pn_dcm_sink sink = {.write = sink_write, .ctx = file};
	rc = pn_dcm_store_receive(assoc, cmd, timeout, &sink);
	if (rc == -ETIMEDOUT || rc == -EPROTO || rc == -ENOMEM) {
		pn_storage_file_discard(file);
		pn_warning("C-STORE of %s from \"%s\" broken off while receiving: %s", cmd->sop_instance_uid,
		           calling_ae, rc == -ETIMEDOUT ? "timed out" : "network or protocol error");
		return rc;
	}
	if (rc < 0) {
		pn_storage_file_discard(file);
		pn_error("C-STORE of %s from \"%s\" refused (0x%04X): could not write: %s", cmd->sop_instance_uid,
		         calling_ae, PN_STATUS_OUT_OF_STORAGE, strerror(-rc));
		return respond(assoc, cmd, PN_STATUS_OUT_OF_STORAGE, "could not write file", ret_status);
	}
	bool committed = false;
	struct timespec t0 = ph.t0; /* the command arrived */
	unsigned short status = store_received(ctx, file, "C-STORE", cmd->sop_class_uid, cmd->sop_instance_uid,
	                                       calling_ae, NULL, tally, &ph, &committed, NULL, why, sizeof(why));
	rc = respond(assoc, cmd, status, status == PN_STATUS_SUCCESS ? NULL : why, ret_status);
	pn_metrics_op_done(PN_OP_C_STORE, lap(&t0)); /* from the command to the response sent */
	after_store(ctx, committed);
	return rc;
}

int pn_store_instance_begin(const pn_store_ctx *ctx, pn_store_instance **ret, char *why, size_t whylen)
{
	*ret = NULL;
	int rc = space_check(ctx, why, whylen);
	if (rc < 0)
		return rc;
	pn_store_instance *in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	clock_gettime(CLOCK_MONOTONIC, &in->t0);
	rc = pn_storage_file_begin(ctx->storage, &in->file);
	if (rc < 0) {
		snprintf(why, whylen, "could not create a temporary file: %s", strerror(-rc));
		free(in);
		return rc;
	}
	*ret = in;
	return 0;
}

int pn_store_instance_write(pn_store_instance *in, const void *buf, size_t len)
{
	if (in->error)
		return in->error;
	int rc = pn_storage_file_write(in->file, buf, len);
	if (rc < 0)
		in->error = rc;
	return rc;
}

int pn_store_instance_meta(pn_store_instance *in, const char *sop_class_uid, const char *sop_instance_uid,
                           const char *transfer_syntax_uid, const char *source)
{
	pn_dcm_cmd cmd;
	memset(&cmd, 0, sizeof(cmd));
	snprintf(cmd.sop_class_uid, sizeof(cmd.sop_class_uid), "%s", sop_class_uid);
	snprintf(cmd.sop_instance_uid, sizeof(cmd.sop_instance_uid), "%s", sop_instance_uid);
	snprintf(cmd.transfer_syntax, sizeof(cmd.transfer_syntax), "%s", transfer_syntax_uid);
	pn_dcm_sink sink = {.write = sink_write, .ctx = in->file};
	int rc = pn_dcm_write_meta(&cmd, source, &sink);
	if (rc < 0)
		in->error = rc;
	return rc;
}

unsigned short pn_store_instance_finish(const pn_store_ctx *ctx, pn_store_instance *in, const char *op,
                                        const char *sop_class_uid, const char *sop_instance_uid, const char *source,
                                        pn_audit_tally *tally, pn_store_where *ret_where, char *why, size_t whylen)
{
	phases ph = {.t0 = in->t0};
	if (ret_where)
		memset(ret_where, 0, sizeof(*ret_where));
	bool committed = false;
	unsigned short status;
	if (in->error) {
		pn_storage_file_discard(in->file);
		snprintf(why, whylen, "could not write file: %s", strerror(-in->error));
		pn_error("%s of %s from \"%s\" refused (0x%04X): %s", op, sop_instance_uid, source,
		         PN_STATUS_OUT_OF_STORAGE, why);
		status = PN_STATUS_OUT_OF_STORAGE;
	} else {
		status = store_received(ctx, in->file, op, sop_class_uid, sop_instance_uid, source, in->expect_study,
		                        tally, &ph, &committed, ret_where, why, whylen);
		if (ret_where) {
			ret_where->duplicate = status == PN_STATUS_SUCCESS && !committed;
			ret_where->committed = committed;
		}
	}
	bool defer = in->defer_after;
	free(in);
	if (!defer)
		after_store(ctx, committed);
	return status;
}

void pn_store_instance_defer_after(pn_store_instance *in)
{
	in->defer_after = true;
}

void pn_store_instance_expect_study(pn_store_instance *in, const char *study_uid)
{
	snprintf(in->expect_study, sizeof(in->expect_study), "%s", study_uid ? study_uid : "");
}

void pn_store_instance_discard(pn_store_instance *in)
{
	if (!in)
		return;
	pn_storage_file_discard(in->file);
	free(in);
}
