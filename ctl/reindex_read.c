/* The readers of pacsnodectl reindex (reindex_read.h). */
#include "reindex_read.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attr_levels.h"
#include "dicom_values.h"
#include "part10.h"
#include "store.h"
#include "uid.h"

/* Files up to this size are read into memory whole, hashed and parsed
 * there (one read); larger ones are hashed as they are read and parsed
 * from the file, as the store parses what outgrows its buffers. */
#define WHOLE_MAX (64u << 20)

/* How far ahead of the file being read its successors are asked of the
 * kernel (POSIX_FADV_WILLNEED), so that a cold disk has several reads in
 * flight while the threads parse. */
#define PREFETCH 16

typedef struct {
	pn_read_result res;
	size_t index;
	bool ready;
} slot;

struct pn_reader {
	const char *root;
	const pn_walk *w;
	uint64_t max_inflated;
	size_t window, next, released, end;
	slot *slots;
	pthread_t *threads;
	int n_threads;
	bool stop;
	pthread_mutex_t lock;
	pthread_cond_t work, done;
};

typedef struct {
	unsigned char *data;
	size_t cap;
} buffer;

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void full_path(const pn_reader *r, const char *rel, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", r->root, rel);
}

/* Asks the kernel to start reading entry i. */
static void prefetch(const pn_reader *r, size_t i)
{
	if (i >= r->end)
		return;
	char rel[PN_REL_PATH_MAX], path[4096];
	pn_walk_rel(&r->w->v[i], rel);
	full_path(r, rel, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
		close(fd);
	}
}

/* The whole file into b: 0, -ENOMEM, or -errno of the read (-ENODATA
 * when it is shorter than fstat said). */
static int read_whole(int fd, size_t size, buffer *b)
{
	if (size > b->cap) {
		unsigned char *d = realloc(b->data, size);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = size;
	}
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd, b->data + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		got += (size_t)n;
	}
	return 0;
}

__attribute__((format(printf, 3, 4))) static void say(pn_read_result *res, pn_read_status status, const char *fmt, ...)
{
	res->status = status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(res->why, sizeof(res->why), fmt, ap);
	va_end(ap);
}

/* What the store answers for a dataset it cannot read (store_received). */
static void load_failed(pn_read_result *res, int rc)
{
	if (rc == -E2BIG)
		say(res, PN_READ_REFUSED, "the deflated dataset inflates to more than max_inflated_mib");
	else if (rc == -ELOOP)
		say(res, PN_READ_REFUSED, "sequences are nested too deeply");
	else if (rc == -EBADMSG || rc == -ENOENT)
		say(res, PN_READ_REFUSED, "the dataset cannot be parsed (a damaged or truncated file?)");
	else
		say(res, PN_READ_UNREADABLE, "could not read the dataset: %s", strerror(-rc));
}

/* Its Source Application Entity Title: who sent it, as the row says. */
static void source_ae(pn_dcm_ds *ds, char out[PN_AE_MAX + 1])
{
	char *v = NULL;
	out[0] = '\0';
	if (pn_dcm_ds_get(ds, PN_TAG(0x0002, 0x0016), &v) == 0 && v) {
		pn_trim(v);
		pn_utf8_sanitise(v);
		snprintf(out, PN_AE_MAX + 1, "%s", v);
	}
	free(v);
}

/* The file's bytes: read (into b when whole), its checksum, its meta
 * header. False when it goes no further (res says why). */
