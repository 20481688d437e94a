/* pacsnodectl delete: a patient, a study, a series or one instance, rows
 * and files, with the parents it leaves empty (db/delete.h). It says what
 * would go and asks on a terminal; elsewhere it needs --yes. The rows go
 * in one transaction that queues their files in storage_garbage; then the
 * audit message; then the files, a batch at a time, each batch taken off
 * the queue once its files and folders are durable. A crash after the
 * COMMIT leaves queued files, which the next delete or the node's next
 * start removes (this one first removes what an earlier one left).
 * A retrieve of the same data running: it waits (--wait) or refuses.
 * Exit 0 when all went well, 1 when anything did not, 2 for bad
 * arguments.
 *
 * Tests only: PN_TEST_DELETE_HOLD_MS holds the row locks that long before
 * the retrieves' keys are tried; PN_TEST_DELETE_PAUSE stops after the
 * COMMIT and the audit message, before any file is removed, until killed. */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "audit_delete.h"
#include "ctl.h"
#include "db.h"
#include "delete.h"
#include "garbage.h"
#include "progress.h"
#include "storage.h"
#include "store.h"
#include "uid.h"

#define DEFAULT_WAIT_S 60
#define BUSY_POLL_MS 200
#define PROGRESS_FROM 1000 /* files: fewer go without a progress line */
#define PATIENT_ID_MAX 256 /* bytes: 64 characters of UTF-8 (LO) */

static const char *const level_names[] = {"patient", "study", "series", "instance"};

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: pacsnodectl delete patient PATIENT_ID [--issuer ISSUER] [--yes] [--wait SECONDS]\n"
	        "       pacsnodectl delete study|series|instance UID [--yes] [--wait SECONDS]\n"
	        "  removes the rows and the files of a patient (PatientID and IssuerOfPatientID), a study,\n"
	        "  a series or one instance, and the series, study and patient it leaves empty\n"
	        "  --issuer ISSUER  the patient's IssuerOfPatientID (default: none)\n"
	        "  --yes            do not ask (needed when standard input is not a terminal)\n"
	        "  --wait SECONDS   how long to wait for a retrieve of the same data to end (default %d;\n"
	        "                   0: refuse at once)\n",
	        DEFAULT_WAIT_S);
}

static double mb(long long bytes)
{
	return (double)bytes / 1e6;
}

static void print_target(const pn_delete_target *t, const pn_delete_summary *s)
{
	printf("patient \"%s\"", s->patient_id);
	if (s->issuer[0])
		printf(" (issuer \"%s\")", s->issuer);
	if (s->patient_name[0])
		printf(", \"%s\"", s->patient_name);
	if (t->level != PN_DELETE_PATIENT)
		printf(", %s %s", level_names[t->level], t->key);
	printf("\n");
	for (size_t i = 0; i < s->n_study; i++) {
		const pn_delete_study *st = &s->study[i];
		long long n = 0, bytes = 0;
		for (size_t k = 0; k < st->n_classes; k++) {
			n += st->classes[k].instances;
			bytes += st->classes[k].bytes;
		}
		printf("  study %s: ", st->study_uid);
		if (st->series)
			printf("%lld series (%s), ", st->series, st->modalities[0] ? st->modalities : "no modality");
		printf("%lld instances, %.1f MB%s\n", n, mb(bytes),
		       st->whole ? "; the whole study" : "; the study keeps its other instances");
	}
	if (s->patient_whole)
		printf("  and the patient, left without a study\n");
	else
		printf("  the patient keeps its other studies\n");
}

static void print_totals(const char *what, const pn_delete_summary *s)
{
	printf("%s %d patients, %lld studies, %lld series, %lld instances, %.1f MB\n", what, s->patient_whole ? 1 : 0,
	       s->studies, s->series, s->instances, mb(s->bytes));
}

/* Asks on the terminal; true for yes. */
static bool confirmed(void)
{
	printf("delete them? [y/N] ");
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		return false;
	line[strcspn(line, "\r\n")] = '\0';
	return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0;
}

/* Who runs us, for the audit trail: the sudo user behind root, else the
 * login of our user id. */
static void user_name(char *out, size_t len)
{
	const char *sudo = getenv("SUDO_USER");
	struct passwd *pw = getpwuid(getuid());
	if (getuid() == 0 && sudo && sudo[0])
		snprintf(out, len, "%s", sudo);
	else if (pw)
		snprintf(out, len, "%s", pw->pw_name);
	else
		snprintf(out, len, "uid %u", (unsigned)getuid());
}

typedef struct {
	pn_progress p;
	bool shown;
	uint64_t bytes_each; /* an average: the queue holds paths, not sizes */
} removal;

static void removal_step(void *ctx, size_t n)
{
	removal *r = ctx;
	for (size_t i = 0; r->shown && i < n; i++)
		pn_progress_step(&r->p, r->bytes_each);
}

