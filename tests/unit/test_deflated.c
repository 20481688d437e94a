/* Deflated datasets (PS3.5 A.5) are read through a scratch file: the same
 * dataset as the uncompressed one, memory that does not grow with what they
 * inflate to, a limit on that size, and a clear error for a broken stream. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "dcm/pn_dcm.h"
#include "slurp.h"
#include "storage_path.h"
#include "store.h"

#define FILES "/usr/lib/python3/dist-packages/pydicom/data/test_files/"
#define DEFLATED_TS "1.2.840.10008.1.2.1.99"
#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"

typedef struct {
	unsigned char *p;
	size_t len, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void put16(bytes *b, unsigned v)
{
	unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
	put(b, x, 2);
}

static void put32(bytes *b, uint32_t v)
{
	put16(b, v & 0xffff);
	put16(b, v >> 16);
}

/* An explicit VR little endian element; values padded to even length. */
static void element(bytes *b, unsigned group, unsigned elem, const char *vr, const void *value, size_t len)
{
	size_t padded = len + (len & 1);
	put16(b, group);
	put16(b, elem);
	put(b, vr, 2);
	if (!strcmp(vr, "OB") || !strcmp(vr, "OW") || !strcmp(vr, "UN") || !strcmp(vr, "UT")) {
		put16(b, 0);
		put32(b, (uint32_t)padded);
	} else {
		put16(b, (unsigned)padded);
	}
	put(b, value, len);
	if (len & 1)
		put(b, strcmp(vr, "UI") == 0 || strcmp(vr, "OB") == 0 ? "\0" : " ", 1);
}

static void text(bytes *b, unsigned group, unsigned elem, const char *vr, const char *value)
{
	element(b, group, elem, vr, value, strlen(value));
}

/* Raw deflate (no zlib header) of `data`, then `zeros` zero bytes'
 * worth of a value, then `tail`: what a sender puts on the wire. */
static bytes deflate_parts(const bytes *head, size_t zeros, const bytes *tail)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	bytes out = {0};
	unsigned char buf[65536];
	static const unsigned char zero[65536];
	const struct {
		const unsigned char *p;
		size_t n;
		bool repeat;
	} in[] = {
	    {head->p, head->len, false}, {zero, zeros, true}, {tail ? tail->p : NULL, tail ? tail->len : 0, false}};
	for (int i = 0; i < 3; i++) {
		size_t left = in[i].n;
		const unsigned char *p = in[i].p;
		while (left > 0) {
			size_t n = in[i].repeat ? (left < sizeof(zero) ? left : sizeof(zero)) : left;
			z.next_in = (unsigned char *)(in[i].repeat ? zero : p);
			z.avail_in = (uInt)n;
			do {
				z.next_out = buf;
				z.avail_out = sizeof(buf);
				assert_int_not_equal(deflate(&z, Z_NO_FLUSH), Z_STREAM_ERROR);
				put(&out, buf, sizeof(buf) - z.avail_out);
			} while (z.avail_out == 0);
			left -= n;
			if (!in[i].repeat)
				p += n;
		}
	}
	int zr;
	do {
		z.next_out = buf;
		z.avail_out = sizeof(buf);
		zr = deflate(&z, Z_FINISH);
		put(&out, buf, sizeof(buf) - z.avail_out);
	} while (zr != Z_STREAM_END);
	deflateEnd(&z);
	if (out.len & 1)
		put(&out, "\0", 1); /* PS3.5 A.5: padded to even length */
	return out;
}

