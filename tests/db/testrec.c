/* Instance records for the db/ tests. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "testrec.h"

static unsigned serial; /* makes UIDs and paths unique within the run */

const unsigned char attrs_bytes[ATTRS_LEN] = {0x08, 0x00, 0x20, 0x00, 'D', 'A', 8,   0,
                                              0x00, 0xff, 0xc3, 0xa9, '2', '0', '2', '4'};

void next_uid(char *buf, size_t len, const char *what)
{
	snprintf(buf, len, "1.2.826.0.1.3680043.10.999.%ld.%s.%u", (long)getpid(), what, ++serial);
}

void make_rec(test_rec *t, const char *patient_id, const char *issuer, const char *study, const char *series)
{
	pn_blob attrs = {attrs_bytes, sizeof attrs_bytes};

	memset(t, 0, sizeof *t);
	snprintf(t->patient_id, sizeof t->patient_id, "%s", patient_id);
	snprintf(t->issuer, sizeof t->issuer, "%s", issuer);
	if (study)
		snprintf(t->study, sizeof t->study, "%s", study);
	else
		next_uid(t->study, sizeof t->study, "st");
	if (series)
		snprintf(t->series, sizeof t->series, "%s", series);
	else
		next_uid(t->series, sizeof t->series, "se");
	next_uid(t->sop, sizeof t->sop, "in");
	snprintf(t->path, sizeof t->path, "ab/cd/%ld-%u.dcm", (long)getpid(), ++serial);

	t->rec = (pn_instance_rec){
	    .patient_id = t->patient_id,
	    .issuer = t->issuer,
	    .patient_name = "Müller^Jürgen",
	    .patient_birth_date = "1970-01-31",
	    .patient_sex = "M",
	    .patient_attrs = attrs,
	    .study_uid = t->study,
	    .study_date = "2024-02-29",
	    .study_time = "13:14:15.123456",
	    .accession_number = "ACC1",
	    .study_id = "S1",
	    .study_description = "CT Thorax",
	    .referring_physician_name = "Doe^Jane",
	    .study_attrs = attrs,
	    .series_uid = t->series,
	    .modality = "CT",
	    .series_number = "3",
	    .series_description = "axial",
	    .series_date = "2024-02-29",
	    .series_time = "13:15",
	    .body_part_examined = "CHEST",
	    .protocol_name = NULL,
	    .series_attrs = attrs,
	    .sop_uid = t->sop,
	    .sop_class_uid = "1.2.840.10008.5.1.4.1.1.2",
	    .instance_number = "7",
	    .image_type = "ORIGINAL\\PRIMARY\\AXIAL",
	    .rows = "512",
	    .columns = "512",
	    .number_of_frames = NULL,
	    .samples_per_pixel = "1",
	    .photometric_interpretation = "MONOCHROME2",
	    .slice_thickness = "1.25",
	    .spacing_between_slices = NULL,
	    .acquisition_date = "2024-02-29",
	    .acquisition_time = "13:15:01",
	    .content_date = "2024-02-29",
	    .content_time = "13:15:02.5",
	    .instance_attrs = attrs,
	    .transfer_syntax_uid = "1.2.840.10008.1.2.1",
	    .path = t->path,
	    .size = 526336,
	    .checksum = "xxh3-128:99aa06d3014798d86001c324468d497f",
	    .calling_ae = "CT_SCANNER_1",
	    .specific_character_set = "ISO_IR 192",
	};
}
