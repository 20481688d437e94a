#include "config_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int file_sha256(const char *path, char hex[65])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		close(fd);
		return -ENOMEM;
	}
	unsigned char buf[8192];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(md, buf, (size_t)n);
	int rc = n < 0 ? -errno : 0;
	close(fd);
	unsigned char digest[32];
	unsigned int len = 0;
	if (rc == 0 && (EVP_DigestFinal_ex(md, digest, &len) != 1 || len != 32))
		rc = -EIO;
	EVP_MD_CTX_free(md);
	for (unsigned i = 0; rc == 0 && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	return rc;
}

int pn_config_watch(const char *config_path, const char *state_path, char *detail, size_t detail_len)
{
	if (!config_path)
		return 0;
	char now[65];
	int rc = file_sha256(config_path, now);
	if (rc < 0)
		return rc;
	char before[80] = "";
	FILE *f = fopen(state_path, "re");
	if (f) {
		if (!fgets(before, sizeof(before), f))
			before[0] = '\0';
		fclose(f);
		before[strcspn(before, "\n")] = '\0';
	}
	if (strcmp(before, now) == 0)
		return 0;
	/* the new sum replaces the old whole or not at all */
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", state_path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	bool ok = fprintf(f, "%s\n", now) > 0;
	ok = fclose(f) == 0 && ok;
	if (!ok || rename(tmp, state_path) < 0) {
		rc = -errno;
		unlink(tmp);
		return rc ? rc : -EIO;
	}
	if (!before[0])
		return 0;
	snprintf(detail, detail_len,
	         "configuration \"%s\" changed since the last start (SHA-256 %.16s... was %.16s...)", config_path, now,
	         before);
	return 1;
}
