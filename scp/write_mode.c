#include "write_mode.h"

/* A file's wait is divided by at least this many KiB: below it the wait
 * is the flush, not the bytes. */
#define MIN_KIB 64.0
/* Weight of a new sample in the moving average, once there are enough:
 * before that, the plain mean (the first file's cold wait would otherwise
 * count for long). */
#define ALPHA 0.125
#define SEEN_MAX 256

void pn_write_mode_init(pn_write_mode *m, pn_write_policy policy, bool direct_ok)
{
	*m = (pn_write_mode){.policy = policy, .direct_ok = direct_ok};
}

bool pn_write_mode_preferred(const pn_write_mode *m)
{
	if (!m->direct_ok || m->policy == PN_WRITE_BUFFERED)
		return false;
	if (m->policy == PN_WRITE_DIRECT)
		return true;
	if (m->seen[0] < PN_WRITE_MODE_WARMUP || m->seen[1] < PN_WRITE_MODE_WARMUP)
		return true; /* what earlier builds always did */
	return m->cost[1] <= m->cost[0];
}

bool pn_write_mode_pick(pn_write_mode *m)
{
	if (!m->direct_ok || m->policy != PN_WRITE_AUTO)
		return pn_write_mode_preferred(m);
	m->turn++;
	/* Until each way has its samples, the one with fewer. */
	if (m->seen[0] < PN_WRITE_MODE_WARMUP || m->seen[1] < PN_WRITE_MODE_WARMUP)
		return m->seen[1] <= m->seen[0];
	bool best = pn_write_mode_preferred(m);
	return m->turn % PN_WRITE_MODE_EXPLORE_EVERY == 0 ? !best : best;
}

void pn_write_mode_note(pn_write_mode *m, bool direct, int64_t bytes, int64_t wait_ns)
{
	if (wait_ns < 0 || bytes < 0)
		return;
	double kib = (double)bytes / 1024.0;
	double cost = (double)wait_ns / (kib > MIN_KIB ? kib : MIN_KIB);
	int i = direct ? 1 : 0;
	double w = 1.0 / (m->seen[i] + 1);
	m->cost[i] += (w > ALPHA ? w : ALPHA) * (cost - m->cost[i]);
	if (m->seen[i] < SEEN_MAX)
		m->seen[i]++;
}

const char *pn_write_policy_name(pn_write_policy p)
{
	switch (p) {
	case PN_WRITE_DIRECT:
		return "direct";
	case PN_WRITE_BUFFERED:
		return "buffered";
	default:
		return "auto";
	}
}
