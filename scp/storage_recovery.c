/* Settling what a crash left in tmp/: at start-up (pn_storage_recover),
 * for workers that ended while the node runs (pn_storage_settle_ended),
 * and for files whose COMMIT answer was lost (pn_storage_settle_abandoned).
 * Whose files may be settled is decided by the caller's claim (the
 * worker's database lock); what a file is, by the index. */
#include "storage_recovery.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage_internal.h"

/* A tmp/ entry whose final path is known and whose commit is settled:
 * committed, its final name is made to exist and durable before the tmp
 * name goes; not committed, both names go (the final one only if it is
 * this very file). A failure leaves the tmp name for later. */
static int settle_entry(pn_storage *s, const char *tmp_name, const char *rel, bool committed, pn_storage_recovery *st)
{
	if (committed) {
		struct stat fst;
		if (fstatat(s->root_fd, rel, &fst, 0) < 0 && errno == ENOENT) {
			pn_storage_ensure_dirs(s, rel);
			if (linkat(s->tmp_fd, tmp_name, s->root_fd, rel, 0) < 0)
				return -errno;
		}
		char dir[PN_REL_DIR_LEN + 1];
		snprintf(dir, sizeof(dir), "%.*s", PN_REL_DIR_LEN, rel);
		int rc = pn_storage_fsync_dir_at(s->root_fd, dir);
		if (rc < 0)
			return rc;
		st->kept++;
	} else {
		struct stat tst, fst;
		if (fstatat(s->tmp_fd, tmp_name, &tst, 0) == 0 && fstatat(s->root_fd, rel, &fst, 0) == 0 &&
		    tst.st_ino == fst.st_ino && tst.st_dev == fst.st_dev)
			unlinkat(s->root_fd, rel, 0);
		st->removed++;
	}
	unlinkat(s->tmp_fd, tmp_name, 0);
	return 0;
}

bool pn_storage_has_abandoned(const pn_storage *s)
{
	return s->n_abandoned > 0;
}

int pn_storage_settle_abandoned(pn_storage *s, pn_storage_outcome_fn outcome, void *ctx, pn_storage_recovery *ret_stats)
{
	pn_storage_recovery st = {0};
	int kept = 0, rc = 0;
	for (int i = 0; i < s->n_abandoned; i++) {
		int o = rc == 0 ? outcome(ctx, s->abandoned[i].rel, s->abandoned[i].note) : -EAGAIN;
		if (o == 0 || o == 1)
			o = settle_entry(s, s->abandoned[i].tmp_name, s->abandoned[i].rel, o == 1, &st);
		if (o < 0) {
			if (o != -EAGAIN && rc == 0)
				rc = o; /* the rest wait for the next call */
			if (kept != i)
				s->abandoned[kept] = s->abandoned[i];
			kept++;
		}
	}
	s->n_abandoned = kept;
	if (ret_stats)
		*ret_stats = st;
	return rc < 0 ? rc : kept;
}

/* The final path a tmp/ entry stands for: read from the name (earlier
 * builds) or from the file and the generation in its name. 0, -EBADMSG
 * for a name or file we did not make, other negative errno. */
static int final_path_of(pn_storage *s, const char *name, pn_storage_identify_fn identify, void *ctx,
                         char rel[PN_REL_PATH_MAX])
{
	if (pn_storage_rel_from_tmp(name, rel) == 0)
		return 0;
	uint32_t gen;
	if (!pn_storage_part_generation(name, &gen))
		return -EBADMSG;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s/%s", s->root, s->tmp_rel, name);
	int rc = identify(ctx, path, gen, rel);
	if (rc == -ENOENT)
		rc = -EBADMSG;
	if (rc == 0 && !pn_storage_rel_path_valid(rel))
		rc = -EBADMSG;
	return rc;
}

struct tmp_entry {
	char name[PN_REL_PATH_MAX];
	int pid; /* from the name; 0 if it has none */
};

static bool is_dir(int dirfd, const struct dirent *de)
{
	if (de->d_type != DT_UNKNOWN)
		return de->d_type == DT_DIR;
	struct stat st;
	return fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

/* Walks the folder open at dirfd: fn(name, is_dir, arg) for each entry
 * but . and ..; a non-zero return stops there and is returned. */
static int each_entry(int dirfd, int (*fn)(const char *name, bool dir, void *arg), void *arg)
{
	int fd = dup(dirfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			rc = fn(de->d_name, is_dir(dirfd, de), arg);
	closedir(d);
	return rc;
}

static int any_file(const char *name, bool dir, void *arg)
{
	(void)name;
	(void)arg;
	return dir ? 0 : 1;
}

bool pn_storage_tmp_empty(const pn_storage *s)
{
	return each_entry(s->tmp_fd, any_file, NULL) == 0;
}

struct names {
	const pn_storage *s;
	char **v;
	size_t n, cap;
};

static int add_node(const char *name, bool dir, void *arg)
{
	struct names *a = arg;
	const char *own = strchr(a->s->tmp_rel, '/'); /* "/<node_id>", or none */
	if (!dir || (own && strcmp(own + 1, name) == 0))
		return 0;
	int fd = openat(a->s->tmp_top_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0; /* gone meanwhile, or not a folder of ours */
	bool empty = each_entry(fd, any_file, NULL) == 0;
	close(fd);
	if (empty)
		return 0;
	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 8;
		char **m = realloc(a->v, cap * sizeof(*m));
		if (!m)
			return -ENOMEM;
		a->v = m;
		a->cap = cap;
	}
	if (!(a->v[a->n] = strdup(name)))
		return -ENOMEM;
	a->n++;
	return 0;
}

int pn_storage_tmp_nodes(const pn_storage *s, char ***ret_names, size_t *ret_n)
{
	struct names a = {.s = s};
	int rc = each_entry(s->tmp_top_fd, add_node, &a);
	if (rc < 0) {
		pn_storage_names_free(a.v, a.n);
		return rc;
	}
	*ret_names = a.v;
	*ret_n = a.n;
	return 0;
}

void pn_storage_names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static int list_tmp(pn_storage *s, struct tmp_entry **ret, size_t *ret_n)
{
	int fd = dup(s->tmp_fd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	struct tmp_entry *e = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 || len >= PN_REL_PATH_MAX)
			continue;
		if (is_dir(s->tmp_fd, de))
			continue; /* tmp/ itself holds the nodes' folders */
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			struct tmp_entry *m = realloc(e, cap * sizeof(*e));
			if (!m) {
				free(e);
				closedir(d);
				return -ENOMEM;
			}
			e = m;
		}
		memcpy(e[n].name, de->d_name, len + 1); /* fits: checked above */
		if (!pn_storage_part_pid(de->d_name, &e[n].pid))
			e[n].pid = 0;
		n++;
	}
	closedir(d);
	*ret = e;
	*ret_n = n;
	return 0;
}

