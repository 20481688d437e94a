/* The storage commitment sender (commit.h): the reports the workers could
 * not deliver on the requestor's association, each on a new association
 * to its peer's host and port, with back-off while it cannot be reached,
 * for [commitment] retry_for. The queue is PostgreSQL's (db/commitment.h):
 * a report survives restarts and crashes, and the senders of several
 * nodes on one database never take the same one. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "commit.h"
#include "log.h"
#include "tls.h"

/* Back-off between attempts: 1 s doubling to 5 min, with jitter. */
#define BACKOFF_MIN_S 1.0
#define BACKOFF_MAX_S 300.0
/* The longest wait for new reports without looking at the queue (a
 * notification lost with a connection). */
#define IDLE_MAX_MS 30000

static volatile sig_atomic_t got_stop;

static void on_stop(int sig)
{
	(void)sig;
	got_stop = 1;
}

static void dcm_log(int level, const char *msg)
{
	pn_log(level, "%s", msg);
}

typedef struct {
	const pn_config *cfg;
	pn_db *db;
	pn_dcm_tls *tls; /* NULL: no peer uses TLS, or its files failed */
} sender;

static void sleep_s(double s)
{
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL); /* SIGTERM cuts it short */
}

static double backoff(int attempts)
{
	double d = BACKOFF_MIN_S;
	for (int i = 0; i < attempts && d < BACKOFF_MAX_S; i++)
		d *= 2;
	if (d > BACKOFF_MAX_S)
		d = BACKOFF_MAX_S;
	return d / 2 + d / 2 * ((double)rand() / RAND_MAX);
}

/* One attempt: 0 delivered, else -1 with why. */
static int deliver(sender *s, const pn_commit_job *job, const pn_peer *peer, char *why, size_t whylen)
{
	const pn_config *cfg = s->cfg;
	pn_commit_item *items = NULL;
	size_t n = 0;
	if (pn_commit_result(s->db, cfg->storage_root, job->pk, &items, &n) < 0) {
		snprintf(why, whylen, "could not compute the result: %s", pn_db_errmsg(s->db));
		return -1;
	}
	pn_dcm_commit_ref *refs = pn_commit_refs(items, n);
	pn_dcm_assoc *assoc = NULL;
	char tls_error[512] = "";
	int rc = !refs ? -ENOMEM
	         : peer->tls && !s->tls
	             ? -EACCES
	             : pn_dcm_commit_open(peer->host, peer->port, cfg->ae_title, peer->ae_title,
	                                  (unsigned long)cfg->max_pdu, cfg->acse_timeout, cfg->dimse_timeout,
	                                  peer->tls ? s->tls : NULL, tls_error, sizeof(tls_error), &assoc);
	unsigned short status = 0;
	if (rc == 0) {
		rc = pn_dcm_commit_report(assoc, job->transaction_uid, refs, n, cfg->ae_title, cfg->dimse_timeout,
		                          &status);
		if (rc == PN_DCM_RELEASED) /* a peer that wants no more of us */
			pn_dcm_release_ack(assoc);
		pn_dcm_scu_close(assoc);
		if (rc == 0) {
			if (status != 0)
				pn_warning("storage commitment \"%s\": \"%s\" answered the report with 0x%04X",
				           job->transaction_uid, peer->ae_title, status);
			size_t failed = 0;
			for (size_t i = 0; i < n; i++)
				failed += items[i].failure_reason != 0;
			pn_info("storage commitment \"%s\" from \"%s\": %zu of %zu committed, reported on a new "
			        "association to %s:%d (attempt %d)",
			        job->transaction_uid, job->calling_ae, n - failed, n, peer->host, peer->port,
			        job->attempts + 1);
		} else {
			snprintf(why, whylen, "the report could not be sent to %s:%d", peer->host, peer->port);
		}
	} else if (rc == -ECONNREFUSED) {
		snprintf(why, whylen, "%s:%d refused the connection or the association", peer->host, peer->port);
	} else if (rc == -EACCES) {
		snprintf(why, whylen, "TLS to %s:%d failed%s%s", peer->host, peer->port, tls_error[0] ? ": " : "",
		         tls_error);
	} else if (rc == -ETIMEDOUT) {
		snprintf(why, whylen, "%s:%d did not answer in time", peer->host, peer->port);
	} else {
		snprintf(why, whylen, "could not open an association to %s:%d", peer->host, peer->port);
	}
	free(refs);
	pn_commit_items_free(items, n);
	return rc == 0 ? 0 : -1;
}

