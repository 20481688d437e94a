/* The embedded HTTP server: one libmicrohttpd daemon per worker process,
 * without a listening socket of its own. The node's listener accepts the
 * connection and hands it over like a DICOM one; the worker adds it to its
 * daemon and drives it on this thread until it closes, so one slow client
 * holds only its own worker (docs/web.md). Here: the daemon, the login, the
 * routing and the answers every handler shares. */
#include "web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "audit.h"
#include "dcm/pn_dcm.h"
#include "log.h"
#include "metrics.h"
#include "retention.h"
#include "storage.h"
#include "uid.h"
#include "users.h"
#include "web_internal.h"

/* Request line and headers: a browser's fit in a few KB; beyond this MHD
 * answers 431 or 414 itself. */
#define HEADER_MEMORY (64 * 1024)
#define MAX_SEGMENTS 12

const char pn_web_busy_response[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                    "Content-Type: text/plain; charset=utf-8\r\n"
                                    "Content-Length: 49\r\n"
                                    "Retry-After: 1\r\n"
                                    "Connection: close\r\n"
                                    "\r\n"
                                    "every HTTP connection of the node is busy: retry\n";

struct pn_web {
	pn_store_ctx *ctx;
	struct MHD_Daemon *d;
	pn_web_users *users; /* NULL: the web is open (loopback only) */
	bool https;
	bool closed; /* the connection being served has ended */
	char *cert_pem, *key_pem;
};

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

bool pn_web_is_http_connection(const pn_config *cfg, int fd)
{
	if (cfg->http_port == 0)
		return false;
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0 || local.sin_family != AF_INET)
		return false;
	return ntohs(local.sin_port) == cfg->http_port;
}

static int read_pem(const char *path, char **ret, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		int rc = -errno;
		snprintf(err, errlen, "could not read \"%s\": %s", path, strerror(-rc));
		return rc;
	}
	size_t cap = 8192, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
		if (cap - len - 1 == 0) {
			if (cap >= (1u << 20))
				break;
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	fclose(f);
	if (!buf)
		return -ENOMEM;
	buf[len] = '\0';
	if (strstr(buf, "ENCRYPTED")) {
		snprintf(err, errlen, "\"%s\" is an encrypted key: the node cannot type its password", path);
		free(buf);
		return -EINVAL;
	}
	*ret = buf;
	return 0;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char line[512];
	vsnprintf(line, sizeof(line), fmt, ap);
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	pn_warning("http: %s", line);
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
	(void)conn;
	(void)socket_context;
	pn_web *w = cls;
	if (code == MHD_CONNECTION_NOTIFY_CLOSED)
		w->closed = true;
}

enum MHD_Result pn_web_queue(pn_web_req *r, unsigned status, struct MHD_Response *resp)
{
	if (!resp)
		return MHD_NO;
	/* Nothing the node serves is to be sniffed into another type, framed
	 * by another site or kept by a shared cache. */
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	MHD_add_response_header(resp, "Server", "pacsnode");
	enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
	MHD_destroy_response(resp);
	r->answered = true;
	r->status = status;
	return rc;
}

enum MHD_Result pn_web_reply(pn_web_req *r, unsigned status, const char *type, const void *body, size_t len)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	return pn_web_queue(r, status, resp);
}

void pn_web_note_access(pn_db *db, const pn_hold *hold)
{
	if (pn_retention_touch(db, hold) < 0)
		pn_debug("web: the studies' access time was not noted: %s", pn_db_errmsg(db));
}

enum MHD_Result pn_web_error(pn_web_req *r, unsigned status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	pn_log(status >= 500 ? PN_LOG_ERROR : PN_LOG_WARNING, "http %s%s%s: %s %.200s: %u: %s", r->peer,
	       r->user[0] ? " " : "", r->user, r->method, r->path, status, msg);
	size_t n = strlen(msg);
	msg[n++] = '\n';
	return pn_web_reply(r, status, "text/plain; charset=utf-8", msg, n);
}

static bool expects_continue(const pn_web_req *r)
{
	const char *e = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
	return e && strcasecmp(e, "100-continue") == 0;
}

enum MHD_Result pn_web_refuse_body(pn_web_req *r, unsigned status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->refused_why, sizeof(r->refused_why), fmt, ap);
	va_end(ap);
	if (expects_continue(r))
		return pn_web_error(r, status, "%s", r->refused_why);
	r->refused = status;
	return MHD_YES;
}

