/* The audit spool and the sender process, without a node: names that sort
 * by time, bytes counted across runs, a full spool dropping and counting,
 * and the sender (forked, stopped with SIGTERM) to a file, to a UDP
 * receiver that is down and then back, and to an RFC 5425 TLS receiver (a
 * thread here, with a certificate made by the openssl command at test
 * time), which must be the host it claims to be. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../fuzz/xml_check.h"
#include "audit.h"
#include "audit_internal.h"
#include "log.h"

static char dir[64];

static pn_config *config_for(pn_audit_kind kind, const char *path, int port, int max_mib)
{
	snprintf(dir, sizeof(dir), "/tmp/pn_test_audit_XXXXXX");
	assert_non_null(mkdtemp(dir));
	pn_config *c = calloc(1, sizeof(*c));
	snprintf(c->ae_title, sizeof(c->ae_title), "PACSNODE");
	c->audit_kind = kind;
	snprintf(c->audit_host, sizeof(c->audit_host), "127.0.0.1");
	c->audit_port = port;
	char buf[128];
	snprintf(buf, sizeof(buf), "%s/spool", dir);
	c->audit_spool = strdup(buf);
	if (path) {
		snprintf(buf, sizeof(buf), "%s/%s", dir, path);
		c->audit_path = strdup(buf);
	}
	c->audit_spool_max_mib = max_mib;
	return c;
}

static void config_done(pn_config *c)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	free(c->audit_spool);
	free(c->audit_path);
	free(c->tls_ca);
	free(c->tls_certificate);
	free(c->tls_private_key);
	free(c);
}

static int spool_count(const pn_config *c)
{
	DIR *d = opendir(c->audit_spool);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strstr(de->d_name, ".msg") != NULL;
	closedir(d);
	return n;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void alert(pn_audit *a, int i)
{
	char detail[32];
	snprintf(detail, sizeof(detail), "alert number %d", i);
	pn_audit_assoc who = {.calling_ae = "CT1", .called_ae = "PACSNODE", .peer_addr = "127.0.0.1"};
	pn_audit_security_alert(a, PN_AUDIT_ALERT_UNAUTHORIZED, &who, detail);
}

/* Which alert a message is (-1: none). */
static int alert_number(const char *msg)
{
	const char *p = strstr(msg, "<EventOutcomeDescription>alert number ");
	return p ? atoi(p + strlen("<EventOutcomeDescription>alert number ")) : -1;
}

/* ---- the spool -------------------------------------------------------- */

static void none_is_a_no_op(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_NONE, NULL, 0, 1);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_false(pn_audit_enabled(a));
	alert(a, 1);
	pn_audit_app_activity(a, true);
	pn_audit_query(a, NULL, "1.2", "1.2", "x", 1, false);
	assert_int_equal(pn_audit_dropped(a), 0);
	assert_int_equal(pn_audit_sender_main(a), 0);
	struct stat st;
	assert_int_equal(stat(c->audit_spool, &st), -1); /* nothing made on disk */
	pn_audit_free(a);
	/* and NULL everywhere */
	assert_false(pn_audit_enabled(NULL));
	alert(NULL, 1);
	pn_audit_app_activity(NULL, false);
	pn_audit_instances_transferred(NULL, NULL, true, NULL, NULL, false);
	pn_audit_begin_transfer(NULL, NULL, NULL, NULL);
	pn_audit_query(NULL, NULL, NULL, NULL, NULL, 0, false);
	assert_int_equal(pn_audit_dropped(NULL), 0);
	pn_audit_free(NULL);
	config_done(c);
}

static int by_name(const struct dirent **x, const struct dirent **y)
{
	return strcmp((*x)->d_name, (*y)->d_name);
}

static int is_msg(const struct dirent *de)
{
	return strstr(de->d_name, ".msg") != NULL;
}