/* Works off the queue of files to remove; 0 when every file went. */
static int remove_files(pn_db *db, pn_storage *storage, const pn_delete_summary *s, long long *ret_removed)
{
	long long queued = 0, removed = 0, failed = 0;
	if (pn_garbage_count(db, &queued) < 0) {
		fprintf(stderr, "pacsnodectl delete: the queue of files to remove: %s\n", pn_db_errmsg(db));
		return -1;
	}
	removal r = {.shown = queued >= PROGRESS_FROM,
	             .bytes_each = s && s->instances ? (uint64_t)(s->bytes / s->instances) : 0};
	if (r.shown)
		pn_progress_start(&r.p, "removing files", queued);
	int rc = pn_store_remove_garbage(db, storage, removal_step, &r, &removed, &failed);
	if (r.shown)
		pn_progress_end(&r.p);
	*ret_removed = removed;
	if (failed)
		fprintf(
		    stderr,
		    "pacsnodectl delete: %lld files could not be removed (%s); they stay queued in storage_garbage and "
		    "go at the next delete or start of the node\n",
		    failed, rc < 0 ? strerror(-rc) : "see above");
	else if (rc < 0)
		fprintf(stderr, "pacsnodectl delete: removing files: %s\n", pn_db_errmsg(db));
	return rc < 0 || failed ? -1 : 0;
}

