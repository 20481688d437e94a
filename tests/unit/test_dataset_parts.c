/* Parsing a stored file from the writer's buffers (pn_dcm_ds_load_parts)
 * gives the dataset that reading the file back gives, whatever the
 * transfer syntax and however the bytes are cut. Files: pydicom's test
 * files, which nobody here wrote. */
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

#include "dcm/pn_dcm.h"
#include "slurp.h"

#define FILES "/usr/lib/python3/dist-packages/pydicom/data/"

static int one_level(uint32_t tag)
{
	(void)tag;
	return 0;
}

/* The whole dataset as the store encodes it for the index (all of it in
 * one level, bulk values included). */
static pn_dcm_buf encoded(const pn_dcm_ds *ds)
{
	pn_dcm_buf levels[PN_LEVELS];
	assert_int_equal(pn_dcm_ds_encode_levels(ds, one_level, SIZE_MAX, levels), 0);
	for (int i = 1; i < PN_LEVELS; i++)
		free(levels[i].data);
	assert_true(levels[0].len > 0);
	return levels[0];
}

/* The whole dataset, pixel data included, which makes the values left in
 * the pieces (or on disk) be read. Encapsulated pixel data cannot be
 * written in explicit VR little endian: *ret_rc then fails alike. */
static pn_dcm_buf whole(const pn_dcm_ds *ds, int *ret_rc)
{
	pn_dcm_buf b = {NULL, 0};
	*ret_rc = pn_dcm_ds_encode_le(ds, true, &b);
	return b;
}

static int load_in_pieces(const char *data, size_t len, size_t piece, pn_dcm_ds **ret)
{
	size_t n = (len + piece - 1) / piece;
	pn_dcm_part *parts = calloc(n, sizeof(*parts));
	assert_non_null(parts);
	for (size_t i = 0; i < n; i++)
		parts[i] = (pn_dcm_part){data + i * piece, i + 1 < n ? piece : len - i * piece};
	int rc = pn_dcm_ds_load_parts(parts, n, ret);
	free(parts);
	return rc;
}

static void same_as_the_file(void **state)
{
	(void)state;
	/* explicit and implicit VR, big endian, deflated, encapsulated,
	 * sequences, multi-frame, character sets */
	const char *names[] = {"test_files/CT_small.dcm",         "test_files/MR_small_bigendian.dcm",
	                       "test_files/image_dfl.dcm",        "test_files/JPEG2000.dcm",
	                       "test_files/rtplan.dcm",           "test_files/rtdose.dcm",
	                       "charset_files/chrH31.dcm",        "test_files/MR_small_RLE.dcm",
	                       "test_files/SC_rgb_small_odd.dcm", "test_files/MR_small_implicit.dcm",
	                       "test_files/nested_priv_SQ.dcm",   "test_files/UN_sequence.dcm"};
	/* the writer's pieces are 128 KiB; smaller ones cut more values */
	const size_t pieces[] = {1000, 4096, 128 * 1024, 1u << 30};
	int compared_whole = 0;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char path[512];
		snprintf(path, sizeof(path), "%s%s", FILES, names[i]);
		size_t len;
		char *data = slurp(path, &len);
		pn_dcm_ds *from_file = NULL;
		assert_int_equal(pn_dcm_ds_load(path, &from_file), 0);
		pn_dcm_buf want = encoded(from_file);
		int want_whole_rc;
		pn_dcm_buf want_whole = whole(from_file, &want_whole_rc);
		if (want_whole_rc == 0)
			compared_whole++;
		for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
			pn_dcm_ds *ds = NULL;
			int rc = load_in_pieces(data, len, pieces[p] < len ? pieces[p] : len, &ds);
			if (rc != 0)
				fail_msg("%s in pieces of %zu: %d", names[i], pieces[p], rc);
			pn_dcm_buf got = encoded(ds);
			assert_int_equal(got.len, want.len);
			assert_memory_equal(got.data, want.data, want.len);
			free(got.data);
			int got_whole_rc;
			pn_dcm_buf got_whole = whole(ds, &got_whole_rc);
			assert_int_equal(got_whole_rc, want_whole_rc);
			if (got_whole_rc == 0) {
				assert_int_equal(got_whole.len, want_whole.len);
				assert_memory_equal(got_whole.data, want_whole.data, want_whole.len);
			}
			free(got_whole.data);
			pn_dcm_ds_free(ds);
		}
		/* cut short (a sender that broke off): whatever reading the file
		 * makes of it, so does reading the pieces */
		size_t half = len / 2 & ~(size_t)1;
		char cut[] = "/tmp/pn_test_parts_XXXXXX";
		int fd = mkstemp(cut);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, data, half), (ssize_t)half);
		close(fd);
		pn_dcm_ds *cut_file = NULL, *cut_parts = NULL;
		int file_rc = pn_dcm_ds_load(cut, &cut_file);
		unlink(cut);
		int parts_rc = load_in_pieces(data, half, 1000, &cut_parts);
		if ((file_rc == 0) != (parts_rc == 0))
			fail_msg("%s cut short: file %d, pieces %d", names[i], file_rc, parts_rc);
		if (file_rc == 0) {
			pn_dcm_buf a = encoded(cut_file), b = encoded(cut_parts);
			assert_int_equal(a.len, b.len);
			assert_memory_equal(a.data, b.data, a.len);
			free(a.data);
			free(b.data);
		}
		pn_dcm_ds_free(cut_file);
		pn_dcm_ds_free(cut_parts);
		free(want.data);
		free(want_whole.data);
		pn_dcm_ds_free(from_file);
		free(data);
	}
	/* all but the encapsulated ones (JPEG 2000, RLE) */
	assert_true(compared_whole >= 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(same_as_the_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
