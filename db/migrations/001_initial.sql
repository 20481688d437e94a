-- 001: the patient / study / series / instance index.
--
-- Applied by pn_db_migrate() inside a transaction that also inserts the
-- schema_version row: no BEGIN/COMMIT here.
--
-- DICOM strings are matched byte for byte (PS3.4 C.2.2.2), so the columns
-- that C-FIND matches on use the "C" collation: their plain B-tree indexes
-- then serve both "=" and "LIKE 'prefix%'" whatever the database locale is.

DO $$
BEGIN
	IF current_setting('server_encoding') <> 'UTF8' THEN
		RAISE EXCEPTION 'database encoding is %, pacsnode needs UTF8',
			current_setting('server_encoding');
	END IF;
END
$$;

CREATE TABLE schema_version (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_version IS 'One row per applied migration (db/migrations/NNN_name.sql)';

-- patient ------------------------------------------------------------------

CREATE TABLE patient (
	pk                 bigserial PRIMARY KEY,
	patient_id         text COLLATE "C" NOT NULL,
	issuer             text COLLATE "C" NOT NULL DEFAULT '',
	patient_name       text COLLATE "C",
	patient_birth_date date,
	patient_sex        text COLLATE "C",
	attrs              bytea NOT NULL,
	created_at         timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT patient_id_issuer_key UNIQUE (patient_id, issuer)
);
COMMENT ON TABLE patient IS 'One row per (PatientID, IssuerOfPatientID); never updated by a C-STORE';
COMMENT ON COLUMN patient.patient_id IS '(0010,0020) PatientID, '''' when absent';
COMMENT ON COLUMN patient.issuer IS '(0010,0021) IssuerOfPatientID, '''' when absent';
COMMENT ON COLUMN patient.patient_name IS '(0010,0010) PatientName, UTF-8';
COMMENT ON COLUMN patient.patient_birth_date IS '(0010,0030) PatientBirthDate';
COMMENT ON COLUMN patient.patient_sex IS '(0010,0040) PatientSex';
COMMENT ON COLUMN patient.attrs IS 'Patient-level attributes of the first instance received, explicit VR little endian, UTF-8';
COMMENT ON COLUMN patient.created_at IS 'When the first instance of this patient was indexed';

-- (patient_id, issuer) is served by the unique constraint's index.
CREATE INDEX patient_name_idx ON patient (patient_name);
CREATE INDEX patient_birth_date_idx ON patient (patient_birth_date);

-- study --------------------------------------------------------------------

CREATE TABLE study (
	pk                       bigserial PRIMARY KEY,
	patient_fk               bigint NOT NULL REFERENCES patient (pk),
	study_uid                text COLLATE "C" NOT NULL UNIQUE,
	study_date               date,
	study_time               time,
	accession_number         text COLLATE "C",
	study_id                 text COLLATE "C",
	study_description        text,
	referring_physician_name text COLLATE "C",
	attrs                    bytea,
	created_at               timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE study IS 'One row per StudyInstanceUID; never updated by a C-STORE';
COMMENT ON COLUMN study.patient_fk IS 'The patient the study was first received for';
COMMENT ON COLUMN study.study_uid IS '(0020,000D) StudyInstanceUID';
COMMENT ON COLUMN study.study_date IS '(0008,0020) StudyDate';
COMMENT ON COLUMN study.study_time IS '(0008,0030) StudyTime';
COMMENT ON COLUMN study.accession_number IS '(0008,0050) AccessionNumber';
COMMENT ON COLUMN study.study_id IS '(0020,0010) StudyID';
COMMENT ON COLUMN study.study_description IS '(0008,1030) StudyDescription, UTF-8';
COMMENT ON COLUMN study.referring_physician_name IS '(0008,0090) ReferringPhysicianName, UTF-8';
COMMENT ON COLUMN study.attrs IS 'Study-level attributes of the first instance received, explicit VR little endian, UTF-8';
COMMENT ON COLUMN study.created_at IS 'When the first instance of this study was indexed';

CREATE INDEX study_patient_fk_idx ON study (patient_fk);
CREATE INDEX study_date_idx ON study (study_date, study_time);
CREATE INDEX study_accession_number_idx ON study (accession_number);
CREATE INDEX study_id_idx ON study (study_id);
CREATE INDEX study_referring_physician_name_idx ON study (referring_physician_name);

-- series -------------------------------------------------------------------

CREATE TABLE series (
	pk                 bigserial PRIMARY KEY,
	study_fk           bigint NOT NULL REFERENCES study (pk),
	series_uid         text COLLATE "C" NOT NULL UNIQUE,
	modality           text COLLATE "C",
	series_number      integer,
	series_description text,
	series_date        date,
	series_time        time,
	body_part_examined text COLLATE "C",
	protocol_name      text,
	attrs              bytea,
	created_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE series IS 'One row per SeriesInstanceUID; never updated by a C-STORE';
COMMENT ON COLUMN series.study_fk IS 'The study the series was first received in';
COMMENT ON COLUMN series.series_uid IS '(0020,000E) SeriesInstanceUID';
COMMENT ON COLUMN series.modality IS '(0008,0060) Modality';
COMMENT ON COLUMN series.series_number IS '(0020,0011) SeriesNumber';
COMMENT ON COLUMN series.series_description IS '(0008,103E) SeriesDescription, UTF-8';
COMMENT ON COLUMN series.series_date IS '(0008,0021) SeriesDate';
COMMENT ON COLUMN series.series_time IS '(0008,0031) SeriesTime';
COMMENT ON COLUMN series.body_part_examined IS '(0018,0015) BodyPartExamined';
COMMENT ON COLUMN series.protocol_name IS '(0018,1030) ProtocolName, UTF-8';
COMMENT ON COLUMN series.attrs IS 'Series-level attributes of the first instance received, explicit VR little endian, UTF-8';
COMMENT ON COLUMN series.created_at IS 'When the first instance of this series was indexed';

-- The foreign key leads, so one index serves the join and the ordering.
CREATE INDEX series_study_fk_idx ON series (study_fk, series_number);
CREATE INDEX series_modality_idx ON series (modality);

-- instance -----------------------------------------------------------------

CREATE TABLE instance (
	pk                         bigserial PRIMARY KEY,
	series_fk                  bigint NOT NULL REFERENCES series (pk),
	sop_uid                    text COLLATE "C" NOT NULL UNIQUE,
	sop_class_uid              text COLLATE "C" NOT NULL,
	instance_number            integer,
	image_type                 text COLLATE "C",
	rows                       integer,
	columns                    integer,
	number_of_frames           integer,
	samples_per_pixel          integer,
	photometric_interpretation text COLLATE "C",
	slice_thickness            float8,
	spacing_between_slices     float8,
	acquisition_date           date,
	acquisition_time           time,
	content_date               date,
	content_time               time,
	transfer_syntax_uid        text COLLATE "C" NOT NULL,
	path                       text COLLATE "C" NOT NULL UNIQUE,
	size                       bigint NOT NULL CHECK (size >= 0),
	checksum                   text COLLATE "C" NOT NULL CHECK (checksum ~ '^xxh3-128:[0-9a-f]{32}$'),
	specific_character_set     text COLLATE "C",
	calling_ae                 text COLLATE "C" NOT NULL,
	received_at                timestamptz NOT NULL DEFAULT now(),
	attrs                      bytea
);
COMMENT ON TABLE instance IS 'One row per SOPInstanceUID, pointing at its Part-10 file';
COMMENT ON COLUMN instance.series_fk IS 'The series of the copy currently stored';
COMMENT ON COLUMN instance.sop_uid IS '(0008,0018) SOPInstanceUID';
COMMENT ON COLUMN instance.sop_class_uid IS '(0008,0016) SOPClassUID';
COMMENT ON COLUMN instance.instance_number IS '(0020,0013) InstanceNumber';
COMMENT ON COLUMN instance.image_type IS '(0008,0008) ImageType, values separated by backslashes';
COMMENT ON COLUMN instance.rows IS '(0028,0010) Rows';
COMMENT ON COLUMN instance.columns IS '(0028,0011) Columns';
COMMENT ON COLUMN instance.number_of_frames IS '(0028,0008) NumberOfFrames';
COMMENT ON COLUMN instance.samples_per_pixel IS '(0028,0002) SamplesPerPixel';
COMMENT ON COLUMN instance.photometric_interpretation IS '(0028,0004) PhotometricInterpretation';
COMMENT ON COLUMN instance.slice_thickness IS '(0018,0050) SliceThickness, mm';
COMMENT ON COLUMN instance.spacing_between_slices IS '(0018,0088) SpacingBetweenSlices, mm';
COMMENT ON COLUMN instance.acquisition_date IS '(0008,0022) AcquisitionDate';
COMMENT ON COLUMN instance.acquisition_time IS '(0008,0032) AcquisitionTime';
COMMENT ON COLUMN instance.content_date IS '(0008,0023) ContentDate';
COMMENT ON COLUMN instance.content_time IS '(0008,0033) ContentTime';
COMMENT ON COLUMN instance.transfer_syntax_uid IS '(0002,0010) TransferSyntaxUID of the stored file';
COMMENT ON COLUMN instance.path IS 'Part-10 file, relative to the storage root';
COMMENT ON COLUMN instance.size IS 'Size of the Part-10 file in bytes';
COMMENT ON COLUMN instance.checksum IS 'checksum of the Part-10 file: "xxh3-128:" and 32 lower-case hex digits (XXH3 128-bit, canonical big-endian)';
COMMENT ON COLUMN instance.specific_character_set IS '(0008,0005) SpecificCharacterSet as received';
COMMENT ON COLUMN instance.calling_ae IS 'Calling AE Title of the association that sent the stored copy';
COMMENT ON COLUMN instance.received_at IS 'When the stored copy was indexed';
COMMENT ON COLUMN instance.attrs IS 'Instance-level non-bulk attributes, explicit VR little endian, UTF-8';

CREATE INDEX instance_series_fk_idx ON instance (series_fk, instance_number);
CREATE INDEX instance_sop_class_uid_idx ON instance (sop_class_uid);
