#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "fsio.h"

#define SLOTS PN_WRITER_SLOTS

int (*pn_writer_thread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) = pthread_create;

typedef enum { JOB_WRITE, JOB_FSYNC } job_kind;

struct job {
	job_kind kind;
	int fd;
	size_t len;
	bool direct;
	char *buf; /* the slot's own, PN_WRITER_CHUNK bytes */
};

struct pn_writer {
	pthread_mutex_t mu;
	pthread_cond_t queued_cv; /* the thread waits for work */
	pthread_cond_t done_cv;   /* the worker waits for a slot or the end */
	pthread_t thread;
	bool threaded;
	bool stop;
	/* Jobs [done, queued) are the thread's; slot = count % SLOTS. Only the
	 * worker moves queued, only the thread moves done. */
	unsigned long queued, done;
	int err;           /* first failure since the last wait */
	int64_t synced_ns; /* when the last successful fsync returned */
	struct job jobs[SLOTS];
};

/* Consecutive full direct chunks of one file go in one writev: the disk
 * takes one large request faster than several small ones. */
static int writev_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = pn_fsio.writev(fd, iov, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	struct iovec iov = {(void *)p, len};
	return len == 0 ? 0 : writev_all(fd, &iov, 1);
}

/* The file's end: the aligned part directly, the rest (shorter than a
 * block) through the page cache, which the fsync then writes. */
static int write_tail(const struct job *j)
{
	size_t aligned = j->len - j->len % PN_WRITER_ALIGN;
	int rc = write_all(j->fd, j->buf, aligned);
	if (rc < 0)
		return rc;
	int fl = fcntl(j->fd, F_GETFL);
	if (fl < 0 || fcntl(j->fd, F_SETFL, fl & ~O_DIRECT) < 0)
		return -errno;
	return write_all(j->fd, j->buf + aligned, j->len - aligned);
}

static int write_buffered(const struct job *j)
{
	off_t from = lseek(j->fd, 0, SEEK_CUR);
	int rc = write_all(j->fd, j->buf, j->len);
	/* the fsync will find most of it written already */
	if (rc == 0 && from >= 0)
		sync_file_range(j->fd, from, (off_t)j->len, SYNC_FILE_RANGE_WRITE);
	return rc;
}

static bool batchable(const struct job *j)
{
	return j->kind == JOB_WRITE && j->direct && j->len % PN_WRITER_ALIGN == 0;
}

int64_t pn_writer_clock_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Runs jobs [first, last) of w; returns how many it ran (a batch of
 * writes counts for all of them), the first failure in *ret_err, and when
 * an fsync among them succeeded in *ret_synced_ns (else left alone). */
static unsigned long run_jobs(pn_writer *w, unsigned long first, unsigned long last, int *ret_err,
                              int64_t *ret_synced_ns)
{
	struct job *j = &w->jobs[first % SLOTS];
	int rc;
	unsigned long n = 1;
	if (j->kind == JOB_FSYNC) {
		rc = pn_fsio.fsync(j->fd) < 0 ? -errno : 0;
		if (rc == 0)
			*ret_synced_ns = pn_writer_clock_ns();
	} else if (batchable(j)) {
		struct iovec iov[SLOTS];
		iov[0] = (struct iovec){j->buf, j->len};
		while (first + n < last) {
			const struct job *k = &w->jobs[(first + n) % SLOTS];
			if (!batchable(k) || k->fd != j->fd)
				break;
			iov[n] = (struct iovec){k->buf, k->len};
			n++;
		}
		rc = writev_all(j->fd, iov, (int)n);
	} else if (j->direct) {
		rc = write_tail(j);
	} else {
		rc = write_buffered(j);
	}
	*ret_err = rc;
	return n;
}

static void *thread_main(void *arg)
{
	pn_writer *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->done == w->queued && !w->stop)
			pthread_cond_wait(&w->queued_cv, &w->mu);
		if (w->done == w->queued)
			break; /* stopping, nothing left */
		unsigned long first = w->done, last = w->queued;
		pthread_mutex_unlock(&w->mu);
		int rc;
		int64_t synced = -1;
		unsigned long n = run_jobs(w, first, last, &rc, &synced);
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && w->err == 0)
			w->err = rc;
		if (synced >= 0)
			w->synced_ns = synced;
		w->done += n;
		pthread_cond_broadcast(&w->done_cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int pn_writer_create(pn_writer **ret_writer)
{
	pn_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	for (int i = 0; i < SLOTS; i++) {
		if (posix_memalign((void **)&w->jobs[i].buf, PN_WRITER_ALIGN, PN_WRITER_CHUNK) != 0) {
			for (int k = 0; k < i; k++)
				free(w->jobs[k].buf);
			free(w);
			return -ENOMEM;
		}
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->queued_cv, NULL);
	pthread_cond_init(&w->done_cv, NULL);
	/* Signals are the worker's business, not this thread's. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	w->threaded = pn_writer_thread_create(&w->thread, NULL, thread_main, w) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	*ret_writer = w;
	return 0;
}

void pn_writer_free(pn_writer *w)
{
	if (!w)
		return;
	if (w->threaded) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->queued_cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	pthread_cond_destroy(&w->done_cv);
	pthread_cond_destroy(&w->queued_cv);
	pthread_mutex_destroy(&w->mu);
	for (int i = 0; i < SLOTS; i++)
		free(w->jobs[i].buf);
	free(w);
}

char *pn_writer_buffer(pn_writer *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->queued - w->done == SLOTS)
		pthread_cond_wait(&w->done_cv, &w->mu);
	char *buf = w->jobs[w->queued % SLOTS].buf;
	pthread_mutex_unlock(&w->mu);
	return buf;
}

static void queue(pn_writer *w, job_kind kind, int fd, size_t len, bool direct)
{
	pthread_mutex_lock(&w->mu);
	while (w->queued - w->done == SLOTS)
		pthread_cond_wait(&w->done_cv, &w->mu);
	struct job *j = &w->jobs[w->queued % SLOTS];
	j->kind = kind;
	j->fd = fd;
	j->len = len;
	j->direct = direct;
	w->queued++;
	if (w->threaded) {
		pthread_cond_signal(&w->queued_cv);
		pthread_mutex_unlock(&w->mu);
		return;
	}
	int rc;
	int64_t synced = -1;
	w->done += run_jobs(w, w->done, w->queued, &rc, &synced);
	if (rc < 0 && w->err == 0)
		w->err = rc;
	if (synced >= 0)
		w->synced_ns = synced;
	pthread_mutex_unlock(&w->mu);
}

void pn_writer_write(pn_writer *w, int fd, size_t len, bool direct)
{
	queue(w, JOB_WRITE, fd, len, direct);
}

void pn_writer_fsync(pn_writer *w, int fd)
{
	queue(w, JOB_FSYNC, fd, 0, false);
}

int pn_writer_wait(pn_writer *w)
{
	pthread_mutex_lock(&w->mu);
	while (w->done != w->queued)
		pthread_cond_wait(&w->done_cv, &w->mu);
	int rc = w->err;
	w->err = 0;
	pthread_mutex_unlock(&w->mu);
	return rc;
}

int64_t pn_writer_synced_ns(pn_writer *w)
{
	pthread_mutex_lock(&w->mu);
	int64_t t = w->synced_ns;
	pthread_mutex_unlock(&w->mu);
	return t;
}
