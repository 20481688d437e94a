/* The users file (users.h). Checking a yescrypt hash takes tens of
 * milliseconds on purpose; a browser sends the same credentials with every
 * request, so once a password is verified this process keeps an HMAC of it
 * under a random per-process key and compares that next time. The cache
 * lives only in this worker's memory and goes with the file's next
 * change. */
#include "users.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define MAX_USERS 4096
#define MAX_FILE (1u << 20)

typedef struct {
	char name[64];
	char *hash;
	pn_web_role role;
	bool have_ok;
	unsigned char ok_mac[32];
} user;

struct pn_web_users {
	char *path; /* NULL when parsed from memory */
	struct timespec mtime;
	off_t size;
	bool reload_failed; /* the last change could not be read: logged once */
	user *users;
	size_t n;
	unsigned char key[32];
};

static bool name_ok(const char *s, size_t n)
{
	if (n == 0 || n >= 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-' || c == '@'))
			return false;
	}
	return true;
}

/* crypt(3) hashes of a modern method: yescrypt ($y$, $gy$, $7$), bcrypt
 * ($2b$), SHA-crypt ($6$, $5$). DES and MD5 hashes are refused. */
static bool hash_ok(const char *s, size_t n)
{
	static const char *const prefixes[] = {"$y$", "$gy$", "$7$", "$2b$", "$2y$", "$6$", "$5$"};
	if (n < 8 || n > 512)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == ':')
			return false;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(s, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

void pn_web_users_free(pn_web_users *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->n; i++)
		free(u->users[i].hash);
	free(u->users);
	free(u->path);
	OPENSSL_cleanse(u->key, sizeof(u->key));
	free(u);
}

int pn_web_users_parse(const char *text, size_t len, const char *source, pn_web_users **ret, char *err, size_t errlen)
{
	*ret = NULL;
	pn_web_users *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	if (RAND_bytes(u->key, sizeof(u->key)) != 1) {
		free(u);
		snprintf(err, errlen, "%s: no random bytes for the password cache", source);
		return -EIO;
	}
	size_t cap = 0, lineno = 0, pos = 0;
	int rc = 0;
	while (pos < len && rc == 0) {
		lineno++;
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - line) : len - pos;
		pos += n + (nl ? 1 : 0);
		if (n && line[n - 1] == '\r')
			n--;
		size_t lead = 0;
		while (lead < n && (line[lead] == ' ' || line[lead] == '\t'))
			lead++;
		if (lead == n || line[lead] == '#')
			continue;
		const char *c1 = memchr(line, ':', n);
		const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - line)) : NULL;
		if (!c2) {
			snprintf(err, errlen, "%s:%zu: expected name:hash:role", source, lineno);
			rc = -EINVAL;
			break;
		}
		size_t nn = (size_t)(c1 - line), hn = (size_t)(c2 - c1 - 1), rn = n - (size_t)(c2 + 1 - line);
		const char *role = c2 + 1;
		pn_web_role r = PN_ROLE_NONE;
		if (rn == 4 && memcmp(role, "read", 4) == 0)
			r = PN_ROLE_READ;
		else if (rn == 5 && memcmp(role, "write", 5) == 0)
			r = PN_ROLE_WRITE;
		if (!name_ok(line, nn)) {
			snprintf(err, errlen, "%s:%zu: a user name is 1 to 63 letters, digits and . _ - @", source,
			         lineno);
			rc = -EINVAL;
		} else if (!hash_ok(c1 + 1, hn)) {
			snprintf(err, errlen,
			         "%s:%zu: the hash is not a crypt(3) hash of a current method (make one with "
			         "mkpasswd -m yescrypt)",
			         source, lineno);
			rc = -EINVAL;
		} else if (r == PN_ROLE_NONE) {
			snprintf(err, errlen, "%s:%zu: the role is read or write", source, lineno);
			rc = -EINVAL;
		} else if (u->n >= MAX_USERS) {
			snprintf(err, errlen, "%s:%zu: more than %d users", source, lineno, MAX_USERS);
			rc = -EINVAL;
		}
		for (size_t i = 0; rc == 0 && i < u->n; i++) {
			if (strlen(u->users[i].name) == nn && memcmp(u->users[i].name, line, nn) == 0) {
				snprintf(err, errlen, "%s:%zu: user \"%.*s\" is listed twice", source, lineno, (int)nn,
				         line);
				rc = -EINVAL;
			}
		}
		if (rc < 0)
			break;
		if (u->n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			user *nu = realloc(u->users, ncap * sizeof(*nu));
			if (!nu) {
				rc = -ENOMEM;
				break;
			}
			u->users = nu;
			cap = ncap;
		}
		user *x = &u->users[u->n];
		memset(x, 0, sizeof(*x));
		memcpy(x->name, line, nn);
		x->hash = strndup(c1 + 1, hn);
		x->role = r;
		if (!x->hash) {
			rc = -ENOMEM;
			break;
		}
		u->n++;
	}
	if (rc < 0) {
		pn_web_users_free(u);
		return rc;
	}
	*ret = u;
	return 0;
}

