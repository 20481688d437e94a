/* Instance records for the db/ tests. */
#ifndef PN_TESTREC_H
#define PN_TESTREC_H

#include <stddef.h>

#include "index.h"

enum { ATTRS_LEN = 16 };
/* The attrs blob of every level: a NUL byte and non-ASCII included. */
extern const unsigned char attrs_bytes[ATTRS_LEN];

/* A UID unique within the run: 1.2.826.0.1.3680043.10.999.<pid>.<what>.<n> */
void next_uid(char *buf, size_t len, const char *what);

/* A record with every field set; the caller picks patient ID, issuer and,
 * when not NULL, study and series UIDs. SOP UID and path are new. */
typedef struct {
	pn_instance_rec rec;
	char patient_id[64], issuer[64], study[96], series[96], sop[96], path[64];
} test_rec;

void make_rec(test_rec *t, const char *patient_id, const char *issuer, const char *study, const char *series);

#endif