static void run_job(sender *s, const pn_commit_job *job)
{
	const pn_config *cfg = s->cfg;
	char why[768];
	const pn_peer *peer = pn_config_find_peer(cfg, job->calling_ae);
	int rc = -1;
	if (!peer || !(peer->allow & PN_ALLOW_COMMIT))
		snprintf(why, sizeof(why), "no [peer.*] with ae_title \"%s\" and allow = commit", job->calling_ae);
	else
		rc = deliver(s, job, peer, why, sizeof(why));
	if (rc == 0) {
		if (pn_commit_finish(s->db, job->pk, true, NULL) < 0)
			pn_warning("storage commitment \"%s\": could not mark the report delivered (%s); it may be "
			           "sent again",
			           job->transaction_uid, pn_db_errmsg(s->db));
		return;
	}
	double delay = backoff(job->attempts);
	if (job->age_s + delay > cfg->commit_retry_for) {
		pn_warning("storage commitment \"%s\" from \"%s\": report given up after %d attempts over %.0f s "
		           "([commitment] retry_for = %d): %s",
		           job->transaction_uid, job->calling_ae, job->attempts + 1, job->age_s, cfg->commit_retry_for,
		           why);
		if (pn_commit_finish(s->db, job->pk, false, why) < 0)
			pn_warning("storage commitment \"%s\": could not mark the report expired (%s)",
			           job->transaction_uid, pn_db_errmsg(s->db));
		return;
	}
	/* the first failure says why; the next ones, the same reason
	 * mostly, only at info */
	if (job->attempts == 0)
		pn_warning("storage commitment \"%s\" from \"%s\": %s; trying again with back-off for up to %d s",
		           job->transaction_uid, job->calling_ae, why, cfg->commit_retry_for);
	else
		pn_info("storage commitment \"%s\": attempt %d failed: %s; next in %.1f s", job->transaction_uid,
		        job->attempts + 1, why, delay);
	if (pn_commit_reschedule(s->db, job->pk, delay, why) < 0)
		pn_warning("storage commitment \"%s\": could not reschedule the report (%s); it is due when its "
		           "claim runs out",
		           job->transaction_uid, pn_db_errmsg(s->db));
}

int pn_commit_sender_main(const pn_config *cfg)
{
	struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: waits end at SIGTERM */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	srand((unsigned)getpid());
	if (pn_dcm_init(dcm_log, pn_log_get_level()) < 0) {
		pn_error("storage commitment sender: could not initialise the DICOM toolkit");
		return EXIT_FAILURE;
	}
	sender s = {.cfg = cfg};
	bool tls = false;
	for (size_t i = 0; i < cfg->n_peers; i++)
		tls |= cfg->peers[i].tls && (cfg->peers[i].allow & PN_ALLOW_COMMIT);
	char err[512];
	if (tls && pn_tls_create(cfg, false, &s.tls, err, sizeof(err)) < 0)
		pn_error("TLS: %s; storage commitment reports to tls = yes peers will fail", err);
	int lease = pn_commit_lease(cfg);
	bool db_down = false;
	while (!got_stop) {
		if (!s.db) {
			if (pn_db_connect(cfg->conninfo, &s.db, err, sizeof(err)) < 0) {
				if (!db_down)
					pn_error("storage commitment sender: could not connect to the database: %s",
					         err);
				db_down = true;
				sleep_s(5);
				continue;
			}
			db_down = false;
		}
		pn_commit_job job;
		double wait_s = -1;
		/* LISTEN again each round: a reconnect inside db/ loses it */
		int rc = pn_commit_listen(s.db);
		if (rc == 0)
			rc = pn_commit_claim(s.db, lease, &job, &wait_s);
		if (rc == 1) {
			run_job(&s, &job);
			continue;
		}
		if (rc < 0) {
			if (!db_down)
				pn_warning("storage commitment sender: the queue is not readable: %s",
				           pn_db_errmsg(s.db));
			db_down = true;
			pn_db_free(s.db);
			s.db = NULL;
			sleep_s(5);
			continue;
		}
		db_down = false;
		int ms = wait_s < 0 || wait_s * 1000 > IDLE_MAX_MS ? IDLE_MAX_MS : (int)(wait_s * 1000) + 1;
		pn_commit_wait(s.db, ms);
	}
	pn_db_free(s.db);
	pn_dcm_tls_free(s.tls);
	return EXIT_SUCCESS;
}