static int read_file(const char *path, char **ret_text, size_t *ret_len, struct stat *st)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	if (fstat(fileno(f), st) < 0 || st->st_size > MAX_FILE) {
		int rc = st->st_size > MAX_FILE ? -EFBIG : -errno;
		fclose(f);
		return rc;
	}
	char *text = malloc((size_t)st->st_size + 1);
	if (!text) {
		fclose(f);
		return -ENOMEM;
	}
	size_t n = fread(text, 1, (size_t)st->st_size, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(text);
		return -EIO;
	}
	*ret_text = text;
	*ret_len = n;
	return 0;
}

int pn_web_users_load(const char *path, pn_web_users **ret, char *err, size_t errlen)
{
	*ret = NULL;
	char *text = NULL;
	size_t len = 0;
	struct stat st;
	int rc = read_file(path, &text, &len, &st);
	if (rc < 0) {
		snprintf(err, errlen, "could not read the users file \"%s\": %s", path, strerror(-rc));
		return rc;
	}
	if (st.st_mode & 0007)
		pn_warning("the users file \"%s\" is readable by everyone: chmod o-rwx it", path);
	rc = pn_web_users_parse(text, len, path, ret, err, errlen);
	free(text);
	if (rc < 0)
		return rc;
	(*ret)->path = strdup(path);
	(*ret)->mtime = st.st_mtim;
	(*ret)->size = st.st_size;
	if (!(*ret)->path) {
		pn_web_users_free(*ret);
		*ret = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Takes a changed file's users in place of ours (the cache goes). */
static void reload_if_changed(pn_web_users *u)
{
	struct stat st;
	if (!u->path || stat(u->path, &st) < 0)
		return;
	if (st.st_mtim.tv_sec == u->mtime.tv_sec && st.st_mtim.tv_nsec == u->mtime.tv_nsec && st.st_size == u->size)
		return;
	char err[512];
	pn_web_users *fresh = NULL;
	if (pn_web_users_load(u->path, &fresh, err, sizeof(err)) < 0) {
		if (!u->reload_failed)
			pn_error("%s; keeping the users read before", err);
		u->reload_failed = true;
		return;
	}
	for (size_t i = 0; i < u->n; i++)
		free(u->users[i].hash);
	free(u->users);
	u->users = fresh->users;
	u->n = fresh->n;
	u->mtime = fresh->mtime;
	u->size = fresh->size;
	u->reload_failed = false;
	fresh->users = NULL;
	fresh->n = 0;
	pn_web_users_free(fresh);
}

static void mac_of(const pn_web_users *u, const char *password, unsigned char out[32])
{
	unsigned int n = 32;
	HMAC(EVP_sha256(), u->key, sizeof(u->key), (const unsigned char *)password, strlen(password), out, &n);
}

pn_web_role pn_web_users_check(pn_web_users *u, const char *name, const char *password)
{
	reload_if_changed(u);
	user *x = NULL;
	for (size_t i = 0; i < u->n && !x; i++)
		if (strcmp(u->users[i].name, name) == 0)
			x = &u->users[i];
	if (!x)
		return PN_ROLE_NONE;
	unsigned char mac[32];
	mac_of(u, password, mac);
	if (x->have_ok && CRYPTO_memcmp(mac, x->ok_mac, sizeof(mac)) == 0)
		return x->role;
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	if (!cd)
		return PN_ROLE_NONE;
	const char *h = crypt_r(password, x->hash, cd);
	bool ok = h && h[0] != '*' && strlen(h) == strlen(x->hash) && CRYPTO_memcmp(h, x->hash, strlen(h)) == 0;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	if (!ok)
		return PN_ROLE_NONE;
	memcpy(x->ok_mac, mac, sizeof(mac));
	x->have_ok = true;
	return x->role;
}

int pn_web_users_hash(const char *password, char *out, size_t outlen)
{
	char *setting = crypt_gensalt_ra("$y$", 0, NULL, 0); /* yescrypt, libxcrypt's default cost */
	if (!setting)
		return -errno ? -errno : -ENOMEM;
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	if (!cd) {
		free(setting);
		return -ENOMEM;
	}
	const char *h = crypt_r(password, setting, cd);
	free(setting);
	int rc = 0;
	if (!h || h[0] == '*')
		rc = -EINVAL;
	else if (strlen(h) >= outlen)
		rc = -ENOSPC;
	else
		snprintf(out, outlen, "%s", h);
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return rc;
}

/* The file's lines but the user's, and the user's new line (NULL: removed),
 * into a temporary file beside it, then renamed over it: a reader sees
 * the old file or the new one, never half of one. */
int pn_web_users_set(const char *path, const char *name, const char *hash, pn_web_role role, char *err, size_t errlen)
{
	size_t nl = strlen(name);
	if (!name_ok(name, nl)) {
		snprintf(err, errlen, "a user name is 1 to 63 letters, digits and . _ - @");
		return -EINVAL;
	}
	char *text = NULL;
	size_t len = 0;
	struct stat st = {.st_mode = 0640};
	int rc = read_file(path, &text, &len, &st);
	if (rc == -ENOENT) {
		text = NULL;
		len = 0;
		st.st_mode = 0640;
		st.st_uid = (uid_t)-1;
	} else if (rc < 0) {
		snprintf(err, errlen, "could not read \"%s\": %s", path, strerror(-rc));
		return rc;
	}
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0777);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "could not create \"%s\": %s", tmp, strerror(-rc));
		free(text);
		return rc;
	}
	if (st.st_uid != (uid_t)-1 && fchown(fd, st.st_uid, st.st_gid) < 0) {
		/* not root: the file stays ours */
	}
	FILE *f = fdopen(fd, "w");
	bool found = false;
	for (size_t pos = 0; f && pos < len;) {
		const char *line = text + pos;
		const char *end = memchr(line, '\n', len - pos);
		size_t n = end ? (size_t)(end - line) : len - pos;
		pos += n + (end ? 1 : 0);
		bool mine = n > nl && line[nl] == ':' && memcmp(line, name, nl) == 0;
		if (mine) {
			found = true;
			continue;
		}
		fwrite(line, 1, n, f);
		fputc('\n', f);
	}
	if (f && hash)
		fprintf(f, "%s:%s:%s\n", name, hash, role == PN_ROLE_WRITE ? "write" : "read");
	free(text);
	rc = 0;
	if (!f || fflush(f) != 0 || fsync(fileno(f)) != 0)
		rc = -errno ? -errno : -EIO;
	if (f ? fclose(f) != 0 : close(fd) != 0)
		rc = rc ? rc : -errno;
	if (rc == 0 && !hash && !found)
		rc = -ENOENT;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		snprintf(err, errlen, rc == -ENOENT ? "no user \"%s\" in \"%s\"" : "could not write \"%s\": %s",
		         rc == -ENOENT ? name : path, rc == -ENOENT ? path : strerror(-rc));
	}
	return rc;
}
