/* HTML built in memory. Every string from a dataset, the index or the
 * request goes through pn_html_text (or pn_html_url inside a query
 * string); only the pages' own constant markup goes through pn_html_raw. */
#ifndef PN_WEB_HTML_H
#define PN_WEB_HTML_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
	char *data;
	size_t len, cap;
	bool failed; /* out of memory: the page is not sent */
} pn_html;

/* Our markup, printf-style: never with a value from outside as the
 * format, and values only through %d and the like. */
void pn_html_raw(pn_html *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Text or an attribute value: & < > " ' escaped; bytes that are not UTF-8
 * shown as U+FFFD. NULL writes nothing. */
void pn_html_text(pn_html *h, const char *s);
/* A query-string value, percent-encoded (RFC 3986 unreserved kept). */
void pn_html_url(pn_html *h, const char *s);
void pn_html_free(pn_html *h);

#endif
