#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsio.h"

#define TMP_DIR "tmp"

struct pn_storage {
	char *root;
	int root_fd;
	int tmp_fd;
};

struct pn_storage_file {
	pn_storage *s;
	int fd;
	bool linked;
	int64_t size;
	EVP_MD_CTX *md;
	char rel[PN_REL_PATH_MAX];
	char tmp_name[PN_REL_PATH_MAX];
	char tmp_path[PATH_MAX];
	char sha256[65];
};

static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0750) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int fsync_dir_at(int dirfd, const char *path)
{
	int fd = pn_fsio.openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = pn_fsio.fsync(fd) < 0 ? -errno : 0;
	pn_fsio.close(fd);
	return rc;
}

int pn_storage_open(const char *root, pn_storage **ret_storage)
{
	pn_storage *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->root_fd = s->tmp_fd = -1;
	int rc = -ENOMEM;
	s->root = strdup(root);
	if (!s->root)
		goto fail;
	rc = mkdir_p(root);
	if (rc < 0)
		goto fail;
	s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0) {
		rc = -errno;
		goto fail;
	}
	if (mkdirat(s->root_fd, TMP_DIR, 0750) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	s->tmp_fd = openat(s->root_fd, TMP_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->tmp_fd < 0) {
		rc = -errno;
		goto fail;
	}
	*ret_storage = s;
	return 0;
fail:
	pn_storage_free(s);
	return rc;
}

void pn_storage_free(pn_storage *s)
{
	if (!s)
		return;
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->root_fd >= 0)
		close(s->root_fd);
	free(s->root);
	free(s);
}

