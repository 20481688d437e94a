/* The audit messages of a deletion (audit_delete.h). */
#include "audit_delete.h"

#include <errno.h>
#include <stdlib.h>

int pn_audit_delete_summary(pn_audit *audit, const char *user, const pn_delete_summary *s)
{
	if (!pn_audit_enabled(audit))
		return 0;
	pn_audit_study *whole = calloc(s->n_study + 1, sizeof(*whole));
	pn_audit_study *part = calloc(s->n_study + 1, sizeof(*part));
	size_t n_whole = 0, n_part = 0, n_classes = 0;
	for (size_t i = 0; i < s->n_study; i++)
		n_classes += s->study[i].n_classes;
	pn_audit_class_count *classes = calloc(n_classes + 1, sizeof(*classes));
	if (!whole || !part || !classes) {
		free(whole);
		free(part);
		free(classes);
		return -ENOMEM;
	}
	pn_audit_class_count *c = classes;
	for (size_t i = 0; i < s->n_study; i++) {
		const pn_delete_study *st = &s->study[i];
		pn_audit_study *a = st->whole ? &whole[n_whole++] : &part[n_part++];
		*a = (pn_audit_study){.study_uid = st->study_uid,
		                      .patient_id = s->patient_id,
		                      .patient_name = s->patient_name,
		                      .classes = c,
		                      .n_classes = st->n_classes};
		for (size_t k = 0; k < st->n_classes; k++, c++)
			*c = (pn_audit_class_count){.sop_class_uid = st->classes[k].sop_class_uid,
			                            .count = (unsigned)st->classes[k].instances};
	}
	if (n_part)
		pn_audit_deleted(audit, PN_AUDIT_DELETED_INSTANCES, user, s->patient_id, s->patient_name, part, n_part);
	if (n_whole)
		pn_audit_deleted(audit, PN_AUDIT_DELETED_STUDIES, user, s->patient_id, s->patient_name, whole, n_whole);
	if (s->patient_whole)
		pn_audit_deleted(audit, PN_AUDIT_DELETED_PATIENT, user, s->patient_id, s->patient_name, NULL, 0);
	free(whole);
	free(part);
	free(classes);
	return 0;
}