const char *pn_web_arg(const pn_web_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

void pn_web_base_url(const pn_web_req *r, char *out, size_t outlen)
{
	out[0] = '\0';
	const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	if (!host || !host[0] || strlen(host) > 255)
		return;
	/* Only what a host name, an IPv4 or a bracketed IPv6 address and a
	 * port are made of: the header is the client's word. */
	for (const char *p = host; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '-' || *p == ':' || *p == '[' || *p == ']'))
			return;
	snprintf(out, outlen, "%s://%s", r->https ? "https" : "http", host);
}

/* HTTP Basic against the users file; sets r->user and r->role. */
static bool logged_in(pn_web *w, pn_web_req *r)
{
	if (!w->users) {
		r->role = PN_ROLE_WRITE;
		return true;
	}
	char *pass = NULL;
	char *name = MHD_basic_auth_get_username_password(r->conn, &pass);
	pn_web_role role = PN_ROLE_NONE;
	if (name && pass)
		role = pn_web_users_check(w->users, name, pass);
	if (name)
		snprintf(r->user, sizeof(r->user), "%.63s", name);
	if (pass) {
		explicit_bzero(pass, strlen(pass));
		MHD_free(pass);
	}
	if (name)
		MHD_free(name);
	r->role = role;
	return role != PN_ROLE_NONE;
}

static enum MHD_Result ask_login(pn_web_req *r)
{
	if (r->refused_login) /* deferred until the body was read */
		r->refused_login = false;
	else if (strcmp(r->method, "POST") == 0 && !expects_continue(r)) {
		r->refused = MHD_HTTP_UNAUTHORIZED;
		r->refused_login = true;
		return MHD_YES;
	}
	static const char msg[] = "this node needs a login\n";
	if (r->user[0]) {
		pn_warning("http %s: login failed for user \"%s\" (%s %.200s)", r->peer, r->user, r->method, r->path);
		/* an audit repository hears of it as of a refused association */
		char detail[160];
		snprintf(detail, sizeof(detail), "web login failed for user \"%.63s\"", r->user);
		pn_audit_assoc who = {
		    .calling_ae = r->user, .called_ae = r->ctx->cfg->ae_title, .peer_addr = r->peer, .tls = r->https};
		pn_audit_security_alert(r->ctx->audit, PN_AUDIT_ALERT_UNAUTHORIZED, &who, detail);
	}
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"pacsnode\", charset=\"UTF-8\"");
	r->user[0] = '\0';
	return pn_web_queue(r, MHD_HTTP_UNAUTHORIZED, resp);
}

/* The path cut at '/' into seg[] (empty segments dropped); -1 when there
 * are too many. */
static int split(char *path, char *seg[], int max)
{
	int n = 0;
	for (char *p = strtok(path, "/"); p; p = strtok(NULL, "/")) {
		if (n == max)
			return -1;
		seg[n++] = p;
	}
	return n;
}

