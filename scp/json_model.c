/* The DICOM JSON model from explicit VR little endian bytes (json_model.h).
 * Each VR is written as dcmtk 3.6.7 writes it (dcmdata's writeJson of the
 * VR's class, getOFString's normalisation, DcmJsonFormat's escaping); the
 * comments name the dcmtk behaviour a rule follows. */
#include "json_model.h"

#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charset.h"
#include "evr.h"

#define TAG_VOI_LUT_SEQUENCE 0x00283010u

/* --- the buffer --------------------------------------------------------- */

int pn_json_grow(pn_json_buf *b, size_t more)
{
	if (b->oom)
		return -ENOMEM;
	if (b->cap - b->len >= more)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < more) {
		if (cap > SIZE_MAX / 2) {
			b->oom = true;
			return -ENOMEM;
		}
		cap *= 2;
	}
	char *d = realloc(b->data, cap);
	if (!d) {
		b->oom = true;
		return -ENOMEM;
	}
	b->data = d;
	b->cap = cap;
	return 0;
}

void pn_json_buf_free(pn_json_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

#define PUT_LIT(b, s) pn_json_put(b, s, sizeof(s) - 1)

static inline void put_char(pn_json_buf *b, char c)
{
	if ((b->oom || b->cap == b->len) && pn_json_grow(b, 1) < 0)
		return;
	b->data[b->len++] = c;
}

/* --- the VRs ------------------------------------------------------------ */

enum {
	K_STR,   /* byte and character strings, '\'-separated values */
	K_TEXT,  /* LT, ST, UT, UR: one value, '\' an ordinary character */
	K_PN,    /* person names: component groups */
	K_IS,    /* integer strings: numbers when they read as one */
	K_DS,    /* decimal strings: the same */
	K_AT,    /* attribute tags */
	K_INT,   /* SS US SL UL SV UV */
	K_FLOAT, /* FL FD */
	K_BIN,   /* OB OD OF OL OV OW UN: InlineBinary */
	K_SQ,
};

typedef struct {
	char vr[3];
	unsigned char kind;
	unsigned char width; /* K_INT, K_FLOAT: bytes per value */
	bool is_signed;      /* K_INT */
	const char *nonsig;  /* all of these only: the value is empty (NULL: only no bytes) */
	bool lead, trail;    /* padding removed from each value, as getOFString does */
	char pad;            /* the padding character (UI: NUL) */
} vr_info;

/* Each VR's class in dcmtk: its non-significant characters
 * (setNonSignificantChars) and its normalizeString() flags. AS is not
 * normalised at all. */
static const vr_info vrs[] = {
    {"AE", K_STR, 0, false, " \\", true, true, ' '},  {"AS", K_STR, 0, false, NULL, false, false, ' '},
    {"AT", K_AT, 4, false, NULL, false, false, 0},    {"CS", K_STR, 0, false, " \\", true, true, ' '},
    {"DA", K_STR, 0, false, "\\", false, true, ' '},  {"DS", K_DS, 0, false, " \\", true, true, ' '},
    {"DT", K_STR, 0, false, " \\", false, true, ' '}, {"FD", K_FLOAT, 8, true, NULL, false, false, 0},
    {"FL", K_FLOAT, 4, true, NULL, false, false, 0},  {"IS", K_IS, 0, false, " \\", true, true, ' '},
    {"LO", K_STR, 0, false, " \\", true, true, ' '},  {"LT", K_TEXT, 0, false, NULL, false, true, ' '},
    {"OB", K_BIN, 0, false, NULL, false, false, 0},   {"OD", K_BIN, 0, false, NULL, false, false, 0},
    {"OF", K_BIN, 0, false, NULL, false, false, 0},   {"OL", K_BIN, 0, false, NULL, false, false, 0},
    {"OV", K_BIN, 0, false, NULL, false, false, 0},   {"OW", K_BIN, 0, false, NULL, false, false, 0},
    {"PN", K_PN, 0, false, NULL, false, false, ' '},  {"SH", K_STR, 0, false, " \\", true, true, ' '},
    {"SL", K_INT, 4, true, NULL, false, false, 0},    {"SQ", K_SQ, 0, false, NULL, false, false, 0},
    {"SS", K_INT, 2, true, NULL, false, false, 0},    {"ST", K_TEXT, 0, false, NULL, false, true, ' '},
    {"SV", K_INT, 8, true, NULL, false, false, 0},    {"TM", K_STR, 0, false, "\\", false, true, ' '},
    {"UC", K_STR, 0, false, " \\", false, true, ' '}, {"UI", K_STR, 0, false, "\\", false, true, '\0'},
    {"UL", K_INT, 4, false, NULL, false, false, 0},   {"UN", K_BIN, 0, false, NULL, false, false, 0},
    {"UR", K_TEXT, 0, false, NULL, false, true, ' '}, {"US", K_INT, 2, false, NULL, false, false, 0},
    {"UT", K_TEXT, 0, false, NULL, false, true, ' '}, {"UV", K_INT, 8, false, NULL, false, false, 0},
};

static inline unsigned vr_code(const char vr[2])
{
	return (unsigned)(unsigned char)vr[0] << 8 | (unsigned char)vr[1];
}

/* vrs[] is sorted by name */
static const vr_info *vr_lookup(const char vr[2])
{
	unsigned code = vr_code(vr);
	size_t lo = 0, hi = sizeof vrs / sizeof vrs[0];
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		unsigned c = vr_code(vrs[mid].vr);
		if (c == code)
			return &vrs[mid];
		if (c < code)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* --- strings ------------------------------------------------------------ */

/* Bytes copied as they are into a JSON string: 0; escaped: 1; the start
 * of a UTF-8 sequence to check: 2. */
/* clang-format off */
static const unsigned char byte_class[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 00 */
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 10 */
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 20 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 30 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 40 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 50 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 60 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 70 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 80 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 90 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* A0 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* B0 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* C0 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* D0 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* E0 */
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* F0 */
};
/* clang-format on */

/* A JSON string's content: dcmtk's escapeControlCharacters, plus U+FFFD for
 * bytes that are not UTF-8 (a JSON text must be UTF-8). */
static void put_escaped(pn_json_buf *b, const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t from = 0; /* the start of the bytes that go as they are */
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		if (byte_class[c] == 0) {
			i++;
			continue;
		}
		size_t seq = byte_class[c] == 2 ? pn_utf8_sequence(s + i, n - i) : 0;
		if (seq > 0) {
			i += seq;
			continue;
		}
		pn_json_put(b, s + from, i - from);
		/* JSON's short escapes, then \u00XX for the other controls */
		static const char shorts[] = "\"\\\b\n\r\t\f", letters[] = "\"\\bnrtf";
		const char *sh = c != 0 ? memchr(shorts, c, sizeof shorts - 1) : NULL;
		char e[6] = {'\\', 0};
		size_t elen = 2;
		if (sh) {
			e[1] = letters[sh - shorts];
		} else if (c >= 0x80) {
			memcpy(e, "\xEF\xBF\xBD", 3);
			elen = 3;
		} else {
			memcpy(e, "\\u00", 4);
			e[4] = hex[c >> 4];
			e[5] = hex[c & 15];
			elen = 6;
		}
		pn_json_put(b, e, elen);
		from = ++i;
	}
	pn_json_put(b, s + from, n - from);
}

/* printValueString: "..." or null when empty. */
static void put_string(pn_json_buf *b, const unsigned char *s, size_t n)
{
	if (n == 0) {
		PUT_LIT(b, "null");
		return;
	}
	put_char(b, '"');
	put_escaped(b, s, n);
	put_char(b, '"');
}

/* normalizeString() on one value: leading padding, then trailing padding;
 * when the trailing run stops at a space (UI, padded with NULs), that space
 * goes too, and a value of padding only keeps its first byte unless it is
 * a space. */
static void trim(const vr_info *vi, const unsigned char **s, size_t *n)
{
	if (*n == 0)
		return;
	if (vi->lead)
		while (*n > 0 && (*s)[0] == (unsigned char)vi->pad) {
			(*s)++;
			(*n)--;
		}
	if (vi->trail && *n > 0) {
		size_t off = *n - 1;
		while (off > 0 && (*s)[off] == (unsigned char)vi->pad)
			off--;
		if (off != *n - 1)
			*n = (*s)[off] == ' ' ? off : off + 1;
	}
}

/* isEmpty(): no bytes, or only non-significant ones. */
static bool empty_value(const vr_info *vi, const unsigned char *v, size_t n)
{
	if (!vi->nonsig)
		return n == 0;
	bool space = vi->nonsig[0] == ' '; /* " \\" or "\\" */
	for (size_t i = 0; i < n; i++)
		if (v[i] != '\\' && !(space && v[i] == ' '))
			return false;
	return true;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* DcmIntegerString: a value that passes checkStringValue (at most 12
 * characters, ASCII, an optional sign, digits, within a signed 32-bit
 * integer) is a number, with '+' and leading zeros dropped; anything else a
 * string. */
static void put_is(pn_json_buf *b, const unsigned char *s, size_t n)
{
	if (n == 0) {
		PUT_LIT(b, "null");
		return;
	}
	size_t i = 0;
	bool minus = false;
	if (n <= 12 && (s[0] == '+' || s[0] == '-')) {
		minus = s[0] == '-';
		i = 1;
	}
	size_t first = i;
	bool ok = n <= 12 && i < n;
	for (size_t k = i; ok && k < n; k++)
		ok = is_digit(s[k]);
	if (ok) {
		while (first < n && s[first] == '0')
			first++;
		size_t digits = n - first;
		const char *max = minus ? "2147483648" : "2147483647";
		ok = digits < 10 || (digits == 10 && memcmp(s + first, max, 10) <= 0);
	}
	if (!ok) {
		put_string(b, s, n);
		return;
	}
	if (minus)
		put_char(b, '-');
	if (first == n)
		put_char(b, '0');
	else
		pn_json_put(b, s + first, n - first);
}

/* Whether s is a DS as dcmtk's scanner reads one: [+-]? digits with at
 * most one '.', at least one digit, then [Ee][+-]?digits. */
static bool ds_syntax(const unsigned char *s, size_t n)
{
	size_t i = 0, digits = 0;
	if (i < n && (s[i] == '+' || s[i] == '-'))
		i++;
	while (i < n && is_digit(s[i]))
		i++, digits++;
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && is_digit(s[i]))
			i++, digits++;
	}
	if (digits == 0)
		return false;
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		size_t e = 0;
		while (i < n && is_digit(s[i]))
			i++, e++;
		if (e == 0)
			return false;
	}
	return i == n;
}

