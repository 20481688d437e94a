/* Hostile bytes where a stored file's File Meta Information should be (a
 * damaged disk, a file put there by hand): the parser must never read past
 * them, and what it accepts must be self-consistent, since a retrieve then
 * sends the bytes after dataset_offset as they are. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "part10.h"
#include "uid.h"

/* CHECK() vanishes under NDEBUG; a fuzz check must not */
#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The fuzzer's bytes go after a real preamble and "DICM", so that it
	 * spends its time inside group 0002. */
	uint8_t *buf = malloc(132 + size);
	if (!buf)
		return 0;
	memset(buf, 0, 128);
	memcpy(buf + 128, "DICM", 4);
	memcpy(buf + 132, data, size);
	size_t len = 132 + size;

	pn_part10_meta m;
	int rc = pn_part10_meta_parse(buf, len, &m);
	CHECK(rc == 0 || rc == -EAGAIN || rc == -EBADMSG);
	if (rc == 0) {
		CHECK(m.dataset_offset <= len && m.dataset_offset >= 132 + 12);
		CHECK(pn_uid_valid(m.ts_uid));
		CHECK(m.sop_class_uid[0] == '\0' || pn_uid_valid(m.sop_class_uid));
		CHECK(m.sop_instance_uid[0] == '\0' || pn_uid_valid(m.sop_instance_uid));
		/* the header alone gives the same answer; less of it, a wait */
		pn_part10_meta again;
		CHECK(pn_part10_meta_parse(buf, m.dataset_offset, &again) == 0);
		CHECK(memcmp(&again, &m, sizeof(m)) == 0);
		CHECK(pn_part10_meta_parse(buf, m.dataset_offset - 1, &again) == -EAGAIN);
	}
	free(buf);
	return 0;
}
