/* The durable-write protocol, with faults injected through pn_fsio. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsio.h"
#include "storage.h"

static char root[64];
static pn_fsio_ops real;
static int fail_after; /* calls to let through before failing */
static int fail_errno;

/* Atomic: the file's fsync runs on the storage's helper thread. */
static bool should_fail(void)
{
	if (__atomic_fetch_sub(&fail_after, 1, __ATOMIC_SEQ_CST) <= 0) {
		errno = fail_errno;
		return true;
	}
	return false;
}

static ssize_t failing_write(int fd, const void *buf, size_t n)
{
	return should_fail() ? -1 : real.write(fd, buf, n);
}

static int failing_fsync(int fd)
{
	return should_fail() ? -1 : real.fsync(fd);
}

static int failing_linkat(int a, const char *b, int c, const char *d, int e)
{
	return should_fail() ? -1 : real.linkat(a, b, c, d, e);
}

static int failing_openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = (mode_t)va_arg(ap, int);
	va_end(ap);
	return should_fail() ? -1 : real.openat(dirfd, path, flags, mode);
}

/* fsyncs that take a while and note which thread ran them */
static pthread_t main_thread;
static int fsyncs_started, fsyncs_done, fsyncs_off_main;
static int slow_fsync(int fd)
{
	__atomic_fetch_add(&fsyncs_started, 1, __ATOMIC_SEQ_CST);
	if (!pthread_equal(pthread_self(), main_thread))
		__atomic_fetch_add(&fsyncs_off_main, 1, __ATOMIC_SEQ_CST);
	usleep(50 * 1000);
	int rc = real.fsync(fd);
	__atomic_fetch_add(&fsyncs_done, 1, __ATOMIC_SEQ_CST);
	return rc;
}

