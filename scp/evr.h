/* Explicit VR little endian element headers (PS3.5 7.1.2), read and
 * written without dcmtk: by the Part 10 meta header reader, the direct
 * C-FIND response writer and the DICOM JSON writer, which walk the stored
 * attribute blobs. */
#ifndef PN_EVR_H
#define PN_EVR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
	uint32_t tag;
	char vr[2];
	size_t head;  /* header bytes: 8, or 12 for the long VRs */
	uint32_t len; /* value bytes, after the header */
} pn_evr_elem;

/* Whether the VR's length takes 4 bytes after 2 reserved ones. */
bool pn_evr_long_vr(const char vr[2]);

uint16_t pn_le16(const unsigned char *p);
uint32_t pn_le32(const unsigned char *p);

/* The element whose header starts at p, with avail bytes from p on: 0, or
 * -EBADMSG when the header or the value runs past avail (an undefined
 * length always does). */
int pn_evr_read(const unsigned char *p, size_t avail, pn_evr_elem *ret_elem);

/* The sequence item (FFFE,E000) whose 8-byte header starts at p: 0 and its
 * value's length, or -EBADMSG when p holds no item header or the value
 * runs past avail (an undefined length always does). */
int pn_evr_read_item(const unsigned char *p, size_t avail, uint32_t *ret_len);

#endif
