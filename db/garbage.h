/* The queue of files to remove (storage_garbage, migration 002): the old
 * files of replaced instances (index.h) and the files of deleted ones
 * (delete.h), queued by the transaction that unnames them, taken off once
 * removed. Whoever works it off (the node at start-up, pacsnodectl delete)
 * walks it in path order, a batch at a time. */
#ifndef PN_GARBAGE_H
#define PN_GARBAGE_H

#include <stddef.h>

#include "db.h"

/* How many files are queued. 0 or negative errno. */
int pn_garbage_count(pn_db *db, long long *ret_n);

/* The next at most `max` queued paths after `after` ("" from the start),
 * in path order, leaving out those an instance row names (malloc'ed, each
 * and the array; free with pn_garbage_free). 0 or negative errno. */
int pn_garbage_next(pn_db *db, const char *after, size_t max, char ***ret_paths, size_t *ret_n);

/* Takes paths off the queue, their files gone. 0 or negative errno. */
int pn_garbage_done(pn_db *db, const char *const *paths, size_t n);

void pn_garbage_free(char **paths, size_t n);

#endif
