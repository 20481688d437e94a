/* C-FIND key matching (PS3.4 C.2.2.2): what pn_match_parse() makes of each
 * kind of value and VR, and what pn_match_test() then accepts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "find_match.h"

static pn_match parse_ok(const char *vr, const char *value, bool fold)
{
	pn_match m;
	assert_int_equal(pn_match_parse(vr, value, fold, &m), 0);
	return m;
}

static void parse_fails(const char *vr, const char *value, bool fold)
{
	pn_match m;
	memset(&m, 0xa5, sizeof(m));
	assert_int_equal(pn_match_parse(vr, value, fold, &m), -EINVAL);
	/* cleared on error */
	assert_int_equal(m.kind, 0);
	assert_null(m.value);
	assert_null(m.like);
	assert_null(m.pattern);
	assert_null(m.list);
	assert_int_equal(m.n_list, 0);
	assert_null(m.lo);
	assert_null(m.hi);
	pn_match_clear(&m);
}

/* A range key with the expected bounds (NULL: open). */
static void range_is(const char *vr, const char *value, const char *lo, const char *hi)
{
	pn_match m = parse_ok(vr, value, false);
	assert_int_equal(m.kind, PN_MATCH_RANGE);
	if (lo)
		assert_string_equal(m.lo, lo);
	else
		assert_null(m.lo);
	if (hi)
		assert_string_equal(m.hi, hi);
	else
		assert_null(m.hi);
	pn_match_clear(&m);
}

static bool matches(const char *vr, const char *value, bool fold, const char *stored)
{
	pn_match m = parse_ok(vr, value, fold);
	bool r = pn_match_test(&m, stored);
	pn_match_clear(&m);
	return r;
}

static void folds_to(const char *in, const char *out)
{
	char *f = NULL;
	assert_int_equal(pn_fold_utf8(in, &f), 0);
	assert_string_equal(f, out);
	free(f);
}

static void universal(void **state)
{
	(void)state;
	static const char *const vrs[] = {"PN", "LO", "CS", "UI", "DA", "TM", "DT", "IS", "DS", "LT", "AE"};
	static const char *const values[] = {NULL, "", "*", "**", "  "};
	for (size_t i = 0; i < sizeof(vrs) / sizeof(vrs[0]); i++) {
		for (size_t j = 0; j < sizeof(values) / sizeof(values[0]); j++) {
			pn_match m = parse_ok(vrs[i], values[j], true);
			assert_int_equal(m.kind, PN_MATCH_UNIVERSAL);
			assert_string_equal(m.vr, vrs[i]);
			assert_null(m.value);
			assert_null(m.lo);
			assert_null(m.hi);
			/* absent and empty stored values match only here */
			assert_true(pn_match_test(&m, NULL));
			assert_true(pn_match_test(&m, ""));
			assert_true(pn_match_test(&m, "anything"));
			pn_match_clear(&m);
		}
	}
	/* a '*' with something else is not universal */
	pn_match m = parse_ok("LO", "*A", false);
	assert_int_equal(m.kind, PN_MATCH_WILDCARD);
	pn_match_clear(&m);
	parse_fails("DA", "*20240101", false);
	parse_fails(NULL, "X", false);
	parse_fails("P", "X", false);
	parse_fails("PNX", "X", false);
}

