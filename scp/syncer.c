#include "syncer.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "fsio.h"

struct pn_syncer {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signals both ways: work to do, work done */
	int fd;              /* to fsync; -1 when none */
	bool busy;           /* started and not yet collected by wait */
	int result;
	bool stop;
};

static void *run(void *arg)
{
	pn_syncer *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (s->fd < 0 && !s->stop)
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->fd < 0)
			break; /* stopping, nothing queued */
		int fd = s->fd;
		pthread_mutex_unlock(&s->lock);
		int rc = pn_fsio.fsync(fd) < 0 ? -errno : 0;
		pthread_mutex_lock(&s->lock);
		s->fd = -1;
		s->result = rc;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int pn_syncer_create(pn_syncer **ret_syncer)
{
	pn_syncer *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = -1;
	int rc = pthread_mutex_init(&s->lock, NULL);
	if (rc != 0) {
		free(s);
		return -rc;
	}
	rc = pthread_cond_init(&s->cond, NULL);
	if (rc == 0) {
		rc = pthread_create(&s->thread, NULL, run, s);
		if (rc != 0)
			pthread_cond_destroy(&s->cond);
	}
	if (rc != 0) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return -rc;
	}
	*ret_syncer = s;
	return 0;
}

void pn_syncer_free(pn_syncer *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int pn_syncer_start(pn_syncer *s, int fd)
{
	pthread_mutex_lock(&s->lock);
	if (s->busy) {
		pthread_mutex_unlock(&s->lock);
		return -EBUSY;
	}
	s->busy = true;
	s->fd = fd;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int pn_syncer_wait(pn_syncer *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->fd >= 0)
		pthread_cond_wait(&s->cond, &s->lock);
	int rc = s->busy ? s->result : 0;
	s->busy = false;
	pthread_mutex_unlock(&s->lock);
	return rc;
}
