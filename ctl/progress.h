/* Progress of a long command: on a terminal one line redrawn (done of
 * total, rate, time left), else a plain line every 10 seconds. */
#ifndef PN_CTL_PROGRESS_H
#define PN_CTL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct {
	const char *what;
	long long total, done;
	uint64_t bytes;
	bool tty;
	struct timespec t0, last;
} pn_progress;

void pn_progress_start(pn_progress *p, const char *what, long long total);
void pn_progress_step(pn_progress *p, uint64_t bytes);
/* The final line; returns the seconds it all took. */
double pn_progress_end(pn_progress *p);

#endif
