#include "storage_path.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "uid.h"

#define HASH_HEX 32 /* 128 bits of SHA-256: collisions are not a concern */
/* "ab/cd/" + 32 hex + "." + 8 hex + ".dcm" */
#define REL_LEN (6 + HASH_HEX + 1 + 8 + 4)

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int pn_storage_rel_path(const char *sop_uid, uint32_t generation, char out[PN_REL_PATH_MAX])
{
	if (!pn_uid_valid(sop_uid))
		return -EINVAL;
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)sop_uid, strlen(sop_uid), md);
	char hex[HASH_HEX + 1];
	for (int i = 0; i < HASH_HEX / 2; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(out, PN_REL_PATH_MAX, "%.2s/%.2s/%s.%08x.dcm", hex, hex + 2, hex, generation);
	return 0;
}

bool pn_storage_rel_path_valid(const char *rel)
{
	if (strlen(rel) != REL_LEN)
		return false;
	for (size_t i = 0; i < REL_LEN; i++) {
		char c = rel[i];
		bool ok;
		if (i == 2 || i == 5)
			ok = c == '/';
		else if (i == 6 + HASH_HEX)
			ok = c == '.';
		else if (i >= REL_LEN - 4)
			ok = c == ".dcm"[i - (REL_LEN - 4)];
		else
			ok = is_hex(c);
		if (!ok)
			return false;
	}
	/* the two folders are the first four hex digits of the name */
	return strncmp(rel, rel + 6, 2) == 0 && strncmp(rel + 3, rel + 8, 2) == 0;
}

int pn_storage_tmp_name(const char *rel, char out[PN_REL_PATH_MAX])
{
	if (!pn_storage_rel_path_valid(rel))
		return -EINVAL;
	snprintf(out, PN_REL_PATH_MAX, "%s", rel);
	out[2] = '-';
	out[5] = '-';
	return 0;
}

int pn_storage_rel_from_tmp(const char *tmp_name, char out[PN_REL_PATH_MAX])
{
	if (strlen(tmp_name) != REL_LEN || tmp_name[2] != '-' || tmp_name[5] != '-')
		return -EINVAL;
	char rel[PN_REL_PATH_MAX];
	snprintf(rel, sizeof(rel), "%s", tmp_name);
	rel[2] = '/';
	rel[5] = '/';
	if (!pn_storage_rel_path_valid(rel))
		return -EINVAL;
	memcpy(out, rel, REL_LEN + 1);
	return 0;
}