static int delete_with_wait(pn_db *db, const pn_delete_target *t, int wait_s, pn_delete_summary *s)
{
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (bool said = false;;) {
		int rc = pn_delete_run(db, t, s);
		if (rc != -EBUSY)
			return rc;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec >= wait_s) {
			fprintf(stderr,
			        "pacsnodectl delete: refused: a retrieve of this data (C-MOVE, C-GET, WADO-RS or a "
			        "download) is running%s; nothing deleted\n",
			        wait_s ? " still" : "");
			return -EBUSY;
		}
		if (!said) {
			fprintf(stderr,
			        "pacsnodectl delete: a retrieve of this data is running: waiting up to %d s for it "
			        "to end\n",
			        wait_s);
			said = true;
		}
		struct timespec ts = {.tv_nsec = BUSY_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void not_found(pn_db *db, const pn_delete_target *t)
{
	if (t->level != PN_DELETE_PATIENT) {
		fprintf(stderr, "pacsnodectl delete: no %s %s in the index\n", level_names[t->level], t->key);
		return;
	}
	fprintf(stderr, "pacsnodectl delete: no patient \"%s\" with %s%s%s in the index\n", t->key,
	        t->issuer[0] ? "issuer \"" : "no issuer", t->issuer, t->issuer[0] ? "\"" : "");
	char **issuers = NULL;
	size_t n = 0;
	if (pn_delete_issuers(db, t->key, &issuers, &n) == 0 && n > 0) {
		fprintf(stderr, "  PatientID \"%s\" is there with:", t->key);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, "%s %s%s%s", i ? "," : "", issuers[i][0] ? "--issuer \"" : "no issuer",
			        issuers[i], issuers[i][0] ? "\"" : "");
		fprintf(stderr, "\n");
	}
	pn_garbage_free(issuers, n);
}

/* The key, never trusted: a UID by PS3.5 9.1, a PatientID of LO's length
 * without control characters. */
static bool key_valid(const pn_delete_target *t)
{
	if (t->level != PN_DELETE_PATIENT) {
		if (pn_uid_valid(t->key))
			return true;
		fprintf(stderr,
		        "pacsnodectl delete: \"%.80s\" is not a valid UID (digits and dots, at most 64, no empty "
		        "component, no leading zero)\n",
		        t->key);
		return false;
	}
	const char *what[] = {t->key, t->issuer};
	for (int i = 0; i < 2; i++) {
		bool ok = strlen(what[i]) <= PATIENT_ID_MAX;
		for (const unsigned char *c = (const unsigned char *)what[i]; ok && *c; c++)
			ok = *c >= 0x20 && *c != 0x7f && *c != '\\';
		if (!ok) {
			fprintf(stderr,
			        "pacsnodectl delete: %s is not a valid %s (at most 64 characters, no control "
			        "character or backslash)\n",
			        i ? "the issuer" : "the PatientID", i ? "IssuerOfPatientID" : "PatientID");
			return false;
		}
	}
	return true;
}

static int parse(int argc, char **argv, pn_delete_target *t, bool *yes, int *wait_s)
{
	static const struct option opts[] = {{"issuer", required_argument, NULL, 'i'},
	                                     {"yes", no_argument, NULL, 'y'},
	                                     {"wait", required_argument, NULL, 'w'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	const char *issuer = NULL;
	int opt;
	/* options after the operands too: 0 makes glibc start afresh, without
	 * the "stop at the first operand" of pacsnodectl's own options */
	optind = 0;
	while ((opt = getopt_long(argc, argv, "i:yw:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'i':
			issuer = optarg;
			break;
		case 'y':
			*yes = true;
			break;
		case 'w': {
			char *end;
			long w = strtol(optarg, &end, 10);
			if (*end || end == optarg || w < 0 || w > 86400) {
				fprintf(stderr, "pacsnodectl delete: --wait takes seconds, 0 to 86400\n");
				return 2;
			}
			*wait_s = (int)w;
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 2) {
		usage(stderr);
		return 2;
	}
	int level = -1;
	for (int l = 0; l < 4; l++)
		if (strcmp(argv[optind], level_names[l]) == 0)
			level = l;
	if (level < 0 || (issuer && level != PN_DELETE_PATIENT)) {
		fprintf(stderr, level < 0 ? "pacsnodectl delete: what to delete is patient, study, series or instance\n"
		                          : "pacsnodectl delete: --issuer goes with patient only\n");
		usage(stderr);
		return 2;
	}
	t->level = (pn_delete_level)level;
	t->key = argv[optind + 1];
	t->issuer = issuer ? issuer : "";
	return -1; /* go on */
}

int pn_ctl_delete(const pn_config *cfg, int argc, char **argv)
{
	pn_delete_target t = {0};
	bool yes = false;
	int wait_s = DEFAULT_WAIT_S;
	int rc = parse(argc, argv, &t, &yes, &wait_s);
	if (rc >= 0)
		return rc;
	if (!key_valid(&t))
		return 1;
	const char *hold = getenv("PN_TEST_DELETE_HOLD_MS");
	t.test_pause_ms = hold ? atoi(hold) : 0;

	int status = 1;
	pn_db *db = NULL;
	pn_storage *storage = NULL;
	pn_audit *audit = NULL;
	pn_delete_summary preview = {0}, done = {0};
	char err[512];
	if (pn_db_connect(cfg->conninfo, &db, err, sizeof(err)) < 0) {
		fprintf(stderr, "pacsnodectl delete: the database: %s\n", err);
		goto out;
	}
	if (pn_db_migrate(db) < 0) {
		fprintf(stderr, "pacsnodectl delete: the schema: %s\n", pn_db_errmsg(db));
		goto out;
	}
	if ((rc = pn_storage_open(cfg->storage_root, cfg->node_id, &storage)) < 0) {
		fprintf(stderr, "pacsnodectl delete: the storage root \"%s\": %s\n", cfg->storage_root, strerror(-rc));
		goto out;
	}
	/* Nothing goes unaudited when the trail is configured. */
	if ((rc = pn_audit_attach(cfg, &audit)) < 0) {
		fprintf(stderr,
		        "pacsnodectl delete: [audit] is configured, but its spool \"%s\" cannot be written: %s "
		        "(the node makes it at its start); nothing deleted\n",
		        cfg->audit_spool ? cfg->audit_spool : "", strerror(-rc));
		goto out;
	}
	/* What an earlier delete (or a replace) left. */
	long long removed = 0;
	int leftovers = remove_files(db, storage, NULL, &removed);
	if (removed)
		printf("removed %lld files an earlier delete or replace left\n", removed);

	rc = pn_delete_preview(db, &t, &preview);
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl delete: the index: %s\n", pn_db_errmsg(db));
		goto out;
	}
	if (rc == 0) {
		not_found(db, &t);
		goto out;
	}
	printf("to delete: ");
	print_target(&t, &preview);
	print_totals("in all:", &preview);
	if (!yes && !isatty(STDIN_FILENO)) {
		fprintf(stderr, "pacsnodectl delete: standard input is not a terminal: give --yes to delete; nothing "
		                "deleted\n");
		goto out;
	}
	if (!yes && !confirmed()) {
		printf("nothing deleted\n");
		goto out;
	}
	fflush(stdout);

	rc = delete_with_wait(db, &t, wait_s, &done);
	if (rc == -EBUSY)
		goto out;
	if (rc == -ESTALE) {
		fprintf(stderr, "pacsnodectl delete: the database connection broke during COMMIT: whether it was "
		                "deleted is not known; run the command again to see\n");
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "pacsnodectl delete: nothing deleted: %s\n", pn_db_errmsg(db));
		goto out;
	}
	if (rc == 0) {
		fprintf(stderr, "pacsnodectl delete: the %s is no longer there (deleted meanwhile?)\n",
		        level_names[t.level]);
		goto out;
	}
	print_totals("deleted:", &done);
	char user[256];
	user_name(user, sizeof(user));
	if (pn_audit_delete_summary(audit, user, &done) < 0)
		fprintf(stderr, "pacsnodectl delete: out of memory: no audit message for this deletion\n");
	fflush(stdout);
	if (getenv("PN_TEST_DELETE_PAUSE")) {
		fprintf(stderr, "pacsnodectl delete: paused after the commit (PN_TEST_DELETE_PAUSE)\n");
		for (;;)
			pause();
	}
	rc = remove_files(db, storage, &done, &removed);
	printf("removed %lld files\n", removed);
	status = rc == 0 && leftovers == 0 ? 0 : 1;
out:
	pn_delete_summary_free(&preview);
	pn_delete_summary_free(&done);
	pn_audit_free(audit);
	pn_storage_free(storage);
	pn_db_free(db);
	return status;
}
