/* The audit messages of what a deletion removed (docs/audit.md), for
 * pacsnodectl delete and the node's retention alike: whole studies as DICOM
 * Study Deleted, part of a study as DICOM Instances Accessed (D), the
 * patient record as Patient Record (D). `user`: who deleted (a person, or
 * the node's retention). 0, or -ENOMEM (no message sent). */
#ifndef PN_AUDIT_DELETE_H
#define PN_AUDIT_DELETE_H

#include "audit.h"
#include "delete.h"

int pn_audit_delete_summary(pn_audit *audit, const char *user, const pn_delete_summary *s);

#endif
