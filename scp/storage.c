#include "storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsio.h"

#define TMP_DIR "tmp"
/* Committed instances whose final folder is not fsync'ed yet: their tmp
 * names stay (and keep them recoverable) until a batched folder fsync. */
#define PENDING_MAX 32
/* dcmtk hands us PDVs of a few KiB: gather them into writes of this size,
 * and start the kernel's writeback after each, so that the final fsync
 * finds most of the file on disk already. */
#define WRITE_CHUNK (128 * 1024)
/* Temporary files made ahead of time (see pn_storage_prepare). */
#define SPARES_MAX 8

struct pn_storage {
	char *root;
	int root_fd;
	int tmp_fd;
	unsigned long seq; /* temporary names */
	struct {
		char tmp_name[PN_REL_PATH_MAX];
		char dir[PN_REL_DIR_LEN + 1];
	} pending[PENDING_MAX];
	int n_pending;
	char known_dir[PN_REL_DIR_LEN + 1]; /* last series folder seen to exist */
	/* Creating a file costs up to half a millisecond here (after mass
	 * deletions), and making its name durable a folder fsync: the next
	 * instances' files are made while the SCU reads a response, their
	 * names made durable in batches. Oldest first; the durable ones are
	 * the oldest. */
	struct spare {
		int fd;
		uint32_t gen;
		bool durable;
		char name[PN_REL_PATH_MAX];
	} spares[SPARES_MAX];
	int n_spares;
};

struct pn_storage_file {
	pn_storage *s;
	int fd;
	bool named;        /* rel is set */
	bool name_durable; /* tmp_name survives a crash (the tmp folder was fsync'ed) */
	uint32_t gen;      /* the generation in tmp_name and rel */
	bool linked;
	int64_t size;    /* bytes accepted (buffered or written) */
	int64_t written; /* bytes written to the file */
	int64_t writeback_from;
	XXH3_state_t *xxh;
	char *buf; /* WRITE_CHUNK bytes */
	size_t buffered;
	char rel[PN_REL_PATH_MAX];
	char tmp_name[PN_REL_PATH_MAX];
	char tmp_path[PATH_MAX];
	char checksum[9 + 32 + 1];
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
	pn_storage_flush(s);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->root_fd >= 0)
		close(s->root_fd);
	free(s->root);
	free(s);
}

static void file_free(pn_storage_file *f);

/* A new file in tmp/, named with a fresh random generation (which keeps a
 * replacing instance's final path apart from the replaced one's). */
static int create_tmp(pn_storage *s, char name[PN_REL_PATH_MAX], uint32_t *ret_gen)
{
	uint32_t g = 0;
	if (getrandom(&g, sizeof(g), 0) != sizeof(g))
		g = (uint32_t)rand();
	pn_storage_part_name(g, (int)getpid(), ++s->seq, name);
	int fd = pn_fsio.openat(s->tmp_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	*ret_gen = g;
	return fd;
}

int pn_storage_prepare(pn_storage *s)
{
	/* Two per call until the stock is full, then one per call for the one
	 * the store took: the tmp folder is fsync'ed only when the stock has
	 * no durable file left, once per SPARES_MAX instances. */
	int want = s->n_spares + 1 < SPARES_MAX ? 2 : SPARES_MAX - s->n_spares;
	for (int i = 0; i < want; i++) {
		struct spare *sp = &s->spares[s->n_spares];
		int fd = create_tmp(s, sp->name, &sp->gen);
		if (fd < 0)
			return fd;
		sp->fd = fd;
		sp->durable = false;
		s->n_spares++;
	}
	if (s->n_spares == 0 || s->spares[0].durable)
		return 0;
	if (pn_fsio.fsync(s->tmp_fd) < 0)
		return -errno; /* begin fsyncs the folder for the file it takes */
	for (int i = 0; i < s->n_spares; i++)
		s->spares[i].durable = true;
	return 0;
}

static void drop_spares(pn_storage *s)
{
	for (int i = 0; i < s->n_spares; i++) {
		pn_fsio.close(s->spares[i].fd);
		pn_fsio.unlinkat(s->tmp_fd, s->spares[i].name, 0);
	}
	s->n_spares = 0;
}

int pn_storage_file_begin(pn_storage *s, pn_storage_file **ret_file)
{
	pn_storage_file *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->s = s;
	f->fd = -1;
	f->xxh = XXH3_createState();
	f->buf = malloc(WRITE_CHUNK);
	if (!f->xxh || !f->buf || XXH3_128bits_reset(f->xxh) != XXH_OK) {
		file_free(f);
		return -ENOMEM;
	}
	if (s->n_spares > 0) {
		/* durable ones first: they were made first */
		struct spare *sp = &s->spares[0];
		f->fd = sp->fd;
		f->gen = sp->gen;
		f->name_durable = sp->durable;
		snprintf(f->tmp_name, sizeof(f->tmp_name), "%s", sp->name);
		memmove(&s->spares[0], &s->spares[1], (size_t)--s->n_spares * sizeof(s->spares[0]));
	} else {
		f->fd = create_tmp(s, f->tmp_name, &f->gen);
		if (f->fd < 0) {
			int rc = f->fd;
			file_free(f);
			return rc;
		}
	}
	snprintf(f->tmp_path, sizeof(f->tmp_path), "%s/" TMP_DIR "/%s", s->root, f->tmp_name);
	*ret_file = f;
	return 0;
}

/* Asks the kernel to start writing what we have; the fsync later waits. */
static void start_writeback(pn_storage_file *f)
{
	if (f->written > f->writeback_from) {
		sync_file_range(f->fd, f->writeback_from, f->written - f->writeback_from, SYNC_FILE_RANGE_WRITE);
		f->writeback_from = f->written;
	}
}

static int flush_buffer(pn_storage_file *f)
{
	const char *p = f->buf;
	size_t len = f->buffered;
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
		f->written += n;
	}
	f->buffered = 0;
	start_writeback(f);
	return 0;
}

