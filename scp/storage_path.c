#include "storage_path.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uid.h"

#define HASH_HEX 32 /* 128 bits of SHA-256: collisions are not a concern */
/* "ab/cd/" + 32 hex + "/" + 32 hex + "." + 8 hex + ".dcm" */
#define REL_LEN (6 + HASH_HEX + 1 + HASH_HEX + 1 + 8 + 4)
#define SEP1 2
#define SEP2 5
#define SEP3 (6 + HASH_HEX)
#define DOT (SEP3 + 1 + HASH_HEX)

static void hash_hex(const char *s, char out[HASH_HEX + 1])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)s, strlen(s), md);
	for (int i = 0; i < HASH_HEX / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int pn_storage_rel_path(const char *series_uid, const char *sop_uid, uint32_t generation, char out[PN_REL_PATH_MAX])
{
	if (!pn_uid_valid(series_uid) || !pn_uid_valid(sop_uid))
		return -EINVAL;
	char series[HASH_HEX + 1], sop[HASH_HEX + 1];
	hash_hex(series_uid, series);
	hash_hex(sop_uid, sop);
	snprintf(out, PN_REL_PATH_MAX, "%.2s/%.2s/%s/%s.%08x.dcm", series, series + 2, series, sop, generation);
	return 0;
}

/* Checks the shape with the three separators given. */
static bool shape_valid(const char *rel, char sep)
{
	if (strlen(rel) != REL_LEN)
		return false;
	for (size_t i = 0; i < REL_LEN; i++) {
		char c = rel[i];
		bool ok;
		if (i == SEP1 || i == SEP2 || i == SEP3)
			ok = c == sep;
		else if (i == DOT)
			ok = c == '.';
		else if (i >= REL_LEN - 4)
			ok = c == ".dcm"[i - (REL_LEN - 4)];
		else
			ok = is_hex(c);
		if (!ok)
			return false;
	}
	/* the two outer folders are the series hash's first hex pairs */
	return strncmp(rel, rel + 6, 2) == 0 && strncmp(rel + 3, rel + 8, 2) == 0;
}

bool pn_storage_rel_path_valid(const char *rel)
{
	return shape_valid(rel, '/');
}

int pn_storage_tmp_name(const char *rel, char out[PN_REL_PATH_MAX])
{
	if (!pn_storage_rel_path_valid(rel))
		return -EINVAL;
	snprintf(out, PN_REL_PATH_MAX, "%s", rel);
	out[SEP1] = out[SEP2] = out[SEP3] = '-';
	return 0;
}

int pn_storage_rel_from_tmp(const char *tmp_name, char out[PN_REL_PATH_MAX])
{
	if (!shape_valid(tmp_name, '-'))
		return -EINVAL;
	snprintf(out, PN_REL_PATH_MAX, "%s", tmp_name);
	out[SEP1] = out[SEP2] = out[SEP3] = '/';
	return 0;
}

/* 8 lower-case hex digits at p */
static bool hex8(const char *p, uint32_t *ret)
{
	for (int i = 0; i < 8; i++)
		if (!is_hex(p[i]))
			return false;
	char buf[9];
	memcpy(buf, p, 8);
	buf[8] = '\0';
	*ret = (uint32_t)strtoul(buf, NULL, 16);
	return true;
}

void pn_storage_part_name(uint32_t generation, int pid, unsigned long n, char out[PN_REL_PATH_MAX])
{
	snprintf(out, PN_REL_PATH_MAX, "in-%08x-%d-%lu", generation, pid, n);
}

bool pn_storage_part_generation(const char *name, uint32_t *ret_generation)
{
	if (strncmp(name, "in-", 3) != 0 || strlen(name) < 3 + 8 + 1 || name[3 + 8] != '-')
		return false;
	return hex8(name + 3, ret_generation);
}

bool pn_storage_part_pid(const char *name, int *ret_pid)
{
	uint32_t gen;
	if (!pn_storage_part_generation(name, &gen))
		return false;
	const char *p = name + 3 + 8 + 1, *dash = strchr(p, '-');
	if (!dash || dash == p || dash - p > 9 || !dash[1])
		return false;
	for (const char *c = p; c < dash; c++)
		if (*c < '0' || *c > '9')
			return false;
	for (const char *c = dash + 1; *c; c++)
		if (*c < '0' || *c > '9')
			return false;
	int pid = atoi(p);
	if (pid <= 0)
		return false;
	*ret_pid = pid;
	return true;
}

bool pn_storage_rel_generation(const char *rel, uint32_t *ret_generation)
{
	return pn_storage_rel_path_valid(rel) && hex8(rel + DOT + 1, ret_generation);
}
