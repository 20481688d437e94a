#include "part10.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define PREAMBLE 128
/* preamble, "DICM", then (0002,0000) UL 4 as explicit VR little endian */
#define FIRST_ELEMENT (PREAMBLE + 4)
#define GROUP_LENGTH_ELEMENT 12
/* Far more than any real group 0002; a bigger claim is a damaged file. */
#define META_MAX (64 * 1024)

static uint16_t le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The VRs whose explicit length takes 4 bytes after 2 reserved ones. */
static bool long_vr(const unsigned char *vr)
{
	static const char *const vrs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
	for (size_t i = 0; i < sizeof(vrs) / sizeof(vrs[0]); i++)
		if (memcmp(vr, vrs[i], 2) == 0)
			return true;
	return false;
}

/* A UI value without its trailing NUL/space padding; false if it is not a
 * valid UID. */
static bool copy_uid(char *dst, const unsigned char *src, uint32_t len)
{
	while (len > 0 && (src[len - 1] == '\0' || src[len - 1] == ' '))
		len--;
	if (len > PN_UID_MAX)
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
	if (le16(gl) != 0x0002 || le16(gl + 2) != 0x0000 || memcmp(gl + 4, "UL", 2) != 0 || le16(gl + 6) != 4)
		return -EBADMSG;
	uint32_t group_len = le32(gl + 8);
	if (group_len > META_MAX)
		return -EBADMSG;
	size_t end = FIRST_ELEMENT + GROUP_LENGTH_ELEMENT + (size_t)group_len;
	if (len < end)
		return -EAGAIN;

	bool have_ts = false;
	size_t pos = FIRST_ELEMENT + GROUP_LENGTH_ELEMENT;
	while (pos < end) {
		if (end - pos < 8)
			return -EBADMSG;
		const unsigned char *e = b + pos;
		uint16_t group = le16(e), element = le16(e + 2);
		uint32_t vlen;
		size_t head;
		if (group != 0x0002)
			return -EBADMSG; /* the group length lied */
		if (long_vr(e + 4)) {
			if (end - pos < 12)
				return -EBADMSG;
			vlen = le32(e + 8);
			head = 12;
		} else {
			vlen = le16(e + 6);
			head = 8;
		}
		if (vlen > end - pos - head)
			return -EBADMSG;
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
