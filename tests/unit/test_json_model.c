/* The DICOM JSON writer from the blobs (scp/json_model.c, web/search.c's
 * direct way) against dcmtk's writer (pn_dcm_ds_write_json over the
 * dataset dcmtk reads from the same bytes): the same text for every VR,
 * for nasty strings, nested sequences and whole QIDO-RS responses; valid
 * JSON where dcmtk's is not. dcmtk is set up as the node sets it up
 * (pn_dcm_init: no input correction). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fuzz/json_check.h"
#include "attr_levels.h"
#include "evr.h"
#include "json_model.h"
#include "search.h"

#define TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

/* --- blobs, built byte by byte ------------------------------------------ */

typedef struct {
	unsigned char *d;
	size_t len, cap;
} bb;

static void bb_put(bb *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->d = realloc(b->d, b->cap);
		assert_non_null(b->d);
	}
	if (n)
		memcpy(b->d + b->len, p, n);
	b->len += n;
}

static void bb_le(bb *b, uint32_t v, int bytes)
{
	for (int i = 0; i < bytes; i++) {
		unsigned char c = (unsigned char)(v >> (8 * i));
		bb_put(b, &c, 1);
	}
}

static void el(bb *b, uint32_t tag, const char *vr, const void *v, size_t n)
{
	bb_le(b, tag >> 16, 2);
	bb_le(b, tag & 0xffff, 2);
	bb_put(b, vr, 2);
	if (pn_evr_long_vr(vr)) {
		bb_le(b, 0, 2);
		bb_le(b, (uint32_t)n, 4);
	} else {
		assert_true(n <= 0xffff);
		bb_le(b, (uint32_t)n, 2);
	}
	bb_put(b, v, n);
}

static void el_str(bb *b, uint32_t tag, const char *vr, const char *s)
{
	el(b, tag, vr, s, strlen(s));
}

static void item(bb *b, const bb *content)
{
	bb_le(b, 0xFFFE, 2);
	bb_le(b, 0xE000, 2);
	bb_le(b, (uint32_t)content->len, 4);
	bb_put(b, content->d, content->len);
}

/* --- comparing ------------------------------------------------------------ */

/* The VR of the attribute whose value is at `at` ("FD"...): the last
 * "vr":"XX" before it. */
static void vr_before(const char *s, size_t at, char vr[3])
{
	vr[0] = vr[1] = vr[2] = 0;
	for (size_t i = at; i >= 6; i--)
		if (memcmp(s + i - 6, "\"vr\":\"", 6) == 0) {
			memcpy(vr, s + i, 2);
			return;
		}
}

/* Whether two JSON texts are the same: byte for byte, but for numbers,
 * which must be the same double (FL and FD within 1e-6: dcmtk's conversion
 * loses digits). */
static bool same_json(const char *a, size_t an, const char *b, size_t bn, char *why, size_t whylen)
{
	size_t i = 0, j = 0;
	bool in_str = false;
	while (i < an && j < bn) {
		char c = a[i];
		if (!in_str && (c == '-' || (c >= '0' && c <= '9')) && (b[j] == '-' || (b[j] >= '0' && b[j] <= '9'))) {
			char ta[64] = "", tb[64] = "";
			size_t la = strspn(a + i, "-+.0123456789eE"), lb = strspn(b + j, "-+.0123456789eE");
			snprintf(ta, sizeof ta, "%.*s", (int)la, a + i);
			snprintf(tb, sizeof tb, "%.*s", (int)lb, b + j);
			double x = strtod(ta, NULL), y = strtod(tb, NULL);
			char vr[3];
			vr_before(a, i, vr);
			bool fl = vr[0] == 'F' && (vr[1] == 'L' || vr[1] == 'D');
			if (!(x == y || (fl && fabs(x - y) <= 1e-6 * fabs(x)))) {
				snprintf(why, whylen, "number %s against %s at %zu", ta, tb, i);
				return false;
			}
			i += la;
			j += lb;
			continue;
		}
		if (c != b[j]) {
			snprintf(why, whylen, "at byte %zu: ...%.40s against ...%.40s", i, a + (i > 20 ? i - 20 : 0),
			         b + (j > 20 ? j - 20 : 0));
			return false;
		}
		if (in_str && c == '\\') {
			if (i + 1 < an && j + 1 < bn && a[i + 1] != b[j + 1]) {
				snprintf(why, whylen, "escape at %zu", i);
				return false;
			}
			i += 2;
			j += 2;
			continue;
		}
		if (c == '"')
			in_str = !in_str;
		i++;
		j++;
	}
	if (i != an || j != bn) {
		snprintf(why, whylen, "lengths %zu and %zu", an, bn);
		return false;
	}
	return true;
}

typedef struct {
	unsigned compared, ours_only, refused;
} tally;

