#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "part10.h"

/* A File Meta Information written by hand, element by element, the way
 * PS3.10 7.1 lays it out (explicit VR little endian). */
typedef struct {
	unsigned char b[16384];
	size_t n, gl_value; /* where the group length's value goes */
} file;

static void put(file *f, const void *p, size_t n)
{
	memcpy(f->b + f->n, p, n);
	f->n += n;
}

static void put16(file *f, unsigned v)
{
	unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
	put(f, b, 2);
}

static void put32(file *f, unsigned long v)
{
	unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 24)};
	put(f, b, 4);
}

static void element(file *f, unsigned el, const char *vr, const void *v, size_t len)
{
	put16(f, 0x0002);
	put16(f, el);
	put(f, vr, 2);
	if (strcmp(vr, "OB") == 0) {
		put16(f, 0);
		put32(f, len);
	} else {
		put16(f, (unsigned)len);
	}
	put(f, v, len);
}

static void uid(file *f, unsigned el, const char *u)
{
	char v[66];
	size_t n = strlen(u);
	memcpy(v, u, n);
	if (n % 2)
		v[n++] = '\0'; /* UI pads with NUL */
	element(f, el, "UI", v, n);
}

static void start(file *f)
{
	memset(f, 0, sizeof(*f));
	f->n = 128;
	put(f, "DICM", 4);
	put16(f, 0x0002);
	put16(f, 0x0000);
	put(f, "UL", 2);
	put16(f, 4);
	f->gl_value = f->n;
	put32(f, 0);
}

/* Sets the group length to what follows it, and appends a dataset. */
static size_t finish(file *f)
{
	size_t end = f->n;
	unsigned long gl = (unsigned long)(end - f->gl_value - 4);
	size_t at = f->n;
	f->n = f->gl_value;
	put32(f, gl);
	f->n = at;
	put(f,
	    "\x08\x00\x16\x00UI\x04\x00"
	    "1.23",
	    12);
	return end;
}

static void typical(file *f)
{
	static const unsigned char version[2] = {0, 1};
	start(f);
	element(f, 0x0001, "OB", version, 2);
	uid(f, 0x0002, "1.2.840.10008.5.1.4.1.1.2");
	uid(f, 0x0003, "1.2.3.4.5");
	uid(f, 0x0010, "1.2.840.10008.1.2.1");
	uid(f, 0x0012, "1.2.3");
	element(f, 0x0013, "SH", "PACSNODE", 8);
}

static void reads_a_typical_header(void **state)
{
	(void)state;
	file f;
	typical(&f);
	size_t end = finish(&f);
	pn_part10_meta m;
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), 0);
	assert_int_equal(m.dataset_offset, end);
	assert_string_equal(m.ts_uid, "1.2.840.10008.1.2.1");
	assert_string_equal(m.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
	assert_string_equal(m.sop_instance_uid, "1.2.3.4.5");
	/* the header alone is enough; a byte less is not */
	assert_int_equal(pn_part10_meta_parse(f.b, end, &m), 0);
	assert_int_equal(pn_part10_meta_parse(f.b, end - 1, &m), -EAGAIN);
	assert_int_equal(pn_part10_meta_parse(f.b, 100, &m), -EAGAIN);
}

static void refuses_what_is_not_our_header(void **state)
{
	(void)state;
	file f;
	pn_part10_meta m;

	typical(&f);
	finish(&f);
	f.b[128] = 'X'; /* no "DICM" */
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);

	typical(&f);
	finish(&f);
	f.b[f.gl_value - 2] = 2; /* group length of length 2 */
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);

	/* no Transfer Syntax UID */
	start(&f);
	uid(&f, 0x0002, "1.2.840.10008.5.1.4.1.1.2");
	uid(&f, 0x0003, "1.2.3.4.5");
	finish(&f);
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);

	/* a Transfer Syntax UID that is not a UID */
	start(&f);
	element(&f, 0x0010, "UI", "1.2/../x", 8);
	finish(&f);
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);

	/* a group length that runs into the dataset */
	typical(&f);
	finish(&f);
	f.b[f.gl_value] += 12;
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);

	/* a group length that ends inside an element */
	typical(&f);
	finish(&f);
	f.b[f.gl_value] -= 3;
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);

	/* a value length past the group */
	start(&f);
	uid(&f, 0x0010, "1.2.840.10008.1.2.1");
	element(&f, 0x0013, "SH", "PACSNODE", 8);
	f.b[f.n - 10] = 0x40;
	finish(&f);
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);
}

static void a_huge_group_length_is_damage_not_a_wait(void **state)
{
	(void)state;
	file f;
	pn_part10_meta m;
	typical(&f);
	finish(&f);
	f.b[f.gl_value + 3] = 0x7f;
	assert_int_equal(pn_part10_meta_parse(f.b, f.n, &m), -EBADMSG);
}

/* From a file: a header past the first 4 KiB read is read whole; one cut
 * short is damage. */
static void reads_a_long_header_from_a_file(void **state)
{
	(void)state;
	static const unsigned char private_info[6000];
	file f;
	typical(&f);
	element(&f, 0x0102, "OB", private_info, sizeof(private_info));
	size_t end = finish(&f);
	assert_true(end > 4096);
	char path[] = "/tmp/pn_test_part10_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, f.b, f.n), (ssize_t)f.n);
	pn_part10_meta m;
	assert_int_equal(pn_part10_meta_read(fd, &m), 0);
	assert_int_equal(m.dataset_offset, end);
	assert_string_equal(m.sop_instance_uid, "1.2.3.4.5");
	assert_int_equal(ftruncate(fd, (off_t)end - 1), 0);
	assert_int_equal(pn_part10_meta_read(fd, &m), -EBADMSG);
	close(fd);
	assert_int_equal(pn_part10_meta_read(-1, &m), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(reads_a_typical_header),
	    cmocka_unit_test(refuses_what_is_not_our_header),
	    cmocka_unit_test(a_huge_group_length_is_damage_not_a_wait),
	    cmocka_unit_test(reads_a_long_header_from_a_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
