/* Where an instance lives under the storage root. Paths are made only from
 * values we generate: SHA-256 of the (validated) Series and SOP Instance
 * UIDs and a random generation number. A UID never appears in a path.
 *
 *   final:     ab/cd/<series: 32 hex>/<instance: 32 hex>.<8 hex>.dcm
 *   temporary: tmp/in-<8 hex>-<pid>-<n>
 *
 * ab/cd are the series hash's first two hex pairs: 65,536 folders, each
 * holding series folders, each holding one series' instances. Folders are
 * created once per series, not once per instance, and no folder holds
 * millions of entries unless a single series does.
 *
 * A temporary file is made before its instance arrives, so its name can
 * only carry the generation: crash recovery reads the UIDs from the file
 * (see storage.c). Earlier builds renamed it to the final name, flattened
 * (tmp/ab-cd-<series>-<instance>.<8 hex>.dcm), before its fsync; recovery
 * still reads those. */
#ifndef PN_STORAGE_PATH_H
#define PN_STORAGE_PATH_H

#include <stdbool.h>
#include <stdint.h>

#define PN_REL_PATH_MAX 96
/* "ab/cd/<series>": the folder of a relative path */
#define PN_REL_DIR_LEN 38

/* -EINVAL if a UID is not valid. */
int pn_storage_rel_path(const char *series_uid, const char *sop_uid, uint32_t generation, char out[PN_REL_PATH_MAX]);

/* A temporary file's name (inside tmp/): "in-<generation>-<pid>-<n>". */
void pn_storage_part_name(uint32_t generation, int pid, unsigned long n, char out[PN_REL_PATH_MAX]);

/* The generation in such a name; false for any other name. */
bool pn_storage_part_generation(const char *name, uint32_t *ret_generation);
/* The process id in such a name; false for any other name. */
bool pn_storage_part_pid(const char *name, int *ret_pid);

/* The generation in a relative path pn_storage_rel_path() made; false for
 * any other string. */
bool pn_storage_rel_generation(const char *rel, uint32_t *ret_generation);

/* The flattened final path: the temporary name of earlier builds. */
int pn_storage_tmp_name(const char *rel_path, char out[PN_REL_PATH_MAX]);

/* The inverse; -EINVAL for any name we would not have made. */
int pn_storage_rel_from_tmp(const char *tmp_name, char out[PN_REL_PATH_MAX]);

/* True if `rel` has exactly the shape pn_storage_rel_path() makes. */
bool pn_storage_rel_path_valid(const char *rel);

#endif