/* DcmDecimalString: as IS, at most 16 characters; the number as
 * normalizeDecimalString makes it ('+' dropped, leading zeros dropped, a
 * leading '.' given a 0), and made JSON where that is not: a mantissa of
 * zeros only before the exponent keeps one 0, a '.' without digits after it
 * goes. */
static void put_ds(pn_json_buf *b, const unsigned char *s, size_t n)
{
	if (n == 0) {
		PUT_LIT(b, "null");
		return;
	}
	if (n > 16 || !ds_syntax(s, n)) {
		put_string(b, s, n);
		return;
	}
	char t[20];
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] != '+')
			t[len++] = (char)s[i];
	size_t at = 0;
	if (len > 0 && t[0] == '-') {
		put_char(b, '-');
		at = 1;
	}
	size_t nz = at;
	while (nz < len && t[nz] == '0')
		nz++;
	if (nz == len) {
		put_char(b, '0');
		return;
	}
	if (t[nz] == '.' || t[nz] == 'e' || t[nz] == 'E')
		put_char(b, '0');
	for (size_t i = nz; i < len; i++) {
		if (t[i] == '.' && (i + 1 == len || !is_digit((unsigned char)t[i + 1])))
			continue;
		put_char(b, t[i]);
	}
}

/* Byte and character strings: one array element a '\'-separated value. */
static void put_strings(pn_json_buf *b, const vr_info *vi, const unsigned char *v, size_t n)
{
	if (empty_value(vi, v, n))
		return;
	PUT_LIT(b, ",\"Value\":[");
	size_t start = 0;
	for (size_t i = 0;; i++) {
		if (i < n && v[i] != '\\')
			continue;
		const unsigned char *c = v + start;
		size_t clen = i - start;
		trim(vi, &c, &clen);
		if (start > 0)
			put_char(b, ',');
		if (vi->kind == K_IS)
			put_is(b, c, clen);
		else if (vi->kind == K_DS)
			put_ds(b, c, clen);
		else
			put_string(b, c, clen);
		if (i == n)
			break;
		start = i + 1;
	}
	put_char(b, ']');
}

