/* The audit sender: one process of its own (forked by the listener), so that
 * no worker ever waits for the audit repository. It sends the spool's
 * messages oldest first and removes each once delivered; while the
 * repository is unreachable they stay, and it tries again with back-off. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "audit_internal.h"
#include "log.h"

#define IDLE_MS 100
#define CONNECT_TIMEOUT_S 5
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 10000
#define STOP_FLUSH_MS 2000
#define MAX_MESSAGE (16u << 20)
#define UDP_MAX 65507 /* IPv4: 65,535 - 8 (UDP header) - 20 (IP header) */
/* UDP has no flow control: a backlog sent at full speed overflows the
 * repository's receive buffer and nothing tells us (a Python receiver
 * writing each message to a file got 4,843 of 5,000 spooled 1.4 KB
 * messages here; paced at 2,000 or 5,000 a second, all 5,000). So
 * datagrams go out at most PN_AUDIT_UDP_RATE a second after a burst of
 * UDP_BURST. */
#ifndef PN_AUDIT_UDP_RATE
#define PN_AUDIT_UDP_RATE 2000
#endif
#define UDP_BURST 32

static volatile sig_atomic_t got_stop;

static void on_stop(int sig)
{
	(void)sig;
	got_stop = 1;
}

typedef struct {
	pn_audit *audit;
	const pn_config *cfg;
	char target[320]; /* for the log */
	int fd;           /* socket or file; -1: not connected */
	SSL_CTX *ctx;
	SSL *ssl;
	/* UDP: the last datagram sent. A closed port answers with an ICMP
	 * port unreachable, which the socket reports as an error on its next
	 * operation: on loopback at once (looked at right after send()); from
	 * a remote host one round trip later, so the datagram is removed only
	 * once a later look (before the next send, or 100 ms later) shows no
	 * error. */
	char pending[256];
	size_t pending_len;
	bool down; /* said so in the log */
	unsigned backoff_ms;
	/* While stopping: no connect, handshake or write may wait past this
	 * (CLOCK_MONOTONIC); zero otherwise. */
	struct timespec deadline;
	/* UDP pacing: a token bucket */
	double tokens;
	struct timespec refilled;
} sender;

static long long ms_until(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(t->tv_sec - now.tv_sec) * 1000 + (t->tv_nsec - now.tv_nsec) / 1000000;
}

/* How long one network operation may wait: `ms`, less once stopping. */
static int wait_ms(const sender *s, int ms)
{
	if (s->deadline.tv_sec == 0)
		return ms;
	long long left = ms_until(&s->deadline);
	return left < 1 ? 1 : left < ms ? (int)left : ms;
}

static void set_timeouts(const sender *s, int fd)
{
	int ms = wait_ms(s, CONNECT_TIMEOUT_S * 1000);
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Waits until one more datagram may go out. */
static void pace(sender *s)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double dt = (double)(now.tv_sec - s->refilled.tv_sec) + (double)(now.tv_nsec - s->refilled.tv_nsec) / 1e9;
	s->refilled = now;
	s->tokens += dt * PN_AUDIT_UDP_RATE;
	if (s->tokens > UDP_BURST)
		s->tokens = UDP_BURST;
	if (s->tokens < 1) {
		long ns = (long)((1 - s->tokens) * 1e9 / PN_AUDIT_UDP_RATE);
		struct timespec ts = {.tv_sec = 0, .tv_nsec = ns};
		nanosleep(&ts, NULL);
		clock_gettime(CLOCK_MONOTONIC, &s->refilled);
		s->tokens = 1;
	}
	s->tokens -= 1;
}

