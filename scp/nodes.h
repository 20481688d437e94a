/* The temporary files of other nodes sharing the storage root
 * (docs/scale.md, "Several nodes"): settled once PostgreSQL shows their
 * node gone, that is once its node lock can be taken (db/node.h). */
#ifndef PN_NODES_H
#define PN_NODES_H

#include <sys/types.h>

#include "config.h"
#include "db.h"
#include "storage.h"
#include "storage_recovery.h"

/* For each folder of tmp/ with files, other than `own`'s, whose node lock
 * this session can take at once: its files settled against the index as
 * start-up recovery would, the lock released. Folders of running nodes
 * are left alone. *ret_nodes: how many nodes were settled; *ret_stats
 * adds up their files. 0 or the first negative errno (the rest wait for
 * the next call). */
int pn_nodes_settle_gone(pn_db *db, const pn_config *cfg, pn_storage *own, unsigned *ret_nodes,
                         pn_storage_recovery *ret_stats);

/* The node's keeper, a process of its own for the node's life: holds the
 * node lock shared on a session it re-establishes whenever it is lost, so
 * that a database restart, a failover or a cut connection does not leave
 * the node without a hold while its workers are idle (another node would
 * take it for gone and settle its temporary folder; a second node with its
 * node_id could start). Returns when `listener` (its parent) is gone;
 * SIGTERM ends it (the default action). */
int pn_node_keeper_main(const pn_config *cfg, pid_t listener);

#endif
