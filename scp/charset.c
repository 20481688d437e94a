#include "charset.h"

#include <errno.h>
#include <iconv.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* What a G0 or G1 code element decodes as. */
typedef enum {
	K_NONE,
	K_ASCII,
	K_JIS_ROMAN, /* JIS X 0201 Romaji: ASCII but for yen and overline */
	K_KATAKANA,  /* JIS X 0201 Katakana, G1, one byte */
	K_JISX0208,  /* G0, two 7-bit bytes: decoded as EUC-JP */
	K_JISX0212,  /* G0, two 7-bit bytes: EUC-JP with SS3 */
	K_SINGLE,    /* G1, one 8-bit byte, through iconv */
	K_DOUBLE,    /* G1, two 8-bit bytes, through iconv (EUC-KR, GB2312) */
} kind;

typedef struct {
	const char *term; /* without the "ISO 2022 " / "ISO_" prefix differences */
	kind g0, g1;
	const char *g1_iconv; /* for K_SINGLE and K_DOUBLE */
	const char *whole;    /* no code extensions: iconv the whole value */
} term_def;

static const term_def terms[] = {
    {"ISO_IR 6", K_ASCII, K_NONE, NULL, NULL},
    {"ISO_IR 100", K_ASCII, K_SINGLE, "ISO-8859-1", NULL},
    {"ISO_IR 101", K_ASCII, K_SINGLE, "ISO-8859-2", NULL},
    {"ISO_IR 109", K_ASCII, K_SINGLE, "ISO-8859-3", NULL},
    {"ISO_IR 110", K_ASCII, K_SINGLE, "ISO-8859-4", NULL},
    {"ISO_IR 144", K_ASCII, K_SINGLE, "ISO-8859-5", NULL},
    {"ISO_IR 127", K_ASCII, K_SINGLE, "ISO-8859-6", NULL},
    {"ISO_IR 126", K_ASCII, K_SINGLE, "ISO-8859-7", NULL},
    {"ISO_IR 138", K_ASCII, K_SINGLE, "ISO-8859-8", NULL},
    {"ISO_IR 148", K_ASCII, K_SINGLE, "ISO-8859-9", NULL},
    {"ISO_IR 203", K_ASCII, K_SINGLE, "ISO-8859-15", NULL},
    {"ISO_IR 166", K_ASCII, K_SINGLE, "TIS-620", NULL},
    {"ISO_IR 13", K_JIS_ROMAN, K_KATAKANA, NULL, NULL},
    {"ISO_IR 192", K_NONE, K_NONE, NULL, "UTF-8"},
    {"GB18030", K_NONE, K_NONE, NULL, "GB18030"},
    {"GBK", K_NONE, K_NONE, NULL, "GBK"},
    {"ISO 2022 IR 6", K_ASCII, K_NONE, NULL, NULL},
    {"ISO 2022 IR 100", K_ASCII, K_SINGLE, "ISO-8859-1", NULL},
    {"ISO 2022 IR 101", K_ASCII, K_SINGLE, "ISO-8859-2", NULL},
    {"ISO 2022 IR 109", K_ASCII, K_SINGLE, "ISO-8859-3", NULL},
    {"ISO 2022 IR 110", K_ASCII, K_SINGLE, "ISO-8859-4", NULL},
    {"ISO 2022 IR 144", K_ASCII, K_SINGLE, "ISO-8859-5", NULL},
    {"ISO 2022 IR 127", K_ASCII, K_SINGLE, "ISO-8859-6", NULL},
    {"ISO 2022 IR 126", K_ASCII, K_SINGLE, "ISO-8859-7", NULL},
    {"ISO 2022 IR 138", K_ASCII, K_SINGLE, "ISO-8859-8", NULL},
    {"ISO 2022 IR 148", K_ASCII, K_SINGLE, "ISO-8859-9", NULL},
    {"ISO 2022 IR 203", K_ASCII, K_SINGLE, "ISO-8859-15", NULL},
    {"ISO 2022 IR 166", K_ASCII, K_SINGLE, "TIS-620", NULL},
    {"ISO 2022 IR 13", K_JIS_ROMAN, K_KATAKANA, NULL, NULL},
    /* multi-byte sets are only reached by escape sequences */
    {"ISO 2022 IR 87", K_ASCII, K_NONE, NULL, NULL},
    {"ISO 2022 IR 159", K_ASCII, K_NONE, NULL, NULL},
    {"ISO 2022 IR 149", K_ASCII, K_NONE, NULL, NULL},
    {"ISO 2022 IR 58", K_ASCII, K_NONE, NULL, NULL},
};

