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
#include <time.h>
#include <unistd.h>

#include "fsio.h"
#include "storage.h"
#include "storage_recovery.h"
#include "writer.h"

static char root[64];
static pn_fsio_ops real;
static int fail_after; /* calls to let through before failing */
static int fail_errno;

static bool should_fail(void)
{
	if (__atomic_fetch_sub(&fail_after, 1, __ATOMIC_SEQ_CST) <= 0) {
		errno = fail_errno;
		return true;
	}
	return false;
}

static ssize_t failing_writev(int fd, const struct iovec *iov, int n)
{
	return should_fail() ? -1 : real.writev(fd, iov, n);
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

/* fsyncs of folders, counted */
static int dir_fsyncs;
static int counting_fsync(int fd)
{
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		dir_fsyncs++;
	return real.fsync(fd);
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
	pn_writer_thread_create = pthread_create;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* A file for `uid` with "hello world" in it, its fsync started. */
static pn_storage_file *write_one(pn_storage *s, const char *uid, char rel[PN_REL_PATH_MAX])
{
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	assert_int_equal(pn_storage_rel_path("1.2", uid, pn_storage_file_generation(f), rel), 0);
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
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
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

static void check_write_failure(void)
{
	int files_before = count_files(root);
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	pn_fsio.writev = failing_writev;
	fail_after = 1;
	fail_errno = ENOSPC;
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	/* writes run on the writer's thread: the failure shows when waited for */
	static char big[200 * 1024];                                     /* one 128 KiB chunk, and some */
	assert_int_equal(pn_storage_file_write(f, big, sizeof(big)), 0); /* first chunk written */
	assert_int_equal(pn_storage_file_write(f, "b", 1), 0);
	assert_int_equal(pn_storage_file_written(f), 0);
	assert_int_equal(pn_storage_file_wait(f), -ENOSPC);
	assert_int_equal(pn_storage_file_sync(f), -ENOSPC); /* the same outcome */
	pn_storage_file_discard(f);
	assert_int_equal(count_files(root), files_before);
	pn_storage_free(s);
	pn_fsio = real;
}

static void write_fails(void **state)
{
	(void)state;
	check_write_failure();
}

static void fsync_and_link_fail(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
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
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
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

/* Rows exist only for 1.2.8 and 1.2.12 (committed before the "crash"),
 * whatever their generation. */
static int referenced(void *ctx, const char *rel, bool *ret)
{
	(void)ctx;
	char a[PN_REL_PATH_MAX], d[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.8", 0, a), 0);
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.12", 0, d), 0);
	size_t n = strlen(a) - strlen("00000000.dcm"); /* up to the generation */
	*ret = strncmp(rel, a, n) == 0 || strncmp(rel, d, n) == 0;
	return 0;
}

/* Stands for the store reading the UIDs: these files hold their UID. */
static int identify(void *ctx, const char *path, uint32_t gen, char rel[PN_REL_PATH_MAX])
{
	(void)ctx;
	char uid[80] = "";
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(uid, 1, sizeof(uid) - 1, f);
	fclose(f);
	uid[n] = '\0';
	if (strcmp(uid, "EIO") == 0)
		return -EIO;
	return pn_storage_rel_path("1.2", uid, gen, rel) == 0 ? 0 : -EBADMSG;
}

static const pn_storage_settler plain = {referenced, identify, NULL, NULL, NULL};

/* Claims by a fixed answer, counting the releases. */
static int claim_answer, claimed_pid, releases;
static int claim(void *ctx, int pid)
{
	(void)ctx;
	claimed_pid = pid;
	return claim_answer;
}
static void release(void *ctx, int pid)
{
	(void)ctx;
	assert_int_equal(pid, claimed_pid);
	releases++;
}
static const pn_storage_settler claiming = {referenced, identify, claim, release, NULL};

/* A file holding `uid`, named, synced and linked. */
static void stored(pn_storage *s, const char *uid, char rel[PN_REL_PATH_MAX])
{
	pn_storage_file *f = NULL;
	if (pn_storage_file_begin(s, &f) || pn_storage_rel_path("1.2", uid, pn_storage_file_generation(f), rel) ||
	    pn_storage_file_write(f, uid, strlen(uid)) || pn_storage_file_written(f) || pn_storage_file_name(f, rel) ||
	    pn_storage_file_sync(f) || pn_storage_file_link(f))
		_exit(1);
}

/* Leaves the storage as a crash would: run in a child that _exit()s. */
static void crash_midway(void)
{
	pn_storage *s = NULL;
	if (pn_storage_open(root, NULL, &s) != 0)
		_exit(1);
	char rel[PN_REL_PATH_MAX];
	/* committed, crash before the tmp unlink (in the spare file) */
	if (pn_storage_prepare(s) != 0)
		_exit(1);
	stored(s, "1.2.8", rel);
	/* linked but never committed */
	stored(s, "1.2.9", rel);
	/* still being received */
	pn_storage_file *c = NULL;
	if (pn_storage_file_begin(s, &c) || pn_storage_file_write(c, "1.2.", 4) || pn_storage_file_written(c))
		_exit(1);
	/* committed by an earlier build, which named tmp files after the final
	 * path, and never linked */
	char old[PN_REL_PATH_MAX], path[256];
	if (pn_storage_rel_path("1.2", "1.2.12", 5, rel) || pn_storage_tmp_name(rel, old))
		_exit(1);
	snprintf(path, sizeof(path), "%s/tmp/%s", root, old);
	FILE *f = fopen(path, "w");
	if (!f || fputs("1.2.12", f) < 0 || fclose(f) != 0)
		_exit(1);
	/* a stray in tmp/ */
	char stray[256];
	snprintf(stray, sizeof(stray), "%s/tmp/garbage", root);
	close(open(stray, O_CREAT | O_WRONLY, 0600));
	_exit(0);
}

static pid_t crash_in_child(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		crash_midway();
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return pid;
}

static void recovery(void **state)
{
	(void)state;
	crash_in_child();
	/* 2 final names; 3 in-* files, the earlier build's and the stray in tmp/ */
	assert_int_equal(count_files(root), 7);

	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	pn_storage_recovery st;
	assert_int_equal(pn_storage_recover(s, &plain, &st), 0);
	assert_int_equal(st.kept, 2);
	assert_int_equal(st.removed, 1);
	assert_int_equal(st.strays, 2); /* the file being received and the garbage */
	assert_int_equal(count_files(root), 2);
	char rel[PN_REL_PATH_MAX], full[256], got[16] = "";
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.12", 5, rel), 0);
	snprintf(full, sizeof(full), "%s/%s", root, rel);
	FILE *f = fopen(full, "r");
	assert_non_null(f); /* relinked from the earlier build's tmp name */
	assert_int_equal(fread(got, 1, sizeof(got) - 1, f), 6);
	fclose(f);
	assert_string_equal(got, "1.2.12");
	pn_storage_free(s);
}

/* A file recovery cannot read for another reason than its content stops
 * it, and stays for the next start. */
static void recovery_stops_on_errors(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	assert_int_equal(pn_storage_file_write(f, "EIO", 3), 0);
	assert_int_equal(pn_storage_file_written(f), 0);
	pn_storage_file_abandon(f, NULL);
	pn_storage_recovery st;
	assert_int_equal(pn_storage_recover(s, &plain, &st), -EIO);
	assert_int_equal(count_files(root), 1);
	pn_storage_free(s);
}

/* What the settling callback is told, and answers: by note. */
static char told_rel[3][PN_REL_PATH_MAX];
static int answer_c;
static int outcome_by_note(void *ctx, const char *rel, const char *note)
{
	(void)ctx;
	assert_true(strlen(note) == 1 && note[0] >= 'a' && note[0] <= 'c');
	snprintf(told_rel[note[0] - 'a'], PN_REL_PATH_MAX, "%s", rel);
	return note[0] == 'a' ? 1 : note[0] == 'b' ? 0 : answer_c;
}

static bool exists_at(const char *dir, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

/* Files whose COMMIT answer was lost are settled once their outcome is
 * known: committed ones keep (or get back) their final name and lose the
 * tmp one, the others lose both; unknown ones wait for the next call. */
static void abandoned_files(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	assert_false(pn_storage_has_abandoned(s));
	char rel[3][PN_REL_PATH_MAX], tmp_name[3][PN_REL_PATH_MAX], tmp[128];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	const char *notes[] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++) {
		char uid[16];
		snprintf(uid, sizeof(uid), "1.2.%d", 70 + i);
		pn_storage_file *f = write_one(s, uid, rel[i]);
		snprintf(tmp_name[i], PN_REL_PATH_MAX, "%s", strrchr(pn_storage_file_tmp_path(f), '/') + 1);
		assert_int_equal(pn_storage_file_sync(f), 0);
		assert_int_equal(pn_storage_file_link(f), 0);
		pn_storage_file_abandon(f, notes[i]);
	}
	assert_true(pn_storage_has_abandoned(s));
	/* a's final name lost (as a crash between link and its folder fsync
	 * could): settling a committed one links it again */
	char a_final[256];
	snprintf(a_final, sizeof(a_final), "%s/%s", root, rel[0]);
	assert_int_equal(unlink(a_final), 0);

	pn_storage_recovery st;
	answer_c = -EAGAIN;
	assert_int_equal(pn_storage_settle_abandoned(s, outcome_by_note, NULL, &st), 1);
	assert_int_equal(st.kept, 1);
	assert_int_equal(st.removed, 1);
	for (int i = 0; i < 3; i++)
		assert_string_equal(told_rel[i], rel[i]);
	assert_true(exists_at(root, rel[0]) && !exists_at(tmp, tmp_name[0]));
	assert_true(!exists_at(root, rel[1]) && !exists_at(tmp, tmp_name[1]));
	assert_true(exists_at(root, rel[2]) && exists_at(tmp, tmp_name[2]));

	answer_c = -EIO; /* a failure stops asking, and c still waits */
	assert_int_equal(pn_storage_settle_abandoned(s, outcome_by_note, NULL, &st), -EIO);
	assert_true(pn_storage_has_abandoned(s));
	assert_true(exists_at(tmp, tmp_name[2]));
	answer_c = 0;
	assert_int_equal(pn_storage_settle_abandoned(s, outcome_by_note, NULL, &st), 0);
	assert_int_equal(st.removed, 1);
	assert_false(pn_storage_has_abandoned(s));
	assert_true(!exists_at(root, rel[2]) && !exists_at(tmp, tmp_name[2]));
	assert_int_equal(count_files(root), 1);
	pn_storage_free(s);
}

/* The crashed process's files, in tmp/ under its pid. */
static int files_of(pid_t pid)
{
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	int n = 0;
	DIR *d = opendir(tmp);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		int p;
		n += pn_storage_part_pid(e->d_name, &p) && p == pid;
	}
	if (d)
		closedir(d);
	return n;
}

/* Start-up recovery leaves the files of a process whose database session
 * is still there (it may be finishing a COMMIT), and settles them once it
 * can claim them. */
static void recovery_waits_for_sessions(void **state)
{
	(void)state;
	pid_t child = crash_in_child();
	assert_int_equal(files_of(child), 3);
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	pn_storage_recovery st;
	claim_answer = 0;
	releases = 0;
	assert_int_equal(pn_storage_recover(s, &claiming, &st), 0);
	assert_int_equal(claimed_pid, child);
	assert_int_equal(st.waiting, 3);
	assert_int_equal(st.kept, 1);   /* the earlier build's name carries no pid */
	assert_int_equal(st.strays, 1); /* the garbage */
	assert_int_equal(files_of(child), 3);
	assert_int_equal(releases, 0);
	claim_answer = 1;
	assert_int_equal(pn_storage_recover(s, &claiming, &st), 0);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(st.kept, 1);
	assert_int_equal(st.removed, 1);
	assert_int_equal(st.strays, 1);
	assert_int_equal(files_of(child), 0);
	assert_int_equal(releases, 1);
	assert_int_equal(count_files(root), 2);
	claim_answer = -EIO; /* nothing left to claim: not asked */
	assert_int_equal(pn_storage_recover(s, &claiming, &st), 0);
	pn_storage_free(s);
}

/* While the node runs, only an ended process's files are settled: not
 * ours, not a running process's, not names without a pid. */
static void settle_ended(void **state)
{
	(void)state;
	pid_t child = crash_in_child();
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	char rel[PN_REL_PATH_MAX];
	pn_storage_file *mine = write_one(s, "1.2.40", rel); /* being received here */
	char alive[PN_REL_PATH_MAX], path[256];
	pn_storage_part_name(7, (int)getppid(), 1, alive);
	snprintf(path, sizeof(path), "%s/tmp/%s", root, alive);
	FILE *f = fopen(path, "w");
	assert_true(f && fputs("1.2.41", f) >= 0 && fclose(f) == 0);
	int before = count_files(root);
	/* files changed in the clock tick of the call are left alone: these
	 * must be older */
	struct timespec tick = {.tv_nsec = 30 * 1000000L};
	nanosleep(&tick, NULL);

	pn_storage_recovery st;
	claim_answer = 0;
	assert_int_equal(pn_storage_settle_ended(s, &claiming, &st), 0);
	assert_int_equal(st.waiting, 3);
	assert_int_equal(count_files(root), before);
	claim_answer = 1;
	releases = 0;
	assert_int_equal(pn_storage_settle_ended(s, &claiming, &st), 0);
	assert_int_equal(claimed_pid, child);
	assert_int_equal(releases, 1);
	assert_int_equal(st.kept, 1);
	assert_int_equal(st.removed, 1);
	assert_int_equal(st.strays, 1);
	assert_int_equal(files_of(child), 0);
	assert_int_equal(files_of(getpid()), 1);
	assert_int_equal(files_of(getppid()), 1);
	/* 1.2.8's tmp name, 1.2.9's two names, the partial file; the earlier
	 * build's name and the garbage carry no pid and wait for start-up */
	assert_int_equal(count_files(root), before - 4);
	pn_storage_file_discard(mine);
	pn_storage_free(s);
}

/* The next files are made ahead of time, their names made durable in
 * batches, and dropped at the end of an association, so an idle node's
 * tmp/ is empty. */
static void spare_files(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	char tmp[128];
	snprintf(tmp, sizeof(tmp), "%s/tmp", root);
	dir_fsyncs = 0;
	pn_fsio.fsync = counting_fsync;
	assert_int_equal(pn_storage_prepare(s), 0);
	assert_int_equal(count_in(tmp), 2);
	assert_int_equal(dir_fsyncs, 1); /* the tmp folder, for both */

	pn_storage_file *f = NULL;
	pn_fsio.openat = failing_openat; /* begin must not need to create */
	fail_after = 0;
	fail_errno = EMFILE;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	pn_fsio.openat = real.openat;
	assert_int_equal(count_in(tmp), 2);
	/* the final path must carry the generation of the tmp name */
	char rel[PN_REL_PATH_MAX];
	uint32_t gen = pn_storage_file_generation(f);
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.3", gen + 1, rel), 0);
	assert_int_equal(pn_storage_file_name(f, rel), -EINVAL);
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.3", gen, rel), 0);
	assert_int_equal(pn_storage_file_name(f, rel), 0);
	char first[PN_REL_PATH_MAX];
	pn_storage_part_name(gen, (int)getpid(), 1, first);
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", tmp, first);
	assert_int_equal(access(path, F_OK), 0); /* the oldest: in-<gen>-<pid>-1 */
	pn_storage_file_discard(f);
	assert_int_equal(count_in(tmp), 1);

	/* a store's round: prepare after each response. No file needs its
	 * folder fsync'ed in line, and the batches are few. */
	int before = dir_fsyncs;
	for (int i = 0; i < 40; i++) {
		assert_int_equal(pn_storage_prepare(s), 0);
		assert_true(count_in(tmp) <= 8);
		char uid[32];
		snprintf(uid, sizeof(uid), "1.2.%d", 200 + i);
		f = write_one(s, uid, rel);
		int in_line = dir_fsyncs;
		assert_int_equal(pn_storage_file_sync(f), 0);
		assert_int_equal(dir_fsyncs, in_line);
		pn_storage_file_discard(f);
	}
	assert_true(dir_fsyncs - before <= 40 / 8 + 2);
	assert_int_equal(pn_storage_flush(s), 0);
	assert_int_equal(count_in(tmp), 0);

	/* failing ahead of time: begin tries again and says why */
	pn_fsio = real;
	pn_fsio.openat = failing_openat;
	fail_after = 0;
	fail_errno = ENOSPC;
	assert_int_equal(pn_storage_prepare(s), -ENOSPC);
	assert_int_equal(pn_storage_file_begin(s, &f), -ENOSPC);
	pn_fsio = real;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	pn_storage_file_discard(f);
	assert_int_equal(count_in(tmp), 0);
	/* a failed batch fsync: the file taken has its folder fsync'ed in line */
	pn_fsio.fsync = failing_fsync;
	fail_after = 0;
	fail_errno = EIO;
	assert_int_equal(pn_storage_prepare(s), -EIO);
	pn_fsio.fsync = counting_fsync;
	f = write_one(s, "1.2.99", rel);
	int in_line = dir_fsyncs;
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(dir_fsyncs, in_line + 1);
	pn_storage_file_discard(f);
	pn_fsio = real;
	pn_storage_free(s);
	assert_int_equal(count_in(tmp), 0);
}

/* Readers (C-MOVE, C-GET) join only paths this module makes. */
/* Opens of files, with or without O_DIRECT; refused with EINVAL when
 * refuse_direct, as tmpfs before Linux 6.6 does. */
static int direct_opens, buffered_opens;
static bool refuse_direct;
static int direct_openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = (mode_t)va_arg(ap, int);
	va_end(ap);
	if ((flags & O_DIRECT) && refuse_direct) {
		errno = EINVAL;
		return -1;
	}
	if (flags & O_CREAT)
		(*(flags & O_DIRECT ? &direct_opens : &buffered_opens))++;
	return real.openat(dirfd, path, flags, mode);
}

/* Stores `len` bytes of a pattern; checks the parts in memory and the
 * file on disk against them. may_direct: O_DIRECT may be used (under
 * write_mode = auto, for some files only). */
static void store_pattern(pn_storage *s, size_t len, const char *uid, bool may_direct)
{
	char *data = malloc(len);
	assert_non_null(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7 + i / 4096);
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	if (!may_direct)
		assert_false(pn_storage_file_direct(f));
	/* in odd pieces, as PDVs come */
	for (size_t at = 0; at < len;) {
		size_t n = len - at < 10007 ? len - at : 10007;
		assert_int_equal(pn_storage_file_write(f, data + at, n), 0);
		at += n;
	}
	assert_int_equal(pn_storage_file_written(f), 0);
	const pn_storage_part *parts = NULL;
	int n = pn_storage_file_parts(f, &parts);
	size_t chunk = 128 * 1024;
	if (len > 8 * chunk) {
		assert_int_equal(n, -E2BIG);
	} else {
		assert_int_equal(n, (int)((len + chunk - 1) / chunk));
		size_t at = 0;
		for (int i = 0; i < n; i++) {
			assert_true(at + parts[i].len <= len);
			assert_memory_equal(parts[i].data, data + at, parts[i].len);
			at += parts[i].len;
		}
		assert_int_equal(at, len);
	}
	char rel[PN_REL_PATH_MAX];
	assert_int_equal(pn_storage_rel_path("1.2", uid, pn_storage_file_generation(f), rel), 0);
	assert_int_equal(pn_storage_file_name(f, rel), 0);
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(pn_storage_file_link(f), 0);
	assert_int_equal(pn_storage_file_done(f), 0);

	char full[256];
	snprintf(full, sizeof(full), "%s/%s", root, rel);
	FILE *in = fopen(full, "rb");
	assert_non_null(in);
	char *back = malloc(len + 1);
	assert_non_null(back);
	assert_int_equal(fread(back, 1, len + 1, in), len);
	fclose(in);
	assert_memory_equal(back, data, len);
	free(back);
	free(data);
}

/* Sizes around the buffers' and the blocks' edges, written with O_DIRECT
 * (the tail shorter than a block goes through the page cache), through
 * the page cache, and either way as measured; and where the file system
 * refuses O_DIRECT. */
static void store_sizes(void)
{
	const size_t sizes[] = {1, 4095, 4096, 131072, 131073, 3 * 131072 + 1234, 8 * 131072, 8 * 131072 + 1, 2500000};
	const pn_write_policy policies[] = {PN_WRITE_DIRECT, PN_WRITE_BUFFERED, PN_WRITE_AUTO, PN_WRITE_DIRECT};
	for (int mode = 0; mode < 4; mode++) {
		refuse_direct = mode == 3;
		direct_opens = buffered_opens = 0;
		pn_fsio.openat = direct_openat;
		pn_storage *s = NULL;
		assert_int_equal(pn_storage_open(root, NULL, &s), 0);
		pn_storage_set_write_mode(s, policies[mode]);
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			char uid[32];
			snprintf(uid, sizeof(uid), "1.2.%d.%zu", mode, i);
			store_pattern(s, sizes[i], uid, policies[mode] != PN_WRITE_BUFFERED && !refuse_direct);
		}
		pn_storage_free(s);
		pn_fsio = real;
		if (!refuse_direct) {
			assert_true(direct_opens > 0); /* made so, kept or not */
			assert_int_equal(buffered_opens, 0);
		} else {
			assert_int_equal(direct_opens, 0);
			assert_true(buffered_opens > 0);
		}
	}
	refuse_direct = false;
}

static void direct_and_buffered(void **state)
{
	(void)state;
	store_sizes();
}

/* writev, slowed down by 10 ms (far beyond a disk's noise) for files opened one way: with O_DIRECT
 * when slow_direct, else without. */
static bool slow_direct;
static ssize_t slow_writev(int fd, const struct iovec *iov, int n)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && ((fl & O_DIRECT) != 0) == slow_direct) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	return real.writev(fd, iov, n);
}

