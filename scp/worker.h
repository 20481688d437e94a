/* Worker processes. A pool worker keeps its PostgreSQL connection and
 * serves one association at a time, as the listener hands them over; an
 * overflow worker serves one association and exits; a rejecter answers one
 * A-ASSOCIATE-RJ (transient) and exits. Each returns the exit status. */
#ifndef PN_WORKER_H
#define PN_WORKER_H

#include "audit.h"
#include "config.h"
#include "watchdog.h"

/* `audit`: the listener's audit handle, inherited across fork; a pool
 * worker stamps watchdog slot `slot` while it waits (watchdog.h). */
int pn_worker_pool_main(const pn_config *cfg, pn_audit *audit, int channel, pn_watchdog *wd, size_t slot);
int pn_worker_oneshot_main(const pn_config *cfg, pn_audit *audit, int fd);
int pn_worker_reject_main(const pn_config *cfg, int fd);

#endif