/* One blob both ways. Ours must take only what dcmtk reads; where dcmtk
 * writes JSON the texts must agree; ours is always JSON. */
static void compare_blob(const bb *blob, tally *t)
{
	pn_json_buf ours = {0};
	int ck = pn_json_check(blob->d, blob->len);
	pn_dcm_ds *ds = NULL;
	int lr = pn_dcm_ds_load_buffer(blob->d, blob->len, &ds);
	if (ck != 0) {
		t->refused++;
		pn_dcm_ds_free(ds);
		return;
	}
	if (lr != 0)
		fail_msg("the writer takes a blob dcmtk cannot read (%d, %zu bytes)", lr, blob->len);
	assert_int_equal(pn_json_dataset(&ours, blob->d, blob->len), 0);
	const char *bad = pn_json_check_text(ours.data, ours.len);
	if (bad)
		fail_msg("not JSON (%s): %.*s", bad, (int)ours.len, ours.data);
	pn_dcm_buf theirs = {0};
	int wr = pn_dcm_ds_write_json(ds, &theirs);
	pn_dcm_ds_free(ds);
	if (wr == 0 && !pn_json_check_text(theirs.data, theirs.len)) {
		char why[200];
		if (!same_json(ours.data, ours.len, theirs.data, theirs.len, why, sizeof why))
			fail_msg("%s\n ours:  %.*s\n dcmtk: %.*s", why, (int)ours.len, ours.data, (int)theirs.len,
			         (char *)theirs.data);
		t->compared++;
	} else {
		t->ours_only++;
	}
	free(theirs.data);
	pn_json_buf_free(&ours);
}

static void expect_json(const bb *blob, const char *want)
{
	pn_json_buf ours = {0};
	assert_int_equal(pn_json_check(blob->d, blob->len), 0);
	assert_int_equal(pn_json_dataset(&ours, blob->d, blob->len), 0);
	if (ours.len != strlen(want) || memcmp(ours.data, want, ours.len) != 0)
		fail_msg("want %s\n got  %.*s", want, (int)ours.len, ours.data);
	pn_json_buf_free(&ours);
}

/* --- fixed cases ------------------------------------------------------------ */

