/* The listener: accepts connections and hands each to a worker right away,
 * before any DICOM byte is read, so a slow peer only ever holds up its own
 * worker. It never touches datasets or the database. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "commit.h"
#include "config_watch.h"
#include "fdpass.h"
#include "log.h"
#include "metrics.h"
#include "nodes.h"
#include "retention_round.h"
#include "web.h"
#include "tls.h"
#include "watchdog.h"
#include "worker.h"

#define MAX_REJECTERS 16

typedef enum {
	CHILD_POOL,
	CHILD_OVERFLOW,
	CHILD_REJECTER,
	CHILD_AUDIT,
	CHILD_RETENTION,
	CHILD_COMMIT,
	CHILD_KEEPER
} child_kind;

typedef struct {
	pid_t pid; /* 0: slot unused */
	child_kind kind;
	int channel; /* pool workers: our end of the socket pair */
	bool busy;
	bool http;    /* busy with (overflow: serving) an HTTP connection */
	unsigned gen; /* the configuration it was started with */
	time_t started;
	bool silent;          /* pool workers: said not to answer the watchdog */
	bool termed;          /* retention: told to stop (a reload changed its keys) */
	const pn_config *cfg; /* retention: the configuration it runs with */
} child;

typedef struct {
	const pn_config *cfg;
	unsigned gen;         /* bumped by each reload */
	pn_config **reloaded; /* every configuration read since start: the */
	size_t n_reloaded;    /* audit handle and old workers' logs keep pointers */
	pn_audit *audit;
	pn_watchdog *wd;    /* NULL without WatchdogSec= */
	int listen_fd;      /* plain DIMSE, -1 when [node] port = 0 */
	int tls_listen_fd;  /* DICOM TLS, -1 without a TLS listener */
	int http_listen_fd; /* the web, -1 when [http] port = 0 */
	child *children;
	size_t n_children;
	int n_overflow, n_http_overflow, n_rejecters;
	time_t respawn_at;           /* a pool worker died young: wait before the next */
	time_t audit_respawn_at;     /* the same for the audit sender */
	time_t retention_respawn_at; /* and for the retention process */
	time_t commit_respawn_at;    /* and for the storage commitment sender */
	time_t keeper_respawn_at;    /* and for the node lock's keeper */
	time_t accept_paused_until;  /* out of descriptors: stop accepting a while */
} server;

static volatile sig_atomic_t got_stop, got_child, got_reload;

static void on_signal(int sig)
{
	if (sig == SIGCHLD)
		got_child = 1;
	else if (sig == SIGHUP)
		got_reload = 1;
	else
		got_stop = 1;
}

static int listen_on(const char *bind_addr, int port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) {
		pn_error("bind address \"%s\" is not an IPv4 address", bind_addr);
		return -EINVAL;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 128) < 0) {
		int rc = -errno;
		pn_error("could not listen on %s:%d: %s", bind_addr, port, strerror(-rc));
		close(fd);
		return rc;
	}
	return fd;
}

static child *free_slot(server *s)
{
	for (size_t i = 0; i < s->n_children; i++)
		if (s->children[i].pid == 0)
			return &s->children[i];
	return NULL;
}

/* In a new child: drop what belongs to the listener. */
static void child_setup(server *s, int keep_fd)
{
	sigset_t none;
	sigemptyset(&none);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the listener, which stops us */
	signal(SIGHUP, SIG_IGN);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->tls_listen_fd >= 0)
		close(s->tls_listen_fd);
	if (s->http_listen_fd >= 0)
		close(s->http_listen_fd);
	for (size_t i = 0; i < s->n_children; i++)
		if (s->children[i].pid && s->children[i].channel >= 0 && s->children[i].channel != keep_fd)
			close(s->children[i].channel);
}

static int spawn_pool_worker(server *s, child *c)
{
	size_t slot = (size_t)(c - s->children);
	pn_watchdog_slot_reset(s->wd, slot);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int rc = -errno;
		close(sv[0]);
		close(sv[1]);
		return rc;
	}
	if (pid == 0) {
		close(sv[0]);
		child_setup(s, sv[1]);
		_exit(pn_worker_pool_main(s->cfg, s->audit, sv[1], s->wd, slot));
	}
	close(sv[1]);
	*c = (child){.pid = pid, .kind = CHILD_POOL, .channel = sv[0], .gen = s->gen, .started = time(NULL)};
	return 0;
}