static void single_values(void **state)
{
	(void)state;
	pn_match m = parse_ok("LO", "Chest CT", true);
	assert_int_equal(m.kind, PN_MATCH_SINGLE);
	assert_false(m.fold); /* folding is for PN only */
	assert_string_equal(m.value, "Chest CT");
	assert_true(pn_match_test(&m, "Chest CT"));
	assert_true(pn_match_test(&m, " Chest CT  ")); /* padding is not significant */
	assert_false(pn_match_test(&m, "chest ct"));
	assert_false(pn_match_test(&m, "Chest CT2"));
	assert_false(pn_match_test(&m, "Chest"));
	assert_false(pn_match_test(&m, NULL));
	assert_false(pn_match_test(&m, ""));
	/* multi-valued stored values match on any value */
	assert_true(pn_match_test(&m, "MR\\Chest CT"));
	assert_false(pn_match_test(&m, "MR\\Head CT"));
	pn_match_clear(&m);

	/* PN folded when asked, both sides */
	m = parse_ok("PN", "MÜLLER^Hans", true);
	assert_int_equal(m.kind, PN_MATCH_SINGLE);
	assert_true(m.fold);
	assert_string_equal(m.value, "müller^hans");
	assert_true(pn_match_test(&m, "Müller^Hans"));
	assert_true(pn_match_test(&m, "MÜLLER^HANS"));
	assert_false(pn_match_test(&m, "Mueller^Hans"));
	assert_false(pn_match_test(&m, "M\xff")); /* stored invalid UTF-8: no match, no crash */
	pn_match_clear(&m);
	m = parse_ok("PN", "MÜLLER^Hans", false);
	assert_false(m.fold);
	assert_string_equal(m.value, "MÜLLER^Hans");
	assert_false(pn_match_test(&m, "Müller^Hans"));
	assert_true(pn_match_test(&m, "MÜLLER^Hans"));
	pn_match_clear(&m);
	assert_true(matches("PN", "ΟΔΟΣ", true, "οδος"));
	assert_true(matches("PN", "οδος", true, "ΟΔΟΣ"));

	/* UIDs */
	m = parse_ok("UI", "1.2.840.10008.5.1.4.1.1.2", false);
	assert_int_equal(m.kind, PN_MATCH_SINGLE);
	assert_string_equal(m.value, "1.2.840.10008.5.1.4.1.1.2");
	assert_true(pn_match_test(&m, "1.2.840.10008.5.1.4.1.1.2"));
	assert_false(pn_match_test(&m, "1.2.840.10008.5.1.4.1.1.20"));
	pn_match_clear(&m);
	parse_fails("UI", "1.2.03", false);
	parse_fails("UI", "1..2", false);
	parse_fails("UI", "1.2.", false);
	parse_fails("UI", "1.2.a", false);
	parse_fails("UI", "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26", false);
	m = parse_ok("UI", "1.0.2.1234567890123456789012345678901234567890123456789012345678", false);
	assert_int_equal(strlen(m.value), 64);
	pn_match_clear(&m);

	/* numbers: the value as given */
	m = parse_ok("IS", " 42 ", false);
	assert_int_equal(m.kind, PN_MATCH_SINGLE);
	assert_string_equal(m.value, "42");
	assert_true(pn_match_test(&m, "42"));
	assert_true(pn_match_test(&m, "7\\42"));
	pn_match_clear(&m);
	/* '*' means nothing special outside the wildcard VRs */
	m = parse_ok("IS", "4*", false);
	assert_int_equal(m.kind, PN_MATCH_SINGLE);
	assert_false(pn_match_test(&m, "42"));
	pn_match_clear(&m);

	/* '\\' is a character in LT, ST, UT, UR: no list, no splitting */
	m = parse_ok("LT", "C:\\dir", false);
	assert_int_equal(m.kind, PN_MATCH_SINGLE);
	assert_string_equal(m.value, "C:\\dir");
	assert_true(pn_match_test(&m, "C:\\dir"));
	assert_false(pn_match_test(&m, "dir"));
	pn_match_clear(&m);
}

