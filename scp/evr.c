#include "evr.h"

#include <errno.h>

bool pn_evr_long_vr(const char vr[2])
{
	static const char *const l[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
	for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
		if (vr[0] == l[i][0] && vr[1] == l[i][1])
			return true;
	return false;
}

uint16_t pn_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

uint32_t pn_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int pn_evr_read(const unsigned char *p, size_t avail, pn_evr_elem *e)
{
	if (avail < 8)
		return -EBADMSG;
	e->tag = (uint32_t)pn_le16(p) << 16 | pn_le16(p + 2);
	e->vr[0] = (char)p[4];
	e->vr[1] = (char)p[5];
	if (pn_evr_long_vr(e->vr)) {
		if (avail < 12)
			return -EBADMSG;
		e->head = 12;
		e->len = pn_le32(p + 8);
	} else {
		e->head = 8;
		e->len = pn_le16(p + 6);
	}
	if (e->len > avail - e->head)
		return -EBADMSG;
	return 0;
}

int pn_evr_read_item(const unsigned char *p, size_t avail, uint32_t *ret_len)
{
	if (avail < 8 || pn_le16(p) != 0xFFFE || pn_le16(p + 2) != 0xE000)
		return -EBADMSG;
	uint32_t len = pn_le32(p + 4);
	if (len > avail - 8)
		return -EBADMSG;
	*ret_len = len;
	return 0;
}