/* A Part-10 file: preamble, meta header naming `ts`, then `dataset`. */
static void write_part10(const char *path, const char *sop_uid, const char *ts, const bytes *dataset)
{
	bytes meta = {0};
	element(&meta, 0x0002, 0x0001, "OB", "\0\1", 2);
	text(&meta, 0x0002, 0x0002, "UI", CT_CLASS);
	text(&meta, 0x0002, 0x0003, "UI", sop_uid);
	text(&meta, 0x0002, 0x0010, "UI", ts);
	text(&meta, 0x0002, 0x0012, "UI", "1.2.3.4");
	bytes f = {0};
	unsigned char preamble[128] = {0};
	put(&f, preamble, sizeof(preamble));
	put(&f, "DICM", 4);
	unsigned char gl[4] = {(unsigned char)meta.len, (unsigned char)(meta.len >> 8), (unsigned char)(meta.len >> 16),
	                       (unsigned char)(meta.len >> 24)};
	element(&f, 0x0002, 0x0000, "UL", gl, 4);
	put(&f, meta.p, meta.len);
	put(&f, dataset->p, dataset->len);
	FILE *out = fopen(path, "wb");
	assert_non_null(out);
	assert_int_equal(fwrite(f.p, 1, f.len, out), f.len);
	assert_int_equal(fclose(out), 0);
	free(meta.p);
	free(f.p);
}

/* The whole dataset, pixel data included: values left on disk are read. */
static pn_dcm_buf encoded(const pn_dcm_ds *ds)
{
	pn_dcm_buf b = {NULL, 0};
	assert_int_equal(pn_dcm_ds_encode_le(ds, true, &b), 0);
	return b;
}

typedef struct {
	char dir[64];
	char path[128];
} scratch;

