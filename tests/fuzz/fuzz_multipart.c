/* A hostile multipart body, fed in pieces whose sizes the input chooses:
 * parsed or refused, never a crash, a leak or a read out of bounds; the
 * parts' bytes never more than the body's, and the same whatever the
 * feeding (whole vs. in pieces); and as a Content-Type value and a header
 * block, whose parameters are read without overrun. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

typedef struct {
	size_t begun, ended, bytes;
	uint64_t hash;
} tally;

static int on_begin(void *ctx, const char *h, size_t n)
{
	tally *t = ctx;
	if (strlen(h) != n)
		abort();
	t->begun++;
	return 0;
}

static int on_data(void *ctx, const char *buf, size_t n)
{
	tally *t = ctx;
	t->bytes += n;
	for (size_t i = 0; i < n; i++)
		t->hash = t->hash * 1099511628211u ^ (unsigned char)buf[i];
	return 0;
}

static int on_end(void *ctx)
{
	((tally *)ctx)->ended++;
	return 0;
}

static int run(const uint8_t *data, size_t size, size_t step, tally *t)
{
	pn_multipart_cb cb = {on_begin, on_data, on_end};
	pn_multipart *m = NULL;
	memset(t, 0, sizeof(*t));
	if (pn_multipart_create("fz", &cb, t, &m) < 0)
		abort();
	int rc = 0;
	for (size_t i = 0; i < size && rc == 0; i += step)
		rc = pn_multipart_feed(m, (const char *)data + i, size - i < step ? size - i : step);
	if (rc == 0)
		rc = pn_multipart_finish(m);
	pn_multipart_free(m);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)(data[0] % 17) + 1;
	tally whole, pieces;
	int a = run(data + 1, size - 1, size, &whole);
	int b = run(data + 1, size - 1, step, &pieces);
	if (a != b || whole.begun != pieces.begun || whole.ended != pieces.ended || whole.bytes != pieces.bytes ||
	    whole.hash != pieces.hash)
		abort();
	if (whole.bytes > size || whole.ended > whole.begun)
		abort();
	/* the same bytes as a Content-Type and as a part's header block */
	char text[600], out[300];
	size_t n = size - 1 < sizeof(text) - 1 ? size - 1 : sizeof(text) - 1;
	memcpy(text, data + 1, n);
	text[n] = '\0';
	if (pn_content_type_param(text, NULL, out, sizeof(out)) == 0 && strlen(out) >= sizeof(out))
		abort();
	if (pn_content_type_param(text, "boundary", out, sizeof(out)) == 0 && strlen(out) >= sizeof(out))
		abort();
	if (pn_multipart_header(text, "Content-Type", out, sizeof(out)) == 0 && strlen(out) >= sizeof(out))
		abort();
	return 0;
}
