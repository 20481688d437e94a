/* C-FIND's side of the index: which attributes have a column, and the
 * streaming query over them (docs/find.md).
 *
 * The SQL text is assembled from fixed fragments chosen by which attributes
 * are constrained; every value is a parameter. */
#ifndef PN_FIND_H
#define PN_FIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "index.h" /* pn_blob */

/* Levels, as PN_LEVEL_* in scp/dcm/pn_dcm.h. */
enum { PN_FIND_PATIENT = 0, PN_FIND_STUDY, PN_FIND_SERIES, PN_FIND_IMAGE, PN_FIND_LEVELS };

typedef enum {
	PN_FIND_SINGLE,   /* value */
	PN_FIND_LIST,     /* list[0..n_list) */
	PN_FIND_WILDCARD, /* value: an SQL LIKE pattern, escape '\\' */
	PN_FIND_RANGE,    /* lo and/or hi, normalised (docs/find.md) */
	PN_FIND_EMPTY,    /* absent or empty (Empty Value Matching) */
	PN_FIND_ANY,      /* any of alts[] (Multiple Value Matching) */
	PN_FIND_DT_RANGE, /* tag (DA) and tag2 (TM) as one: lo / hi "YYYY-MM-DD HH:MM:SS.ffffff" */
} pn_find_kind;

typedef struct pn_find_cond {
	uint32_t tag;
	pn_find_kind kind;
	const char *value;
	const char *const *list;
	size_t n_list;
	const char *lo, *hi;
	const struct pn_find_cond *alts; /* ANY: n_alts conditions on the same tag */
	size_t n_alts;
	uint32_t tag2; /* DT_RANGE: the time attribute paired with the date `tag` */
} pn_find_cond;

/* Computed attributes a query may ask for. */
enum {
	PN_FIND_C_PATIENT_STUDIES = 1 << 0,   /* (0020,1200) */
	PN_FIND_C_PATIENT_SERIES = 1 << 1,    /* (0020,1202) */
	PN_FIND_C_PATIENT_INSTANCES = 1 << 2, /* (0020,1204) */
	PN_FIND_C_STUDY_SERIES = 1 << 3,      /* (0020,1206) */
	PN_FIND_C_STUDY_INSTANCES = 1 << 4,   /* (0020,1208) */
	PN_FIND_C_SERIES_INSTANCES = 1 << 5,  /* (0020,1209) */
	PN_FIND_C_MODALITIES = 1 << 6,        /* (0008,0061) */
	PN_FIND_C_SOP_CLASSES = 1 << 7,       /* (0008,0062) */
	PN_FIND_C_AVAILABILITY = 1 << 8,      /* (0008,0056) */
	PN_FIND_C_COUNT = 9,
};

/* Column kinds, for the caller's validation of values. */
typedef enum {
	PN_FIND_COL_TEXT, /* exact / LIKE, case-sensitive */
	PN_FIND_COL_NAME, /* person name: folded when the query says so */
	PN_FIND_COL_UID,
	PN_FIND_COL_DATE,
	PN_FIND_COL_TIME,
	PN_FIND_COL_INT,
	PN_FIND_COL_FLOAT,
	PN_FIND_COL_MODALITIES, /* ModalitiesInStudy: any series of the study */
} pn_find_col_kind;

/* Whether (tag) can be matched in SQL: 1 and its level and kind, or 0. */
int pn_find_column(uint32_t tag, int *ret_level, pn_find_col_kind *ret_kind);

typedef struct {
	int level; /* PN_FIND_*: the query level */
	const pn_find_cond *conds;
	size_t n_conds;
	unsigned computed; /* PN_FIND_C_* wanted */
	bool fold_names;   /* person names case-insensitively */
	bool fuzzy_names;  /* and phonetically (with fold_names; migration 012) */
	bool paths_only;   /* IMAGE level, for retrieval: no attrs, no computed */
	int order;         /* PN_FIND_ORDER_* */
	/* Timezone query adjustment (migration 015): the date / time pairs
	 * (Study, Series, Acquisition, Content) matched in the zone of
	 * tz_query_offset minutes east of UTC, and each pair's data offset
	 * returned (pn_find_row.tz_offset). Stored values are local times in
	 * the study's offset, else in the node's zone: tz_node_name (an IANA
	 * name) or, when that is NULL or "", tz_node_offset minutes. */
	bool tz_adjust;
	int tz_query_offset;
	const char *tz_node_name;
	int tz_node_offset;
	/* rows skipped, and most rows returned (0: all), in SQL: only for a
	 * query whose every match is decided there (nothing matched on the
	 * blobs afterwards) */
	long long offset, limit;
} pn_find_query;

enum {
	PN_FIND_ORDER_NONE = 0, /* as the plan gives them (C-FIND) */
	PN_FIND_ORDER_NEWEST,   /* STUDY: study date and time, newest first, undated last */
	PN_FIND_ORDER_NUMBER,   /* SERIES: series number; IMAGE: instance number */
};

/* The date / time pairs, in the order of pn_find_row.tz_offset. */
enum { PN_FIND_TZ_STUDY, PN_FIND_TZ_SERIES, PN_FIND_TZ_ACQUISITION, PN_FIND_TZ_CONTENT, PN_FIND_TZ_PAIRS };
#define PN_FIND_TZ_UNKNOWN INT32_MIN

/* One match. Pointers stay valid until the next pn_find_next/stop. */
typedef struct {
	pn_blob attrs[PN_FIND_LEVELS];   /* levels 0..query level; len 0: none */
	int64_t counts[PN_FIND_C_COUNT]; /* by bit index of PN_FIND_C_*; -1: not asked */
	const char *modalities;          /* "CT\\MR" or NULL */
	const char *sop_classes;
	/* InstanceAvailability: "ONLINE", or "OFFLINE" when a file of the
	 * entity was found missing (pacsnodectl verify --repair); NULL when
	 * not asked */
	const char *availability;
	/* IMAGE level: where the instance is, for retrieval */
	const char *sop_uid, *sop_class_uid, *transfer_syntax_uid, *path;
	/* IMAGE level: whose instance it is ("" when the patient has no name) */
	const char *study_uid, *patient_id, *patient_name;
	/* tz_adjust: minutes east of UTC of each pair's stored values (of the
	 * levels at or above the query's), else PN_FIND_TZ_UNKNOWN */
	int32_t tz_offset[PN_FIND_TZ_PAIRS];
} pn_find_row;

/* Sends the query (re-connecting once if the connection was lost).
 * Returns 0, -EINVAL (too many conditions), -ECONNREFUSED or -EIO. */
int pn_find_start(pn_db *db, const pn_find_query *q);
/* 1: *row holds the next match; 0: no more; <0: -EIO (the query failed). */
/* Whether pn_find_next would return at once: the next row (or the end)
 * is already here, without waiting for the server. */
bool pn_find_row_ready(pn_db *db);
int pn_find_next(pn_db *db, pn_find_row *row);
/* Ends the query; cancels it on the server if rows are still coming. The
 * connection is ready for the next statement afterwards. */
void pn_find_stop(pn_db *db);

#endif
