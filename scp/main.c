/* pacsnode: a DICOM storage node. Start-up: configuration, database schema,
 * crash recovery of the storage folder; then the listener (server.c). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "index.h"
#include "log.h"
#include "node.h"
#include "nodes.h"
#include "server.h"
#include "storage.h"
#include "storage_recovery.h"
#include "store.h"
#include "tls.h"
#include "web.h"

#ifndef PN_VERSION
#define PN_VERSION "dev"
#endif

#define DB_WAIT_S 30
/* How long start-up recovery waits, in all, for database sessions of the
 * previous run to end (one may still be finishing a COMMIT). */
#define RECOVERY_WAIT_MS 10000

static void usage(FILE *out)
{
	fprintf(out, "usage: pacsnode [-c FILE] [-t]\n"
	             "  -c, --config FILE   read the configuration from FILE (default: embedded defaults)\n"
	             "  -t, --check-config  check the configuration and exit\n"
	             "  -V, --version       print the version and exit\n"
	             "  -h, --help          this text\n");
}

/* The database may still be starting (systemd ordering, a cluster coming
 * up): wait a bounded time for it. */
static pn_db *connect_with_wait(const pn_config *cfg)
{
	char err[512] = "";
	for (int waited = 0;; waited++) {
		pn_db *db = NULL;
		if (pn_db_connect(cfg->conninfo, &db, err, sizeof(err)) == 0)
			return db;
		if (waited >= DB_WAIT_S) {
			pn_error("could not connect to the database: %s", err);
			return NULL;
		}
		if (waited == 0)
			pn_warning("database not reachable yet, waiting up to %d s: %s", DB_WAIT_S, err);
		struct timespec ts = {.tv_sec = 1};
		nanosleep(&ts, NULL);
	}
}

static void report_recovery(const char *what, const pn_storage_recovery *rec)
{
	if (rec->kept || rec->removed || rec->strays)
		pn_warning("storage recovery%s after an unclean stop: %u committed instances finished, %u uncommitted "
		           "removed, %u stray temporary files removed",
		           what, rec->kept, rec->removed, rec->strays);
	if (rec->waiting)
		pn_warning("storage recovery%s: %u temporary files left for later: the database session of the process "
		           "that made them is still there",
		           what, rec->waiting);
}

/* This node's own claim on its node_id: its number, and its node lock
 * taken exclusively (no session of a node with this id is left, nor is
 * one started meanwhile). 0, or -1 logged. */
static int claim_node_id(const pn_config *cfg, pn_db *db, int *ret_num)
{
	if (pn_node_register(db, cfg->node_id, true, ret_num) < 0) {
		pn_error("could not register node_id \"%s\" in the database: %s", cfg->node_id, pn_db_errmsg(db));
		return -1;
	}
	/* Waiting: the sessions of this node's previous run may still be
	 * ending (one finishing a COMMIT whose client was killed). */
	bool taken = false;
	if (pn_node_lock(db, *ret_num, RECOVERY_WAIT_MS, &taken) < 0) {
		pn_error("could not take the lock of node_id \"%s\": %s", cfg->node_id, pn_db_errmsg(db));
		return -1;
	}
	if (!taken) {
		pn_error("node_id \"%s\" is in use: another pacsnode with this node_id is connected to the database "
		         "(waited %d s for its sessions to end); give each node its own [node] node_id",
		         cfg->node_id, RECOVERY_WAIT_MS / 1000);
		return -1;
	}
	return 0;
}

/* Schema migrations, the node id's claim and storage recovery, before any
 * worker starts. Returns the start-up session, which then holds the node
 * lock shared for the node's life (node.h), or NULL (logged). */
