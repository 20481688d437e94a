/* The shared counters (metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>

/* Bucket bounds in milliseconds: from a cached query to a large retrieve. */
static const double bounds_ms[] = {0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};
#define N_BOUNDS (sizeof(bounds_ms) / sizeof(bounds_ms[0]))

typedef struct {
	atomic_uint_fast64_t count, sum_us;
	atomic_uint_fast64_t le[N_BOUNDS]; /* not cumulative here; summed when written */
} hist;

/* The statuses a store ends with, each counted on its own; the rest under
 * "other". */
static const unsigned short statuses[] = {0x0000, 0x0111, 0x0124, 0xA700, 0xA701, 0xA900,
                                          0xB000, 0xC000, 0xC001, 0xC002, 0xC003, 0xC004};
#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))

static const unsigned http_classes[] = {200, 202, 206, 304, 400, 401, 403, 404, 405, 406, 409, 413, 415, 500, 503};
#define N_HTTP (sizeof(http_classes) / sizeof(http_classes[0]))

typedef struct {
	atomic_int_fast64_t assoc_open, http_open, workers_busy;
	atomic_uint_fast64_t assoc_total[PN_ASSOC_OUTCOMES];
	atomic_uint_fast64_t http_connections;
	atomic_uint_fast64_t instances[N_STATUSES + 1];
	atomic_uint_fast64_t bytes_stored;
	atomic_uint_fast64_t db_reconnects;
	atomic_uint_fast64_t http_responses[N_HTTP + 1];
	hist ops[PN_OPS];
	hist phases[PN_PHASES];
} shared;

static shared *g;

int pn_metrics_init(void)
{
	if (g)
		return 0;
	void *p = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	memset(p, 0, sizeof(shared)); /* atomics of zero bits are zero */
	g = p;
	return 0;
}

static void observe(hist *h, double ms)
{
	if (ms < 0)
		ms = 0;
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(ms * 1000.0), memory_order_relaxed);
	for (size_t i = 0; i < N_BOUNDS; i++) {
		if (ms <= bounds_ms[i]) {
			atomic_fetch_add_explicit(&h->le[i], 1, memory_order_relaxed);
			return;
		}
	}
}

void pn_metrics_assoc_open(void)
{
	if (g)
		atomic_fetch_add(&g->assoc_open, 1);
}

void pn_metrics_assoc_close(pn_assoc_outcome o)
{
	if (!g)
		return;
	atomic_fetch_sub(&g->assoc_open, 1);
	atomic_fetch_add(&g->assoc_total[o], 1);
}

void pn_metrics_http_open(void)
{
	if (g) {
		atomic_fetch_add(&g->http_open, 1);
		atomic_fetch_add(&g->http_connections, 1);
	}
}

void pn_metrics_http_close(void)
{
	if (g)
		atomic_fetch_sub(&g->http_open, 1);
}

void pn_metrics_worker_busy(int delta)
{
	if (g)
		atomic_fetch_add(&g->workers_busy, delta);
}

void pn_metrics_instance(unsigned short status, uint64_t bytes)
{
	if (!g)
		return;
	size_t i = 0;
	while (i < N_STATUSES && statuses[i] != status)
		i++;
	atomic_fetch_add_explicit(&g->instances[i], 1, memory_order_relaxed);
	if (status == 0)
		atomic_fetch_add_explicit(&g->bytes_stored, bytes, memory_order_relaxed);
}

void pn_metrics_phase(pn_store_phase p, double ms)
{
	if (g)
		observe(&g->phases[p], ms);
}

void pn_metrics_op_done(pn_metrics_op op, double ms)
{
	if (g)
		observe(&g->ops[op], ms);
}

void pn_metrics_db_reconnect(void)
{
	if (g)
		atomic_fetch_add(&g->db_reconnects, 1);
}

void pn_metrics_http_status(unsigned status)
{
	if (!g)
		return;
	size_t i = 0;
	while (i < N_HTTP && http_classes[i] != status)
		i++;
	atomic_fetch_add_explicit(&g->http_responses[i], 1, memory_order_relaxed);
}

typedef struct {
	char *data;
	size_t len, cap;
	bool failed;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
	if (o->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->data + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap * 2;
		char *d = realloc(o->data, cap);
		if (!d) {
			o->failed = true;
			return;
		}
		o->data = d;
		o->cap = cap;
	}
}

