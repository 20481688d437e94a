-- Benchmark only: pn_index_store() as one PL/pgSQL function, to measure what
-- one round trip instead of ~9 would save (tests/db/bench_index.c). Same
-- statements and outcomes as db/index.c; the outcomes that must leave the
-- database untouched raise, so that the implicit transaction rolls back:
-- PNST1 study conflict, PNSE1 series conflict, PNDI1 ignored, PNDR1 rejected.
CREATE FUNCTION pn_bench_store(
	p_patient_id text, p_issuer text, p_patient_name text, p_birth text, p_sex text, p_pattrs bytea,
	p_study_uid text, p_study_date text, p_study_time text, p_acc text, p_sid text, p_sdesc text,
	p_ref text, p_sattrs bytea,
	p_series_uid text, p_modality text, p_snum text, p_sedesc text, p_sedate text, p_setime text,
	p_body text, p_proto text, p_seattrs bytea,
	p_sop text, p_class text, p_inum text, p_itype text, p_rows text, p_cols text, p_frames text,
	p_spp text, p_photo text, p_thick text, p_spacing text, p_adate text, p_atime text,
	p_cdate text, p_ctime text, p_ts text, p_path text, p_size text, p_sha text, p_charset text,
	p_ae text, p_iattrs bytea,
	p_policy integer)
RETURNS TABLE (outcome integer, old_path text)
LANGUAGE plpgsql AS $$
DECLARE
	v_patient bigint;
	v_study bigint;
	v_series bigint;
	v_parent bigint;
	v_pk bigint;
	v_old text;
BEGIN
	INSERT INTO patient (patient_id, issuer, patient_name, patient_birth_date, patient_sex, attrs)
	VALUES (p_patient_id, p_issuer, p_patient_name, p_birth::date, p_sex, p_pattrs)
	ON CONFLICT (patient_id, issuer) DO NOTHING RETURNING pk INTO v_patient;
	IF v_patient IS NULL THEN
		SELECT pk INTO v_patient FROM patient WHERE patient_id = p_patient_id AND issuer = p_issuer;
	END IF;

	INSERT INTO study (patient_fk, study_uid, study_date, study_time, accession_number, study_id,
			   study_description, referring_physician_name, attrs)
	VALUES (v_patient, p_study_uid, p_study_date::date, p_study_time::time, p_acc, p_sid, p_sdesc,
		p_ref, p_sattrs)
	ON CONFLICT (study_uid) DO NOTHING RETURNING pk INTO v_study;
	IF v_study IS NULL THEN
		SELECT pk, patient_fk INTO v_study, v_parent FROM study WHERE study_uid = p_study_uid;
		IF v_parent <> v_patient THEN
			RAISE EXCEPTION USING ERRCODE = 'PNST1', MESSAGE = 'study of another patient';
		END IF;
	END IF;

	INSERT INTO series (study_fk, series_uid, modality, series_number, series_description,
			    series_date, series_time, body_part_examined, protocol_name, attrs)
	VALUES (v_study, p_series_uid, p_modality, p_snum::integer, p_sedesc, p_sedate::date,
		p_setime::time, p_body, p_proto, p_seattrs)
	ON CONFLICT (series_uid) DO NOTHING RETURNING pk INTO v_series;
	IF v_series IS NULL THEN
		SELECT pk, study_fk INTO v_series, v_parent FROM series WHERE series_uid = p_series_uid;
		IF v_parent <> v_study THEN
			RAISE EXCEPTION USING ERRCODE = 'PNSE1', MESSAGE = 'series of another study';
		END IF;
	END IF;

	INSERT INTO instance (series_fk, sop_uid, sop_class_uid, instance_number, image_type, rows,
			      columns, number_of_frames, samples_per_pixel, photometric_interpretation,
			      slice_thickness, spacing_between_slices, acquisition_date,
			      acquisition_time, content_date, content_time, transfer_syntax_uid, path,
			      size, sha256, specific_character_set, calling_ae, attrs)
	VALUES (v_series, p_sop, p_class, p_inum::integer, p_itype, p_rows::integer, p_cols::integer,
		p_frames::integer, p_spp::integer, p_photo, p_thick::float8, p_spacing::float8,
		p_adate::date, p_atime::time, p_cdate::date, p_ctime::time, p_ts, p_path,
		p_size::bigint, p_sha, p_charset, p_ae, p_iattrs)
	ON CONFLICT (sop_uid) DO NOTHING RETURNING pk INTO v_pk;
	IF v_pk IS NOT NULL THEN
		RETURN QUERY SELECT 0, NULL::text;
		RETURN;
	END IF;

	SELECT pk, path INTO v_pk, v_old FROM instance WHERE sop_uid = p_sop FOR UPDATE;
	IF v_old = p_path THEN
		RETURN QUERY SELECT 0, NULL::text;
		RETURN;
	END IF;
	IF p_policy <> 1 THEN
		RAISE EXCEPTION USING ERRCODE = CASE p_policy WHEN 0 THEN 'PNDI1' ELSE 'PNDR1' END,
			MESSAGE = 'duplicate';
	END IF;
	UPDATE instance SET (series_fk, sop_class_uid, instance_number, image_type, rows, columns,
			     number_of_frames, samples_per_pixel, photometric_interpretation,
			     slice_thickness, spacing_between_slices, acquisition_date,
			     acquisition_time, content_date, content_time, transfer_syntax_uid, path,
			     size, sha256, specific_character_set, calling_ae, attrs, received_at) =
		(v_series, p_class, p_inum::integer, p_itype, p_rows::integer, p_cols::integer,
		 p_frames::integer, p_spp::integer, p_photo, p_thick::float8, p_spacing::float8,
		 p_adate::date, p_atime::time, p_cdate::date, p_ctime::time, p_ts, p_path,
		 p_size::bigint, p_sha, p_charset, p_ae, p_iattrs, now())
	WHERE pk = v_pk;
	RETURN QUERY SELECT 1, v_old;
END
$$;