/* Overflow workers and rejecters: one connection each. */
static int spawn_oneshot(server *s, child_kind kind, int fd, bool http)
{
	child *c = free_slot(s);
	if (!c)
		return -EAGAIN;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		child_setup(s, -1);
		_exit(kind == CHILD_OVERFLOW ? pn_worker_oneshot_main(s->cfg, s->audit, fd)
		                             : pn_worker_reject_main(s->cfg, fd));
	}
	*c = (child){.pid = pid, .kind = kind, .channel = -1, .http = http, .gen = s->gen, .started = time(NULL)};
	if (kind == CHILD_OVERFLOW && http)
		s->n_http_overflow++;
	else if (kind == CHILD_OVERFLOW)
		s->n_overflow++;
	else
		s->n_rejecters++;
	return 0;
}

/* HTTP beyond [http] max_connections: a 503 written here, without a
 * process (the socket's buffer takes these few bytes at once). */
static void http_busy(int fd, int busy)
{
	ssize_t n = send(fd, pn_web_busy_response, strlen(pn_web_busy_response), MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)n;
	pn_warning("HTTP connection answered 503: %d HTTP connections busy", busy);
}

/* A connection to a worker: an idle pool worker, else an overflow worker
 * while the limit of its kind (DICOM associations, HTTP connections)
 * allows, else a DICOM rejecter or an HTTP 503. */
static void dispatch(server *s, int fd, bool http)
{
	int one = 1;
	/* Nagle would hold every small DIMSE response for ~40 ms. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int busy = http ? s->n_http_overflow : s->n_overflow;
	int limit = http ? s->cfg->http_max_connections : s->cfg->max_associations;
	for (size_t i = 0; i < s->n_children; i++) {
		child *c = &s->children[i];
		if (c->pid && c->kind == CHILD_POOL && c->busy && c->http == http)
			busy++;
	}
	for (size_t i = 0; i < s->n_children && busy < limit; i++) {
		child *c = &s->children[i];
		/* not one that stopped answering the watchdog: the connection
		 * would wait as long as it does */
		if (c->pid && c->kind == CHILD_POOL && !c->busy && c->channel >= 0 &&
		    !pn_watchdog_silent_ms(s->wd, i)) {
			if (pn_fd_send(c->channel, fd) == 0) {
				c->busy = true;
				c->http = http;
				close(fd);
				return;
			}
		}
	}
	int rc;
	if (busy < limit)
		rc = spawn_oneshot(s, CHILD_OVERFLOW, fd, http);
	else if (http) {
		http_busy(fd, busy);
		rc = 0;
	} else if (s->n_rejecters < MAX_REJECTERS)
		rc = spawn_oneshot(s, CHILD_REJECTER, fd, false);
	else
		rc = -EAGAIN;
	if (rc < 0)
		pn_warning("connection dropped: %d %s busy and no process free to answer it", busy,
		           http ? "HTTP connections" : "associations");
	close(fd);
}

/* The child of a kind, if one runs. */
static child *child_of_kind(server *s, child_kind kind)
{
	for (size_t i = 0; i < s->n_children; i++)
		if (s->children[i].pid && s->children[i].kind == kind)
			return &s->children[i];
	return NULL;
}

/* The services (the audit sender, retention, the storage commitment
 * sender): one process each, with no connection to hand over, not started
 * again sooner than backoff_s after the last start, whether it died or
 * could not be forked. */
static void spawn_service(server *s, child_kind kind, const char *what, time_t *respawn_at, int backoff_s)
{
	child *c = free_slot(s);
	if (!c)
		return;
	pid_t listener = getpid();
	pid_t pid = fork();
	if (pid < 0)
		pn_error("could not start the %s: %m", what);
	if (pid == 0) {
		child_setup(s, -1);
		_exit(kind == CHILD_AUDIT       ? pn_audit_sender_main(s->audit)
		      : kind == CHILD_RETENTION ? pn_retention_main(s->cfg, s->audit)
		      : kind == CHILD_KEEPER    ? pn_node_keeper_main(s->cfg, listener)
		                                : pn_commit_sender_main(s->cfg));
	}
	if (pid > 0)
		*c = (child){
		    .pid = pid, .kind = kind, .channel = -1, .gen = s->gen, .started = time(NULL), .cfg = s->cfg};
	*respawn_at = time(NULL) + backoff_s;
}

