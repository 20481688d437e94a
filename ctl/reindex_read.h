/* pacsnodectl reindex: the files of a walk read by `jobs` threads at once,
 * each whole (its checksum is of every byte), its dataset parsed by the
 * store's own reading (pn_store_load_bytes) and made into the row the
 * store makes of it (pn_record_build, with the meta header's UIDs as the
 * command's); the results handed back in the walk's order, a window of
 * them ahead of the caller. */
#ifndef PN_REINDEX_READ_H
#define PN_REINDEX_READ_H

#include <stddef.h>
#include <stdint.h>

#include "dcm/pn_dcm.h"
#include "record.h"
#include "reindex_walk.h"
#include "storage.h"

typedef enum {
	PN_READ_OK = 0,
	PN_READ_UNREADABLE, /* the file cannot be opened or read */
	PN_READ_NOT_DICOM,  /* no Part 10 header */
	PN_READ_REFUSED,    /* what C-STORE refuses (why says how) */
	PN_READ_MISPLACED,  /* an instance, but not at the path the node gives it */
} pn_read_status;

typedef struct {
	pn_read_status status;
	char why[384];
	bool charset_ok; /* false: text not decodable, indexed with U+FFFD */
	pn_record *rec;  /* PN_READ_OK: the row, its storage facts filled */
	char rel[PN_REL_PATH_MAX], checksum[PN_CHECKSUM_LEN], calling_ae[PN_AE_MAX + 1];
	int64_t size, mtime_ns;
	/* where its time went (ns of the reading thread) */
	int64_t read_ns, sum_ns, parse_ns;
} pn_read_result;

typedef struct pn_reader pn_reader;

/* Reads entries first.. of `w` under `root`, at most `window` ahead of
 * what the caller has released. 0, -ENOMEM or a thread's -errno. */
int pn_reader_create(const char *root, const pn_walk *w, size_t first, size_t window, int jobs, uint64_t max_inflated,
                     pn_reader **ret_reader);
/* Entry i's result (i from first on, in order), once read: valid until
 * pn_reader_release(i), which frees it and lets the readers go on. */
pn_read_result *pn_reader_get(pn_reader *r, size_t i);
void pn_reader_release(pn_reader *r, size_t i);
/* Stops the threads (after the file each is reading) and frees. */
void pn_reader_free(pn_reader *r); /* NULL is a no-op */

#endif