static bool read_file(const char *path, buffer *b, pn_read_result *res, bool *ret_whole, pn_part10_meta *meta)
{
	int64_t t0 = now_ns();
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		say(res, PN_READ_UNREADABLE, "%s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	res->size = (int64_t)st.st_size;
	bool whole = *ret_whole = (uint64_t)st.st_size <= WHOLE_MAX;
	int rc;
	if (whole) {
		rc = read_whole(fd, (size_t)st.st_size, b);
		int64_t t1 = now_ns();
		res->read_ns = t1 - t0;
		if (rc == 0) {
			pn_storage_checksum(b->data, (size_t)st.st_size, res->checksum);
			res->sum_ns = now_ns() - t1;
			rc = pn_part10_meta_parse(b->data, (size_t)st.st_size, meta) == 0 ? 0 : -EBADMSG;
		}
	} else {
		uint64_t n = 0;
		rc = pn_storage_checksum_fd(fd, res->checksum, &n);
		if (rc == 0 && n != (uint64_t)st.st_size)
			rc = -ENODATA;
		if (rc == 0)
			rc = pn_part10_meta_read(fd, meta);
		res->read_ns = now_ns() - t0;
	}
	close(fd);
	if (rc == -EBADMSG) {
		say(res, PN_READ_NOT_DICOM, "not a DICOM Part 10 file");
		return false;
	}
	if (rc < 0) {
		say(res, PN_READ_UNREADABLE, "%s", rc == -ENODATA ? "the file shrank while being read" : strerror(-rc));
		return false;
	}
	if (!pn_uid_valid(meta->sop_instance_uid) || !pn_uid_valid(meta->sop_class_uid)) {
		say(res, PN_READ_REFUSED, "Media Storage SOP Class/Instance UID is not a valid UID");
		return false;
	}
	return true;
}

/* Its dataset, as the store reads it, made into its row. */
static void parse_file(const pn_reader *r, const char *path, const buffer *b, bool whole, const pn_part10_meta *meta,
                       pn_read_result *res)
{
	pn_dcm_ds *ds = NULL;
	int rc = pn_store_load_bytes(whole ? b->data : NULL, whole ? (size_t)res->size : 0, path, r->max_inflated, &ds);
	if (rc < 0) {
		load_failed(res, rc);
		return;
	}
	pn_record_problem problem;
	char why[320] = "";
	rc = pn_record_build(ds, meta->sop_class_uid, meta->sop_instance_uid, &res->rec, &problem, &res->charset_ok,
	                     why, sizeof(why));
	if (rc < 0) {
		if (rc == -EBADMSG)
			say(res, PN_READ_REFUSED, "%s", why);
		else
			say(res, PN_READ_UNREADABLE, "could not read the attributes: %s", strerror(-rc));
		pn_dcm_ds_free(ds);
		return;
	}
	source_ae(ds, res->calling_ae);
	pn_dcm_ds_free(ds);

	pn_instance_rec *row = pn_record_row(res->rec);
	uint32_t generation = 0;
	char expect[PN_REL_PATH_MAX];
	if (!pn_storage_rel_generation(res->rel, &generation) ||
	    pn_storage_rel_path(row->series_uid, row->sop_uid, generation, expect) < 0 ||
	    strcmp(expect, res->rel) != 0) {
		say(res, PN_READ_MISPLACED, "holds instance %s of series %s, whose file the node names %s",
		    row->sop_uid, row->series_uid, expect);
		pn_record_free(res->rec);
		res->rec = NULL;
		return;
	}
	row->path = res->rel;
	row->size = res->size;
	row->checksum = res->checksum;
	row->calling_ae = res->calling_ae;
}

static void read_one(const pn_reader *r, buffer *b, size_t i, pn_read_result *res)
{
	memset(res, 0, sizeof(*res));
	res->charset_ok = true;
	res->mtime_ns = r->w->v[i].mtime_ns;
	pn_walk_rel(&r->w->v[i], res->rel);
	char path[4096];
	full_path(r, res->rel, path, sizeof(path));
	bool whole = false;
	pn_part10_meta meta;
	if (!read_file(path, b, res, &whole, &meta))
		return;
	int64_t t0 = now_ns();
	parse_file(r, path, b, whole, &meta, res);
	res->parse_ns = now_ns() - t0;
}

static void *worker(void *arg)
{
	pn_reader *r = arg;
	buffer b = {0};
	pthread_mutex_lock(&r->lock);
	for (;;) {
		while (!r->stop && r->next < r->end && r->next >= r->released + r->window)
			pthread_cond_wait(&r->work, &r->lock);
		if (r->stop || r->next >= r->end)
			break;
		size_t i = r->next++;
		pthread_mutex_unlock(&r->lock);
		prefetch(r, i + PREFETCH);
		slot *s = &r->slots[i % r->window];
		read_one(r, &b, i, &s->res);
		pthread_mutex_lock(&r->lock);
		s->index = i;
		s->ready = true;
		pthread_cond_broadcast(&r->done);
	}
	pthread_mutex_unlock(&r->lock);
	free(b.data);
	return NULL;
}

int pn_reader_create(const char *root, const pn_walk *w, size_t first, size_t window, int jobs, uint64_t max_inflated,
                     pn_reader **ret)
{
	pn_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (pn_reader){.root = root,
	                 .w = w,
	                 .max_inflated = max_inflated,
	                 .window = window,
	                 .next = first,
	                 .released = first,
	                 .end = w->n};
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->work, NULL);
	pthread_cond_init(&r->done, NULL);
	r->slots = calloc(window, sizeof(*r->slots));
	r->threads = calloc((size_t)jobs, sizeof(*r->threads));
	if (!r->slots || !r->threads) {
		pn_reader_free(r);
		return -ENOMEM;
	}
	for (size_t i = first; i < first + PREFETCH; i++)
		prefetch(r, i);
	for (int t = 0; t < jobs; t++) {
		int rc = pthread_create(&r->threads[t], NULL, worker, r);
		if (rc != 0) {
			pn_reader_free(r);
			return -rc;
		}
		r->n_threads++;
	}
	*ret = r;
	return 0;
}

pn_read_result *pn_reader_get(pn_reader *r, size_t i)
{
	slot *s = &r->slots[i % r->window];
	pthread_mutex_lock(&r->lock);
	while (!(s->ready && s->index == i))
		pthread_cond_wait(&r->done, &r->lock);
	pthread_mutex_unlock(&r->lock);
	return &s->res;
}

void pn_reader_release(pn_reader *r, size_t i)
{
	slot *s = &r->slots[i % r->window];
	pn_record_free(s->res.rec);
	s->res.rec = NULL;
	pthread_mutex_lock(&r->lock);
	s->ready = false;
	r->released = i + 1;
	pthread_cond_broadcast(&r->work);
	pthread_mutex_unlock(&r->lock);
}

void pn_reader_free(pn_reader *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stop = true;
	pthread_cond_broadcast(&r->work);
	pthread_mutex_unlock(&r->lock);
	for (int t = 0; t < r->n_threads; t++)
		pthread_join(r->threads[t], NULL);
	for (size_t i = 0; r->slots && i < r->window; i++)
		pn_record_free(r->slots[i].res.rec);
	free(r->slots);
	free(r->threads);
	pthread_cond_destroy(&r->work);
	pthread_cond_destroy(&r->done);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
