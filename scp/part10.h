/* The framing of a stored Part 10 file (PS3.10 7.1): where its dataset
 * starts and what its File Meta Information says, read without dcmtk so
 * that a retrieve can send the dataset's bytes as they are on disk. */
#ifndef PN_PART10_H
#define PN_PART10_H

#include <stddef.h>

#include "uid.h"

/* What a retrieve needs from the File Meta Information. */
typedef struct {
	size_t dataset_offset; /* first byte after group 0002 */
	char ts_uid[PN_UID_MAX + 1];
	char sop_class_uid[PN_UID_MAX + 1];
	char sop_instance_uid[PN_UID_MAX + 1];
} pn_part10_meta;

/* Reads the preamble, "DICM" and group 0002 from the first len bytes of a
 * file. Returns 0, -EAGAIN when the header goes on past len bytes, or
 * -EBADMSG when the bytes are not a Part 10 header with a File Meta
 * Information Group Length and a valid Transfer Syntax UID (the way pacsnode
 * writes every file it stores). */
int pn_part10_meta_parse(const void *buf, size_t len, pn_part10_meta *ret_meta);

/* The same from the start of an open file. Returns 0, or -EBADMSG when the
 * file cannot be read or holds no such header. */
int pn_part10_meta_read(int fd, pn_part10_meta *ret_meta);

/* Deflated explicit VR little endian (PS3.5 A.5). */
#define PN_TS_DEFLATED "1.2.840.10008.1.2.1.99"

#endif
