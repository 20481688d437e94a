/* The C-MOVE and C-GET SCPs (Patient Root and Study Root, PS3.4 C.4.2 and
 * C.4.3). */
#ifndef PN_RETRIEVE_H
#define PN_RETRIEVE_H

#include <stdbool.h>

#include "dcm/pn_dcm.h"
#include "audit.h"
#include "store.h" /* pn_store_ctx: configuration, connection, storage */

typedef struct {
	unsigned short status; /* the final status sent */
	unsigned completed, failed, warning;
} pn_retrieve_result;

/* Serves a C-MOVE-RQ or C-GET-RQ whose command was just read: reads the
 * identifier, sends every selected instance in a C-STORE sub-operation
 * (C-MOVE: to the configured peer named as Move Destination; C-GET: on
 * this association), with pending responses and the final one.
 * `allowed`: the calling AE may move/get (else 0x0124). Returns 0 if the
 * association can go on, or a negative code (network failure). */
int pn_retrieve_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const pn_audit_assoc *who,
                       bool allowed, pn_retrieve_result *ret);

#endif
