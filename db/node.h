/* The nodes that share one index (migration 018, docs/scale.md "Several
 * nodes"): each [node] node_id has a number, and the number keys the
 * node's advisory locks.
 *
 * The node lock: every session of a running node holds it shared (the
 * start-up session for the node's life, the keeper's, re-established when
 * lost, scp/nodes.h, each worker's before its first statement, index.c),
 * so whoever takes it exclusively knows that no
 * session of that node is left, not even one finishing a COMMIT: the
 * node is gone and its temporary files can be settled. A node starting
 * takes it exclusively first: held by someone else, a node with the same
 * node_id is running (or its sessions are still ending). */
#ifndef PN_NODE_H
#define PN_NODE_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"

/* Key spaces (classid of pg_locks): the node lock "PNN1", objid the
 * node's number; the workers' locks "PW" * 65536 + the node's number,
 * objid the process id. */
#define PN_NODE_LOCK_SPACE 1347309105
#define PN_NODE_WORKER_SPACE 1347878912
#define PN_NODE_NUM_MAX 65535

/* The number of node `id`, given at its first registration (0 or negative
 * errno; -ERANGE past PN_NODE_NUM_MAX). `started` records the time as the
 * node's last start. */
int pn_node_register(pn_db *db, const char *id, bool started, int *ret_num);

/* Tries for up to wait_ms to take node `num`'s lock exclusively on this
 * session: 0 with *ret_taken, or negative errno. */
int pn_node_lock(pn_db *db, int num, int wait_ms, bool *ret_taken);
/* Releases an exclusive hold taken by pn_node_lock. */
void pn_node_unlock(pn_db *db, int num);
/* Holds the lock shared from now on, then lets the exclusive hold go
 * (no moment without a hold): for the start-up session, once recovery is
 * done, so that the node's workers can take it shared too. */
int pn_node_share(pn_db *db, int num);

/* For the node's keeper (nodes.h): holds the lock shared on this session
 * if it does not already. *ret_held false: someone holds it exclusively
 * (a node settling this one's temporary files, or starting with this
 * node_id). *ret_again: it was taken now, not held before. */
int pn_node_hold(pn_db *db, int num, bool *ret_held, bool *ret_again);

typedef struct {
	int num;
	char id[64];
} pn_node_row;
/* Every registered node (malloc'ed array, *ret_n rows). */
int pn_node_list(pn_db *db, pn_node_row **ret_rows, size_t *ret_n);

#endif