/* The audit sender, restarted (not faster than once a second) if it dies. */
static void keep_audit_sender(server *s)
{
	if (pn_audit_enabled(s->audit) && time(NULL) >= s->audit_respawn_at && !child_of_kind(s, CHILD_AUDIT))
		spawn_service(s, CHILD_AUDIT, "audit sender", &s->audit_respawn_at, 1);
}

/* Whether a reloaded configuration changes what retention does. */
static bool retention_same(const pn_config *a, const pn_config *b)
{
	return a->max_storage_bytes == b->max_storage_bytes && a->max_study_age_days == b->max_study_age_days &&
	       a->delete_for_free_space == b->delete_for_free_space && a->min_free_bytes == b->min_free_bytes &&
	       a->retention_policy == b->retention_policy && a->deletes_per_minute == b->deletes_per_minute &&
	       a->retention_interval == b->retention_interval;
}

/* The retention process (retention_round.h): one while a deletion is
 * configured; after a reload that changes its keys the old one is told to
 * stop (it ends the deletion in progress) and, once it is gone, a new one
 * starts with the new keys, so two never delete at once. Restarted at most
 * every 5 s if it dies. */
static void keep_retention(server *s)
{
	child *c = child_of_kind(s, CHILD_RETENTION);
	if (c) {
		if (c->gen != s->gen && !c->termed) {
			if (retention_same(c->cfg, s->cfg) && pn_retention_on(s->cfg))
				c->gen = s->gen; /* unchanged: it goes on, its minute's count with it */
			else {
				kill(c->pid, SIGTERM);
				c->termed = true;
			}
		}
		return;
	}
	if (pn_retention_on(s->cfg) && time(NULL) >= s->retention_respawn_at)
		spawn_service(s, CHILD_RETENTION, "retention process", &s->retention_respawn_at, 5);
}

/* The storage commitment sender: one process while some peer may request
 * storage commitment, restarted (not faster than once a second) if it
 * dies, and after a reload (it runs with the configuration it started
 * with). */
static void keep_commit_sender(server *s)
{
	bool wanted = false;
	for (size_t i = 0; i < s->cfg->n_peers; i++)
		wanted |= (s->cfg->peers[i].allow & PN_ALLOW_COMMIT) != 0;
	if (wanted && time(NULL) >= s->commit_respawn_at && !child_of_kind(s, CHILD_COMMIT))
		spawn_service(s, CHILD_COMMIT, "storage commitment sender", &s->commit_respawn_at, 1);
}

/* The node lock's keeper (nodes.h), restarted (not faster than once a
 * second) if it dies. */
static void keep_node_keeper(server *s)
{
	if (time(NULL) >= s->keeper_respawn_at && !child_of_kind(s, CHILD_KEEPER))
		spawn_service(s, CHILD_KEEPER, "node lock keeper", &s->keeper_respawn_at, 1);
}

/* Tells the storage commitment sender to stop (after the report it is
 * sending). */
static void stop_commit_sender(server *s)
{
	for (size_t i = 0; i < s->n_children; i++)
		if (s->children[i].pid && s->children[i].kind == CHILD_COMMIT)
			kill(s->children[i].pid, SIGTERM);
}

static void accept_all(server *s, int listen_fd, bool http)
{
	for (int i = 0; i < 64; i++) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* the connection stays queued; polling again at once
				 * would only spin */
				pn_warning("accept failed: %m; not accepting for 1 s");
				s->accept_paused_until = time(NULL) + 1;
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
				pn_warning("accept failed: %m");
			}
			return;
		}
		dispatch(s, fd, http);
	}
}

static void describe_exit(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}

