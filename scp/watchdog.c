/* The systemd watchdog: the listener's pings, the workers' stamps
 * (watchdog.h). */
#include "watchdog.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <systemd/sd-daemon.h>
#include <time.h>

struct pn_watchdog {
	int64_t interval_ms;
	int64_t last_ping_ms; /* 0: none yet */
	size_t n_slots;
	/* CLOCK_MONOTONIC ms of each slot's last stamp, 0 for none; shared
	 * with every worker (MAP_SHARED before fork) */
	_Atomic int64_t *stamps;
};

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int pn_watchdog_create(size_t n_slots, pn_watchdog **ret)
{
	uint64_t usec = 0;
	/* 0: the environment stays; the workers inherit it but never ping
	 * (NotifyAccess=main would drop their pings anyway) */
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec < 8000) {
		*ret = NULL;
		return 0;
	}
	pn_watchdog *wd = calloc(1, sizeof(*wd));
	if (!wd)
		return -ENOMEM;
	wd->interval_ms = (int64_t)(usec / 1000);
	wd->n_slots = n_slots;
	void *p = mmap(NULL, n_slots * sizeof(*wd->stamps), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		free(wd);
		return -ENOMEM;
	}
	wd->stamps = p; /* zero-filled: no stamps yet */
	*ret = wd;
	return 0;
}

void pn_watchdog_free(pn_watchdog *wd)
{
	if (!wd)
		return;
	munmap((void *)wd->stamps, wd->n_slots * sizeof(*wd->stamps));
	free(wd);
}

int pn_watchdog_tick_ms(const pn_watchdog *wd, int tick_ms)
{
	/* an eighth: the ping then leaves at most 5/8 of the interval after
	 * the one before */
	if (!wd || wd->interval_ms / 8 >= tick_ms)
		return tick_ms;
	return (int)(wd->interval_ms / 8);
}

void pn_watchdog_slot_reset(pn_watchdog *wd, size_t slot)
{
	if (wd && slot < wd->n_slots)
		atomic_store(&wd->stamps[slot], 0);
}

long pn_watchdog_silent_ms(const pn_watchdog *wd, size_t slot)
{
	if (!wd || slot >= wd->n_slots)
		return 0;
	int64_t stamp = atomic_load(&wd->stamps[slot]);
	int64_t silent = now_ms() - stamp;
	return stamp != 0 && silent > wd->interval_ms / 2 ? (long)silent : 0;
}

bool pn_watchdog_ping(pn_watchdog *wd, bool healthy)
{
	if (!wd || !healthy)
		return false;
	int64_t now = now_ms();
	if (wd->last_ping_ms != 0 && now - wd->last_ping_ms < wd->interval_ms / 2)
		return false;
	sd_notify(0, "WATCHDOG=1");
	wd->last_ping_ms = now;
	return true;
}

int pn_watchdog_beat_ms(const pn_watchdog *wd)
{
	return wd ? (int)(wd->interval_ms / 4) : -1;
}

void pn_watchdog_beat(pn_watchdog *wd, size_t slot)
{
	if (wd && slot < wd->n_slots)
		atomic_store(&wd->stamps[slot], now_ms());
}