static int setup(void **state)
{
	scratch *s = calloc(1, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/pn_test_deflated_XXXXXX");
	if (!mkdtemp(s->dir))
		return -1;
	snprintf(s->path, sizeof(s->path), "%s/f.dcm", s->dir);
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	scratch *s = *state;
	unlink(s->path);
	rmdir(s->dir); /* fails, and the test with it, if a scratch file was left */
	free(s);
	return 0;
}

/* CT_small.dcm (explicit VR little endian), its dataset deflated: every
 * value the same, pixel data too (read later, from the scratch file). */
static void same_dataset_as_uncompressed(void **state)
{
	scratch *s = *state;
	size_t len;
	char *orig = slurp(FILES "CT_small.dcm", &len);
	pn_dcm_ds *plain = NULL;
	assert_int_equal(pn_store_load(FILES "CT_small.dcm", UINT64_MAX, &plain), 0);
	/* its dataset: after the meta header's group length and elements */
	uint32_t meta_len = (uint32_t)(unsigned char)orig[140] | (uint32_t)(unsigned char)orig[141] << 8 |
	                    (uint32_t)(unsigned char)orig[142] << 16 | (uint32_t)(unsigned char)orig[143] << 24;
	bytes ds = {(unsigned char *)orig + 144 + meta_len, len - 144 - meta_len, 0};
	bytes z = deflate_parts(&ds, 0, NULL);
	write_part10(s->path, "1.2.3.4.5", DEFLATED_TS, &z);

	pn_dcm_ds *got = NULL;
	assert_int_equal(pn_store_load(s->path, 64u << 20, &got), 0);
	pn_dcm_buf a = encoded(plain), b = encoded(got);
	assert_true(a.len > 10000); /* pixel data included */
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	char *ts = NULL;
	assert_int_equal(pn_dcm_ds_get(got, 0x00020010, &ts), 0);
	assert_string_equal(ts, DEFLATED_TS); /* the file's syntax, not the scratch's */
	free(ts);

	free(a.data);
	free(b.data);
	free(z.p);
	pn_dcm_ds_free(got);
	pn_dcm_ds_free(plain);
	free(orig);
}

/* UIDs, a 64 MiB value of zeros, then a 6,000-character text. */
static bytes bomb_head(void)
{
	bytes h = {0};
	text(&h, 0x0008, 0x0016, "UI", CT_CLASS);
	text(&h, 0x0008, 0x0018, "UI", "2.25.77.3");
	text(&h, 0x0010, 0x0010, "PN", "Bomb^Deflate");
	text(&h, 0x0019, 0x0010, "LO", "PNTEST");
	return h;
}

static bytes bomb_tail(char **ret_comments)
{
	bytes t = {0};
	text(&t, 0x0020, 0x000D, "UI", "2.25.77.1");
	text(&t, 0x0020, 0x000E, "UI", "2.25.77.2");
	char *c = malloc(6001);
	for (int i = 0; i < 600; i++)
		snprintf(c + 10 * i, 11, "note-%04d;", i);
	element(&t, 0x0020, 0x4000, "LT", c, 6000);
	*ret_comments = c;
	return t;
}

static void write_bomb(const char *path, size_t zeros)
{
	bytes head = bomb_head();
	/* (0019,1010) OB, its header written by hand: the value follows */
	put16(&head, 0x0019);
	put16(&head, 0x1010);
	put(&head, "OB\0\0", 4);
	put32(&head, (uint32_t)zeros);
	char *comments;
	bytes tail = bomb_tail(&comments);
	bytes z = deflate_parts(&head, zeros, &tail);
	write_part10(path, "2.25.77.3", DEFLATED_TS, &z);
	free(head.p);
	free(tail.p);
	free(z.p);
	free(comments);
}

static void memory_does_not_grow_with_the_inflated_size(void **state)
{
	scratch *s = *state;
	const size_t zeros = 64u << 20;
	write_bomb(s->path, zeros);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rusage before, after;
		getrusage(RUSAGE_SELF, &before);
		pn_dcm_ds *ds = NULL;
		int rc = pn_store_load(s->path, 128u << 20, &ds);
		char *v = NULL, *sop = NULL;
		if (rc == 0)
			rc = pn_dcm_ds_get(ds, 0x00204000, &v);
		if (rc == 0)
			rc = pn_dcm_ds_get(ds, 0x00080018, &sop);
		getrusage(RUSAGE_SELF, &after);
		long grown_kib = after.ru_maxrss - before.ru_maxrss;
		int ok = rc == 0 && v && strlen(v) == 6000 && strncmp(v, "note-0000;", 10) == 0 &&
		         strcmp(v + 5990, "note-0599;") == 0 && strcmp(sop, "2.25.77.3") == 0 && grown_kib < 16 * 1024;
		if (!ok)
			fprintf(stderr, "rc %d, comments %zu chars, grew %ld KiB\n", rc, v ? strlen(v) : 0, grown_kib);
		free(v);
		free(sop);
		pn_dcm_ds_free(ds);
		_exit(ok ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);

	/* the store and recovery name its final path from it alike */
	char rel[PN_REL_PATH_MAX], want[PN_REL_PATH_MAX];
	assert_int_equal(pn_store_final_path(s->path, 7, rel), 0);
	assert_int_equal(pn_storage_rel_path("2.25.77.2", "2.25.77.3", 7, want), 0);
	assert_string_equal(rel, want);
}

static void beyond_the_limit_is_e2big(void **state)
{
	scratch *s = *state;
	write_bomb(s->path, 64u << 20);
	pn_dcm_ds *ds = NULL;
	assert_int_equal(pn_store_load(s->path, 32u << 20, &ds), -E2BIG);
	assert_null(ds);
	/* just enough */
	assert_int_equal(pn_store_load(s->path, (64u << 20) + 7000 + 200, &ds), 0);
	pn_dcm_ds_free(ds);
}

static void broken_stream_is_ebadmsg(void **state)
{
	scratch *s = *state;
	/* BFINAL=1 with the reserved block type 11: invalid from the first bit */
	bytes junk = {0};
	put(&junk, "\x07\x00\x01\x02\x03\x04", 6);
	write_part10(s->path, "2.25.77.4", DEFLATED_TS, &junk);
	pn_dcm_ds *ds = NULL;
	assert_int_equal(pn_store_load(s->path, 64u << 20, &ds), -EBADMSG);
	/* recovery takes such a file for one that was never ours */
	char rel[PN_REL_PATH_MAX];
	assert_int_equal(pn_store_final_path(s->path, 7, rel), -EBADMSG);
	free(junk.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(same_dataset_as_uncompressed, setup, teardown),
	    cmocka_unit_test_setup_teardown(memory_does_not_grow_with_the_inflated_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(beyond_the_limit_is_e2big, setup, teardown),
	    cmocka_unit_test_setup_teardown(broken_stream_is_ebadmsg, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
