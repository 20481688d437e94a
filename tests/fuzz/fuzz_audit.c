/* Hostile strings into every audit message: AE titles, addresses, patient
 * names and IDs, UIDs and alert details all come from the network. Whatever
 * they hold, the message must be well-formed XML with nothing XML 1.0 cannot
 * carry and no raw newline (the file target is one message per line). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit_msg.h"
#include "xml_check.h"

#define CHECK(x)                                                                                                       \
	do {                                                                                                           \
		if (!(x))                                                                                              \
			abort();                                                                                       \
	} while (0)

/* The input split at 0xFF bytes into up to 10 NUL-terminated fields. */
static size_t split(const uint8_t *data, size_t size, char *buf, const char *fields[10])
{
	size_t n = 0, f = 0;
	fields[f++] = buf;
	for (size_t i = 0; i < size; i++) {
		if (data[i] == 0xFF && f < 10) {
			buf[n++] = '\0';
			fields[f++] = buf + n;
		} else if (data[i] != 0) {
			buf[n++] = (char)data[i];
		}
	}
	buf[n] = '\0';
	for (size_t i = f; i < 10; i++)
		fields[i] = "";
	return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *buf = malloc(size + 1);
	const char *f[10];
	split(data, size, buf, f);
	pn_audit_assoc who = {.calling_ae = f[0], .called_ae = f[1], .peer_addr = f[2], .tls = size & 1};
	pn_audit_assoc dest = {.calling_ae = f[3], .called_ae = f[3], .peer_addr = f[4]};
	pn_audit_class_count classes[2] = {{.sop_class_uid = f[5], .count = 3}, {.sop_class_uid = f[6], .count = 1}};
	pn_audit_study study = {
	    .study_uid = f[7], .patient_id = f[8], .patient_name = f[9], .classes = classes, .n_classes = 2};
	pn_audit_source src = {.ae_title = f[1], .hostname = f[2], .pid = 42, .time_us = (int64_t)size * 7919};
	pn_audit_study two[2] = {study, study};
	two[1].study_uid = f[4];
	for (int kind = PN_AUDIT_MSG_APP_START; kind <= PN_AUDIT_MSG_DELETED_PATIENT; kind++) {
		pn_audit_event ev = {.kind = (pn_audit_msg_kind)kind,
		                     .who = &who,
		                     .dest = (size & 2) ? &dest : NULL,
		                     .study = &study,
		                     .failed = size & 4,
		                     .alert = (pn_audit_alert_kind)(size % 3),
		                     .detail = f[4],
		                     .sop_class_uid = f[5],
		                     .transfer_syntax_uid = f[6],
		                     .query = data,
		                     .query_len = size,
		                     .user = f[0],
		                     .studies = two,
		                     .n_studies = (size & 8) ? 2 : 1,
		                     .patient_id = f[8],
		                     .patient_name = f[9]};
		char *msg = NULL;
		size_t len = 0;
		CHECK(pn_audit_msg_build(&src, &ev, &msg, &len) == 0);
		CHECK(strlen(msg) == len);
		CHECK(pn_xml_check(msg, len) == NULL);
		free(msg);
	}
	free(buf);
	return 0;
}
