/* pacsnodectl retention --dry-run: what the node's retention would delete
 * now, oldest first, with why (retention_round.h), from the same plan the
 * node carries out, without the per-minute bound (which it states: how
 * long the node would take). Deleting stays the node's: its process does
 * it in the background, bounded; a person deletes with pacsnodectl delete.
 * Exit 0 when the plan could be made. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "db.h"
#include "retention_round.h"

#define LIST_MAX 100000 /* studies listed at most */

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnodectl retention --dry-run\n"
	             "  lists the studies the node's retention ([retention]) would delete now, oldest first, and why;\n"
	             "  deletes nothing (the node deletes them in the background, at most deletes_per_minute)\n");
}

static void print_limits(const pn_config *cfg, const pn_retention_plan *p)
{
	printf("retention: policy %s, at most %d deletions a minute, a round every %d s\n",
	       pn_retention_policy_name(cfg->retention_policy), cfg->deletes_per_minute, cfg->retention_interval);
	if (cfg->max_study_age_days)
		printf("  max_study_age_days = %d\n", cfg->max_study_age_days);
	if (cfg->max_storage_bytes)
		printf("  max_storage_gib = %.2f: %.2f GiB stored\n", (double)cfg->max_storage_bytes / 1073741824.0,
		       (double)p->stored_bytes / 1073741824.0);
	if (cfg->delete_for_free_space && cfg->min_free_bytes)
		printf(
		    "  delete_for_free_space, min_free_gib = %.2f: %.2f GiB free (deletions below %.2f, up to %.2f)\n",
		    (double)cfg->min_free_bytes / 1073741824.0, (double)p->free_bytes / 1073741824.0,
		    (double)cfg->min_free_bytes * PN_RETAIN_FREE_START / 1073741824.0,
		    (double)cfg->min_free_bytes * PN_RETAIN_FREE_TARGET / 1073741824.0);
}

int pn_ctl_retention(const pn_config *cfg, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"dry-run", no_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	bool dry = false;
	int opt;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "nh", opts, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			return 0;
		}
		if (opt != 'n') {
			usage(stderr);
			return 2;
		}
		dry = true;
	}
	if (!dry || optind != argc) {
		if (!dry)
			fprintf(stderr, "pacsnodectl retention: only --dry-run: the node deletes in the background "
			                "(pacsnodectl delete removes one study now)\n");
		usage(stderr);
		return 2;
	}
	if (!pn_retention_on(cfg)) {
		printf("retention is off: none of [retention] max_storage_gib, max_study_age_days, "
		       "delete_for_free_space is set in %s; nothing would be deleted\n",
		       cfg->source);
		return 0;
	}
	pn_db *db = NULL;
	char err[512];
	if (pn_db_connect(cfg->conninfo, &db, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl retention: the database: %s\n", err);
		return 1;
	}
	if (pn_db_migrate(db) < 0) {
		fprintf(stderr, "pacsnodectl retention: the schema: %s\n", pn_db_errmsg(db));
		pn_db_free(db);
		return 1;
	}
	pn_retention_plan p;
	int rc = pn_retention_plan_make(db, cfg, (double)time(NULL), LIST_MAX, &p);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl retention: %s\n",
		        rc == -EIO || rc == -ECONNREFUSED ? pn_db_errmsg(db) : strerror(-rc));
		pn_db_free(db);
		return 1;
	}
	pn_db_free(db);
	print_limits(cfg, &p);
	long long instances = 0, bytes = 0;
	for (size_t i = 0; i < p.n; i++) {
		const pn_retention_study *s = &p.items[i].study;
		char why[256], when[32];
		time_t t = (time_t)s->clock_s;
		struct tm tm;
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M", localtime_r(&t, &tm));
		pn_retention_why(cfg, p.items[i].why, why, sizeof(why));
		printf("would delete study %s (patient \"%s\"%s%s%s, %s %s, %lld instances, %.1f MB): %s\n",
		       s->study_uid, s->patient_id, s->issuer[0] ? ", issuer \"" : "", s->issuer,
		       s->issuer[0] ? "\"" : "",
		       cfg->retention_policy == PN_RETENTION_ACCESSED ? "last retrieved or received" : "received", when,
		       s->instances, (double)s->bytes / 1e6, why);
		instances += s->instances;
		bytes += s->bytes;
	}
	if (p.n == 0)
		printf("no study would be deleted now\n");
	else
		printf("in all: %zu%s studies, %lld instances, %.1f MB; at %d a minute the node takes about %zu "
		       "minutes\n",
		       p.n, p.more ? "+ (listed at most)" : "", instances, (double)bytes / 1e6, cfg->deletes_per_minute,
		       (p.n + (size_t)cfg->deletes_per_minute - 1) / (size_t)cfg->deletes_per_minute);
	pn_retention_plan_free(&p);
	return 0;
}
