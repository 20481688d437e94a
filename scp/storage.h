/* Durable instance files under the storage root.
 *
 * The protocol (see docs/design.md):
 *   1. write tmp/NAME, fsync it and the tmp folder;
 *   2. hard-link it to its final path, fsync that folder;
 *   3. the caller commits the index row;
 *   4. unlink tmp/NAME.
 * A crash anywhere leaves tmp/NAME behind, and NAME says where the final
 * file is; pn_storage_recover() then keeps it if a row names it and removes
 * it otherwise. So there is never a row without a file, and never a file
 * without a row once recovery has run (it runs at every start). */
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

/* Starts tmp/NAME for the final relative path `rel`. */
int pn_storage_file_begin(pn_storage *s, const char *rel, pn_storage_file **ret_file);
/* Appends bytes (and feeds the checksum). Negative errno on failure. */
int pn_storage_file_write(pn_storage_file *f, const void *buf, size_t len);
/* fsyncs and closes the temporary file and fsyncs the tmp folder. */
int pn_storage_file_finish(pn_storage_file *f);
/* Links the finished file to its final path and makes that durable. */
int pn_storage_file_link(pn_storage_file *f);
/* After the index commit: removes tmp/NAME and frees. */
void pn_storage_file_done(pn_storage_file *f);
/* On any failure before the commit: removes whatever was written, frees. */
void pn_storage_file_discard(pn_storage_file *f);

const char *pn_storage_file_tmp_path(const pn_storage_file *f); /* absolute */
const char *pn_storage_file_rel_path(const pn_storage_file *f);
int64_t pn_storage_file_size(const pn_storage_file *f);
const char *pn_storage_file_sha256(const pn_storage_file *f); /* after finish */

/* Removes a committed file that the index no longer names (replaced). */
int pn_storage_remove(pn_storage *s, const char *rel);

/* Callback: does an index row name this relative path? 0 or negative errno. */
typedef int (*pn_storage_referenced_fn)(void *ctx, const char *rel, bool *ret_referenced);

typedef struct {
	unsigned kept;    /* committed before the crash: tmp removed */
	unsigned removed; /* not committed: tmp and final removed */
	unsigned strays;  /* files in tmp/ we did not make: removed */
} pn_storage_recovery;

/* Finishes or undoes what a crash left in tmp/. */
int pn_storage_recover(pn_storage *s, pn_storage_referenced_fn referenced, void *ctx, pn_storage_recovery *ret_stats);

#endif
