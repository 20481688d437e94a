/* From a received instance to the row values the index stores: the UIDs
 * checked, text converted to UTF-8, typed values normalised, and the
 * attribute blobs of each level. */
#ifndef PN_RECORD_H
#define PN_RECORD_H

#include <stddef.h>

#include "dcm/pn_dcm.h"
#include "index.h"

typedef enum {
	PN_RECORD_OK = 0,
	PN_RECORD_BAD_UID,       /* a key UID is missing or not a valid UID */
	PN_RECORD_UID_MISMATCH,  /* SOP Instance UID differs from the command's */
	PN_RECORD_CLASS_MISMATCH /* SOP Class UID differs from the command's */
} pn_record_problem;

typedef struct pn_record pn_record;

/* Builds the record from a loaded dataset (which it converts to UTF-8 in
 * memory). On a problem with the data, returns -EBADMSG with *ret_problem
 * set and a reason in `why`; other failures are negative errno codes.
 * *ret_charset_ok is false when the text could not be converted (values
 * were then kept with unknown bytes replaced). */
int pn_record_build(pn_dcm_ds *ds, const char *cmd_sop_class, const char *cmd_sop_uid, pn_record **ret_record,
                    pn_record_problem *ret_problem, bool *ret_charset_ok, char *why, size_t whylen);
void pn_record_free(pn_record *r); /* NULL is a no-op */

/* The two UIDs a stored file's path is made of, read as pn_record_build
 * reads them, so that start-up recovery finds the path the store chose.
 * -EBADMSG if either is missing or invalid. The caller frees both. */
int pn_record_path_uids(pn_dcm_ds *ds, char **ret_series_uid, char **ret_sop_uid);

/* The row values; the caller fills the storage facts (path, size, ...). */
pn_instance_rec *pn_record_row(pn_record *r);

#endif
