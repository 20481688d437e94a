/* Specific Character Set decoding: byte strings as PS3.5 Annexes H-K
 * encode them, checked against their UTF-8 text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "charset.h"

static void expect(const char *spec, const char *in, const char *utf8, int rc_expected)
{
	pn_charset *cs = NULL;
	assert_int_equal(pn_charset_create(spec, &cs), 0);
	char *out = NULL;
	assert_int_equal(pn_charset_to_utf8(cs, in, strlen(in), &out), rc_expected);
	assert_string_equal(out, utf8);
	free(out);
	pn_charset_free(cs);
}

static void single_byte_sets(void **state)
{
	(void)state;
	expect("ISO_IR 100", "M\xfcller^Hans", "Müller^Hans", 0);
	expect("ISO_IR 126", "\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2", "Διονυσιος", 0);
	expect("ISO_IR 192", "Müller^Jürgen", "Müller^Jürgen", 0);
	expect("GB18030", "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\x96\x7c=", "Wang^XiaoDong=王^小東=", 0);
	expect(NULL, "SMITH^JOHN", "SMITH^JOHN", 0);
}

static void iso2022_japanese(void **state)
{
	(void)state;
	/* PS3.5 H.3.1: ISO 2022 IR 87, three component groups */
	expect("\\ISO 2022 IR 87",
	       "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
	       "Yamada^Tarou=山田^太郎=やまだ^たろう", 0);
	/* H.3.2: ISO 2022 IR 13 (half-width katakana in G1) and IR 87 */
	expect("ISO 2022 IR 13\\ISO 2022 IR 87", "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J",
	       "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎", 0);
}

static void iso2022_korean_and_latin(void **state)
{
	(void)state;
	expect("\\ISO 2022 IR 149",
	       "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
	       "Hong^Gildong=洪^吉洞=홍^길동", 0);
	/* G1 switched to Latin-1 by escape, back to the initial set at '^' */
	expect("ISO 2022 IR 6\\ISO 2022 IR 100", "\x1b-AM\xfcller^Hans", "Müller^Hans", 0);
}

static void bad_input(void **state)
{
	(void)state;
	pn_charset *cs = NULL;
	assert_int_equal(pn_charset_create("ISO_IR 999", &cs), -22);
	assert_int_equal(pn_charset_create("ISO_IR 100\\NOPE", &cs), -22);
	/* invalid UTF-8 becomes U+FFFD and is reported */
	expect("ISO_IR 192",
	       "A\xff"
	       "B",
	       "A\xef\xbf\xbd"
	       "B",
	       -84);
	/* obsolete 5-byte form, overlong, surrogate: all refused (iconv lets the first through) */
	expect("ISO_IR 192",
	       "\xf8\xbd\xbf\xbd\xbf"
	       "B",
	       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
	       "B",
	       -84);
	expect("ISO_IR 192",
	       "\xc0\xaf"
	       "A",
	       "\xef\xbf\xbd\xef\xbf\xbd"
	       "A",
	       -84);
	expect("ISO_IR 192", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", -84);
	/* an unknown escape sequence */
	expect("\\ISO 2022 IR 87", "A\x1bZ", "A\xef\xbf\xbdZ", -84);
	/* 8-bit bytes with no character set declared: read as Latin-1, reported */
	expect(NULL, "M\xfcller", "Müller", -84);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(single_byte_sets),
	    cmocka_unit_test(iso2022_japanese),
	    cmocka_unit_test(iso2022_korean_and_latin),
	    cmocka_unit_test(bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
