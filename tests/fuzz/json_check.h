/* A strict JSON (RFC 8259) check for what the DICOM JSON writer makes, for
 * its fuzz target and unit test: one value, nothing after it, strings of
 * valid UTF-8 with only JSON's escapes and no raw control character,
 * numbers in JSON's grammar, nesting bounded. Returns NULL or what is
 * wrong. */
#ifndef PN_JSON_CHECK_H
#define PN_JSON_CHECK_H

#include <stddef.h>
#include <string.h>

typedef struct {
	const unsigned char *p, *end;
	const char *bad;
} pn_jc;

static void pn_jc_ws(pn_jc *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int pn_jc_fail(pn_jc *c, const char *why)
{
	if (!c->bad)
		c->bad = why;
	return -1;
}

static int pn_jc_hex(unsigned char h)
{
	return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
}

static int pn_jc_string(pn_jc *c)
{
	c->p++; /* the opening quote */
	while (c->p < c->end) {
		unsigned char ch = *c->p;
		if (ch == '"') {
			c->p++;
			return 0;
		}
		if (ch < 0x20)
			return pn_jc_fail(c, "a raw control character in a string");
		if (ch == '\\') {
			if (c->end - c->p < 2)
				return pn_jc_fail(c, "a string cut after '\\'");
			unsigned char e = c->p[1];
			if (e == 'u') {
				if (c->end - c->p < 6 || !pn_jc_hex(c->p[2]) || !pn_jc_hex(c->p[3]) ||
				    !pn_jc_hex(c->p[4]) || !pn_jc_hex(c->p[5]))
					return pn_jc_fail(c, "a bad \\u escape");
				c->p += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", e) || e == 0)
				return pn_jc_fail(c, "an unknown escape");
			c->p += 2;
			continue;
		}
		size_t len = ch < 0x80                  ? 1
		             : ch >= 0xC2 && ch <= 0xDF ? 2
		             : ch >= 0xE0 && ch <= 0xEF ? 3
		             : ch >= 0xF0 && ch <= 0xF4 ? 4
		                                        : 0;
		if (len == 0 || (size_t)(c->end - c->p) < len)
			return pn_jc_fail(c, "invalid UTF-8");
		for (size_t k = 1; k < len; k++)
			if ((c->p[k] & 0xC0) != 0x80)
				return pn_jc_fail(c, "invalid UTF-8");
		if ((ch == 0xE0 && c->p[1] < 0xA0) || (ch == 0xED && c->p[1] >= 0xA0) ||
		    (ch == 0xF0 && c->p[1] < 0x90) || (ch == 0xF4 && c->p[1] >= 0x90))
			return pn_jc_fail(c, "an overlong form, a surrogate or beyond U+10FFFF");
		c->p += len;
	}
	return pn_jc_fail(c, "an unterminated string");
}

static int pn_jc_digits(pn_jc *c)
{
	const unsigned char *s = c->p;
	while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		c->p++;
	return c->p > s ? 0 : -1;
}

static int pn_jc_number(pn_jc *c)
{
	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p < c->end && *c->p == '0')
		c->p++;
	else if (pn_jc_digits(c) < 0)
		return pn_jc_fail(c, "a number without digits");
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (pn_jc_digits(c) < 0)
			return pn_jc_fail(c, "no digits after a decimal point");
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (pn_jc_digits(c) < 0)
			return pn_jc_fail(c, "no digits in an exponent");
	}
	if (c->p < c->end && ((*c->p >= '0' && *c->p <= '9') || *c->p == '.'))
		return pn_jc_fail(c, "a number with leading zeros");
	return 0;
}

static int pn_jc_value(pn_jc *c, int depth);

static int pn_jc_seq(pn_jc *c, int depth, unsigned char close, int keyed)
{
	c->p++;
	pn_jc_ws(c);
	if (c->p < c->end && *c->p == close) {
		c->p++;
		return 0;
	}
	for (;;) {
		pn_jc_ws(c);
		if (keyed) {
			if (c->p >= c->end || *c->p != '"')
				return pn_jc_fail(c, "an object member without a name");
			if (pn_jc_string(c) < 0)
				return -1;
			pn_jc_ws(c);
			if (c->p >= c->end || *c->p != ':')
				return pn_jc_fail(c, "no ':' after a member name");
			c->p++;
		}
		if (pn_jc_value(c, depth + 1) < 0)
			return -1;
		pn_jc_ws(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		if (c->p < c->end && *c->p == close) {
			c->p++;
			return 0;
		}
		return pn_jc_fail(c, keyed ? "an object not closed" : "an array not closed");
	}
}

static int pn_jc_value(pn_jc *c, int depth)
{
	if (depth > 200)
		return pn_jc_fail(c, "nested too deep");
	pn_jc_ws(c);
	if (c->p >= c->end)
		return pn_jc_fail(c, "a value missing");
	switch (*c->p) {
	case '{':
		return pn_jc_seq(c, depth, '}', 1);
	case '[':
		return pn_jc_seq(c, depth, ']', 0);
	case '"':
		return pn_jc_string(c);
	case 't':
	case 'f':
	case 'n': {
		const char *w = *c->p == 't' ? "true" : *c->p == 'f' ? "false" : "null";
		size_t l = strlen(w);
		if ((size_t)(c->end - c->p) < l || memcmp(c->p, w, l) != 0)
			return pn_jc_fail(c, "an unknown word");
		c->p += l;
		return 0;
	}
	default:
		return pn_jc_number(c);
	}
}

static const char *pn_json_check_text(const char *text, size_t len)
{
	pn_jc c = {(const unsigned char *)text, (const unsigned char *)text + len, NULL};
	if (pn_jc_value(&c, 0) == 0) {
		pn_jc_ws(&c);
		if (c.p != c.end)
			pn_jc_fail(&c, "text after the value");
	}
	return c.bad;
}

#endif