#define MAX_ICONV 8

struct pn_charset {
	kind g0, g1;          /* initial state, restored at delimiters */
	const char *g1_iconv; /* initial G1 for K_SINGLE / K_DOUBLE */
	const char *whole;
	struct {
		const char *name;
		iconv_t cd;
	} cache[MAX_ICONV];
};

typedef struct {
	char *buf;
	size_t len, cap;
	bool failed; /* allocation */
	bool invalid;
} out_buf;

static void put(out_buf *o, const void *p, size_t n)
{
	if (o->failed)
		return;
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 64;
		while (cap < o->len + n + 1)
			cap *= 2;
		char *b = realloc(o->buf, cap);
		if (!b) {
			o->failed = true;
			return;
		}
		o->buf = b;
		o->cap = cap;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

static void put_codepoint(out_buf *o, unsigned cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	}
	put(o, u, n);
}

static void put_invalid(out_buf *o)
{
	put_codepoint(o, 0xfffd);
	o->invalid = true;
}

static iconv_t get_iconv(pn_charset *cs, const char *name)
{
	for (int i = 0; i < MAX_ICONV && cs->cache[i].name; i++)
		if (cs->cache[i].name == name)
			return cs->cache[i].cd;
	iconv_t cd = iconv_open("UTF-8", name);
	if (cd == (iconv_t)-1)
		return cd;
	for (int i = 0; i < MAX_ICONV; i++) {
		if (!cs->cache[i].name) {
			cs->cache[i].name = name;
			cs->cache[i].cd = cd;
			return cd;
		}
	}
	iconv_close(cd); /* cache full: cannot happen with our tables */
	return (iconv_t)-1;
}

/* Decodes `n` bytes in encoding `name`; undecodable bytes become U+FFFD. */
static void put_iconv(pn_charset *cs, out_buf *o, const char *name, const char *in, size_t n)
{
	iconv_t cd = get_iconv(cs, name);
	if (cd == (iconv_t)-1) {
		for (size_t i = 0; i < n; i++)
			put_invalid(o);
		return;
	}
	iconv(cd, NULL, NULL, NULL, NULL);
	char tmp[256];
	char *src = (char *)in;
	size_t left = n;
	while (left > 0) {
		char *dst = tmp;
		size_t room = sizeof(tmp);
		size_t r = iconv(cd, &src, &left, &dst, &room);
		put(o, tmp, (size_t)(dst - tmp));
		if (r == (size_t)-1 && errno != E2BIG) {
			/* EILSEQ or EINVAL (truncated): skip one byte */
			put_invalid(o);
			src++;
			left--;
			iconv(cd, NULL, NULL, NULL, NULL);
		}
	}
}

