/* The node's web side: the study browser and DICOMweb over one embedded
 * HTTP server (libmicrohttpd; docs/web.md). The listener accepts HTTP
 * connections like DICOM ones and hands each to a worker, which serves it
 * here until the client closes it or it idles out. */
#ifndef PN_WEB_H
#define PN_WEB_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "store.h"

typedef struct pn_web pn_web;

/* One per worker process, after fork. `ctx`: the worker's configuration,
 * database connection and storage, used for every request. 0 or a
 * negative errno with one line in err. */
int pn_web_create(pn_store_ctx *ctx, pn_web **ret_web, char *err, size_t errlen);
void pn_web_free(pn_web *web); /* NULL is a no-op */

/* Serves the HTTP connection `fd` (taken over and closed) until it ends. */
void pn_web_serve(pn_web *web, int fd);

/* Whether `fd` came in on the HTTP port (the listener passes bare
 * sockets). */
bool pn_web_is_http_connection(const pn_config *cfg, int fd);

/* At start-up and for `pacsnode -t`: the HTTPS certificate and key load,
 * and the users file reads. 0 or a negative errno with one line in err. */
int pn_web_check(const pn_config *cfg, char *err, size_t errlen);

/* The short answer the listener writes itself when every HTTP connection
 * is taken (no worker is spent on it). */
extern const char pn_web_busy_response[];

#endif
