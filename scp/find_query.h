/* A C-FIND identifier turned into a query: the model and level rules of
 * PS3.4 C.4.1.2.1 checked, each key classified (matched in SQL, matched
 * against the stored attribute blobs, computed, or only returned). */
#ifndef PN_FIND_QUERY_H
#define PN_FIND_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dcm/pn_dcm.h"
#include "find.h"
#include "find_match.h"

typedef enum {
	PN_KEY_RETURN,   /* returned from the blob of its level */
	PN_KEY_LEVEL,    /* QueryRetrieveLevel: echoed */
	PN_KEY_COMPUTED, /* computed by the index */
	PN_KEY_RETRIEVE_AE,
	PN_KEY_AVAILABILITY,
	PN_KEY_SKIP, /* not returned (Specific Character Set, group lengths) */
	PN_KEY_TZ,   /* Timezone Offset From UTC under Timezone query adjustment: the query's */
} pn_key_role;

typedef struct {
	uint32_t tag;
	char vr[3]; /* the dictionary's, when vr_from_dict */
	bool vr_from_dict;
	pn_key_role role;
	int level;         /* PN_LEVEL_*; -1: kept nowhere */
	unsigned computed; /* PN_FIND_C_* bit for PN_KEY_COMPUTED */
	bool returned;     /* the level is at or above the query level */
	int tz_pair;       /* PN_FIND_TZ_*: a date / time pair's, answered in the query's zone; -1 */
	/* matching against the blob (keys without a column) */
	bool post;
	pn_match match;
	/* sequences: the keys of the request's first item */
	uint32_t *item_tags;
	pn_match *item_matches;
	size_t n_item_matches;
} pn_query_key;

typedef struct {
	bool patient_root;
	int level; /* PN_LEVEL_* */
	const char *level_name;
	pn_query_key *keys;
	size_t n_keys;
	pn_find_query sql;
	bool unmatched; /* some key with a value is not matched: 0xFF01 */
	bool asked_retrieve_ae;
	unsigned need_levels; /* bit l: the blob of level l is read per row */
	char *request_charset;
	pn_dcm_ds *identifier; /* text in UTF-8 */

	/* storage behind sql.conds */
	pn_find_cond *conds;
	pn_match *cond_matches;
	size_t n_conds;
	pn_find_cond **alt_conds; /* the alternatives of ANY conditions */
	size_t n_alt_conds;
	char *dt_bounds[8]; /* DT_RANGE conditions' bounds */
	size_t n_dt_bounds;

	/* Timezone query adjustment in force: negotiated, and the identifier
	 * gives Timezone Offset From UTC (sql.tz_query_offset, as "+HHMM") */
	bool tz_adjust;
	char tz_text[8];
} pn_query;

/* The date / time pairs (Study, Series, Acquisition, Content Date / Time),
 * by PN_FIND_TZ_*. */
extern const uint32_t pn_query_dt_pairs[PN_FIND_TZ_PAIRS][2];

enum {
	PN_QUERY_FOLD_NAMES = 1 << 0, /* person names case-insensitively */
	/* Relational: no unique keys of the levels above required (PS3.4
	 * C.4.1.2.2; QIDO-RS /series and /instances across studies). */
	PN_QUERY_RELATIONAL = 1 << 1,
	/* Empty Value Matching: a key whose value is '""' matches entities
	 * where the attribute is absent or empty (negotiated). */
	PN_QUERY_EMPTY_VALUE = 1 << 2,
	/* Multiple Value Matching: '\\'-separated values of a non-UID key,
	 * any of which may match, each by its own kind (negotiated). */
	PN_QUERY_MULTI_VALUE = 1 << 3,
	/* Fuzzy semantic matching of person names: case-insensitive, and on
	 * the indexed name columns phonetic too (docs/find.md) (negotiated;
	 * QIDO-RS fuzzymatching=true). */
	PN_QUERY_FUZZY_NAMES = 1 << 4,
	/* Combined date-time matching: a date key and its time key (Study,
	 * Series, Acquisition, Content Date / Time) with ranges matched as one
	 * date-time range (negotiated). */
	PN_QUERY_COMBINED_DATETIME = 1 << 5,
	/* Timezone query adjustment (PS3.4 C.2.2.2): with Timezone Offset From
	 * UTC in the identifier, the date / time pairs are matched and
	 * answered in that zone, the offset itself not matched (negotiated;
	 * the node's zone for stored values: pn_query.sql.tz_node_*). */
	PN_QUERY_TZ_ADJUST = 1 << 6,
};

/* Takes ownership of `identifier`; flags: PN_QUERY_*. On a request that
 * breaks the rules, returns -EINVAL with *ret_status (0xA900 / 0xC000) and
 * a reason; -ENOMEM. */
int pn_query_parse(pn_dcm_ds *identifier, const char *sop_class_uid, unsigned flags, pn_query **ret_query,
                   unsigned short *ret_status, char *why, size_t whylen);
void pn_query_free(pn_query *q);

/* Whether the row, whose level blobs are loaded in levels[] (NULL where not
 * needed), passes the keys matched in C. */
bool pn_query_post_match(const pn_query *q, pn_dcm_ds *const levels[PN_LEVELS]);

#endif
