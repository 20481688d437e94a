#include "part10.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evr.h"

#define PREAMBLE 128
/* preamble, "DICM", then (0002,0000) UL 4 as explicit VR little endian */
#define FIRST_ELEMENT (PREAMBLE + 4)
#define GROUP_LENGTH_ELEMENT 12
/* Far more than any real group 0002; a bigger claim is a damaged file. */
#define META_MAX (64 * 1024)

/* A UI value without its trailing NUL/space padding; false if it is not a
 * valid UID. */
static bool copy_uid(char *dst, const unsigned char *src, uint32_t len)
{
	while (len > 0 && (src[len - 1] == '\0' || src[len - 1] == ' '))
		len--;
	/* a NUL inside would end the C string early: "1.2<NUL>x" is no UID */
	if (len > PN_UID_MAX || memchr(src, '\0', len))
		return false;
	memcpy(dst, src, len);
	dst[len] = '\0';
	return pn_uid_valid(dst);
}

int pn_part10_meta_parse(const void *buf, size_t len, pn_part10_meta *ret_meta)
{
	const unsigned char *b = buf;
	pn_part10_meta m;
	memset(&m, 0, sizeof(m));
	if (len < FIRST_ELEMENT + GROUP_LENGTH_ELEMENT)
		return -EAGAIN;
	if (memcmp(b + PREAMBLE, "DICM", 4) != 0)
		return -EBADMSG;
	const unsigned char *gl = b + FIRST_ELEMENT;
	if (pn_le16(gl) != 0x0002 || pn_le16(gl + 2) != 0x0000 || memcmp(gl + 4, "UL", 2) != 0 || pn_le16(gl + 6) != 4)
		return -EBADMSG;
	uint32_t group_len = pn_le32(gl + 8);
	if (group_len > META_MAX)
		return -EBADMSG;
	size_t end = FIRST_ELEMENT + GROUP_LENGTH_ELEMENT + (size_t)group_len;
	if (len < end)
		return -EAGAIN;

	bool have_ts = false;
	size_t pos = FIRST_ELEMENT + GROUP_LENGTH_ELEMENT;
	while (pos < end) {
		const unsigned char *e = b + pos;
		pn_evr_elem el;
		if (pn_evr_read(e, end - pos, &el) < 0)
			return -EBADMSG;
		uint16_t group = (uint16_t)(el.tag >> 16), element = (uint16_t)el.tag;
		uint32_t vlen = el.len;
		size_t head = el.head;
		if (group != 0x0002)
			return -EBADMSG; /* the group length lied */
		const unsigned char *v = e + head;
		char *uid = NULL;
		if (element == 0x0002)
			uid = m.sop_class_uid;
		else if (element == 0x0003)
			uid = m.sop_instance_uid;
		else if (element == 0x0010)
			uid = m.ts_uid;
		if (uid) {
			if (memcmp(e + 4, "UI", 2) != 0 || !copy_uid(uid, v, vlen))
				return -EBADMSG;
			if (element == 0x0010)
				have_ts = true;
		}
		pos += head + vlen;
	}
	if (!have_ts)
		return -EBADMSG;
	m.dataset_offset = end;
	*ret_meta = m;
	return 0;
}

int pn_part10_meta_read(int fd, pn_part10_meta *ret_meta)
{
	unsigned char head[4096];
	unsigned char *buf = head;
	size_t cap = sizeof(head);
	int rc;
	for (;;) {
		ssize_t n = pread(fd, buf, cap, 0);
		rc = n < 0 ? -EBADMSG : pn_part10_meta_parse(buf, (size_t)n, ret_meta);
		if (rc != -EAGAIN || (size_t)n < cap || buf != head)
			break;
		/* a File Meta Information past 4 KiB: rare, read up to its limit */
		cap = META_MAX + FIRST_ELEMENT + GROUP_LENGTH_ELEMENT;
		buf = malloc(cap);
		if (!buf) {
			buf = head;
			rc = -EBADMSG;
			break;
		}
	}
	if (buf != head)
		free(buf);
	return rc == -EAGAIN ? -EBADMSG : rc;
}