/* LT, ST, UT, UR: one value, the whole text. */
static void put_text(pn_json_buf *b, const vr_info *vi, const unsigned char *v, size_t n)
{
	if (n == 0)
		return;
	trim(vi, &v, &n);
	PUT_LIT(b, ",\"Value\":[");
	put_string(b, v, n);
	put_char(b, ']');
}

/* --- person names --------------------------------------------------------- */

/* DcmPersonName::writeJson's reading of a value: each '\'-separated name an
 * object of its component groups that hold a significant character (not a
 * delimiter, not a space), null for a name with none; components keep
 * their '^' up to the last significant one; a fourth group is left out; a
 * value with no significant character at all has no Value, unless a '\'
 * makes it a list of empty names. */
typedef struct {
	const unsigned char *it, *end;
	int group; /* 0 Alphabetic, 1 Ideographic, 2 Phonetic */
	unsigned carets;
	bool trailing_null;
} pn_lex;

static void lex_new_name(pn_lex *l)
{
	l->carets = 0;
	l->group = 0;
	l->trailing_null = true;
}

static void lex_new_group(pn_lex *l)
{
	if (l->group != 2) {
		l->carets = 0;
		l->group++;
		return;
	}
	/* a fourth group: up to the next delimiter, which the caller's step
	 * reaches */
	while (++l->it != l->end && *l->it != '\\' && *l->it != '=')
		;
	--l->it;
}

