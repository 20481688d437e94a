/* pacsnodectl import: DICOM files and folders (recursively) through
 * exactly the C-STORE path after its receive (pn_store_instance_*:
 * validation, durable file, index row, duplicate policy, conflicts), in
 * --jobs processes at once, each with its own database connection and the
 * advisory lock a worker holds (a crashed import is settled like a crashed
 * worker). Each file gets one line unless stored; a summary counts stored,
 * duplicates and refused. Exit 0 when every file was stored or already
 * there. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl.h"
#include "db.h"
#include "dcm/pn_dcm.h"
#include "index.h"
#include "log.h"
#include "part10.h"
#include "progress.h"
#include "storage.h"
#include "store.h"
#include "uid.h"

#define DICOMDIR_CLASS "1.2.840.10008.1.3.10"

typedef struct {
	char **paths;
	size_t n, cap;
} file_list;

typedef struct {
	long long stored, duplicates, refused, not_dicom, skipped;
} counts;

static int add_path(file_list *l, const char *p)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		char **n = realloc(l->paths, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		l->paths = n;
		l->cap = cap;
	}
	if (!(l->paths[l->n] = strdup(p)))
		return -ENOMEM;
	l->n++;
	return 0;
}

static int collect(file_list *l, const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		fprintf(stderr, "pacsnodectl import: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (S_ISREG(st.st_mode))
		return add_path(l, path);
	if (!S_ISDIR(st.st_mode))
		return 0;
	struct dirent **names = NULL;
	int n = scandir(path, &names, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "pacsnodectl import: %s: %s\n", path, strerror(errno));
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < n; i++) {
		if (rc == 0 && strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0) {
			char child[4096];
			snprintf(child, sizeof(child), "%s/%s", path, names[i]->d_name);
			if (collect(l, child) < 0)
				rc = -1;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

/* One file through the store; its outcome counted, and said unless it
 * was stored. */
static void import_one(const pn_store_ctx *ctx, const char *path, counts *c)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	pn_part10_meta meta;
	if (fd < 0 || pn_part10_meta_read(fd, &meta) < 0) {
		printf("%s: not a DICOM Part 10 file: skipped\n", path);
		c->not_dicom++;
		if (fd >= 0)
			close(fd);
		return;
	}
	if (strcmp(meta.sop_class_uid, DICOMDIR_CLASS) == 0) {
		printf("%s: a DICOMDIR: the files it lists are imported from the folder\n", path);
		c->skipped++;
		close(fd);
		return;
	}
	if (!pn_uid_valid(meta.sop_instance_uid) || !pn_uid_valid(meta.sop_class_uid)) {
		printf("%s: refused (0xC001): Media Storage SOP Class/Instance UID is not a valid UID\n", path);
		c->refused++;
		close(fd);
		return;
	}
	pn_store_instance *in = NULL;
	char why[512] = "";
	if (pn_store_instance_begin(ctx, &in, why, sizeof(why)) < 0) {
		printf("%s: refused (0xA700): %s\n", path, why);
		c->refused++;
		close(fd);
		return;
	}
	int rc = pn_store_instance_meta(in, meta.sop_class_uid, meta.sop_instance_uid, meta.ts_uid, "IMPORT");
	static char buf[1 << 20];
	if (rc == 0 && lseek(fd, (off_t)meta.dataset_offset, SEEK_SET) < 0)
		rc = -errno;
	ssize_t n;
	while (rc == 0 && (n = read(fd, buf, sizeof(buf))) > 0)
		rc = pn_store_instance_write(in, buf, (size_t)n);
	close(fd);
	why[0] = '\0';
	pn_store_where where;
	unsigned short status = pn_store_instance_finish(ctx, in, "import", meta.sop_class_uid, meta.sop_instance_uid,
	                                                 "IMPORT", NULL, &where, why, sizeof(why));
	if (status == 0 && where.duplicate) {
		c->duplicates++;
		printf("%s: already stored (instance %s)\n", path, meta.sop_instance_uid);
	} else if (status == 0 || status == 0xB000 || status == 0xB006 || status == 0xB007) {
		c->stored++;
	} else {
		c->refused++;
		printf("%s: refused (0x%04X): %s\n", path, status, why);
	}
	fflush(stdout);
}