/* Stores n files of 256 KiB (whole blocks: no page-cache tail); returns
 * how many of the last `tail` were written with O_DIRECT. */
static int store_ways(pn_storage *s, int n, int tail, int tag)
{
	static char data[256 * 1024];
	int direct = 0;
	for (int i = 0; i < n; i++) {
		pn_storage_file *f = NULL;
		assert_int_equal(pn_storage_file_begin(s, &f), 0);
		assert_int_equal(pn_storage_file_write(f, data, sizeof(data)), 0);
		assert_int_equal(pn_storage_file_written(f), 0);
		char uid[64], rel[PN_REL_PATH_MAX];
		snprintf(uid, sizeof(uid), "1.2.%d.%d", tag, i);
		assert_int_equal(pn_storage_rel_path("1.2", uid, pn_storage_file_generation(f), rel), 0);
		assert_int_equal(pn_storage_file_name(f, rel), 0);
		assert_int_equal(pn_storage_file_sync(f), 0);
		if (i >= n - tail)
			direct += pn_storage_file_direct(f);
		pn_storage_file_discard(f);
	}
	return direct;
}

/* write_mode = auto: each worker ends up writing the way that makes its
 * files durable sooner, trying the other way one file in 16; the fixed
 * policies keep to theirs. */
static void adaptive_write_mode(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	pn_fsio.writev = slow_writev;
	for (int way = 0; way < 2; way++) {
		slow_direct = way == 0;
		assert_int_equal(pn_storage_open(root, NULL, &s), 0);
		int direct = store_ways(s, 40, 32, 1 + way);
		if (slow_direct)
			assert_true(direct >= 1 && direct <= 3); /* exploring only */
		else
			assert_true(direct >= 29 && direct <= 31);
		pn_storage_free(s);
	}
	slow_direct = true;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	pn_storage_set_write_mode(s, PN_WRITE_DIRECT);
	assert_int_equal(store_ways(s, 12, 12, 3), 12);
	pn_storage_set_write_mode(s, PN_WRITE_BUFFERED);
	assert_int_equal(store_ways(s, 12, 12, 4), 0);
	pn_storage_free(s);
	pn_fsio = real;
}

