#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "storage_path.h"

static void path_shape(void **state)
{
	(void)state;
	char rel[PN_REL_PATH_MAX], again[PN_REL_PATH_MAX], other[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2.3", "1.2.3.4", 0x1a2b3c4d, rel), 0);
	assert_true(pn_storage_rel_path_valid(rel));
	assert_int_equal(strlen(rel), 6 + 32 + 1 + 32 + 1 + 8 + 4);
	assert_memory_equal(rel, rel + 6, 2); /* outer folders: the series hash's first hex pairs */
	assert_memory_equal(rel + 3, rel + 8, 2);
	assert_int_equal(rel[PN_REL_DIR_LEN], '/');
	assert_non_null(strstr(rel, ".1a2b3c4d.dcm"));
	assert_null(strstr(rel, "1.2.3.4")); /* the UID never appears */
	/* deterministic in the UID, distinct across UIDs */
	assert_int_equal(pn_storage_rel_path("1.2.3", "1.2.3.4", 0x1a2b3c4d, again), 0);
	assert_string_equal(rel, again);
	assert_int_equal(pn_storage_rel_path("1.2.3", "1.2.3.5", 0x1a2b3c4d, other), 0);
	assert_string_not_equal(rel, other);
	/* the same series: the same folder */
	assert_memory_equal(rel, other, PN_REL_DIR_LEN);
	char other_series[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2.4", "1.2.3.4", 0x1a2b3c4d, other_series), 0);
	assert_memory_not_equal(rel, other_series, PN_REL_DIR_LEN);
}

static void refuses_bad_uids(void **state)
{
	(void)state;
	char rel[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2.3", "1.2.3/../../x", 1, rel), -22);
	assert_int_equal(pn_storage_rel_path("", "1.2", 1, rel), -22);
	assert_int_equal(pn_storage_rel_path("1.2/..", "1.2", 1, rel), -22);
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.abc", 1, rel), -22);
}

static void tmp_round_trip(void **state)
{
	(void)state;
	char rel[PN_REL_PATH_MAX], tmp[PN_REL_PATH_MAX], back[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2.840", "1.2.840.1", 7, rel), 0);
	assert_int_equal(pn_storage_tmp_name(rel, tmp), 0);
	assert_null(strchr(tmp, '/'));
	assert_int_equal(pn_storage_rel_from_tmp(tmp, back), 0);
	assert_string_equal(rel, back);
}

/* Temporary names carry the generation, final paths give it back. */
static void generations(void **state)
{
	(void)state;
	char name[PN_REL_PATH_MAX], rel[PN_REL_PATH_MAX];
	uint32_t g = 0;
	pn_storage_part_name(0xdeadbeef, 1234, 56, name);
	assert_string_equal(name, "in-deadbeef-1234-56");
	assert_true(pn_storage_part_generation(name, &g));
	assert_int_equal(g, 0xdeadbeef);
	pn_storage_part_name(7, 1, 1, name);
	assert_true(pn_storage_part_generation(name, &g));
	assert_int_equal(g, 7);
	const char *foreign[] = {
	    "in-123-4",
	    "in-0000000g-1-1",
	    "in-00000001",
	    "garbage",
	    "",
	    "in-00000001x1-1",
	    "ab-cd-abcd0000000000000000000000000000-11111111111111111111111111111111.00000001.dcm"};
	for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++)
		assert_false(pn_storage_part_generation(foreign[i], &g));
	/* the process id, which says whose file it is */
	int pid = 0;
	pn_storage_part_name(0xdeadbeef, 1234, 56, name);
	assert_true(pn_storage_part_pid(name, &pid));
	assert_int_equal(pid, 1234);
	const char *no_pid[] = {
	    "in-deadbeef-1234",    "in-deadbeef--56",  "in-deadbeef-12a4-56",       "in-deadbeef-1234-",
	    "in-deadbeef-1234-5x", "in-deadbeef-0-56", "in-deadbeef-12345678901-1", "garbage"};
	for (size_t i = 0; i < sizeof no_pid / sizeof no_pid[0]; i++)
		assert_false(pn_storage_part_pid(no_pid[i], &pid));
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.3", 0x0badc0de, rel), 0);
	assert_true(pn_storage_rel_generation(rel, &g));
	assert_int_equal(g, 0x0badc0de);
	assert_false(pn_storage_rel_generation("tmp/in-deadbeef-1-1", &g));
}

static void rejects_foreign_names(void **state)
{
	(void)state;
	char out[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_from_tmp("../../etc/passwd", out), -22);
	/* folders that do not match the name */
	assert_int_equal(
	    pn_storage_rel_from_tmp(
	        "ab-ce-abcd0000000000000000000000000000-11111111111111111111111111111111.00000001.dcm", out),
	    -22);
	assert_int_equal(
	    pn_storage_rel_from_tmp(
	        "ab-cd-abcd0000000000000000000000000000-11111111111111111111111111111111.00000001.dcm", out),
	    0);
	assert_string_equal(out,
	                    "ab/cd/abcd0000000000000000000000000000/11111111111111111111111111111111.00000001.dcm");
	assert_int_equal(pn_storage_rel_from_tmp("in-123-4", out), -22);
	assert_false(pn_storage_rel_path_valid(
	    "../cd/abcd0000000000000000000000000000/11111111111111111111111111111111.00000001.dcm"));
	assert_false(pn_storage_rel_path_valid(
	    "ab/cd/ABCD0000000000000000000000000000/11111111111111111111111111111111.00000001.dcm"));
	assert_false(pn_storage_rel_path_valid(
	    "ab/cd/abcd0000000000000000000000000000/../11111111111111111111111111111.00000001.dcm"));
	assert_true(pn_storage_rel_path_valid(
	    "ab/cd/abcd0000000000000000000000000000/11111111111111111111111111111111.00000001.dcm"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(path_shape),  cmocka_unit_test(refuses_bad_uids),      cmocka_unit_test(tmp_round_trip),
	    cmocka_unit_test(generations), cmocka_unit_test(rejects_foreign_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
