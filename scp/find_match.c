#include "find_match.h"

#include "charset.h"
#include "dicom_values.h"
#include "uid.h"

#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* Longest date/time operand we look at: "YYYYMMDDHHMMSS.FFFFFF&ZZXX" is 26. */
#define MAX_OPERAND 64

/* ---- VR classes (PS3.4 C.2.2.2, PS3.5 6.2) ---- */

static bool vr_in(const char *vr, const char *set)
{
	for (const char *p = set; *p; p += 3)
		if (p[0] == vr[0] && p[1] == vr[1])
			return true;
	return false;
}

static bool vr_is_range(const char *vr)
{
	return vr_in(vr, "DA TM DT ");
}

static bool vr_allows_wildcard(const char *vr)
{
	return vr_in(vr, "AE CS LO LT PN SH ST UC UR UT ");
}

/* Text VRs of VM 1 where '\\' is an ordinary character, not a separator. */
static bool vr_multi_valued(const char *vr)
{
	return !vr_in(vr, "LT ST UT UR ");
}

/* ---- small string helpers ---- */

static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	while (n > 0) {
		size_t len = pn_utf8_sequence(p, n);
		if (len == 0)
			return false;
		p += len;
		n -= len;
	}
	return true;
}

/* The code point at s[*i] (advancing *i), or, for a byte that does not start
 * a well-formed sequence, a value above U+10FFFF that no pattern holds. */
static uint32_t next_cp(const unsigned char *s, size_t n, size_t *i)
{
	size_t len = pn_utf8_sequence(s + *i, n - *i);
	if (len == 0)
		return 0x110000u + s[(*i)++];
	uint32_t cp = len == 1 ? s[*i] : s[*i] & (0xffu >> (len + 1));
	for (size_t k = 1; k < len; k++)
		cp = (cp << 6) | (s[*i + k] & 0x3fu);
	*i += len;
	return cp;
}

