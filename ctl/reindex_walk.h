/* pacsnodectl reindex: the files under the storage root. Those at a path
 * the node gives an instance (storage_path.h) are kept, 48 bytes each, to
 * be taken in the order they were received: by modification time (the
 * store's last write, just before its commit), then by path; every other
 * file is named once, to the caller, and left as it is. */
#ifndef PN_REINDEX_WALK_H
#define PN_REINDEX_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage_path.h"

typedef struct {
	int64_t mtime_ns;
	uint8_t series[16], sop[16]; /* the path's two hashes */
	uint32_t generation;
} pn_walk_entry;

typedef enum {
	PN_WALK_TMP,        /* in tmp/: a store in flight when the node stopped */
	PN_WALK_OTHER,      /* a name the node does not give an instance */
	PN_WALK_NOT_FILE,   /* a symbolic link, a device, ... */
	PN_WALK_UNREADABLE, /* a folder or file that cannot be read (why: strerror) */
} pn_walk_other;

typedef struct {
	pn_walk_entry *v;
	size_t n, cap;
} pn_walk;

/* Walks the root; other(ctx, rel, kind, errno) for each file not kept.
 * Then sorts. 0 or -ENOMEM (or another -errno: the root cannot be read).
 * Without mtimes, the kept files' mtime_ns are 0 and only a file system
 * that does not say an entry's type in its folder costs a stat a file. */
int pn_walk_root(const char *root, bool mtimes, pn_walk *w,
                 void (*other)(void *ctx, const char *rel, pn_walk_other kind, int err), void *ctx);
void pn_walk_free(pn_walk *w);
/* Appends the file at rel, a path the node gives an instance
 * (pn_storage_rel_path_valid). 0 or -ENOMEM. */
int pn_walk_add(pn_walk *w, const char *rel, int64_t mtime_ns);
/* The path order: series, instance, generation (the byte order of
 * pn_walk_rel's names: their hex digits compare as the bytes they spell).
 * Sorts by it instead, for pacsnodectl verify. */
int pn_walk_cmp_path(const pn_walk_entry *a, const pn_walk_entry *b);
void pn_walk_sort_by_path(pn_walk *w);

/* The entry's relative path. */
void pn_walk_rel(const pn_walk_entry *e, char out[PN_REL_PATH_MAX]);

/* How many entries come before or at (mtime_ns, rel) in the order. */
size_t pn_walk_count_upto(const pn_walk *w, int64_t mtime_ns, const char *rel);

#endif