static void names_sort_by_time_and_bytes_count(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	struct stat st;
	assert_int_equal(stat(c->audit_spool, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	for (int i = 0; i < 30; i++)
		alert(a, i);
	struct dirent **list = NULL;
	int n = scandir(c->audit_spool, &list, is_msg, by_name);
	assert_int_equal(n, 30);
	uint64_t bytes = 0;
	for (int i = 0; i < n; i++) {
		const char *name = list[i]->d_name;
		/* <20 digits of µs>-<pid>-<seq>.msg */
		size_t digits = strspn(name, "0123456789");
		assert_int_equal(digits, 20);
		char want[32];
		snprintf(want, sizeof(want), "-%d-", (int)getpid());
		assert_int_equal(strncmp(name + 20, want, strlen(want)), 0);
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", c->audit_spool, name);
		FILE *f = fopen(path, "r");
		assert_non_null(f);
		char buf[8192];
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		assert_null(pn_xml_check(buf, len));
		assert_int_equal(alert_number(buf), i); /* name order is event order */
		bytes += len;
		free(list[i]);
	}
	free(list);
	assert_int_equal(atomic_load(&a->shared->bytes), bytes);
	pn_audit_free(a);
	config_done(c);
}

static void earlier_run_counted(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	alert(a, 0);
	alert(a, 1);
	uint64_t bytes = atomic_load(&a->shared->bytes);
	assert_true(bytes > 0);
	pn_audit_free(a);
	/* a producer that died between its write and its rename, and the
	 * listener's own file, which is no message */
	char path[256];
	snprintf(path, sizeof(path), "%s/tmp.123.45", c->audit_spool);
	FILE *f = fopen(path, "w");
	fputs("half a message", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/config.sha256", c->audit_spool);
	f = fopen(path, "w");
	fputs("0123", f);
	fclose(f);
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_int_equal(atomic_load(&a->shared->bytes), bytes);
	snprintf(path, sizeof(path), "%s/tmp.123.45", c->audit_spool);
	assert_int_equal(access(path, F_OK), -1); /* removed */
	snprintf(path, sizeof(path), "%s/config.sha256", c->audit_spool);
	assert_int_equal(access(path, F_OK), 0); /* left alone */
	pn_audit_free(a);
	config_done(c);
}

static void spool_fills_and_drops(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 1);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_true(pn_audit_enabled(a));
	for (int i = 0; i < 5; i++)
		alert(a, i);
	assert_int_equal(spool_count(c), 5);
	assert_int_equal(pn_audit_dropped(a), 0);
	/* some 1.5 KB each: 1 MiB holds some 700 */
	for (int i = 0; i < 2000; i++)
		alert(a, i);
	int kept = spool_count(c);
	assert_true(kept > 100 && kept < 2005);
	assert_int_equal(pn_audit_dropped(a), 2005 - (unsigned long)kept);
	assert_true(atomic_load(&a->shared->bytes) <= 1u << 20);
	pn_audit_free(a);
	/* a new start counts what the earlier one left: still full */
	assert_int_equal(pn_audit_create(c, &a), 0);
	alert(a, 0);
	assert_int_equal(spool_count(c), kept);
	assert_int_equal(pn_audit_dropped(a), 1);
	pn_audit_free(a);
	config_done(c);
}

/* Producers in several processes share one count and one limit. */
static void children_share_the_counters(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 1);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	pid_t kids[4];
	for (int k = 0; k < 4; k++) {
		kids[k] = fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			for (int i = 0; i < 400; i++)
				alert(a, i);
			_exit(0);
		}
	}
	for (int k = 0; k < 4; k++) {
		int st;
		assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
	}
	int kept = spool_count(c);
	assert_true(kept > 100 && kept < 1600);
	assert_int_equal(pn_audit_dropped(a), 1600 - (unsigned long)kept);
	pn_audit_free(a);
	config_done(c);
}

/* A spool that cannot be written (here: removed under the node, which
 * also fails for root) drops and counts like a full one. */
static void write_error_drops(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_int_equal(rmdir(c->audit_spool), 0);
	alert(a, 0);
	alert(a, 1);
	assert_int_equal(pn_audit_dropped(a), 2);
	assert_int_equal(atomic_load(&a->shared->bytes), 0);
	pn_audit_free(a);
	config_done(c);
}

/* ---- the sender ------------------------------------------------------- */

static pid_t sender_pid; /* one running, for the teardown of a failed test */

