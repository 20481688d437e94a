/* pacsnodectl reindex: the index rebuilt from the files under the storage
 * root into an empty database, when the database is lost and the files
 * are not (docs/operations.md).
 *
 * The files at a path the node gives an instance are taken in the order
 * they were received (modification time, then path), read by --jobs
 * threads, each whole for its checksum and parsed as the store parses a
 * received instance (reindex_read.h); the rows go in by COPY, a batch a
 * transaction, each batch deciding its files as the store decided them
 * then (db/reindex.h) and moving the progress marker with them: a run
 * interrupted and started again continues after its last committed batch.
 * Every file not indexed gets one line. Exit 0 when every file at an
 * instance's path was indexed and nothing else lay outside tmp/; 1
 * otherwise or when refused; 2 for bad arguments. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "db.h"
#include "dcm/pn_dcm.h"
#include "log.h"
#include "progress.h"
#include "reindex.h"
#include "reindex_read.h"
#include "reindex_walk.h"

#define BATCH_DEFAULT 1000

typedef struct {
	const char *root;
	long long tmp, other, unreadable; /* files the walk did not keep */
	/* of the files taken: */
	long long taken; /* files of the batches committed */
	long long indexed, already, bad, refused, misplaced, duplicates, conflicts, replaced;
	uint64_t bytes;
	/* seconds: the readers' reading, checksums and parsing (summed over
	 * the threads), the index's batches, the wait for the readers */
	double read_s, sum_s, parse_s, index_s, wait_s;
} tally;

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_other(void *ctx, const char *rel, pn_walk_other kind, int err)
{
	tally *t = ctx;
	switch (kind) {
	case PN_WALK_TMP:
		printf("%s/%s: a temporary file (a store in flight when the node stopped): not indexed; the node's "
		       "start-up recovery settles it\n",
		       t->root, rel);
		t->tmp++;
		break;
	case PN_WALK_OTHER:
		printf("%s/%s: not a name the node gives an instance: not indexed (pacsnodectl import stores a DICOM "
		       "file)\n",
		       t->root, rel);
		t->other++;
		break;
	case PN_WALK_NOT_FILE:
		printf("%s/%s: not a regular file: not indexed\n", t->root, rel);
		t->other++;
		break;
	case PN_WALK_UNREADABLE:
		printf("%s/%s: cannot be read: %s\n", t->root, rel, strerror(err));
		t->unreadable++;
		break;
	}
}

/* One line for a file that was read but not handed to the index. */
static void say_unread(tally *t, const pn_read_result *res)
{
	switch (res->status) {
	case PN_READ_NOT_DICOM:
		printf("%s/%s: not a DICOM Part 10 file: not indexed\n", t->root, res->rel);
		t->bad++;
		break;
	case PN_READ_UNREADABLE:
		printf("%s/%s: cannot be read: %s\n", t->root, res->rel, res->why);
		t->bad++;
		break;
	case PN_READ_REFUSED:
		printf("%s/%s: not indexed: %s\n", t->root, res->rel, res->why);
		t->refused++;
		break;
	case PN_READ_MISPLACED:
		printf("%s/%s: not indexed: %s (pacsnodectl import stores it there)\n", t->root, res->rel, res->why);
		t->misplaced++;
		break;
	case PN_READ_OK:
		break;
	}
}

