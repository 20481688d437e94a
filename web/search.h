/* The matches of a query, one response dataset at a time: the C-FIND
 * engine (pn_query, the index's SQL, the checks on the stored blobs, the
 * response builder) for every web reader, QIDO-RS and the pages alike. */
#ifndef PN_WEB_SEARCH_H
#define PN_WEB_SEARCH_H

#include <stdbool.h>

#include "find_query.h"
#include "find_response.h"
#include "json_model.h"
#include "store.h"

typedef struct pn_web_search pn_web_search;

/* An identifier to build a query in: UTF-8 (ISO_IR 192) at `level`
 * ("STUDY", "SERIES", "IMAGE"), keys put with pn_dcm_ds_put. NULL when out
 * of memory. */
pn_dcm_ds *pn_web_identifier(const char *level);

/* Study Root, relational; flags as pn_query_parse. Takes `identifier`.
 * -EINVAL with the reason in why; -ENOMEM. */
int pn_web_query(pn_dcm_ds *identifier, bool fuzzy, pn_query **ret_query, char *why, size_t whylen);
/* The same with PN_QUERY_* flags (relational always). */
int pn_web_query_flags(pn_dcm_ds *identifier, unsigned flags, pn_query **ret_query, char *why, size_t whylen);

/* Starts `q` (taken over). all: every stored attribute of the levels
 * returned, not only the keys asked. order: PN_FIND_ORDER_*. offset /
 * limit (-1: none) are pushed into the SQL when the index decides every
 * match, counted here otherwise. 0; -EIO (the index: pn_db_errmsg),
 * -ENOMEM. */
int pn_web_search_start(pn_store_ctx *ctx, pn_query *q, bool all, int order, long long offset, long long limit,
                        pn_web_search **ret_search);

/* The next match: 1 and *ret_rsp (the caller frees it; no Query/Retrieve
 * Level in it) with its row (valid until the next call), 0 at the end, -EIO
 * or -ENOMEM. base: Retrieve URL (0008,1190) is added under it
 * ("http://host:port/dicomweb"; NULL or "": none). */
int pn_web_search_next(pn_web_search *s, const char *base, pn_dcm_ds **ret_rsp, pn_find_row *ret_row);

/* The next match appended to out as one DICOM JSON object (PS3.18 F.2),
 * the same text pn_dcm_ds_write_json gives for what pn_web_search_next
 * returns: written from the blobs (json_model.h), through dcmtk for a row
 * whose blobs it cannot read. 1, 0 at the end, -EIO, -EINVAL (dcmtk
 * could not write it), -ENOMEM. */
int pn_web_search_next_json(pn_web_search *s, const char *base, pn_json_buf *out);

/* One match, both ways, for the loop above and its tests. */
#define PN_WEB_URL_MAX 600
typedef struct {
	pn_find_value *a, *b; /* the response's attributes, by tag */
	size_t cap;
	char (*texts)[24]; /* computed values, one per key */
	size_t n_texts;
	char url[PN_WEB_URL_MAX];
} pn_web_scratch;
void pn_web_scratch_free(pn_web_scratch *sc);

/* The general way: C-FIND's response dataset, every stored attribute of
 * the levels returned when `all`, no Query/Retrieve Level, Retrieve URL
 * under base. 0, -ENOMEM. */
int pn_web_match_ds(const pn_query *q, const pn_find_row *row, pn_dcm_ds *const levels[PN_LEVELS], bool all,
                    const char *our_ae, const char *base, pn_dcm_ds **ret_rsp);

/* The same response as JSON from the blobs (NULL: level not read): 0, 1
 * when this row needs the general way (nothing appended), -ENOMEM. The
 * query's keys must be in tag order and match nothing inside sequences. */
int pn_web_match_json(pn_web_scratch *sc, const pn_query *q, const pn_find_row *row,
                      pn_level_blob *const blobs[PN_LEVELS], bool all, const char *our_ae, const char *base,
                      pn_json_buf *out);

const pn_query *pn_web_search_query(const pn_web_search *s);
void pn_web_search_free(pn_web_search *s); /* NULL is a no-op; stops the query */

#endif
