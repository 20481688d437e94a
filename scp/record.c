#include "record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attr_levels.h"
#include "charset.h"
#include "dicom_values.h"
#include "uid.h"

#define MAX_STRINGS 64

struct pn_record {
	pn_instance_rec row;
	char *strings[MAX_STRINGS]; /* everything the row points to */
	size_t n_strings;
	pn_dcm_buf levels[PN_LEVELS];
};

typedef enum { V_TEXT, V_DATE, V_TIME, V_INT, V_FLOAT, V_TZ } value_kind;

typedef struct {
	uint32_t tag;
	value_kind kind;
	size_t offset; /* of the const char * in pn_instance_rec */
} column;

#define COL(g, e, kind, field)                                                                                         \
	{                                                                                                              \
		PN_TAG(g, e), kind, offsetof(pn_instance_rec, field)                                                   \
	}

/* The typed, indexed columns (PS3.4 C.6 matching keys). */
static const column columns[] = {
    COL(0x0010, 0x0010, V_TEXT, patient_name),
    COL(0x0010, 0x0030, V_DATE, patient_birth_date),
    COL(0x0010, 0x0040, V_TEXT, patient_sex),
    COL(0x0008, 0x0020, V_DATE, study_date),
    COL(0x0008, 0x0030, V_TIME, study_time),
    COL(0x0008, 0x0050, V_TEXT, accession_number),
    COL(0x0020, 0x0010, V_TEXT, study_id),
    COL(0x0008, 0x1030, V_TEXT, study_description),
    COL(0x0008, 0x0090, V_TEXT, referring_physician_name),
    COL(0x0008, 0x0060, V_TEXT, modality),
    COL(0x0020, 0x0011, V_INT, series_number),
    COL(0x0008, 0x103E, V_TEXT, series_description),
    COL(0x0008, 0x0021, V_DATE, series_date),
    COL(0x0008, 0x0031, V_TIME, series_time),
    COL(0x0018, 0x0015, V_TEXT, body_part_examined),
    COL(0x0018, 0x1030, V_TEXT, protocol_name),
    COL(0x0020, 0x0013, V_INT, instance_number),
    COL(0x0008, 0x0008, V_TEXT, image_type),
    COL(0x0028, 0x0010, V_INT, rows),
    COL(0x0028, 0x0011, V_INT, columns),
    COL(0x0028, 0x0008, V_INT, number_of_frames),
    COL(0x0028, 0x0002, V_INT, samples_per_pixel),
    COL(0x0028, 0x0004, V_TEXT, photometric_interpretation),
    COL(0x0018, 0x0050, V_FLOAT, slice_thickness),
    COL(0x0018, 0x0088, V_FLOAT, spacing_between_slices),
    COL(0x0008, 0x0022, V_DATE, acquisition_date),
    COL(0x0008, 0x0032, V_TIME, acquisition_time),
    COL(0x0008, 0x0023, V_DATE, content_date),
    COL(0x0008, 0x0033, V_TIME, content_time),
    /* the zone of the study's local dates and times (migration 015) */
    COL(0x0008, 0x0201, V_TZ, timezone_offset),
};

static const char *keep(pn_record *r, char *s)
{
	if (!s || r->n_strings >= MAX_STRINGS) {
		free(s);
		return NULL;
	}
	r->strings[r->n_strings++] = s;
	return s;
}

/* Trimmed, valid-UTF-8 value; NULL if absent. -ENOMEM only on memory. */
static int get_text(pn_dcm_ds *ds, uint32_t tag, char **ret)
{
	char *v = NULL;
	int rc = pn_dcm_ds_get(ds, tag, &v);
	if (rc == -ENOENT) {
		*ret = NULL;
		return 0;
	}
	if (rc < 0)
		return rc;
	pn_trim(v);
	pn_utf8_sanitise(v);
	*ret = v;
	return 0;
}

static int normalise(value_kind kind, char *raw, char **ret)
{
	char buf[32];
	bool ok = true;
	switch (kind) {
	case V_TEXT:
		*ret = raw;
		return 0;
	case V_DATE:
		ok = pn_da_to_iso(raw, buf);
		break;
	case V_TIME:
		ok = pn_tm_to_iso(raw, buf);
		break;
	case V_INT:
		ok = pn_is_normalise(raw, buf);
		break;
	case V_FLOAT:
		ok = pn_ds_normalise(raw, buf);
		break;
	case V_TZ: {
		int minutes;
		ok = pn_tz_offset_parse(raw, &minutes);
		if (ok)
			snprintf(buf, sizeof buf, "%d", minutes);
		break;
	}
	}
	free(raw);
	*ret = ok ? strdup(buf) : NULL;
	return ok && !*ret ? -ENOMEM : 0;
}

static int text_decode(void *ctx, const char *in, size_t len, char **ret_out)
{
	return pn_charset_to_utf8(ctx, in, len, ret_out);
}

/* A UID as the index and the storage path take it: -ENOENT if missing,
 * -EINVAL (with the value) if not a valid UID. */
static int read_uid(pn_dcm_ds *ds, uint32_t tag, char **ret)
{
	char *v = NULL;
	if (pn_dcm_ds_get(ds, tag, &v) < 0 || !v)
		return -ENOENT;
	pn_trim(v);
	*ret = v;
	return pn_uid_valid(v) ? 0 : -EINVAL;
}

int pn_record_path_uids(pn_dcm_ds *ds, char **ret_series_uid, char **ret_sop_uid)
{
	char *series = NULL, *sop = NULL;
	if (read_uid(ds, PN_TAG(0x0020, 0x000E), &series) < 0 || read_uid(ds, PN_TAG(0x0008, 0x0018), &sop) < 0) {
		free(series);
		free(sop);
		return -EBADMSG;
	}
	*ret_series_uid = series;
	*ret_sop_uid = sop;
	return 0;
}