static int thread_refusals;

static int refuse_thread(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg)
{
	(void)thread, (void)attr, (void)start, (void)arg;
	thread_refusals++;
	return EAGAIN;
}

/* No writer thread (the system refused one): the worker writes and
 * fsyncs when it queues, with the same results and the same errors. */
static void without_writer_thread(void **state)
{
	(void)state;
	pn_writer_thread_create = refuse_thread;
	thread_refusals = 0;
	store_sizes();
	check_write_failure();
	pn_writer_thread_create = pthread_create;
	assert_true(thread_refusals >= 3); /* each storage made its writer inline */
}

static void full_path(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
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

/* One committed file for `uid`, as a store leaves it. */
static void commit_one(pn_storage *s, const char *uid, char rel[PN_REL_PATH_MAX])
{
	pn_storage_file *f = write_one(s, uid, rel);
	assert_int_equal(pn_storage_file_sync(f), 0);
	assert_int_equal(pn_storage_file_link(f), 0);
	assert_int_equal(pn_storage_file_done(f), 0);
	assert_int_equal(pn_storage_flush(s), 0);
}

/* Paths the index could hold if it were tampered with: none reaches the
 * file system, all are -EINVAL (`good` is a stored file's path). */
static void hostile_paths(const pn_storage *s, const char *good, pn_storage *w)
{
	char abs[512], longer[PN_REL_PATH_MAX + 2], cut[PN_REL_PATH_MAX], dotted[PN_REL_PATH_MAX], huge[8192];
	snprintf(abs, sizeof(abs), "%s/%s", root, good);
	snprintf(longer, sizeof(longer), "%sx", good);
	snprintf(cut, sizeof(cut), "%s", good);
	cut[20] = '\0'; /* a NUL inside: what C sees is a shorter string */
	snprintf(dotted, sizeof(dotted), "%s", good);
	memcpy(dotted + 6, "../", 3); /* same length, a parent step inside */
	memset(huge, 'a', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	const char *bad[] = {NULL,
	                     "",
	                     "../etc/passwd",
	                     "/etc/passwd",
	                     abs,
	                     abs + 1,
	                     "tmp/x.dcm",
	                     "ab/cd/../../../x.dcm",
	                     longer,
	                     cut,
	                     "ab/cd\0/../../etc/passwd",
	                     dotted,
	                     huge,
	                     "."};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(pn_storage_get(s, bad[i]), -EINVAL);
		assert_int_equal(pn_storage_exists(s, bad[i]), -EINVAL);
		char *p = NULL;
		assert_int_equal(pn_storage_full_path(s, bad[i], &p), -EINVAL);
		assert_null(p);
		if (w)
			assert_int_equal(pn_storage_remove(w, bad[i]), -EINVAL);
	}
	assert_int_equal(pn_storage_exists(s, good), 1); /* none removed it */
}

static void get_and_exists(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	char rel[PN_REL_PATH_MAX], absent[PN_REL_PATH_MAX];
	commit_one(s, "1.2.3", rel);
	int fd = pn_storage_get(s, rel);
	assert_true(fd >= 0);
	char buf[32] = {0};
	assert_int_equal(read(fd, buf, sizeof(buf)), 11);
	assert_string_equal(buf, "hello world");
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	assert_int_equal(pn_storage_exists(s, rel), 1);
	/* a valid path with nothing there: -ENOENT and 0, not -EINVAL */
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.4", 1, absent), 0);
	assert_int_equal(pn_storage_get(s, absent), -ENOENT);
	assert_int_equal(pn_storage_exists(s, absent), 0);
	/* ... and an I/O error is neither */
	pn_fsio.openat = failing_openat;
	fail_after = 0;
	fail_errno = EIO;
	assert_int_equal(pn_storage_get(s, rel), -EIO);
	pn_fsio = real;
	/* something other than a file at a valid path */
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/%s", root, absent);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(pn_storage_exists(s, absent), -EBADMSG);
	rmdir(dir);
	hostile_paths(s, rel, s);
	pn_storage_free(s);
}

static void delete_many(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	char a[PN_REL_PATH_MAX], b[PN_REL_PATH_MAX], gone[PN_REL_PATH_MAX];
	commit_one(s, "1.2.3", a);
	commit_one(s, "1.2.4", b); /* the same series: the same folder */
	assert_int_equal(pn_storage_rel_path("1.2", "1.2.5", 9, gone), 0);
	const char *rels[] = {a, "../../etc/passwd", NULL, b, gone, "/etc/passwd"};
	bool removed[6];
	memset(removed, 1, sizeof(removed));
	dir_fsyncs = 0;
	pn_fsio.fsync = counting_fsync;
	assert_int_equal(pn_storage_remove_many(s, rels, 6, removed), -EINVAL);
	pn_fsio = real;
	assert_true(removed[0] && !removed[1] && !removed[2] && removed[3] && removed[4] && !removed[5]);
	assert_int_equal(dir_fsyncs, 1); /* one folder, fsync'ed once; none for the bad paths */
	assert_int_equal(pn_storage_exists(s, a), 0);
	assert_int_equal(pn_storage_exists(s, b), 0);
	/* gone already: still 0 */
	assert_int_equal(pn_storage_remove(s, a), 0);
	pn_storage_free(s);
}

/* A storage for reading only makes nothing and writes nothing. */
static void reader(void **state)
{
	(void)state;
	char missing[128];
	snprintf(missing, sizeof(missing), "%s/not-there", root);
	pn_storage *r = NULL;
	assert_int_equal(pn_storage_open_reader(missing, &r), -ENOENT);
	assert_int_equal(access(missing, F_OK), -1); /* not made */
	assert_int_equal(pn_storage_open_reader(root, &r), 0);
	assert_int_equal(count_in(root), 0); /* no tmp/ */
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, NULL, &s), 0);
	char rel[PN_REL_PATH_MAX];
	commit_one(s, "1.2.3", rel);
	pn_storage_free(s);
	int fd = pn_storage_get(r, rel);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(pn_storage_exists(r, rel), 1);
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(r, &f), -EROFS);
	assert_null(f);
	assert_int_equal(pn_storage_prepare(r), -EROFS);
	assert_int_equal(pn_storage_remove(r, rel), -EROFS);
	assert_int_equal(pn_storage_exists(r, rel), 1);
	hostile_paths(r, rel, NULL);
	pn_storage_free(r);
}

