/* One stored file checked against its index row: present, the recorded
 * size, the recorded checksum over every byte, the instance and class its
 * meta header names. Run by the checking threads of verify_check.h, for
 * pacsnodectl verify and for storage commitment (commit.c). */
#ifndef PN_FILE_CHECK_H
#define PN_FILE_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage.h"
#include "storage_path.h"

/* A reading buffer large enough that a CT slice is one read, small enough
 * to stay in the cache. */
#define PN_CHECK_BUF (1u << 20)

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

/* Checks the open file `fd` against c's row fields (status, found_* and
 * bytes set; status must be PN_CHECK_OK on entry), reading through `buf`
 * of `buf_len` bytes. */
void pn_file_check(int fd, unsigned char *buf, size_t buf_len, pn_check *c);

#endif