static enum MHD_Result dicomweb(pn_web_req *r, char *seg[], int n)
{
	/* seg[0] is "dicomweb"; UIDs at 2, 4 and 6 (studies/S/series/E/instances/I). */
	for (int i = 2; i < n && i <= 6; i += 2)
		if (!pn_uid_valid(seg[i]))
			return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "\"%.64s\" is not a UID", seg[i]);
	if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
		return pn_web_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "%s is not served here", r->method);
	/* the last segment tells a search (…/studies, …/series, …/instances)
	 * from a retrieval */
	const char *tail = seg[n - 1];
	r->op = strcmp(tail, "studies") == 0 || strcmp(tail, "series") == 0 || strcmp(tail, "instances") == 0
	            ? PN_OP_QIDO
	            : PN_OP_WADO;
	if (n == 2 && strcmp(seg[1], "studies") == 0)
		return pn_web_qido(r, PN_LEVEL_STUDY, NULL, NULL);
	if (n == 2 && strcmp(seg[1], "series") == 0)
		return pn_web_qido(r, PN_LEVEL_SERIES, NULL, NULL);
	if (n == 2 && strcmp(seg[1], "instances") == 0)
		return pn_web_qido(r, PN_LEVEL_INSTANCE, NULL, NULL);
	if (n >= 3 && strcmp(seg[1], "studies") == 0) {
		const char *last = seg[n - 1];
		bool se = n >= 5 && strcmp(seg[3], "series") == 0;
		bool in = n >= 7 && se && strcmp(seg[5], "instances") == 0;
		if (n == 3)
			return pn_web_wado(r, seg[2], NULL, NULL);
		if (n == 4 && strcmp(last, "metadata") == 0)
			return pn_web_metadata(r, seg[2], NULL, NULL);
		if (n == 5 && se)
			return pn_web_wado(r, seg[2], seg[4], NULL);
		if (n == 6 && se && strcmp(last, "metadata") == 0)
			return pn_web_metadata(r, seg[2], seg[4], NULL);
		if (n == 7 && in)
			return pn_web_wado(r, seg[2], seg[4], seg[6]);
		if (n == 8 && in && strcmp(last, "metadata") == 0)
			return pn_web_metadata(r, seg[2], seg[4], seg[6]);
		if (n == 8 && in && (strcmp(last, "rendered") == 0 || strcmp(last, "thumbnail") == 0))
			return pn_web_rendered(r, seg[2], seg[4], seg[6], 0, last[0] == 't');
		if (n == 6 && se && strcmp(last, "thumbnail") == 0)
			return pn_web_rendered(r, seg[2], seg[4], NULL, 0, true);
		if (n == 9 && in && strcmp(seg[7], "frames") == 0)
			return pn_web_frames(r, seg[2], seg[4], seg[6], seg[8]);
		if (n == 10 && in && strcmp(seg[7], "frames") == 0 &&
		    (strcmp(last, "rendered") == 0 || strcmp(last, "thumbnail") == 0)) {
			char *end;
			unsigned long f = strtoul(seg[8], &end, 10);
			if (*end || f == 0 || f > 1000000)
				return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "a frame number is 1 or more");
			return pn_web_rendered(r, seg[2], seg[4], seg[6], f - 1, last[0] == 't');
		}
		if (n == 4 && strcmp(seg[3], "series") == 0)
			return pn_web_qido(r, PN_LEVEL_SERIES, seg[2], NULL);
		if (n == 4 && strcmp(seg[3], "instances") == 0)
			return pn_web_qido(r, PN_LEVEL_INSTANCE, seg[2], NULL);
		if (n == 6 && strcmp(seg[3], "series") == 0 && strcmp(seg[5], "instances") == 0)
			return pn_web_qido(r, PN_LEVEL_INSTANCE, seg[2], seg[4]);
	}
	return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such resource");
}

static enum MHD_Result metrics(pn_web_req *r)
{
	size_t len = 0;
	char *text = pn_metrics_text(r->ctx->cfg->storage_root, r->ctx->cfg->workers, &len);
	if (!text)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}

/* The study browser: /, /patients, /studies/{study}, the files to save,
 * /static/. */
static enum MHD_Result pages(pn_web_req *r, char *seg[], int n)
{
	if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
		return pn_web_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, "%s is not served here", r->method);
	r->op = PN_OP_PAGE;
	if (n == 1 && strcmp(seg[0], "metrics") == 0) {
		r->op = -1;
		return metrics(r);
	}
	if (n == 0)
		return pn_web_page_index(r);
	if (n == 1 && strcmp(seg[0], "patients") == 0)
		return pn_web_page_patient(r);
	if (n == 2 && strcmp(seg[0], "static") == 0)
		return pn_web_static(r, seg[1]);
	if (n >= 2 && strcmp(seg[0], "studies") == 0) {
		for (int i = 1; i < n && i <= 5; i += 2)
			if (!pn_uid_valid(seg[i]))
				return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "\"%.64s\" is not a UID", seg[i]);
		if (n == 2)
			return pn_web_page_study(r, seg[1]);
		if (n == 3 && strcmp(seg[2], "download") == 0)
			return pn_web_download(r, seg[1], NULL);
		if (n == 5 && strcmp(seg[2], "series") == 0 && strcmp(seg[4], "download") == 0)
			return pn_web_download(r, seg[1], seg[3]);
		if (n == 7 && strcmp(seg[2], "series") == 0 && strcmp(seg[4], "instances") == 0 &&
		    strcmp(seg[6], "file") == 0)
			return pn_web_instance_file(r, seg[1], seg[3], seg[5]);
	}
	return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such page");
}

static enum MHD_Result route(pn_web *w, pn_web_req *r)
{
	char path[1024];
	if (strlen(r->path) >= sizeof(path))
		return pn_web_error(r, MHD_HTTP_URI_TOO_LONG, "the path is too long");
	snprintf(path, sizeof(path), "%s", r->path);
	char *seg[MAX_SEGMENTS];
	int n = split(path, seg, MAX_SEGMENTS);
	if (n < 0)
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such resource");
	if (n == 1 && strcmp(seg[0], "health") == 0)
		return pn_web_health(r);
	if (!logged_in(w, r))
		return ask_login(r);
	if (n >= 2 && strcmp(seg[0], "dicomweb") == 0)
		return dicomweb(r, seg, n);
	return pages(r, seg, n);
}