static void disconnect(sender *s)
{
	if (s->ssl) {
		SSL_shutdown(s->ssl);
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static void forget(sender *s, const char *name, size_t len)
{
	if (unlinkat(s->audit->dir_fd, name, 0) != 0)
		return;
	/* Never below zero: pacsnodectl's messages were counted in its own
	 * process, not in ours. */
	uint_fast64_t have = atomic_load(&s->audit->shared->bytes);
	while (!atomic_compare_exchange_weak(&s->audit->shared->bytes, &have, have > len ? have - len : 0))
		;
}

/* UDP: whether the datagram sent last reached an open port. */
static int confirm_pending(sender *s)
{
	if (!s->pending[0] || s->fd < 0)
		return 0;
	int err = 0;
	socklen_t l = sizeof(err);
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		err = errno;
	if (err) {
		s->pending[0] = '\0'; /* still in the spool: sent again */
		return -err;
	}
	forget(s, s->pending, s->pending_len);
	s->pending[0] = '\0';
	return 0;
}

static int resolve(const char *host, int port, int socktype, struct sockaddr_in *ret)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = socktype}, *res = NULL;
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	if (getaddrinfo(host, service, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	memcpy(ret, res->ai_addr, sizeof(*ret));
	freeaddrinfo(res);
	return 0;
}

static int connect_tcp(const sender *s, const struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 && errno != EINPROGRESS) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t l = sizeof(err);
	if (poll(&p, 1, wait_ms(s, CONNECT_TIMEOUT_S * 1000)) != 1)
		err = ETIMEDOUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		err = errno;
	if (err) {
		close(fd);
		return -err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	set_timeouts(s, fd);
	return fd;
}

static void ssl_reason(char *why, size_t len)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, why, len);
	else
		snprintf(why, len, "TLS handshake failed");
	ERR_clear_error();
}

/* The RFC 5425 client context: TLS 1.2 or later, the repository's
 * certificate verified against [tls] ca; our certificate when we have one
 * (repositories that require mutual authentication). */
