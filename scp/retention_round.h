/* Retention ([retention], docs/operations.md): when a limit is passed —
 * the storage above max_storage_gib, studies older than max_study_age_days,
 * or (with delete_for_free_space) free space falling towards min_free_gib —
 * the studies received (or retrieved) longest ago are deleted, at most
 * deletes_per_minute, each logged and audited. None of it is on by
 * default: an archive deletes nothing it was not told to.
 *
 * A plan is what would go now, oldest first, with why; the node's
 * retention process (one per node, started by the listener, run again
 * with a reloaded configuration) carries out a plan each round, and
 * pacsnodectl retention --dry-run prints one. Of several nodes on one
 * database only the one holding retention's lock deletes. */
#ifndef PN_RETENTION_ROUND_H
#define PN_RETENTION_ROUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "config.h"
#include "db.h"
#include "retention.h"

enum {
	PN_RETAIN_AGE = 1 << 0,   /* older than max_study_age_days */
	PN_RETAIN_QUOTA = 1 << 1, /* the storage is above max_storage_gib */
	PN_RETAIN_FREE = 1 << 2,  /* free space is low (delete_for_free_space) */
};

/* Free space: deletions start below 110 % of min_free_gib, before stores
 * are refused, and free up to 120 %, so that they do not start again with
 * the next few stores. */
#define PN_RETAIN_FREE_START 1.1
#define PN_RETAIN_FREE_TARGET 1.2

typedef struct {
	pn_retention_study study;
	unsigned why; /* PN_RETAIN_* */
} pn_retention_item;

typedef struct {
	pn_retention_item *items;
	size_t n;
	long long stored_bytes; /* when max_storage_gib is set, else -1 */
	long long free_bytes;   /* when delete_for_free_space is on, else -1 */
	bool more;              /* beyond the items, more would go than `max` let in */
} pn_retention_plan;

/* Whether any deletion is configured. */
bool pn_retention_on(const pn_config *cfg);

/* What would go now, at most `max` studies; `now` in seconds since 1970.
 * 0 or negative errno (the database's: pn_db_errmsg; statvfs's). */
int pn_retention_plan_make(pn_db *db, const pn_config *cfg, double now, size_t max, pn_retention_plan *ret);
void pn_retention_plan_free(pn_retention_plan *p); /* zeroes it */

/* "older than 30 days, storage above 10.0 GiB" */
void pn_retention_why(const pn_config *cfg, unsigned why, char *out, size_t len);

/* The node's retention process, until SIGTERM: a round every [retention]
 * interval seconds. The exit status for the listener. */
int pn_retention_main(const pn_config *cfg, pn_audit *audit);

#endif
