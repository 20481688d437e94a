#include "audit_tally.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Far beyond a real association (a study has a few SOP classes), small
 * enough that a peer sending instances of thousands of studies cannot make
 * us hold much. */
#define MAX_STUDIES 4096
#define MAX_CLASSES 64

typedef struct {
	char *study_uid, *patient_id, *patient_name;
	pn_audit_class_count *classes;
	size_t n_classes;
	bool failed;
} study_entry;

struct pn_audit_tally {
	study_entry *studies;
	size_t n, cap;
	size_t last; /* the study of the previous add: most adds repeat it */
};

int pn_audit_tally_create(pn_audit_tally **ret)
{
	pn_audit_tally *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	*ret = t;
	return 0;
}

static void entry_free(study_entry *e)
{
	for (size_t i = 0; i < e->n_classes; i++)
		free((char *)e->classes[i].sop_class_uid);
	free(e->classes);
	free(e->study_uid);
	free(e->patient_id);
	free(e->patient_name);
}

void pn_audit_tally_clear(pn_audit_tally *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		entry_free(&t->studies[i]);
	t->n = 0;
	t->last = 0;
}

void pn_audit_tally_free(pn_audit_tally *t)
{
	if (!t)
		return;
	pn_audit_tally_clear(t);
	free(t->studies);
	free(t);
}

static study_entry *find_study(pn_audit_tally *t, const char *uid)
{
	if (t->last < t->n && strcmp(t->studies[t->last].study_uid, uid) == 0)
		return &t->studies[t->last];
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->studies[i].study_uid, uid) == 0) {
			t->last = i;
			return &t->studies[i];
		}
	}
	return NULL;
}

static study_entry *add_study(pn_audit_tally *t, const char *uid, const char *pid, const char *name)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 4;
		study_entry *s = realloc(t->studies, cap * sizeof(*s));
		if (!s)
			return NULL;
		t->studies = s;
		t->cap = cap;
	}
	study_entry *e = &t->studies[t->n];
	memset(e, 0, sizeof(*e));
	e->study_uid = strdup(uid);
	e->patient_id = strdup(pid ? pid : "");
	e->patient_name = strdup(name ? name : "");
	if (!e->study_uid || !e->patient_id || !e->patient_name) {
		entry_free(e);
		return NULL;
	}
	t->last = t->n++;
	return e;
}

int pn_audit_tally_add(pn_audit_tally *t, const char *study_uid, const char *patient_id, const char *patient_name,
                       const char *sop_class_uid, bool ok)
{
	if (!t || !study_uid || !sop_class_uid)
		return 0;
	study_entry *e = find_study(t, study_uid);
	if (!e) {
		if (t->n >= MAX_STUDIES)
			return 0;
		e = add_study(t, study_uid, patient_id, patient_name);
		if (!e)
			return -ENOMEM;
	}
	if (!ok) {
		e->failed = true;
		return 0;
	}
	for (size_t i = 0; i < e->n_classes; i++) {
		if (strcmp(e->classes[i].sop_class_uid, sop_class_uid) == 0) {
			e->classes[i].count++;
			return 0;
		}
	}
	if (e->n_classes >= MAX_CLASSES)
		return 0;
	pn_audit_class_count *c = realloc(e->classes, (e->n_classes + 1) * sizeof(*c));
	if (!c)
		return -ENOMEM;
	e->classes = c;
	char *uid = strdup(sop_class_uid);
	if (!uid)
		return -ENOMEM;
	e->classes[e->n_classes++] = (pn_audit_class_count){.sop_class_uid = uid, .count = 1};
	return 0;
}

bool pn_audit_tally_empty(const pn_audit_tally *t)
{
	return !t || t->n == 0;
}

void pn_audit_tally_each(const pn_audit_tally *t, void (*fn)(void *ctx, const pn_audit_study *study, bool failed),
                         void *ctx)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++) {
		const study_entry *e = &t->studies[i];
		pn_audit_study s = {.study_uid = e->study_uid,
		                    .patient_id = e->patient_id,
		                    .patient_name = e->patient_name,
		                    .classes = e->classes,
		                    .n_classes = e->n_classes};
		fn(ctx, &s, e->failed);
	}
}