static int tls_context(sender *s, char *why, size_t len)
{
	const pn_config *cfg = s->cfg;
	s->ctx = SSL_CTX_new(TLS_client_method());
	if (!s->ctx) {
		ssl_reason(why, len);
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
	struct stat st;
	bool dir = cfg->tls_ca && stat(cfg->tls_ca, &st) == 0 && S_ISDIR(st.st_mode);
	if (!cfg->tls_ca ||
	    SSL_CTX_load_verify_locations(s->ctx, dir ? NULL : cfg->tls_ca, dir ? cfg->tls_ca : NULL) != 1) {
		ssl_reason(why, len);
		return -EINVAL;
	}
	if (cfg->tls_certificate && cfg->tls_private_key &&
	    (SSL_CTX_use_certificate_chain_file(s->ctx, cfg->tls_certificate) != 1 ||
	     SSL_CTX_use_PrivateKey_file(s->ctx, cfg->tls_private_key, SSL_FILETYPE_PEM) != 1)) {
		ssl_reason(why, len);
		return -EINVAL;
	}
	return 0;
}

static int connect_target(sender *s, char *why, size_t len)
{
	const pn_config *cfg = s->cfg;
	if (cfg->audit_kind == PN_AUDIT_FILE) {
		s->fd = open(cfg->audit_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
		if (s->fd < 0) {
			snprintf(why, len, "%s", strerror(errno));
			return -errno;
		}
		return 0;
	}
	struct sockaddr_in addr;
	int rc = resolve(cfg->audit_host, cfg->audit_port, cfg->audit_kind == PN_AUDIT_UDP ? SOCK_DGRAM : SOCK_STREAM,
	                 &addr);
	if (rc < 0) {
		snprintf(why, len, "cannot resolve \"%.200s\"", cfg->audit_host);
		return rc;
	}
	if (cfg->audit_kind == PN_AUDIT_UDP) {
		s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			rc = -errno;
			snprintf(why, len, "%s", strerror(-rc));
			disconnect(s);
			return rc;
		}
		return 0;
	}
	if (!s->ctx && (rc = tls_context(s, why, len)) < 0)
		return rc;
	s->fd = connect_tcp(s, &addr);
	if (s->fd < 0) {
		rc = s->fd;
		snprintf(why, len, "%s", strerror(-rc));
		return rc;
	}
	s->ssl = SSL_new(s->ctx);
	if (!s->ssl) {
		ssl_reason(why, len);
		disconnect(s);
		return -ENOMEM;
	}
	X509_VERIFY_PARAM *param = SSL_get0_param(s->ssl);
	if (X509_VERIFY_PARAM_set1_ip_asc(param, cfg->audit_host) != 1) {
		X509_VERIFY_PARAM_set1_host(param, cfg->audit_host, 0);
		SSL_set_tlsext_host_name(s->ssl, cfg->audit_host);
	}
	SSL_set_fd(s->ssl, s->fd);
	if (SSL_connect(s->ssl) != 1) {
		long v = SSL_get_verify_result(s->ssl);
		if (v != X509_V_OK)
			snprintf(why, len, "certificate verify failed: %s", X509_verify_cert_error_string(v));
		else
			ssl_reason(why, len);
		ERR_clear_error();
		disconnect(s);
		return -EACCES;
	}
	return 0;
}

/* A TLS repository that closed its side: reconnect before writing. The
 * socket is also readable for records that are no end: a TLS 1.3 server
 * sends its session tickets after the handshake. So the records are read
 * without waiting (a blocking SSL_peek would wait for application data
 * that never comes, as long as the receive timeout, before each message). */
static bool peer_closed(sender *s)
{
	struct pollfd p = {.fd = s->fd, .events = POLLIN};
	if (poll(&p, 1, 0) != 1)
		return false;
	if (p.revents & (POLLERR | POLLHUP))
		return true;
	int flags = fcntl(s->fd, F_GETFL);
	fcntl(s->fd, F_SETFL, flags | O_NONBLOCK);
	char c;
	int r = SSL_peek(s->ssl, &c, 1);
	int e = SSL_get_error(s->ssl, r);
	fcntl(s->fd, F_SETFL, flags);
	ERR_clear_error();
	return r <= 0 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
}

static int deliver(sender *s, const char *name, const char *msg, size_t len, char *why, size_t whylen)
{
	int rc;
	if (s->fd >= 0 && s->ssl && peer_closed(s))
		disconnect(s);
	if (s->fd < 0 && (rc = connect_target(s, why, whylen)) < 0)
		return rc;
	switch (s->cfg->audit_kind) {
	case PN_AUDIT_UDP:
		if (len > UDP_MAX)
			return -EMSGSIZE; /* never deliverable: the caller drops it */
		if ((rc = confirm_pending(s)) < 0) {
			snprintf(why, whylen, "%s", strerror(-rc));
			return rc;
		}
		pace(s);
		if (send(s->fd, msg, len, 0) != (ssize_t)len) {
			rc = errno == EMSGSIZE ? -EMSGSIZE : -errno;
			snprintf(why, whylen, "%s", strerror(errno));
			return rc;
		}
		/* On loopback the port unreachable is already there when send()
		 * returns (200,000 of 200,000 datagrams to a closed port here,
		 * also with every CPU busy): this datagram was refused. */
		int err = 0;
		socklen_t l = sizeof(err);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err) {
			snprintf(why, whylen, "%s", strerror(err));
			return -err;
		}
		snprintf(s->pending, sizeof(s->pending), "%.200s", name);
		s->pending_len = len;
		return 1; /* removed once confirmed */
	case PN_AUDIT_TLS: {
		/* RFC 5425 octet counting */
		char head[24];
		int n = snprintf(head, sizeof(head), "%zu ", len);
		char *frame = malloc((size_t)n + len);
		if (!frame)
			return -ENOMEM;
		memcpy(frame, head, (size_t)n);
		memcpy(frame + n, msg, len);
		int w = SSL_write(s->ssl, frame, (int)((size_t)n + len));
		free(frame);
		if (w != n + (int)len) {
			ssl_reason(why, whylen);
			disconnect(s);
			return -EIO;
		}
		return 0;
	}
	case PN_AUDIT_FILE: {
		char *line = malloc(len + 1);
		if (!line)
			return -ENOMEM;
		memcpy(line, msg, len);
		line[len] = '\n';
		ssize_t w = write(s->fd, line, len + 1);
		free(line);
		if (w != (ssize_t)(len + 1)) {
			rc = w < 0 ? -errno : -EIO;
			snprintf(why, whylen, "%s", strerror(-rc));
			disconnect(s);
			return rc;
		}
		return 0;
	}
	default:
		return -EINVAL;
	}
}

static int name_filter(const struct dirent *de)
{
	return pn_audit_spool_name(de->d_name);
}

static int read_message(int dir_fd, const char *name, char **ret, size_t *ret_len)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size <= 0 || (uint64_t)st.st_size > MAX_MESSAGE) {
		close(fd);
		return -EBADMSG;
	}
	char *buf = malloc((size_t)st.st_size);
	ssize_t r = buf ? read(fd, buf, (size_t)st.st_size) : -1;
	close(fd);
	if (r != st.st_size) {
		free(buf);
		return -EIO;
	}
	*ret = buf;
	*ret_len = (size_t)st.st_size;
	return 0;
}

static void went_down(sender *s, const char *why)
{
	if (!s->down)
		pn_warning("audit repository %s unreachable: %s; messages stay in the spool", s->target, why);
	s->down = true;
	unsigned jitter = s->backoff_ms / 5 ? (unsigned)rand() % (s->backoff_ms / 5) : 0;
	unsigned wait = s->backoff_ms + jitter;
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
	for (unsigned waited = 0; waited < wait && !got_stop; waited += 50)
		sleep_ms(50);
}