static int count_in(const char *dir)
{
	int n = 0;
	DIR *d = opendir(dir);
	assert_non_null(d);
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int count_files(const char *dir)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "find %s -type f | wc -l", dir);
	FILE *p = popen(cmd, "r");
	int n = -1;
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static int setup(void **state)
{
	(void)state;
	real = pn_fsio;
	snprintf(root, sizeof(root), "/tmp/pn_test_storage_XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pn_fsio = real;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* A file named for `uid` with "hello world" in it, synced. */
static pn_storage_file *write_one(pn_storage *s, const char *uid, char rel[PN_REL_PATH_MAX])
{
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_rel_path("1.2", uid, 1, rel), 0);
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	assert_int_equal(pn_storage_file_write(f, "hello ", 6), 0);
	assert_int_equal(pn_storage_file_write(f, "world", 5), 0);
	assert_int_equal(pn_storage_file_written(f), 0);
	assert_int_equal(pn_storage_file_name(f, rel), 0);
	return f;
}

static void happy_path(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	char rel[PN_REL_PATH_MAX];
	pn_storage_file *f = write_one(s, "1.2.3", rel);
	/* XXH3-128("hello world"), canonical form (python3-xxhash agrees) */
	assert_string_equal(pn_storage_file_checksum(f), "xxh3-128:df8d09e93f874900a99b8775cc15b6c7");
	assert_int_equal(pn_storage_file_size(f), 11);
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(pn_storage_file_link(f), 0);
	assert_int_equal(pn_storage_file_done(f), 0);
	/* the tmp name stays until the batched folder fsync */
	assert_int_equal(count_files(root), 2);
	assert_int_equal(pn_storage_flush(s), 0);
	char full[256];
	snprintf(full, sizeof(full), "%s/%s", root, rel);
	struct stat st;
	assert_int_equal(stat(full, &st), 0);
	assert_int_equal(st.st_size, 11);
	assert_int_equal(count_files(root), 1); /* nothing left in tmp/ */
	pn_storage_free(s);
}

static void write_fails(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	pn_fsio.write = failing_write;
	fail_after = 1;
	fail_errno = ENOSPC;
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	/* writes are gathered: the failure shows when they reach the file */
	static char big[300 * 1024];
	assert_int_equal(pn_storage_file_write(f, big, sizeof(big)), 0); /* first chunk written */
	assert_int_equal(pn_storage_file_write(f, "b", 1), 0);
	assert_int_equal(pn_storage_file_written(f), -ENOSPC);
	pn_storage_file_discard(f);
	assert_int_equal(count_files(root), 0);
	pn_storage_free(s);
}

static void fsync_and_link_fail(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	char rel[PN_REL_PATH_MAX];
	pn_fsio.fsync = failing_fsync;
	fail_after = 0;
	fail_errno = EIO;
	pn_storage_file *f = write_one(s, "1.2.5", rel);
	assert_int_equal(pn_storage_file_sync(f), -EIO);
	pn_storage_file_discard(f);
	assert_int_equal(count_files(root), 0);

	pn_fsio = real;
	pn_fsio.linkat = failing_linkat;
	fail_after = 0;
	f = write_one(s, "1.2.6", rel);
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(pn_storage_file_link(f), -EIO);
	pn_storage_file_discard(f);
	assert_int_equal(count_files(root), 0);

	/* linked, then the commit fails: discard unlinks both names */
	pn_fsio = real;
	f = write_one(s, "1.2.7", rel);
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(pn_storage_file_link(f), 0);
	pn_storage_file_discard(f);
	assert_int_equal(count_files(root), 0);
	pn_storage_free(s);
}

/* Tmp names of committed files go in batches, after their folders' fsync. */
static void batched_flush(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	char rel[PN_REL_PATH_MAX], uid[32];
	for (int i = 0; i < 33; i++) {
		snprintf(uid, sizeof(uid), "1.2.%d", 100 + i);
		pn_storage_file *f = write_one(s, uid, rel);
		assert_int_equal(pn_storage_file_sync(f), 0);
		assert_int_equal(pn_storage_file_link(f), 0);
		assert_int_equal(pn_storage_file_done(f), 0);
	}
	/* the 33rd flushed the first 32 and waits for the next batch */
	assert_int_equal(count_files(root), 33 + 1);
	/* a failing folder fsync keeps the names for recovery */
	pn_fsio.fsync = failing_fsync;
	fail_after = 0;
	fail_errno = EIO;
	assert_int_equal(pn_storage_flush(s), -EIO);
	assert_int_equal(count_files(root), 33 + 1);
	pn_fsio = real;
	assert_int_equal(pn_storage_flush(s), 0);
	assert_int_equal(count_files(root), 33);
	pn_storage_free(s);
}

/* The row exists only for "1.2.8" (committed before the "crash"). */
static char committed[PN_REL_PATH_MAX];
static int referenced(void *ctx, const char *rel, bool *ret)
{
	(void)ctx;
	*ret = strcmp(rel, committed) == 0;
	return 0;
}

/* Leaves the storage as a crash would: run in a child that _exit()s. */
static void crash_midway(const char *rel_a, const char *rel_b)
{
	pn_storage *s = NULL;
	if (pn_storage_open(root, &s) != 0)
		_exit(1);
	pn_storage_file *a = NULL, *b = NULL, *c = NULL;
	/* committed, crash before the tmp unlink */
	if (pn_storage_file_begin(s, &a) || pn_storage_file_written(a) || pn_storage_file_name(a, rel_a) ||
	    pn_storage_file_sync(a) || pn_storage_file_link(a))
		_exit(1);
	/* linked but never committed */
	if (pn_storage_file_begin(s, &b) || pn_storage_file_write(b, "x", 1) || pn_storage_file_written(b) ||
	    pn_storage_file_name(b, rel_b) || pn_storage_file_sync(b) || pn_storage_file_link(b))
		_exit(1);
	/* still being received: provisional name */
	if (pn_storage_file_begin(s, &c) || pn_storage_file_write(c, "y", 1) || pn_storage_file_written(c))
		_exit(1);
	/* a stray in tmp/ */
	char stray[256];
	snprintf(stray, sizeof(stray), "%s/tmp/garbage", root);
	close(open(stray, O_CREAT | O_WRONLY, 0600));
	_exit(0);
}

static void recovery(void **state)
{
	(void)state;
	char rel_a[PN_REL_PATH_MAX], rel_b[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.8", 2, rel_a), 0);
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.9", 1, rel_b), 0);
	snprintf(committed, sizeof(committed), "%s", rel_a);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		crash_midway(rel_a, rel_b);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(count_files(root), 6); /* 2 final names, 2 named and 1 provisional in tmp/, 1 stray */

	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	pn_storage_recovery st;
	assert_int_equal(pn_storage_recover(s, referenced, NULL, &st), 0);
	assert_int_equal(st.kept, 1);
	assert_int_equal(st.removed, 1);
	assert_int_equal(st.strays, 2); /* the provisional file and the garbage */
	char full[256];
	struct stat sb;
	snprintf(full, sizeof(full), "%s/%s", root, rel_a);
	assert_int_equal(stat(full, &sb), 0);
	snprintf(full, sizeof(full), "%s/%s", root, rel_b);
	assert_int_not_equal(stat(full, &sb), 0);
	assert_int_equal(count_files(root), 1);
	pn_storage_free(s);
}

/* The file's fsync runs on the helper thread from _written() on, and
 * nothing closes the file under it. */
static void fsync_in_background(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	main_thread = pthread_self();
	fsyncs_started = fsyncs_done = fsyncs_off_main = 0;
	pn_fsio.fsync = slow_fsync;
	char rel[PN_REL_PATH_MAX];
	pn_storage_file *f = write_one(s, "1.2.10", rel);
	for (int i = 0; i < 200 && __atomic_load_n(&fsyncs_started, __ATOMIC_SEQ_CST) == 0; i++)
		usleep(1000);
	assert_int_equal(fsyncs_off_main, 1); /* before anyone asked for it */
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(fsyncs_started, 2); /* and the tmp folder's, in line */
	assert_int_equal(fsyncs_done, 2);
	assert_int_equal(pn_storage_file_link(f), 0);
	assert_int_equal(pn_storage_file_done(f), 0);

	/* discarded while its fsync runs: waits for it before closing */
	int started = fsyncs_started; /* the link made folders, fsync'ed */
	f = write_one(s, "1.2.11", rel);
	pn_storage_file_discard(f);
	assert_int_equal(fsyncs_started, started + 1);
	assert_int_equal(fsyncs_done, started + 1);
	assert_int_equal(fsyncs_off_main, 2);
	pn_fsio = real;
	assert_int_equal(pn_storage_flush(s), 0);
	assert_int_equal(count_files(root), 1);
	pn_storage_free(s);
}

/* The next file is made ahead of time and dropped at the end of an
 * association, so an idle node's tmp/ is empty. */
static void spare_file(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	assert_int_equal(pn_storage_prepare(s), 0);
	assert_int_equal(pn_storage_prepare(s), 0); /* one is enough */
	assert_int_equal(count_in(tmp), 1);
	pn_storage_file *f = NULL;
	pn_fsio.openat = failing_openat; /* begin must not need to create */
	fail_after = 0;
	fail_errno = EMFILE;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	pn_fsio = real;
	assert_int_equal(count_in(tmp), 1);
	assert_int_equal(pn_storage_file_write(f, "x", 1), 0);
	assert_int_equal(pn_storage_file_written(f), 0);
	pn_storage_file_discard(f);
	assert_int_equal(count_in(tmp), 0);

	assert_int_equal(pn_storage_prepare(s), 0);
	assert_int_equal(count_in(tmp), 1);
	assert_int_equal(pn_storage_flush(s), 0);
	assert_int_equal(count_in(tmp), 0);

	/* failing ahead of time: begin tries again and says why */
	pn_fsio.openat = failing_openat;
	fail_after = 0;
	fail_errno = ENOSPC;
	assert_int_equal(pn_storage_prepare(s), -ENOSPC);
	assert_int_equal(pn_storage_file_begin(s, &f), -ENOSPC);
	pn_fsio = real;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	pn_storage_file_discard(f);
	assert_int_equal(count_in(tmp), 0);
	pn_storage_free(s);
}

/* Readers (C-MOVE, C-GET) join only paths this module makes. */
static void full_path(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, &s), 0);
	char rel[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.3", 7, rel), 0);
	char *p = NULL;
	assert_int_equal(pn_storage_full_path(s, rel, &p), 0);
	size_t n = strlen(p), m = strlen(rel);
	assert_true(n > m + 1 && strcmp(p + n - m, rel) == 0 && p[n - m - 1] == '/');
	free(p);
	const char *bad[] = {"", "../etc/passwd", "/etc/passwd", "tmp/x.dcm", "ab/cd/../../../x.dcm"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		p = NULL;
		assert_int_equal(pn_storage_full_path(s, bad[i], &p), -EINVAL);
		assert_null(p);
	}
	pn_storage_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(happy_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(write_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(fsync_and_link_fail, setup, teardown),
	    cmocka_unit_test_setup_teardown(batched_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(recovery, setup, teardown),
	    cmocka_unit_test_setup_teardown(fsync_in_background, setup, teardown),
	    cmocka_unit_test_setup_teardown(spare_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(full_path, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
