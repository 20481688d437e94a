/* Counters and duration histograms for /metrics (Prometheus text format,
 * docs/web.md): one shared memory region made by the listener before it
 * forks, so every worker counts into the same numbers without a lock
 * (C11 atomics). Every function is a no-op until pn_metrics_init. */
#ifndef PN_METRICS_H
#define PN_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Operations timed as a whole. */
typedef enum {
	PN_OP_C_STORE,
	PN_OP_C_FIND,
	PN_OP_C_MOVE,
	PN_OP_C_GET,
	PN_OP_QIDO,
	PN_OP_WADO,
	PN_OP_STOW,
	PN_OP_PAGE,
	PN_OPS
} pn_metrics_op;

/* A store's phases (store.c's timings). */
typedef enum {
	PN_PHASE_RECEIVE,
	PN_PHASE_PARSE,
	PN_PHASE_INDEX,
	PN_PHASE_SYNC,
	PN_PHASE_COMMIT,
	PN_PHASES
} pn_store_phase;

typedef enum {
	PN_ASSOC_RELEASED,
	PN_ASSOC_ABORTED,
	PN_ASSOC_REJECTED,
	PN_ASSOC_FAILED,
	PN_ASSOC_OUTCOMES
} pn_assoc_outcome;

/* In the listener, before any fork. 0 or -ENOMEM. */
int pn_metrics_init(void);

void pn_metrics_assoc_open(void);
void pn_metrics_assoc_close(pn_assoc_outcome outcome);
void pn_metrics_http_open(void);
void pn_metrics_http_close(void);
void pn_metrics_worker_busy(int delta);
/* One instance: its status (0: stored), its size when stored. */
void pn_metrics_instance(unsigned short status, uint64_t bytes);
void pn_metrics_phase(pn_store_phase phase, double ms);
void pn_metrics_op_done(pn_metrics_op op, double ms);
void pn_metrics_db_reconnect(void);
void pn_metrics_http_status(unsigned status);

/* The whole text (malloc'ed) with the storage root's free bytes; NULL
 * when out of memory. */
char *pn_metrics_text(const char *storage_root, int workers, size_t *ret_len);

#endif