/* How far lex_next looks: for the next name (a '\\' starts one: there is a
 * name to write, null perhaps), within this name (a '\\' ends it) or within
 * this component group ('\\' and '=' end it). */
enum { TO_NAME, TO_GROUP, TO_COMPONENT };

/* To the next significant character, counting the carets and groups on
 * the way: whether there is one to write. */
static bool lex_next(pn_lex *l, int scope)
{
	for (; l->it != l->end; ++l->it) {
		unsigned char c = *l->it;
		if (c == '^') {
			l->carets++;
		} else if (c == '=') {
			if (scope == TO_COMPONENT)
				return false;
			lex_new_group(l);
		} else if (c == '\\') {
			if (scope == TO_COMPONENT)
				return false;
			if (scope == TO_GROUP)
				++l->it;
			lex_new_name(l);
			return scope == TO_NAME;
		} else if (c != ' ') {
			return true;
		}
	}
	return scope == TO_NAME && l->trailing_null;
}

static void lex_put_component(pn_json_buf *b, pn_lex *l)
{
	for (; l->carets; l->carets--)
		put_char(b, '^');
	const unsigned char *begin = l->it;
	while (++l->it != l->end && *l->it != '\\' && *l->it != '=' && *l->it != '^')
		;
	const unsigned char *last = l->it - 1;
	while (*last == ' ') /* *begin is significant: stops there at the latest */
		--last;
	/* dcmtk makes the component a C string first: it ends at a NUL */
	size_t n = (size_t)(last - begin) + 1;
	const unsigned char *nul = memchr(begin, 0, n);
	put_escaped(b, begin, nul ? (size_t)(nul - begin) : n);
}

static void lex_put_group(pn_json_buf *b, pn_lex *l)
{
	static const char *const names[] = {"\"Alphabetic\":\"", "\"Ideographic\":\"", "\"Phonetic\":\""};
	const char *name = names[l->group];
	pn_json_put(b, name, strlen(name));
	lex_put_component(b, l);
	while (lex_next(l, TO_COMPONENT))
		lex_put_component(b, l);
	put_char(b, '"');
}

static void lex_put_name(pn_json_buf *b, pn_lex *l)
{
	l->trailing_null = false;
	if (!lex_next(l, TO_GROUP)) {
		PUT_LIT(b, "null");
		return;
	}
	put_char(b, '{');
	lex_put_group(b, l);
	while (lex_next(l, TO_GROUP)) {
		put_char(b, ',');
		lex_put_group(b, l);
	}
	put_char(b, '}');
}

static void put_pn(pn_json_buf *b, const unsigned char *v, size_t n)
{
	pn_lex l = {v, v + n, 0, 0, false};
	if (!lex_next(&l, TO_NAME))
		return;
	PUT_LIT(b, ",\"Value\":[");
	lex_put_name(b, &l);
	while (lex_next(&l, TO_NAME)) {
		put_char(b, ',');
		lex_put_name(b, &l);
	}
	put_char(b, ']');
}

/* --- binary values ------------------------------------------------------- */