static pid_t start_sender(pn_audit *a)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(pn_audit_sender_main(a));
	sender_pid = pid;
	return pid;
}

/* The same, its log (info and up) into `log_path`. */
static pid_t start_sender_logged(pn_audit *a, const char *log_path)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0 || dup2(fd, 2) < 0)
			_exit(99);
		pn_log_set_level(PN_LOG_INFO);
		_exit(pn_audit_sender_main(a));
	}
	sender_pid = pid;
	return pid;
}

/* Lines of the file holding `what`. */
static int count_lines(const char *path, const char *what)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[1024];
	int n = 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

static int reap_sender(void **state)
{
	(void)state;
	if (sender_pid > 0) {
		kill(sender_pid, SIGKILL);
		waitpid(sender_pid, NULL, 0);
		sender_pid = 0;
	}
	return 0;
}

/* SIGTERM; the sender ends by itself (0), within its 2 s flush. */
static void stop_sender(pid_t pid)
{
	double t0 = now_s();
	kill(pid, SIGTERM);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	sender_pid = 0;
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (now_s() - t0 > 3.0)
		fail_msg("the sender took %.1f s to stop", now_s() - t0);
}

static void wait_spool_count(const pn_config *c, int want, int ms)
{
	for (int i = 0; i < ms / 20 && spool_count(c) != want; i++)
		sleep_ms(20);
	assert_int_equal(spool_count(c), want);
}

static void sender_to_a_file(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_FILE, "audit.log", 0, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	for (int i = 0; i < 20; i++)
		alert(a, i);
	pid_t pid = start_sender(a);
	wait_spool_count(c, 0, 5000);
	assert_int_equal(atomic_load(&a->shared->bytes), 0);
	alert(a, 20); /* spooled while it runs, sent at stop at the latest */
	stop_sender(pid);
	assert_int_equal(spool_count(c), 0);
	FILE *f = fopen(c->audit_path, "r");
	assert_non_null(f);
	char line[8192];
	int n = 0;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		assert_true(len > 1 && line[len - 1] == '\n');
		line[--len] = '\0';
		assert_null(pn_xml_check(line, len));
		if (alert_number(line) != n)
			fail_msg("line %d out of order: %s", n, line);
		n++;
	}
	fclose(f);
	assert_int_equal(n, 21);
	pn_audit_free(a);
	config_done(c);
}

