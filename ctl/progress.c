/* Progress lines (progress.h). */
#include "progress.h"

#include <stdio.h>
#include <unistd.h>

static double since(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

void pn_progress_start(pn_progress *p, const char *what, long long total)
{
	*p = (pn_progress){.what = what, .total = total, .tty = isatty(STDERR_FILENO)};
	clock_gettime(CLOCK_MONOTONIC, &p->t0);
	p->last = p->t0;
}

static void draw(pn_progress *p, const struct timespec *now, bool final)
{
	double s = since(&p->t0, now);
	double rate = s > 0 ? (double)p->done / s : 0, mbs = s > 0 ? (double)p->bytes / s / 1e6 : 0;
	double left = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
	int pct = p->total > 0 ? (int)(100.0 * (double)p->done / (double)p->total) : 100;
	if (p->tty) {
		int width = 30, full = p->total > 0 ? (int)((double)width * (double)p->done / (double)p->total) : width;
		char bar[32];
		for (int i = 0; i < width; i++)
			bar[i] = i < full ? '#' : '.';
		bar[width] = '\0';
		fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld, %.0f/s, %.1f MB/s, %.0f s left ", p->what, bar, pct,
		        p->done, p->total, rate, mbs, left);
		if (final)
			fputc('\n', stderr);
	} else {
		fprintf(stderr, "%s: %lld of %lld (%d%%), %.0f/s, %.1f MB/s%s\n", p->what, p->done, p->total, pct, rate,
		        mbs, final ? ", done" : "");
	}
	fflush(stderr);
}

void pn_progress_step(pn_progress *p, uint64_t bytes)
{
	p->done++;
	p->bytes += bytes;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (since(&p->last, &now) >= (p->tty ? 0.2 : 10.0)) {
		p->last = now;
		draw(p, &now, false);
	}
}

double pn_progress_end(pn_progress *p)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	draw(p, &now, true);
	return since(&p->t0, &now);
}
