/* What one association transferred, by study, for the audit trail: the
 * standard's DICOM Instances Transferred message is one per study, naming
 * each SOP class with its number of instances (PS3.15 A.5.3.4). */
#ifndef PN_AUDIT_TALLY_H
#define PN_AUDIT_TALLY_H

#include <stdbool.h>
#include <stddef.h>

#include "audit.h"

typedef struct pn_audit_tally pn_audit_tally;

int pn_audit_tally_create(pn_audit_tally **ret_tally);
void pn_audit_tally_free(pn_audit_tally *tally); /* NULL is a no-op */

/* One instance of `sop_class` of the study; `ok` false: it failed. Counting
 * stops (silently) past a bound of studies and classes per association, so
 * that a hostile peer cannot grow it without limit. 0 or -ENOMEM. */
int pn_audit_tally_add(pn_audit_tally *tally, const char *study_uid, const char *patient_id, const char *patient_name,
                       const char *sop_class_uid, bool ok);

/* Whether anything was added since the last flush. */
bool pn_audit_tally_empty(const pn_audit_tally *tally);

/* Calls fn for each study (in the order first seen); the study is valid
 * during the call. */
void pn_audit_tally_each(const pn_audit_tally *tally, void (*fn)(void *ctx, const pn_audit_study *study, bool failed),
                         void *ctx);

/* Forgets everything (for the next retrieval). */
void pn_audit_tally_clear(pn_audit_tally *tally);

#endif