static void every_vr_as_dcmtk(void **state)
{
	(void)state;
	bb b = {0};
	unsigned char us[] = {0x01, 0x02, 0xff, 0xff}, fl[8], fd[16],
	              at[] = {0x10, 0x00, 0x20, 0x00, 0x08, 0x00, 0x18, 0x00};
	float f[2] = {1.5f, -3.25e-7f};
	double d[2] = {0.1, 6.02214076e23};
	memcpy(fl, f, 8);
	memcpy(fd, d, 16);
	el_str(&b, TAG(0x0008, 0x0008), "CS", " ORIGINAL \\PRIMARY\\\\AXIAL ");
	el_str(&b, TAG(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.2");
	el(&b, TAG(0x0008, 0x0018), "UI", "1.2.3\0", 6);
	el_str(&b, TAG(0x0008, 0x0020), "DA", "20240131");
	el_str(&b, TAG(0x0008, 0x0030), "TM", "101500.5 ");
	el_str(&b, TAG(0x0008, 0x0050), "SH", "  A\"B\\C  ");
	el_str(&b, TAG(0x0008, 0x0054), "AE", "PACS  ");
	el_str(&b, TAG(0x0008, 0x0090), "PN", "REF^DOC^^^");
	el_str(&b, TAG(0x0008, 0x1030), "LO",
	       "CHEST\tWITH\x01"
	       "CONTRAST");
	el_str(&b, TAG(0x0008, 0x1190), "UR", "http://x/a\\b ");
	el_str(&b, TAG(0x0008, 0x2111), "ST", "line 1\r\nline 2\\ \x7f  ");
	el(&b, TAG(0x0009, 0x0010), "LO", "PRIV ", 5);
	el_str(&b, TAG(0x0010, 0x0010), "PN",
	       "Yamada^Tarou=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e=\xe3\x82\x84\xe3\x81\xbe\xe3\x81\xa0^"
	       "\xe3\x81\x9f\xe3\x82\x8d\xe3\x81\x86");
	el_str(&b, TAG(0x0010, 0x1001), "PN", "\\A^B\\\\=C\\^^\\=^=D=E=F\\");
	el_str(&b, TAG(0x0010, 0x1010), "AS", "045Y");
	el_str(&b, TAG(0x0010, 0x2000), "LO", "");
	el_str(&b, TAG(0x0010, 0x21B0), "LT", "   ");
	el_str(&b, TAG(0x0018, 0x0050), "DS", " 2.50 \\-.5\\+1e+05\\007\\abc\\\\1.5.2");
	el_str(&b, TAG(0x0020, 0x0011), "IS", "+0012\\-0\\2147483647\\2147483648\\-2147483648\\ 7 \\x");
	el(&b, TAG(0x0020, 0x9057), "UL", us, 4);
	el(&b, TAG(0x0020, 0x9128), "SL", us, 4);
	el(&b, TAG(0x0028, 0x0010), "US", us, 4);
	el(&b, TAG(0x0028, 0x0106), "SS", us, 4);
	el(&b, TAG(0x0028, 0x1050), "FL", fl, 8);
	el(&b, TAG(0x0028, 0x1051), "FD", fd, 16);
	el(&b, TAG(0x0028, 0x9503), "AT", at, 8);
	el(&b, TAG(0x0029, 0x1010), "OB", "\x00\x01\x02\xff\xfe", 5);
	el(&b, TAG(0x0029, 0x1011), "OW", "\x00\x01\x02\xff", 4);
	el(&b, TAG(0x0029, 0x1012), "UN", "\x00\x01\x02", 3);
	el(&b, TAG(0x0029, 0x1013), "OF", fl, 8);
	el(&b, TAG(0x0029, 0x1014), "OD", fd, 16);
	el(&b, TAG(0x0029, 0x1015), "OL", us, 4);
	el(&b, TAG(0x0029, 0x1016), "OV", fd, 8);
	el(&b, TAG(0x0029, 0x1017), "SV", fd, 16);
	el(&b, TAG(0x0029, 0x1018), "UV", fd, 16);
	el_str(&b, TAG(0x0029, 0x1019), "UC", "a\\b c  ");
	el_str(&b, TAG(0x0029, 0x101A), "UT", "\\\\unlimited\\ ");
	el_str(&b, TAG(0x0029, 0x101B), "DT", "20240131101500+0100 ");
	el(&b, TAG(0x0029, 0x101C), "OB", "", 0);
	el(&b, TAG(0x0029, 0x101D), "US", "", 0);
	el(&b, TAG(0x0029, 0x101E), "SQ", "", 0);
	tally t = {0};
	compare_blob(&b, &t);
	assert_int_equal(t.compared, 1);
	free(b.d);
}

static void sequences_nested(void **state)
{
	(void)state;
	bb inner = {0}, mid = {0}, top = {0}, empty = {0}, seq = {0}, seq2 = {0};
	el_str(&inner, TAG(0x0008, 0x0100), "SH", "T-1234");
	el_str(&inner, TAG(0x0008, 0x0102), "SH", "SRT ");
	el_str(&inner, TAG(0x0008, 0x0104), "LO", "Caf\xc3\xa9");
	item(&seq, &inner);
	item(&seq, &empty);
	el(&mid, TAG(0x0008, 0x0000), "UL", "\x04\x00\x00\x00", 4); /* a group length: left out */
	el(&mid, TAG(0x0008, 0x1032), "SQ", seq.d, seq.len);
	el_str(&mid, TAG(0x0008, 0x1150), "UI", "1.2.3");
	item(&seq2, &mid);
	el(&top, TAG(0x0008, 0x1110), "SQ", seq2.d, seq2.len);
	el(&top, TAG(0x0008, 0x1111), "SQ", "", 0);
	el_str(&top, TAG(0x0010, 0x0010), "PN", "A");
	tally t = {0};
	compare_blob(&top, &t);
	assert_int_equal(t.compared, 1);
	expect_json(&top, "{\"00081110\":{\"vr\":\"SQ\",\"Value\":[{\"00081032\":{\"vr\":\"SQ\",\"Value\":[{"
	                  "\"00080100\":{\"vr\":\"SH\",\"Value\":[\"T-1234\"]},\"00080102\":{\"vr\":\"SH\","
	                  "\"Value\":[\"SRT\"]},\"00080104\":{\"vr\":\"LO\",\"Value\":[\"Caf\xc3\xa9\"]}},{}]},"
	                  "\"00081150\":{\"vr\":\"UI\",\"Value\":[\"1.2.3\"]}}]},\"00081111\":{\"vr\":\"SQ\"},"
	                  "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"A\"}]}}");
	free(inner.d);
	free(mid.d);
	free(top.d);
	free(seq.d);
	free(seq2.d);
}

/* Where dcmtk's text is not JSON, ours is, and says the same. */
static void valid_where_dcmtk_is_not(void **state)
{
	(void)state;
	bb b = {0};
	double d[3] = {NAN, INFINITY, -INFINITY};
	el(&b, TAG(0x0008, 0x0050), "SH", "A\xff\xc3Z", 4);
	el_str(&b, TAG(0x0018, 0x0050), "DS", "5.\\0e5\\1.e3\\-00.E1");
	el(&b, TAG(0x0028, 0x0010), "US", "\x01", 1);
	el(&b, TAG(0x0028, 0x1051), "FD", d, sizeof d);
	expect_json(&b, "{\"00080050\":{\"vr\":\"SH\",\"Value\":[\"A\xef\xbf\xbd\xef\xbf\xbdZ\"]},"
	                "\"00180050\":{\"vr\":\"DS\",\"Value\":[5,0e5,1e3,-0E1]},"
	                "\"00280010\":{\"vr\":\"US\"},"
	                "\"00281051\":{\"vr\":\"FD\",\"Value\":[\"NaN\",\"Infinity\",\"-Infinity\"]}}");
	free(b.d);

	/* FD and FL keep every digit: the number reads back as stored */
	bb c = {0};
	double v = 7.2895384572669383e-32;
	float w = -1260.0126953125f;
	el(&c, TAG(0x0028, 0x1050), "FL", &w, 4);
	el(&c, TAG(0x0028, 0x1051), "FD", &v, 8);
	pn_json_buf o = {0};
	assert_int_equal(pn_json_dataset(&o, c.d, c.len), 0);
	assert_int_equal(pn_json_put(&o, "", 1), 0);
	const char *fl = strstr(o.data, "\"FL\",\"Value\":[") + 14, *fdv = strstr(o.data, "\"FD\",\"Value\":[") + 14;
	assert_true(strtof(fl, NULL) == w);
	assert_true(strtod(fdv, NULL) == v);
	pn_json_buf_free(&o);
	free(c.d);
}

/* What dcmtk reads otherwise is left to dcmtk. */
static void refuses_what_dcmtk_reads_otherwise(void **state)
{
	(void)state;
	static const struct {
		const char *what;
		unsigned char bytes[40];
		size_t len;
	} cases[] = {
	    {"a non-standard VR", {0x10, 0, 0x10, 0, 'X', 'X', 2, 0, 'A', 'B'}, 10},
	    {"tags out of order", {0x10, 0, 0x20, 0, 'L', 'O', 0, 0, 0x10, 0, 0x10, 0, 'P', 'N', 0, 0}, 16},
	    {"a repeated tag", {0x10, 0, 0x10, 0, 'P', 'N', 0, 0, 0x10, 0, 0x10, 0, 'P', 'N', 0, 0}, 16},
	    {"an undefined length", {0x08, 0, 0x15, 0x11, 'S', 'Q', 0, 0, 0xff, 0xff, 0xff, 0xff}, 12},
	    {"a value past the end", {0x10, 0, 0x10, 0, 'P', 'N', 9, 0, 'A'}, 9},
	    {"an item outside a sequence", {0xfe, 0xff, 0, 0xe0, 0, 0, 0, 0}, 8},
	    {"something else in a sequence",
	     {0x08, 0, 0x15, 0x11, 'S', 'Q', 0, 0, 8, 0, 0, 0, 0x10, 0, 0x10, 0, 'P', 'N', 0, 0},
	     20},
	    {"an item past its sequence",
	     {0x08, 0, 0x15, 0x11, 'S', 'Q', 0, 0, 8, 0, 0, 0, 0xfe, 0xff, 0, 0xe0, 4, 0, 0, 0},
	     20},
	    {"an OW VOI LUT Sequence", {0x28, 0, 0x10, 0x30, 'O', 'W', 0, 0, 0, 0, 0, 0}, 12},
	    {"half a header", {0x10, 0, 0x10}, 3},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (pn_json_check(cases[i].bytes, cases[i].len) != -EBADMSG)
			fail_msg("took %s", cases[i].what);
	/* nesting: PN_JSON_MAX_DEPTH sequences are taken, one more is not */
	for (int depth = PN_JSON_MAX_DEPTH; depth <= PN_JSON_MAX_DEPTH + 1; depth++) {
		bb cur = {0};
		el_str(&cur, TAG(0x0010, 0x0010), "PN", "X");
		for (int d = 0; d < depth; d++) {
			bb it = {0}, next = {0};
			item(&it, &cur);
			el(&next, TAG(0x0008, 0x1110), "SQ", it.d, it.len);
			free(it.d);
			free(cur.d);
			cur = next;
		}
		assert_int_equal(pn_json_check(cur.d, cur.len), depth <= PN_JSON_MAX_DEPTH ? 0 : -EBADMSG);
		free(cur.d);
	}
}

/* --- random datasets ------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return n ? (uint32_t)(rng_state % n) : 0;
}

static const char *const frags[] = {
    "",
    " ",
    "  ",
    "\\",
    "^",
    "=",
    "ABC",
    "Doe",
    "john",
    "12",
    "+12",
    "-0",
    "007",
    "2147483647",
    "2147483648",
    "-2147483648",
    "1e5",
    "1.5",
    "5.",
    ".5",
    "-.5",
    "0e5",
    "00.e5",
    "1E-3",
    "\"",
    "\t",
    "\n",
    "\x01",
    "\x1f",
    "\x7f",
    "\0",
    "\xc3\xa9",
    "\xe5\xb1\xb1\xe7\x94\xb0",
    "\xff",
    "\xc3",
    "\xed\xa0\x80",
    "1.2.840",
    " 1.2 ",
    "\xe2\x82\xac",
    "20240101",
    "101500.123",
    "+0100",
    "0",
    "1234567890123",
    "-",
    "+",
    "e",
    ".",
};

static const char *const all_vrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
                                      "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST",
                                      "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};

/* Tags some of which dcmtk reads into classes of their own. */
static const uint32_t tag_pool[] = {
    TAG(0x0008, 0x0000), TAG(0x0008, 0x0008), TAG(0x0008, 0x0018), TAG(0x0008, 0x0020), TAG(0x0008, 0x0050),
    TAG(0x0008, 0x1110), TAG(0x0009, 0x0010), TAG(0x0009, 0x1001), TAG(0x0010, 0x0010), TAG(0x0018, 0x0050),
    TAG(0x0020, 0x0013), TAG(0x0028, 0x0010), TAG(0x0028, 0x0106), TAG(0x0028, 0x1050), TAG(0x0028, 0x3006),
    TAG(0x0040, 0xA730), TAG(0x0004, 0x1200), TAG(0x6000, 0x3000), TAG(0x7FE0, 0x0010), TAG(0xFFFA, 0xFFFA),
    TAG(0xFFFC, 0xFFFC), TAG(0x0002, 0x0010),
};

/* Clean: no bytes that are not UTF-8, binary values of whole numbers:
 * dcmtk's text is JSON, so every dataset is compared. */
static bool clean;

static void random_value(bb *v, const char *vr, int depth);

static void random_dataset(bb *out, int depth, bool top)
{
	uint32_t tags[12];
	size_t n = rnd(top ? 12 : 6);
	for (size_t i = 0; i < n; i++)
		tags[i] =
		    rnd(3) ? tag_pool[rnd(sizeof tag_pool / sizeof tag_pool[0])] : TAG(0x0008 + rnd(0x40), rnd(0x2000));
	/* sorted, unique, no Specific Character Set at the top (dcmtk's
	 * writer removes it there) */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && tags[j - 1] > tags[j]; j--) {
			uint32_t x = tags[j];
			tags[j] = tags[j - 1];
			tags[j - 1] = x;
		}
	for (size_t i = 0; i < n; i++) {
		if ((i > 0 && tags[i] == tags[i - 1]) || tags[i] == TAG(0x0008, 0x0005))
			continue;
		const char *vr = all_vrs[rnd(sizeof all_vrs / sizeof all_vrs[0])];
		if (!strcmp(vr, "SQ") && depth >= 3)
			vr = "LO";
		bb v = {0};
		random_value(&v, vr, depth);
		if (!pn_evr_long_vr(vr) && v.len > 0xffff)
			v.len = 0xffff;
		el(out, tags[i], vr, v.d, v.len);
		free(v.d);
	}
}

static void random_value(bb *v, const char *vr, int depth)
{
	if (!strcmp(vr, "SQ")) {
		for (uint32_t i = rnd(4); i > 0; i--) {
			bb it = {0};
			random_dataset(&it, depth + 1, false);
			item(v, &it);
			free(it.d);
		}
		return;
	}
	bool binary = strchr("OFSUA", vr[0]) && strcmp(vr, "SH") && strcmp(vr, "ST") && strcmp(vr, "UC") &&
	              strcmp(vr, "UI") && strcmp(vr, "UR") && strcmp(vr, "UT") && strcmp(vr, "AE") && strcmp(vr, "AS");
	if (binary) {
		uint32_t n = rnd(5) == 0 && !clean ? rnd(7) : 8 * rnd(4);
		for (uint32_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)rnd(256);
			bb_put(v, &c, 1);
		}
		if (vr[0] == 'F') /* no NaN nor infinity: dcmtk writes them as no JSON */
			for (size_t i = 0; i + 3 < v->len; i++)
				v->d[i] &= 0x3f;
		return;
	}
	for (uint32_t i = rnd(6); i > 0; i--) {
		const char *f = frags[rnd(sizeof frags / sizeof frags[0])];
		if (clean && (f[0] == '\xff' || f[0] == '\xc3' || f[0] == '\xed' || strcmp(f, "5.") == 0 ||
		              strcmp(f, "0e5") == 0 || strcmp(f, "00.e5") == 0))
			continue;
		bb_put(v, f, *f ? strlen(f) : (rnd(2) ? 1 : 0)); /* "" sometimes a NUL */
	}
	if (rnd(2) && (v->len & 1))
		bb_put(v, !strcmp(vr, "UI") ? "\0" : " ", 1);
}

static void random_blobs_as_dcmtk(void **state)
{
	(void)state;
	for (int pass = 0; pass < 2; pass++) {
		clean = pass == 1;
		tally t = {0};
		for (int i = 0; i < 30000; i++) {
			bb b = {0};
			random_dataset(&b, 0, true);
			compare_blob(&b, &t);
			free(b.d);
		}
		printf("random datasets%s: %u the same as dcmtk's, %u valid where dcmtk's is not JSON, %u left "
		       "to dcmtk\n",
		       clean ? " (clean)" : "", t.compared, t.ours_only, t.refused);
		assert_true(t.compared > (clean ? 29000u : 15000u));
	}
	clean = false;
}

/* --- whole QIDO-RS responses ---------------------------------------------- */

typedef struct {
	pn_dcm_buf blobs[PN_LEVELS];
} stored;

/* A stored instance: its attributes split into level blobs as the store
 * path does. */
static void store(stored *st, const bb *instance)
{
	pn_dcm_ds *ds = NULL;
	assert_int_equal(pn_dcm_ds_load_buffer(instance->d, instance->len, &ds), 0);
	assert_int_equal(pn_dcm_ds_encode_levels(ds, pn_attr_level, 1024, st->blobs), 0);
	pn_dcm_ds_free(ds);
}

static void stored_free(stored *st)
{
	for (int l = 0; l < PN_LEVELS; l++)
		free(st->blobs[l].data);
}

static void realistic_instance(bb *b, bool nasty)
{
	bb code = {0}, seq = {0};
	el_str(&code, TAG(0x0008, 0x0100), "SH", "T-D4000");
	el_str(&code, TAG(0x0008, 0x0104), "LO", nasty ? "Abdo\"men\\ \x01" : "Abdomen");
	item(&seq, &code);
	el_str(b, TAG(0x0008, 0x0005), "CS", "ISO_IR 192");
	el_str(b, TAG(0x0008, 0x0008), "CS", "ORIGINAL\\PRIMARY\\AXIAL ");
	el_str(b, TAG(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.2");
	el_str(b, TAG(0x0008, 0x0018), "UI", "1.2.3.4.5.6.7");
	el_str(b, TAG(0x0008, 0x0020), "DA", "20240131");
	el_str(b, TAG(0x0008, 0x0030), "TM", "101500");
	el_str(b, TAG(0x0008, 0x0050), "SH", nasty ? "ACC \xff" : "ACC12 ");
	el_str(b, TAG(0x0008, 0x0060), "CS", "CT");
	el_str(b, TAG(0x0008, 0x0090), "PN", nasty ? "^^^^" : "REF^DOC");
	el_str(b, TAG(0x0008, 0x1030), "LO", nasty ? "M\xc3\xbcller \xe5\xb1\xb1" : "CHEST");
	el(b, TAG(0x0008, 0x1032), "SQ", seq.d, seq.len);
	el_str(b, TAG(0x0008, 0x103E), "LO", "AXIAL 5mm");
	el_str(b, TAG(0x0008, 0x1190), "UR", "http://elsewhere/x ");
	el_str(b, TAG(0x0010, 0x0010), "PN",
	       nasty ? "Yamada^Tarou=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e" : "SMITH^JOHN");
	el_str(b, TAG(0x0010, 0x0020), "LO", "PID-1 ");
	el_str(b, TAG(0x0010, 0x0030), "DA", "19600101");
	el_str(b, TAG(0x0010, 0x0040), "CS", "M ");
	el_str(b, TAG(0x0018, 0x0050), "DS", nasty ? "5.\\.5" : "2.5 ");
	el_str(b, TAG(0x0020, 0x000D), "UI", "1.2.3.4");
	el_str(b, TAG(0x0020, 0x000E), "UI", "1.2.3.4.5");
	el_str(b, TAG(0x0020, 0x0010), "SH", "S1");
	el_str(b, TAG(0x0020, 0x0011), "IS", "3 ");
	el_str(b, TAG(0x0020, 0x0013), "IS", "+017");
	el(b, TAG(0x0028, 0x0010), "US", "\x00\x02", 2);
	el(b, TAG(0x0028, 0x0011), "US", "\x00\x02", 2);
	el(b, TAG(0x0029, 0x1010), "OB", "\x01\x02\x03\x04", 4);
	free(code.d);
	free(seq.d);
}

/* An identifier as QIDO-RS builds it: the level, Specific Character Set,
 * keys (tag, value). */
static pn_query *qido_query(const char *level, const uint32_t *tags, const char *const *values, size_t n)
{
	pn_dcm_ds *id = pn_web_identifier(level);
	assert_non_null(id);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(pn_dcm_ds_put(id, tags[i], values ? values[i] : ""), 0);
	pn_query *q = NULL;
	char why[256] = "";
	if (pn_web_query(id, true, &q, why, sizeof why) != 0)
		fail_msg("query refused: %s", why);
	return q;
}

/* Both ways for one row; returns 1 when the direct way declined. */
static int compare_match(const pn_query *q, const stored *st, bool all, const char *base)
{
	pn_find_row row;
	memset(&row, 0, sizeof row);
	for (int l = 0; l <= q->level; l++) {
		row.attrs[l].data = st->blobs[l].data;
		row.attrs[l].len = st->blobs[l].len;
	}
	for (int c = 0; c < PN_FIND_C_COUNT; c++)
		row.counts[c] = c == 4 ? -1 : 3 + c;
	row.modalities = "CT\\MR";
	row.sop_classes = "1.2.840.10008.5.1.4.1.1.2";
	pn_level_blob lbs[PN_LEVELS];
	pn_level_blob *ptrs[PN_LEVELS] = {0};
	pn_dcm_ds *levels[PN_LEVELS] = {0};
	memset(lbs, 0, sizeof lbs);
	for (int l = 0; l <= q->level; l++)
		if ((q->need_levels & (1u << l)) || all) {
			assert_int_equal(pn_level_blob_set(&lbs[l], &row.attrs[l]), 0);
			ptrs[l] = &lbs[l];
		}
	pn_web_scratch sc;
	memset(&sc, 0, sizeof sc);
	pn_json_buf ours = {0};
	int rc = pn_web_match_json(&sc, q, &row, ptrs, all, "PACSNODE", base, &ours);
	assert_true(rc == 0 || rc == 1);
	for (int l = 0; l < PN_LEVELS; l++)
		levels[l] = ptrs[l] ? pn_level_blob_ds(&lbs[l], l) : NULL;
	pn_dcm_ds *rsp = NULL;
	assert_int_equal(pn_web_match_ds(q, &row, levels, all, "PACSNODE", base, &rsp), 0);
	pn_dcm_buf theirs = {0};
	int wr = pn_dcm_ds_write_json(rsp, &theirs);
	pn_dcm_ds_free(rsp);
	if (rc == 0) {
		const char *bad = pn_json_check_text(ours.data, ours.len);
		if (bad)
			fail_msg("not JSON (%s): %.*s", bad, (int)ours.len, ours.data);
		char why[200];
		if (wr == 0 && !pn_json_check_text(theirs.data, theirs.len) &&
		    !same_json(ours.data, ours.len, theirs.data, theirs.len, why, sizeof why))
			fail_msg("%s\n ours:  %.*s\n dcmtk: %.*s", why, (int)ours.len, ours.data, (int)theirs.len,
			         (char *)theirs.data);
	}
	free(theirs.data);
	pn_json_buf_free(&ours);
	pn_web_scratch_free(&sc);
	for (int l = 0; l < PN_LEVELS; l++)
		pn_level_blob_clear(&lbs[l]);
	return rc;
}

static const uint32_t study_keys[] = {
    TAG(0x0008, 0x0020), TAG(0x0008, 0x0030), TAG(0x0008, 0x0050), TAG(0x0008, 0x0056), TAG(0x0008, 0x0061),
    TAG(0x0008, 0x0090), TAG(0x0008, 0x0201), TAG(0x0008, 0x1030), TAG(0x0010, 0x0010), TAG(0x0010, 0x0020),
    TAG(0x0010, 0x0021), TAG(0x0010, 0x0030), TAG(0x0010, 0x0040), TAG(0x0020, 0x000D), TAG(0x0020, 0x0010),
    TAG(0x0020, 0x1206), TAG(0x0020, 0x1208),
};

static void qido_responses_as_dcmtk(void **state)
{
	(void)state;
	for (int nasty = 0; nasty < 2; nasty++) {
		bb inst = {0};
		realistic_instance(&inst, nasty);
		stored st;
		store(&st, &inst);
		pn_query *q = qido_query("STUDY", study_keys, NULL, sizeof study_keys / sizeof study_keys[0]);
		for (int all = 0; all < 2; all++) {
			assert_int_equal(compare_match(q, &st, all, "http://h:1/dicomweb"), 0);
			assert_int_equal(compare_match(q, &st, all, NULL), 0);
		}
		pn_query_free(q);
		/* series and instances across studies, with sequences, a key
		 * of a level below, an unknown attribute and Retrieve AE asked */
		const uint32_t se[] = {TAG(0x0008, 0x0054), TAG(0x0008, 0x0060), TAG(0x0008, 0x1032),
		                       TAG(0x0008, 0x103E), TAG(0x0020, 0x000D), TAG(0x0020, 0x000E),
		                       TAG(0x0020, 0x0013), TAG(0x0020, 0x1209), TAG(0x0040, 0x0244)};
		const char *const sev[] = {"", "CT", "", "", "1.2.3.4", "", "", "", ""};
		q = qido_query("SERIES", se, sev, sizeof se / sizeof se[0]);
		for (int all = 0; all < 2; all++)
			assert_int_equal(compare_match(q, &st, all, "http://h:1/dicomweb"), 0);
		pn_query_free(q);
		const uint32_t im[] = {TAG(0x0008, 0x0016), TAG(0x0008, 0x0018), TAG(0x0008, 0x1032),
		                       TAG(0x0020, 0x000D), TAG(0x0020, 0x000E), TAG(0x0020, 0x0013),
		                       TAG(0x0028, 0x0010), TAG(0x0028, 0x0100)};
		q = qido_query("IMAGE", im, NULL, sizeof im / sizeof im[0]);
		for (int all = 0; all < 2; all++) {
			assert_int_equal(compare_match(q, &st, all, "http://h:1/dicomweb"), 0);
			assert_int_equal(compare_match(q, &st, all, ""), 0);
		}
		pn_query_free(q);
		stored_free(&st);
		free(inst.d);
	}
}

/* A UID the URL would take only as dcmtk reads it: the general way. */
static void odd_uid_goes_the_general_way(void **state)
{
	(void)state;
	bb inst = {0};
	el_str(&inst, TAG(0x0010, 0x0010), "PN", "A");
	el_str(&inst, TAG(0x0020, 0x000D), "UI", "1.2 ");
	stored st;
	store(&st, &inst);
	pn_query *q = qido_query("STUDY", study_keys, NULL, sizeof study_keys / sizeof study_keys[0]);
	assert_int_equal(compare_match(q, &st, false, "http://h:1/dicomweb"), 1);
	assert_int_equal(compare_match(q, &st, false, NULL), 0);
	pn_query_free(q);
	stored_free(&st);
	free(inst.d);
}

static void random_instances_as_dcmtk(void **state)
{
	(void)state;
	unsigned direct = 0, general = 0;
	for (int i = 0; i < 3000; i++) {
		/* random attributes of every level, as a stored instance */
		bb extra = {0};
		random_dataset(&extra, 1, true);
		pn_dcm_ds *b = NULL;
		if (pn_dcm_ds_load_buffer(extra.d, extra.len, &b) == 0) {
			stored st;
			if (pn_dcm_ds_encode_levels(b, pn_attr_level, 1024, st.blobs) < 0) {
				/* not every random dataset can be written */
				pn_dcm_ds_free(b);
				free(extra.d);
				continue;
			}
			const char *levels[] = {"STUDY", "SERIES", "IMAGE"};
			pn_query *q =
			    qido_query(levels[i % 3], study_keys, NULL, sizeof study_keys / sizeof study_keys[0]);
			int rc = compare_match(q, &st, true, "http://h:1/dicomweb");
			rc == 0 ? direct++ : general++;
			pn_query_free(q);
			stored_free(&st);
		}
		pn_dcm_ds_free(b);
		free(extra.d);
	}
	printf("random instances: %u direct, %u the general way\n", direct, general);
	assert_true(direct > 1000);
}

/* QIDO-RS's keywords, from the dictionary index (public before repeating
 * before private, as dcmtk's own lookup). */
static void keywords(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		uint32_t tag;
	} known[] = {
	    {"PatientName", TAG(0x0010, 0x0010)},
	    {"StudyInstanceUID", TAG(0x0020, 0x000D)},
	    {"OverlayData", TAG(0x6000, 0x3000)},
	    {"SmallestImagePixelValue", TAG(0x0028, 0x0106)},
	    {"ReferencedImageSequence", TAG(0x0008, 0x1140)},
	    {"PixelData", TAG(0x7FE0, 0x0010)},
	    {"ModalitiesInStudy", TAG(0x0008, 0x0061)},
	    {"RetrieveURL", TAG(0x0008, 0x1190)},
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		uint32_t tag = 0;
		assert_int_equal(pn_dcm_tag_from_keyword(known[i].name, &tag), 0);
		assert_int_equal(tag, known[i].tag);
	}
	const char *unknown[] = {"patientname", "Nope", "", "Patient Name", "0010,0010", "PatientName\x01"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		uint32_t tag = 0;
		assert_int_equal(pn_dcm_tag_from_keyword(unknown[i], &tag), -ENOENT);
	}
}

static void silent(int level, const char *msg)
{
	(void)level;
	(void)msg;
}

int main(void)
{
	pn_dcm_init(silent, 0);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_vr_as_dcmtk),
	    cmocka_unit_test(sequences_nested),
	    cmocka_unit_test(valid_where_dcmtk_is_not),
	    cmocka_unit_test(refuses_what_dcmtk_reads_otherwise),
	    cmocka_unit_test(random_blobs_as_dcmtk),
	    cmocka_unit_test(qido_responses_as_dcmtk),
	    cmocka_unit_test(odd_uid_goes_the_general_way),
	    cmocka_unit_test(random_instances_as_dcmtk),
	    cmocka_unit_test(keywords),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
