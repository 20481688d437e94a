#include "storage.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "fsio.h"
#include "storage_internal.h"
#include "writer.h"

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

int pn_storage_fsync_dir_at(int dirfd, const char *path)
{
	int fd = pn_fsio.openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = pn_fsio.fsync(fd) < 0 ? -errno : 0;
	pn_fsio.close(fd);
	return rc;
}

/* tmpfs before Linux 6.6 and some FUSE file systems refuse O_DIRECT. */
static bool probe_direct(pn_storage *s)
{
	char name[64];
	snprintf(name, sizeof(name), "probe-%d", (int)getpid());
	int fd = pn_fsio.openat(s->tmp_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0640);
	if (fd < 0)
		return false;
	pn_fsio.close(fd);
	pn_fsio.unlinkat(s->tmp_fd, name, 0);
	return true;
}

int pn_storage_open(const char *root, const char *node_id, pn_storage **ret_storage)
{
	if (node_id && (!node_id[0] || strchr(node_id, '/') || strcmp(node_id, ".") == 0 ||
	                strcmp(node_id, "..") == 0 || strlen(node_id) > 64))
		return -EINVAL;
	pn_storage *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->root_fd = s->tmp_fd = s->tmp_top_fd = -1;
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
	s->tmp_top_fd = openat(s->root_fd, TMP_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->tmp_top_fd < 0) {
		rc = -errno;
		goto fail;
	}
	if (node_id) {
		snprintf(s->tmp_rel, sizeof(s->tmp_rel), TMP_DIR "/%s", node_id);
		/* the folder's name made durable before any file in it counts */
		if (mkdirat(s->tmp_top_fd, node_id, 0750) == 0)
			fsync(s->tmp_top_fd);
		else if (errno != EEXIST) {
			rc = -errno;
			goto fail;
		}
		s->tmp_fd = openat(s->tmp_top_fd, node_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} else {
		snprintf(s->tmp_rel, sizeof(s->tmp_rel), TMP_DIR);
		s->tmp_fd = dup(s->tmp_top_fd);
	}
	if (s->tmp_fd < 0) {
		rc = -errno;
		goto fail;
	}
	s->direct = probe_direct(s);
	pn_write_mode_init(&s->wm, PN_WRITE_AUTO, s->direct);
	*ret_storage = s;
	return 0;
fail:
	pn_storage_free(s);
	return rc;
}

bool pn_storage_due(pn_storage *s, int interval_s)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (s->due_at.tv_sec != 0 && now.tv_sec < s->due_at.tv_sec)
		return false;
	s->due_at.tv_sec = now.tv_sec + interval_s;
	return true;
}

void pn_storage_set_write_mode(pn_storage *s, pn_write_policy policy)
{
	pn_write_mode_init(&s->wm, policy, s->direct);
}

void pn_storage_free(pn_storage *s)
{
	if (!s)
		return;
	pn_storage_flush(s);
	pn_writer_free(s->writer);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	if (s->tmp_top_fd >= 0)
		close(s->tmp_top_fd);
	if (s->root_fd >= 0)
		close(s->root_fd);
	free(s->root);
	free(s);
}

int pn_storage_free_bytes(const pn_storage *s, uint64_t *ret_bytes)
{
	struct statvfs v;
	if (fstatvfs(s->root_fd, &v) < 0)
		return -errno;
	*ret_bytes = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
	return 0;
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
	int fd = pn_fsio.openat(s->tmp_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (s->direct ? O_DIRECT : 0),
	                        0640);
	if (fd < 0)
		return -errno;
	*ret_gen = g;
	return fd;
}