/* Removes every file of tmp/<node>/: what a node settling this one,
 * taken for gone, does to its temporary files. */
static void settle_by_hand(const char *node)
{
	char dir[128];
	snprintf(dir, sizeof dir, "%s/tmp/%s", root, node);
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			assert_int_equal(unlinkat(dirfd(d), de->d_name, 0), 0);
	closedir(d);
}

/* pn_storage_lost_files: spares and files in progress whose names another
 * node removed are told; the spares are forgotten, the next file is a new
 * one. */
static void lost_files(void **state)
{
	(void)state;
	pn_storage *s = NULL;
	assert_int_equal(pn_storage_open(root, "n1", &s), 0);
	int spares = -1;
	assert_int_equal(pn_storage_lost_files(s, &spares), 0);
	assert_int_equal(spares, 0);
	assert_int_equal(pn_storage_prepare(s), 0);
	pn_storage_file *f = NULL;
	assert_int_equal(pn_storage_file_begin(s, &f), 0); /* one of the two spares */
	assert_int_equal(pn_storage_lost_files(s, &spares), 0);
	assert_int_equal(spares, 0);
	settle_by_hand("n1");
	assert_int_equal(pn_storage_lost_files(s, &spares), 1);
	assert_int_equal(spares, 1);
	pn_storage_file_discard(f);
	assert_int_equal(pn_storage_lost_files(s, &spares), 0);
	assert_int_equal(spares, 0);
	/* the next file is made afresh, and is there */
	assert_int_equal(pn_storage_file_begin(s, &f), 0);
	assert_int_equal(pn_storage_lost_files(s, &spares), 0);
	pn_storage_file_discard(f);
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
	    cmocka_unit_test_setup_teardown(recovery_stops_on_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(abandoned_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(recovery_waits_for_sessions, setup, teardown),
	    cmocka_unit_test_setup_teardown(settle_ended, setup, teardown),
	    cmocka_unit_test_setup_teardown(spare_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(direct_and_buffered, setup, teardown),
	    cmocka_unit_test_setup_teardown(adaptive_write_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(without_writer_thread, setup, teardown),
	    cmocka_unit_test_setup_teardown(full_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(get_and_exists, setup, teardown),
	    cmocka_unit_test_setup_teardown(delete_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(reader, setup, teardown),
	    cmocka_unit_test_setup_teardown(lost_files, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
