/* Every file-system call the storage layer makes goes through this table,
 * so that tests can make the Nth write(v), fsync or link fail with ENOSPC or
 * EIO (the idea of SQLite's test_syscall.c). Production never changes it. */
#ifndef PN_FSIO_H
#define PN_FSIO_H

#include <sys/types.h>
#include <sys/uio.h>

typedef struct {
	int (*openat)(int dirfd, const char *path, int flags, ...);
	ssize_t (*writev)(int fd, const struct iovec *iov, int n);
	int (*fsync)(int fd);
	int (*close)(int fd);
	int (*linkat)(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);
	int (*unlinkat)(int dirfd, const char *path, int flags);
	int (*mkdirat)(int dirfd, const char *path, mode_t mode);
} pn_fsio_ops;

extern pn_fsio_ops pn_fsio;

#endif