int pn_storage_prepare(pn_storage *s)
{
	if (s->read_only)
		return -EROFS;
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

/* An open file none of whose names is left (fstat's link count). */
static bool unlinked(int fd)
{
	struct stat st;
	return fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink == 0;
}

int pn_storage_lost_files(pn_storage *s, int *ret_spares)
{
	int kept = 0, n = s->n_spares;
	for (int i = 0; i < s->n_spares; i++) {
		if (unlinked(s->spares[i].fd))
			pn_fsio.close(s->spares[i].fd);
		else
			s->spares[kept++] = s->spares[i];
	}
	s->n_spares = kept;
	*ret_spares = n - kept;
	int lost = 0;
	for (pn_storage_file *f = s->open_files; f; f = f->next)
		lost += unlinked(f->fd);
	return lost;
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
	if (s->read_only)
		return -EROFS;
	pn_storage_file *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->s = s;
	f->fd = -1;
	f->next = s->open_files;
	if (f->next)
		f->next->prev = f;
	s->open_files = f;
	f->xxh = XXH3_createState();
	if (!s->writer && pn_writer_create(&s->writer) < 0) {
		file_free(f);
		return -ENOMEM;
	}
	if (!f->xxh || XXH3_128bits_reset(f->xxh) != XXH_OK) {
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
	snprintf(f->tmp_path, sizeof(f->tmp_path), "%s/%s/%s", s->root, s->tmp_rel, f->tmp_name);
	/* Files are made with O_DIRECT where it is had; this one keeps it
	 * only if it is to be written so. */
	f->direct = s->direct;
	if (s->direct && !pn_write_mode_pick(&s->wm)) {
		int fl = fcntl(f->fd, F_GETFL);
		if (fl >= 0 && fcntl(f->fd, F_SETFL, fl & ~O_DIRECT) == 0)
			f->direct = false;
	}
	*ret_file = f;
	return 0;
}

/* Hands the buffer to the writer thread. */
static void queue_buffer(pn_storage_file *f)
{
	if (f->n_parts >= 0 && f->n_parts < PN_WRITER_SLOTS)
		f->parts[f->n_parts++] = (pn_storage_part){f->buf, f->buffered};
	else
		f->n_parts = -1;
	pn_writer_write(f->s->writer, f->fd, f->buffered, f->direct);
	f->queued = true;
	f->buf = NULL;
	f->buffered = 0;
}

int pn_storage_file_write(pn_storage_file *f, const void *buf, size_t len)
{
	const char *p = buf;
	XXH3_128bits_update(f->xxh, buf, len);
	f->size += (int64_t)len;
	while (len > 0) {
		if (!f->buf)
			f->buf = pn_writer_buffer(f->s->writer);
		size_t n = PN_WRITER_CHUNK - f->buffered;
		if (n > len)
			n = len;
		memcpy(f->buf + f->buffered, p, n);
		f->buffered += n;
		p += n;
		len -= n;
		if (f->buffered == PN_WRITER_CHUNK)
			queue_buffer(f);
	}
	return 0;
}

/* "xxh3-128:" + the canonical (big-endian) hex digits. */
static void format_checksum(XXH128_hash_t h, char out[PN_CHECKSUM_LEN])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	memcpy(out, "xxh3-128:", 9);
	for (int i = 0; i < 16; i++)
		snprintf(out + 9 + 2 * i, 3, "%02x", c.digest[i]);
}

int pn_storage_file_written(pn_storage_file *f)
{
	f->written_ns = pn_writer_clock_ns();
	if (f->buf && f->buffered > 0)
		queue_buffer(f);
	f->buf = NULL; /* an unused buffer goes back to the writer as it is */
	/* While the caller parses and indexes, the writer writes and fsyncs. */
	pn_writer_fsync(f->s->writer, f->fd);
	f->queued = true;
	format_checksum(XXH3_128bits_digest(f->xxh), f->checksum);
	return 0;
}

void pn_storage_checksum(const void *data, size_t len, char out[PN_CHECKSUM_LEN])
{
	format_checksum(XXH3_128bits(data, len), out);
}

int pn_storage_checksum_fd(int fd, char out[PN_CHECKSUM_LEN], uint64_t *ret_bytes)
{
	unsigned char *buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	int rc = pn_storage_checksum_fd_buf(fd, buf, 1 << 20, out, ret_bytes);
	free(buf);
	return rc;
}

int pn_storage_checksum_fd_buf(int fd, void *buf, size_t cap, char out[PN_CHECKSUM_LEN], uint64_t *ret_bytes)
{
	XXH3_state_t *st = XXH3_createState();
	int rc = 0;
	if (!st || XXH3_128bits_reset(st) != XXH_OK)
		rc = -ENOMEM;
	if (rc == 0)
		posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	ssize_t n = 0;
	uint64_t total = 0;
	while (rc == 0 && (n = read(fd, buf, cap)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		XXH3_128bits_update(st, buf, (size_t)n);
		total += (uint64_t)n;
	}
	if (rc == 0) {
		format_checksum(XXH3_128bits_digest(st), out);
		*ret_bytes = total;
	}
	XXH3_freeState(st);
	return rc;
}

bool pn_storage_file_direct(const pn_storage_file *f)
{
	return f->direct;
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

int pn_storage_file_parts(const pn_storage_file *f, const pn_storage_part **ret_parts)
{
	*ret_parts = f->parts;
	return f->n_parts < 0 ? -E2BIG : f->n_parts;
}

/* The outcome of the file's writes and fsync, waited for once. Once
 * the file is durable, how long that took after its last byte counts
 * for the way it was written. */
static int settle(pn_storage_file *f)
{
	if (f->queued) {
		f->io_rc = pn_writer_wait(f->s->writer);
		f->queued = false;
		f->io_known = true;
		if (f->io_rc == 0 && f->written_ns > 0)
			pn_write_mode_note(&f->s->wm, f->direct, f->size,
			                   pn_writer_synced_ns(f->s->writer) - f->written_ns);
	}
	return f->io_known ? f->io_rc : 0;
}

int pn_storage_file_wait(pn_storage_file *f)
{
	return settle(f);
}

int pn_storage_file_sync(pn_storage_file *f)
{
	if (!f->io_known && !f->queued) {
		/* pn_storage_file_written() was not called */
		return -EINVAL;
	}
	int rc = settle(f);
	if (rc < 0)
		return rc;
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
int pn_storage_ensure_dirs(pn_storage *s, const char *rel)
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
		int rc = pn_storage_fsync_dir_at(s->root_fd, parent);
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
	int rc = pn_storage_ensure_dirs(s, f->rel);
	if (rc == 0 && pn_fsio.linkat(s->tmp_fd, f->tmp_name, s->root_fd, f->rel, 0) < 0)
		rc = -errno;
	if (rc == -ENOENT) {
		/* the folder vanished under our cache (removed by hand?): retry */
		s->known_dir[0] = '\0';
		rc = pn_storage_ensure_dirs(s, f->rel);
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
	if (f->prev)
		f->prev->next = f->next;
	else if (f->s->open_files == f)
		f->s->open_files = f->next;
	if (f->next)
		f->next->prev = f->prev;
	settle(f); /* the writer's jobs on fd end before it closes */
	if (f->fd >= 0)
		pn_fsio.close(f->fd);
	XXH3_freeState(f->xxh);
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
			rc = pn_storage_fsync_dir_at(s->root_fd, s->pending[i].dir);
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
		pn_storage_fsync_dir_at(f->s->root_fd, dir);
	}
	pn_fsio.unlinkat(f->s->tmp_fd, f->tmp_name, 0);
	file_free(f);
}

void pn_storage_file_abandon(pn_storage_file *f, const char *note)
{
	if (!f)
		return;
	pn_storage *s = f->s;
	if (f->named && s->n_abandoned < ABANDONED_MAX && (!note || strlen(note) < PN_STORAGE_NOTE_MAX)) {
		snprintf(s->abandoned[s->n_abandoned].tmp_name, PN_REL_PATH_MAX, "%s", f->tmp_name);
		snprintf(s->abandoned[s->n_abandoned].rel, PN_REL_PATH_MAX, "%s", f->rel);
		snprintf(s->abandoned[s->n_abandoned].note, PN_STORAGE_NOTE_MAX, "%s", note ? note : "");
		s->n_abandoned++;
	}
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

/* Whether `rel` may be handed to the file system: NULL and every other
 * shape are refused before any system call sees them. */
static bool rel_ok(const char *rel)
{
	return rel && pn_storage_rel_path_valid(rel);
}

int pn_storage_remove(pn_storage *s, const char *rel)
{
	bool removed;
	return pn_storage_remove_many(s, &rel, 1, &removed);
}

int pn_storage_remove_many(pn_storage *s, const char *const *rels, size_t n, bool *ret_removed)
{
	if (s->read_only) {
		for (size_t i = 0; i < n; i++)
			ret_removed[i] = false;
		return n ? -EROFS : 0;
	}
	int first = 0;
	size_t from = 0;    /* the first file of the folder being worked on */
	bool group = false; /* rels[from] is a valid path whose folder awaits its fsync */
	for (size_t i = 0; i <= n; i++) {
		if (i < n && !rel_ok(rels[i])) {
			/* never unlinked, and never the folder to fsync */
			ret_removed[i] = false;
			first = first ? first : -EINVAL;
			continue;
		}
		/* the folder's files are unlinked: make their removal durable */
		if (group && (i == n || strncmp(rels[i], rels[from], PN_REL_DIR_LEN) != 0)) {
			char dir[PN_REL_DIR_LEN + 1];
			snprintf(dir, sizeof(dir), "%.*s", PN_REL_DIR_LEN, rels[from]);
			int rc = pn_storage_fsync_dir_at(s->root_fd, dir);
			if (rc < 0 && rc != -ENOENT) {
				for (size_t k = from; k < i; k++)
					ret_removed[k] = false;
				first = first ? first : rc;
			}
			group = false;
		}
		if (i == n)
			break;
		if (!group) {
			from = i;
			group = true;
		}
		ret_removed[i] = false;
		if (pn_fsio.unlinkat(s->root_fd, rels[i], 0) < 0 && errno != ENOENT) {
			first = first ? first : -errno;
			continue;
		}
		ret_removed[i] = true;
	}
	return first;
}

int pn_storage_get(const pn_storage *s, const char *rel)
{
	if (!rel_ok(rel))
		return -EINVAL;
	int fd = pn_fsio.openat(s->root_fd, rel, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int pn_storage_exists(const pn_storage *s, const char *rel)
{
	if (!rel_ok(rel))
		return -EINVAL;
	struct stat st;
	if (fstatat(s->root_fd, rel, &st, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	return S_ISREG(st.st_mode) ? 1 : -EBADMSG;
}

int pn_storage_open_reader(const char *root, pn_storage **ret_storage)
{
	pn_storage *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->root_fd = s->tmp_fd = s->tmp_top_fd = -1;
	s->read_only = true;
	s->root = strdup(root);
	if (!s->root) {
		free(s);
		return -ENOMEM;
	}
	s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0) {
		int rc = -errno;
		pn_storage_free(s);
		return rc;
	}
	*ret_storage = s;
	return 0;
}

int pn_storage_full_path(const pn_storage *s, const char *rel, char **ret_path)
{
	if (!rel_ok(rel))
		return -EINVAL;
	size_t n = strlen(s->root) + 1 + strlen(rel) + 1;
	char *p = malloc(n);
	if (!p)
		return -ENOMEM;
	snprintf(p, n, "%s/%s", s->root, rel);
	*ret_path = p;
	return 0;
}