/* Reads a key UID; false (with a reason) when missing or invalid. */
static bool get_uid(pn_dcm_ds *ds, uint32_t tag, const char *name, pn_record *r, const char **ret, char *why,
                    size_t whylen)
{
	char *v = NULL;
	int rc = read_uid(ds, tag, &v);
	if (rc == -ENOENT) {
		snprintf(why, whylen, "%s is missing", name);
		return false;
	}
	if (rc < 0) {
		/* printable, bounded: the value came from the network */
		pn_utf8_sanitise(v);
		snprintf(why, whylen, "%s \"%.80s\" is not a valid UID", name, v);
		free(v);
		return false;
	}
	*ret = keep(r, v);
	return *ret != NULL;
}

int pn_record_build(pn_dcm_ds *ds, const char *cmd_sop_class, const char *cmd_sop_uid, pn_record **ret_record,
                    pn_record_problem *ret_problem, bool *ret_charset_ok, char *why, size_t whylen)
{
	pn_record *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	pn_instance_rec *row = &r->row;
	int rc = -EBADMSG;
	*ret_problem = PN_RECORD_BAD_UID;
	*ret_charset_ok = true;
	if (!get_uid(ds, PN_TAG(0x0008, 0x0018), "SOPInstanceUID", r, &row->sop_uid, why, whylen) ||
	    !get_uid(ds, PN_TAG(0x0008, 0x0016), "SOPClassUID", r, &row->sop_class_uid, why, whylen) ||
	    !get_uid(ds, PN_TAG(0x0020, 0x000D), "StudyInstanceUID", r, &row->study_uid, why, whylen) ||
	    !get_uid(ds, PN_TAG(0x0020, 0x000E), "SeriesInstanceUID", r, &row->series_uid, why, whylen) ||
	    !get_uid(ds, PN_TAG(0x0002, 0x0010), "TransferSyntaxUID", r, &row->transfer_syntax_uid, why, whylen))
		goto fail;
	if (strcmp(row->sop_uid, cmd_sop_uid) != 0) {
		*ret_problem = PN_RECORD_UID_MISMATCH;
		snprintf(why, whylen, "SOPInstanceUID %s differs from the command's Affected SOP Instance UID %s",
		         row->sop_uid, cmd_sop_uid);
		goto fail;
	}
	if (strcmp(row->sop_class_uid, cmd_sop_class) != 0) {
		*ret_problem = PN_RECORD_CLASS_MISMATCH;
		snprintf(why, whylen, "SOPClassUID %s differs from the command's Affected SOP Class UID %s",
		         row->sop_class_uid, cmd_sop_class);
		goto fail;
	}

	/* As received, before the conversion rewrites it. */
	char *charset = NULL;
	if ((rc = get_text(ds, PN_TAG(0x0008, 0x0005), &charset)) < 0)
		goto fail;
	row->specific_character_set = charset ? keep(r, charset) : NULL;
	pn_charset *cs = NULL;
	if (pn_charset_create(row->specific_character_set, &cs) < 0) {
		/* unknown term: decode as the default repertoire, and say so */
		*ret_charset_ok = false;
		if ((rc = pn_charset_create(NULL, &cs)) < 0)
			goto fail;
	}
	rc = pn_dcm_ds_convert_text(ds, text_decode, cs, NULL);
	pn_charset_free(cs);
	if (rc == -ENOMEM)
		goto fail;
	if (rc < 0)
		*ret_charset_ok = false;

	char *v;
	if ((rc = get_text(ds, PN_TAG(0x0010, 0x0020), &v)) < 0)
		goto fail;
	row->patient_id = keep(r, v ? v : strdup(""));
	if ((rc = get_text(ds, PN_TAG(0x0010, 0x0021), &v)) < 0)
		goto fail;
	row->issuer = keep(r, v ? v : strdup(""));
	rc = -ENOMEM;
	if (!row->patient_id || !row->issuer)
		goto fail;

	for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++) {
		char *raw, *value;
		if ((rc = get_text(ds, columns[i].tag, &raw)) < 0)
			goto fail;
		if (!raw || !*raw) {
			free(raw);
			continue;
		}
		if ((rc = normalise(columns[i].kind, raw, &value)) < 0)
			goto fail;
		if (value)
			*(const char **)((char *)row + columns[i].offset) = keep(r, value);
	}

	/* Binary values above 1 KiB are bulk data: the file has them. */
	if ((rc = pn_dcm_ds_encode_levels(ds, pn_attr_level, 1024, r->levels)) < 0)
		goto fail;
	row->patient_attrs = (pn_blob){r->levels[PN_LEVEL_PATIENT].data, r->levels[PN_LEVEL_PATIENT].len};
	row->study_attrs = (pn_blob){r->levels[PN_LEVEL_STUDY].data, r->levels[PN_LEVEL_STUDY].len};
	row->series_attrs = (pn_blob){r->levels[PN_LEVEL_SERIES].data, r->levels[PN_LEVEL_SERIES].len};
	row->instance_attrs = (pn_blob){r->levels[PN_LEVEL_INSTANCE].data, r->levels[PN_LEVEL_INSTANCE].len};

	*ret_problem = PN_RECORD_OK;
	*ret_record = r;
	return 0;
fail:
	pn_record_free(r);
	return rc;
}

void pn_record_free(pn_record *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_strings; i++)
		free(r->strings[i]);
	for (int i = 0; i < PN_LEVELS; i++)
		free(r->levels[i].data);
	free(r);
}

pn_instance_rec *pn_record_row(pn_record *r)
{
	return &r->row;
}
