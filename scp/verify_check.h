/* pacsnodectl verify and storage commitment (commit.c): the index's files checked by `jobs` threads at once
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
#include "file_check.h"
#include "storage.h"

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