enum { PID_LEAVE, PID_WAITING, PID_TAKEN, PID_CLAIMED };

/* Settles files of tmp/ (see pn_storage_recover and
 * pn_storage_settle_ended). */
static int settle_tmp(pn_storage *s, const pn_storage_settler *k, bool ended_only, pn_storage_recovery *ret_stats)
{
	pn_storage_recovery st = {0};
	/* The coarse clock: file times are taken from it (or from a finer
	 * one, never earlier), so a file made after this has no older time. */
	struct timespec t0;
	clock_gettime(CLOCK_REALTIME_COARSE, &t0);
	struct tmp_entry *e = NULL;
	size_t n = 0;
	int rc = list_tmp(s, &e, &n);
	if (rc < 0)
		return rc;
	struct {
		int pid, state;
	} *pids = calloc(n ? n : 1, sizeof(*pids));
	size_t n_pids = 0;
	bool changed = false;
	if (!pids) {
		free(e);
		return -ENOMEM;
	}
	/* Whose files may be settled: at start-up every process's once its
	 * database session is gone; while running, only ended processes'. */
	for (size_t i = 0; i < n && rc == 0; i++) {
		int pid = e[i].pid;
		size_t j = 0;
		while (j < n_pids && pids[j].pid != pid)
			j++;
		if (pid == 0 || j < n_pids)
			continue;
		int state = PID_TAKEN;
		if (ended_only && (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)) {
			state = PID_LEAVE;
		} else if (k->claim) {
			int c = k->claim(k->ctx, pid);
			if (c < 0)
				rc = c;
			state = c > 0 ? PID_CLAIMED : PID_WAITING;
		}
		pids[n_pids].pid = pid;
		pids[n_pids++].state = state;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		int state = ended_only ? PID_LEAVE : PID_TAKEN; /* a name without a pid */
		for (size_t j = 0; e[i].pid && j < n_pids; j++)
			if (pids[j].pid == e[i].pid)
				state = pids[j].state;
		if (state == PID_WAITING)
			st.waiting++;
		if (state != PID_TAKEN && state != PID_CLAIMED)
			continue;
		if (ended_only) {
			/* changed since we began: a new process under an ended
			 * one's id made it */
			struct stat x;
			if (fstatat(s->tmp_fd, e[i].name, &x, AT_SYMLINK_NOFOLLOW) < 0 ||
			    x.st_ctim.tv_sec > t0.tv_sec ||
			    (x.st_ctim.tv_sec == t0.tv_sec && x.st_ctim.tv_nsec >= t0.tv_nsec))
				continue;
		}
		char rel[PN_REL_PATH_MAX];
		rc = final_path_of(s, e[i].name, k->identify, k->ctx, rel);
		if (rc == -EBADMSG) {
			/* a file still being received, or not ours */
			unlinkat(s->tmp_fd, e[i].name, 0);
			st.strays++;
			changed = true;
			rc = 0;
			continue;
		}
		if (rc < 0)
			break;
		bool used = false;
		rc = k->referenced(k->ctx, rel, &used);
		if (rc == 0)
			rc = settle_entry(s, e[i].name, rel, used, &st);
		changed = changed || rc == 0; /* a failure leaves the tmp name for later */
	}
	for (size_t j = 0; j < n_pids; j++)
		if (pids[j].state == PID_CLAIMED && k->release)
			k->release(k->ctx, pids[j].pid);
	free(pids);
	free(e);
	if (changed)
		fsync(s->tmp_fd);
	if (ret_stats)
		*ret_stats = st;
	return rc;
}

int pn_storage_recover(pn_storage *s, const pn_storage_settler *k, pn_storage_recovery *ret_stats)
{
	return settle_tmp(s, k, false, ret_stats);
}

int pn_storage_settle_ended(pn_storage *s, const pn_storage_settler *k, pn_storage_recovery *ret_stats)
{
	return settle_tmp(s, k, true, ret_stats);
}