static void reap(server *s, bool stopping)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < s->n_children; i++) {
			child *c = &s->children[i];
			if (c->pid != pid)
				continue;
			bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
			char how[64];
			describe_exit(status, how, sizeof(how));
			if (c->kind == CHILD_OVERFLOW && c->http)
				s->n_http_overflow--;
			else if (c->kind == CHILD_OVERFLOW)
				s->n_overflow--;
			else if (c->kind == CHILD_REJECTER)
				s->n_rejecters--;
			else if (c->kind == CHILD_AUDIT && !stopping)
				pn_warning("audit sender %d ended unexpectedly (%s); starting another", (int)pid, how);
			else if (c->kind == CHILD_RETENTION && !stopping && c->termed && clean)
				pn_info("retention process %d stopped for the reloaded configuration", (int)pid);
			else if (c->kind == CHILD_RETENTION && !stopping)
				pn_warning("retention process %d ended unexpectedly (%s); starting another within 5 s",
				           (int)pid, how);
			else if (c->kind == CHILD_KEEPER && !stopping)
				pn_warning("node lock keeper %d ended unexpectedly (%s); starting another", (int)pid,
				           how);
			else if (c->kind == CHILD_COMMIT) {
				/* one stopped by a reload ends cleanly */
				if (!stopping && !(clean && c->gen != s->gen))
					pn_warning("storage commitment sender %d ended unexpectedly (%s); starting "
					           "another",
					           (int)pid, how);
			} else if (!stopping && clean)
				pn_info("worker %d retired; starting another", (int)pid);
			else if (!stopping)
				pn_warning("worker %d ended unexpectedly (%s); starting another", (int)pid, how);
			/* an overflow worker is a worker too: its death reads the same */
			if (!clean && c->kind == CHILD_OVERFLOW)
				pn_warning("worker %d ended unexpectedly (%s)", (int)pid, how);
			else if (!clean && c->kind == CHILD_REJECTER)
				pn_warning("process %d ended with %s", (int)pid, how);
			if (c->channel >= 0)
				close(c->channel);
			if (c->kind == CHILD_POOL && !stopping && time(NULL) - c->started < 1)
				s->respawn_at = time(NULL) + 1;
			c->pid = 0;
			c->channel = -1;
		}
	}
}

/* Pool workers of the running configuration (those of an earlier one
 * finish what they serve and go). */
static int pool_size(const server *s)
{
	int n = 0;
	for (size_t i = 0; i < s->n_children; i++)
		if (s->children[i].pid && s->children[i].kind == CHILD_POOL && s->children[i].gen == s->gen)
			n++;
	return n;
}

static void fill_pool(server *s)
{
	if (time(NULL) < s->respawn_at)
		return;
	while (pool_size(s) < s->cfg->workers) {
		child *c = free_slot(s);
		if (!c || spawn_pool_worker(s, c) < 0) {
			pn_error("could not start a worker: %m");
			s->respawn_at = time(NULL) + 1;
			return;
		}
	}
}

static void worker_idle(const server *s, child *c)
{
	char buf[16];
	ssize_t n = read(c->channel, buf, sizeof(buf));
	if (n > 0 && c->gen != s->gen) {
		/* started under an earlier configuration: done, it may go */
		close(c->channel);
		c->channel = -1;
	} else if (n > 0) {
		c->busy = false;
		c->http = false;
	} else if (n == 0) { /* the worker is gone; reap() handles it */
		close(c->channel);
		c->channel = -1;
	}
}

/* WATCHDOG=1 while every idle pool worker answers (watchdog.h); one line
 * when one stops answering, one when it answers again. */
