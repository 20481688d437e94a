/* What the web pages and WADO-RS ask of the index beyond C-FIND's
 * queries: the instance that pictures a series, and where one instance's
 * file is. Every value is a parameter. */
#ifndef PN_BROWSE_H
#define PN_BROWSE_H

#include "db.h"

/* One instance's file (relative path, as the index keeps it). */
typedef struct {
	char sop_uid[65];
	char path[512];
} pn_instance_file;

/* The middle instance of a series, by Instance Number (then SOP Instance
 * UID): the one a thumbnail shows. 1 found, 0 no such series, -EIO. */
int pn_browse_middle_instance(pn_db *db, const char *series_uid, pn_instance_file *ret);

/* The instance `sop_uid` of series `series_uid` of study `study_uid`. 1
 * found, 0 not (or not in that series and study), -EIO. */
int pn_browse_instance(pn_db *db, const char *study_uid, const char *series_uid, const char *sop_uid,
                       pn_instance_file *ret);

/* What the index holds, for pacsnodectl status. */
typedef struct {
	long long patients, studies, series, instances, bytes;
} pn_index_totals;

/* 0 or -EIO. */
int pn_browse_totals(pn_db *db, pn_index_totals *ret);

/* The stored files the index names, for pacsnodectl verify. */
typedef struct {
	const char *sop_uid, *sop_class_uid, *path, *checksum;
	long long size;
} pn_stored_file;

/* Only a study (study_uid non-NULL) or only what was received from a day
 * on (since "YYYY-MM-DD", non-NULL). count: how many; start/next/stop walk
 * them in path order, one row at a time (1 a row, valid until the next
 * call; 0 the end; -EIO). */
int pn_browse_files_count(pn_db *db, const char *study_uid, const char *since, long long *ret_n);
int pn_browse_files_start(pn_db *db, const char *study_uid, const char *since);
int pn_browse_files_next(pn_db *db, pn_stored_file *ret);
void pn_browse_files_stop(pn_db *db);

/* Whether the index names the file at `path` (relative): 1, 0, -EIO. */
int pn_browse_path_known(pn_db *db, const char *path);

/* Marks instance `sop_uid` as having no file (missing_since). 0, -EIO. */
int pn_browse_mark_missing(pn_db *db, const char *sop_uid);

#endif