/* Sends what the spool holds, in order, until it is empty, the repository
 * fails, or the deadline (CLOCK_MONOTONIC; NULL: none) passes. Returns the
 * number of messages left untried. */
static size_t send_spool(sender *s, struct timespec *deadline)
{
	struct dirent **list = NULL;
	int n = scandir(s->cfg->audit_spool, &list, name_filter, alphasort);
	if (n < 0)
		return 0;
	size_t left = (size_t)n;
	for (int i = 0; i < n; i++) {
		if (deadline) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec > deadline->tv_sec ||
			    (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec))
				break;
		} else if (got_stop) {
			break;
		}
		const char *name = list[i]->d_name;
		if (strcmp(name, s->pending) == 0) {
			left--;
			continue;
		}
		char *msg = NULL;
		size_t len = 0;
		int rc = read_message(s->audit->dir_fd, name, &msg, &len);
		if (rc == -EBADMSG) {
			pn_warning("audit: spooled message \"%s\" is empty or too large; removed", name);
			unlinkat(s->audit->dir_fd, name, 0);
			left--;
			continue;
		}
		if (rc < 0) {
			left--;
			continue; /* gone meanwhile */
		}
		char why[512] = "";
		rc = deliver(s, name, msg, len, why, sizeof(why));
		free(msg);
		if (rc == -EMSGSIZE) {
			/* Only UDP has a limit, and our messages stay below it
			 * (audit_msg.c); this one would block all behind it. */
			unsigned long n = (unsigned long)atomic_fetch_add(&s->audit->shared->dropped, 1) + 1;
			pn_warning("audit: spooled message \"%s\" (%zu bytes) is too large for a UDP datagram: message "
			           "dropped (%lu dropped since start)",
			           name, len, n);
			forget(s, name, len);
			left--;
			continue;
		}
		if (rc < 0) {
			disconnect(s);
			went_down(s, why);
			break;
		}
		if (s->down) {
			pn_info("audit repository %s reachable again: sending %zu spooled messages", s->target, left);
			s->down = false;
		}
		s->backoff_ms = BACKOFF_MIN_MS;
		if (rc == 0)
			forget(s, name, len);
		left--;
	}
	for (int i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return left;
}

int pn_audit_sender_main(pn_audit *audit)
{
	if (!pn_audit_enabled(audit))
		return EXIT_SUCCESS;
	/* No SA_RESTART: a wait on the repository ends at SIGTERM. SIGINT
	 * stays ignored: Ctrl-C reaches the whole process group, and the
	 * listener stops us last, after its stop message and the workers'. */
	struct sigaction sa = {.sa_handler = on_stop};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* A listener killed outright must not leave us sending beside the
	 * next one's sender. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	srand((unsigned)getpid());
	const pn_config *cfg = audit->cfg;
	sender s = {.audit = audit, .cfg = cfg, .fd = -1, .backoff_ms = BACKOFF_MIN_MS};
	if (cfg->audit_kind == PN_AUDIT_FILE)
		snprintf(s.target, sizeof(s.target), "file:%s", cfg->audit_path);
	else
		snprintf(s.target, sizeof(s.target), "%s://%s:%d", cfg->audit_kind == PN_AUDIT_UDP ? "udp" : "tls",
		         cfg->audit_host, cfg->audit_port);
	while (!got_stop) {
		size_t left = send_spool(&s, NULL);
		if (left == 0 && !got_stop) {
			sleep_ms(IDLE_MS);
			if (confirm_pending(&s) < 0)
				went_down(&s, "port unreachable");
		}
	}
	/* What the workers and the listener spooled on their way out: one
	 * more pass, in which nothing may wait past the deadline. */
	clock_gettime(CLOCK_MONOTONIC, &s.deadline);
	s.deadline.tv_sec += STOP_FLUSH_MS / 1000;
	if (s.fd >= 0 && s.ssl)
		set_timeouts(&s, s.fd);
	s.backoff_ms = 0;
	got_stop = 0;
	size_t left = send_spool(&s, &s.deadline);
	sleep_ms(20);
	confirm_pending(&s);
	if (left > 0)
		pn_info("audit: %zu messages left in the spool \"%s\" for the next start", left, cfg->audit_spool);
	disconnect(&s);
	SSL_CTX_free(s.ctx);
	return EXIT_SUCCESS;
}
