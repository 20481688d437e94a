/* pacsnodectl verify: every file the index names is there, has its
 * recorded size and checksum, and is the instance the index says; files
 * under the storage root that no row names (orphans) are listed. --repair
 * removes orphans older than an hour (a younger one may be a store in
 * flight, linked but not yet committed) and marks the instances whose file
 * is missing. It only reads while the node serves. Exit 0 when all is well,
 * 1 when something was found, 2 for bad arguments.
 *
 * The rows come from PostgreSQL one at a time, in path order; --jobs
 * threads check their files with a window of reads in flight
 * (verify_check.h) while another walks the root (verify_orphans.h), so
 * that a cold run goes at the disk's rate and the orphans cost the index
 * one question per candidate, not one per file. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "browse.h"
#include "ctl.h"
#include "db.h"
#include "progress.h"
#include "storage.h"
#include "verify_check.h"
#include "verify_orphans.h"

#define ORPHAN_AGE_S 3600

/* Files in flight per checking thread (verify_check.h). */
#define WINDOW_PER_JOB 16

typedef struct {
	pn_db *db;
	const char *root;
	bool repair;
	long long checked, missing, wrong_size, wrong_sum, wrong_file, orphans, young, removed;
	uint64_t bytes;
	char **missing_uids;
	size_t n_missing_uids;
	pn_orphans *walk; /* the orphan walk, when there is one */
	bool short_of_memory;
	double took; /* the checks' seconds */
} verify;

static void keep_missing(verify *v, const char *sop_uid)
{
	char **m = realloc(v->missing_uids, (v->n_missing_uids + 1) * sizeof(*m));
	if (!m)
		return;
	v->missing_uids = m;
	if ((m[v->n_missing_uids] = strdup(sop_uid)) != NULL)
		v->n_missing_uids++;
}

/* One file's check, said. */
static void report(verify *v, const pn_check *c)
{
	char full[4096];
	snprintf(full, sizeof(full), "%s/%s", v->root, c->rel);
	v->bytes += c->bytes;
	switch (c->status) {
	case PN_CHECK_OK:
		break;
	case PN_CHECK_BAD_PATH:
		printf("bad path in the index: %s (instance %s)\n", c->rel, c->sop_uid);
		v->wrong_file++;
		break;
	case PN_CHECK_MISSING:
		if (c->err && c->err != ENOENT)
			printf("missing: %s: %s (instance %s)\n", full, strerror(c->err), c->sop_uid);
		else
			printf("missing: %s (instance %s)\n", full, c->sop_uid);
		v->missing++;
		keep_missing(v, c->sop_uid);
		break;
	case PN_CHECK_WRONG_SIZE:
		printf("wrong size: %s has %lld bytes, the index says %lld (instance %s)\n", full, c->found_size,
		       c->size, c->sop_uid);
		v->wrong_size++;
		break;
	case PN_CHECK_UNREADABLE:
		printf("unreadable: %s: %s (instance %s)\n", full, strerror(c->err), c->sop_uid);
		v->wrong_sum++;
		break;
	case PN_CHECK_WRONG_SUM:
		printf("wrong checksum: %s is %s, the index says %s (instance %s)\n", full, c->found_sum, c->checksum,
		       c->sop_uid);
		v->wrong_sum++;
		break;
	case PN_CHECK_NOT_INSTANCE:
		printf("not the instance: %s does not hold instance %s\n", full, c->sop_uid);
		v->wrong_file++;
		break;
	}
}

/* A file no row named in the pass: an orphan (or a recent one) unless the
 * index names it now. -1 when the index cannot be asked. */
static int candidate(verify *v, const char *rel, time_t mtime, long long size, time_t now)
{
	int known = pn_browse_path_known(v->db, rel);
	if (known < 0)
		return -1;
	if (known)
		return 0;
	char full[8192];
	snprintf(full, sizeof(full), "%s/%s", v->root, rel);
	if (now - mtime <= ORPHAN_AGE_S) {
		printf("recent file no row names (a store in flight?): %s\n", full);
		v->young++;
		return 0;
	}
	printf("orphan: %s (%lld bytes, no row names it)%s\n", full, size, v->repair ? "; removed" : "");
	v->orphans++;
	if (v->repair && unlink(full) == 0)
		v->removed++;
	return 0;
}

/* The files under the root that no row names. -1 on an error (said). */
static int orphans(verify *v, time_t now)
{
	int rc = pn_orphans_finish(v->walk);
	if (rc < 0) {
		if (rc == -ENOMEM)
			fprintf(stderr, "pacsnodectl verify: the orphan walk: out of memory\n");
		else
			printf("unreadable folder: %s: %s\n", v->root, strerror(-rc));
		return -1;
	}
	const char *rel;
	int err;
	while (pn_orphans_next(v->walk, &rel, &err) == 1) {
		char full[8192];
		snprintf(full, sizeof(full), "%s/%s", v->root, rel);
		struct stat st;
		if (err) {
			printf("unreadable: %s: %s\n", full, strerror(err));
			rc = -1;
		} else if (lstat(full, &st) == 0) {
			if (candidate(v, rel, st.st_mtime, (long long)st.st_size, now) < 0) {
				fprintf(stderr, "pacsnodectl verify: the orphan walk: %s\n", pn_db_errmsg(v->db));
				return -1;
			}
		}
	}
	return rc;
}

