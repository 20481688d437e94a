/* DIMSE statuses pacsnode answers (PS3.7 Annex C, PS3.4 B.2.3). The
 * README's conformance summary lists the same table. */
#ifndef PN_STATUS_H
#define PN_STATUS_H

#define PN_STATUS_SUCCESS 0x0000
/* Failure: Duplicate SOP Instance (duplicate_policy = reject). */
#define PN_STATUS_DUPLICATE 0x0111
/* Refused: Not authorized (peer not allowed to store). */
#define PN_STATUS_NOT_AUTHORIZED 0x0124
/* Refused: Out of Resources: the file could not be written. */
#define PN_STATUS_OUT_OF_STORAGE 0xA700
/* Refused: Out of Resources: the index could not be updated. */
#define PN_STATUS_OUT_OF_INDEX 0xA701
/* Error: Data Set does not match SOP Class. */
#define PN_STATUS_CLASS_MISMATCH 0xA900
/* Error: Cannot understand: the dataset could not be parsed. */
#define PN_STATUS_CANNOT_PARSE 0xC000
/* Error: Cannot understand: a key UID is missing or invalid. */
#define PN_STATUS_BAD_UID 0xC001
/* Error: Cannot understand: SOP Instance UID differs from the command's. */
#define PN_STATUS_UID_MISMATCH 0xC002
/* Error: Cannot understand: the series or study belongs elsewhere. */
#define PN_STATUS_HIERARCHY_CONFLICT 0xC003
/* STOW-RS to /studies/{study}: the instance is of another study (one of the
 * "cannot understand" statuses, 0xCxxx, PS3.4 B.2.3). */
#define PN_STATUS_STUDY_MISMATCH 0xC004

/* C-FIND (PS3.4 C.4.1.1.4) */
#define PN_STATUS_PENDING 0xFF00
/* Pending: some keys were not matched (not kept by the node). */
#define PN_STATUS_PENDING_UNMATCHED 0xFF01
#define PN_STATUS_CANCELLED 0xFE00
/* Refused: Out of Resources (also: more than max_matches). */
#define PN_STATUS_OUT_OF_RESOURCES 0xA700
/* Error: Identifier does not match SOP Class (level rules). */
#define PN_STATUS_IDENTIFIER_MISMATCH 0xA900
/* Error: Unable to process (a value that cannot be understood). */
#define PN_STATUS_UNABLE_TO_PROCESS 0xC000

/* C-MOVE and C-GET (PS3.4 C.4.2.1.5, C.4.3.1.4) */
/* Refused: Out of Resources: unable to calculate the number of matches. */
#define PN_STATUS_RETRIEVE_NO_MATCHES 0xA701
/* Refused: Out of Resources: unable to perform sub-operations. */
#define PN_STATUS_RETRIEVE_NO_SUBOPS 0xA702
/* Refused: Move Destination unknown. */
#define PN_STATUS_MOVE_DESTINATION_UNKNOWN 0xA801
/* Warning: sub-operations complete, one or more failures or warnings. */
#define PN_STATUS_SUBOPS_WITH_FAILURES 0xB000

/* Storage commitment: N-ACTION statuses (PS3.7 10.1.4.1.10) and the
 * Failure Reasons of a report (PS3.3 C.14.1.1). */
#define PN_STATUS_PROCESSING_FAILURE 0x0110
#define PN_STATUS_NO_SUCH_INSTANCE 0x0112
#define PN_STATUS_INVALID_ARGUMENT 0x0115
#define PN_STATUS_INVALID_OBJECT 0x0117
#define PN_STATUS_NO_SUCH_CLASS 0x0118
#define PN_STATUS_CLASS_INSTANCE_CONFLICT 0x0119
#define PN_STATUS_CLASS_NOT_SUPPORTED 0x0122
#define PN_STATUS_NO_SUCH_ACTION 0x0123
#define PN_STATUS_RESOURCE_LIMITATION 0x0213

#endif
