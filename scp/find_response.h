/* C-FIND responses: the identifier for one matching row, built from the
 * row's stored attribute blobs (docs/find.md).
 *
 * Two ways to the same bytes. The general one builds a dataset with dcmtk
 * (any transfer syntax, sequences, text converted to the request's
 * character set). The direct one writes implicit or explicit VR little
 * endian straight from the blobs' bytes; it handles the common row (plain
 * elements, ASCII text) and says when a row needs the general way. At
 * 2,500 matches the general way was most of the node's time. */
#ifndef PN_FIND_RESPONSE_H
#define PN_FIND_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "charset.h"
#include "dcm/pn_dcm.h"
#include "find.h"
#include "find_query.h"

/* One top-level element of a blob: its tag, VR and value. */
typedef struct {
	uint32_t tag;
	char vr[2];
	uint32_t off, len; /* the value, in the blob's bytes */
} pn_blob_elem;

/* A level's blob, kept while the next rows carry the same bytes (a name
 * query returns a patient's studies one after the other): its elements,
 * and the dataset when something needs it. */
typedef struct {
	unsigned char *bytes;
	size_t len;
	bool have;
	bool indexed; /* elems valid; false: not a blob we can walk */
	pn_blob_elem *elems;
	size_t n_elems, cap_elems;
	pn_dcm_ds *ds;
	bool parsed;      /* ds tried (NULL: cannot be read) */
	signed char json; /* pn_json_check: 0 not yet, 1 passed, -1 failed */
} pn_level_blob;

/* Takes this row's blob (copied unless the same bytes are held). -ENOMEM. */
int pn_level_blob_set(pn_level_blob *lb, const pn_blob *b);
/* The dataset, parsed on first use; NULL if it cannot be read. */
pn_dcm_ds *pn_level_blob_ds(pn_level_blob *lb, int level);
void pn_level_blob_clear(pn_level_blob *lb);
/* Whether the JSON writer (json_model.h) reads this blob as dcmtk does:
 * checked once for the bytes held. */
bool pn_level_blob_json_ok(pn_level_blob *lb);

/* Walks an explicit VR little endian blob's top-level elements into
 * out[0..*n): 0, -EBADMSG (malformed, or lengths we do not follow),
 * -ENOMEM. */
int pn_blob_index(const unsigned char *data, size_t len, pn_blob_elem **elems, size_t *n, size_t *cap);

/* The general way: the response as a dataset, its text in the request's
 * character set when it fits (enc, request_charset), otherwise UTF-8. */
int pn_find_response_build(const pn_query *q, const pn_find_row *row, pn_dcm_ds *const levels[PN_LEVELS],
                           const char *our_ae, pn_charset_encoder *enc, pn_dcm_ds **ret_rsp);

/* Whether the direct way can serve this query at all: no keys matched
 * against the blobs or inside sequences. */
bool pn_find_response_direct_ok(const pn_query *q);

/* What key k holds in this row's response, without dcmtk: a value of the
 * row's blobs (pointing into them; vr the blob's) or a text (NUL-terminated,
 * vr the key's; "" for an empty key, of any VR). */
typedef struct {
	uint32_t tag;
	char vr[2];
	const unsigned char *value;
	uint32_t len;
	bool from_blob;
} pn_find_value;

enum {
	PN_FIND_VALUE_NONE = 1,    /* not part of a response (Specific Character Set...) */
	PN_FIND_VALUE_GENERAL = 2, /* its level's blob cannot be walked: the general way */
};

/* 0 and *ret_value; PN_FIND_VALUE_*. buf holds a computed value's text. */
int pn_find_response_value(const pn_query *q, const pn_query_key *k, const pn_find_row *row,
                           pn_level_blob *const levels[PN_LEVELS], const char *our_ae, char buf[24],
                           pn_find_value *ret_value);

/* The direct way: appends the response's bytes to out (grown with
 * realloc). 0; 1: this row needs the general way (non-ASCII text, a
 * sequence, a VR we do not write); -ENOMEM. */
int pn_find_response_encode(const pn_query *q, const pn_find_row *row, pn_level_blob *const levels[PN_LEVELS],
                            const char *our_ae, bool explicit_vr, unsigned char **out, size_t *len, size_t *cap);

#endif
