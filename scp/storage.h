/* Durable instance files under the storage root.
 *
 * The protocol (see docs/design.md):
 *   1. before the instance arrives, create tmp/in-GEN-PID-N (GEN: a random
 *      generation) and fsync the tmp folder, so that the name is durable
 *      (a few files at once);
 *   2. write the file while receiving, on the writer's thread (writer.h),
 *      with O_DIRECT or through the page cache (write_mode.h), and fsync
 *      it there;
 *   3. the caller parses the dataset; the final path follows from its
 *      Series and SOP Instance UIDs and GEN;
 *   4. wait for that fsync, hard-link the file to its final path (new
 *      folders made durable first);
 *   5. the caller commits the index row;
 *   6. at the end of the association or every PENDING_MAX instances, the
 *      final folders are fsync'ed and only then the tmp names unlinked
 *      (one folder fsync for many instances; until then the durable tmp
 *      name is what recovery relinks from).
 * A crash anywhere leaves tmp/in-* files. Recovery (storage_recovery.h)
 * reads each one's UIDs (through the caller) to find its final path, keeps
 * it if a row names that path (re-linking it if needed) and removes both
 * names otherwise; a file that cannot be read was still being received and
 * is removed. It does so at every start, and while the node runs for the
 * files of workers that have ended, in both cases only once no database
 * session of the worker named in the file is left. So there is never a row
 * without a file, and never a file without a row once recovery has run.
 *
 * The whole storage interface (docs/storage.md): put durably (file_begin ..
 * file_done above), get and exists (an fd, or whether a file is there), and
 * delete (remove, remove_many), each on a relative path the index holds.
 * The file system is its one back end and there is no table of function
 * pointers: the write side's steps (a durable temporary name, a hard link,
 * batched folder fsyncs, recovery from tmp/) are those of a POSIX file
 * system, and an object store would need other steps, not the same ones
 * behind pointers (docs/storage.md says which). Readers go through get
 * and exists, so that the one place to change is this module. */
#ifndef PN_STORAGE_H
#define PN_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage_path.h"
#include "write_mode.h"

typedef struct pn_storage pn_storage;
typedef struct pn_storage_file pn_storage_file;
typedef struct {
	const void *data;
	size_t len;
} pn_storage_part;

/* Creates the root and its tmp folder if needed and opens them. With a
 * node id ([node] node_id, checked by the caller), the temporary files are
 * those of tmp/<node_id>/, made if need be: nodes sharing a storage root
 * never meet each other's temporary files (docs/scale.md); NULL, those
 * of tmp/ itself (earlier builds, tests). */
int pn_storage_open(const char *root, const char *node_id, pn_storage **ret_storage);
/* The folders of tmp/ (node ids) other than this storage's own that hold
 * files, as a malloc'ed array of malloc'ed names (pn_storage_names_free). */
int pn_storage_tmp_nodes(const pn_storage *s, char ***ret_names, size_t *ret_n);
void pn_storage_names_free(char **names, size_t n);
/* Whether the temporary folder holds anything (its own files; not the
 * node folders of tmp/ itself). */
bool pn_storage_tmp_empty(const pn_storage *s);
/* True at most once every interval_s seconds (the first call: true): for
 * housekeeping that a process does now and then. */
bool pn_storage_due(pn_storage *s, int interval_s);
void pn_storage_free(pn_storage *s); /* NULL is a no-op */
/* Bytes an unprivileged writer may still use on the root's file system
 * (statvfs f_bavail). Negative errno on failure. */
int pn_storage_free_bytes(const pn_storage *s, uint64_t *ret_bytes);
/* How files are written ([storage] write_mode); PN_WRITE_AUTO after open. */
void pn_storage_set_write_mode(pn_storage *s, pn_write_policy policy);

/* Starts a temporary file: the spare one if pn_storage_prepare made it. */
int pn_storage_file_begin(pn_storage *s, pn_storage_file **ret_file);
/* After the node's claim on its temporary folder was out of the database
 * for a while (docs/scale.md, "Several nodes"): whether another node, taking this
 * one for gone, settled files of this process meanwhile. Spare files so
 * removed are forgotten (*ret_spares of them); returns how many files in
 * progress (begun, not yet done) lost their last name, which must not be
 * indexed. */
int pn_storage_lost_files(pn_storage *s, int *ret_spares);
/* Makes the next temporary files ahead of time, off the store's critical
 * path (0.06-0.45 ms each here), and their names durable in batches (one tmp
 * folder fsync per 8 files). Negative errno on failure, which the next
 * begin meets again and reports, or makes up for. */
int pn_storage_prepare(pn_storage *s);
/* Appends bytes (and feeds the checksum). They are written on the
 * writer's thread: a failure shows at pn_storage_file_wait() or _sync(). */
int pn_storage_file_write(pn_storage_file *f, const void *buf, size_t len);
/* All bytes are in: the checksum is final; the last writes and the fsync
 * are queued. */
int pn_storage_file_written(pn_storage_file *f);
/* After _written(): the file's bytes while they are still in memory, in
 * order, so that they can be parsed without reading the file back.
 * Returns how many parts, or -E2BIG for a file larger than the buffers
 * (then pn_storage_file_wait() and read the tmp path). Valid until the
 * next file's first write. */
int pn_storage_file_parts(const pn_storage_file *f, const pn_storage_part **ret_parts);
/* Waits until the file's bytes are written and fsync'ed: 0 or the first
 * failure. */
