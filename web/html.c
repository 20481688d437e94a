/* HTML building (html.h). */
#include "html.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool grow(pn_html *h, size_t more)
{
	if (h->failed)
		return false;
	if (h->len + more + 1 <= h->cap)
		return true;
	size_t cap = h->cap ? h->cap : 16384;
	while (cap < h->len + more + 1)
		cap *= 2;
	char *d = realloc(h->data, cap);
	if (!d) {
		h->failed = true;
		return false;
	}
	h->data = d;
	h->cap = cap;
	return true;
}

static void put(pn_html *h, const char *s, size_t n)
{
	if (!grow(h, n))
		return;
	memcpy(h->data + h->len, s, n);
	h->len += n;
	h->data[h->len] = '\0';
}

void pn_html_raw(pn_html *h, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !grow(h, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(h->data + h->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	h->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0. */
static size_t utf8_len(const unsigned char *s)
{
	if (s[0] < 0x80)
		return 1;
	size_t n = (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
	if (n == 0 || (n == 2 && s[0] < 0xC2) || (n == 4 && s[0] > 0xF4))
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
		return 0; /* overlong, surrogates */
	if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
		return 0;
	return n;
}

void pn_html_text(pn_html *h, const char *s)
{
	if (!s)
		return;
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		const char *rep = NULL;
		switch (*p) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		default:
			break;
		}
		if (rep) {
			put(h, rep, strlen(rep));
			p++;
			continue;
		}
		if (*p < 0x20 && *p != '\t' && *p != '\n') {
			put(h, " ", 1); /* control characters mean nothing here */
			p++;
			continue;
		}
		size_t n = utf8_len(p);
		if (n == 0) {
			put(h, "\xEF\xBF\xBD", 3);
			p++;
			continue;
		}
		put(h, (const char *)p, n);
		p += n;
	}
}

void pn_html_url(pn_html *h, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!s)
		return;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		    *p == '.' || *p == '_' || *p == '~') {
			put(h, (const char *)p, 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			put(h, e, 3);
		}
	}
}

void pn_html_free(pn_html *h)
{
	free(h->data);
	h->data = NULL;
	h->len = h->cap = 0;
}