size_t pn_utf8_sequence(const unsigned char *s, size_t n)
{
	if (n == 0)
		return 0;
	unsigned c = s[0];
	size_t len;
	unsigned min;
	if (c < 0x80)
		return 1;
	else if (c >= 0xc2 && c <= 0xdf)
		len = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, min = 0x10000;
	else
		return 0;
	if (n < len)
		return 0;
	unsigned cp = c & (0xff >> (len + 1));
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* UTF-8 in, checked here: glibc's iconv lets the obsolete 5- and 6-byte
 * forms through. */
static void put_utf8(out_buf *o, const unsigned char *in, size_t n)
{
	size_t i = 0;
	while (i < n) {
		size_t len = pn_utf8_sequence(in + i, n - i);
		if (len == 0) {
			put_invalid(o);
			i++;
			continue;
		}
		put(o, in + i, len);
		i += len;
	}
}

static const term_def *find_term(const char *t, size_t n)
{
	/* DICOM pads with spaces; leading/trailing spaces are not significant */
	while (n > 0 && t[0] == ' ') {
		t++;
		n--;
	}
	while (n > 0 && t[n - 1] == ' ')
		n--;
	if (n == 0)
		return &terms[0];
	for (size_t i = 0; i < sizeof(terms) / sizeof(terms[0]); i++)
		if (strlen(terms[i].term) == n && strncmp(terms[i].term, t, n) == 0)
			return &terms[i];
	return NULL;
}

int pn_charset_create(const char *spec, pn_charset **ret_cs)
{
	const term_def *first = &terms[0];
	if (spec && *spec) {
		/* check every term; the first one sets the initial state */
		const char *p = spec;
		for (int i = 0;; i++) {
			size_t n = strcspn(p, "\\");
			const term_def *t = find_term(p, n);
			if (!t)
				return -EINVAL;
			if (i == 0)
				first = t;
			if (p[n] == '\0')
				break;
			p += n + 1;
		}
	}
	pn_charset *cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->g0 = first->g0;
	cs->g1 = first->g1;
	cs->g1_iconv = first->g1_iconv;
	cs->whole = first->whole;
	*ret_cs = cs;
	return 0;
}

void pn_charset_free(pn_charset *cs)
{
	if (!cs)
		return;
	for (int i = 0; i < MAX_ICONV && cs->cache[i].name; i++)
		iconv_close(cs->cache[i].cd);
	free(cs);
}

/* Reads an escape sequence at in[0] == ESC; returns its length (0: unknown)
 * and updates the state. */
static size_t escape(const unsigned char *in, size_t n, kind *g0, kind *g1, const char **g1_iconv)
{
	static const struct {
		const char *seq;
		int which; /* 0: G0, 1: G1 */
		kind k;
		const char *iconv_name;
	} seqs[] = {
	    {"(B", 0, K_ASCII, NULL},          {"(J", 0, K_JIS_ROMAN, NULL},      {"$B", 0, K_JISX0208, NULL},
	    {"$(D", 0, K_JISX0212, NULL},      {")I", 1, K_KATAKANA, NULL},       {"-A", 1, K_SINGLE, "ISO-8859-1"},
	    {"-B", 1, K_SINGLE, "ISO-8859-2"}, {"-C", 1, K_SINGLE, "ISO-8859-3"}, {"-D", 1, K_SINGLE, "ISO-8859-4"},
	    {"-L", 1, K_SINGLE, "ISO-8859-5"}, {"-G", 1, K_SINGLE, "ISO-8859-6"}, {"-F", 1, K_SINGLE, "ISO-8859-7"},
	    {"-H", 1, K_SINGLE, "ISO-8859-8"}, {"-M", 1, K_SINGLE, "ISO-8859-9"}, {"-b", 1, K_SINGLE, "ISO-8859-15"},
	    {"-T", 1, K_SINGLE, "TIS-620"},    {"$)C", 1, K_DOUBLE, "EUC-KR"},    {"$)A", 1, K_DOUBLE, "GB2312"},
	};
	for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
		size_t len = strlen(seqs[i].seq);
		if (n >= len + 1 && memcmp(in + 1, seqs[i].seq, len) == 0) {
			if (seqs[i].which == 0) {
				*g0 = seqs[i].k;
			} else {
				*g1 = seqs[i].k;
				*g1_iconv = seqs[i].iconv_name;
			}
			return len + 1;
		}
	}
	return 0;
}

static bool is_delimiter(unsigned char c)
{
	return c == '^' || c == '=' || c == '\\' || c == '\r' || c == '\n' || c == '\t' || c == '\f';
}