static int udp_bind(int port)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = {.tv_sec = 0, .tv_usec = 300000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static int free_udp_port(void)
{
	int probe = udp_bind(0);
	struct sockaddr_in sa;
	socklen_t l = sizeof(sa);
	getsockname(probe, (struct sockaddr *)&sa, &l);
	close(probe);
	return ntohs(sa.sin_port);
}

/* Receives datagrams until `want` arrived or 100 timeouts, checking that
 * alert k is the k-th; returns how many arrived. */
static int receive_alerts(int rx, int first, int want)
{
	static char buf[70000];
	int got = 0;
	for (int tries = 0; got < want && tries < 100; tries++) {
		ssize_t n = recv(rx, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		assert_null(pn_xml_check(buf, (size_t)n));
		if (alert_number(buf) != first + got)
			fail_msg("datagram %d out of order or repeated: alert %d", first + got, alert_number(buf));
		got++;
	}
	return got;
}

static void udp_receiver_down_then_back(void **state)
{
	(void)state;
	int port = free_udp_port(); /* closed again: the repository is down */
	pn_config *c = config_for(PN_AUDIT_UDP, NULL, port, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	char log[128];
	snprintf(log, sizeof(log), "%s/sender.log", dir);
	pid_t pid = start_sender_logged(a, log);
	for (int i = 0; i < 10; i++)
		alert(a, i);
	sleep(1);
	assert_int_equal(spool_count(c), 10); /* nothing lost to the closed port */
	int rx = udp_bind(port);
	for (int i = 10; i < 15; i++)
		alert(a, i);
	assert_int_equal(receive_alerts(rx, 0, 15), 15);
	char buf[64];
	assert_true(recv(rx, buf, sizeof(buf), 0) < 0); /* exactly once */
	wait_spool_count(c, 0, 3000);
	/* down again, and back again */
	close(rx);
	for (int i = 15; i < 20; i++)
		alert(a, i);
	sleep(1);
	assert_int_equal(spool_count(c), 5);
	rx = udp_bind(port);
	assert_int_equal(receive_alerts(rx, 15, 5), 5);
	assert_true(recv(rx, buf, sizeof(buf), 0) < 0);
	wait_spool_count(c, 0, 3000);
	stop_sender(pid);
	/* each outage said once as it starts and once as it ends, however
	 * often the sender tried meanwhile */
	char want[96];
	snprintf(want, sizeof(want), "audit repository udp://127.0.0.1:%d unreachable: ", port);
	assert_int_equal(count_lines(log, want), 2);
	assert_int_equal(count_lines(log, "messages stay in the spool"), 2);
	snprintf(want, sizeof(want), "audit repository udp://127.0.0.1:%d reachable again: sending ", port);
	assert_int_equal(count_lines(log, want), 2);
	close(rx);
	pn_audit_free(a);
	config_done(c);
}

/* A message too large for a datagram (left by some other build) must not
 * block the ones behind it: it is dropped, counted and removed. */
static void udp_oversized_message_dropped(void **state)
{
	(void)state;
	int port = free_udp_port();
	pn_config *c = config_for(PN_AUDIT_UDP, NULL, port, 64);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	pn_audit_free(a);
	char path[256];
	snprintf(path, sizeof(path), "%s/00000000000000000001-1-0.msg", c->audit_spool);
	FILE *f = fopen(path, "w");
	for (int i = 0; i < 70000; i++)
		fputc('x', f);
	fclose(f);
	assert_int_equal(pn_audit_create(c, &a), 0);
	assert_int_equal(atomic_load(&a->shared->bytes), 70000);
	for (int i = 0; i < 3; i++)
		alert(a, i);
	int rx = udp_bind(port);
	pid_t pid = start_sender(a);
	assert_int_equal(receive_alerts(rx, 0, 3), 3);
	wait_spool_count(c, 0, 3000);
	assert_int_equal(pn_audit_dropped(a), 1);
	assert_int_equal(atomic_load(&a->shared->bytes), 0);
	stop_sender(pid);
	close(rx);
	pn_audit_free(a);
	config_done(c);
}

/* ---- TLS ---------------------------------------------------------------- */

/* A self-signed certificate for `san` (its own CA), into dir/<name>.pem
 * and dir/<name>.key. */
static void make_cert(const char *name, const char *san)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
	         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
	         "-keyout %s/%s.key -out %s/%s.pem -subj /CN=audit-test -addext subjectAltName=%s >/dev/null 2>&1",
	         dir, name, dir, name, san);
	if (system(cmd) != 0)
		fail_msg("could not make a certificate: %s", cmd);
}

static char *dir_file(const char *name)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return strdup(buf);
}

typedef struct {
	int listen_fd;
	SSL_CTX *ctx;
	pthread_t thread;
	atomic_bool stop;
	pthread_mutex_t mu;
	char *msgs[64];
	int n;
	int handshakes, failed_handshakes, client_certs;
	char error[256];
} tls_server;

/* RFC 5425 6.3: MSG-LEN SP SYSLOG-MSG, MSG-LEN without leading zeros. */
static int read_frames(tls_server *s, SSL *ssl)
{
	char buf[80000];
	size_t have = 0;
	while (!atomic_load(&s->stop)) {
		int r = SSL_read(ssl, buf + have, (int)(sizeof(buf) - have));
		if (r <= 0) {
			int e = SSL_get_error(ssl, r);
			if (e == SSL_ERROR_WANT_READ)
				continue; /* the receive timeout: look at stop */
			return 0;         /* closed */
		}
		have += (size_t)r;
		for (;;) {
			size_t digits = 0;
			while (digits < have && buf[digits] >= '0' && buf[digits] <= '9')
				digits++;
			if (digits == have)
				break;
			if (digits == 0 || buf[0] == '0' || buf[digits] != ' ') {
				snprintf(s->error, sizeof(s->error), "bad frame start: %.20s", buf);
				return -1;
			}
			size_t len = strtoul(buf, NULL, 10);
			if (have < digits + 1 + len)
				break;
			char *m = strndup(buf + digits + 1, len);
			if (strlen(m) != len || pn_xml_check(m, len) ||
			    strcmp(m + len - strlen("</AuditMessage>"), "</AuditMessage>") != 0)
				snprintf(s->error, sizeof(s->error), "frame of %zu bytes is not one message", len);
			pthread_mutex_lock(&s->mu);
			if (s->n < 64)
				s->msgs[s->n++] = m;
			else
				free(m);
			pthread_mutex_unlock(&s->mu);
			memmove(buf, buf + digits + 1 + len, have - digits - 1 - len);
			have -= digits + 1 + len;
		}
	}
	return 0;
}