/* Every file the rows name, `jobs` at once, said in path order. -1 when
 * the rows cannot be read (said). */
static int check_all(verify *v, long long total, int jobs)
{
	size_t window = (size_t)jobs * WINDOW_PER_JOB;
	pn_checker *c = NULL;
	int rc = pn_checker_create(v->root, jobs, window, &c);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl verify: could not start the checking threads: %s\n", strerror(-rc));
		return -1;
	}
	pn_progress p;
	pn_progress_start(&p, "verify", total);
	size_t added = 0, said = 0;
	bool more = true;
	while (more || said < added) {
		if (more && added - said < window) {
			pn_stored_file f;
			rc = pn_browse_files_next(v->db, &f);
			if (rc == 1) {
				if (v->walk && pn_orphans_named(v->walk, f.path) < 0)
					v->short_of_memory = true;
				pn_checker_add(c, added++, &f);
				continue;
			}
			more = false;
			if (rc < 0)
				break;
			continue;
		}
		const pn_check *k = pn_checker_wait(c, said);
		uint64_t before = v->bytes;
		report(v, k);
		said++;
		v->checked++;
		pn_progress_step(&p, v->bytes - before);
	}
	pn_checker_free(c);
	double took = pn_progress_end(&p);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl verify: the index walk failed: %s\n", pn_db_errmsg(v->db));
		return -1;
	}
	v->took = took;
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnodectl verify [--study UID] [--since YYYY-MM-DD] [--repair] [--jobs N]\n"
	             "  checks every stored file against the index (present, size, checksum, instance)\n"
	             "  and lists the files no row names (orphans; not with --study or --since)\n"
	             "  --repair   removes orphans older than an hour, marks instances whose file is missing\n"
	             "  --jobs N   files checked at once (default 2)\n");
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int pn_ctl_verify(const pn_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"study", required_argument, NULL, 's'}, {"since", required_argument, NULL, 'd'},
	    {"repair", no_argument, NULL, 'r'},      {"jobs", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
	const char *study = NULL, *since = NULL;
	verify v = {.root = cfg->storage_root};
	long jobs = 2;
	int opt;
	while ((opt = getopt_long(argc, argv, "s:d:rj:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's':
			study = optarg;
			break;
		case 'd':
			since = optarg;
			break;
		case 'r':
			v.repair = true;
			break;
		case 'j':
			jobs = strtol(optarg, NULL, 10);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || jobs < 1 || jobs > 64) {
		usage(stderr);
		return 2;
	}
	char err[512];
	if (pn_db_connect(cfg->conninfo, &v.db, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl verify: the database: %s\n", err);
		pn_db_free(v.db);
		return 1;
	}
	long long total = 0;
	int status = 0, rc;
	bool walk = !study && !since;
	if (walk && (rc = pn_orphans_start(cfg->storage_root, &v.walk)) < 0) {
		fprintf(stderr, "pacsnodectl verify: could not start the orphan walk: %s\n", strerror(-rc));
		status = 1;
		goto out;
	}
	if (pn_browse_files_count(v.db, study, since, &total) < 0 || pn_browse_files_start(v.db, study, since) < 0) {
		fprintf(stderr, "pacsnodectl verify: %s\n", pn_db_errmsg(v.db));
		status = 1;
		goto out;
	}
	if (check_all(&v, total, (int)jobs) < 0) {
		status = 1;
		goto out;
	}
	if (v.repair)
		for (size_t i = 0; i < v.n_missing_uids; i++)
			if (pn_browse_mark_missing(v.db, v.missing_uids[i]) < 0)
				status = 1;
	double walk_s = 0;
	if (walk) {
		double t0 = now_s();
		if (v.short_of_memory) {
			fprintf(stderr, "pacsnodectl verify: the orphan walk: out of memory\n");
			status = 1;
		} else if (orphans(&v, time(NULL)) < 0) {
			status = 1;
		}
		walk_s = now_s() - t0;
	}
	printf("verified %lld files, %.1f MB in %.1f s (%.1f MB/s): %lld missing%s, %lld wrong size, %lld wrong "
	       "checksum, %lld not the instance named; %lld orphans%s, %lld recent unnamed files",
	       v.checked, (double)v.bytes / 1e6, v.took, v.took > 0 ? (double)v.bytes / 1e6 / v.took : 0.0, v.missing,
	       v.repair && v.missing ? " (marked)" : "", v.wrong_size, v.wrong_sum, v.wrong_file, v.orphans,
	       v.repair ? " (removed)" : "", v.young);
	if (walk)
		printf(" (the orphan walk %.1f s more)", walk_s);
	printf("\n");
	if (v.missing || v.wrong_size || v.wrong_sum || v.wrong_file || (v.orphans && !v.repair))
		status = status ? status : 1;
out:
	for (size_t i = 0; i < v.n_missing_uids; i++)
		free(v.missing_uids[i]);
	free(v.missing_uids);
	pn_orphans_free(v.walk);
	pn_db_free(v.db);
	return status;
}