int pn_storage_file_begin(pn_storage *s, const char *rel, pn_storage_file **ret_file)
{
	pn_storage_file *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->s = s;
	f->fd = -1;
	int rc = pn_storage_tmp_name(rel, f->tmp_name);
	if (rc < 0) {
		free(f);
		return rc;
	}
	snprintf(f->rel, sizeof(f->rel), "%s", rel);
	snprintf(f->tmp_path, sizeof(f->tmp_path), "%s/" TMP_DIR "/%s", s->root, f->tmp_name);
	f->md = EVP_MD_CTX_new();
	if (!f->md || EVP_DigestInit_ex(f->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(f->md);
		free(f);
		return -ENOMEM;
	}
	f->fd = pn_fsio.openat(s->tmp_fd, f->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (f->fd < 0) {
		rc = -errno;
		EVP_MD_CTX_free(f->md);
		free(f);
		return rc;
	}
	*ret_file = f;
	return 0;
}

int pn_storage_file_write(pn_storage_file *f, const void *buf, size_t len)
{
	const char *p = buf;
	EVP_DigestUpdate(f->md, buf, len);
	while (len > 0) {
		ssize_t n = pn_fsio.write(f->fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		f->size += n;
	}
	return 0;
}

int pn_storage_file_finish(pn_storage_file *f)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	if (EVP_DigestFinal_ex(f->md, md, &md_len) != 1 || md_len != 32)
		return -EIO;
	for (unsigned i = 0; i < md_len; i++)
		snprintf(f->sha256 + 2 * i, 3, "%02x", md[i]);
	if (pn_fsio.fsync(f->fd) < 0)
		return -errno;
	int fd = f->fd;
	f->fd = -1;
	if (pn_fsio.close(fd) < 0)
		return -errno;
	/* Makes the tmp entry durable before the final link can be: recovery
	 * relies on finding it. */
	if (pn_fsio.fsync(f->s->tmp_fd) < 0)
		return -errno;
	return 0;
}

/* Creates ab/ and ab/cd/ if needed; new folders are made durable in their
 * parent before anything is linked into them. */
static int ensure_dirs(pn_storage *s, const char *rel)
{
	char dir[8];
	for (int depth = 1; depth <= 2; depth++) {
		snprintf(dir, sizeof(dir), "%.*s", depth == 1 ? 2 : 5, rel);
		if (pn_fsio.mkdirat(s->root_fd, dir, 0750) < 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		char parent[8];
		snprintf(parent, sizeof(parent), "%.*s", depth == 1 ? 1 : 2, depth == 1 ? "." : rel);
		int rc = fsync_dir_at(s->root_fd, parent);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int pn_storage_file_link(pn_storage_file *f)
{
	pn_storage *s = f->s;
	int rc = ensure_dirs(s, f->rel);
	if (rc < 0)
		return rc;
	if (pn_fsio.linkat(s->tmp_fd, f->tmp_name, s->root_fd, f->rel, 0) < 0)
		return -errno;
	f->linked = true;
	char dir[8];
	snprintf(dir, sizeof(dir), "%.5s", f->rel);
	return fsync_dir_at(s->root_fd, dir);
}

static void file_free(pn_storage_file *f)
{
	if (f->fd >= 0)
		pn_fsio.close(f->fd);
	EVP_MD_CTX_free(f->md);
	free(f);
}

void pn_storage_file_done(pn_storage_file *f)
{
	if (!f)
		return;
	/* If this unlink is lost in a crash, recovery finds the row and
	 * removes the tmp entry then. */
	pn_fsio.unlinkat(f->s->tmp_fd, f->tmp_name, 0);
	file_free(f);
}

void pn_storage_file_discard(pn_storage_file *f)
{
	if (!f)
		return;
	if (f->linked) {
		pn_fsio.unlinkat(f->s->root_fd, f->rel, 0);
		char dir[8];
		snprintf(dir, sizeof(dir), "%.5s", f->rel);
		fsync_dir_at(f->s->root_fd, dir);
	}
	pn_fsio.unlinkat(f->s->tmp_fd, f->tmp_name, 0);
	file_free(f);
}

const char *pn_storage_file_tmp_path(const pn_storage_file *f)
{
	return f->tmp_path;
}

const char *pn_storage_file_rel_path(const pn_storage_file *f)
{
	return f->rel;
}

int64_t pn_storage_file_size(const pn_storage_file *f)
{
	return f->size;
}

const char *pn_storage_file_sha256(const pn_storage_file *f)
{
	return f->sha256;
}

int pn_storage_remove(pn_storage *s, const char *rel)
{
	if (!pn_storage_rel_path_valid(rel))
		return -EINVAL;
	if (pn_fsio.unlinkat(s->root_fd, rel, 0) < 0)
		return -errno;
	char dir[8];
	snprintf(dir, sizeof(dir), "%.5s", rel);
	return fsync_dir_at(s->root_fd, dir);
}

/* After a crash between a replace's commit and the removal of the old
 * file: removes siblings of `rel` (same SOP Instance UID, other generation)
 * that no row names. */
static int remove_unreferenced_siblings(pn_storage *s, const char *rel, pn_storage_referenced_fn referenced, void *ctx)
{
	char dir[8];
	snprintf(dir, sizeof(dir), "%.5s", rel);
	int fd = openat(s->root_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	const char *name = rel + 6;
	size_t hash_len = strcspn(name, ".");
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, name, hash_len) != 0 || strcmp(e->d_name, name) == 0)
			continue;
		char sibling[PN_REL_PATH_MAX];
		if (strlen(e->d_name) >= sizeof(sibling) - 6)
			continue;
		snprintf(sibling, sizeof(sibling), "%.5s/%.56s", dir, e->d_name);
		if (!pn_storage_rel_path_valid(sibling))
			continue;
		bool used = true;
		rc = referenced(ctx, sibling, &used);
		if (rc < 0)
			break;
		if (!used)
			unlinkat(s->root_fd, sibling, 0);
	}
	closedir(d);
	return rc;
}

int pn_storage_recover(pn_storage *s, pn_storage_referenced_fn referenced, void *ctx, pn_storage_recovery *ret_stats)
{
	pn_storage_recovery st = {0};
	int fd = dup(s->tmp_fd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char rel[PN_REL_PATH_MAX];
		if (pn_storage_rel_from_tmp(e->d_name, rel) < 0) {
			unlinkat(s->tmp_fd, e->d_name, 0);
			st.strays++;
			continue;
		}
		bool used = false;
		rc = referenced(ctx, rel, &used);
		if (rc < 0)
			break;
		if (used) {
			struct stat fst;
			if (fstatat(s->root_fd, rel, &fst, 0) < 0 && errno == ENOENT) {
				ensure_dirs(s, rel);
				linkat(s->tmp_fd, e->d_name, s->root_fd, rel, 0);
			}
			rc = remove_unreferenced_siblings(s, rel, referenced, ctx);
			if (rc < 0)
				break;
			st.kept++;
		} else {
			/* Only remove the final name if it is this very file. */
			struct stat tst, fst;
			if (fstatat(s->tmp_fd, e->d_name, &tst, 0) == 0 && fstatat(s->root_fd, rel, &fst, 0) == 0 &&
			    tst.st_ino == fst.st_ino && tst.st_dev == fst.st_dev)
				unlinkat(s->root_fd, rel, 0);
			st.removed++;
		}
		unlinkat(s->tmp_fd, e->d_name, 0);
	}
	closedir(d);
	if (rc == 0) {
		fsync(s->tmp_fd);
		if (ret_stats)
			*ret_stats = st;
	}
	return rc;
}
