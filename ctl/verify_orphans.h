/* pacsnodectl verify: the files under the storage root that no row names.
 * The root is walked (names only, tmp/ left out) on a thread of its own
 * while the rows' files are checked; the rows' paths are noted as they
 * pass (48 bytes each, as the walk keeps a file); at the end, the files
 * at the node's paths that no row named, and every file at another name,
 * are the candidates, for the caller to ask the index about once more (a
 * row committed since the rows were read names its file). */
#ifndef PN_VERIFY_ORPHANS_H
#define PN_VERIFY_ORPHANS_H

typedef struct pn_orphans pn_orphans;

/* Starts the walk of root. 0, -ENOMEM or the thread's -errno. */
int pn_orphans_start(const char *root, pn_orphans **ret_orphans);
/* A row names rel. 0 or -ENOMEM. */
int pn_orphans_named(pn_orphans *o, const char *rel);
/* Waits for the walk and finds the candidates: 0, -ENOMEM or the -errno
 * of the root's own reading. */
int pn_orphans_finish(pn_orphans *o);
/* The next candidate, in path order for the node's names: 1 with its path
 * relative to the root (valid until the next call) and err 0, or err an
 * errno when a folder or file could not be read; 0 at the end. */
int pn_orphans_next(pn_orphans *o, const char **ret_rel, int *ret_err);
void pn_orphans_free(pn_orphans *o); /* NULL is a no-op; waits for the walk */

#endif
