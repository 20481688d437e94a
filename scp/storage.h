/* Durable instance files under the storage root.
 *
 * The protocol (see docs/design.md):
 *   1. write tmp/in-PID-N while receiving, starting writeback as it goes;
 *   2. once the dataset is parsed, rename it tmp/NAME (NAME encodes the
 *      final path, which depends on the Series Instance UID);
 *   3. fsync the file and the tmp folder;
 *   4. hard-link it to its final path (new folders made durable first);
 *   5. the caller commits the index row;
 *   6. at the end of the association or every PENDING_MAX instances, the
 *      final folders are fsync'ed and only then the tmp names unlinked
 *      (one folder fsync for many instances; until then the durable tmp
 *      name is what recovery relinks from).
 * A crash anywhere leaves tmp/in-* (never linked: removed) or tmp/NAME,
 * which says where the final file is; pn_storage_recover() then keeps it if
 * a row names it (re-linking it if needed) and removes it otherwise. So
 * there is never a row without a file, and never a file without a row once
 * recovery has run (it runs at every start). */
#ifndef PN_STORAGE_H
#define PN_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage_path.h"

typedef struct pn_storage pn_storage;
typedef struct pn_storage_file pn_storage_file;

/* Creates the root and its tmp folder if needed and opens them. */
int pn_storage_open(const char *root, pn_storage **ret_storage);
void pn_storage_free(pn_storage *s); /* NULL is a no-op */

/* Starts a temporary file with a provisional name: the spare one if
 * pn_storage_prepare made it. */
int pn_storage_file_begin(pn_storage *s, pn_storage_file **ret_file);
/* Creates the next temporary file ahead of time, off the store's critical
 * path. Negative errno on failure, which the next begin meets again and
 * reports. */
int pn_storage_prepare(pn_storage *s);
/* Appends bytes (and feeds the checksum). Negative errno on failure. */
int pn_storage_file_write(pn_storage_file *f, const void *buf, size_t len);
/* All bytes are in: the checksum is final, and the file's fsync starts in
 * the background. */
int pn_storage_file_written(pn_storage_file *f);
/* Gives the file its final relative path (renaming the temporary file). */
int pn_storage_file_name(pn_storage_file *f, const char *rel);
/* fsyncs the tmp folder, waits for the file's fsync, closes the file. */
int pn_storage_file_sync(pn_storage_file *f);
/* Links the file at its final path; folders it creates are made durable
 * (the link itself becomes durable in the batch of pn_storage_flush). */
int pn_storage_file_link(pn_storage_file *f);
/* After the index commit: queues the temporary name for removal after the
 * next batched folder fsync, and frees. A failed batch (returned here or by
 * pn_storage_flush) keeps the names for start-up recovery. */
int pn_storage_file_done(pn_storage_file *f);
/* At the end of an association: fsyncs the final folders of the queued
 * instances, then unlinks their temporary names and the spare file. */
int pn_storage_flush(pn_storage *s);
/* On any failure before the commit: removes whatever was written, frees. */
void pn_storage_file_discard(pn_storage_file *f);
/* After a commit whose outcome is unknown: keeps both names for start-up
 * recovery to settle, and frees. */
void pn_storage_file_abandon(pn_storage_file *f);

const char *pn_storage_file_tmp_path(const pn_storage_file *f); /* absolute */
const char *pn_storage_file_rel_path(const pn_storage_file *f);
int64_t pn_storage_file_size(const pn_storage_file *f);
/* "xxh3-128:" + 32 hex digits (XXH3 128-bit, canonical form), after
 * pn_storage_file_written(). A checksum against corruption, not a
 * cryptographic hash: at ~20 GB/s it costs 1/50 of SHA-256. */
const char *pn_storage_file_checksum(const pn_storage_file *f);

/* Removes a committed file that the index no longer names (replaced). */
int pn_storage_remove(pn_storage *s, const char *rel);

/* The absolute path of a stored file (malloc'ed), for readers: -EINVAL if
 * `rel` is not a path this module makes (never trust a path from the
 * index blindly), -ENOMEM. */
int pn_storage_full_path(const pn_storage *s, const char *rel, char **ret_path);

/* Callback: does an index row name this relative path? 0 or negative errno. */
typedef int (*pn_storage_referenced_fn)(void *ctx, const char *rel, bool *ret_referenced);

typedef struct {
	unsigned kept;    /* committed before the crash: tmp name removed */
	unsigned removed; /* not committed: tmp and final removed */
	unsigned strays;  /* files in tmp/ we did not make: removed */
} pn_storage_recovery;

/* Finishes or undoes what a crash left in tmp/. */
int pn_storage_recover(pn_storage *s, pn_storage_referenced_fn referenced, void *ctx, pn_storage_recovery *ret_stats);

#endif