/* One line for each file the index did not take as it is. */
static void say_verdict(tally *t, const pn_reindex_item *it)
{
	const pn_instance_rec *rec = it->rec;
	const char *other = it->other_path;
	char shown[PN_REINDEX_PATH_MAX + 8];
	snprintf(shown, sizeof(shown), "%s%s", other[0] ? " " : "", other);
	switch (it->verdict) {
	case PN_REINDEX_INDEXED:
		t->indexed++;
		break;
	case PN_REINDEX_ALREADY:
		t->already++;
		break;
	case PN_REINDEX_REPLACING:
		printf("%s/%s: indexed in place of an earlier file of instance %s%s (duplicate_policy = replace)\n",
		       t->root, rec->path, rec->sop_uid, shown);
		t->indexed++;
		t->replaced++;
		break;
	case PN_REINDEX_DUPLICATE:
		printf("%s/%s: not indexed: a second file of instance %s, the one received first%s is\n", t->root,
		       rec->path, rec->sop_uid, shown);
		t->duplicates++;
		break;
	case PN_REINDEX_REPLACED:
		printf("%s/%s: not indexed: a later file of instance %s%s is (duplicate_policy = replace)\n", t->root,
		       rec->path, rec->sop_uid, shown);
		t->duplicates++;
		break;
	case PN_REINDEX_CONFLICT_STUDY:
		printf("%s/%s: not indexed: hierarchy conflict: study %s belongs to another patient than \"%s\" (the "
		       "study's first file received%s decides)\n",
		       t->root, rec->path, rec->study_uid, rec->patient_id, shown);
		t->conflicts++;
		break;
	case PN_REINDEX_CONFLICT_SERIES:
		printf("%s/%s: not indexed: hierarchy conflict: series %s belongs to another study than %s (the "
		       "series' first file received%s decides)\n",
		       t->root, rec->path, rec->series_uid, rec->study_uid, shown);
		t->conflicts++;
		break;
	}
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: pacsnodectl reindex [--jobs N] [--batch N]\n"
	        "  rebuilds the index from the files under the storage root into an empty database\n"
	        "  (the node stopped); run again after an interruption, it continues where it was\n"
	        "  --jobs N    files read and parsed at once (default 2)\n"
	        "  --batch N   files a transaction (default %d, at most 10000)\n",
	        BATCH_DEFAULT);
}

/* Connects, and refuses unless the database is this reindex's to fill. */
static int open_database(const pn_config *cfg, pn_db **ret_db, pn_reindex_state *st)
{
	char err[512];
	pn_db *db = NULL;
	if (pn_db_connect(cfg->conninfo, &db, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl reindex: the database: %s", err);
		fprintf(stderr, "hint: create it first (as for a new node: docs/operations.md)\n");
		return -1;
	}
	*ret_db = db;
	if (pn_db_migrate(db) < 0) {
		fprintf(stderr, "pacsnodectl reindex: the schema: %s\n", pn_db_errmsg(db));
		return -1;
	}
	int others = 0;
	char pids[256];
	if (pn_reindex_other_sessions(db, &others, pids, sizeof(pids)) < 0 || pn_reindex_state_get(db, st) < 0) {
		fprintf(stderr, "pacsnodectl reindex: %s\n", pn_db_errmsg(db));
		return -1;
	}
	if (others > 0) {
		fprintf(stderr,
		        "pacsnodectl reindex: refused: %d other session(s) of the node or of pacsnodectl use the "
		        "database (backend process ids %s)\nhint: stop the node (and any import) first\n",
		        others, pids);
		return -1;
	}
	int rc = pn_reindex_begin(db);
	if (rc == -EBUSY) {
		fprintf(stderr, "pacsnodectl reindex: refused: another reindex of this database is running\n");
		return -1;
	}
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl reindex: %s\n", pn_db_errmsg(db));
		return -1;
	}
	if (!st->in_progress && (st->instances > 0 || st->patients > 0)) {
		fprintf(stderr,
		        "pacsnodectl reindex: refused: the database holds %lld instances and %lld patients, and no "
		        "interrupted reindex left them\nhint: reindex fills an empty database; to rebuild this one, "
		        "drop and create it first; pacsnodectl verify checks an index against the files\n",
		        st->instances, st->patients);
		return -1;
	}
	if (st->in_progress)
		printf("resuming the reindex begun at %s: %lld files taken so far (%lld indexed, %lld not), the last "
		       "%s\n",
		       st->started_at, st->files, st->indexed, st->not_indexed,
		       st->last_path[0] ? st->last_path : "(none)");
	return 0;
}

/* The test suite's interruption: SIGKILL after this many batches. */
static long kill_after(void)
{
	const char *v = getenv("PN_REINDEX_TEST_KILL_AFTER");
	return v ? strtol(v, NULL, 10) : 0;
}

