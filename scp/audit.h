/* The audit trail (DICOM PS3.15 A.5, IHE ATNA): one DICOM audit message
 * (XML, RFC 3881 lineage) per event, RFC 5424 framed (MSGID IHE+RFC-3881).
 *
 * Producers (the listener, workers) never talk to the audit repository:
 * each message is written whole into a bounded on-disk spool, which costs a
 * write and a rename, and one sender process (pn_audit_sender_main) sends
 * what is there and removes it once sent, resending after the repository
 * comes back. When the spool is full a message is dropped, counted and
 * logged (never silently).
 *
 * With [audit] target = none every call is a cheap no-op. */
#ifndef PN_AUDIT_H
#define PN_AUDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

typedef struct pn_audit pn_audit;

/* Once in the listener, before any fork: opens (creates) the spool and the
 * counters shared with every child (spooled bytes, dropped messages).
 * 0 or a negative errno (logged by the caller). target none: *ret is a
 * handle on which every call does nothing. */
int pn_audit_create(const pn_config *cfg, pn_audit **ret_audit);
void pn_audit_free(pn_audit *audit); /* NULL is a no-op */

/* For a process outside the node (pacsnodectl): the spool the node made,
 * which it must be able to write (else the negative errno, e.g. -ENOENT
 * before the node's first start with this target), its half-written files
 * left alone; messages wait there for the node's sender like its own. As
 * root, each message is given to the spool's owner. target none: a handle
 * on which every call does nothing. */
int pn_audit_attach(const pn_config *cfg, pn_audit **ret_audit);

/* Whether messages are kept at all (a target other than none): the
 * listener starts the sender process only then. False for NULL. */
bool pn_audit_enabled(const pn_audit *audit);

/* The participants of an association, as the standard names them. */
typedef struct {
	const char *calling_ae; /* the peer's AE title */
	const char *called_ae;  /* the AE title it asked for */
	const char *peer_addr;  /* numeric address of the peer */
	bool tls;               /* over TLS */
} pn_audit_assoc;

/* Application Activity (DCM 110100): start (EV 110120) or stop (110121). */
void pn_audit_app_activity(pn_audit *audit, bool start);

/* Security Alert (DCM 110113). `kind`: PN_AUDIT_ALERT_*; `detail` a short
 * reason in words (goes into the EventTypeCode's ... and a
 * ParticipantObjectDetail), e.g. "calling AE title not a configured peer". */
typedef enum {
	PN_AUDIT_ALERT_NODE_AUTH,     /* DCM 110126 Node Authentication: wrong host, certificate, TLS failure */
	PN_AUDIT_ALERT_UNAUTHORIZED,  /* DCM 110132 Use of Restricted Function: an unknown or misplaced AE, a failed web
	                                 login */
	PN_AUDIT_ALERT_CONFIGURATION, /* DCM 110132 Use of Restricted Function / config changed */
} pn_audit_alert_kind;
void pn_audit_security_alert(pn_audit *audit, pn_audit_alert_kind kind, const pn_audit_assoc *who, const char *detail);

/* One study's worth of an association's transfers: the SOP classes with
 * their instance counts. */
typedef struct {
	const char *sop_class_uid;
	unsigned count;
} pn_audit_class_count;

typedef struct {
	const char *study_uid;
	const char *patient_id;   /* may be NULL */
	const char *patient_name; /* UTF-8, may be NULL */
	const pn_audit_class_count *classes;
	size_t n_classes;
} pn_audit_study;

/* DICOM Instances Transferred (DCM 110104). received: EventActionCode C
 * (stored here); else R (sent by C-MOVE / C-GET). `failed`: EventOutcome
 * 4 (minor failure) when some instances of the study failed. For C-MOVE the
 * destination's AE title and address are given in `dest` (NULL for
 * received and C-GET: the requester itself received them). */
void pn_audit_instances_transferred(pn_audit *audit, const pn_audit_assoc *who, bool received,
                                    const pn_audit_assoc *dest, const pn_audit_study *study, bool failed);

/* Begin Transferring DICOM Instances (DCM 110102), at C-MOVE / C-GET
 * start. */
void pn_audit_begin_transfer(pn_audit *audit, const pn_audit_assoc *who, const pn_audit_assoc *dest,
                             const pn_audit_study *study);

/* Query (DCM 110112), per C-FIND: the SOP class (the information model)
 * and the identifier encoded in `transfer_syntax_uid`, base64 in
 * ParticipantObjectQuery (the syntax in a ParticipantObjectDetail
 * "TransferSyntax"). `failed`: EventOutcome 4. */
void pn_audit_query(pn_audit *audit, const pn_audit_assoc *who, const char *sop_class_uid,
                    const char *transfer_syntax_uid, const void *identifier, size_t identifier_len, bool failed);

/* A deletion (pacsnodectl delete) asked by `user` (a login name), of
 * studies of one patient: DICOM Instances Accessed (DCM 110103) with
 * EventActionCode D when part of a study went, DICOM Study Deleted
 * (110105) for whole studies, Patient Record (110110) D for the patient
 * itself (its `studies` unused). The participants: the person, and us. */
typedef enum {
	PN_AUDIT_DELETED_INSTANCES,
	PN_AUDIT_DELETED_STUDIES,
	PN_AUDIT_DELETED_PATIENT,
} pn_audit_deletion;
void pn_audit_deleted(pn_audit *audit, pn_audit_deletion kind, const char *user, const char *patient_id,
                      const char *patient_name, const pn_audit_study *studies, size_t n_studies);

/* The sender process (forked by the listener): sends spooled messages in
 * order until SIGTERM, then returns the exit status. */
int pn_audit_sender_main(pn_audit *audit);

/* Messages dropped because the spool was full, since start. */
unsigned long pn_audit_dropped(const pn_audit *audit);

#endif
