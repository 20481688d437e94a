#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "dicom_values.h"

static void dates(void **state)
{
	(void)state;
	char out[11];
	assert_true(pn_da_to_iso("20240229", out));
	assert_string_equal(out, "2024-02-29");
	assert_true(pn_da_to_iso("1999.12.31", out));
	assert_string_equal(out, "1999-12-31");
	assert_true(pn_da_to_iso("20010101\\20020202", out));
	assert_string_equal(out, "2001-01-01");
	assert_false(pn_da_to_iso("20230229", out));
	assert_false(pn_da_to_iso("20231301", out));
	assert_false(pn_da_to_iso("2023", out));
	assert_false(pn_da_to_iso("", out));
	assert_false(pn_da_to_iso("abcdefgh", out));
}

static void times(void **state)
{
	(void)state;
	char out[16];
	assert_true(pn_tm_to_iso("070907.0705", out));
	assert_string_equal(out, "07:09:07.0705");
	assert_true(pn_tm_to_iso("1010", out));
	assert_string_equal(out, "10:10:00");
	assert_true(pn_tm_to_iso("10", out));
	assert_string_equal(out, "10:00:00");
	assert_true(pn_tm_to_iso("12:30:45", out));
	assert_string_equal(out, "12:30:45");
	assert_false(pn_tm_to_iso("2500", out));
	assert_false(pn_tm_to_iso("101", out));
	assert_false(pn_tm_to_iso("1010.5", out));
	assert_false(pn_tm_to_iso("101010.1234567", out));
}

static void numbers(void **state)
{
	(void)state;
	char i[16], d[32];
	assert_true(pn_is_normalise(" 42 ", i));
	assert_string_equal(i, "42");
	assert_true(pn_is_normalise("-7\\8", i));
	assert_string_equal(i, "-7");
	assert_false(pn_is_normalise("99999999999", i));
	assert_false(pn_is_normalise("1.5", i));
	assert_true(pn_ds_normalise("2.5", d));
	assert_string_equal(d, "2.5");
	assert_true(pn_ds_normalise("1e3", d));
	assert_false(pn_ds_normalise("nan", d));
	assert_false(pn_ds_normalise("x", d));
}

static void sanitise(void **state)
{
	(void)state;
	char s1[] = "M\xc3\xbcller";
	assert_int_equal(pn_utf8_sanitise(s1), 0);
	assert_string_equal(s1, "M\xc3\xbcller");
	char s2[] = "M\xfcller\x01";
	assert_int_equal(pn_utf8_sanitise(s2), 2);
	assert_string_equal(s2, "M?ller?");
	char s3[] = "  padded  ";
	pn_trim(s3);
	assert_string_equal(s3, "padded");
}

static void tz_offsets(void **state)
{
	(void)state;
	int m = 0;
	assert_true(pn_tz_offset_parse("+0100", &m));
	assert_int_equal(m, 60);
	assert_true(pn_tz_offset_parse("-0930 ", &m));
	assert_int_equal(m, -570);
	assert_true(pn_tz_offset_parse("+1400", &m));
	assert_int_equal(m, 840);
	assert_true(pn_tz_offset_parse("-1200", &m));
	assert_int_equal(m, -720);
	assert_true(pn_tz_offset_parse("+0000", &m));
	assert_int_equal(m, 0);
	m = 7;
	assert_false(pn_tz_offset_parse("0100", &m));
	assert_false(pn_tz_offset_parse("+01", &m));
	assert_false(pn_tz_offset_parse("+01:00", &m));
	assert_false(pn_tz_offset_parse("+0160", &m));
	assert_false(pn_tz_offset_parse("+1401", &m));
	assert_false(pn_tz_offset_parse("-1201", &m));
	assert_false(pn_tz_offset_parse("+01a0", &m));
	assert_false(pn_tz_offset_parse("", &m));
	assert_false(pn_tz_offset_parse("+0100\\+0200", &m));
	assert_int_equal(m, 7); /* untouched on failure */
}

static void shifts(void **state)
{
	(void)state;
	char da[9] = "", tm[24] = "";
	/* 23:30 at +0100 seen from +0200: the next day */
	assert_true(pn_da_tm_shift("20240101", "233000", 60, da, tm));
	assert_string_equal(da, "20240102");
	assert_string_equal(tm, "003000");
	/* back across a year and a leap day */
	assert_true(pn_da_tm_shift("20240301", "0030", -60, da, tm));
	assert_string_equal(da, "20240229");
	assert_string_equal(tm, "2330");
	assert_true(pn_da_tm_shift("20250101", "010203.5", -120, da, tm));
	assert_string_equal(da, "20241231");
	assert_string_equal(tm, "230203.5");
	/* the old form loses its colons; HH keeps its precision or gains minutes */
	assert_true(pn_da_tm_shift("20241231", "23:15:00", 26 * 60, da, tm));
	assert_string_equal(da, "20250102");
	assert_string_equal(tm, "011500");
	assert_true(pn_da_tm_shift("20240615", "10", 120, da, tm));
	assert_string_equal(tm, "12");
	assert_true(pn_da_tm_shift("20240615", "10", -30, da, tm));
	assert_string_equal(tm, "0930");
	/* no date: the time wraps alone */
	strcpy(da, "untouch");
	assert_true(pn_da_tm_shift(NULL, "0100", -120, da, tm));
	assert_string_equal(tm, "2300");
	assert_string_equal(da, "untouch");
	assert_true(pn_da_tm_shift("", "120000", 0, da, tm));
	assert_string_equal(tm, "120000");
	/* what cannot be read is left alone */
	strcpy(tm, "keep");
	assert_false(pn_da_tm_shift("20240230", "1000", 60, da, tm));
	assert_false(pn_da_tm_shift("20240101", "2500", 60, da, tm));
	assert_false(pn_da_tm_shift("20240101", "101", 60, da, tm));
	assert_false(pn_da_tm_shift("20240101", "1010.5", 60, da, tm));
	assert_false(pn_da_tm_shift("20240101", "101010.", 60, da, tm));
	assert_false(pn_da_tm_shift("20240101", "1010\\1111", 60, da, tm));
	assert_false(pn_da_tm_shift("99991231", "2300", 120, da, tm));
	assert_false(pn_da_tm_shift("00010101", "0000", -1, da, tm));
	assert_string_equal(tm, "keep");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(dates),    cmocka_unit_test(times),      cmocka_unit_test(numbers),
	    cmocka_unit_test(sanitise), cmocka_unit_test(tz_offsets), cmocka_unit_test(shifts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
