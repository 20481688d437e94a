/* Retention's plan and the node's retention process (retention_round.h). */
#include "retention_round.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit_delete.h"
#include "delete.h"
#include "log.h"
#include "storage.h"
#include "store.h"

#define BATCH 200 /* studies read at a time while planning */
#define GIB 1073741824.0
#define WHO "pacsnode retention" /* the audit messages' person */

bool pn_retention_on(const pn_config *cfg)
{
	return cfg->max_storage_bytes > 0 || cfg->max_study_age_days > 0 ||
	       (cfg->delete_for_free_space && cfg->min_free_bytes > 0);
}

void pn_retention_plan_free(pn_retention_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++) {
		pn_retention_study *s = &p->items[i].study;
		free(s->study_uid);
		free(s->patient_id);
		free(s->issuer);
		free(s->patient_name);
	}
	free(p->items);
	memset(p, 0, sizeof(*p));
}

/* Takes the study out of the batch into the plan (the batch's copy is
 * left without its strings). */
static int take(pn_retention_plan *p, size_t *cap, pn_retention_study *s, unsigned why)
{
	if (p->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		pn_retention_item *n = realloc(p->items, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		p->items = n;
		*cap = ncap;
	}
	p->items[p->n++] = (pn_retention_item){.study = *s, .why = why};
	memset(s, 0, sizeof(*s));
	return 0;
}

int pn_retention_plan_make(pn_db *db, const pn_config *cfg, double now, size_t max, pn_retention_plan *ret)
{
	pn_retention_plan p = {.stored_bytes = -1, .free_bytes = -1};
	memset(ret, 0, sizeof(*ret));
	if (!pn_retention_on(cfg) || max == 0) {
		*ret = p;
		return 0;
	}
	/* What is over, in bytes still to free (<= 0: nothing). */
	long long need_quota = 0, need_free = 0;
	int rc;
	if (cfg->max_storage_bytes > 0) {
		if ((rc = pn_retention_stored_bytes(db, &p.stored_bytes)) < 0)
			return rc;
		need_quota = p.stored_bytes - (long long)cfg->max_storage_bytes;
	}
	if (cfg->delete_for_free_space && cfg->min_free_bytes > 0) {
		pn_storage *st = NULL;
		uint64_t free_b = 0;
		if ((rc = pn_storage_open(cfg->storage_root, cfg->node_id, &st)) == 0)
			rc = pn_storage_free_bytes(st, &free_b);
		pn_storage_free(st);
		if (rc < 0)
			return rc;
		p.free_bytes = (long long)free_b;
		if ((double)free_b < (double)cfg->min_free_bytes * PN_RETAIN_FREE_START)
			need_free = (long long)((double)cfg->min_free_bytes * PN_RETAIN_FREE_TARGET) - p.free_bytes;
	}
	double cutoff = cfg->max_study_age_days > 0 ? now - (double)cfg->max_study_age_days * 86400.0 : -1e300;
	if (need_quota <= 0 && need_free <= 0 && cfg->max_study_age_days == 0) {
		*ret = p;
		return 0;
	}

	size_t cap = 0;
	pn_retention_cursor at = {0};
	for (bool done = false; !done;) {
		pn_retention_study *batch = NULL;
		size_t n = 0;
		if ((rc = pn_retention_next(db, cfg->retention_policy, &at, BATCH, &batch, &n)) < 0) {
			pn_retention_plan_free(&p);
			return rc;
		}
		done = n < BATCH;
		for (size_t i = 0; i < n; i++) {
			pn_retention_study *s = &batch[i];
			unsigned why = (s->clock_s < cutoff ? PN_RETAIN_AGE : 0) |
			               (need_quota > 0 ? PN_RETAIN_QUOTA : 0) | (need_free > 0 ? PN_RETAIN_FREE : 0);
			at = s->at;
			/* the walk is oldest first: the first study kept ends it */
			if (!why || p.n == max) {
				p.more = why != 0;
				done = true;
				break;
			}
			need_quota -= s->bytes;
			need_free -= s->bytes;
			if (take(&p, &cap, s, why) < 0) {
				pn_retention_studies_free(batch, n);
				pn_retention_plan_free(&p);
				return -ENOMEM;
			}
		}
		pn_retention_studies_free(batch, n);
	}
	*ret = p;
	return 0;
}

void pn_retention_why(const pn_config *cfg, unsigned why, char *out, size_t len)
{
	size_t at = 0;
	out[0] = '\0';
	if ((why & PN_RETAIN_AGE) && at < len)
		at += (size_t)snprintf(out + at, len - at, "%s%s longer ago than %d days", at ? ", " : "",
		                       cfg->retention_policy == PN_RETENTION_ACCESSED ? "retrieved (or received)"
		                                                                      : "received",
		                       cfg->max_study_age_days);
	if ((why & PN_RETAIN_QUOTA) && at < len)
		at += (size_t)snprintf(out + at, len - at, "%sthe storage above max_storage_gib (%.2f GiB)",
		                       at ? ", " : "", (double)cfg->max_storage_bytes / GIB);
	if ((why & PN_RETAIN_FREE) && at < len)
		snprintf(out + at, len - at, "%sfree space below %.0f %% of min_free_gib (%.2f GiB)", at ? ", " : "",
		         PN_RETAIN_FREE_START * 100.0, (double)cfg->min_free_bytes / GIB);
}

/* ---- the node's retention process ---- */

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Sleeps, cut short by SIGTERM (installed without SA_RESTART). */
static void nap(int seconds)
{
	struct timespec ts = {.tv_sec = seconds};
	while (!stopping && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double wall_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The deletions of the last minute, for deletes_per_minute. */
typedef struct {
	double *at;
	size_t cap, head, n;
} rate;

static size_t rate_room(rate *r, double now)
{
	while (r->n && now - r->at[r->head] >= 60.0) {
		r->head = (r->head + 1) % r->cap;
		r->n--;
	}
	return r->cap - r->n;
}

static void rate_add(rate *r, double now)
{
	if (r->n == r->cap)
		return;
	r->at[(r->head + r->n) % r->cap] = now;
	r->n++;
}

/* One study of the plan: 1 deleted, 0 not (gone, or a retrieve holds it:
 * a later round), negative: the database failed (logged). */
static int delete_one(pn_db *db, pn_audit *audit, const pn_config *cfg, const pn_retention_item *it)
{
	pn_delete_target t = {.level = PN_DELETE_STUDY, .key = it->study.study_uid, .issuer = ""};
	pn_delete_summary done = {0};
	int rc = pn_delete_run(db, &t, &done);
	if (rc == 1) {
		char why[256];
		pn_retention_why(cfg, it->why, why, sizeof(why));
		pn_info("retention: deleted study %s of patient \"%s\"%s%s%s (%lld instances, %.1f MB): %s",
		        it->study.study_uid, done.patient_id, done.issuer[0] ? " (issuer \"" : "", done.issuer,
		        done.issuer[0] ? "\")" : "", done.instances, (double)done.bytes / 1e6, why);
		if (pn_audit_delete_summary(audit, WHO, &done) < 0)
			pn_warning("retention: out of memory: no audit message for the deletion of study %s",
			           it->study.study_uid);
	} else if (rc == -EBUSY) {
		pn_info("retention: study %s is being retrieved; it goes in a later round", it->study.study_uid);
		rc = 0;
	} else if (rc == -ESTALE || rc < 0) {
		pn_warning("retention: could not delete study %s%s: %s", it->study.study_uid,
		           rc == -ESTALE ? " (the connection broke during COMMIT)" : "", pn_db_errmsg(db));
	}
	pn_delete_summary_free(&done);
	return rc;
}

/* One round: the plan within the minute's room, carried out. */
static void round_once(pn_db *db, pn_storage *storage, pn_audit *audit, const pn_config *cfg, rate *r,
                       bool *said_waiting)
{
	bool got = false;
	if (pn_retention_lock(db, &got) < 0) {
		pn_warning("retention: the database: %s", pn_db_errmsg(db));
		return;
	}
	if (!got) {
		pn_debug("retention: another node holds retention's lock; it deletes");
		return;
	}
	double now = wall_s();
	size_t room = rate_room(r, now);
	pn_retention_plan plan;
	int rc = pn_retention_plan_make(db, cfg, now, room ? room : 1, &plan);
	if (rc < 0) {
		pn_warning("retention: could not plan the round: %s",
		           rc == -EIO || rc == -ECONNREFUSED ? pn_db_errmsg(db) : strerror(-rc));
		return;
	}
	if (!room && plan.n) {
		if (!*said_waiting)
			pn_info("retention: a limit is passed; at most %d studies a minute ([retention] "
			        "deletes_per_minute) "
			        "go, the next in a moment",
			        cfg->deletes_per_minute);
		*said_waiting = true;
		pn_retention_plan_free(&plan);
		return;
	}
	size_t deleted = 0;
	for (size_t i = 0; i < plan.n && !stopping; i++) {
		rc = delete_one(db, audit, cfg, &plan.items[i]);
		if (rc < 0)
			break;
		if (rc == 1) {
			deleted++;
			rate_add(r, wall_s());
		}
	}
	if (plan.more && !*said_waiting)
		pn_info("retention: more studies are to go than %d a minute ([retention] deletes_per_minute); the rest "
		        "in the next minutes",
		        cfg->deletes_per_minute);
	*said_waiting = plan.more;
	pn_retention_plan_free(&plan);
	if (deleted) {
		long long removed = 0, failed = 0;
		rc = pn_store_remove_garbage(db, storage, NULL, NULL, &removed, &failed);
		if (rc < 0 || failed)
			pn_warning("retention: %lld files of deleted studies could not be removed yet (%s); they stay "
			           "queued and go later",
			           failed, rc < 0 ? strerror(-rc) : "see above");
	}
}

int pn_retention_main(const pn_config *cfg, pn_audit *audit)
{
	struct sigaction sa = {.sa_handler = on_term};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);

	rate r = {.cap = (size_t)cfg->deletes_per_minute};
	r.at = calloc(r.cap, sizeof(*r.at));
	pn_storage *storage = NULL;
	int rc = r.at ? pn_storage_open(cfg->storage_root, cfg->node_id, &storage) : -ENOMEM;
	if (rc < 0) {
		pn_error("retention: could not start: %s", strerror(-rc));
		free(r.at);
		return EXIT_FAILURE;
	}
	char why[256];
	pn_retention_why(cfg,
	                 (cfg->max_study_age_days ? PN_RETAIN_AGE : 0) |
	                     (cfg->max_storage_bytes ? PN_RETAIN_QUOTA : 0) |
	                     (cfg->delete_for_free_space && cfg->min_free_bytes ? PN_RETAIN_FREE : 0),
	                 why, sizeof(why));
	pn_info("retention: studies %s go first when %s; at most %d a minute, checked every %d s",
	        cfg->retention_policy == PN_RETENTION_ACCESSED ? "retrieved (or received) longest ago"
	                                                       : "received longest ago",
	        why, cfg->deletes_per_minute, cfg->retention_interval);

	pn_db *db = NULL;
	bool said_db = false, said_waiting = false;
	while (!stopping) {
		if (!db) {
			char err[512];
			if (pn_db_connect(cfg->conninfo, &db, err, sizeof(err)) < 0) {
				if (!said_db)
					pn_warning(
					    "retention: the database is not reachable (%s); trying again every %d s",
					    err, cfg->retention_interval);
				said_db = true;
				pn_db_free(db);
				db = NULL;
				nap(cfg->retention_interval);
				continue;
			}
			said_db = false;
		}
		round_once(db, storage, audit, cfg, &r, &said_waiting);
		nap(cfg->retention_interval);
	}
	pn_db_free(db);
	pn_storage_free(storage);
	free(r.at);
	return EXIT_SUCCESS;
}
