/* pacsnodectl status: whether the node answers (a C-ECHO-less TCP check of
 * its DICOM port and its /health when the web is on), its version and
 * schema, what the index and the storage hold. Exit status 0 when the node
 * runs and its database answers, 3 when it is not running (as systemctl
 * status), 1 when something could not be read. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include "browse.h"
#include "commitment.h"
#include "ctl.h"
#include "db.h"

/* A connection to addr:port, and (request non-NULL) the answer's status
 * line's code; 0 connected without a request, -1 nothing listens. */
static int probe(const char *bind, int port, const char *request)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	/* a node listening on every address answers on the loopback */
	if (strcmp(bind, "0.0.0.0") == 0 || inet_pton(AF_INET, bind, &a.sin_addr) != 1)
		inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int rc = -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
		rc = 0;
		char buf[64] = "";
		if (request && write(fd, request, strlen(request)) == (ssize_t)strlen(request) &&
		    read(fd, buf, sizeof(buf) - 1) > 12 && strncmp(buf, "HTTP/1.", 7) == 0)
			rc = atoi(buf + 9);
	}
	close(fd);
	return rc;
}

bool pn_ctl_node_listening(const pn_config *cfg)
{
	return cfg->port ? probe(cfg->bind, cfg->port, NULL) == 0
	                 : pn_config_tls_listener(cfg) && probe(cfg->bind, cfg->tls_port, NULL) == 0;
}

static void human(long long bytes, char *out, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)bytes;
	int u = 0;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(out, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

int pn_ctl_status(const pn_config *cfg, int argc, char **argv)
{
	(void)argv;
	if (argc > 1) {
		printf("usage: pacsnodectl status\n  whether the node runs; what the index and the storage hold\n");
		return strcmp(argv[1], "--help") == 0 ? 0 : 2;
	}
	int status = 0;
	printf("pacsnodectl %s, configuration %s\n", PN_VERSION, cfg->source);
	bool up = pn_ctl_node_listening(cfg);
	printf("node:      %s (DICOM %s:%d)\n", up ? "running" : "not running", cfg->bind,
	       cfg->port ? cfg->port : cfg->tls_port);
	if (up && cfg->http_port && !pn_config_http_certificate(cfg)) {
		int code = probe(cfg->http_bind, cfg->http_port, "GET /health HTTP/1.0\r\n\r\n");
		printf("web:       %s (http://%s:%d/health: %d)\n", code == 200 ? "healthy" : "not healthy",
		       cfg->http_bind, cfg->http_port, code);
		if (code != 200)
			status = 1;
	}
	if (!up)
		status = 3;
	pn_db *db = NULL;
	char err[512];
	if (pn_db_connect(cfg->conninfo, &db, err, sizeof(err)) < 0) {
		printf("database:  not reachable: %s\n", err);
		pn_db_free(db);
		return status ? status : 1;
	}
	int version = 0;
	pn_index_totals t;
	pn_commit_counts cc;
	if (pn_db_schema_version(db, &version) < 0 || pn_browse_totals(db, &t) < 0 || pn_commit_count(db, &cc) < 0) {
		printf("database:  %s\n", pn_db_errmsg(db));
		pn_db_free(db);
		return status ? status : 1;
	}
	pn_db_free(db);
	char stored[32];
	human(t.bytes, stored, sizeof(stored));
	printf("database:  schema version %d\n", version);
	printf("index:     %lld patients, %lld studies, %lld series, %lld instances, %s stored\n", t.patients,
	       t.studies, t.series, t.instances, stored);
	if (cc.pending || cc.expired)
		printf("commitment: %lld storage commitment reports owed (the oldest requested %.0f s ago), %lld given "
		       "up\n",
		       cc.pending, cc.oldest_pending_s, cc.expired);
	else
		printf("commitment: no storage commitment report owed\n");
	struct statvfs v;
	if (statvfs(cfg->storage_root, &v) == 0) {
		char free_s[32], size_s[32];
		human((long long)v.f_bavail * (long long)v.f_frsize, free_s, sizeof(free_s));
		human((long long)v.f_blocks * (long long)v.f_frsize, size_s, sizeof(size_s));
		printf("storage:   %s: %s free of %s\n", cfg->storage_root, free_s, size_s);
	} else {
		printf("storage:   %s: %s\n", cfg->storage_root, strerror(errno));
		status = status ? status : 1;
	}
	return status;
}