static void *tls_serve(void *arg)
{
	tls_server *s = arg;
	while (!atomic_load(&s->stop)) {
		struct pollfd p = {.fd = s->listen_fd, .events = POLLIN};
		if (poll(&p, 1, 100) != 1)
			continue;
		int fd = accept(s->listen_fd, NULL, NULL);
		if (fd < 0)
			continue;
		struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		SSL *ssl = SSL_new(s->ctx);
		SSL_set_fd(ssl, fd);
		int r;
		while ((r = SSL_accept(ssl)) <= 0 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ &&
		       !atomic_load(&s->stop))
			;
		pthread_mutex_lock(&s->mu);
		if (r == 1) {
			s->handshakes++;
			X509 *peer = SSL_get1_peer_certificate(ssl);
			s->client_certs += peer != NULL;
			X509_free(peer);
		} else {
			s->failed_handshakes++;
		}
		pthread_mutex_unlock(&s->mu);
		ERR_clear_error();
		if (r == 1)
			read_frames(s, ssl);
		SSL_free(ssl);
		close(fd);
	}
	return NULL;
}

/* Listens (now, before the sender is forked: no thread may run then) on a
 * free loopback port with `name`'s certificate; if `client_ca`, a client
 * certificate signed by it is required. */
static int tls_listen(tls_server *s, const char *name, const char *client_ca)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	s->ctx = SSL_CTX_new(TLS_server_method());
	char path[256];
	snprintf(path, sizeof(path), "%s/%s.pem", dir, name);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(s->ctx, path), 1);
	snprintf(path, sizeof(path), "%s/%s.key", dir, name);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(s->ctx, path, SSL_FILETYPE_PEM), 1);
	if (client_ca) {
		snprintf(path, sizeof(path), "%s/%s.pem", dir, client_ca);
		assert_int_equal(SSL_CTX_load_verify_locations(s->ctx, path, NULL), 1);
		SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->listen_fd, 8), 0);
	socklen_t l = sizeof(sa);
	getsockname(s->listen_fd, (struct sockaddr *)&sa, &l);
	return ntohs(sa.sin_port);
}

static void tls_start(tls_server *s)
{
	assert_int_equal(pthread_create(&s->thread, NULL, tls_serve, s), 0);
}

static void tls_stop(tls_server *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	SSL_CTX_free(s->ctx);
	pthread_mutex_destroy(&s->mu);
}

static void tls_free_msgs(tls_server *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->msgs[i]);
	s->n = 0;
}

static int tls_count(tls_server *s)
{
	pthread_mutex_lock(&s->mu);
	int n = s->n;
	pthread_mutex_unlock(&s->mu);
	return n;
}

static void tls_wait(tls_server *s, int want, int ms)
{
	for (int i = 0; i < ms / 10 && tls_count(s) < want; i++)
		sleep_ms(10);
	assert_int_equal(tls_count(s), want);
}

