/* A ZIP archive written as a stream (APPNOTE 6.3): entries stored without
 * compression (DICOM files compress poorly and the CPU is better spent
 * elsewhere), each followed by a data descriptor since its CRC is known
 * only once its bytes went out; ZIP64 records where an offset, a size or
 * the number of entries needs them. Only the central directory is kept in
 * memory (one small record an entry). */
#ifndef PN_WEB_ZIP_H
#define PN_WEB_ZIP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct {
	unsigned char *data;
	size_t len, cap;
} pn_bytes;

typedef struct pn_zip pn_zip;

int pn_zip_create(pn_zip **ret_zip);
void pn_zip_free(pn_zip *zip); /* NULL is a no-op */

/* Appends the next entry's local header to out. `name`: a relative path
 * of at most 1024 bytes ('/' separated). 0, -EINVAL, -ENOMEM. */
int pn_zip_entry_begin(pn_zip *zip, const char *name, time_t mtime, pn_bytes *out);
/* The entry's bytes, as they are sent (CRC and size). */
void pn_zip_entry_data(pn_zip *zip, const void *data, size_t len);
/* Appends the entry's data descriptor. 0, -ENOMEM. */
int pn_zip_entry_end(pn_zip *zip, pn_bytes *out);
/* Appends the central directory and the end records. 0, -ENOMEM. */
int pn_zip_finish(pn_zip *zip, pn_bytes *out);

void pn_bytes_free(pn_bytes *b);

#endif
