/* LD_PRELOAD shim for the store benchmark: a durable storescp.
 *
 * dcmtk's storescp writes each received file and answers, without an
 * fsync. Loaded into it, this makes every close of a regular file open for
 * writing fsync it first, so the C-STORE response waits until the file is
 * on disk, as pacsnode's does (pacsnode does more: it also makes the name
 * durable and commits an index row). The benchmark measures storescp both
 * ways in the same run: what the fsync alone costs a receiver on this
 * disk, and so how far any durable receiver can come to the plain one.
 *
 * Built by bench/store/run.sh; never part of pacsnode. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int written_file(int fd)
{
	struct stat st;
	int fl = fcntl(fd, F_GETFL);
	return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

int fclose(FILE *f)
{
	static int (*real_fclose)(FILE *);
	if (!real_fclose)
		real_fclose = (int (*)(FILE *))dlsym(RTLD_NEXT, "fclose");
	if (f && fileno(f) >= 0 && written_file(fileno(f))) {
		fflush(f);
		fsync(fileno(f));
	}
	return real_fclose(f);
}

int close(int fd)
{
	static int (*real_close)(int);
	if (!real_close)
		real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
	if (written_file(fd))
		fsync(fd);
	return real_close(fd);
}
