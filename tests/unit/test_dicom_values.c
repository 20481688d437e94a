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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(dates),
	    cmocka_unit_test(times),
	    cmocka_unit_test(numbers),
	    cmocka_unit_test(sanitise),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