static size_t put_cp(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* s[0..*n) without leading and trailing spaces. */
static const char *trim_span(const char *s, size_t *n)
{
	while (*n > 0 && s[0] == ' ') {
		s++;
		(*n)--;
	}
	while (*n > 0 && s[*n - 1] == ' ')
		(*n)--;
	return s;
}

static bool only_stars(const char *s)
{
	return *s && strspn(s, "*") == strlen(s);
}

/* ---- case folding ---- */

static pthread_once_t fold_once = PTHREAD_ONCE_INIT;
static locale_t fold_locale;

static void fold_locale_init(void)
{
	fold_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

static uint32_t fold_cp(uint32_t cp)
{
	if (cp == 0x3c2) /* final sigma */
		return 0x3c3;
	wint_t lc = towlower_l((wint_t)cp, fold_locale);
	if ((uint32_t)lc > 0x10ffff || ((uint32_t)lc >= 0xd800 && (uint32_t)lc <= 0xdfff))
		return cp;
	return (uint32_t)lc == 0x3c2 ? 0x3c3 : (uint32_t)lc;
}

/* ICU's full lower case has one single-to-many mapping in the root locale:
 * U+0130 (capital I with dot above) is "i" + U+0307 combining dot above. */
static size_t put_folded(char *out, uint32_t cp)
{
	if (cp == 0x130) {
		memcpy(out, "i\xcc\x87", 3);
		return 3;
	}
	return put_cp(out, fold_cp(cp));
}

int pn_fold_utf8(const char *in, char **ret_out)
{
	pthread_once(&fold_once, fold_locale_init);
	if (fold_locale == (locale_t)0)
		return -ENOMEM;
	const unsigned char *s = (const unsigned char *)in;
	size_t n = strlen(in), len = 0;
	char tmp[4];
	for (size_t i = 0; i < n;) {
		if (pn_utf8_sequence(s + i, n - i) == 0)
			return -EINVAL;
		len += put_folded(tmp, next_cp(s, n, &i));
	}
	char *out = malloc(len + 1);
	if (!out)
		return -ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < n;)
		k += put_folded(out + k, next_cp(s, n, &i));
	out[k] = '\0';
	*ret_out = out;
	return 0;
}

/* A copy of s[0..n), folded when asked. */
static int dup_value(const char *s, size_t n, bool fold, char **ret)
{
	char *v = strndup(s, n);
	if (!v)
		return -ENOMEM;
	if (fold) {
		char *f;
		int r = pn_fold_utf8(v, &f);
		free(v);
		if (r < 0)
			return r;
		v = f;
	}
	*ret = v;
	return 0;
}

/* ---- DA, TM, DT ---- */

static bool digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static int num(const char *s, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

static void put2(char *out, int v)
{
	out[0] = (char)('0' + v / 10 % 10);
	out[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DD" */
static void fmt_date(char *out, int y, int m, int d)
{
	put2(out, y / 100);
	put2(out + 2, y % 100);
	out[4] = '-';
	put2(out + 5, m);
	out[7] = '-';
	put2(out + 8, d);
}

/* "HH:MM:SS.ffffff"; `frac` has `fl` digits, the rest is filled. */
static void fmt_time(char *out, int hh, int mm, int ss, const char *frac, size_t fl, bool upper)
{
	put2(out, hh);
	out[2] = ':';
	put2(out + 3, mm);
	out[5] = ':';
	put2(out + 6, ss);
	out[8] = '.';
	for (size_t i = 0; i < 6; i++)
		out[9 + i] = i < fl ? frac[i] : upper ? '9' : '0';
}

int pn_norm_date(const char *in, char out[11])
{
	/* one value only: lists were split before */
	return !strchr(in, '\\') && pn_da_to_iso(in, out) ? 0 : -EINVAL;
}

/* Parses the "HH[MM[SS[.F{1,6}]]]" at t[0..n) (n > 0) into fields;
 * *fl is 0 when there is no fraction. */
static bool parse_hms(const char *t, size_t n, int *hh, int *mm, int *ss, const char **frac, size_t *fl, size_t *n_int)
{
	size_t ni = 0;
	while (ni < n && t[ni] != '.')
		ni++;
	if (!(ni == 2 || ni == 4 || ni == 6) || !digits(t, ni))
		return false;
	*hh = num(t, 2);
	*mm = ni >= 4 ? num(t + 2, 2) : 0;
	*ss = ni >= 6 ? num(t + 4, 2) : 0;
	*n_int = ni;
	*frac = t + ni;
	*fl = 0;
	if (ni < n) {
		*frac = t + ni + 1;
		*fl = n - ni - 1;
		if (ni != 6 || *fl == 0 || *fl > 6 || !digits(*frac, *fl))
			return false;
	}
	if (*hh > 23 || *mm > 59 || *ss > 60)
		return false;
	if (*ss == 60) /* leap second, as pn_tm_to_iso() stores it */
		*ss = 59;
	return true;
}

/* Missing components: the lowest for a lower bound, the highest otherwise. */
static void fill_hms(size_t n_int, bool upper, int *mm, int *ss)
{
	if (!upper)
		return;
	if (n_int < 4)
		*mm = 59;
	if (n_int < 6)
		*ss = 59;
}

int pn_norm_time(const char *in, bool upper, char out[16])
{
	size_t n = strlen(in);
	char t[MAX_OPERAND];
	if (n == 0 || n >= sizeof(t))
		return -EINVAL;
	if (strchr(in, ':')) { /* the old "HH:MM[:SS[.F]]" form */
		if (n < 5 || in[2] != ':' || (n > 5 && in[5] != ':') || n == 6)
			return -EINVAL;
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			if (in[i] == ':' && i != 2 && i != 5)
				return -EINVAL;
			if (in[i] != ':')
				t[k++] = in[i];
		}
		n = k;
	} else {
		memcpy(t, in, n);
	}
	int hh, mm, ss;
	const char *frac;
	size_t fl, n_int;
	if (!parse_hms(t, n, &hh, &mm, &ss, &frac, &fl, &n_int))
		return -EINVAL;
	fill_hms(n_int, upper, &mm, &ss);
	fmt_time(out, hh, mm, ss, frac, fl, upper);
	out[15] = '\0';
	return 0;
}

/* DT "YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]" -> "YYYY-MM-DD HH:MM:SS.ffffff",
 * the offset checked and ignored. */
static int norm_datetime(const char *in, bool upper, char out[27])
{
	size_t n = strlen(in);
	if (n >= MAX_OPERAND)
		return -EINVAL;
	size_t body = n;
	const char *sign = NULL;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '+' || in[i] == '-') {
			sign = in + i;
			body = i;
			break;
		}
	}
	if (sign) {
		if (n - body != 5 || !digits(sign + 1, 4) || num(sign + 1, 2) > 14 || num(sign + 3, 2) > 59)
			return -EINVAL;
	}
	size_t nd = 0;
	while (nd < body && in[nd] != '.')
		nd++;
	if (nd < 4 || nd > 14 || nd % 2 != 0 || !digits(in, nd))
		return -EINVAL;
	int y = num(in, 4);
	int m = nd >= 6 ? num(in + 4, 2) : upper ? 12 : 1;
	if (y < 1 || m < 1 || m > 12)
		return -EINVAL;
	int d = nd >= 8 ? num(in + 6, 2) : upper ? pn_days_in_month(y, m) : 1;
	if (d < 1 || d > pn_days_in_month(y, m))
		return -EINVAL;
	int hh = upper ? 23 : 0, mm = 0, ss = 0;
	const char *frac = "";
	size_t fl = 0, n_int = 0;
	if (nd > 8) {
		if (!parse_hms(in + 8, body - 8, &hh, &mm, &ss, &frac, &fl, &n_int))
			return -EINVAL;
	} else if (nd < body) {
		return -EINVAL; /* a fraction without seconds */
	}
	fill_hms(n_int, upper, &mm, &ss);
	fmt_date(out, y, m, d);
	out[10] = ' ';
	fmt_time(out + 11, hh, mm, ss, frac, fl, upper);
	out[26] = '\0';
	return 0;
}

/* One operand of a range, as a bound ("" for none: *ret stays NULL). */
static int norm_bound(const char *vr, const char *s, size_t n, bool upper, char **ret)
{
	s = trim_span(s, &n);
	if (n == 0)
		return 0;
	if (n >= MAX_OPERAND)
		return -EINVAL;
	char in[MAX_OPERAND], out[27];
	memcpy(in, s, n);
	in[n] = '\0';
	int r;
	if (vr[1] == 'A')
		r = pn_norm_date(in, out);
	else if (vr[1] == 'M')
		r = pn_norm_time(in, upper, out);
	else
		r = norm_datetime(in, upper, out);
	if (r < 0)
		return r;
	*ret = strdup(out);
	return *ret ? 0 : -ENOMEM;
}

static bool dt_operand_ok(const char *s, size_t n)
{
	char in[MAX_OPERAND], out[27];
	s = trim_span(s, &n);
	if (n == 0)
		return true;
	if (n >= sizeof(in))
		return false;
	memcpy(in, s, n);
	in[n] = '\0';
	return norm_datetime(in, false, out) == 0;
}

static int parse_range(pn_match *m, const char *value)
{
	if (strpbrk(value, "*?\\"))
		return -EINVAL;
	size_t n = strlen(value);
	const char *dash = NULL;
	if (m->vr[1] == 'T') {
		/* DT offsets hold '-' too: a valid single value wins, otherwise
		 * the first '-' with a valid (or empty) operand on both sides */
		if (!dt_operand_ok(value, n)) {
			for (const char *p = strchr(value, '-'); p; p = strchr(p + 1, '-')) {
				if (dt_operand_ok(value, (size_t)(p - value)) &&
				    dt_operand_ok(p + 1, n - (size_t)(p - value) - 1)) {
					dash = p;
					break;
				}
			}
			if (!dash)
				return -EINVAL;
		}
	} else {
		dash = strchr(value, '-');
		if (dash && strchr(dash + 1, '-'))
			return -EINVAL;
	}
	int r;
	if (!dash) {
		if ((r = norm_bound(m->vr, value, n, false, &m->lo)) < 0 ||
		    (r = norm_bound(m->vr, value, n, true, &m->hi)) < 0)
			return r;
	} else {
		size_t left = (size_t)(dash - value);
		if ((r = norm_bound(m->vr, value, left, false, &m->lo)) < 0 ||
		    (r = norm_bound(m->vr, dash + 1, n - left - 1, true, &m->hi)) < 0)
			return r;
	}
	if (!m->lo && !m->hi)
		return -EINVAL; /* "-" */
	if (m->lo && m->hi && strcmp(m->lo, m->hi) > 0) {
		if (strcmp(m->vr, "TM") != 0)
			return -EINVAL;
		m->reversed = true;
	}
	m->kind = PN_MATCH_RANGE;
	return 0;
}

/* ---- lists, wildcards, single values ---- */

static int parse_list(pn_match *m, const char *value)
{
	size_t cap = 1;
	for (const char *p = value; *p; p++)
		cap += *p == '\\';
	m->list = calloc(cap, sizeof(*m->list));
	if (!m->list)
		return -ENOMEM;
	for (const char *p = value;;) {
		size_t n = strcspn(p, "\\");
		const char *part = trim_span(p, &n);
		if (n > 0) {
			if (memchr(part, '*', n) || memchr(part, '?', n))
				return -EINVAL;
			char *v;
			int r = dup_value(part, n, m->fold, &v);
			if (r < 0)
				return r;
			m->list[m->n_list++] = v;
			if (m->vr[0] == 'U' && m->vr[1] == 'I' && !pn_uid_valid(v))
				return -EINVAL;
		}
		p += strcspn(p, "\\");
		if (*p == '\0')
			break;
		p++;
	}
	if (m->n_list == 0)
		return -EINVAL; /* only separators */
	m->kind = PN_MATCH_LIST;
	return 0;
}

static int parse_wildcard(pn_match *m, const char *value)
{
	char *pat;
	int r = dup_value(value, strlen(value), m->fold, &pat);
	if (r < 0)
		return r;
	/* "**" is "*" */
	size_t k = 0;
	for (size_t i = 0; pat[i]; i++)
		if (!(pat[i] == '*' && k > 0 && pat[k - 1] == '*'))
			pat[k++] = pat[i];
	pat[k] = '\0';
	m->pattern = pat;
	char *like = malloc(2 * k + 1);
	if (!like)
		return -ENOMEM;
	size_t j = 0;
	for (size_t i = 0; i < k; i++) {
		char c = pat[i];
		if (c == '*') {
			like[j++] = '%';
		} else if (c == '?') {
			like[j++] = '_';
		} else {
			if (c == '%' || c == '_' || c == '\\')
				like[j++] = '\\';
			like[j++] = c;
		}
	}
	like[j] = '\0';
	m->like = like;
	m->kind = PN_MATCH_WILDCARD;
	return 0;
}

static int parse_single(pn_match *m, const char *value)
{
	if (m->vr[0] == 'U' && m->vr[1] == 'I' && !pn_uid_valid(value))
		return -EINVAL;
	int r = dup_value(value, strlen(value), m->fold, &m->value);
	if (r < 0)
		return r;
	m->kind = PN_MATCH_SINGLE;
	return 0;
}

int pn_match_parse(const char *vr, const char *value, bool fold, pn_match *ret)
{
	pn_match m = {0};
	memset(ret, 0, sizeof(*ret));
	if (!vr || !vr[0] || !vr[1] || vr[2])
		return -EINVAL;
	memcpy(m.vr, vr, 2);
	m.fold = fold && strcmp(m.vr, "PN") == 0;
	if (!value)
		value = "";
	if (!utf8_valid(value))
		return -EINVAL;
	/* the caller trims; a value of only spaces is still zero length */
	size_t n = strlen(value);
	const char *v = trim_span(value, &n);
	char *own = strndup(v, n);
	if (!own)
		return -ENOMEM;
	int r = 0;
	if (own[0] == '\0' || only_stars(own))
		m.kind = PN_MATCH_UNIVERSAL;
	else if (vr_is_range(m.vr))
		r = parse_range(&m, own);
	else if (vr_multi_valued(m.vr) && strchr(own, '\\'))
		r = parse_list(&m, own);
	else if (vr_allows_wildcard(m.vr) && strpbrk(own, "*?"))
		r = parse_wildcard(&m, own);
	else
		r = parse_single(&m, own);
	free(own);
	if (r < 0) {
		pn_match_clear(&m);
		return r;
	}
	*ret = m;
	return 0;
}

int pn_match_parse_multi(const char *vr, const char *value, bool fold, pn_match *ret)
{
	memset(ret, 0, sizeof(*ret));
	if (!vr || !vr[0] || !vr[1] || vr[2])
		return -EINVAL;
	if (!value || !strchr(value, '\\') || !vr_multi_valued(vr) || strcmp(vr, "UI") == 0)
		return pn_match_parse(vr, value, fold, ret);
	size_t cap = 1;
	for (const char *p = value; *p; p++)
		cap += *p == '\\';
	pn_match m = {.kind = PN_MATCH_ANY};
	memcpy(m.vr, vr, 2);
	m.alts = calloc(cap, sizeof(*m.alts));
	if (!m.alts)
		return -ENOMEM;
	bool any_pattern = false;
	int r = 0;
	for (const char *p = value; r == 0;) {
		size_t n = strcspn(p, "\\"), tn = n;
		trim_span(p, &tn);
		if (tn == 0) { /* an empty value between separators: none */
			p += n;
			if (*p == '\0')
				break;
			p++;
			continue;
		}
		char *part = strndup(p, n);
		if (!part) {
			r = -ENOMEM;
			break;
		}
		pn_match one;
		r = pn_match_parse(vr, part, fold, &one);
		free(part);
		if (r < 0)
			break;
		if (one.kind == PN_MATCH_UNIVERSAL) { /* one value matches everything: all do */
			pn_match_clear(&m);
			*ret = one;
			return 0;
		}
		any_pattern |= one.kind == PN_MATCH_WILDCARD || one.kind == PN_MATCH_RANGE;
		m.alts[m.n_alts++] = one;
		p += n;
		if (*p == '\0')
			break;
		p++;
	}
	if (r == 0 && m.n_alts == 0)
		r = -EINVAL;
	if (r < 0 || !any_pattern) {
		pn_match_clear(&m);
		return r < 0 ? r : pn_match_parse(vr, value, fold, ret);
	}
	*ret = m;
	return 0;
}

void pn_match_clear(pn_match *m)
{
	for (size_t i = 0; i < m->n_alts; i++)
		pn_match_clear(&m->alts[i]);
	free(m->alts);
	free(m->value);
	free(m->like);
	free(m->pattern);
	for (size_t i = 0; i < m->n_list; i++)
		free(m->list[i]);
	free(m->list);
	free(m->lo);
	free(m->hi);
	memset(m, 0, sizeof(*m));
}

/* ---- matching a stored value ---- */

/* DICOM '*' and '?' over code points: the greedy two-pointer walk that
 * returns to the last '*' on a mismatch, O(len(p) * len(s)) at worst. */
static bool glob(const char *pat, const char *str, size_t sn)
{
	const unsigned char *p = (const unsigned char *)pat, *s = (const unsigned char *)str;
	size_t pn = strlen(pat), pi = 0, si = 0, star = SIZE_MAX, mark = 0;
	while (si < sn) {
		if (pi < pn) {
			size_t pj = pi, sj = si;
			uint32_t pc = next_cp(p, pn, &pj);
			if (pc == '*') {
				star = pj;
				mark = si;
				pi = pj;
				continue;
			}
			uint32_t sc = next_cp(s, sn, &sj);
			if (pc == '?' || pc == sc) {
				pi = pj;
				si = sj;
				continue;
			}
		}
		if (star == SIZE_MAX)
			return false;
		(void)next_cp(s, sn, &mark); /* the '*' takes one more code point */
		pi = star;
		si = mark;
	}
	while (pi < pn && p[pi] == '*')
		pi++;
	return pi == pn;
}

static bool equal(const char *a, const char *s, size_t n)
{
	return strlen(a) == n && memcmp(a, s, n) == 0;
}

static bool in_range(const pn_match *m, const char *s, size_t n)
{
	char in[MAX_OPERAND], v[27];
	if (n >= sizeof(in))
		return false;
	memcpy(in, s, n);
	in[n] = '\0';
	int r;
	if (m->vr[1] == 'A')
		r = pn_norm_date(in, v);
	else if (m->vr[1] == 'M')
		r = pn_norm_time(in, false, v);
	else
		r = norm_datetime(in, false, v);
	if (r < 0)
		return false;
	return (!m->lo || strcmp(m->lo, v) <= 0) && (!m->hi || strcmp(v, m->hi) <= 0);
}

static bool test_one(const pn_match *m, const char *s, size_t n)
{
	switch (m->kind) {
	case PN_MATCH_UNIVERSAL:
		return true;
	case PN_MATCH_SINGLE:
		return equal(m->value, s, n);
	case PN_MATCH_LIST:
		for (size_t i = 0; i < m->n_list; i++)
			if (equal(m->list[i], s, n))
				return true;
		return false;
	case PN_MATCH_WILDCARD:
		return glob(m->pattern, s, n);
	case PN_MATCH_RANGE:
		return in_range(m, s, n);
	case PN_MATCH_EMPTY: /* decided on the whole value (pn_match_test) */
	case PN_MATCH_ANY:
		return false;
	}
	return false;
}

bool pn_match_test(const pn_match *m, const char *stored)
{
	if (m->kind == PN_MATCH_UNIVERSAL)
		return true;
	if (m->kind == PN_MATCH_EMPTY)
		return !stored || stored[strspn(stored, " ")] == '\0';
	if (m->kind == PN_MATCH_ANY) {
		for (size_t i = 0; i < m->n_alts; i++)
			if (pn_match_test(&m->alts[i], stored))
				return true;
		return false;
	}
	if (!stored || !stored[0])
		return false;
	char *folded = NULL;
	if (m->fold) {
		if (pn_fold_utf8(stored, &folded) < 0)
			return false;
		stored = folded;
	}
	bool multi = vr_multi_valued(m->vr), hit = false;
	for (const char *p = stored;;) {
		size_t n = multi ? strcspn(p, "\\") : strlen(p);
		size_t vn = n;
		const char *v = trim_span(p, &vn);
		if (vn > 0 && test_one(m, v, vn)) {
			hit = true;
			break;
		}
		if (p[n] == '\0')
			break;
		p += n + 1;
	}
	free(folded);
	return hit;
}
