#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assoc.h"
#include "db.h"
#include "dcm/pn_dcm.h"
#include "fdpass.h"
#include "index.h"
#include "log.h"
#include "storage.h"
#include "store.h"

typedef struct {
	pn_store_ctx ctx;
	pn_dcm_net *net;
} worker;

static void dcm_log(int level, const char *msg)
{
	pn_log(level, "%s", msg);
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
	pn_index_set_worker(w->ctx.db, (int)getpid());
	pn_store_settle_ended(&w->ctx);
}

static int worker_init(worker *w, const pn_config *cfg)
{
	memset(w, 0, sizeof(*w));
	w->ctx.cfg = cfg;
	if (pn_dcm_init(dcm_log, pn_log_get_level()) < 0) {
		pn_error("could not initialise the DICOM toolkit");
		return -1;
	}
	if (pn_dcm_net_create(cfg->acse_timeout, &w->net) < 0) {
		pn_error("could not initialise the DICOM network");
		return -1;
	}
	int rc = pn_storage_open(cfg->storage_root, &w->ctx.storage);
	if (rc < 0) {
		pn_error("could not open storage root \"%s\": %s", cfg->storage_root, strerror(-rc));
		return -1;
	}
	pn_storage_set_write_mode(w->ctx.storage, cfg->write_mode);
	connect_db(w);
	return 0;
}

static void worker_free(worker *w)
{
	pn_db_free(w->ctx.db);
	pn_storage_free(w->ctx.storage);
	pn_dcm_net_free(w->net);
}

int pn_worker_pool_main(const pn_config *cfg, int channel)
{
	worker w;
	if (worker_init(&w, cfg) < 0) {
		worker_free(&w);
		return EXIT_FAILURE;
	}
	for (;;) {
		int fd = -1;
		int rc = pn_fd_recv(channel, &fd);
		if (rc == 0)
			break; /* the listener closed our channel: shutting down */
		if (rc < 0) {
			pn_error("worker could not receive a connection: %s", strerror(-rc));
			break;
		}
		connect_db(&w);
		pn_assoc_serve(&w.ctx, w.net, fd);
		if (pn_dcm_parse_memory_lost()) {
			pn_info(
			    "worker retiring: reading a too deeply nested command or identifier left memory behind");
			break;
		}
		char idle = 'I';
		if (write(channel, &idle, 1) != 1)
			break;
	}
	worker_free(&w);
	return EXIT_SUCCESS;
}

int pn_worker_oneshot_main(const pn_config *cfg, int fd)
{
	worker w;
	if (worker_init(&w, cfg) < 0) {
		close(fd);
		worker_free(&w);
		return EXIT_FAILURE;
	}
	pn_assoc_serve(&w.ctx, w.net, fd);
	worker_free(&w);
	return EXIT_SUCCESS;
}

int pn_worker_reject_main(const pn_config *cfg, int fd)
{
	pn_dcm_net *net = NULL;
	if (pn_dcm_init(dcm_log, pn_log_get_level()) < 0 || pn_dcm_net_create(cfg->acse_timeout, &net) < 0) {
		close(fd);
		return EXIT_FAILURE;
	}
	pn_assoc_reject_busy(net, fd, (unsigned long)cfg->max_pdu, cfg->acse_timeout);
	pn_dcm_net_free(net);
	return EXIT_SUCCESS;
}
