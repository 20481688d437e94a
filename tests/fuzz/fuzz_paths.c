/* Hostile names in tmp/ (crash recovery reads them back) and hostile UIDs:
 * a name is accepted only if it maps to a path of exactly our shape, and no
 * UID that reaches a path can step outside the storage root. */
#include <stdlib.h>

/* CHECK() vanishes under NDEBUG; a fuzz check must not */
#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)
#include <stdint.h>
#include <string.h>

#include "dicom_values.h"
#include "storage_path.h"
#include "uid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[256];
	size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
	memcpy(s, data, n);
	s[n] = '\0';

	char rel[PN_REL_PATH_MAX];
	if (pn_storage_rel_from_tmp(s, rel) == 0) {
		CHECK(pn_storage_rel_path_valid(rel));
		CHECK(strstr(rel, "..") == NULL && rel[0] != '/');
		char back[PN_REL_PATH_MAX];
		CHECK(pn_storage_tmp_name(rel, back) == 0 && strcmp(back, s) == 0);
	}
	int pid;
	if (pn_storage_part_pid(s, &pid)) {
		/* in-<8 hex>-<digits>-<digits>, and the pid is those digits */
		uint32_t g;
		const char *p = s + 3 + 8 + 1;
		CHECK(pid > 0 && pn_storage_part_generation(s, &g));
		CHECK(strspn(p, "0123456789") > 0 && p[strspn(p, "0123456789")] == '-' && atoi(p) == pid);
	}
	if (pn_uid_valid(s)) {
		CHECK(strspn(s, "0123456789.") == strlen(s) && strlen(s) <= 64);
		CHECK(pn_storage_rel_path(s, s, 7, rel) == 0 && pn_storage_rel_path_valid(rel));
	} else {
		CHECK(pn_storage_rel_path(s, "1.2", 7, rel) < 0 && pn_storage_rel_path("1.2", s, 7, rel) < 0);
	}
	/* the value normalisers take network strings too */
	char d[11], t[16], i[16], f[32];
	if (pn_da_to_iso(s, d))
		CHECK(strlen(d) == 10 && d[4] == '-' && d[7] == '-');
	if (pn_tm_to_iso(s, t))
		CHECK(strlen(t) >= 8 && t[2] == ':' && t[5] == ':');
	(void)pn_is_normalise(s, i);
	(void)pn_ds_normalise(s, f);
	pn_utf8_sanitise(s);
	return 0;
}
