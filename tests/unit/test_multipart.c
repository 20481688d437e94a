/* The streaming multipart parser (web/multipart.c): the same parts whatever
 * the feeding (whole, byte by byte, delimiters cut anywhere), preamble and
 * epilogue dropped, empty parts and bodies that merely look like a
 * delimiter kept, every malformed body refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

typedef struct {
	int parts, ended;
	char headers[8][256];
	char data[8][4096];
	size_t len[8];
} seen;

static int on_begin(void *ctx, const char *h, size_t n)
{
	seen *s = ctx;
	assert_true(s->parts < 8);
	assert_int_equal(strlen(h), n);
	snprintf(s->headers[s->parts], sizeof(s->headers[0]), "%s", h);
	s->len[s->parts] = 0;
	s->parts++;
	return 0;
}

static int on_data(void *ctx, const char *buf, size_t n)
{
	seen *s = ctx;
	int i = s->parts - 1;
	assert_true(s->len[i] + n < sizeof(s->data[0]));
	memcpy(s->data[i] + s->len[i], buf, n);
	s->len[i] += n;
	return 0;
}

static int on_end(void *ctx)
{
	seen *s = ctx;
	s->ended++;
	return 0;
}

/* Feeds `body` in pieces of `step` bytes (0: whole); the finish result. */
static int parse(const char *boundary, const char *body, size_t len, size_t step, seen *s)
{
	memset(s, 0, sizeof(*s));
	pn_multipart_cb cb = {on_begin, on_data, on_end};
	pn_multipart *m = NULL;
	assert_int_equal(pn_multipart_create(boundary, &cb, s, &m), 0);
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0; i += step ? step : len)
		rc = pn_multipart_feed(m, body + i, step && len - i > step ? step : len - i);
	if (rc == 0)
		rc = pn_multipart_finish(m);
	pn_multipart_free(m);
	return rc;
}

static const char BODY[] = "preamble to drop\r\n"
                           "--b0und\r\n"
                           "Content-Type: application/dicom\r\n"
                           "X-Other: 1\r\n"
                           "\r\n"
                           "first\r\n--b0unx almost a delimiter\r\n--b0un\r\n"
                           "--b0und  \r\n"
                           "\r\n"
                           "\r\n"
                           "--b0und\r\n"
                           "Content-Type: application/dicom\r\n"
                           "\r\n"
                           "third\r\n\r\n"
                           "--b0und--\r\n"
                           "epilogue to drop\r\n--b0und\r\n";

static void check_body(seen *s)
{
	assert_int_equal(s->parts, 3);
	assert_int_equal(s->ended, 3);
	assert_string_equal(s->headers[0], "Content-Type: application/dicom\r\nX-Other: 1");
	assert_int_equal(s->len[0], strlen("first\r\n--b0unx almost a delimiter\r\n--b0un"));
	assert_memory_equal(s->data[0], "first\r\n--b0unx almost a delimiter\r\n--b0un", s->len[0]);
	assert_string_equal(s->headers[1], "");
	assert_int_equal(s->len[1], 0);
	assert_int_equal(s->len[2], strlen("third\r\n"));
	assert_memory_equal(s->data[2], "third\r\n", s->len[2]);
}

static void test_every_feeding(void **state)
{
	(void)state;
	seen s;
	for (size_t step = 0; step <= 40; step++) {
		assert_int_equal(parse("b0und", BODY, strlen(BODY), step, &s), 0);
		check_body(&s);
	}
}

static void test_no_preamble(void **state)
{
	(void)state;
	seen s;
	const char *b = "--x\r\nA: b\r\n\r\nhello\r\n--x--";
	assert_int_equal(parse("x", b, strlen(b), 1, &s), 0);
	assert_int_equal(s.parts, 1);
	assert_int_equal(s.len[0], 5);
}

static void test_malformed(void **state)
{
	(void)state;
	seen s;
	const char *cases[] = {
	    "--x\r\nA: b\r\n\r\nhello",               /* no closing delimiter */
	    "no delimiter at all",                    /* nothing */
	    "--x\r\nA: b\r\n\r\nhello\r\n--xgarbage", /* delimiter not followed by CRLF or -- */
	    "--x\r\nA: b",                            /* headers never end */
	    "--x\r\nA\001: b\r\n\r\n\r\n--x--",       /* a control byte in the headers */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (size_t step = 0; step < 4; step++)
			assert_int_equal(parse("x", cases[i], strlen(cases[i]), step, &s), -EBADMSG);
	/* a NUL in the headers: the block would read shorter than it is */
	static const char nul[] = "--x\r\nA: b\0c\r\n\r\n\r\n--x--";
	assert_int_equal(parse("x", nul, sizeof(nul) - 1, 0, &s), -EBADMSG);
}

static void test_headers_limit(void **state)
{
	(void)state;
	size_t n = PN_MULTIPART_HEADERS_MAX + 100;
	char *b = malloc(n + 64);
	int k = sprintf(b, "--x\r\nA: ");
	memset(b + k, 'a', n);
	seen s;
	assert_int_equal(parse("x", b, (size_t)k + n, 1000, &s), -EMSGSIZE);
	free(b);
}

static void test_boundaries(void **state)
{
	(void)state;
	pn_multipart_cb cb = {on_begin, on_data, on_end};
	pn_multipart *m = NULL;
	seen s;
	char long71[72];
	memset(long71, 'a', 71);
	long71[71] = '\0';
	const char *bad[] = {"", "ends with space ", "no\"quotes", "semi;colon", long71};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(pn_multipart_create(bad[i], &cb, &s, &m), -EINVAL);
	assert_int_equal(pn_multipart_create("gc0p4Jq0M2Yt08jU534c0p", &cb, &s, &m), 0);
	pn_multipart_free(m);
}

static void test_content_type(void **state)
{
	(void)state;
	char v[128];
	const char *ct = "Multipart/Related ; type=\"application/dicom\"; boundary=abc;charset=x";
	assert_int_equal(pn_content_type_param(ct, NULL, v, sizeof(v)), 0);
	assert_string_equal(v, "multipart/related");
	assert_int_equal(pn_content_type_param(ct, "type", v, sizeof(v)), 0);
	assert_string_equal(v, "application/dicom");
	assert_int_equal(pn_content_type_param(ct, "boundary", v, sizeof(v)), 0);
	assert_string_equal(v, "abc");
	assert_int_equal(pn_content_type_param(ct, "BOUNDARY", v, sizeof(v)), 0);
	assert_int_equal(pn_content_type_param(ct, "start", v, sizeof(v)), -ENOENT);
	assert_int_equal(pn_content_type_param("a/b; boundary=\"q;x\"", "boundary", v, sizeof(v)), 0);
	assert_string_equal(v, "q;x");
	assert_int_equal(pn_multipart_header("A: 1\r\ncontent-type:  x/y \r\nB: 2", "Content-Type", v, sizeof(v)), 0);
	assert_string_equal(v, "x/y");
	assert_int_equal(pn_multipart_header("A: 1", "Content-Type", v, sizeof(v)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_feeding), cmocka_unit_test(test_no_preamble),
	    cmocka_unit_test(test_malformed),     cmocka_unit_test(test_headers_limit),
	    cmocka_unit_test(test_boundaries),    cmocka_unit_test(test_content_type),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
