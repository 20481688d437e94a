/* The matches of a query, one response dataset at a time: the C-FIND
 * engine (pn_query, the index's SQL, the checks on the stored blobs, the
 * response builder) for every web reader, QIDO-RS and the pages alike. */
#ifndef PN_WEB_SEARCH_H
#define PN_WEB_SEARCH_H

#include <stdbool.h>

#include "find_query.h"
#include "store.h"

typedef struct pn_web_search pn_web_search;

/* An identifier to build a query in: UTF-8 (ISO_IR 192) at `level`
 * ("STUDY", "SERIES", "IMAGE"), keys put with pn_dcm_ds_put. NULL when out
 * of memory. */
pn_dcm_ds *pn_web_identifier(const char *level);

/* Study Root, relational; flags as pn_query_parse. Takes `identifier`.
 * -EINVAL with the reason in why; -ENOMEM. */
int pn_web_query(pn_dcm_ds *identifier, bool fuzzy, pn_query **ret_query, char *why, size_t whylen);

/* Starts `q` (taken over). all: every stored attribute of the levels
 * returned, not only the keys asked. order: PN_FIND_ORDER_*. offset /
 * limit (-1: none) are pushed into the SQL when the index decides every
 * match, counted here otherwise. 0; -EIO (the index: pn_db_errmsg),
 * -ENOMEM. */
int pn_web_search_start(pn_store_ctx *ctx, pn_query *q, bool all, int order, long long offset, long long limit,
                        pn_web_search **ret_search);

/* The next match: 1 and *ret_rsp (the caller frees it; no Query/Retrieve
 * Level in it) with its row (valid until the next call), 0 at the end, -EIO
 * or -ENOMEM. */
int pn_web_search_next(pn_web_search *s, pn_dcm_ds **ret_rsp, pn_find_row *ret_row);

const pn_query *pn_web_search_query(const pn_web_search *s);
void pn_web_search_free(pn_web_search *s); /* NULL is a no-op; stops the query */

#endif
