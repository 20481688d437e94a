/* pacsnodectl verify: the index's files checked by `jobs` threads at once
 * (present, the recorded size, the recorded checksum over every byte, the
 * instance and class its meta header names), handed in and handed back in
 * the index's order, at most `window` in flight. The threads open the
 * files handed in ahead of their checks and ask the kernel to start
 * reading them (POSIX_FADV_WILLNEED), so that a cold disk has the whole
 * window's reads in flight while they hash. */
#ifndef PN_VERIFY_CHECK_H
#define PN_VERIFY_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "browse.h"
#include "storage.h"

typedef enum {
	PN_CHECK_OK = 0,
	PN_CHECK_BAD_PATH,     /* the index's path is not one the node gives */
	PN_CHECK_MISSING,      /* cannot be opened (err) */
	PN_CHECK_WRONG_SIZE,   /* found_size */
	PN_CHECK_UNREADABLE,   /* err: a read failed */
	PN_CHECK_WRONG_SUM,    /* found_sum */
	PN_CHECK_NOT_INSTANCE, /* its meta header names another instance or class */
} pn_check_status;

typedef struct {
	/* the row's, copied when handed in */
	char rel[PN_REL_PATH_MAX], sop_uid[65], sop_class_uid[65], checksum[PN_CHECKSUM_LEN];
	long long size;
	bool overlong; /* a UID longer than a UID can be: not the instance */
	/* the check's */
	pn_check_status status;
	long long found_size;
	char found_sum[PN_CHECKSUM_LEN];
	int err;        /* PN_CHECK_UNREADABLE: the read's errno */
	uint64_t bytes; /* read and hashed */
} pn_check;

typedef struct pn_checker pn_checker;

/* The files under `root`. 0, -ENOMEM or a thread's -errno. */
int pn_checker_create(const char *root, int jobs, size_t window, pn_checker **ret_checker);
/* Hands in the i-th file (i = 0, 1, ... in order), once every file before
 * i - window + 1 has been waited for. */
void pn_checker_add(pn_checker *c, size_t i, const pn_stored_file *f);
/* The i-th file's check, once done (waited for in order): valid until
 * file i + window is handed in. */
const pn_check *pn_checker_wait(pn_checker *c, size_t i);
/* Stops the threads (after the file each is checking) and frees. */
void pn_checker_free(pn_checker *c); /* NULL is a no-op */

#endif
