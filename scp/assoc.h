/* One association from A-ASSOCIATE-RQ to release or abort: who may talk to
 * us, which commands we serve, and the one log line that sums it up. */
#ifndef PN_ASSOC_H
#define PN_ASSOC_H

#include "audit.h"
#include "dcm/pn_dcm.h"
#include "store.h"

/* Serves the connection on `fd` (taken over). Never fails: every outcome
 * is logged here. */
void pn_assoc_serve(const pn_store_ctx *ctx, pn_dcm_net *net, int fd);

/* Reads the A-ASSOCIATE-RQ on `fd` and answers A-ASSOCIATE-RJ (transient,
 * local limit exceeded). */
void pn_assoc_reject_busy(pn_dcm_net *net, int fd, bool tls, unsigned long max_pdu, int acse_timeout);

#endif
