#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "attr_levels.h"
#include "dcm/pn_dcm.h"

static void levels(void **state)
{
	(void)state;
	assert_int_equal(pn_attr_level(PN_TAG(0x0008, 0x0005)), PN_LEVEL_EVERY);
	assert_int_equal(pn_attr_level(PN_TAG(0x0010, 0x0010)), PN_LEVEL_PATIENT);
	assert_int_equal(pn_attr_level(PN_TAG(0x0010, 0x0020)), PN_LEVEL_PATIENT);
	assert_int_equal(pn_attr_level(PN_TAG(0x0010, 0x1010)), PN_LEVEL_STUDY); /* PatientAge: Patient Study */
	assert_int_equal(pn_attr_level(PN_TAG(0x0020, 0x000D)), PN_LEVEL_STUDY);
	assert_int_equal(pn_attr_level(PN_TAG(0x0008, 0x0020)), PN_LEVEL_STUDY);
	assert_int_equal(pn_attr_level(PN_TAG(0x0008, 0x0060)), PN_LEVEL_SERIES);
	assert_int_equal(pn_attr_level(PN_TAG(0x0020, 0x000E)), PN_LEVEL_SERIES);
	assert_int_equal(pn_attr_level(PN_TAG(0x0040, 0x0280)), PN_LEVEL_SERIES); /* last in the table */
	assert_int_equal(pn_attr_level(PN_TAG(0x0008, 0x0018)), PN_LEVEL_INSTANCE);
	assert_int_equal(pn_attr_level(PN_TAG(0x0028, 0x0010)), PN_LEVEL_INSTANCE);
	assert_int_equal(pn_attr_level(PN_TAG(0x0009, 0x1001)), PN_LEVEL_INSTANCE); /* private */
	assert_int_equal(pn_attr_level(PN_TAG(0x7FE0, 0x0010)), PN_LEVEL_NONE);
	assert_int_equal(pn_attr_level(PN_TAG(0x6000, 0x3000)), PN_LEVEL_NONE);
	assert_int_equal(pn_attr_level(PN_TAG(0x0088, 0x0200)), PN_LEVEL_NONE);
	assert_int_equal(pn_attr_level(PN_TAG(0x0010, 0x0000)), PN_LEVEL_NONE); /* group length */
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(levels)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