static pn_db *prepare(const pn_config *cfg)
{
	pn_db *db = connect_with_wait(cfg);
	if (!db)
		return NULL;
	int rc = pn_db_migrate(db);
	int version = 0;
	if (rc < 0 || pn_db_schema_version(db, &version) < 0) {
		pn_error("could not apply the database schema: %s", pn_db_errmsg(db));
		pn_db_free(db);
		return NULL;
	}
	int num = 0;
	if (claim_node_id(cfg, db, &num) < 0) {
		pn_db_free(db);
		return NULL;
	}
	pn_index_set_worker(db, cfg->node_id, 0); /* the node's workers' locks, for the claims */
	pn_storage *storage = NULL, *legacy = NULL;
	rc = pn_storage_open(cfg->storage_root, cfg->node_id, &storage);
	if (rc == 0)
		rc = pn_storage_open(cfg->storage_root, NULL, &legacy);
	if (rc < 0) {
		pn_error("could not open storage root \"%s\": %s", cfg->storage_root, strerror(-rc));
		pn_storage_free(storage);
		pn_db_free(db);
		return NULL;
	}
	pn_storage_recovery rec = {0};
	rc = pn_store_recover(db, storage, PN_RECOVER_OWN, RECOVERY_WAIT_MS, &rec);
	if (rc == 0) {
		report_recovery("", &rec);
		/* What an earlier build left in tmp/ itself */
		rec = (pn_storage_recovery){0};
		rc = pn_store_recover(db, legacy, PN_RECOVER_LEGACY, RECOVERY_WAIT_MS, &rec);
		if (rc == 0)
			report_recovery("", &rec);
	}
	if (rc == 0) {
		unsigned nodes = 0;
		rec = (pn_storage_recovery){0};
		rc = pn_nodes_settle_gone(db, cfg, storage, &nodes, &rec);
		if (nodes)
			pn_warning(
			    "storage recovery: the temporary files of %u node(s) that are gone settled: %u committed "
			    "instances finished, %u uncommitted removed, %u stray temporary files removed",
			    nodes, rec.kept, rec.removed, rec.strays);
	}
	if (rc < 0)
		pn_error("storage recovery failed: %s (%s)", strerror(-rc), pn_db_errmsg(db));
	if (rc == 0) {
		long long removed = 0, failed = 0;
		rc = pn_store_remove_garbage(db, storage, NULL, NULL, &removed, &failed);
		if (removed)
			pn_warning("storage recovery: %lld files of replaced or deleted instances removed", removed);
		if (rc < 0 && failed)
			pn_warning("storage recovery: %lld files of replaced or deleted instances could not be removed "
			           "(left queued for the next start): %s",
			           failed, strerror(-rc));
		else if (rc < 0)
			pn_error("storage recovery of replaced or deleted files failed: %s", pn_db_errmsg(db));
		if (failed)
			rc = 0; /* files, not the index: the node can run */
	}
	int shards = 0;
	if (rc == 0 && pn_index_fold_orphans(db, &shards) < 0)
		pn_warning("could not fold the count deltas left by an unclean stop (retried on the first store): %s",
		           pn_db_errmsg(db));
	else if (shards > 0)
		pn_warning("count recovery: folded the count deltas left by %d connection(s) of an unclean stop",
		           shards);
	if (rc == 0 && pn_node_share(db, num) < 0) {
		pn_error("could not hold the lock of node_id \"%s\": %s", cfg->node_id, pn_db_errmsg(db));
		rc = -1;
	}
	if (rc == 0)
		pn_info("database schema version %d; storage root \"%s\"; node_id \"%s\"", version, cfg->storage_root,
		        cfg->node_id);
	pn_storage_free(legacy);
	pn_storage_free(storage);
	if (rc < 0) {
		pn_db_free(db);
		return NULL;
	}
	return db;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
	                                     {"check-config", no_argument, NULL, 't'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {NULL, 0, NULL, 0}};
	const char *path = NULL;
	bool check_only = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'V':
			printf("pacsnode %s\n", PN_VERSION);
			return EXIT_SUCCESS;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	pn_config *cfg = NULL;
	char err[512];
	if (pn_config_load(path, &cfg, err, sizeof(err)) < 0) {
		pn_error("%s", err);
		return EXIT_FAILURE;
	}
	pn_log_set_level(cfg->log_level);
	if (pn_tls_check(cfg, err, sizeof(err)) < 0) {
		pn_error("%s: [tls] %s", cfg->source, err);
		pn_config_free(cfg);
		return EXIT_FAILURE;
	}
	if (pn_web_check(cfg, err, sizeof(err)) < 0) {
		pn_error("%s: [http] %s", cfg->source, err);
		pn_config_free(cfg);
		return EXIT_FAILURE;
	}
	if (check_only) {
		printf("configuration %s is valid\n", cfg->source);
		pn_config_free(cfg);
		return EXIT_SUCCESS;
	}

	/* A write past RLIMIT_FSIZE must fail with EFBIG (0xA700), not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	pn_info("pacsnode %s starting: configuration %s, duplicate_policy = %s, write_mode = %s", PN_VERSION,
	        cfg->source, pn_dup_policy_name(cfg->duplicate_policy), pn_write_policy_name(cfg->write_mode));
	if (cfg->accept_unknown_calling_ae)
		pn_warning("accepting any calling AE title (development default): list the peers and set "
		           "accept_unknown_calling_ae = no in production");
	if (pn_config_tls_listener(cfg))
		pn_info("DICOM TLS on port %d: TLS 1.3 and 1.2 (ECDHE with AES-GCM), client certificates %s%s",
		        cfg->tls_port, cfg->tls_require_client_certificate ? "required" : "checked when sent",
		        cfg->tls_crl ? ", checked against the CRL" : "");
	int status = EXIT_FAILURE;
	/* The start-up session stays open, idle, in the listener: it holds
	 * the node lock shared while the node runs (the workers, which hold
	 * it too, come and go). The children inherit its socket and never
	 * touch it; the server sees it close when the last of them ends.
	 * Once lost it is not replaced (the listener never waits for the
	 * database): the keeper's session is (nodes.h, docs/scale.md, "Several nodes"). */
	pn_db *node_db = prepare(cfg);
	if (node_db)
		status = pn_server_run(cfg);
	pn_db_free(node_db);
	pn_config_free(cfg);
	return status;
}
