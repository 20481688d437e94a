/* Where an instance lives under the storage root. Paths are made only from
 * values we generate: SHA-256 of the (validated) Series and SOP Instance
 * UIDs and a random generation number. A UID never appears in a path.
 *
 *   final:     ab/cd/<series: 32 hex>/<instance: 32 hex>.<8 hex>.dcm
 *   temporary: tmp/ab-cd-<series>-<instance>.<8 hex>.dcm  (same, flat)
 *
 * ab/cd are the series hash's first two hex pairs: 65,536 folders, each
 * holding series folders, each holding one series' instances. Folders are
 * created once per series, not once per instance, and no folder holds
 * millions of entries unless a single series does.
 *
 * The temporary name encodes the final one, which is what crash recovery
 * needs (see storage.c). */
#ifndef PN_STORAGE_PATH_H
#define PN_STORAGE_PATH_H

#include <stdbool.h>
#include <stdint.h>

#define PN_REL_PATH_MAX 96
/* "ab/cd/<series>": the folder of a relative path */
#define PN_REL_DIR_LEN 38

/* -EINVAL if a UID is not valid. */
int pn_storage_rel_path(const char *series_uid, const char *sop_uid, uint32_t generation, char out[PN_REL_PATH_MAX]);

/* Temporary file name (inside tmp/) for a final relative path. */
int pn_storage_tmp_name(const char *rel_path, char out[PN_REL_PATH_MAX]);

/* The inverse; -EINVAL for any name we would not have made. */
int pn_storage_rel_from_tmp(const char *tmp_name, char out[PN_REL_PATH_MAX]);

/* True if `rel` has exactly the shape pn_storage_rel_path() makes. */
bool pn_storage_rel_path_valid(const char *rel);

#endif
