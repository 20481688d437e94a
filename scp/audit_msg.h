/* DICOM audit messages (PS3.15 A.5, the XML schema of A.5.1) in an RFC 5424
 * frame: building them is all this does, no I/O, so that hostile strings
 * (AE titles, patient names, UIDs and addresses from the network) can be
 * fuzzed into it. Every string is escaped for XML 1.0; characters XML
 * cannot carry (C0 controls, invalid UTF-8, U+FFFE/U+FFFF) become U+FFFD,
 * so a message never holds a raw newline (the file target is one message
 * per line). */
#ifndef PN_AUDIT_MSG_H
#define PN_AUDIT_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"

/* Who we are, in every message. */
typedef struct {
	const char *ae_title; /* AuditSourceID and our participant */
	const char *hostname; /* the RFC 5424 HOSTNAME and our NetworkAccessPointID */
	int pid;              /* PROCID */
	int64_t time_us;      /* event time, microseconds since the epoch (UTC) */
} pn_audit_source;

typedef enum {
	PN_AUDIT_MSG_APP_START,
	PN_AUDIT_MSG_APP_STOP,
	PN_AUDIT_MSG_ALERT,
	PN_AUDIT_MSG_RECEIVED, /* DICOM Instances Transferred, stored here */
	PN_AUDIT_MSG_SENT,     /* DICOM Instances Transferred, sent by C-MOVE / C-GET */
	PN_AUDIT_MSG_BEGIN,    /* Begin Transferring DICOM Instances */
	PN_AUDIT_MSG_QUERY,
	PN_AUDIT_MSG_DELETED_INSTANCES, /* DICOM Instances Accessed, D: some of a study */
	PN_AUDIT_MSG_DELETED_STUDIES,   /* DICOM Study Deleted: whole studies of one patient */
	PN_AUDIT_MSG_DELETED_PATIENT,   /* Patient Record, D */
} pn_audit_msg_kind;

typedef struct {
	pn_audit_msg_kind kind;
	const pn_audit_assoc *who;  /* the peer (NULL for start/stop) */
	const pn_audit_assoc *dest; /* C-MOVE's destination; NULL otherwise */
	const pn_audit_study *study;
	bool failed;
	pn_audit_alert_kind alert;
	const char *detail; /* alerts */
	const char *sop_class_uid, *transfer_syntax_uid;
	const void *query;
	size_t query_len;
	/* deletions: who asked, the studies (one patient's) and the patient */
	const char *user;
	const pn_audit_study *studies;
	size_t n_studies;
	const char *patient_id, *patient_name;
} pn_audit_event;

/* The framed message, malloc'ed (no trailing newline). 0 or -ENOMEM. */
int pn_audit_msg_build(const pn_audit_source *src, const pn_audit_event *ev, char **ret_msg, size_t *ret_len);

#endif
