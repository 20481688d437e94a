/* A streaming parser of multipart bodies (RFC 2046 5.1, as
 * multipart/related uses it, RFC 2387): parts are handed over as their
 * bytes arrive, so a request of any size needs only a window of memory.
 * Hostile input is the normal case: every limit is checked, and a body
 * that breaks the syntax is refused with -EBADMSG. */
#ifndef PN_WEB_MULTIPART_H
#define PN_WEB_MULTIPART_H

#include <stddef.h>

#define PN_MULTIPART_BOUNDARY_MAX 70 /* RFC 2046 */
#define PN_MULTIPART_HEADERS_MAX (16 * 1024)

typedef struct {
	/* A part begins: its header block (lines "Name: value" separated by
	 * CRLF, without the blank line; may be empty), NUL-terminated; a block
	 * with control bytes (a NUL among them) is refused before. */
	int (*begin)(void *ctx, const char *headers, size_t len);
	int (*data)(void *ctx, const char *buf, size_t len);
	int (*end)(void *ctx);
} pn_multipart_cb;

typedef struct pn_multipart pn_multipart;

/* `boundary`: the Content-Type's boundary parameter (quotes removed).
 * -EINVAL for a boundary RFC 2046 does not allow, -ENOMEM. */
int pn_multipart_create(const char *boundary, const pn_multipart_cb *cb, void *ctx, pn_multipart **ret);
void pn_multipart_free(pn_multipart *m); /* NULL is a no-op */

/* Feeds the next bytes of the body. 0; -EBADMSG (malformed), -EMSGSIZE (a
 * part's headers beyond PN_MULTIPART_HEADERS_MAX), or a callback's
 * negative return, after which the parser takes nothing more. */
int pn_multipart_feed(pn_multipart *m, const char *buf, size_t len);

/* The body is complete: 0 when the closing delimiter was seen, -EBADMSG
 * otherwise (a part that was begun is not ended). */
int pn_multipart_finish(pn_multipart *m);

/* The value of header `name` (case-insensitive) in a header block, copied
 * into out (trimmed); 0, or -ENOENT. */
int pn_multipart_header(const char *headers, const char *name, char *out, size_t outlen);

/* A parameter of a Content-Type value ("multipart/related; type=\"a/b\";
 * boundary=x"): its value, unquoted, into out; 0 or -ENOENT. The media
 * type itself (lower case, without parameters) with name NULL. */
int pn_content_type_param(const char *value, const char *name, char *out, size_t outlen);

#endif