/* Takes entries first..end in batches. 0, or -1 when the index failed
 * (said here). */
static int run(const pn_config *cfg, pn_db *db, const pn_walk *w, size_t first, long jobs, long batch, tally *t)
{
	pn_reader *r = NULL;
	size_t window = (size_t)batch * 2 + (size_t)jobs;
	int rc =
	    pn_reader_create(cfg->storage_root, w, first, window, (int)jobs, (uint64_t)cfg->max_inflated_mib << 20, &r);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl reindex: could not start the readers: %s\n", strerror(-rc));
		return -1;
	}
	pn_reindex_item *items = calloc((size_t)batch, sizeof(*items));
	if (!items) {
		pn_reader_free(r);
		fprintf(stderr, "pacsnodectl reindex: out of memory\n");
		return -1;
	}
	long batches = 0, stop_after = kill_after();
	pn_progress p;
	pn_progress_start(&p, "reindex", (long long)(w->n - first));
	int status = 0;
	for (size_t start = first; start < w->n && status == 0; start += (size_t)batch) {
		size_t end = start + (size_t)batch < w->n ? start + (size_t)batch : w->n, n = 0;
		long long unread = 0;
		for (size_t i = start; i < end; i++) {
			double t0 = now_s();
			pn_read_result *res = pn_reader_get(r, i);
			t->wait_s += now_s() - t0;
			t->read_s += (double)res->read_ns / 1e9;
			t->sum_s += (double)res->sum_ns / 1e9;
			t->parse_s += (double)res->parse_ns / 1e9;
			t->bytes += (uint64_t)res->size;
			pn_progress_step(&p, (uint64_t)res->size);
			if (res->status != PN_READ_OK) {
				say_unread(t, res);
				unread++;
				continue;
			}
			if (!res->charset_ok)
				printf(
				    "%s/%s: indexed with U+FFFD: text not decodable from its Specific Character Set, "
				    "as the store did\n",
				    t->root, res->rel);
			items[n++] = (pn_reindex_item){.rec = pn_record_row(res->rec), .mtime_ns = res->mtime_ns};
		}
		char last[PN_REL_PATH_MAX];
		pn_walk_rel(&w->v[end - 1], last);
		pn_reindex_mark mark = {.mtime_ns = w->v[end - 1].mtime_ns,
		                        .path = last,
		                        .files = (long long)(end - start),
		                        .not_indexed = unread};
		double t0 = now_s();
		rc = pn_reindex_batch(db, items, n, cfg->duplicate_policy, &mark);
		t->index_s += now_s() - t0;
		if (rc < 0) {
			fprintf(stderr,
			        "\npacsnodectl reindex: could not index the files up to %s/%s: %s\nhint: run it again "
			        "to continue after the last committed batch\n",
			        t->root, last, pn_db_errmsg(db));
			status = -1;
		}
		if (rc == 0)
			t->taken += (long long)(end - start);
		for (size_t i = 0; i < n && rc == 0; i++)
			say_verdict(t, &items[i]);
		fflush(stdout);
		for (size_t i = start; i < end; i++)
			pn_reader_release(r, i);
		if (rc == 0 && stop_after > 0 && ++batches == stop_after)
			raise(SIGKILL);
	}
	pn_progress_end(&p);
	pn_reader_free(r);
	free(items);
	return status;
}

