/* Hostile bytes where a stored attribute blob should be (a damaged
 * database, a row written by hand): the DICOM JSON writer must never read
 * past them or recurse without bound, what pn_json_check takes must be
 * written without error, and whatever it writes must be JSON (json_check.h)
 * for every VR. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "json_model.h"

/* CHECK() vanishes under NDEBUG; a fuzz check must not */
#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)

static const char *const vrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
                                  "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST",
                                  "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the bytes as a blob */
	pn_json_buf b = {0};
	int ck = pn_json_check(data, size);
	CHECK(ck == 0 || ck == -EBADMSG);
	int rc = pn_json_dataset(&b, data, size);
	CHECK(rc == 0 || rc == -EBADMSG);
	if (ck == 0)
		CHECK(rc == 0);
	if (rc == 0)
		CHECK(pn_json_check_text(b.data, b.len) == NULL);
	pn_json_buf_free(&b);

	/* the bytes after the first as one value of the VR the first names,
	 * as a response's text values and a blob's elements are written */
	if (size >= 1) {
		const char *vr = vrs[data[0] % (sizeof vrs / sizeof vrs[0])];
		rc = pn_json_put(&b, "{", 1);
		if (rc == 0 && pn_json_check_elem(0x00100010, vr, data + 1, size - 1) == 0)
			rc = pn_json_attr(&b, 0x00100010, vr, data + 1, size - 1);
		if (rc == 0)
			rc = pn_json_put(&b, "}", 1);
		CHECK(rc == 0);
		CHECK(pn_json_check_text(b.data, b.len) == NULL);
		pn_json_buf_free(&b);
	}
	return 0;
}