static void lists(void **state)
{
	(void)state;
	pn_match m = parse_ok("UI", "1.2.3\\ 1.2.4 \\\\1.2.5", false);
	assert_int_equal(m.kind, PN_MATCH_LIST);
	assert_int_equal(m.n_list, 3);
	assert_string_equal(m.list[0], "1.2.3");
	assert_string_equal(m.list[1], "1.2.4");
	assert_string_equal(m.list[2], "1.2.5");
	assert_true(pn_match_test(&m, "1.2.4"));
	assert_true(pn_match_test(&m, "1.2.9\\1.2.5"));
	assert_false(pn_match_test(&m, "1.2"));
	assert_false(pn_match_test(&m, "1.2.3.4"));
	assert_false(pn_match_test(&m, ""));
	pn_match_clear(&m);
	pn_match_clear(&m); /* twice is fine */

	/* one bad UID spoils the list; no wildcards in lists */
	parse_fails("UI", "1.2.3\\1.2.04\\1.2.5", false);
	parse_fails("UI", "1.2.3\\1.2.x", false);
	parse_fails("UI", "1.2.3\\1.2.*", false);
	parse_fails("UI", "1.2.3\\*", false);
	parse_fails("CS", "CT\\M?", false);
	parse_fails("PN", "SMITH*\\JONES", true);
	parse_fails("UI", "\\", false);
	parse_fails("CS", " \\ \\", false);

	m = parse_ok("CS", "CT\\MR", false);
	assert_int_equal(m.kind, PN_MATCH_LIST);
	assert_true(pn_match_test(&m, "MR"));
	assert_true(pn_match_test(&m, "PT\\CT"));
	assert_false(pn_match_test(&m, "mr"));
	assert_false(pn_match_test(&m, "US"));
	pn_match_clear(&m);

	m = parse_ok("PN", "SMITH^JOHN\\ΔΗΜΟΣ", true);
	assert_int_equal(m.kind, PN_MATCH_LIST);
	assert_string_equal(m.list[0], "smith^john");
	assert_string_equal(m.list[1], "δημοσ");
	assert_false(pn_match_test(&m, "Δήμος")); /* accents are kept */
	assert_true(pn_match_test(&m, "Δημος"));
	assert_true(pn_match_test(&m, "Smith^John"));
	pn_match_clear(&m);

	/* a trailing separator still makes a list (of one) */
	m = parse_ok("UI", "1.2.3\\", false);
	assert_int_equal(m.kind, PN_MATCH_LIST);
	assert_int_equal(m.n_list, 1);
	pn_match_clear(&m);

	m = parse_ok("DS", "1.5\\2", false);
	assert_int_equal(m.kind, PN_MATCH_LIST);
	assert_true(pn_match_test(&m, "2"));
	pn_match_clear(&m);
}

static void wildcards(void **state)
{
	(void)state;
	pn_match m = parse_ok("PN", "SMI*", false);
	assert_int_equal(m.kind, PN_MATCH_WILDCARD);
	assert_string_equal(m.pattern, "SMI*");
	assert_string_equal(m.like, "SMI%");
	assert_true(pn_match_test(&m, "SMITH^JOHN"));
	assert_true(pn_match_test(&m, "SMI"));
	assert_false(pn_match_test(&m, "smith"));
	assert_false(pn_match_test(&m, "XSMITH"));
	assert_false(pn_match_test(&m, NULL));
	assert_false(pn_match_test(&m, ""));
	pn_match_clear(&m);

	/* LIKE escapes; consecutive stars collapsed */
	m = parse_ok("LO", "50%_off**?x", false);
	assert_string_equal(m.pattern, "50%_off*?x");
	assert_string_equal(m.like, "50\\%\\_off%_x");
	assert_true(pn_match_test(&m, "50%_off today: x"));
	assert_false(pn_match_test(&m, "50%_offx"));
	assert_false(pn_match_test(&m, "50a_off today: x")); /* '%' is literal in DICOM */
	pn_match_clear(&m);
	m = parse_ok("LT", "C:\\dir\\*", false);
	assert_int_equal(m.kind, PN_MATCH_WILDCARD);
	assert_string_equal(m.like, "C:\\\\dir\\\\%");
	assert_true(pn_match_test(&m, "C:\\dir\\file"));
	assert_false(pn_match_test(&m, "C:/dir/file"));
	pn_match_clear(&m);

	/* '?' is one code point, however many bytes */
	m = parse_ok("PN", "山?", true);
	assert_string_equal(m.like, "山_");
	assert_true(pn_match_test(&m, "山田"));
	assert_false(pn_match_test(&m, "山"));
	assert_false(pn_match_test(&m, "山田太"));
	assert_false(pn_match_test(&m, "山a田"));
	pn_match_clear(&m);
	assert_true(matches("PN", "?田", false, "山田"));
	assert_true(matches("PN", "??", false, "😀é"));
	assert_false(matches("PN", "???", false, "😀é"));

	/* the whole value, component groups included */
	assert_true(matches("PN", "*山田*", true, "Yamada^Tarou=山田^太郎=やまだ^たろう"));
	assert_true(matches("PN", "yamada*", true, "Yamada^Tarou=山田^太郎=やまだ^たろう"));
	assert_false(matches("PN", "yamada*", false, "Yamada^Tarou=山田^太郎=やまだ^たろう"));

	/* folding of the pattern and of the stored value */
	m = parse_ok("PN", "ΕΛΛΗΝ*", true);
	assert_string_equal(m.pattern, "ελλην*");
	assert_string_equal(m.like, "ελλην%");
	assert_true(pn_match_test(&m, "Ελληνική"));
	assert_true(pn_match_test(&m, "ΕΛΛΗΝΙΚΉ"));
	assert_false(pn_match_test(&m, "Ελλάδα"));
	pn_match_clear(&m);
	assert_true(matches("PN", "*STRASSE", true, "hauptstrasse"));
	assert_true(matches("PN", "*ος", true, "ΟΔΟΣ")); /* final sigma */

	/* multi-valued stored value: any */
	assert_true(matches("CS", "OR*", false, "ORIGINAL\\PRIMARY"));
	assert_true(matches("CS", "PRI*", false, "ORIGINAL\\PRIMARY"));
	assert_false(matches("CS", "ORIGINAL?PRIMARY", false, "ORIGINAL\\PRIMARY"));

	/* various shapes */
	assert_true(matches("SH", "*", false, "")); /* universal */
	assert_true(matches("SH", "?*", false, "x"));
	assert_false(matches("SH", "?*", false, ""));
	assert_true(matches("SH", "a*b*c", false, "aXbYc"));
	assert_true(matches("SH", "a*b*c", false, "abbbcbc"));
	assert_false(matches("SH", "a*b*c", false, "abcx"));
	assert_true(matches("SH", "*?", false, "abc"));
	assert_true(matches("AE", "STORE?", false, "STORE1"));
	assert_true(matches("UC", "*x*", false, "x"));
	assert_true(matches("UR", "http://*", false, "http://a\\b"));
	assert_true(matches("ST", "a\\*", false, "a\\b"));
	assert_true(matches("UT", "??", false, "ab"));
	assert_true(matches("SH", "a?c", false, "a?c"));
	assert_true(matches("SH", "a*c", false, "a*c"));
}

