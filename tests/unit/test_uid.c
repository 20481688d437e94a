#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "uid.h"

static void valid_uids(void **state)
{
	(void)state;
	assert_true(pn_uid_valid("1.2.840.10008.5.1.4.1.1.2"));
	assert_true(pn_uid_valid("0"));
	assert_true(pn_uid_valid("1.0.2"));
	assert_true(pn_uid_valid("2.25.159142522441686625131027334693319430699"));
	/* exactly 64 characters */
	assert_true(pn_uid_valid("1.2345678901234567890123456789012345678901234567890123456789012"));
}

static void invalid_uids(void **state)
{
	(void)state;
	assert_false(pn_uid_valid(""));
	assert_false(pn_uid_valid("1..2"));
	assert_false(pn_uid_valid(".1.2"));
	assert_false(pn_uid_valid("1.2."));
	assert_false(pn_uid_valid("1.02")); /* leading zero */
	assert_false(pn_uid_valid("1.2.3a"));
	assert_false(pn_uid_valid("1.2.3/../../etc"));
	assert_false(pn_uid_valid("../../etc/passwd"));
	assert_false(pn_uid_valid("1.2 .3"));
	assert_false(pn_uid_valid("1.234567890123456789012345678901234567890123456789012345678901234")); /* 65 */
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(valid_uids), cmocka_unit_test(invalid_uids)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
