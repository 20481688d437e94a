/* Which way a worker writes the next instance file: with O_DIRECT or
 * through the page cache.
 *
 * Neither is faster everywhere. On the development VM, O_DIRECT spared
 * about a third of the node's CPU on days when the CPUs were the limit,
 * and made each durable file 15-30 % slower on days when the disk was
 * (docs/design.md, "Storing an instance"). So in `auto` each worker
 * measures what matters to the SCU, the time from the instance's last
 * byte to its file being durable (per KiB), for both ways, and writes
 * with the faster one, trying the other one file in EXPLORE_EVERY so that
 * a change in the machine is seen. A plain value: no allocation, no I/O. */
#ifndef PN_WRITE_MODE_H
#define PN_WRITE_MODE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
	PN_WRITE_AUTO,     /* measured, per worker */
	PN_WRITE_DIRECT,   /* always O_DIRECT, where the file system has it */
	PN_WRITE_BUFFERED, /* always through the page cache */
} pn_write_policy;

/* Samples of each way before either is preferred, and how often the
 * other way is tried once one is. */
#define PN_WRITE_MODE_WARMUP 4
#define PN_WRITE_MODE_EXPLORE_EVERY 16

typedef struct {
	pn_write_policy policy;
	bool direct_ok;     /* the file system takes O_DIRECT */
	double cost[2];     /* [direct]: moving average, ns per KiB */
	unsigned seen[2];   /* samples taken (counted up to a few hundred) */
	unsigned long turn; /* files picked for */
} pn_write_mode;

void pn_write_mode_init(pn_write_mode *m, pn_write_policy policy, bool direct_ok);

/* Whether the next file is written with O_DIRECT. */
bool pn_write_mode_pick(pn_write_mode *m);

/* A file of `bytes` written the `direct` way was durable `wait_ns` after
 * its last byte arrived. */
void pn_write_mode_note(pn_write_mode *m, bool direct, int64_t bytes, int64_t wait_ns);

/* The way preferred now (true: O_DIRECT), for the log. */
bool pn_write_mode_preferred(const pn_write_mode *m);

const char *pn_write_policy_name(pn_write_policy p);

#endif
