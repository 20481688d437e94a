/* Where an instance lives under the storage root. Paths are made only from
 * values we generate: a SHA-256 of the (validated) SOP Instance UID and a
 * random generation number, nested two levels deep (65,536 folders) so that
 * no folder holds millions of entries. A UID never appears in a path.
 *
 *   final:     ab/cd/abcd<28 more hex>.<8 hex>.dcm
 *   temporary: tmp/ab-cd-abcd<28 more hex>.<8 hex>.dcm  (same name, flat)
 *
 * The temporary name encodes the final one, which is what crash recovery
 * needs (see storage.c). */
#ifndef PN_STORAGE_PATH_H
#define PN_STORAGE_PATH_H

#include <stdbool.h>
#include <stdint.h>

#define PN_REL_PATH_MAX 64

/* -EINVAL if the UID is not valid. */
int pn_storage_rel_path(const char *sop_uid, uint32_t generation, char out[PN_REL_PATH_MAX]);

/* Temporary file name (inside tmp/) for a final relative path. */
int pn_storage_tmp_name(const char *rel_path, char out[PN_REL_PATH_MAX]);

/* The inverse; -EINVAL for any name we would not have made. */
int pn_storage_rel_from_tmp(const char *tmp_name, char out[PN_REL_PATH_MAX]);

/* True if `rel` has exactly the shape pn_storage_rel_path() makes. */
bool pn_storage_rel_path_valid(const char *rel);

#endif