int pn_storage_file_write(pn_storage_file *f, const void *buf, size_t len)
{
	const char *p = buf;
	XXH3_128bits_update(f->xxh, buf, len);
	f->size += (int64_t)len;
	while (len > 0) {
		size_t n = WRITE_CHUNK - f->buffered;
		if (n > len)
			n = len;
		memcpy(f->buf + f->buffered, p, n);
		f->buffered += n;
		p += n;
		len -= n;
		if (f->buffered == WRITE_CHUNK) {
			int rc = flush_buffer(f);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

int pn_storage_file_written(pn_storage_file *f)
{
	int rc = flush_buffer(f);
	if (rc < 0)
		return rc;
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(f->xxh));
	memcpy(f->checksum, "xxh3-128:", 9);
	for (int i = 0; i < 16; i++)
		snprintf(f->checksum + 9 + 2 * i, 3, "%02x", c.digest[i]);
	return 0;
}

uint32_t pn_storage_file_generation(const pn_storage_file *f)
{
	return f->gen;
}

int pn_storage_file_name(pn_storage_file *f, const char *rel)
{
	/* Recovery finds the final path from the file's UIDs and the
	 * generation in its temporary name: they must agree. */
	uint32_t gen;
	if (!pn_storage_rel_generation(rel, &gen) || gen != f->gen)
		return -EINVAL;
	snprintf(f->rel, sizeof(f->rel), "%s", rel);
	f->named = true;
	return 0;
}

int pn_storage_file_sync(pn_storage_file *f)
{
	if (pn_fsio.fsync(f->fd) < 0)
		return -errno;
	int fd = f->fd;
	f->fd = -1;
	if (pn_fsio.close(fd) < 0)
		return -errno;
	/* The tmp entry must be durable before the final link can be:
	 * recovery relies on finding it. A spare's already is. */
	if (!f->name_durable && pn_fsio.fsync(f->s->tmp_fd) < 0)
		return -errno;
	return 0;
}

/* Creates ab/, ab/cd/ and ab/cd/<series>/ as needed; each new folder is
 * made durable in its parent before anything is linked into it. */
static int ensure_dirs(pn_storage *s, const char *rel)
{
	if (strncmp(s->known_dir, rel, PN_REL_DIR_LEN) == 0)
		return 0;
	static const int lens[] = {2, 5, PN_REL_DIR_LEN};
	for (int i = 0; i < 3; i++) {
		char dir[PN_REL_DIR_LEN + 1];
		snprintf(dir, sizeof(dir), "%.*s", lens[i], rel);
		if (pn_fsio.mkdirat(s->root_fd, dir, 0750) < 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		char parent[PN_REL_DIR_LEN + 1];
		snprintf(parent, sizeof(parent), "%.*s", i == 0 ? 1 : lens[i - 1], i == 0 ? "." : rel);
		int rc = fsync_dir_at(s->root_fd, parent);
		if (rc < 0)
			return rc;
	}
	snprintf(s->known_dir, sizeof(s->known_dir), "%.*s", PN_REL_DIR_LEN, rel);
	return 0;
}

int pn_storage_file_link(pn_storage_file *f)
{
	pn_storage *s = f->s;
	if (!f->named)
		return -EINVAL;
	int rc = ensure_dirs(s, f->rel);
	if (rc == 0 && pn_fsio.linkat(s->tmp_fd, f->tmp_name, s->root_fd, f->rel, 0) < 0)
		rc = -errno;
	if (rc == -ENOENT) {
		/* the folder vanished under our cache (removed by hand?): retry */
		s->known_dir[0] = '\0';
		rc = ensure_dirs(s, f->rel);
		if (rc == 0 && pn_fsio.linkat(s->tmp_fd, f->tmp_name, s->root_fd, f->rel, 0) < 0)
			rc = -errno;
	}
	if (rc < 0)
		return rc;
	f->linked = true;
	return 0;
}

static void file_free(pn_storage_file *f)
{
	if (f->fd >= 0)
		pn_fsio.close(f->fd);
	XXH3_freeState(f->xxh);
	free(f->buf);
	free(f);
}

static int flush_pending(pn_storage *s)
{
	int rc = 0;
	for (int i = 0; i < s->n_pending && rc == 0; i++) {
		bool seen = false;
		for (int j = 0; j < i && !seen; j++)
			seen = strcmp(s->pending[j].dir, s->pending[i].dir) == 0;
		if (!seen)
			rc = fsync_dir_at(s->root_fd, s->pending[i].dir);
	}
	if (rc < 0)
		return rc; /* the tmp names stay: recovery relinks if needed */
	/* If one of these unlinks is lost in a crash, recovery finds the row
	 * and removes the tmp entry then. */
	for (int i = 0; i < s->n_pending; i++)
		pn_fsio.unlinkat(s->tmp_fd, s->pending[i].tmp_name, 0);
	s->n_pending = 0;
	return 0;
}

int pn_storage_flush(pn_storage *s)
{
	drop_spares(s);
	return flush_pending(s);
}

int pn_storage_file_done(pn_storage_file *f)
{
	if (!f)
		return 0;
	pn_storage *s = f->s;
	int rc = 0;
	if (s->n_pending == PENDING_MAX)
		rc = flush_pending(s);
	if (s->n_pending < PENDING_MAX) {
		snprintf(s->pending[s->n_pending].tmp_name, PN_REL_PATH_MAX, "%s", f->tmp_name);
		snprintf(s->pending[s->n_pending].dir, PN_REL_DIR_LEN + 1, "%.*s", PN_REL_DIR_LEN, f->rel);
		s->n_pending++;
	}
	file_free(f);
	return rc;
}

void pn_storage_file_discard(pn_storage_file *f)
{
	if (!f)
		return;
	if (f->linked) {
		pn_fsio.unlinkat(f->s->root_fd, f->rel, 0);
		char dir[PN_REL_DIR_LEN + 1];
		snprintf(dir, sizeof(dir), "%.*s", PN_REL_DIR_LEN, f->rel);
		fsync_dir_at(f->s->root_fd, dir);
	}
	pn_fsio.unlinkat(f->s->tmp_fd, f->tmp_name, 0);
	file_free(f);
}

void pn_storage_file_abandon(pn_storage_file *f)
{
	if (f)
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

const char *pn_storage_file_checksum(const pn_storage_file *f)
{
	return f->checksum;
}

int pn_storage_remove(pn_storage *s, const char *rel)
{
	if (!pn_storage_rel_path_valid(rel))
		return -EINVAL;
	if (pn_fsio.unlinkat(s->root_fd, rel, 0) < 0)
		return -errno;
	char dir[PN_REL_DIR_LEN + 1];
	snprintf(dir, sizeof(dir), "%.*s", PN_REL_DIR_LEN, rel);
	return fsync_dir_at(s->root_fd, dir);
}

int pn_storage_full_path(const pn_storage *s, const char *rel, char **ret_path)
{
	if (!pn_storage_rel_path_valid(rel))
		return -EINVAL;
	size_t n = strlen(s->root) + 1 + strlen(rel) + 1;
	char *p = malloc(n);
	if (!p)
		return -ENOMEM;
	snprintf(p, n, "%s/%s", s->root, rel);
	*ret_path = p;
	return 0;
}

/* The final path a tmp/ entry stands for: read from the name (earlier
 * builds) or from the file and the generation in its name. 0, -EBADMSG
 * for a name or file we did not make, other negative errno. */
static int final_path_of(pn_storage *s, const char *name, pn_storage_identify_fn identify, void *ctx,
                         char rel[PN_REL_PATH_MAX])
{
	if (pn_storage_rel_from_tmp(name, rel) == 0)
		return 0;
	uint32_t gen;
	if (!pn_storage_part_generation(name, &gen))
		return -EBADMSG;
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/" TMP_DIR "/%s", s->root, name);
	int rc = identify(ctx, path, gen, rel);
	if (rc == -ENOENT)
		rc = -EBADMSG;
	if (rc == 0 && !pn_storage_rel_path_valid(rel))
		rc = -EBADMSG;
	return rc;
}

int pn_storage_recover(pn_storage *s, pn_storage_referenced_fn referenced, pn_storage_identify_fn identify, void *ctx,
                       pn_storage_recovery *ret_stats)
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
		rc = final_path_of(s, e->d_name, identify, ctx, rel);
		if (rc == -EBADMSG) {
			/* a file still being received, or not ours */
			unlinkat(s->tmp_fd, e->d_name, 0);
			st.strays++;
			rc = 0;
			continue;
		}
		if (rc < 0)
			break;
		bool used = false;
		rc = referenced(ctx, rel, &used);
		if (rc < 0)
			break;
		if (used) {
			struct stat fst;
			if (fstatat(s->root_fd, rel, &fst, 0) < 0 && errno == ENOENT) {
				ensure_dirs(s, rel);
				if (linkat(s->tmp_fd, e->d_name, s->root_fd, rel, 0) < 0) {
					rc = -errno;
					break; /* the tmp name stays for the next start */
				}
			}
			/* the final name must be durable before the tmp one goes */
			char dir[PN_REL_DIR_LEN + 1];
			snprintf(dir, sizeof(dir), "%.*s", PN_REL_DIR_LEN, rel);
			rc = fsync_dir_at(s->root_fd, dir);
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
