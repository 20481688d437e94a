/* pacsnodectl verify: every file the index names is there, has its
 * recorded size and checksum, and is the instance the index says; files
 * under the storage root that no row names (orphans) are listed. --repair
 * removes orphans older than an hour (a younger one may be a store in
 * flight, linked but not yet committed) and marks the instances whose file
 * is missing. It only reads while the node serves. Exit 0 when all is well,
 * 1 when something was found, 2 for bad arguments. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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
#include "part10.h"
#include "progress.h"
#include "storage.h"

#define ORPHAN_AGE_S 3600

typedef struct {
	pn_db *db;
	pn_storage *storage;
	const char *root;
	bool repair;
	long long checked, missing, wrong_size, wrong_sum, wrong_file, orphans, young, removed;
	uint64_t bytes;
	char **missing_uids;
	size_t n_missing_uids;
} verify;

static void check_one(verify *v, const pn_stored_file *f)
{
	char *full = NULL;
	if (pn_storage_full_path(v->storage, f->path, &full) < 0) {
		printf("bad path in the index: %s (instance %s)\n", f->path, f->sop_uid);
		v->wrong_file++;
		return;
	}
	int fd = open(full, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		printf("missing: %s (instance %s)\n", full, f->sop_uid);
		v->missing++;
		char **m = realloc(v->missing_uids, (v->n_missing_uids + 1) * sizeof(*m));
		if (m && (m[v->n_missing_uids] = strdup(f->sop_uid)) != NULL) {
			v->missing_uids = m;
			v->n_missing_uids++;
		} else if (m) {
			v->missing_uids = m;
		}
		if (fd >= 0)
			close(fd);
		free(full);
		return;
	}
	if ((long long)st.st_size != f->size) {
		printf("wrong size: %s has %lld bytes, the index says %lld (instance %s)\n", full,
		       (long long)st.st_size, f->size, f->sop_uid);
		v->wrong_size++;
	} else {
		char sum[PN_CHECKSUM_LEN];
		uint64_t n = 0;
		int rc = pn_storage_checksum_fd(fd, sum, &n);
		v->bytes += n;
		if (rc < 0) {
			printf("unreadable: %s: %s (instance %s)\n", full, strerror(-rc), f->sop_uid);
			v->wrong_sum++;
		} else if (strcmp(sum, f->checksum) != 0) {
			printf("wrong checksum: %s is %s, the index says %s (instance %s)\n", full, sum, f->checksum,
			       f->sop_uid);
			v->wrong_sum++;
		} else {
			pn_part10_meta meta;
			if (pn_part10_meta_read(fd, &meta) < 0 || strcmp(meta.sop_instance_uid, f->sop_uid) != 0 ||
			    strcmp(meta.sop_class_uid, f->sop_class_uid) != 0) {
				printf("not the instance: %s does not hold instance %s\n", full, f->sop_uid);
				v->wrong_file++;
			}
		}
	}
	close(fd);
	free(full);
}

/* Every regular file under dir (relative rel) that no row names. */
static int walk(verify *v, const char *rel, time_t now)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s%s%s", v->root, rel[0] ? "/" : "", rel);
	DIR *d = opendir(path);
	if (!d) {
		printf("unreadable folder: %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		/* tmp/: the node's files in flight, settled by its recovery */
		if (!rel[0] && strcmp(e->d_name, "tmp") == 0)
			continue;
		char child[4096];
		snprintf(child, sizeof(child), "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
		char full[8192];
		snprintf(full, sizeof(full), "%s/%s", v->root, child);
		struct stat st;
		if (lstat(full, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (walk(v, child, now) < 0)
				rc = -1;
			continue;
		}
		int known = pn_browse_path_known(v->db, child);
		if (known < 0) {
			rc = -1;
			break;
		}
		if (known)
			continue;
		bool old = now - st.st_mtime > ORPHAN_AGE_S;
		if (!old) {
			printf("recent file no row names (a store in flight?): %s\n", full);
			v->young++;
			continue;
		}
		printf("orphan: %s (%lld bytes, no row names it)%s\n", full, (long long)st.st_size,
		       v->repair ? "; removed" : "");
		v->orphans++;
		if (v->repair && unlink(full) == 0)
			v->removed++;
	}
	closedir(d);
	return rc;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnodectl verify [--study UID] [--since YYYY-MM-DD] [--repair]\n"
	             "  checks every stored file against the index (present, size, checksum, instance)\n"
	             "  and lists the files no row names (orphans; not with --study or --since)\n"
	             "  --repair   removes orphans older than an hour, marks instances whose file is missing\n");
}

int pn_ctl_verify(const pn_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {{"study", required_argument, NULL, 's'},
	                                     {"since", required_argument, NULL, 'd'},
	                                     {"repair", no_argument, NULL, 'r'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	const char *study = NULL, *since = NULL;
	verify v = {.root = cfg->storage_root};
	int opt;
	while ((opt = getopt_long(argc, argv, "s:d:rh", opts, NULL)) != -1) {
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
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	char err[512];
	if (pn_db_connect(cfg->conninfo, &v.db, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl verify: the database: %s\n", err);
		pn_db_free(v.db);
		return 1;
	}
	int rc = pn_storage_open(cfg->storage_root, &v.storage);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl verify: the storage root \"%s\": %s\n", cfg->storage_root, strerror(-rc));
		pn_db_free(v.db);
		return 1;
	}
	long long total = 0;
	int status = 0;
	if (pn_browse_files_count(v.db, study, since, &total) < 0 || pn_browse_files_start(v.db, study, since) < 0) {
		fprintf(stderr, "pacsnodectl verify: %s\n", pn_db_errmsg(v.db));
		status = 1;
		goto out;
	}
	pn_progress p;
	pn_progress_start(&p, "verify", total);
	pn_stored_file f;
	uint64_t before = 0;
	while ((rc = pn_browse_files_next(v.db, &f)) == 1) {
		check_one(&v, &f);
		v.checked++;
		pn_progress_step(&p, v.bytes - before);
		before = v.bytes;
	}
	double took = pn_progress_end(&p);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl verify: the index walk failed: %s\n", pn_db_errmsg(v.db));
		status = 1;
		goto out;
	}
	if (v.repair)
		for (size_t i = 0; i < v.n_missing_uids; i++)
			if (pn_browse_mark_missing(v.db, v.missing_uids[i]) < 0)
				status = 1;
	if (!study && !since && walk(&v, "", time(NULL)) < 0)
		status = 1;
	printf("verified %lld files, %.1f MB in %.1f s (%.1f MB/s): %lld missing%s, %lld wrong size, %lld wrong "
	       "checksum, %lld not the instance named; %lld orphans%s, %lld recent unnamed files\n",
	       v.checked, (double)v.bytes / 1e6, took, took > 0 ? (double)v.bytes / 1e6 / took : 0.0, v.missing,
	       v.repair && v.missing ? " (marked)" : "", v.wrong_size, v.wrong_sum, v.wrong_file, v.orphans,
	       v.repair ? " (removed)" : "", v.young);
	if (v.missing || v.wrong_size || v.wrong_sum || v.wrong_file || (v.orphans && !v.repair))
		status = status ? status : 1;
out:
	for (size_t i = 0; i < v.n_missing_uids; i++)
		free(v.missing_uids[i]);
	free(v.missing_uids);
	pn_storage_free(v.storage);
	pn_db_free(v.db);
	return status;
}