/* POST: STOW-RS only, at /dicomweb/studies[/{study}], for the write role.
 * Refused before the body is read when it cannot be taken. */
static enum MHD_Result begin_post(pn_web *w, pn_web_req *r)
{
	char path[512];
	if (strlen(r->path) >= sizeof(path))
		return pn_web_error(r, MHD_HTTP_URI_TOO_LONG, "the path is too long");
	snprintf(path, sizeof(path), "%s", r->path);
	char *seg[4];
	int n = split(path, seg, 4);
	bool stow = (n == 2 || n == 3) && strcmp(seg[0], "dicomweb") == 0 && strcmp(seg[1], "studies") == 0;
	if (!stow)
		return pn_web_refuse_body(r, MHD_HTTP_METHOD_NOT_ALLOWED,
		                          "POST is only for STOW-RS (/dicomweb/studies)");
	if (n == 3 && !pn_uid_valid(seg[2]))
		return pn_web_refuse_body(r, MHD_HTTP_BAD_REQUEST, "\"%.64s\" is not a UID", seg[2]);
	if (!logged_in(w, r))
		return ask_login(r);
	if (r->role != PN_ROLE_WRITE)
		return pn_web_refuse_body(r, MHD_HTTP_FORBIDDEN, "user \"%s\" may not store (role read)", r->user);
	r->op = PN_OP_STOW;
	r->stow = pn_web_stow_begin(r, n == 3 ? seg[2] : NULL);
	return MHD_YES; /* answered already when it is NULL */
}

/* Whether the request announces a body (Content-Length above 0, or
 * chunked). */
static bool has_body(struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
	return (cl && strspn(cl, "0") != strlen(cl)) || te;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	(void)version;
	pn_web *w = cls;
	pn_web_req *r = *con_cls;
	if (!r) {
		/* The headers are in. Answering now would end the connection
		 * (MHD closes one whose request it has not read whole), so a
		 * request without a body is answered at the next call, once it
		 * is complete; one with a body we do not take is refused now. */
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		*con_cls = r;
		r->op = -1;
		clock_gettime(CLOCK_MONOTONIC, &r->t0);
		r->conn = conn;
		r->ctx = w->ctx;
		r->method = method;
		r->path = url;
		r->https = w->https;
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, r->peer,
			          sizeof(r->peer));
		else
			snprintf(r->peer, sizeof(r->peer), "?");
		if (strcmp(method, "POST") == 0)
			return begin_post(w, r);
		if (has_body(conn))
			return pn_web_refuse_body(r, MHD_HTTP_BAD_REQUEST, "%s %.100s takes no request body", method,
			                          url);
		return MHD_YES;
	}
	if (*upload_data_size) {
		/* A body we take (STOW-RS) goes to its parser; one refused at
		 * its headers is dropped, up to a bound; after an early answer
		 * MHD discards the rest. */
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (r->answered)
			return MHD_YES;
		if (r->refused) {
			r->discarded += n;
			return r->discarded > (64ull << 20) ? MHD_NO : MHD_YES;
		}
		if (r->stow && pn_web_stow_feed(r->stow, upload_data, n) == -2)
			return MHD_NO;
		return MHD_YES;
	}
	if (r->answered)
		return MHD_YES;
	if (r->refused == MHD_HTTP_UNAUTHORIZED && r->refused_login)
		return ask_login(r);
	if (r->refused)
		return pn_web_error(r, r->refused, "%s", r->refused_why);
	if (r->stow)
		return pn_web_stow_finish(r->stow);
	if (url[0] != '/')
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "the request target is not a path");
	return route(w, r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	pn_web_req *r = *con_cls;
	if (!r)
		return;
	*con_cls = NULL;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && toe != MHD_REQUEST_TERMINATED_CLIENT_ABORT)
		pn_warning("http %s: %s %.200s ended before its answer was complete (reason %d)", r->peer, r->method,
		           r->path, (int)toe);
	double ms = ms_since(&r->t0);
	pn_info("http %s%s%s: %s %.200s %u %.1f ms", r->peer, r->user[0] ? " " : "", r->user, r->method, r->path,
	        r->status, ms);
	pn_metrics_http_status(r->status);
	if (r->op >= 0 && r->status < 400)
		pn_metrics_op_done((pn_metrics_op)r->op, ms);
	pn_web_stow_free(r->stow);
	free(r);
}

