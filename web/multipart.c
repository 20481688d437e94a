/* The multipart parser (multipart.h). The body goes through a window:
 * bytes that cannot be part of a delimiter ("CRLF--boundary") are handed to
 * the part at once, only the last few wait for the next feed. A stream
 * begins with a virtual CRLF, so that a delimiter as the very first bytes
 * (no preamble, the usual case) is found like any other. */
#include "multipart.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { PREAMBLE, AFTER_DELIM, HEADERS, BODY, EPILOGUE };

/* Transport padding after a delimiter (RFC 2046 allows whitespace): more
 * than this is not a multipart body. */
#define MAX_PADDING 256

struct pn_multipart {
	pn_multipart_cb cb;
	void *ctx;
	char delim[4 + PN_MULTIPART_BOUNDARY_MAX + 1];
	size_t dlen;
	char *win;
	size_t wlen, wcap;
	int state;
	bool in_part;
	int err;
	char hdr[PN_MULTIPART_HEADERS_MAX + 8];
	size_t hlen;
};

/* RFC 2046 5.1.1: 1 to 70 of these, not ending in a space. */
static bool boundary_ok(const char *b)
{
	size_t n = strlen(b);
	if (n == 0 || n > PN_MULTIPART_BOUNDARY_MAX || b[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)b[i]) && !strchr("'()+_,-./:=? ", b[i]))
			return false;
	return true;
}

int pn_multipart_create(const char *boundary, const pn_multipart_cb *cb, void *ctx, pn_multipart **ret)
{
	*ret = NULL;
	if (!boundary_ok(boundary))
		return -EINVAL;
	pn_multipart *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->cb = *cb;
	m->ctx = ctx;
	m->dlen = (size_t)snprintf(m->delim, sizeof(m->delim), "\r\n--%s", boundary);
	m->wcap = 4096;
	m->win = malloc(m->wcap);
	if (!m->win) {
		free(m);
		return -ENOMEM;
	}
	memcpy(m->win, "\r\n", 2);
	m->wlen = 2;
	m->state = PREAMBLE;
	*ret = m;
	return 0;
}

void pn_multipart_free(pn_multipart *m)
{
	if (!m)
		return;
	free(m->win);
	free(m);
}

static void consume(pn_multipart *m, size_t n)
{
	memmove(m->win, m->win + n, m->wlen - n);
	m->wlen -= n;
}

static int fail(pn_multipart *m, int err)
{
	m->err = err;
	return err;
}

/* The window's part before a possible delimiter: handed over (BODY) or
 * dropped (PREAMBLE). Returns 1 when a delimiter was consumed. */
static int scan_delimiter(pn_multipart *m)
{
	const char *p = memmem(m->win, m->wlen, m->delim, m->dlen);
	size_t upto = p ? (size_t)(p - m->win) : (m->wlen >= m->dlen ? m->wlen - (m->dlen - 1) : 0);
	if (m->state == BODY && upto > 0) {
		int rc = m->cb.data(m->ctx, m->win, upto);
		if (rc < 0)
			return fail(m, rc);
	}
	if (!p) {
		consume(m, upto);
		return 0;
	}
	consume(m, upto + m->dlen);
	m->state = AFTER_DELIM;
	return 1;
}

static int after_delimiter(pn_multipart *m)
{
	if (m->wlen < 2)
		return 0;
	if (m->win[0] == '-' && m->win[1] == '-') {
		if (m->in_part) {
			m->in_part = false;
			int rc = m->cb.end(m->ctx);
			if (rc < 0)
				return fail(m, rc);
		}
		m->state = EPILOGUE;
		m->wlen = 0;
		return 0;
	}
	size_t i = 0;
	while (i < m->wlen && (m->win[i] == ' ' || m->win[i] == '\t'))
		i++;
	if (i > MAX_PADDING)
		return fail(m, -EBADMSG);
	if (i + 1 >= m->wlen)
		return 0;
	if (m->win[i] != '\r' || m->win[i + 1] != '\n')
		return fail(m, -EBADMSG);
	consume(m, i + 2);
	if (m->in_part) {
		m->in_part = false;
		int rc = m->cb.end(m->ctx);
		if (rc < 0)
			return fail(m, rc);
	}
	m->state = HEADERS;
	m->hlen = 0;
	return 1;
}

