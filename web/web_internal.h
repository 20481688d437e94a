/* What the parts of the web side share: one request, and the ways to
 * answer it. Only web/ includes this (and libmicrohttpd). */
#ifndef PN_WEB_INTERNAL_H
#define PN_WEB_INTERNAL_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "hold.h"
#include "store.h" /* pn_store_ctx */
#include "users.h"

typedef struct pn_web_req {
	struct MHD_Connection *conn;
	pn_store_ctx *ctx;
	const char *method; /* "GET", "HEAD", "POST", ... */
	const char *path;   /* the URL's path, decoded, without the query */
	bool https;
	char peer[64];            /* the client's address */
	char user[64];            /* "" when the web is open */
	pn_web_role role;         /* PN_ROLE_WRITE when the web is open */
	bool answered;            /* a response was queued */
	unsigned status;          /* the one queued, for the access log */
	int op;                   /* PN_OP_* for /metrics, -1: not timed */
	struct pn_web_stow *stow; /* a STOW-RS request reading its body */
	/* A request with a body refused at its headers, answered once the body
	 * is read (pn_web_refuse_body) */
	unsigned refused;
	bool refused_login;
	char refused_why[256];
	uint64_t discarded;
	struct timespec t0;
} pn_web_req;

/* Queues `len` bytes of `body` (copied) with `status` and `type`. */
enum MHD_Result pn_web_reply(pn_web_req *r, unsigned status, const char *type, const void *body, size_t len);

/* Queues `resp` (made by the caller) with `status`, adding the headers every
 * answer carries; destroys it. */
enum MHD_Result pn_web_queue(pn_web_req *r, unsigned status, struct MHD_Response *resp);

/* An error for a client: a short plain-text explanation, and one log line
 * (a warning for what the client did wrong, 4xx; an error for our
 * failures, 5xx). */
enum MHD_Result pn_web_error(pn_web_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A retrieve (WADO-RS, a download) has taken its hold: the studies it
 * names are marked accessed for [retention] policy = accessed (a failure
 * only logged at debug: the retrieve goes on). */
void pn_web_note_access(pn_db *db, const pn_hold *hold);

/* A refusal of a request whose body is on its way: at once when the
 * client waits for it (Expect: 100-continue), else once its body (up to a
 * bound) is read and dropped, so that the client can read the answer. */
enum MHD_Result pn_web_refuse_body(pn_web_req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A query parameter (decoded), or NULL. */
const char *pn_web_arg(const pn_web_req *r, const char *name);

/* The URL this node is reached at, as the client named it
 * ("http://host:port"), for Retrieve URL; "" when the Host header is
 * missing or not a plain host name. */
void pn_web_base_url(const pn_web_req *r, char *out, size_t outlen);

/* Handlers, by the part of the URL space they serve. Each returns the
 * result of queueing its response. */
enum MHD_Result pn_web_health(pn_web_req *r);
/* QIDO-RS: `level` PN_LEVEL_STUDY..INSTANCE; study / series from the path
 * (NULL when not in it; already checked as UIDs). */
enum MHD_Result pn_web_qido(pn_web_req *r, int level, const char *study, const char *series);
/* WADO-RS metadata: every stored attribute of each instance (qido.c). */
enum MHD_Result pn_web_metadata(pn_web_req *r, const char *study, const char *series, const char *sop);
/* WADO-RS: the instances themselves (series and sop may be NULL). */
enum MHD_Result pn_web_wado(pn_web_req *r, const char *study, const char *series, const char *sop);

/* WADO-RS rendered / thumbnail (render.c): frame 0-based; sop NULL: the
 * series' middle instance. */
enum MHD_Result pn_web_rendered(pn_web_req *r, const char *study, const char *series, const char *sop,
                                unsigned long frame, bool thumbnail);

/* WADO-RS frames (render.c): `list` as in the URL ("1,3,5"). */
enum MHD_Result pn_web_frames(pn_web_req *r, const char *study, const char *series, const char *sop, const char *list);

/* The study browser (pages.c) and its style sheet and script (static.c). */
enum MHD_Result pn_web_page_index(pn_web_req *r);
enum MHD_Result pn_web_page_study(pn_web_req *r, const char *study);
enum MHD_Result pn_web_page_patient(pn_web_req *r);
enum MHD_Result pn_web_static(pn_web_req *r, const char *name);
/* A study or a series as one ZIP file, to save (download.c). */
enum MHD_Result pn_web_download(pn_web_req *r, const char *study, const char *series);
/* One stored file as application/dicom, to save (wado.c). */
enum MHD_Result pn_web_instance_file(pn_web_req *r, const char *study, const char *series, const char *sop);

/* STOW-RS, fed as the body arrives (stow.c). begin: NULL when the request
 * was answered already (a bad Content-Type, too large). feed: -1 once the
 * request cannot go on (finish answers why). finish answers it. */
typedef struct pn_web_stow pn_web_stow;
pn_web_stow *pn_web_stow_begin(pn_web_req *r, const char *study);
int pn_web_stow_feed(pn_web_stow *s, const char *data, size_t len); /* -2: give up the connection */
enum MHD_Result pn_web_stow_finish(pn_web_stow *s);
void pn_web_stow_free(pn_web_stow *s);

#endif