static void sender_over_tls(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_TLS, NULL, 0, 64);
	make_cert("repo", "IP:127.0.0.1");
	make_cert("node", "DNS:node.example");
	tls_server srv;
	c->audit_port = tls_listen(&srv, "repo", "node");
	c->tls_ca = dir_file("repo.pem");
	c->tls_certificate = dir_file("node.pem");
	c->tls_private_key = dir_file("node.key");
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	for (int i = 0; i < 5; i++)
		alert(a, i);
	pid_t pid = start_sender(a);
	tls_start(&srv);
	tls_wait(&srv, 5, 3000);
	/* more while connected: not held up by what the server sent after
	 * the handshake (TLS 1.3 session tickets) */
	double t0 = now_s();
	for (int i = 5; i < 10; i++) {
		alert(a, i);
		sleep_ms(30);
	}
	tls_wait(&srv, 10, 1500);
	if (now_s() - t0 > 1.5)
		fail_msg("5 messages on an open connection took %.1f s", now_s() - t0);
	wait_spool_count(c, 0, 1000);
	assert_int_equal(atomic_load(&a->shared->bytes), 0);
	stop_sender(pid);
	tls_stop(&srv);
	if (srv.error[0])
		fail_msg("%s", srv.error);
	for (int i = 0; i < 10; i++)
		assert_int_equal(alert_number(srv.msgs[i]), i);
	assert_int_equal(srv.handshakes, 1); /* one connection for all */
	assert_int_equal(srv.client_certs, 1);
	tls_free_msgs(&srv);
	pn_audit_free(a);
	config_done(c);
}

/* A repository whose certificate names another host gets nothing: the
 * messages wait in the spool. */
static void tls_wrong_name_refused(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_TLS, NULL, 0, 64);
	make_cert("repo", "IP:127.0.0.2,DNS:elsewhere.example");
	tls_server srv;
	c->audit_port = tls_listen(&srv, "repo", NULL);
	c->tls_ca = dir_file("repo.pem");
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	for (int i = 0; i < 3; i++)
		alert(a, i);
	pid_t pid = start_sender(a);
	tls_start(&srv);
	sleep_ms(1500);
	stop_sender(pid);
	tls_stop(&srv);
	assert_int_equal(srv.n, 0);
	assert_true(srv.failed_handshakes >= 2); /* and it kept trying */
	assert_int_equal(srv.handshakes, 0);
	assert_int_equal(spool_count(c), 3);
	pn_audit_free(a);
	config_done(c);
}

/* The repository down at stop: the sender still stops within its bound. */
static void stop_while_down_is_bounded(void **state)
{
	(void)state;
	pn_config *c = config_for(PN_AUDIT_TLS, NULL, 0, 64);
	make_cert("repo", "IP:127.0.0.1");
	c->tls_ca = dir_file("repo.pem");
	/* a TCP port that accepts and never answers the handshake */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	socklen_t l = sizeof(sa);
	getsockname(fd, (struct sockaddr *)&sa, &l);
	c->audit_port = ntohs(sa.sin_port);
	pn_audit *a = NULL;
	assert_int_equal(pn_audit_create(c, &a), 0);
	alert(a, 0);
	pid_t pid = start_sender(a);
	sleep_ms(300);
	stop_sender(pid); /* fails past 3 s */
	assert_int_equal(spool_count(c), 1);
	close(fd);
	pn_audit_free(a);
	config_done(c);
}

int main(void)
{
	pn_log_set_level(PN_LOG_ERROR);
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(none_is_a_no_op, reap_sender),
	    cmocka_unit_test_teardown(names_sort_by_time_and_bytes_count, reap_sender),
	    cmocka_unit_test_teardown(earlier_run_counted, reap_sender),
	    cmocka_unit_test_teardown(spool_fills_and_drops, reap_sender),
	    cmocka_unit_test_teardown(children_share_the_counters, reap_sender),
	    cmocka_unit_test_teardown(write_error_drops, reap_sender),
	    cmocka_unit_test_teardown(sender_to_a_file, reap_sender),
	    cmocka_unit_test_teardown(udp_receiver_down_then_back, reap_sender),
	    cmocka_unit_test_teardown(udp_oversized_message_dropped, reap_sender),
	    cmocka_unit_test_teardown(sender_over_tls, reap_sender),
	    cmocka_unit_test_teardown(tls_wrong_name_refused, reap_sender),
	    cmocka_unit_test_teardown(stop_while_down_is_bounded, reap_sender),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