/* One process's share: files k, k + jobs, k + 2 jobs, ... */
static int run_share(const pn_config *cfg, const file_list *l, size_t k, size_t jobs, bool progress, counts *c)
{
	pn_store_ctx ctx = {.cfg = cfg};
	char err[512];
	if (pn_dcm_init(NULL, pn_log_get_level()) < 0) {
		fprintf(stderr, "pacsnodectl import: could not initialise the DICOM toolkit\n");
		return -1;
	}
	if (pn_db_connect(cfg->conninfo, &ctx.db, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl import: the database: %s\n", err);
		pn_db_free(ctx.db);
		return -1;
	}
	if (pn_db_migrate(ctx.db) < 0) {
		fprintf(stderr, "pacsnodectl import: the schema: %s\n", pn_db_errmsg(ctx.db));
		pn_db_free(ctx.db);
		return -1;
	}
	/* the lock a worker holds: recovery tells our files in flight from a
	 * crashed import's. An import is a node of its own ("<node_id>.import",
	 * its own tmp/ folder and node lock): a node starting while it runs
	 * sees another id at work, not its own still in use, and settles a
	 * crashed import's files once its lock is free (docs/scale.md). */
	char import_id[PN_NODE_ID_MAX + 1];
	snprintf(import_id, sizeof(import_id), "%.56s.import", cfg->node_id);
	pn_index_set_worker(ctx.db, import_id, (int)getpid());
	int rc = pn_storage_open(cfg->storage_root, import_id, &ctx.storage);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl import: the storage root \"%s\": %s\n", cfg->storage_root, strerror(-rc));
		pn_db_free(ctx.db);
		return -1;
	}
	pn_storage_set_write_mode(ctx.storage, cfg->write_mode);
	pn_store_watch_files(&ctx);
	pn_progress p;
	if (progress)
		pn_progress_start(&p, "import", (long long)l->n);
	for (size_t i = k; i < l->n; i += jobs) {
		struct stat st;
		import_one(&ctx, l->paths[i], c);
		if (progress)
			pn_progress_step(&p, stat(l->paths[i], &st) == 0 ? (uint64_t)st.st_size : 0);
	}
	if (progress)
		pn_progress_end(&p);
	pn_store_settle(&ctx);
	pn_storage_flush(ctx.storage);
	pn_storage_free(ctx.storage);
	pn_db_free(ctx.db);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnodectl import [--jobs N] PATH...\n"
	             "  stores DICOM files, and the files of folders (recursively), as C-STORE would\n"
	             "  --jobs N   processes at once (default 2)\n");
}

int pn_ctl_import(const pn_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"jobs", required_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	long jobs = 2;
	int opt;
	while ((opt = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
		switch (opt) {
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
	if (optind >= argc || jobs < 1 || jobs > 64) {
		usage(stderr);
		return 2;
	}
	file_list l = {0};
	int status = 0;
	for (int i = optind; i < argc; i++)
		if (collect(&l, argv[i]) < 0)
			status = 1;
	if ((size_t)jobs > l.n)
		jobs = l.n ? (long)l.n : 1;
	counts total = {0};
	int pipes[64][2];
	pid_t pids[64];
	fflush(stdout);
	for (long k = 0; k < jobs; k++) {
		if (pipe(pipes[k]) < 0 || (pids[k] = fork()) < 0) {
			fprintf(stderr, "pacsnodectl import: could not start a process: %s\n", strerror(errno));
			return 1;
		}
		if (pids[k] == 0) {
			close(pipes[k][0]);
			counts c = {0};
			int rc = run_share(cfg, &l, (size_t)k, (size_t)jobs, jobs == 1, &c);
			fflush(stdout); /* _exit does not */
			ssize_t w = write(pipes[k][1], &c, sizeof(c));
			_exit(rc == 0 && w == (ssize_t)sizeof(c) ? 0 : 1);
		}
		close(pipes[k][1]);
	}
	for (long k = 0; k < jobs; k++) {
		counts c = {0};
		if (read(pipes[k][0], &c, sizeof(c)) != (ssize_t)sizeof(c))
			status = 1;
		close(pipes[k][0]);
		int ws;
		if (waitpid(pids[k], &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
			status = 1;
		total.stored += c.stored;
		total.duplicates += c.duplicates;
		total.refused += c.refused;
		total.not_dicom += c.not_dicom;
		total.skipped += c.skipped;
	}
	printf("imported %zu files: %lld stored, %lld already stored, %lld refused, %lld not DICOM, %lld DICOMDIRs\n",
	       l.n, total.stored, total.duplicates, total.refused, total.not_dicom, total.skipped);
	for (size_t i = 0; i < l.n; i++)
		free(l.paths[i]);
	free(l.paths);
	if (total.refused || total.not_dicom)
		status = status ? status : 1;
	return status;
}
