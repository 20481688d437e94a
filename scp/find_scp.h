/* The C-FIND SCP (Patient Root and Study Root, PS3.4 C.4.1). */
#ifndef PN_FIND_SCP_H
#define PN_FIND_SCP_H

#include <stdbool.h>

#include "dcm/pn_dcm.h"
#include "audit.h"
#include "store.h" /* pn_store_ctx: configuration and the worker's connection */

/* Serves a C-FIND-RQ whose command was just read: reads the identifier,
 * sends the pending responses and the final one. `allowed`: the calling AE
 * may query (else 0x0124). Returns 0 if the association can go on, or a
 * negative code (network failure). *ret_status: the final status sent. */
int pn_find_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const pn_audit_assoc *who,
                   bool allowed, unsigned short *ret_status);

#endif
