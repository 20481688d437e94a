/* One background fsync at a time, on a helper thread: a store parses and
 * indexes an instance while its file reaches the disk, instead of after.
 * Owned by one thread (the worker's); the helper only runs fsync. */
#ifndef PN_SYNCER_H
#define PN_SYNCER_H

typedef struct pn_syncer pn_syncer;

/* Starts the helper thread. Negative errno on failure. */
int pn_syncer_create(pn_syncer **ret_syncer);
/* Waits for a running fsync, stops the thread. NULL is a no-op. */
void pn_syncer_free(pn_syncer *s);

/* Hands fd over for fsync; the caller must not close it before
 * pn_syncer_wait. -EBUSY if one is still running. */
int pn_syncer_start(pn_syncer *s, int fd);
/* Waits for the fsync started last: 0 or its negative errno. */
int pn_syncer_wait(pn_syncer *s);

#endif
