/* The walk of the storage root (reindex_walk.h). */
#include "reindex_walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
	pn_walk *w;
	bool mtimes;
	void (*other)(void *ctx, const char *rel, pn_walk_other kind, int err);
	void *ctx;
} walker;

static int hex_nibble(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c - 'a' + 10;
}

static void hex_bytes(const char *hex, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = (uint8_t)(hex_nibble(hex[2 * i]) << 4 | hex_nibble(hex[2 * i + 1]));
}

int pn_walk_add(pn_walk *w, const char *rel, int64_t mtime_ns)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 4096;
		pn_walk_entry *v = realloc(w->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		w->v = v;
		w->cap = cap;
	}
	pn_walk_entry *e = &w->v[w->n++];
	uint32_t generation = 0;
	pn_storage_rel_generation(rel, &generation);
	/* "ab/cd/<series>/<instance>.<generation>.dcm" */
	hex_bytes(rel + 6, e->series, 16);
	hex_bytes(rel + 6 + 33, e->sop, 16);
	e->generation = generation;
	e->mtime_ns = mtime_ns;
	return 0;
}

static int keep(walker *k, const char *rel, const struct stat *st)
{
	return pn_walk_add(k->w, rel, st ? (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec : 0);
}

/* Every file under the folder `rel` ("" the root itself) of the root open
 * at rootfd. */
static int walk(walker *k, int rootfd, const char *rel)
{
	int fd = rel[0] ? openat(rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW) : dup(rootfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		if (!rel[0])
			return -err;
		k->other(k->ctx, rel, PN_WALK_UNREADABLE, err);
		return 0;
	}
	bool in_tmp = strcmp(rel, "tmp") == 0 || strncmp(rel, "tmp/", 4) == 0;
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char child[4096];
		if (snprintf(child, sizeof(child), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >=
		    (int)sizeof(child)) {
			k->other(k->ctx, child, PN_WALK_UNREADABLE, ENAMETOOLONG);
			continue;
		}
		/* the entry's type from the folder itself where the file system
		 * gives it: a stat of every file only when its time is wanted */
		struct stat st;
		unsigned char type = de->d_type;
		bool stated = k->mtimes || type == DT_UNKNOWN;
		if (stated) {
			if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				k->other(k->ctx, child, PN_WALK_UNREADABLE, errno);
				continue;
			}
			type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
		}
		if (type == DT_DIR) {
			rc = walk(k, rootfd, child);
		} else if (type != DT_REG) {
			k->other(k->ctx, child, PN_WALK_NOT_FILE, 0);
		} else if (in_tmp) {
			k->other(k->ctx, child, PN_WALK_TMP, 0);
		} else if (!pn_storage_rel_path_valid(child)) {
			k->other(k->ctx, child, PN_WALK_OTHER, 0);
		} else {
			rc = keep(k, child, stated ? &st : NULL);
		}
	}
	closedir(d);
	return rc;
}

int pn_walk_cmp_path(const pn_walk_entry *x, const pn_walk_entry *y)
{
	int c = memcmp(x->series, y->series, sizeof(x->series));
	if (!c)
		c = memcmp(x->sop, y->sop, sizeof(x->sop));
	if (!c && x->generation != y->generation)
		c = x->generation < y->generation ? -1 : 1;
	return c;
}

static int cmp_path(const void *a, const void *b)
{
	return pn_walk_cmp_path(a, b);
}

/* The order: modification time, then path. */
static int cmp(const void *a, const void *b)
{
	const pn_walk_entry *x = a, *y = b;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return pn_walk_cmp_path(x, y);
}

void pn_walk_sort_by_path(pn_walk *w)
{
	if (w->n > 1)
		qsort(w->v, w->n, sizeof(*w->v), cmp_path);
}

int pn_walk_root(const char *root, bool mtimes, pn_walk *w,
                 void (*other)(void *ctx, const char *rel, pn_walk_other kind, int err), void *ctx)
{
	walker k = {w, mtimes, other, ctx};
	int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	int rc = walk(&k, rootfd, "");
	close(rootfd);
	if (rc == 0 && w->n > 1)
		qsort(w->v, w->n, sizeof(*w->v), cmp);
	return rc;
}

void pn_walk_free(pn_walk *w)
{
	free(w->v);
	w->v = NULL;
	w->n = w->cap = 0;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

void pn_walk_rel(const pn_walk_entry *e, char out[PN_REL_PATH_MAX])
{
	char series[33], sop[33];
	hex(e->series, 16, series);
	hex(e->sop, 16, sop);
	snprintf(out, PN_REL_PATH_MAX, "%.2s/%.2s/%s/%s.%08x.dcm", series, series + 2, series, sop, e->generation);
}

size_t pn_walk_count_upto(const pn_walk *w, int64_t mtime_ns, const char *rel)
{
	/* the first entry after the key, by bisection */
	size_t lo = 0, hi = w->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const pn_walk_entry *e = &w->v[mid];
		int c;
		if (e->mtime_ns != mtime_ns) {
			c = e->mtime_ns < mtime_ns ? -1 : 1;
		} else {
			char p[PN_REL_PATH_MAX];
			pn_walk_rel(e, p);
			c = strcmp(p, rel);
		}
		if (c <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}
