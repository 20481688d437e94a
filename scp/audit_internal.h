/* The audit handle, shared by the producer side (audit.c) and the sender
 * (audit_send.c). Not for other files. */
#ifndef PN_AUDIT_INTERNAL_H
#define PN_AUDIT_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "audit.h"

#define PN_AUDIT_SPOOL_SUFFIX ".msg"

/* In a MAP_SHARED mapping made before the listener forks: every process of
 * the node sees the same counters. */
typedef struct {
	atomic_uint_fast64_t bytes;   /* of the messages in the spool */
	atomic_uint_fast64_t dropped; /* since start */
	atomic_uint_fast64_t seq;     /* for unique spool names */
} pn_audit_shared;

struct pn_audit {
	const pn_config *cfg;
	bool enabled;
	int dir_fd; /* the spool folder */
	pn_audit_shared *shared;
	bool shared_owned; /* attached (pacsnodectl): shared is our own calloc'ed copy */
	bool give_away;    /* attached as root: each message to the spool's owner */
	uid_t owner_uid;
	gid_t owner_gid;
	uint64_t max_bytes;
	char hostname[256];
	time_t last_drop_log; /* per process, CLOCK_MONOTONIC: one warning per 10 s */
	bool drop_logged;
};

/* Whether a spool entry is a message to send (not a temporary file). */
bool pn_audit_spool_name(const char *name);

#endif
