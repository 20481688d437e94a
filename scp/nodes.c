/* Settling the temporary files of nodes that are gone (nodes.h). */
#include "nodes.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "node.h"
#include "store.h"

static void add_stats(pn_storage_recovery *to, const pn_storage_recovery *from)
{
	to->kept += from->kept;
	to->removed += from->removed;
	to->strays += from->strays;
	to->waiting += from->waiting;
}

int pn_nodes_settle_gone(pn_db *db, const pn_config *cfg, pn_storage *own, unsigned *ret_nodes,
                         pn_storage_recovery *ret_stats)
{
	pn_storage_recovery total = {0};
	unsigned nodes = 0;
	char **names = NULL;
	size_t n = 0;
	int rc = pn_storage_tmp_nodes(own, &names, &n);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		/* a folder we did not make (no node id could name it) is not ours to touch */
		if (!pn_node_id_valid(names[i]) || strcmp(names[i], cfg->node_id) == 0)
			continue;
		int num = 0;
		bool taken = false;
		/* registered if it is not (a folder pacsnodectl made for an id
		 * that never ran a node): its lock then means the same */
		if ((rc = pn_node_register(db, names[i], false, &num)) < 0 ||
		    (rc = pn_node_lock(db, num, 0, &taken)) < 0)
			break;
		if (!taken)
			continue; /* running: some session of it holds its lock */
		pn_storage *st = NULL;
		pn_storage_recovery rec = {0};
		rc = pn_storage_open(cfg->storage_root, names[i], &st);
		if (rc == 0)
			rc = pn_store_recover(db, st, PN_RECOVER_GONE_NODE, 0, &rec);
		pn_storage_free(st);
		pn_node_unlock(db, num);
		add_stats(&total, &rec);
		nodes++;
	}
	pn_storage_names_free(names, n);
	*ret_nodes = nodes;
	*ret_stats = total;
	return rc;
}

/* How often the keeper looks at its hold: the longest a lost session
 * goes unnoticed while the database answers. */
#define KEEP_INTERVAL_MS 1000

int pn_node_keeper_main(const pn_config *cfg, pid_t listener)
{
	/* Never outliving the listener: a hold left behind would keep the
	 * node's id "in use" and its files from being settled. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != listener)
		return 0;
	pn_db *db = NULL;
	int num = 0;
	bool lapsed = false, blocked = false; /* said once each until it changes */
	for (;;) {
		char err[256] = "";
		if (!db && pn_db_connect(cfg->conninfo, &db, err, sizeof err) < 0)
			db = NULL;
		bool held = false, again = false;
		int r = db ? 0 : -ENOTCONN;
		if (r == 0 && num == 0)
			r = pn_node_register(db, cfg->node_id, false, &num);
		if (r == 0)
			r = pn_node_hold(db, num, &held, &again);
		if (r < 0) {
			if (!lapsed)
				pn_warning(
				    "node lock of node_id \"%s\": database session lost (%s); taken again once the "
				    "database answers",
				    cfg->node_id, db ? pn_db_errmsg(db) : err);
			lapsed = true;
			pn_db_free(db); /* a new session next round */
			db = NULL;
		} else if (!held) {
			if (!blocked)
				pn_warning("node lock of node_id \"%s\" is held exclusively by another session (a node "
				           "settling this node's temporary files, taking it for gone): tried again "
				           "every %d ms",
				           cfg->node_id, KEEP_INTERVAL_MS);
			blocked = true;
		} else {
			if (again && (lapsed || blocked))
				pn_info("node lock of node_id \"%s\" held again", cfg->node_id);
			else if (again)
				pn_debug("node lock of node_id \"%s\" held by the keeper", cfg->node_id);
			lapsed = blocked = false;
		}
		struct timespec ts = {.tv_sec = KEEP_INTERVAL_MS / 1000,
		                      .tv_nsec = (KEEP_INTERVAL_MS % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		if (getppid() != listener) {
			pn_db_free(db);
			return 0;
		}
	}
}