static void wildcards_in_other_vrs(void **state)
{
	(void)state;
	parse_fails("UI", "1.2.*", false);
	parse_fails("UI", "1.2.?", false);
	parse_fails("UI", "*1", false);
	parse_fails("DA", "2024*", false);
	parse_fails("DA", "2024010?", false);
	parse_fails("TM", "08*", false);
	parse_fails("DT", "2024*", false);
	parse_fails("DT", "*-2024", false);
}

static void pathological_patterns(void **state)
{
	(void)state;
	size_t n = 200000;
	char *s = malloc(n + 2);
	assert_non_null(s);
	memset(s, 'a', n);
	s[n] = '\0';
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_false(matches("LO", "*a*a*a*a*a*b", false, s));
	assert_false(matches("PN", "*A*A*A*A*A*A*A*A*A*A*A*A*A*A*A*A*B", true, s));
	assert_false(matches("LO", "*?*?*?*?*?*?*?*?*?*?b", false, s));
	assert_true(matches("LO", "*a*a*a*a*a*a", false, s));
	s[n] = 'b';
	s[n + 1] = '\0';
	assert_true(matches("LO", "*a*a*a*a*a*b", false, s));
	assert_true(matches("LO", "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*ab", false, s));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	/* exponential backtracking would never finish; linear is milliseconds */
	assert_true(secs < 5.0);
	free(s);
}

