/* Hostile C-FIND key values and hostile stored values into the matcher:
 * whatever the bytes, the parse either fails cleanly or gives a key of the
 * right shape (fixed-width bounds in order, a LIKE pattern that says what
 * the DICOM pattern says), and the C wildcard matcher agrees with a plain
 * dynamic-programming reference. */
#include <stdlib.h>

/* CHECK() vanishes under NDEBUG; a fuzz check must not */
#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "charset.h"
#include "dicom_values.h"
#include "find_match.h"
#include "uid.h"

#define MAX_IN 512

static bool valid_utf8(const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		size_t len = pn_utf8_sequence((const unsigned char *)s, n);
		if (len == 0)
			return false;
		s += len;
		n -= len;
	}
	return true;
}

/* Code points of a valid UTF-8 string; returns how many. */
static size_t decode(const char *s, uint32_t *out)
{
	size_t k = 0, n = strlen(s);
	while (n > 0) {
		size_t len = pn_utf8_sequence((const unsigned char *)s, n);
		uint32_t cp = len == 1 ? (unsigned char)s[0] : (unsigned char)s[0] & (0xffu >> (len + 1));
		for (size_t i = 1; i < len; i++)
			cp = (cp << 6) | ((unsigned char)s[i] & 0x3fu);
		out[k++] = cp;
		s += len;
		n -= len;
	}
	return k;
}

/* The reference: d[i][j] = pattern[i..] matches text[j..]. */
static bool glob_reference(const char *pat, const char *txt)
{
	static uint32_t p[MAX_IN + 1], t[MAX_IN + 1];
	static bool d[MAX_IN + 2][MAX_IN + 2];
	size_t pn = decode(pat, p), tn = decode(txt, t);
	for (size_t i = pn + 1; i-- > 0;) {
		for (size_t j = tn + 1; j-- > 0;) {
			if (i == pn)
				d[i][j] = j == tn;
			else if (p[i] == '*')
				d[i][j] = d[i + 1][j] || (j < tn && d[i][j + 1]);
			else
				d[i][j] = j < tn && (p[i] == '?' || p[i] == t[j]) && d[i + 1][j + 1];
		}
	}
	return d[0][0];
}

/* LIKE back to the DICOM pattern. */
static bool like_says_pattern(const char *like, const char *pattern)
{
	char back[2 * MAX_IN + 1];
	size_t k = 0;
	for (size_t i = 0; like[i]; i++) {
		char c = like[i];
		if (c == '\\') {
			c = like[++i];
			if (c != '\\' && c != '%' && c != '_')
				return false;
		} else if (c == '%') {
			c = '*';
		} else if (c == '_') {
			c = '?';
		} else if (c == '*' || c == '?') {
			return false;
		}
		back[k++] = c;
	}
	back[k] = '\0';
	return strcmp(back, pattern) == 0;
}

static bool is_zero(const pn_match *m)
{
	return m->kind == 0 && !m->value && !m->like && !m->pattern && !m->list && m->n_list == 0 && !m->lo && !m->hi &&
	       !m->alts && m->n_alts == 0;
}

static void check_shape(const pn_match *m, const char *vr, const char *value)
{
	switch (m->kind) {
	case PN_MATCH_UNIVERSAL:
		CHECK(pn_match_test(m, NULL) && pn_match_test(m, ""));
		break;
	case PN_MATCH_SINGLE:
		CHECK(m->value && m->value[0] && valid_utf8(m->value));
		CHECK(strcmp(vr, "UI") != 0 || pn_uid_valid(m->value));
		CHECK(pn_match_test(m, m->value) || m->fold);
		CHECK(pn_match_test(m, value));
		break;
	case PN_MATCH_LIST:
		CHECK(m->n_list > 0 && m->list);
		for (size_t i = 0; i < m->n_list; i++) {
			CHECK(m->list[i][0] && valid_utf8(m->list[i]));
			CHECK(!strpbrk(m->list[i], "*?\\"));
			CHECK(strcmp(vr, "UI") != 0 || pn_uid_valid(m->list[i]));
		}
		CHECK(pn_match_test(m, value));
		break;
	case PN_MATCH_WILDCARD:
		CHECK(m->pattern && m->like && valid_utf8(m->pattern) && valid_utf8(m->like));
		CHECK(strpbrk(m->pattern, "*?") && !strstr(m->pattern, "**"));
		CHECK(like_says_pattern(m->like, m->pattern));
		CHECK(pn_match_test(m, value));
		break;
	case PN_MATCH_RANGE: {
		size_t w = strcmp(vr, "DA") == 0 ? 10 : strcmp(vr, "TM") == 0 ? 15 : 26;
		CHECK(m->lo || m->hi);
		CHECK(!m->lo || strlen(m->lo) == w);
		CHECK(!m->hi || strlen(m->hi) == w);
		CHECK(!m->lo || !m->hi || strcmp(m->lo, m->hi) <= 0 || (m->reversed && strcmp(vr, "TM") == 0));
		CHECK(!m->reversed || (m->lo && m->hi && strcmp(m->lo, m->hi) > 0));
		if (!strchr(value, '-'))
			CHECK(pn_match_test(m, value)); /* a single value covers itself */
		break;
	}
	default:
		CHECK(0);
	}
}

/* The time normaliser agrees with the one the store path uses for the
 * columns (pn_norm_date is pn_da_to_iso itself). */
