/* The choice between O_DIRECT and the page cache (write_mode.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "write_mode.h"

#define KIB 1024
#define MS 1000000LL

/* Picks n files, each durable after its way's wait per 512 KiB file;
 * returns how many went direct. */
static int run(pn_write_mode *m, int n, int64_t direct_ns, int64_t buffered_ns)
{
	int direct = 0;
	for (int i = 0; i < n; i++) {
		bool d = pn_write_mode_pick(m);
		direct += d;
		pn_write_mode_note(m, d, 512 * KIB, d ? direct_ns : buffered_ns);
	}
	return direct;
}

static void fixed_policies(void **state)
{
	(void)state;
	pn_write_mode m;
	pn_write_mode_init(&m, PN_WRITE_DIRECT, true);
	assert_int_equal(run(&m, 50, 9 * MS, 1 * MS), 50); /* however slow */
	pn_write_mode_init(&m, PN_WRITE_BUFFERED, true);
	assert_int_equal(run(&m, 50, 1 * MS, 9 * MS), 0);
	/* no O_DIRECT on this file system: never, whatever was asked */
	pn_write_mode_init(&m, PN_WRITE_DIRECT, false);
	assert_int_equal(run(&m, 50, 1 * MS, 9 * MS), 0);
	pn_write_mode_init(&m, PN_WRITE_AUTO, false);
	assert_int_equal(run(&m, 50, 1 * MS, 9 * MS), 0);
	assert_false(pn_write_mode_preferred(&m));
}

/* Each way is tried PN_WRITE_MODE_WARMUP times, alternately, before
 * either is preferred; until then direct counts as preferred. */
static void warm_up_alternates(void **state)
{
	(void)state;
	pn_write_mode m;
	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	assert_true(pn_write_mode_preferred(&m));
	bool last = !pn_write_mode_pick(&m);
	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	for (int i = 0; i < 2 * PN_WRITE_MODE_WARMUP; i++) {
		bool d = pn_write_mode_pick(&m);
		assert_true(d != last);
		last = d;
		pn_write_mode_note(&m, d, 512 * KIB, d ? 5 * MS : 1 * MS);
	}
	assert_false(pn_write_mode_preferred(&m));
}

/* The faster way is used, the other one file in EXPLORE_EVERY. */
static void faster_way_wins(void **state)
{
	(void)state;
	const int n = 16 * PN_WRITE_MODE_EXPLORE_EVERY;
	pn_write_mode m;
	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	run(&m, 2 * PN_WRITE_MODE_WARMUP, 3 * MS, 2 * MS);
	assert_int_equal(run(&m, n, 3 * MS, 2 * MS), n / PN_WRITE_MODE_EXPLORE_EVERY);
	assert_false(pn_write_mode_preferred(&m));

	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	run(&m, 2 * PN_WRITE_MODE_WARMUP, 2 * MS, 3 * MS);
	assert_int_equal(run(&m, n, 2 * MS, 3 * MS), n - n / PN_WRITE_MODE_EXPLORE_EVERY);
	assert_true(pn_write_mode_preferred(&m));
}

/* When the machine changes, the exploring files see it and the choice
 * follows within a few hundred files. */
static void follows_a_change(void **state)
{
	(void)state;
	pn_write_mode m;
	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	run(&m, 200, 1 * MS, 2 * MS);
	assert_true(pn_write_mode_preferred(&m));
	run(&m, 400, 3 * MS, 2 * MS); /* direct became slow */
	assert_false(pn_write_mode_preferred(&m));
	run(&m, 400, 1 * MS, 2 * MS); /* and fast again */
	assert_true(pn_write_mode_preferred(&m));
}

/* Waits count per KiB, so a way is not judged by the sizes it happened
 * to write; below 64 KiB the wait is the flush and counts as 64 KiB. */
static void per_kib(void **state)
{
	(void)state;
	pn_write_mode m;
	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	for (int i = 0; i < 40; i++) {
		/* direct: 4 ms for 4 MiB; buffered: 1 ms for 256 KiB */
		pn_write_mode_note(&m, true, 4096 * KIB, 4 * MS);
		pn_write_mode_note(&m, false, 256 * KIB, 1 * MS);
	}
	assert_true(pn_write_mode_preferred(&m));
	pn_write_mode_init(&m, PN_WRITE_AUTO, true);
	for (int i = 0; i < 40; i++) {
		/* 1 KiB in 0.5 ms is no faster per KiB than 64 KiB in 0.5 ms */
		pn_write_mode_note(&m, true, 1 * KIB, MS / 2);
		pn_write_mode_note(&m, false, 64 * KIB, MS / 2 - 1000);
	}
	assert_false(pn_write_mode_preferred(&m));
	/* nonsense samples are ignored */
	pn_write_mode_note(&m, true, 512 * KIB, -5);
	pn_write_mode_note(&m, true, -1, 5);
	assert_false(pn_write_mode_preferred(&m));
}

static void names(void **state)
{
	(void)state;
	assert_string_equal(pn_write_policy_name(PN_WRITE_AUTO), "auto");
	assert_string_equal(pn_write_policy_name(PN_WRITE_DIRECT), "direct");
	assert_string_equal(pn_write_policy_name(PN_WRITE_BUFFERED), "buffered");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(fixed_policies),  cmocka_unit_test(warm_up_alternates),
	    cmocka_unit_test(faster_way_wins), cmocka_unit_test(follows_a_change),
	    cmocka_unit_test(per_kib),         cmocka_unit_test(names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
