/* The direct C-FIND response writer against the general (dcmtk) one: for
 * the same query and row both must give the same bytes, in both little
 * endian syntaxes; rows the direct writer cannot do it must say so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attr_levels.h"
#include "find_response.h"

#define TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))
#define STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"

typedef struct {
	uint32_t tag;
	const char *value;
} kv;

/* A stored instance's attributes (UTF-8, as the index keeps them). */
static const kv stored[] = {
    {TAG(0x0008, 0x0008), "ORIGINAL\\PRIMARY\\AXIAL"},
    {TAG(0x0008, 0x0016), "1.2.840.10008.5.1.4.1.1.2"},
    {TAG(0x0008, 0x0018), "1.2.3.4.5.6.7"}, /* odd: padded with NUL */
    {TAG(0x0008, 0x0020), "20240131"},
    {TAG(0x0008, 0x0030), "101500"},
    {TAG(0x0008, 0x0050), "ACC12"}, /* odd: padded with a space */
    {TAG(0x0008, 0x0060), "CT"},
    {TAG(0x0008, 0x0090), "REF^DOC"},
    {TAG(0x0008, 0x1030), "CHEST"},
    {TAG(0x0008, 0x103E), "AXIAL 5mm"},
    {TAG(0x0010, 0x0010), "SMITH^JOHN"},
    {TAG(0x0010, 0x0020), "PID-1"},
    {TAG(0x0010, 0x0021), "HOSP"},
    {TAG(0x0010, 0x0030), "19600101"},
    {TAG(0x0010, 0x0040), "M"},
    {TAG(0x0018, 0x0050), "2.5"},
    {TAG(0x0020, 0x000D), "1.2.3.4"},
    {TAG(0x0020, 0x000E), "1.2.3.4.5"},
    {TAG(0x0020, 0x0010), "S1"},
    {TAG(0x0020, 0x0011), "3"},
    {TAG(0x0020, 0x0013), "17"},
    {TAG(0x0028, 0x0010), "512"}, /* US: binary */
    {TAG(0x0028, 0x0011), "512"},
};

typedef struct {
	pn_dcm_buf blobs[PN_LEVELS];
} rig;

static int setup(void **state)
{
	rig *r = calloc(1, sizeof *r);
	assert_non_null(r);
	pn_dcm_ds *ds = NULL;
	assert_int_equal(pn_dcm_ds_create(&ds), 0);
	for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++)
		assert_int_equal(pn_dcm_ds_put(ds, stored[i].tag, stored[i].value), 0);
	assert_int_equal(pn_dcm_ds_encode_levels(ds, pn_attr_level, 4096, r->blobs), 0);
	pn_dcm_ds_free(ds);
	*state = r;
	return 0;
}

static int teardown(void **state)
{
	rig *r = *state;
	for (int l = 0; l < PN_LEVELS; l++)
		free(r->blobs[l].data);
	free(r);
	return 0;
}