static void dates(void **state)
{
	(void)state;
	range_is("DA", "20240229", "2024-02-29", "2024-02-29");
	range_is("DA", "2024.02.29", "2024-02-29", "2024-02-29");
	range_is("DA", "20000229", "2000-02-29", "2000-02-29");
	range_is("DA", "20240101-20240131", "2024-01-01", "2024-01-31");
	range_is("DA", "2024.01.01-2024.01.31", "2024-01-01", "2024-01-31");
	range_is("DA", "-20240131", NULL, "2024-01-31");
	range_is("DA", "20240101-", "2024-01-01", NULL);
	range_is("DA", "20240101-20240101", "2024-01-01", "2024-01-01");
	parse_fails("DA", "20230229", false); /* not a leap year */
	parse_fails("DA", "19000229", false); /* nor this one */
	parse_fails("DA", "20240230", false);
	parse_fails("DA", "20240431", false);
	parse_fails("DA", "20241301", false);
	parse_fails("DA", "20240001", false);
	parse_fails("DA", "20240100", false);
	parse_fails("DA", "00000101", false);
	parse_fails("DA", "2024011", false);
	parse_fails("DA", "202401011", false);
	parse_fails("DA", "2024-01-01", false);
	parse_fails("DA", "2024.0101", false);
	parse_fails("DA", "20240131-20240101", false); /* inverted */
	parse_fails("DA", "-", false);
	parse_fails("DA", "--", false);
	parse_fails("DA", "20240101--20240131", false);
	parse_fails("DA", "20240101-20240131-", false);
	parse_fails("DA", "20240101\\20240102", false);
	parse_fails("DA", "2024010a", false);

	pn_match m = parse_ok("DA", "20240101-20240131", false);
	assert_true(pn_match_test(&m, "20240101"));
	assert_true(pn_match_test(&m, "20240115"));
	assert_true(pn_match_test(&m, "20240131"));
	assert_true(pn_match_test(&m, "2024.01.15"));
	assert_true(pn_match_test(&m, "20231231\\20240110"));
	assert_false(pn_match_test(&m, "20231231"));
	assert_false(pn_match_test(&m, "20240201"));
	assert_false(pn_match_test(&m, "garbage"));
	assert_false(pn_match_test(&m, "20240132"));
	assert_false(pn_match_test(&m, ""));
	assert_false(pn_match_test(&m, NULL));
	pn_match_clear(&m);
	m = parse_ok("DA", "-20240131", false);
	assert_true(pn_match_test(&m, "19000101"));
	assert_false(pn_match_test(&m, "20240201"));
	pn_match_clear(&m);
	m = parse_ok("DA", "20240229", false);
	assert_true(pn_match_test(&m, "20240229"));
	assert_false(pn_match_test(&m, "20240228"));
	pn_match_clear(&m);

	char out[11];
	assert_int_equal(pn_norm_date("19991231", out), 0);
	assert_string_equal(out, "1999-12-31");
	assert_int_equal(pn_norm_date("99991231", out), 0);
	assert_string_equal(out, "9999-12-31");
	assert_int_equal(pn_norm_date("", out), -EINVAL);
	/* padding is not part of the value (as when indexing: pn_da_to_iso) */
	assert_int_equal(pn_norm_date(" 19991231 ", out), 0);
	assert_string_equal(out, "1999-12-31");
	assert_int_equal(pn_norm_date("1999 1231", out), -EINVAL);
	assert_int_equal(pn_norm_date("19991231\\", out), -EINVAL);
}

static void times(void **state)
{
	(void)state;
	/* missing parts: lowest below, highest above */
	range_is("TM", "08", "08:00:00.000000", "08:59:59.999999");
	range_is("TM", "0800", "08:00:00.000000", "08:00:59.999999");
	range_is("TM", "080000", "08:00:00.000000", "08:00:00.999999");
	range_is("TM", "080000.5", "08:00:00.500000", "08:00:00.599999");
	range_is("TM", "080000.123456", "08:00:00.123456", "08:00:00.123456");
	range_is("TM", "08:00:00", "08:00:00.000000", "08:00:00.999999");
	range_is("TM", "08:30", "08:30:00.000000", "08:30:59.999999");
	range_is("TM", "08:00:00.25", "08:00:00.250000", "08:00:00.259999");
	range_is("TM", "-08", NULL, "08:59:59.999999");
	range_is("TM", "0800-", "08:00:00.000000", NULL);
	range_is("TM", "0800-1230", "08:00:00.000000", "12:30:59.999999");
	range_is("TM", "08-08", "08:00:00.000000", "08:59:59.999999");
	range_is("TM", "235960", "23:59:59.000000", "23:59:59.999999"); /* leap second */
	/* a time range running backwards is parsed, marked reversed (it means
	 * something only in a combined date-time range; scp/find_query.c
	 * refuses it otherwise) and matches no time of day on its own */
	pn_match r = parse_ok("TM", "1200-0800", false);
	assert_true(r.reversed);
	assert_string_equal(r.lo, "12:00:00.000000");
	assert_string_equal(r.hi, "08:00:59.999999");
	assert_false(pn_match_test(&r, "1300"));
	assert_false(pn_match_test(&r, "0700"));
	pn_match_clear(&r);
	r = parse_ok("TM", "0800-1200", false);
	assert_false(r.reversed);
	pn_match_clear(&r);
	parse_fails("DA", "20240102-20240101", false);
	range_is("TM", "0830-08", "08:30:00.000000", "08:59:59.999999");
	parse_fails("TM", "-", false);
	parse_fails("TM", "--", false);
	parse_fails("TM", "2400", false);
	parse_fails("TM", "0860", false);
	parse_fails("TM", "080061", false);
	parse_fails("TM", "8", false);
	parse_fails("TM", "080", false);
	parse_fails("TM", "0800.5", false);
	parse_fails("TM", "080000.", false);
	parse_fails("TM", "080000.1234567", false);
	parse_fails("TM", "08:0000", false);
	parse_fails("TM", "0800:00", false);
	parse_fails("TM", "08:00:", false);
	parse_fails("TM", "08::00", false);
	parse_fails("TM", "08\\09", false);

	pn_match m = parse_ok("TM", "08", false);
	assert_true(pn_match_test(&m, "08"));
	assert_true(pn_match_test(&m, "083000"));
	assert_true(pn_match_test(&m, "085959.999999"));
	assert_true(pn_match_test(&m, "08:45"));
	assert_false(pn_match_test(&m, "09"));
	assert_false(pn_match_test(&m, "075959.999999"));
	assert_false(pn_match_test(&m, "8"));
	pn_match_clear(&m);
	m = parse_ok("TM", "-0800", false);
	assert_true(pn_match_test(&m, "080059"));
	assert_false(pn_match_test(&m, "0801"));
	pn_match_clear(&m);

	char out[16];
	assert_int_equal(pn_norm_time("0930", false, out), 0);
	assert_string_equal(out, "09:30:00.000000");
	assert_int_equal(pn_norm_time("0930", true, out), 0);
	assert_string_equal(out, "09:30:59.999999");
	assert_int_equal(pn_norm_time("23", true, out), 0);
	assert_string_equal(out, "23:59:59.999999");
	assert_int_equal(pn_norm_time("", false, out), -EINVAL);
	assert_int_equal(pn_norm_time("ab", false, out), -EINVAL);
}