static void check_normalisers(const char *s)
{
	char t[16], u[16], iso[16];
	if (pn_norm_time(s, false, t) == 0) {
		CHECK(strlen(t) == 15);
		CHECK(pn_norm_time(s, true, u) == 0 && strlen(u) == 15 && strcmp(t, u) <= 0);
		CHECK(pn_tm_to_iso(s, iso) && strncmp(t, iso, strlen(iso)) == 0);
	}
}

/* Timezone Offset From UTC of a request, and the DA/TM shift of its
 * response values: an offset within -12:00..+14:00 that prints back to the
 * value; a shift that gives a valid pair, undone by the opposite shift
 * (to the same time, if not in the same form). */
static void check_timezone(const char *value, const char *stored)
{
	int m = 99999;
	if (pn_tz_offset_parse(value, &m)) {
		CHECK(m >= -720 && m <= 840);
		char back[8];
		snprintf(back, sizeof back, "%c%02d%02d", m < 0 ? '-' : '+', abs(m) / 60, abs(m) % 60);
		if (m == 0)
			back[0] = strchr(value, '-') ? '-' : '+'; /* -0000 is +0000 */
		CHECK(strstr(value, back) != NULL);
	} else {
		CHECK(m == 99999);
	}
	if (!stored)
		return;
	char da[9], tm[24], da2[9], tm2[24], iso[16], iso2[16];
	int shift = (int)(strlen(value) % 1681) - 840;
	const char *date = strlen(value) == 8 ? value : NULL;
	if (pn_da_tm_shift(date, stored, shift, da, tm)) {
		CHECK(pn_tm_to_iso(tm, iso));
		CHECK(!date || (strlen(da) == 8 && pn_da_to_iso(da, iso)));
		if (pn_da_tm_shift(date ? da : NULL, tm, -shift, da2, tm2)) {
			CHECK(!date || strcmp(da2, date) == 0);
			/* (the old form's colons are dropped by both, but a value of
			 * more than 31 characters, colons included, only by the shift) */
			if (pn_tm_to_iso(stored, iso))
				CHECK(pn_tm_to_iso(tm2, iso2) && strcmp(iso, iso2) == 0);
		}
	}
}

/* Byte 0: the VR (low 5 bits) and fold (bit 5); then the key value, a NUL,
 * and the stored value. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const vrs[] = {"PN", "LO", "SH", "CS", "AE", "LT", "ST", "UT", "UC", "UR",
	                                  "UI", "DA", "TM", "DT", "IS", "DS", "US", "FD", "AS", "XX"};
	if (size < 1 || size > MAX_IN)
		return 0;
	const char *vr = vrs[(data[0] & 0x1f) % (sizeof(vrs) / sizeof(vrs[0]))];
	bool fold = data[0] & 0x20;
	char buf[MAX_IN + 2];
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = '\0';
	buf[size] = '\0';
	const char *value = buf;
	size_t vn = strlen(buf);
	const char *stored = vn < size - 1 ? buf + vn + 1 : NULL;

	check_normalisers(value);
	check_timezone(value, stored);

	pn_match m;
	int rc = pn_match_parse(vr, value, fold, &m);
	CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	if (rc < 0) {
		CHECK(is_zero(&m));
		CHECK(rc != -EINVAL || !valid_utf8(value) || value[0]);
		return 0;
	}
	CHECK(valid_utf8(value));
	CHECK(strcmp(m.vr, vr) == 0);
	CHECK(!m.fold || strcmp(vr, "PN") == 0);
	check_shape(&m, vr, value);

	bool hit = pn_match_test(&m, stored);
	if (stored && m.kind == PN_MATCH_WILDCARD && !m.fold && stored[0] && valid_utf8(stored) && stored[0] != ' ' &&
	    stored[strlen(stored) - 1] != ' ' &&
	    (!strchr(stored, '\\') || strcmp(vr, "LT") == 0 || strcmp(vr, "ST") == 0 || strcmp(vr, "UT") == 0 ||
	     strcmp(vr, "UR") == 0))
		CHECK(hit == glob_reference(m.pattern, stored));
	if (stored && m.fold && valid_utf8(stored)) {
		char *f = NULL;
		CHECK(pn_fold_utf8(stored, &f) == 0);
		CHECK(valid_utf8(f));
		free(f);
	}
	pn_match_clear(&m);
	CHECK(is_zero(&m));
	pn_match_clear(&m);

	/* Multiple Value Matching: ANY only of plain alternatives, and it
	 * matches exactly when one of them does */
	pn_match multi;
	if (pn_match_parse_multi(vr, value, (data[0] & 0x20) != 0, &multi) == 0) {
		if (multi.kind == PN_MATCH_ANY) {
			bool any = false;
			CHECK(multi.n_alts > 0);
			for (size_t i = 0; i < multi.n_alts; i++) {
				CHECK(multi.alts[i].kind != PN_MATCH_ANY && multi.alts[i].kind != PN_MATCH_UNIVERSAL);
				any |= pn_match_test(&multi.alts[i], stored);
			}
			CHECK(pn_match_test(&multi, stored) == any);
		}
		pn_match_clear(&multi);
		CHECK(is_zero(&multi));
	}

	/* Empty Value Matching: any stored value that is nothing but spaces,
	 * or none, and no other */
	pn_match empty = {.kind = PN_MATCH_EMPTY};
	memcpy(empty.vr, vr, sizeof empty.vr);
	bool blank = !stored || stored[strspn(stored, " ")] == '\0';
	CHECK(pn_match_test(&empty, stored) == blank);
	return 0;
}