static void put_hist(out *o, const char *name, const char *label, const char *value, const hist *h)
{
	uint64_t cum = 0;
	for (size_t i = 0; i < N_BOUNDS; i++) {
		cum += atomic_load(&h->le[i]);
		put(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, value, bounds_ms[i] / 1000.0,
		    (unsigned long long)cum);
	}
	put(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, value,
	    (unsigned long long)atomic_load(&h->count));
	put(o, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, (double)atomic_load(&h->sum_us) / 1e6);
	put(o, "%s_count{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)atomic_load(&h->count));
}

char *pn_metrics_text(const char *storage_root, int workers, size_t *ret_len)
{
	static const char *const op_names[PN_OPS] = {"c_store", "c_find", "c_move", "c_get",
	                                             "qido",    "wado",   "stow",   "page"};
	static const char *const phase_names[PN_PHASES] = {"receive", "parse", "index", "fsync", "commit"};
	static const char *const outcome_names[PN_ASSOC_OUTCOMES] = {"released", "aborted", "rejected", "failed"};
	shared zero;
	const shared *s = g;
	if (!s) {
		memset(&zero, 0, sizeof(zero));
		s = &zero;
	}
	out o = {.cap = 16384};
	o.data = malloc(o.cap);
	if (!o.data)
		return NULL;
	o.data[0] = '\0';
	put(&o,
	    "# HELP pacsnode_associations_open DICOM associations being served.\n"
	    "# TYPE pacsnode_associations_open gauge\npacsnode_associations_open %lld\n",
	    (long long)atomic_load(&s->assoc_open));
	put(&o, "# HELP pacsnode_associations_total DICOM associations ended, by outcome.\n"
	        "# TYPE pacsnode_associations_total counter\n");
	for (int i = 0; i < PN_ASSOC_OUTCOMES; i++)
		put(&o, "pacsnode_associations_total{outcome=\"%s\"} %llu\n", outcome_names[i],
		    (unsigned long long)atomic_load(&s->assoc_total[i]));
	put(&o,
	    "# HELP pacsnode_http_connections_open HTTP connections being served.\n"
	    "# TYPE pacsnode_http_connections_open gauge\npacsnode_http_connections_open %lld\n"
	    "# HELP pacsnode_http_connections_total HTTP connections accepted.\n"
	    "# TYPE pacsnode_http_connections_total counter\npacsnode_http_connections_total %llu\n",
	    (long long)atomic_load(&s->http_open), (unsigned long long)atomic_load(&s->http_connections));
	put(&o, "# HELP pacsnode_http_responses_total HTTP responses, by status.\n"
	        "# TYPE pacsnode_http_responses_total counter\n");
	for (size_t i = 0; i <= N_HTTP; i++) {
		if (i < N_HTTP)
			put(&o, "pacsnode_http_responses_total{status=\"%u\"} %llu\n", http_classes[i],
			    (unsigned long long)atomic_load(&s->http_responses[i]));
		else
			put(&o, "pacsnode_http_responses_total{status=\"other\"} %llu\n",
			    (unsigned long long)atomic_load(&s->http_responses[i]));
	}
	put(&o, "# HELP pacsnode_instances_total Instances received (C-STORE and STOW-RS), by final status.\n"
	        "# TYPE pacsnode_instances_total counter\n");
	for (size_t i = 0; i <= N_STATUSES; i++) {
		if (i < N_STATUSES)
			put(&o, "pacsnode_instances_total{status=\"0x%04X\"} %llu\n", statuses[i],
			    (unsigned long long)atomic_load(&s->instances[i]));
		else
			put(&o, "pacsnode_instances_total{status=\"other\"} %llu\n",
			    (unsigned long long)atomic_load(&s->instances[i]));
	}
	put(&o,
	    "# HELP pacsnode_stored_bytes_total Bytes of the instances stored.\n"
	    "# TYPE pacsnode_stored_bytes_total counter\npacsnode_stored_bytes_total %llu\n",
	    (unsigned long long)atomic_load(&s->bytes_stored));
	put(&o, "# HELP pacsnode_operation_seconds Duration of each operation, from request to last answer.\n"
	        "# TYPE pacsnode_operation_seconds histogram\n");
	for (int i = 0; i < PN_OPS; i++)
		put_hist(&o, "pacsnode_operation_seconds", "op", op_names[i], &s->ops[i]);
	put(&o, "# HELP pacsnode_store_phase_seconds Duration of each phase of a store.\n"
	        "# TYPE pacsnode_store_phase_seconds histogram\n");
	for (int i = 0; i < PN_PHASES; i++)
		put_hist(&o, "pacsnode_store_phase_seconds", "phase", phase_names[i], &s->phases[i]);
	put(&o,
	    "# HELP pacsnode_database_reconnects_total Connections to PostgreSQL made again after a loss.\n"
	    "# TYPE pacsnode_database_reconnects_total counter\npacsnode_database_reconnects_total %llu\n",
	    (unsigned long long)atomic_load(&s->db_reconnects));
	long long busy = (long long)atomic_load(&s->workers_busy);
	put(&o,
	    "# HELP pacsnode_workers Pre-forked workers, by state (busy: serving a connection).\n"
	    "# TYPE pacsnode_workers gauge\npacsnode_workers{state=\"busy\"} %lld\n"
	    "pacsnode_workers{state=\"configured\"} %d\n",
	    busy, workers);
	struct statvfs v;
	if (storage_root && statvfs(storage_root, &v) == 0)
		put(&o,
		    "# HELP pacsnode_storage_free_bytes Free bytes on the storage root's file system.\n"
		    "# TYPE pacsnode_storage_free_bytes gauge\npacsnode_storage_free_bytes %llu\n",
		    (unsigned long long)v.f_bavail * (unsigned long long)v.f_frsize);
	if (o.failed) {
		free(o.data);
		return NULL;
	}
	*ret_len = o.len;
	return o.data;
}
