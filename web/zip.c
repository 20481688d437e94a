/* The streaming ZIP writer (zip.h). */
#include "zip.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define MAX32 0xFFFFFFFFu
#define MAX16 0xFFFFu

typedef struct {
	char *name;
	uint16_t name_len;
	uint16_t dos_time, dos_date;
	uint32_t crc;
	uint64_t size, offset;
} entry;

struct pn_zip {
	entry *entries;
	size_t n, cap;
	uint64_t written; /* bytes of the archive so far */
	bool open;        /* an entry's data is being written */
	uLong crc;
	uint64_t size;
};

void pn_bytes_free(pn_bytes *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int reserve(pn_bytes *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more)
		cap *= 2;
	unsigned char *d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

static void u16(pn_bytes *b, uint32_t v)
{
	b->data[b->len++] = (unsigned char)(v & 0xff);
	b->data[b->len++] = (unsigned char)((v >> 8) & 0xff);
}

static void u32(pn_bytes *b, uint32_t v)
{
	u16(b, v & 0xffff);
	u16(b, v >> 16);
}

static void u64(pn_bytes *b, uint64_t v)
{
	u32(b, (uint32_t)(v & MAX32));
	u32(b, (uint32_t)(v >> 32));
}

static void raw(pn_bytes *b, const void *d, size_t n)
{
	memcpy(b->data + b->len, d, n);
	b->len += n;
}

int pn_zip_create(pn_zip **ret)
{
	*ret = calloc(1, sizeof(pn_zip));
	return *ret ? 0 : -ENOMEM;
}

void pn_zip_free(pn_zip *z)
{
	if (!z)
		return;
	for (size_t i = 0; i < z->n; i++)
		free(z->entries[i].name);
	free(z->entries);
	free(z);
}

static void dos_time(time_t t, uint16_t *tm, uint16_t *dt)
{
	struct tm lt;
	if (!localtime_r(&t, &lt) || lt.tm_year < 80) {
		*tm = 0;
		*dt = (1 << 5) | 1; /* 1980-01-01 */
		return;
	}
	*tm = (uint16_t)((lt.tm_hour << 11) | (lt.tm_min << 5) | (lt.tm_sec / 2));
	*dt = (uint16_t)(((lt.tm_year - 80) << 9) | ((lt.tm_mon + 1) << 5) | lt.tm_mday);
}

int pn_zip_entry_begin(pn_zip *z, const char *name, time_t mtime, pn_bytes *out)
{
	size_t nl = strlen(name);
	if (z->open || nl == 0 || nl > 1024 || name[0] == '/')
		return -EINVAL;
	if (z->n == z->cap) {
		size_t cap = z->cap ? z->cap * 2 : 64;
		entry *e = realloc(z->entries, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		z->entries = e;
		z->cap = cap;
	}
	entry *e = &z->entries[z->n];
	memset(e, 0, sizeof(*e));
	e->name = strdup(name);
	if (!e->name || reserve(out, 30 + nl) < 0) {
		free(e->name);
		return -ENOMEM;
	}
	e->name_len = (uint16_t)nl;
	e->offset = z->written;
	dos_time(mtime, &e->dos_time, &e->dos_date);
	size_t before = out->len;
	u32(out, 0x04034b50);
	u16(out, 45);              /* version needed: ZIP64 */
	u16(out, 0x0008 | 0x0800); /* data descriptor follows; the name is UTF-8 */
	u16(out, 0);               /* stored */
	u16(out, e->dos_time);
	u16(out, e->dos_date);
	u32(out, 0); /* CRC, sizes: in the descriptor */
	u32(out, 0);
	u32(out, 0);
	u16(out, (uint32_t)nl);
	u16(out, 0);
	raw(out, name, nl);
	z->written += out->len - before;
	z->n++;
	z->open = true;
	z->crc = crc32(0L, Z_NULL, 0);
	z->size = 0;
	return 0;
}

void pn_zip_entry_data(pn_zip *z, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len) {
		uInt k = len > (1u << 30) ? (1u << 30) : (uInt)len;
		z->crc = crc32(z->crc, p, k);
		p += k;
		len -= k;
		z->size += k;
		z->written += k;
	}
}

int pn_zip_entry_end(pn_zip *z, pn_bytes *out)
{
	if (!z->open)
		return -EINVAL;
	entry *e = &z->entries[z->n - 1];
	e->crc = (uint32_t)z->crc;
	e->size = z->size;
	bool big = e->size >= MAX32;
	if (reserve(out, 24) < 0)
		return -ENOMEM;
	size_t before = out->len;
	u32(out, 0x08074b50);
	u32(out, e->crc);
	if (big) { /* ZIP64 descriptor: 8-byte sizes */
		u64(out, e->size);
		u64(out, e->size);
	} else {
		u32(out, (uint32_t)e->size);
		u32(out, (uint32_t)e->size);
	}
	z->written += out->len - before;
	z->open = false;
	return 0;
}

int pn_zip_finish(pn_zip *z, pn_bytes *out)
{
	if (z->open)
		return -EINVAL;
	uint64_t cd_start = z->written;
	size_t before = out->len;
	for (size_t i = 0; i < z->n; i++) {
		entry *e = &z->entries[i];
		bool big_size = e->size >= MAX32, big_off = e->offset >= MAX32;
		uint16_t extra = (uint16_t)((big_size || big_off) ? 4 + (big_size ? 16 : 0) + (big_off ? 8 : 0) : 0);
		if (reserve(out, 46 + e->name_len + extra) < 0)
			return -ENOMEM;
		u32(out, 0x02014b50);
		u16(out, (3 << 8) | 45); /* made by: Unix, 4.5 */
		u16(out, 45);
		u16(out, 0x0008 | 0x0800);
		u16(out, 0);
		u16(out, e->dos_time);
		u16(out, e->dos_date);
		u32(out, e->crc);
		u32(out, big_size ? MAX32 : (uint32_t)e->size);
		u32(out, big_size ? MAX32 : (uint32_t)e->size);
		u16(out, e->name_len);
		u16(out, extra);
		u16(out, 0);              /* comment */
		u16(out, 0);              /* disk */
		u16(out, 0);              /* internal attributes */
		u32(out, 0100644u << 16); /* a regular file, rw-r--r-- */
		u32(out, big_off ? MAX32 : (uint32_t)e->offset);
		raw(out, e->name, e->name_len);
		if (extra) {
			u16(out, 0x0001);
			u16(out, (uint32_t)(extra - 4));
			if (big_size) {
				u64(out, e->size);
				u64(out, e->size);
			}
			if (big_off)
				u64(out, e->offset);
		}
	}
	uint64_t cd_size = (out->len - before);
	uint64_t cd_end = cd_start + cd_size;
	bool zip64 = z->n >= MAX16 || cd_start >= MAX32 || cd_size >= MAX32;
	if (reserve(out, 56 + 20 + 22) < 0)
		return -ENOMEM;
	if (zip64) {
		u32(out, 0x06064b50); /* ZIP64 end of central directory */
		u64(out, 44);
		u16(out, (3 << 8) | 45);
		u16(out, 45);
		u32(out, 0);
		u32(out, 0);
		u64(out, z->n);
		u64(out, z->n);
		u64(out, cd_size);
		u64(out, cd_start);
		u32(out, 0x07064b50); /* its locator */
		u32(out, 0);
		u64(out, cd_end);
		u32(out, 1);
	}
	u32(out, 0x06054b50);
	u16(out, 0);
	u16(out, 0);
	u16(out, zip64 ? MAX16 : (uint32_t)z->n);
	u16(out, zip64 ? MAX16 : (uint32_t)z->n);
	u32(out, zip64 ? MAX32 : (uint32_t)cd_size);
	u32(out, zip64 ? MAX32 : (uint32_t)cd_start);
	u16(out, 0);
	z->written += out->len - before;
	return 0;
}