static void decode_2022(pn_charset *cs, out_buf *o, const unsigned char *in, size_t n)
{
	kind g0 = cs->g0, g1 = cs->g1;
	const char *g1_iconv = cs->g1_iconv;
	size_t i = 0;
	while (i < n) {
		unsigned char c = in[i];
		if (c == 0x1b) {
			size_t len = escape(in + i, n - i, &g0, &g1, &g1_iconv);
			if (len == 0) {
				put_invalid(o);
				i++;
			} else {
				i += len;
			}
			continue;
		}
		if (c < 0x80 && (g0 == K_JISX0208 || g0 == K_JISX0212)) {
			if (c < 0x21) { /* controls and space are single bytes */
				put(o, &c, 1);
				i++;
				continue;
			}
			if (i + 1 >= n) {
				put_invalid(o);
				break;
			}
			char euc[3];
			size_t k = 0;
			if (g0 == K_JISX0212)
				euc[k++] = (char)0x8f;
			euc[k++] = (char)(c | 0x80);
			euc[k++] = (char)(in[i + 1] | 0x80);
			put_iconv(cs, o, "EUC-JP", euc, k);
			i += 2;
			continue;
		}
		if (c < 0x80) {
			if (g0 == K_JIS_ROMAN && c == 0x5c)
				put_codepoint(o, 0xa5); /* yen sign */
			else if (g0 == K_JIS_ROMAN && c == 0x7e)
				put_codepoint(o, 0x203e); /* overline */
			else
				put(o, &c, 1);
			if (is_delimiter(c)) { /* PS3.5 6.1.2.5.3: back to the initial sets */
				g0 = cs->g0;
				g1 = cs->g1;
				g1_iconv = cs->g1_iconv;
			}
			i++;
			continue;
		}
		/* c >= 0x80: G1 */
		switch (g1) {
		case K_KATAKANA:
			if (c >= 0xa1 && c <= 0xdf)
				put_codepoint(o, 0xff61 + (unsigned)(c - 0xa1));
			else
				put_invalid(o);
			i++;
			break;
		case K_SINGLE: {
			size_t j = i;
			while (j < n && in[j] >= 0x80)
				j++;
			put_iconv(cs, o, g1_iconv, (const char *)in + i, j - i);
			i = j;
			break;
		}
		case K_DOUBLE: {
			size_t j = i;
			while (j < n && in[j] >= 0x80)
				j++;
			put_iconv(cs, o, g1_iconv, (const char *)in + i, j - i);
			i = j;
			break;
		}
		default:
			/* No G1 declared (default repertoire): read it as Latin-1,
			 * which is what such files nearly always mean, but say so. */
			put_iconv(cs, o, "ISO-8859-1", (const char *)in + i, 1);
			o->invalid = true;
			i++;
			break;
		}
	}
}

int pn_charset_to_utf8(pn_charset *cs, const char *in, size_t len, char **ret_out)
{
	out_buf o = {0};
	put(&o, "", 0);
	bool plain = true;
	for (size_t i = 0; i < len && plain; i++)
		plain = (unsigned char)in[i] < 0x80 && in[i] != 0x1b;
	if (plain && cs->g0 != K_JIS_ROMAN)
		put(&o, in, len);
	else if (cs->whole && strcmp(cs->whole, "UTF-8") == 0)
		put_utf8(&o, (const unsigned char *)in, len);
	else if (cs->whole)
		put_iconv(cs, &o, cs->whole, in, len);
	else
		decode_2022(cs, &o, (const unsigned char *)in, len);
	if (o.failed) {
		free(o.buf);
		return -ENOMEM;
	}
	*ret_out = o.buf;
	return o.invalid ? -EILSEQ : 0;
}

struct pn_charset_encoder {
	iconv_t cd;
};

int pn_charset_encoder_create(const char *spec, pn_charset_encoder **ret_enc)
{
	if (!spec || strchr(spec, '\\'))
		return -ENOTSUP;
	const char *name = NULL;
	for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++)
		if (strcmp(terms[i].term, spec) == 0 && terms[i].g1 == K_SINGLE && strncmp(spec, "ISO_IR", 6) == 0)
			name = terms[i].g1_iconv;
	if (!name)
		return -ENOTSUP;
	pn_charset_encoder *enc = malloc(sizeof *enc);
	if (!enc)
		return -ENOMEM;
	enc->cd = iconv_open(name, "UTF-8");
	if (enc->cd == (iconv_t)-1) {
		free(enc);
		return -ENOTSUP;
	}
	*ret_enc = enc;
	return 0;
}

void pn_charset_encoder_free(pn_charset_encoder *enc)
{
	if (!enc)
		return;
	iconv_close(enc->cd);
	free(enc);
}

int pn_charset_from_utf8(pn_charset_encoder *enc, const char *in, size_t len, char **ret_out)
{
	/* single-byte targets: never longer than the UTF-8 input */
	char *out = malloc(len + 1);
	if (!out)
		return -ENOMEM;
	char *ip = (char *)in, *op = out;
	size_t il = len, ol = len;
	iconv(enc->cd, NULL, NULL, NULL, NULL);
	if (iconv(enc->cd, &ip, &il, &op, &ol) == (size_t)-1) {
		free(out);
		return errno == E2BIG ? -ENOMEM : -EILSEQ;
	}
	*op = '\0';
	*ret_out = out;
	return 0;
}