static void date_times(void **state)
{
	(void)state;
	range_is("DT", "2024", "2024-01-01 00:00:00.000000", "2024-12-31 23:59:59.999999");
	range_is("DT", "202402", "2024-02-01 00:00:00.000000", "2024-02-29 23:59:59.999999");
	range_is("DT", "202302", "2023-02-01 00:00:00.000000", "2023-02-28 23:59:59.999999");
	range_is("DT", "20240315", "2024-03-15 00:00:00.000000", "2024-03-15 23:59:59.999999");
	range_is("DT", "2024031508", "2024-03-15 08:00:00.000000", "2024-03-15 08:59:59.999999");
	range_is("DT", "202403150830", "2024-03-15 08:30:00.000000", "2024-03-15 08:30:59.999999");
	range_is("DT", "20240315083015", "2024-03-15 08:30:15.000000", "2024-03-15 08:30:15.999999");
	range_is("DT", "20240315083015.5", "2024-03-15 08:30:15.500000", "2024-03-15 08:30:15.599999");
	/* offsets ignored, '-' in an offset is not a range */
	range_is("DT", "20240315083015+0100", "2024-03-15 08:30:15.000000", "2024-03-15 08:30:15.999999");
	range_is("DT", "20240315083015-0500", "2024-03-15 08:30:15.000000", "2024-03-15 08:30:15.999999");
	range_is("DT", "20240315-0500", "2024-03-15 00:00:00.000000", "2024-03-15 23:59:59.999999");
	range_is("DT", "20240101120000-0500-20240102", "2024-01-01 12:00:00.000000", "2024-01-02 23:59:59.999999");
	range_is("DT", "20240101-20240201", "2024-01-01 00:00:00.000000", "2024-02-01 23:59:59.999999");
	range_is("DT", "2023-2024", "2023-01-01 00:00:00.000000", "2024-12-31 23:59:59.999999");
	range_is("DT", "-20240101", NULL, "2024-01-01 23:59:59.999999");
	range_is("DT", "20240101-", "2024-01-01 00:00:00.000000", NULL);
	range_is("DT", "20240101+0100-", "2024-01-01 00:00:00.000000", NULL);
	range_is("DT", "-20240101+0100", NULL, "2024-01-01 23:59:59.999999");
	parse_fails("DT", "20240201-20240101", false);
	parse_fails("DT", "-", false);
	parse_fails("DT", "--", false);
	parse_fails("DT", "202", false);
	parse_fails("DT", "2024013", false);
	parse_fails("DT", "20240230", false);
	parse_fails("DT", "202413", false);
	parse_fails("DT", "2024031524", false);
	parse_fails("DT", "20240315.5", false);
	parse_fails("DT", "20240315083015.1234567", false);
	parse_fails("DT", "20240315083015+01", false);
	parse_fails("DT", "20240315083015+1500", false);
	parse_fails("DT", "20240315083015+0160", false);
	parse_fails("DT", "20240315 083015", false);

	pn_match m = parse_ok("DT", "202403", false);
	assert_true(pn_match_test(&m, "20240301"));
	assert_true(pn_match_test(&m, "20240331235959.999999+0100"));
	assert_false(pn_match_test(&m, "2024")); /* stored: its lower form, 2024-01-01 */
	assert_false(pn_match_test(&m, "20240401"));
	assert_false(pn_match_test(&m, "2024022923"));
	assert_false(pn_match_test(&m, "bogus"));
	pn_match_clear(&m);
}