static int headers(pn_multipart *m)
{
	size_t room = sizeof(m->hdr) - 1 - m->hlen;
	size_t take = m->wlen < room ? m->wlen : room;
	size_t before = m->hlen;
	memcpy(m->hdr + m->hlen, m->win, take);
	m->hlen += take;
	size_t end, body;
	if (m->hlen >= 2 && m->hdr[0] == '\r' && m->hdr[1] == '\n') {
		end = 0; /* no headers at all */
		body = 2;
	} else {
		/* the terminator may straddle what was here and what came */
		size_t from = before >= 3 ? before - 3 : 0;
		const char *t = memmem(m->hdr + from, m->hlen - from, "\r\n\r\n", 4);
		if (!t) {
			consume(m, take);
			if (m->hlen > PN_MULTIPART_HEADERS_MAX)
				return fail(m, -EMSGSIZE);
			return 0;
		}
		end = (size_t)(t - m->hdr);
		body = end + 4;
	}
	if (end > PN_MULTIPART_HEADERS_MAX)
		return fail(m, -EMSGSIZE);
	/* Header lines are text (RFC 5322): no NUL or other control bytes. */
	for (size_t i = 0; i < end; i++) {
		unsigned char c = (unsigned char)m->hdr[i];
		if ((c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f)
			return fail(m, -EBADMSG);
	}
	/* What followed the blank line goes back to the window. */
	consume(m, take - (m->hlen - body));
	m->hdr[end] = '\0';
	m->in_part = true;
	m->state = BODY;
	int rc = m->cb.begin(m->ctx, m->hdr, end);
	if (rc < 0)
		return fail(m, rc);
	/* The body's delimiter needs its CRLF: the one ending the blank
	 * line is the headers', so a part with an empty body is
	 * "CRLF CRLF CRLF--boundary". */
	return 1;
}

int pn_multipart_feed(pn_multipart *m, const char *buf, size_t len)
{
	if (m->err)
		return m->err;
	if (m->state == EPILOGUE)
		return 0;
	if (m->wlen + len > m->wcap) {
		size_t cap = m->wcap;
		while (cap < m->wlen + len)
			cap *= 2;
		char *w = realloc(m->win, cap);
		if (!w)
			return fail(m, -ENOMEM);
		m->win = w;
		m->wcap = cap;
	}
	memcpy(m->win + m->wlen, buf, len);
	m->wlen += len;
	for (;;) {
		int rc;
		switch (m->state) {
		case PREAMBLE:
		case BODY:
			rc = scan_delimiter(m);
			break;
		case AFTER_DELIM:
			rc = after_delimiter(m);
			break;
		case HEADERS:
			rc = headers(m);
			break;
		default:
			m->wlen = 0;
			return 0;
		}
		if (rc < 0)
			return rc;
		if (rc == 0)
			return 0;
	}
}

int pn_multipart_finish(pn_multipart *m)
{
	if (m->err)
		return m->err;
	return m->state == EPILOGUE ? 0 : -EBADMSG;
}

int pn_multipart_header(const char *h, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name);
	const char *line = h;
	while (*line) {
		const char *eol = strstr(line, "\r\n");
		size_t llen = eol ? (size_t)(eol - line) : strlen(line);
		if (llen > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
			const char *v = line + nlen + 1;
			size_t vlen = llen - nlen - 1;
			while (vlen && (*v == ' ' || *v == '\t')) {
				v++;
				vlen--;
			}
			while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			if (vlen >= outlen)
				vlen = outlen - 1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return 0;
		}
		if (!eol)
			break;
		line = eol + 2;
	}
	return -ENOENT;
}

int pn_content_type_param(const char *value, const char *name, char *out, size_t outlen)
{
	const char *p = value;
	while (*p == ' ' || *p == '\t')
		p++;
	const char *t = p;
	while (*p && *p != ';' && *p != ' ' && *p != '\t')
		p++;
	if (!name) {
		size_t n = (size_t)(p - t);
		if (n == 0 || n >= outlen)
			return -ENOENT;
		for (size_t i = 0; i < n; i++)
			out[i] = (char)tolower((unsigned char)t[i]);
		out[n] = '\0';
		return 0;
	}
	size_t nlen = strlen(name);
	while (*p) {
		while (*p && *p != ';')
			p++;
		if (!*p)
			break;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		const char *k = p;
		while (*p && *p != '=' && *p != ';')
			p++;
		size_t klen = (size_t)(p - k);
		while (klen && (k[klen - 1] == ' ' || k[klen - 1] == '\t'))
			klen--;
		if (*p != '=')
			continue;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		char v[256];
		size_t vn = 0;
		if (*p == '"') {
			p++;
			while (*p && *p != '"') {
				if (*p == '\\' && p[1])
					p++;
				if (vn < sizeof(v) - 1)
					v[vn++] = *p;
				p++;
			}
			if (*p == '"')
				p++;
		} else {
			while (*p && *p != ';' && *p != ' ' && *p != '\t') {
				if (vn < sizeof(v) - 1)
					v[vn++] = *p;
				p++;
			}
		}
		v[vn] = '\0';
		if (klen == nlen && strncasecmp(k, name, nlen) == 0) {
			if (vn >= outlen)
				return -ENOENT;
			memcpy(out, v, vn + 1);
			return 0;
		}
	}
	return -ENOENT;
}