/* TLS 1.3 and 1.2, and for 1.2 only ECDHE with AEAD ciphers: what the DICOM
 * listener allows (docs/tls.md), in GnuTLS's words. */
#define HTTPS_PRIORITIES                                                                                               \
	"NONE:+VERS-TLS1.3:+VERS-TLS1.2:+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:+AEAD:+ECDHE-ECDSA:+ECDHE-RSA:"   \
	"+SIGN-ALL:+GROUP-EC-ALL:+COMP-NULL:+CTYPE-X509:%SAFE_RENEGOTIATION"

int pn_web_create(pn_store_ctx *ctx, pn_web **ret, char *err, size_t errlen)
{
	*ret = NULL;
	const pn_config *cfg = ctx->cfg;
	pn_web *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->ctx = ctx;
	int rc = 0;
	if (cfg->http_users)
		rc = pn_web_users_load(cfg->http_users, &w->users, err, errlen);
	const char *cert = pn_config_http_certificate(cfg), *key = pn_config_http_private_key(cfg);
	if (rc == 0 && cert && key) {
		rc = read_pem(cert, &w->cert_pem, err, errlen);
		if (rc == 0)
			rc = read_pem(key, &w->key_pem, err, errlen);
		w->https = rc == 0;
	}
	if (rc < 0) {
		pn_web_free(w);
		return rc;
	}
	unsigned flags = MHD_USE_NO_LISTEN_SOCKET | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	if (w->https)
		flags |= MHD_USE_TLS;
	struct MHD_OptionItem tls_opts[] = {
	    {MHD_OPTION_HTTPS_MEM_CERT, 0, w->cert_pem},
	    {MHD_OPTION_HTTPS_MEM_KEY, 0, w->key_pem},
	    {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)HTTPS_PRIORITIES},
	    {MHD_OPTION_END, 0, NULL},
	};
	w->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, w, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	                        /* one connection at a time; a daemon at its limit closes after each answer */
	                        MHD_OPTION_CONNECTION_LIMIT, 2u, MHD_OPTION_CONNECTION_TIMEOUT,
	                        (unsigned)cfg->http_idle_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	                        (size_t)HEADER_MEMORY, MHD_OPTION_NOTIFY_CONNECTION, notify_connection, w,
	                        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_ARRAY,
	                        w->https ? tls_opts : &tls_opts[3], MHD_OPTION_END);
	if (!w->d) {
		snprintf(err, errlen, "could not start the HTTP server%s", w->https ? " (HTTPS: check the key)" : "");
		pn_web_free(w);
		return -EINVAL;
	}
	*ret = w;
	return 0;
}

void pn_web_free(pn_web *w)
{
	if (!w)
		return;
	if (w->d)
		MHD_stop_daemon(w->d);
	pn_web_users_free(w->users);
	free(w->cert_pem);
	if (w->key_pem) {
		explicit_bzero(w->key_pem, strlen(w->key_pem));
		free(w->key_pem);
	}
	free(w);
}

void pn_web_serve(pn_web *w, int fd)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) {
		close(fd);
		return;
	}
	w->closed = false;
	pn_metrics_http_open();
	/* MHD owns the socket from here, failure or not. */
	if (MHD_add_connection(w->d, fd, (struct sockaddr *)&peer, len) != MHD_YES) {
		pn_warning("http: could not take a connection over: %m");
		return;
	}
	while (!w->closed)
		if (MHD_run_wait(w->d, 1000) != MHD_YES)
			break;
	pn_metrics_http_close();
	/* STOW-RS's instances: their final folders made durable and their
	 * temporary names removed, as at an association's end */
	int rc = w->ctx->storage ? pn_storage_flush(w->ctx->storage) : 0;
	if (rc < 0)
		pn_warning("could not fsync stored folders (%s); their tmp/ names stay for start-up recovery",
		           strerror(-rc));
}

int pn_web_check(const pn_config *cfg, char *err, size_t errlen)
{
	if (cfg->http_port == 0)
		return 0;
	pn_store_ctx ctx = {.cfg = cfg};
	pn_web *w = NULL;
	int rc = pn_web_create(&ctx, &w, err, errlen);
	pn_web_free(w);
	return rc;
}