static uint64_t le(const unsigned char *p, unsigned width)
{
	uint64_t v = 0;
	for (unsigned i = width; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

/* SS US SL UL as printf writes them; SV UV the same within JSON's safe
 * integers (2^53 - 1), strings beyond. */
static void put_int(pn_json_buf *b, const vr_info *vi, const unsigned char *p)
{
	uint64_t u = le(p, vi->width);
	char t[32];
	int n;
	bool string = false;
	if (vi->is_signed) {
		int64_t s = vi->width == 2 ? (int16_t)u : vi->width == 4 ? (int32_t)u : (int64_t)u;
		n = snprintf(t, sizeof t, "%lld", (long long)s);
		string = s > 9007199254740991LL || s < -9007199254740991LL;
	} else {
		n = snprintf(t, sizeof t, "%llu", (unsigned long long)u);
		string = u > 9007199254740991ULL;
	}
	if (string)
		put_char(b, '"');
	pn_json_put(b, t, (size_t)n);
	if (string)
		put_char(b, '"');
}

/* FL and FD with as many digits as give the stored value back. */
static void put_float(pn_json_buf *b, const vr_info *vi, const unsigned char *p)
{
	double d;
	if (vi->width == 4) {
		uint32_t u = (uint32_t)le(p, 4);
		float f;
		memcpy(&f, &u, 4);
		d = f;
	} else {
		uint64_t u = le(p, 8);
		memcpy(&d, &u, 8);
	}
	if (isnan(d)) {
		PUT_LIT(b, "\"NaN\"");
		return;
	}
	if (isinf(d)) {
		if (d < 0)
			PUT_LIT(b, "\"-Infinity\"");
		else
			PUT_LIT(b, "\"Infinity\"");
		return;
	}
	char t[40];
	int n = snprintf(t, sizeof t, "%.*g", vi->width == 4 ? 9 : 17, d);
	for (int i = 0; i < n; i++)
		if (t[i] != '+') /* normalizeDecimalString: 1e+20 is 1e20 */
			put_char(b, t[i]);
}

/* A tag as JSON writes it: eight upper-case hex digits. */
static void tag_hex(char out[8], uint32_t tag)
{
	static const char hex[] = "0123456789ABCDEF";
	for (int i = 0; i < 8; i++)
		out[i] = hex[tag >> (28 - 4 * i) & 15];
}

/* AT: "GGGGEEEE" each. */
static void put_tag(pn_json_buf *b, const unsigned char *p)
{
	char t[10] = {'"', 0};
	tag_hex(t + 1, (uint32_t)pn_le16(p) << 16 | pn_le16(p + 2));
	t[9] = '"';
	pn_json_put(b, t, sizeof t);
}

/* The binary VRs with numbers (SS US SL UL SV UV FL FD) and AT: one array
 * element a value of `width` bytes; what is left over is not written. */
static void put_numbers(pn_json_buf *b, const vr_info *vi, const unsigned char *v, size_t n)
{
	size_t vm = n / vi->width;
	if (vm == 0)
		return;
	PUT_LIT(b, ",\"Value\":[");
	for (size_t i = 0; i < vm; i++) {
		if (i > 0)
			put_char(b, ',');
		if (vi->kind == K_INT)
			put_int(b, vi, v + i * vi->width);
		else if (vi->kind == K_FLOAT)
			put_float(b, vi, v + i * vi->width);
		else
			put_tag(b, v + i * vi->width);
	}
	put_char(b, ']');
}

/* InlineBinary: the bytes in base64. */
static void put_base64(pn_json_buf *b, const unsigned char *v, size_t n)
{
	if (n == 0)
		return;
	PUT_LIT(b, ",\"InlineBinary\":\"");
	const size_t chunk = 3 * 4096;
	for (size_t off = 0; off < n; off += chunk) {
		size_t m = n - off < chunk ? n - off : chunk;
		if (pn_json_grow(b, (m + 2) / 3 * 4 + 1) < 0)
			return;
		int w = EVP_EncodeBlock((unsigned char *)b->data + b->len, v + off, (int)m);
		b->len += (size_t)w;
	}
	put_char(b, '"');
}

/* --- datasets and sequences ---------------------------------------------- */

static int walk(pn_json_buf *b, const unsigned char *p, size_t n, int depth);

/* A sequence's items: b NULL only checks them. */
static int items(pn_json_buf *b, const unsigned char *p, size_t n, int depth)
{
	if (depth >= PN_JSON_MAX_DEPTH)
		return -EBADMSG;
	size_t off = 0;
	while (off < n) {
		uint32_t len;
		if (pn_evr_read_item(p + off, n - off, &len) < 0)
			return -EBADMSG;
		if (b) {
			if (off == 0)
				PUT_LIT(b, ",\"Value\":[");
			else
				put_char(b, ',');
		}
		int rc = walk(b, p + off + 8, len, depth + 1);
		if (rc < 0)
			return rc;
		off += 8 + (size_t)len;
	}
	if (b && n > 0)
		put_char(b, ']');
	return 0;
}

static int attr(pn_json_buf *b, uint32_t tag, const vr_info *vi, const unsigned char *v, size_t n, int depth)
{
	char h[] = "\"GGGGEEEE\":{\"vr\":\"XX\"";
	tag_hex(h + 1, tag);
	h[18] = vi->vr[0];
	h[19] = vi->vr[1];
	pn_json_put(b, h, sizeof h - 1);
	switch (vi->kind) {
	case K_STR:
	case K_IS:
	case K_DS:
		put_strings(b, vi, v, n);
		break;
	case K_TEXT:
		put_text(b, vi, v, n);
		break;
	case K_PN:
		put_pn(b, v, n);
		break;
	case K_AT:
	case K_INT:
	case K_FLOAT:
		put_numbers(b, vi, v, n);
		break;
	case K_BIN:
		put_base64(b, v, n);
		break;
	case K_SQ: {
		int rc = items(b, v, n, depth);
		if (rc < 0)
			return rc;
		break;
	}
	}
	put_char(b, '}');
	return b->oom ? -ENOMEM : 0;
}

/* What dcmtk reads otherwise, or refuses, in one element of a dataset or
 * item, its nested items included. */
static int check_elem(uint32_t tag, const vr_info *vi, const unsigned char *v, size_t n, int depth)
{
	if (tag >> 16 == 0xFFFE)
		return -EBADMSG; /* an item or a delimiter where an element belongs */
	/* dcmtk refuses an OB/OW VOI LUT Sequence with a length */
	if (tag == TAG_VOI_LUT_SEQUENCE && vi->vr[0] == 'O' && (vi->vr[1] == 'B' || vi->vr[1] == 'W'))
		return -EBADMSG;
	return vi->kind == K_SQ ? items(NULL, v, n, depth) : 0;
}

/* A dataset or an item: "{...}" into b, or (b NULL) only the checks of
 * pn_json_check. */
static int walk(pn_json_buf *b, const unsigned char *p, size_t n, int depth)
{
	if (b)
		put_char(b, '{');
	size_t off = 0;
	bool first = true, any = false;
	uint32_t last = 0;
	while (off < n) {
		pn_evr_elem el;
		/* an item or a delimiter where an element belongs, or a header
		 * or value past the end */
		if (n - off < 4 || pn_le16(p + off) == 0xFFFE || pn_evr_read(p + off, n - off, &el) < 0)
			return -EBADMSG;
		/* dcmtk keeps elements sorted and drops a repeated one */
		if (any && el.tag <= last)
			return -EBADMSG;
		const vr_info *vi = vr_lookup(el.vr);
		if (!vi)
			return -EBADMSG;
		const unsigned char *v = p + off + el.head;
		int rc = 0;
		if (!b) {
			rc = check_elem(el.tag, vi, v, el.len, depth);
		} else if ((el.tag & 0xffff) != 0) { /* group lengths are not written */
			if (!first)
				put_char(b, ',');
			rc = attr(b, el.tag, vi, v, el.len, depth);
			first = false;
		}
		if (rc < 0)
			return rc;
		last = el.tag;
		any = true;
		off += el.head + el.len;
	}
	if (b) {
		put_char(b, '}');
		return b->oom ? -ENOMEM : 0;
	}
	return 0;
}

int pn_json_check(const unsigned char *data, size_t len)
{
	return walk(NULL, data, len, 0);
}

int pn_json_check_elem(uint32_t tag, const char vr[2], const unsigned char *value, size_t len)
{
	const vr_info *vi = vr_lookup(vr);
	return vi ? check_elem(tag, vi, value, len, 0) : -EBADMSG;
}

int pn_json_attr(pn_json_buf *b, uint32_t tag, const char vr[2], const unsigned char *value, size_t len)
{
	const vr_info *vi = vr_lookup(vr);
	if (!vi)
		return -EBADMSG;
	return attr(b, tag, vi, value, len, 0);
}

int pn_json_dataset(pn_json_buf *b, const unsigned char *data, size_t len)
{
	return walk(b, data, len, 0);
}