int pn_storage_file_wait(pn_storage_file *f);
/* The generation the file's final path must carry. */
uint32_t pn_storage_file_generation(const pn_storage_file *f);
/* Sets the file's final relative path: -EINVAL unless
 * pn_storage_rel_path() made it with the file's generation. */
int pn_storage_file_name(pn_storage_file *f, const char *rel);
/* Waits for the file's fsync (see _wait) and closes the file, then fsyncs
 * the tmp folder if the file's name is not durable yet. */
int pn_storage_file_sync(pn_storage_file *f);
/* Links the file at its final path; folders it creates are made durable
 * (the link itself becomes durable in the batch of pn_storage_flush). */
int pn_storage_file_link(pn_storage_file *f);
/* After the index commit: queues the temporary name for removal after the
 * next batched folder fsync, and frees. A failed batch (returned here or by
 * pn_storage_flush) keeps the names for start-up recovery. */
int pn_storage_file_done(pn_storage_file *f);
/* At the end of an association: fsyncs the final folders of the queued
 * instances, then unlinks their temporary names and the spare files. */
int pn_storage_flush(pn_storage *s);
/* On any failure before the commit: removes whatever was written, frees. */
void pn_storage_file_discard(pn_storage_file *f);
/* After a commit whose outcome is unknown: keeps both names, and the file
 * in a short list for pn_storage_settle_abandoned() (beyond it, or if the
 * process ends first, start-up recovery settles them), and frees. `note`
 * (shorter than PN_STORAGE_NOTE_MAX; NULL for none) is handed back to the
 * settling callback: what to ask about. */
#define PN_STORAGE_NOTE_MAX 24
void pn_storage_file_abandon(pn_storage_file *f, const char *note);

const char *pn_storage_file_tmp_path(const pn_storage_file *f); /* absolute */
const char *pn_storage_file_rel_path(const pn_storage_file *f);
int64_t pn_storage_file_size(const pn_storage_file *f);
/* Whether it is written with O_DIRECT (else through the page cache). */
bool pn_storage_file_direct(const pn_storage_file *f);
/* "xxh3-128:" + 32 hex digits (XXH3 128-bit, canonical form), after
 * pn_storage_file_written(). A checksum against corruption, not a
 * cryptographic hash: at ~20 GB/s it costs 1/50 of SHA-256. */
const char *pn_storage_file_checksum(const pn_storage_file *f);
/* The same of bytes in memory (a whole stored file read back). */
#define PN_CHECKSUM_LEN (9 + 32 + 1)
void pn_storage_checksum(const void *data, size_t len, char out[PN_CHECKSUM_LEN]);
/* The same of a file read from fd's position to its end: 0 with the bytes
 * read, -ENOMEM or the read's -errno. */
int pn_storage_checksum_fd(int fd, char out[PN_CHECKSUM_LEN], uint64_t *ret_bytes);
/* The same, reading into the caller's buffer of cap bytes (no allocation
 * but the hash's state: for a caller that checks many files). */
int pn_storage_checksum_fd_buf(int fd, void *buf, size_t cap, char out[PN_CHECKSUM_LEN], uint64_t *ret_bytes);

/* Removes a committed file that the index no longer names (replaced),
 * its folder fsync'ed: 0 (also when it was gone already) or negative
 * errno. */
int pn_storage_remove(pn_storage *s, const char *rel);
/* The same for many (deleted instances): each unlinked, then each folder
 * fsync'ed once (files of one folder next to each other, as path order
 * gives them). ret_removed[i]: file i is gone for good (also when it was
 * gone already). Returns 0 or the first failure (the others go on). */
int pn_storage_remove_many(pn_storage *s, const char *const *rels, size_t n, bool *ret_removed);

/* The read side. `rel` comes from the index and is never trusted: any
 * string that is not exactly a path pn_storage_rel_path() makes (".." or
 * "/" anywhere else, an absolute path, one cut short by a NUL, one too
 * long, NULL) is -EINVAL before the file system is asked. */

/* Opens a stored file for reading (O_RDONLY, close-on-exec, relative to
 * the root's folder, so a root renamed under a running node is still the
 * one opened): the fd, or -EINVAL, -ENOENT when no file is there (a
 * missing file, told apart from a bad path or an I/O error), open's other
 * -errno. The fd can be sendfile()'d, mmap'ed or read from any offset. */
int pn_storage_get(const pn_storage *s, const char *rel);
/* 1 if a regular file is at `rel`, 0 if nothing is (ENOENT), -EINVAL for a
 * bad path or -errno (not a regular file: -EBADMSG). */
int pn_storage_exists(const pn_storage *s, const char *rel);
/* The absolute path of a stored file (malloc'ed), for readers that must
 * hand a path on (dcmtk's loaders): -EINVAL as above, -ENOMEM. Whoever
 * can take an fd uses pn_storage_get() instead. */
int pn_storage_full_path(const pn_storage *s, const char *rel, char **ret_path);
/* A storage for reading only: opens the root and nothing else (no folder
 * made, no tmp/, no O_DIRECT probe), for tools that must not write (verify)
 * and the index's checks; -ENOENT if the root is not there. get, exists,
 * full_path and free work on it; writing (file_begin, prepare, remove)
 * answers -EROFS. */
int pn_storage_open_reader(const char *root, pn_storage **ret_storage);

#endif