int pn_ctl_reindex(const pn_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {{"jobs", required_argument, NULL, 'j'},
	                                     {"batch", required_argument, NULL, 'b'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	long jobs = 2, batch = BATCH_DEFAULT;
	int opt;
	while ((opt = getopt_long(argc, argv, "j:b:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			jobs = strtol(optarg, NULL, 10);
			break;
		case 'b':
			batch = strtol(optarg, NULL, 10);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || jobs < 1 || jobs > 64 || batch < 1 || batch > 10000) {
		usage(stderr);
		return 2;
	}
	if (pn_ctl_node_listening(cfg)) {
		fprintf(stderr,
		        "pacsnodectl reindex: refused: the node is running (it answers on %s:%d)\nhint: stop it "
		        "first (systemctl stop pacsnode)\n",
		        cfg->bind, cfg->port ? cfg->port : cfg->tls_port);
		return 1;
	}
	pn_db *db = NULL;
	pn_reindex_state st;
	if (open_database(cfg, &db, &st) < 0) {
		pn_db_free(db);
		return 1;
	}
	if (pn_dcm_init(NULL, pn_log_get_level()) < 0) {
		fprintf(stderr, "pacsnodectl reindex: could not initialise the DICOM toolkit\n");
		pn_db_free(db);
		return 1;
	}
	tally t = {.root = cfg->storage_root};
	pn_walk w = {0};
	double t_start = now_s();
	int rc = pn_walk_root(cfg->storage_root, true, &w, on_other, &t);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl reindex: the storage root \"%s\": %s\n", cfg->storage_root, strerror(-rc));
		pn_walk_free(&w);
		pn_db_free(db);
		return 1;
	}
	size_t first = 0;
	if (st.in_progress && st.last_path[0]) {
		first = pn_walk_count_upto(&w, st.last_mtime_ns, st.last_path);
		if ((long long)first != st.files) {
			/* Files came or went before the mark: take every file
			 * again; those indexed are known by their path. */
			printf("the files under the storage root changed since the interrupted run (%zu up to its last "
			       "file, %lld then): every file is taken again, those already indexed are passed over\n",
			       first, st.files);
			first = 0;
		}
	}
	double t_walked = now_s();
	int status = run(cfg, db, &w, first, jobs, batch, &t) < 0 ? 1 : 0;
	double t_loaded = now_s();
	pn_reindex_state whole = {0};
	if (status == 0 && pn_reindex_state_get(db, &whole) < 0) {
		fprintf(stderr, "pacsnodectl reindex: %s\n", pn_db_errmsg(db));
		status = 1;
	}
	if (status == 0 && pn_reindex_finish(db) < 0) {
		fprintf(stderr, "pacsnodectl reindex: could not fold the counts: %s\nhint: run it again to finish\n",
		        pn_db_errmsg(db));
		status = 1;
	}
	long long taken = t.taken;
	long long not_indexed = t.bad + t.refused + t.misplaced + t.duplicates + t.conflicts;
	printf("reindex of %s: %lld files taken, %lld instances indexed (%lld already), %lld not indexed (%lld not "
	       "DICOM or unreadable, %lld damaged or refused as C-STORE refuses them, %lld at another instance's path, "
	       "%lld "
	       "second files of an instance, %lld hierarchy conflicts); %lld earlier files replaced; %lld temporary "
	       "files in tmp/, %lld other files and %lld unreadable entries left as they are; %.1f MB read\n",
	       cfg->storage_root, taken, t.indexed, t.already, not_indexed, t.bad, t.refused, t.misplaced, t.duplicates,
	       t.conflicts, t.replaced, t.tmp, t.other, t.unreadable, (double)t.bytes / 1e6);
	double t_end = now_s(), took = t_end - t_start;
	printf("%.1f s, %.0f files/s, %.0f MB/s: walk and sort %.2f s, files %.2f s, fold and analyze %.2f s; in "
	       "the %ld readers: read %.2f s, checksum %.2f s, parse %.2f s; the index's batches %.2f s, waiting "
	       "for the readers %.2f s\n",
	       took, took > 0 ? (double)taken / took : 0.0, took > 0 ? (double)t.bytes / 1e6 / took : 0.0,
	       t_walked - t_start, t_loaded - t_walked, t_end - t_loaded, jobs, t.read_s, t.sum_s, t.parse_s, t.index_s,
	       t.wait_s);
	if (st.in_progress && status == 0)
		printf("the whole reindex, with its interrupted runs: %lld files, %lld indexed, %lld not\n",
		       whole.files, whole.indexed, whole.not_indexed);
	if (status == 0 && (not_indexed || t.replaced || t.other || t.unreadable || whole.not_indexed))
		status = 1;
	pn_walk_free(&w);
	pn_db_free(db);
	return status;
}