static void keep_watchdog(server *s)
{
	if (!s->wd)
		return;
	bool healthy = true;
	for (size_t i = 0; i < s->n_children; i++) {
		child *c = &s->children[i];
		if (!c->pid || c->kind != CHILD_POOL || c->busy || c->channel < 0)
			continue;
		long silent = pn_watchdog_silent_ms(s->wd, i);
		if (silent && !c->silent)
			pn_warning(
			    "watchdog: idle worker %d has not answered for %.1f s; systemd is no longer told the "
			    "node is alive and restarts it after WatchdogSec unless the worker answers again",
			    (int)c->pid, (double)silent / 1000.0);
		else if (!silent && c->silent)
			pn_info("watchdog: worker %d answers again", (int)c->pid);
		c->silent = silent != 0;
		healthy &= !silent;
	}
	pn_watchdog_ping(s->wd, healthy);
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void shut_down(server *s)
{
	sd_notify(0, "STOPPING=1");
	pn_info("shutting down: waiting up to %d s ([limits] stop_timeout) for associations in progress",
	        s->cfg->stop_timeout);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->tls_listen_fd >= 0)
		close(s->tls_listen_fd);
	if (s->http_listen_fd >= 0)
		close(s->http_listen_fd);
	s->listen_fd = s->tls_listen_fd = s->http_listen_fd = -1;
	/* What the commitment sender is sending ends within its timeouts;
	 * what it has not sent stays queued in the database. */
	stop_commit_sender(s);
	/* Retention ends the deletion in progress and goes; the keeper's hold
	 * is not needed while the listener's session holds the lock (main.c). */
	for (size_t i = 0; i < s->n_children; i++)
		if (s->children[i].pid &&
		    (s->children[i].kind == CHILD_RETENTION || s->children[i].kind == CHILD_KEEPER))
			kill(s->children[i].pid, SIGTERM);
	/* Idle pool workers exit when their channel closes; busy ones finish
	 * their association first. */
	for (size_t i = 0; i < s->n_children; i++) {
		if (s->children[i].channel >= 0) {
			close(s->children[i].channel);
			s->children[i].channel = -1;
		}
	}
	/* a monotonic clock: time()'s whole seconds would cut the wait short
	 * by up to one */
	double deadline = now_s() + s->cfg->stop_timeout;
	bool termed = false, audit_told = false;
	for (;;) {
		reap(s, true);
		bool any = false, workers = false;
		for (size_t i = 0; i < s->n_children; i++) {
			any |= s->children[i].pid != 0;
			workers |= s->children[i].pid != 0 && s->children[i].kind != CHILD_AUDIT;
		}
		if (!any)
			break;
		/* The sender goes last, with what the workers spooled on their
		 * way out and our stop message. */
		if (!workers && !audit_told) {
			pn_audit_app_activity(s->audit, false);
			for (size_t i = 0; i < s->n_children; i++)
				if (s->children[i].pid && s->children[i].kind == CHILD_AUDIT)
					kill(s->children[i].pid, SIGTERM);
			audit_told = true;
			deadline = now_s() + 5;
		}
		if (now_s() >= deadline) {
			int left = 0;
			for (size_t i = 0; i < s->n_children; i++)
				left += s->children[i].pid != 0 && s->children[i].kind != CHILD_AUDIT;
			if (!termed && left)
				pn_warning(
				    "stop_timeout (%d s) reached: ending the %d associations and connections still in "
				    "progress (nothing they did not see acknowledged is kept half-written)",
				    s->cfg->stop_timeout, left);
			for (size_t i = 0; i < s->n_children; i++)
				if (s->children[i].pid)
					kill(s->children[i].pid, termed ? SIGKILL : SIGTERM);
			if (termed)
				break;
			termed = true;
			deadline = now_s() + 2;
		}
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	reap(s, true);
}

/* A configuration that changed since the last start or reload is a
 * Security Alert (that is when it takes effect). */
static void audit_config_change(server *s)
{
	if (!pn_audit_enabled(s->audit) || strcmp(s->cfg->source, "(embedded defaults)") == 0)
		return;
	char state[4096], detail[512];
	snprintf(state, sizeof(state), "%s/config.sha256", s->cfg->audit_spool);
	int rc = pn_config_watch(s->cfg->source, state, detail, sizeof(detail));
	if (rc < 0) {
		pn_warning("audit: could not compare the configuration with the last start's (\"%s\"): %s", state,
		           strerror(-rc));
	} else if (rc > 0) {
		pn_audit_assoc self = {.calling_ae = s->cfg->ae_title, .called_ae = s->cfg->ae_title, .peer_addr = ""};
		pn_audit_security_alert(s->audit, PN_AUDIT_ALERT_CONFIGURATION, &self, detail);
		pn_info("%s", detail);
	}
}

/* SIGHUP: the file read again; a valid one is swapped in for the workers
 * started from now on (running associations and requests finish under the
 * configuration they began with; idle workers are replaced at once), the
 * keys that need a restart are kept and named; an invalid file keeps the
 * running configuration, with one line saying what is wrong. */
static void reload(server *s)
{
	sd_notify(0, "RELOADING=1");
	const char *path = s->cfg->source;
	if (strcmp(path, "(embedded defaults)") == 0) {
		pn_warning("reload: the node runs on its embedded defaults; there is no file to read again");
		sd_notify(0, "READY=1");
		return;
	}
	pn_config *fresh = NULL;
	char err[512];
	int rc = pn_config_load(path, &fresh, err, sizeof(err));
	if (rc == 0 && pn_tls_check(fresh, err, sizeof(err)) < 0)
		rc = -EINVAL;
	if (rc == 0 && pn_web_check(fresh, err, sizeof(err)) < 0)
		rc = -EINVAL;
	char kept[512] = "";
	if (rc == 0 && pn_config_keep_restart_keys(fresh, s->cfg, kept, sizeof(kept)) < 0) {
		snprintf(err, sizeof(err), "out of memory");
		rc = -ENOMEM;
	}
	pn_config **list = rc == 0 ? realloc(s->reloaded, (s->n_reloaded + 1) * sizeof(*list)) : NULL;
	if (rc == 0 && !list) {
		snprintf(err, sizeof(err), "out of memory");
		rc = -ENOMEM;
	}
	if (rc < 0) {
		pn_error("reload refused, the running configuration stays: %s", err);
		pn_config_free(fresh);
		sd_notify(0, "READY=1");
		return;
	}
	s->reloaded = list;
	s->reloaded[s->n_reloaded++] = fresh;
	s->cfg = fresh;
	s->gen++;
	pn_log_set_level(fresh->log_level);
	if (kept[0])
		pn_warning("reload: %s changed in %s but need a restart; the running values stay", kept, path);
	/* Idle workers go now (their channel closed), busy ones when they
	 * report idle; fill_pool starts the new ones. */
	int replaced = 0;
	for (size_t i = 0; i < s->n_children; i++) {
		child *c = &s->children[i];
		if (c->pid && c->kind == CHILD_POOL && !c->busy && c->channel >= 0) {
			close(c->channel);
			c->channel = -1;
			replaced++;
		}
	}
	pn_info("configuration reloaded from %s: %zu peers; %d idle workers replaced, the busy ones after their "
	        "connection",
	        path, fresh->n_peers, replaced);
	stop_commit_sender(s); /* started again with the new peers */
	audit_config_change(s);
	sd_notify(0, "READY=1");
}

int pn_server_run(const pn_config *cfg)
{
	server s = {.cfg = cfg, .listen_fd = -1, .tls_listen_fd = -1, .http_listen_fd = -1};
	s.n_children = (size_t)cfg->workers + (size_t)cfg->max_associations + (size_t)cfg->http_max_connections +
	               MAX_REJECTERS + 4; /* the audit sender, retention, the commitment sender, the keeper */
	s.children = calloc(s.n_children, sizeof(child));
	if (!s.children)
		return EXIT_FAILURE;
	for (size_t i = 0; i < s.n_children; i++)
		s.children[i].channel = -1;
	if (pn_metrics_init() < 0)
		pn_warning("no shared memory for /metrics: its counters stay at zero");
	int rc = pn_watchdog_create(s.n_children, &s.wd);
	if (rc < 0) {
		pn_error("could not set up the systemd watchdog: %s", strerror(-rc));
		free(s.children);
		return EXIT_FAILURE;
	}
	rc = pn_audit_create(cfg, &s.audit);
	if (rc < 0) {
		pn_error("could not set up the audit trail (spool \"%s\"): %s", cfg->audit_spool, strerror(-rc));
		pn_watchdog_free(s.wd);
		free(s.children);
		return EXIT_FAILURE;
	}
	if (cfg->port != 0)
		s.listen_fd = listen_on(cfg->bind, cfg->port);
	if (pn_config_tls_listener(cfg))
		s.tls_listen_fd = listen_on(cfg->bind, cfg->tls_port);
	if (cfg->http_port != 0)
		s.http_listen_fd = listen_on(cfg->http_bind, cfg->http_port);
	if ((cfg->port != 0 && s.listen_fd < 0) || (pn_config_tls_listener(cfg) && s.tls_listen_fd < 0) ||
	    (cfg->http_port != 0 && s.http_listen_fd < 0)) {
		if (s.listen_fd >= 0)
			close(s.listen_fd);
		if (s.tls_listen_fd >= 0)
			close(s.tls_listen_fd);
		if (s.http_listen_fd >= 0)
			close(s.http_listen_fd);
		pn_audit_free(s.audit);
		pn_watchdog_free(s.wd);
		free(s.children);
		return EXIT_FAILURE;
	}

	sigset_t blocked, orig;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGCHLD);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGHUP);
	sigprocmask(SIG_BLOCK, &blocked, &orig);
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	fill_pool(&s);
	keep_audit_sender(&s);
	keep_retention(&s);
	keep_commit_sender(&s);
	char where[160];
	if (cfg->port && s.tls_listen_fd >= 0)
		snprintf(where, sizeof(where), "%s:%d (DICOM) and %s:%d (DICOM TLS)", cfg->bind, cfg->port, cfg->bind,
		         cfg->tls_port);
	else if (cfg->port)
		snprintf(where, sizeof(where), "%s:%d (DICOM)", cfg->bind, cfg->port);
	else
		snprintf(where, sizeof(where), "%s:%d (DICOM TLS only)", cfg->bind, cfg->tls_port);
	pn_info("listening on %s as \"%s\" with %d workers (max %d associations)", where, cfg->ae_title, cfg->workers,
	        cfg->max_associations);
	if (cfg->http_port != 0)
		pn_info("web (pages and DICOMweb) on %s://%s:%d/, %s, at most %d connections",
		        pn_config_http_certificate(cfg) ? "https" : "http", cfg->http_bind, cfg->http_port,
		        cfg->http_users ? "logins from the users file"
		                        : "open to anyone on this machine (no [http] users)",
		        cfg->http_max_connections);
	pn_audit_app_activity(s.audit, true);
	audit_config_change(&s);
	sd_notify(0, "READY=1");

	struct pollfd *pfd = calloc(s.n_children + 3, sizeof(*pfd));
	child **owner = calloc(s.n_children + 3, sizeof(*owner));
	if (!pfd || !owner) {
		free(pfd);
		free(owner);
		pn_watchdog_free(s.wd);
		free(s.children);
		return EXIT_FAILURE;
	}
	while (!got_stop) {
		if (got_child) {
			got_child = 0;
			reap(&s, false);
		}
		if (got_reload) {
			got_reload = 0;
			reload(&s);
		}
		fill_pool(&s);
		keep_audit_sender(&s);
		keep_retention(&s);
		keep_commit_sender(&s);
		keep_node_keeper(&s);
		keep_watchdog(&s);
		nfds_t n = 0;
		bool accepting = time(NULL) >= s.accept_paused_until;
		pfd[n++] = (struct pollfd){.fd = accepting ? s.listen_fd : -1, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = accepting ? s.tls_listen_fd : -1, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = accepting ? s.http_listen_fd : -1, .events = POLLIN};
		for (size_t i = 0; i < s.n_children; i++) {
			child *c = &s.children[i];
			if (c->pid && c->kind == CHILD_POOL && c->channel >= 0) {
				owner[n] = c;
				pfd[n++] = (struct pollfd){.fd = c->channel, .events = POLLIN};
			}
		}
		int tick_ms = pn_watchdog_tick_ms(s.wd, 1000);
		struct timespec tick = {.tv_sec = tick_ms / 1000, .tv_nsec = (long)(tick_ms % 1000) * 1000000};
		int ready = ppoll(pfd, n, &tick, &orig);
		if (ready < 0)
			continue; /* EINTR: a signal; the flags say which */
		for (nfds_t i = 3; i < n; i++)
			if (pfd[i].revents)
				worker_idle(&s, owner[i]);
		if (pfd[0].revents & POLLIN)
			accept_all(&s, s.listen_fd, false);
		if (pfd[1].revents & POLLIN)
			accept_all(&s, s.tls_listen_fd, false);
		if (pfd[2].revents & POLLIN)
			accept_all(&s, s.http_listen_fd, true);
	}
	free(pfd);
	free(owner);
	shut_down(&s);
	unsigned long dropped = pn_audit_dropped(s.audit);
	if (dropped)
		pn_warning("audit: %lu messages were dropped since start (spool full or not writable)", dropped);
	pn_audit_free(s.audit);
	pn_watchdog_free(s.wd);
	free(s.children);
	for (size_t i = 0; i < s.n_reloaded; i++)
		pn_config_free(s.reloaded[i]);
	free(s.reloaded);
	pn_info("stopped");
	return EXIT_SUCCESS;
}
