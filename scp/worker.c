#include "worker.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assoc.h"
#include "db.h"
#include "dcm/pn_dcm.h"
#include "fdpass.h"
#include "index.h"
#include "log.h"
#include "metrics.h"
#include "storage.h"
#include "store.h"
#include "tls.h"
#include "web.h"

typedef struct {
	pn_store_ctx ctx;
	pn_dcm_net *net;
	pn_dcm_tls *tls_in; /* the TLS listener's context, NULL when there is none */
	pn_web *web;        /* NULL when [http] port = 0 */
} worker;

static void dcm_log(int level, const char *msg)
{
	pn_log(level, "%s", msg);
}

/* One connection: DICOM (plain or TLS) or HTTP, by the port it came in
 * on. */
static void serve(worker *w, int fd)
{
	pn_metrics_worker_busy(1);
	if (pn_web_is_http_connection(w->ctx.cfg, fd)) {
		if (w->web)
			pn_web_serve(w->web, fd);
		else
			close(fd);
	} else {
		pn_assoc_serve(&w->ctx, w->net, fd);
	}
	pn_metrics_worker_busy(-1);
}

/* A database that is down at start is not fatal: stores answer 0xA701
 * and the next association tries again. */
static void connect_db(worker *w)
{
	if (w->ctx.db)
		return;
	char err[256] = "";
	if (pn_db_connect(w->ctx.cfg->conninfo, &w->ctx.db, err, sizeof(err)) < 0) {
		pn_error("could not connect to the database: %s", err);
		return;
	}
	/* Before anything is stored through it (pn_index_set_worker), then
	 * what a crashed worker may have left. */
	pn_index_set_worker(w->ctx.db, w->ctx.cfg->node_id, (int)getpid());
	pn_store_watch_files(&w->ctx);
	pn_store_settle_ended(&w->ctx);
}

/* The TLS contexts this process needs: for the TLS listener's connections,
 * and for outgoing associations when a peer says tls = yes. The files were
 * checked at start-up (pn_tls_check); a failure now (a file changed since)
 * leaves that side without TLS, logged. */
static int tls_contexts(const pn_config *cfg, pn_dcm_tls **ret_in, pn_dcm_tls **ret_out)
{
	char err[512];
	if (pn_config_tls_listener(cfg) && pn_tls_create(cfg, true, ret_in, err, sizeof(err)) < 0) {
		pn_error("TLS: %s", err);
		return -1;
	}
	bool outgoing = false;
	for (size_t i = 0; i < cfg->n_peers; i++)
		outgoing |= cfg->peers[i].tls;
	if (outgoing && pn_tls_create(cfg, false, ret_out, err, sizeof(err)) < 0)
		pn_error("TLS: %s; C-MOVE to tls = yes peers will fail", err);
	return 0;
}

static int worker_init(worker *w, const pn_config *cfg, pn_audit *audit)
{
	memset(w, 0, sizeof(*w));
	w->ctx.cfg = cfg;
	w->ctx.audit = audit;
	pn_db_on_reconnect(pn_metrics_db_reconnect);
	if (pn_dcm_init(dcm_log, pn_log_get_level()) < 0) {
		pn_error("could not initialise the DICOM toolkit");
		return -1;
	}
	if (tls_contexts(cfg, &w->tls_in, &w->ctx.tls_out) < 0)
		return -1;
	if (pn_dcm_net_create(cfg->acse_timeout, w->tls_in, &w->net) < 0) {
		pn_error("could not initialise the DICOM network");
		return -1;
	}
	int rc = pn_storage_open(cfg->storage_root, cfg->node_id, &w->ctx.storage);
	if (rc < 0) {
		pn_error("could not open storage root \"%s\": %s", cfg->storage_root, strerror(-rc));
		return -1;
	}
	pn_storage_set_write_mode(w->ctx.storage, cfg->write_mode);
	if (cfg->http_port != 0) {
		char err[512];
		/* checked at start-up; a file changed since leaves this worker
		 * without the web, logged */
		if (pn_web_create(&w->ctx, &w->web, err, sizeof(err)) < 0)
			pn_error("http: %s; this worker closes HTTP connections", err);
	}
	connect_db(w);
	return 0;
}

static void worker_free(worker *w)
{
	pn_web_free(w->web);
	pn_db_free(w->ctx.db);
	pn_storage_free(w->ctx.storage);
	pn_dcm_net_free(w->net);
	pn_dcm_tls_free(w->tls_in);
	pn_dcm_tls_free(w->ctx.tls_out);
}

/* pn_fd_recv, stamping the watchdog slot between waits of a quarter of
 * its interval (one wait without a watchdog). */
static int next_connection(int channel, pn_watchdog *wd, size_t slot, int *ret_fd)
{
	struct pollfd p = {.fd = channel, .events = POLLIN};
	for (;;) {
		pn_watchdog_beat(wd, slot);
		int n = poll(&p, 1, pn_watchdog_beat_ms(wd));
		if (n > 0)
			break;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	return pn_fd_recv(channel, ret_fd);
}

int pn_worker_pool_main(const pn_config *cfg, pn_audit *audit, int channel, pn_watchdog *wd, size_t slot)
{
	worker w;
	if (worker_init(&w, cfg, audit) < 0) {
		worker_free(&w);
		return EXIT_FAILURE;
	}
	for (;;) {
		int fd = -1;
		int rc = next_connection(channel, wd, slot, &fd);
		if (rc == 0)
			break; /* the listener closed our channel: shutting down */
		if (rc < 0) {
			pn_error("worker could not receive a connection: %s", strerror(-rc));
			break;
		}
		connect_db(&w);
		serve(&w, fd);
		if (pn_dcm_parse_memory_lost()) {
			pn_info(
			    "worker retiring: reading a too deeply nested command or identifier left memory behind");
			break;
		}
		/* stamped before the listener may judge us idle again */
		pn_watchdog_beat(wd, slot);
		char idle = 'I';
		if (write(channel, &idle, 1) != 1)
			break;
	}
	worker_free(&w);
	return EXIT_SUCCESS;
}

int pn_worker_oneshot_main(const pn_config *cfg, pn_audit *audit, int fd)
{
	worker w;
	if (worker_init(&w, cfg, audit) < 0) {
		close(fd);
		worker_free(&w);
		return EXIT_FAILURE;
	}
	serve(&w, fd);
	worker_free(&w);
	return EXIT_SUCCESS;
}

int pn_worker_reject_main(const pn_config *cfg, int fd)
{
	pn_dcm_net *net = NULL;
	pn_dcm_tls *tls = NULL;
	char err[512];
	/* Over TLS the rejection, too, needs the handshake. */
	if (pn_dcm_init(dcm_log, pn_log_get_level()) < 0 ||
	    (pn_config_tls_listener(cfg) && pn_tls_create(cfg, true, &tls, err, sizeof(err)) < 0) ||
	    pn_dcm_net_create(cfg->acse_timeout, tls, &net) < 0) {
		close(fd);
		pn_dcm_tls_free(tls);
		return EXIT_FAILURE;
	}
	pn_assoc_reject_busy(net, fd, pn_tls_is_tls_connection(cfg, fd), (unsigned long)cfg->max_pdu,
	                     cfg->acse_timeout);
	pn_dcm_net_free(net);
	pn_dcm_tls_free(tls);
	return EXIT_SUCCESS;
}