static void invalid_utf8(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "A\xff",                    /* not UTF-8 at all */
	    "\xc0\xaf",                 /* overlong */
	    "\xe0\x80\xaf",             /* overlong */
	    "\xed\xa0\x80",             /* surrogate */
	    "\xf4\x90\x80\x80",         /* above U+10FFFF */
	    "\xf8\x88\x80\x80\x80",     /* 5-byte form */
	    "\xfc\x84\x80\x80\x80\x80", /* 6-byte form */
	    "\xe5\xb1",                 /* truncated */
	    "\x80",                     /* lone continuation */
	};
	static const char *const vrs[] = {"PN", "LO", "UI", "DA", "CS", "IS"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (size_t j = 0; j < sizeof(vrs) / sizeof(vrs[0]); j++) {
			parse_fails(vrs[j], bad[i], true);
			parse_fails(vrs[j], bad[i], false);
		}
		char *f = (char *)"untouched";
		assert_int_equal(pn_fold_utf8(bad[i], &f), -EINVAL);
		assert_string_equal(f, "untouched");
	}
	parse_fails("PN", "SMITH*\xff", true);
	parse_fails("LO", "a\\\xc0\xaf", false);
}

static void folding(void **state)
{
	(void)state;
	folds_to("MÜLLER", "müller");
	folds_to("ΕΛΛΗΝΙΚΉ", "ελληνική");
	folds_to("ÅSA", "åsa");
	folds_to("ΟΔΟΣ", "οδοσ");
	folds_to("οδος", "οδοσ"); /* final sigma is sigma */
	folds_to("ИВАНОВ^Пётр", "иванов^пётр");
	folds_to("ŁÓDŹ", "łódź");
	folds_to("山田^太郎=やまだ^たろう", "山田^太郎=やまだ^たろう");
	folds_to("Yamada^Tarou", "yamada^tarou");
	folds_to("", "");
	folds_to("123 ^=\\*?", "123 ^=\\*?");
	folds_to("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");
	folds_to("ẞ", "ß");
	/* ICU maps this one to two code points: i + U+0307 */
	folds_to("İSTANBUL", "i\xcc\x87stanbul");
}

static void clearing(void **state)
{
	(void)state;
	pn_match z;
	memset(&z, 0, sizeof(z));
	pn_match_clear(&z);
	pn_match_clear(&z);
	static const char *const cases[][2] = {
	    {"PN", "SMITH*"}, {"UI", "1.2\\1.3"}, {"DA", "20240101-"}, {"LO", "x"}, {"TM", "08"}, {"PN", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pn_match m = parse_ok(cases[i][0], cases[i][1], true);
		pn_match_clear(&m);
		assert_null(m.value);
		assert_null(m.like);
		assert_null(m.pattern);
		assert_null(m.list);
		assert_int_equal(m.n_list, 0);
		assert_null(m.lo);
		assert_null(m.hi);
		assert_int_equal(m.kind, PN_MATCH_UNIVERSAL);
		pn_match_clear(&m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(universal),
	    cmocka_unit_test(single_values),
	    cmocka_unit_test(lists),
	    cmocka_unit_test(wildcards),
	    cmocka_unit_test(wildcards_in_other_vrs),
	    cmocka_unit_test(pathological_patterns),
	    cmocka_unit_test(dates),
	    cmocka_unit_test(times),
	    cmocka_unit_test(date_times),
	    cmocka_unit_test(invalid_utf8),
	    cmocka_unit_test(folding),
	    cmocka_unit_test(clearing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
