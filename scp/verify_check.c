/* The checking threads of pacsnodectl verify (verify_check.h).
 *
 * A file handed in is first opened by a thread, which asks the kernel to
 * start reading it, and checked later, by whichever thread is free: the
 * threads open up to the whole window ahead of the checks, so that a cold
 * disk has that many reads in flight (metadata and data) while files
 * already read are hashed. The caller is woken only for the file it waits
 * for, and a thread only when there is work it could not see. */
#include "verify_check.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Each thread's reads (file_check.h). */
#define READ_BUF PN_CHECK_BUF

/* How much of a file is asked for ahead: its readahead does the rest, and
 * a window of large multi-frame files does not flood the page cache. */
#define WILLNEED_MAX (8u << 20)

typedef struct {
	pn_check check;
	int fd; /* once opened; -1 when it could not be (status says why) */
	bool opened, done;
} slot;

struct pn_checker {
	pn_storage *storage; /* for reading only: the files are opened through it */
	int root_err;        /* or why it could not be opened (errno) */
	size_t window;
	/* files handed in, taken to be opened, taken to be checked */
	size_t added, opening, checking;
	size_t awaited; /* the file the caller waits for, when waiting */
	bool waiting, stop;
	int idle; /* threads waiting for work */
	slot *slots;
	pthread_t *threads;
	int n_threads;
	pthread_mutex_t lock;
	pthread_cond_t work, done;
};

static void open_file(const pn_checker *c, slot *s)
{
	pn_check *k = &s->check;
	if (k->status != PN_CHECK_OK)
		return; /* a bad path: nothing to open */
	s->fd = c->storage ? pn_storage_get(c->storage, k->rel) : -c->root_err;
	if (s->fd < 0) {
		k->status = PN_CHECK_MISSING;
		k->err = -s->fd;
		s->fd = -1;
		return;
	}
	posix_fadvise(s->fd, 0, k->size > 0 && k->size < WILLNEED_MAX ? k->size : WILLNEED_MAX, POSIX_FADV_WILLNEED);
}

static void *worker(void *arg)
{
	pn_checker *c = arg;
	unsigned char *buf = malloc(READ_BUF);
	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		if (c->opening < c->added) {
			slot *s = &c->slots[c->opening++ % c->window];
			pthread_mutex_unlock(&c->lock);
			open_file(c, s);
			pthread_mutex_lock(&c->lock);
			s->opened = true;
			if (c->idle)
				pthread_cond_broadcast(&c->work); /* one may wait for this file */
			continue;
		}
		if (c->checking < c->opening && c->slots[c->checking % c->window].opened) {
			size_t i = c->checking++;
			slot *s = &c->slots[i % c->window];
			pthread_mutex_unlock(&c->lock);
			if (s->fd >= 0) {
				if (buf)
					pn_file_check(s->fd, buf, READ_BUF, &s->check);
				else
					s->check = (pn_check){.status = PN_CHECK_UNREADABLE, .err = ENOMEM};
				close(s->fd);
				s->fd = -1;
			}
			pthread_mutex_lock(&c->lock);
			s->done = true;
			if (c->waiting && c->awaited == i)
				pthread_cond_signal(&c->done);
			continue;
		}
		c->idle++;
		pthread_cond_wait(&c->work, &c->lock);
		c->idle--;
	}
	pthread_mutex_unlock(&c->lock);
	free(buf);
	return NULL;
}

int pn_checker_create(const char *root, int jobs, size_t window, pn_checker **ret)
{
	pn_checker *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->window = window;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->work, NULL);
	pthread_cond_init(&c->done, NULL);
	/* A root that cannot be opened makes every file missing, with its
	 * errno, as opening each file below it would. */
	int rc = pn_storage_open_reader(root, &c->storage);
	if (rc == -ENOMEM) {
		pn_checker_free(c);
		return rc;
	}
	if (rc < 0)
		c->root_err = -rc;
	c->slots = calloc(window, sizeof(*c->slots));
	c->threads = calloc((size_t)jobs, sizeof(*c->threads));
	if (!c->slots || !c->threads) {
		pn_checker_free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < window; i++)
		c->slots[i].fd = -1;
	for (int t = 0; t < jobs; t++) {
		rc = pthread_create(&c->threads[t], NULL, worker, c);
		if (rc != 0) {
			pn_checker_free(c);
			return -rc;
		}
		c->n_threads++;
	}
	*ret = c;
	return 0;
}

/* A row's value into a field: false when it does not fit. */
static bool copy(char *dst, size_t len, const char *src)
{
	return (size_t)snprintf(dst, len, "%s", src) < len;
}

void pn_checker_add(pn_checker *c, size_t i, const pn_stored_file *f)
{
	/* The slot's last file was waited for: no thread touches it. */
	slot *s = &c->slots[i % c->window];
	pn_check *k = &s->check;
	memset(k, 0, sizeof(*k));
	s->fd = -1;
	s->opened = s->done = false;
	k->size = f->size;
	k->overlong = !copy(k->sop_uid, sizeof(k->sop_uid), f->sop_uid) |
	              !copy(k->sop_class_uid, sizeof(k->sop_class_uid), f->sop_class_uid) |
	              !copy(k->checksum, sizeof(k->checksum), f->checksum);
	if (!copy(k->rel, sizeof(k->rel), f->path) || !pn_storage_rel_path_valid(k->rel))
		k->status = PN_CHECK_BAD_PATH;
	pthread_mutex_lock(&c->lock);
	c->added = i + 1;
	if (c->idle)
		pthread_cond_signal(&c->work);
	pthread_mutex_unlock(&c->lock);
}

const pn_check *pn_checker_wait(pn_checker *c, size_t i)
{
	slot *s = &c->slots[i % c->window];
	pthread_mutex_lock(&c->lock);
	while (!s->done) {
		c->waiting = true;
		c->awaited = i;
		pthread_cond_wait(&c->done, &c->lock);
	}
	c->waiting = false;
	pthread_mutex_unlock(&c->lock);
	return &s->check;
}

void pn_checker_free(pn_checker *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->work);
	pthread_mutex_unlock(&c->lock);
	for (int t = 0; t < c->n_threads; t++)
		pthread_join(c->threads[t], NULL);
	for (size_t i = 0; c->slots && i < c->window; i++)
		if (c->slots[i].fd >= 0)
			close(c->slots[i].fd);
	free(c->slots);
	free(c->threads);
	pn_storage_free(c->storage);
	pthread_cond_destroy(&c->work);
	pthread_cond_destroy(&c->done);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
