/* The systemd watchdog (WatchdogSec=, sd_watchdog_enabled(3)). The listener
 * says WATCHDOG=1 at half the interval, and only while every idle pool
 * worker has shown life within half the interval: each waits for its next
 * connection in slices of a quarter of the interval and stamps its slot, in
 * memory shared across fork, after each. A listener whose loop hangs, or an
 * idle worker stopped or stuck in the kernel, stops the pings and systemd
 * restarts the node. A worker serving a connection is not judged: a slow
 * peer may keep it waiting for up to dimse_timeout, which the association's
 * own timeouts bound. Without WATCHDOG_USEC every function is a no-op on
 * the NULL handle. */
#ifndef PN_WATCHDOG_H
#define PN_WATCHDOG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pn_watchdog pn_watchdog;

/* In the listener before any fork, one slot per child it may have. *ret is
 * NULL (and 0 returned) when systemd asked for no watchdog (or for one
 * under 8 ms); -ENOMEM. */
int pn_watchdog_create(size_t n_slots, pn_watchdog **ret);
void pn_watchdog_free(pn_watchdog *wd);

/* The listener's loop tick in ms: at most an eighth of the interval. */
int pn_watchdog_tick_ms(const pn_watchdog *wd, int tick_ms);
/* A new worker in `slot`: not judged until it first waits for work. */
void pn_watchdog_slot_reset(pn_watchdog *wd, size_t slot);
/* Milliseconds since the worker in `slot` last stamped it, when that is
 * more than half the interval; else 0 (a fresh stamp or not yet one). */
long pn_watchdog_silent_ms(const pn_watchdog *wd, size_t slot);
/* WATCHDOG=1 when half the interval has passed since the last one and
 * `healthy`; returns whether it was sent. */
bool pn_watchdog_ping(pn_watchdog *wd, bool healthy);

/* In a worker: how long to wait for work before stamping again (-1: no
 * watchdog, wait forever), and the stamp. */
int pn_watchdog_beat_ms(const pn_watchdog *wd);
void pn_watchdog_beat(pn_watchdog *wd, size_t slot);

#endif
