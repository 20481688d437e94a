-- 003: what C-FIND needs (docs/find.md).
--
-- Person names match case-insensitively: pn_fold() is the one folding
-- both sides go through (the C twin, pn_fold_utf8, only serves keys without
-- a column). ICU lower case rather than the database locale's, so that the
-- result does not depend on how the cluster was initialised; final sigma is
-- folded to sigma, which lower case alone does not do.
--
-- Leading wildcards ("*SON") use pg_trgm's GIN indexes; prefixes ("SMI*")
-- and exact values use B-trees in the "C" collation.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE FUNCTION pn_fold(text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN replace(lower($1 COLLATE "und-x-icu"), 'ς', 'σ');
COMMENT ON FUNCTION pn_fold(text) IS 'Case folding of person names for C-FIND (ICU lower case, final sigma as sigma)';

ALTER TABLE patient
	ADD COLUMN patient_name_fold text COLLATE "C" GENERATED ALWAYS AS (pn_fold(patient_name)) STORED;
COMMENT ON COLUMN patient.patient_name_fold IS 'pn_fold(patient_name): case-insensitive matching';
CREATE INDEX patient_name_fold_idx ON patient (patient_name_fold);
CREATE INDEX patient_name_fold_trgm_idx ON patient USING gin (patient_name_fold gin_trgm_ops);

ALTER TABLE study
	ALTER COLUMN study_description TYPE text COLLATE "C",
	ADD COLUMN referring_physician_name_fold text COLLATE "C"
		GENERATED ALWAYS AS (pn_fold(referring_physician_name)) STORED;
COMMENT ON COLUMN study.referring_physician_name_fold IS 'pn_fold(referring_physician_name): case-insensitive matching';
CREATE INDEX study_referring_physician_name_fold_idx ON study (referring_physician_name_fold);
CREATE INDEX study_referring_physician_name_fold_trgm_idx ON study
	USING gin (referring_physician_name_fold gin_trgm_ops);
CREATE INDEX study_description_idx ON study (study_description);
CREATE INDEX study_description_trgm_idx ON study USING gin (study_description gin_trgm_ops);

ALTER TABLE series
	ALTER COLUMN series_description TYPE text COLLATE "C",
	ALTER COLUMN protocol_name TYPE text COLLATE "C";
CREATE INDEX series_description_trgm_idx ON series USING gin (series_description gin_trgm_ops);