static pn_query *parse(const kv *keys, size_t n)
{
	pn_dcm_ds *id = NULL;
	assert_int_equal(pn_dcm_ds_create(&id), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(pn_dcm_ds_put(id, keys[i].tag, keys[i].value), 0);
	pn_query *q = NULL;
	unsigned short status = 0;
	char why[256] = "";
	int rc = pn_query_parse(id, STUDY_ROOT_FIND, PN_QUERY_FOLD_NAMES, &q, &status, why, sizeof why);
	if (rc != 0)
		fail_msg("query refused: %s", why);
	return q;
}

static pn_find_row row_for(const rig *r, int level, const char *modalities)
{
	pn_find_row row;
	memset(&row, 0, sizeof row);
	for (int l = 0; l <= level; l++) {
		row.attrs[l].data = r->blobs[l].data;
		row.attrs[l].len = r->blobs[l].len;
	}
	for (int c = 0; c < PN_FIND_C_COUNT; c++)
		row.counts[c] = 3 + c;
	row.modalities = modalities;
	row.sop_classes = "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.4";
	return row;
}

/* 0: both ways gave the same bytes; 1: the direct way declined. */
static int compare(const pn_query *q, const pn_find_row *row, bool explicit_vr)
{
	pn_level_blob blobs[PN_LEVELS];
	pn_level_blob *ptrs[PN_LEVELS];
	pn_dcm_ds *levels[PN_LEVELS] = {0};
	memset(blobs, 0, sizeof blobs);
	for (int l = 0; l < PN_LEVELS; l++) {
		ptrs[l] = &blobs[l];
		if (l <= q->level && (q->need_levels & (1u << l)))
			assert_int_equal(pn_level_blob_set(&blobs[l], &row->attrs[l]), 0);
	}
	unsigned char *out = NULL;
	size_t len = 0, cap = 0;
	int rc = pn_find_response_encode(q, row, ptrs, "PACSNODE", explicit_vr, &out, &len, &cap);
	assert_true(rc == 0 || rc == 1);
	if (rc == 0) {
		for (int l = 0; l < PN_LEVELS; l++)
			levels[l] = pn_level_blob_ds(&blobs[l], l);
		pn_dcm_ds *rsp = NULL;
		assert_int_equal(pn_find_response_build(q, row, levels, "PACSNODE", NULL, &rsp), 0);
		pn_dcm_buf want = {0};
		assert_int_equal(pn_dcm_ds_encode_le(rsp, explicit_vr, &want), 0);
		pn_dcm_ds_free(rsp);
		if (want.len != len || memcmp(want.data, out, len) != 0) {
			size_t at = 0;
			while (at < len && at < want.len && ((unsigned char *)want.data)[at] == out[at])
				at++;
			fail_msg("%s VR: direct %zu bytes, dcmtk %zu, first difference at byte %zu",
			         explicit_vr ? "explicit" : "implicit", len, want.len, at);
		}
		free(want.data);
	}
	free(out);
	for (int l = 0; l < PN_LEVELS; l++)
		pn_level_blob_clear(&blobs[l]);
	return rc;
}

static void study_level_same_bytes(void **state)
{
	const rig *r = *state;
	/* Empty keys, matched keys, computed ones, a key of a level below
	 * (returned empty), one the blobs lack, Retrieve AE not asked. */
	const kv keys[] = {
	    {TAG(0x0008, 0x0020), "20240101-20240201"},
	    {TAG(0x0008, 0x0030), ""},
	    {TAG(0x0008, 0x0050), ""},
	    {TAG(0x0008, 0x0052), "STUDY"},
	    {TAG(0x0008, 0x0056), ""},
	    {TAG(0x0008, 0x0061), ""},
	    {TAG(0x0008, 0x0062), ""},
	    {TAG(0x0008, 0x0090), ""},
	    {TAG(0x0008, 0x1030), ""},
	    {TAG(0x0008, 0x1048), ""}, /* Physicians of Record: not stored */
	    {TAG(0x0010, 0x0010), "SMI*"},
	    {TAG(0x0010, 0x0020), ""},
	    {TAG(0x0010, 0x0030), ""},
	    {TAG(0x0018, 0x0050), ""}, /* image level: empty */
	    {TAG(0x0020, 0x000D), ""},
	    {TAG(0x0020, 0x0010), ""},
	    {TAG(0x0020, 0x1206), ""},
	    {TAG(0x0020, 0x1208), ""},
	};
	pn_query *q = parse(keys, sizeof keys / sizeof keys[0]);
	pn_find_row row = row_for(r, q->level, "CT\\MR");
	assert_true(pn_find_response_direct_ok(q));
	assert_int_equal(compare(q, &row, true), 0);
	assert_int_equal(compare(q, &row, false), 0);
	row.modalities = "CT"; /* even length: no padding */
	row.counts[3] = -1;    /* no count: empty */
	assert_int_equal(compare(q, &row, true), 0);
	assert_int_equal(compare(q, &row, false), 0);
	pn_query_free(q);
}

static void image_level_same_bytes(void **state)
{
	const rig *r = *state;
	/* Binary (US) and DS values from the blob; Retrieve AE asked. */
	const kv keys[] = {
	    {TAG(0x0008, 0x0008), ""},        {TAG(0x0008, 0x0016), ""},
	    {TAG(0x0008, 0x0018), ""},        {TAG(0x0008, 0x0052), "IMAGE"},
	    {TAG(0x0008, 0x0054), ""},        {TAG(0x0018, 0x0050), ""},
	    {TAG(0x0020, 0x000D), "1.2.3.4"}, {TAG(0x0020, 0x000E), "1.2.3.4.5"},
	    {TAG(0x0020, 0x0013), ""},        {TAG(0x0028, 0x0010), ""},
	    {TAG(0x0028, 0x0011), ""},        {TAG(0x0028, 0x0100), ""}, /* Bits Allocated: not stored, US */
	};
	pn_query *q = parse(keys, sizeof keys / sizeof keys[0]);
	pn_find_row row = row_for(r, q->level, NULL);
	/* Bits Allocated is US: empty numeric keys go the general way. */
	assert_int_equal(compare(q, &row, true), 1);
	pn_query_free(q);

	pn_query *q2 = parse(keys, sizeof keys / sizeof keys[0] - 1);
	assert_int_equal(compare(q2, &row, true), 0);
	assert_int_equal(compare(q2, &row, false), 0);
	pn_query_free(q2);
}

static void declines_what_it_cannot_write(void **state)
{
	rig *r = *state;
	const kv study_keys[] = {
	    {TAG(0x0008, 0x0052), "STUDY"},
	    {TAG(0x0010, 0x0010), ""},
	    {TAG(0x0020, 0x000D), ""},
	};
	pn_query *q = parse(study_keys, 3);

	/* Non-ASCII text: the general way converts it and names the set. */
	pn_dcm_ds *ds = NULL;
	pn_dcm_buf blobs[PN_LEVELS];
	assert_int_equal(pn_dcm_ds_create(&ds), 0);
	assert_int_equal(pn_dcm_ds_put(ds, TAG(0x0010, 0x0010), "M\xC3\xBCLLER^HANS"), 0);
	assert_int_equal(pn_dcm_ds_put(ds, TAG(0x0020, 0x000D), "1.2.3"), 0);
	assert_int_equal(pn_dcm_ds_encode_levels(ds, pn_attr_level, 4096, blobs), 0);
	pn_dcm_ds_free(ds);
	pn_find_row row = row_for(r, q->level, NULL);
	row.attrs[0].data = blobs[0].data;
	row.attrs[0].len = blobs[0].len;
	assert_int_equal(compare(q, &row, true), 1);

	/* A blob that cannot be walked. */
	unsigned char bad[] = {0x10, 0x00, 0x10, 0x00, 'P', 'N', 0x40, 0x00, 'X'};
	row.attrs[0].data = bad;
	row.attrs[0].len = sizeof bad;
	assert_int_equal(compare(q, &row, true), 1);
	for (int l = 0; l < PN_LEVELS; l++)
		free(blobs[l].data);
	pn_query_free(q);

	/* A private key: not kept, so left out of the response both ways. */
	const kv priv[] = {
	    {TAG(0x0008, 0x0052), "STUDY"},
	    {TAG(0x0009, 0x0010), ""},
	};
	pn_query *q3 = parse(priv, 2);
	row = row_for(r, q3->level, NULL);
	assert_int_equal(compare(q3, &row, true), 0);
	pn_query_free(q3);
}

static void blob_index_bounds(void **state)
{
	(void)state;
	pn_blob_elem *e = NULL;
	size_t n = 0, cap = 0;
	/* short VR, long VR (UT), then truncated */
	unsigned char ok[] = {0x08, 0x00, 0x50, 0x00, 'S',  'H',  0x02, 0x00, 'A',  'B',  0x08, 0x00,
	                      0x81, 0x00, 'U',  'T',  0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 'x',  'y'};
	assert_int_equal(pn_blob_index(ok, sizeof ok, &e, &n, &cap), 0);
	assert_int_equal(n, 2);
	assert_int_equal(e[1].tag, TAG(0x0008, 0x0081));
	assert_int_equal(e[1].len, 2);
	assert_memory_equal(ok + e[1].off, "xy", 2);
	for (size_t cut = 1; cut < sizeof ok; cut++)
		if (cut != 10)
			assert_int_equal(pn_blob_index(ok, cut, &e, &n, &cap), -EBADMSG);
	/* undefined length; tags out of order */
	unsigned char undef[] = {0x08, 0x00, 0x15, 0x11, 'S', 'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF};
	assert_int_equal(pn_blob_index(undef, sizeof undef, &e, &n, &cap), -EBADMSG);
	unsigned char order[] = {0x08, 0x00, 0x81, 0x00, 'S', 'H', 0, 0, 0x08, 0x00, 0x50, 0x00, 'S', 'H', 0, 0};
	assert_int_equal(pn_blob_index(order, sizeof order, &e, &n, &cap), -EBADMSG);
	free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(study_level_same_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(image_level_same_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(declines_what_it_cannot_write, setup, teardown),
	    cmocka_unit_test(blob_index_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
