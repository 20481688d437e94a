-- 012: fuzzy semantic matching of person names (C-FIND extended
-- negotiation byte 2; QIDO-RS fuzzymatching=true; docs/find.md): beside the
-- case folding of 003, a phonetic key of the family and the given name of
-- the alphabetic group, Double Metaphone (fuzzystrmatch) of the name with
-- its accents taken off (unaccent; both contrib modules of the server
-- package, trusted), kept as generated columns and indexed. "Smith",
-- "Smyth" and "SMITH" share SM0; "Müller" and "Mueller" MLR; "Çelik" and
-- "Celik" SLK. Names of other scripts have no key (NULL): they match as
-- folded only.
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- unaccent() is STABLE (its rules file could change); with the dictionary
-- named it gives the same answer for the life of the installation, which
-- a generated column needs. A changed unaccent.rules would need the
-- columns computed again (UPDATE ... SET patient_name = patient_name).
CREATE FUNCTION pn_phonetic(name text, part integer) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN nullif(dmetaphone(unaccent('unaccent'::regdictionary,
	                                  split_part(split_part(name, '=', 1), '^', part))), '');
COMMENT ON FUNCTION pn_phonetic(text, integer) IS 'Double Metaphone of component `part` (1 family, 2 given) of a PN''s alphabetic group; NULL when none';

ALTER TABLE patient
	ADD COLUMN patient_name_ph1 text COLLATE "C" GENERATED ALWAYS AS (pn_phonetic(patient_name, 1)) STORED,
	ADD COLUMN patient_name_ph2 text COLLATE "C" GENERATED ALWAYS AS (pn_phonetic(patient_name, 2)) STORED;
CREATE INDEX patient_name_ph_idx ON patient (patient_name_ph1, patient_name_ph2);

ALTER TABLE study
	ADD COLUMN referring_physician_name_ph1 text COLLATE "C"
		GENERATED ALWAYS AS (pn_phonetic(referring_physician_name, 1)) STORED,
	ADD COLUMN referring_physician_name_ph2 text COLLATE "C"
		GENERATED ALWAYS AS (pn_phonetic(referring_physician_name, 2)) STORED;
CREATE INDEX study_referring_physician_name_ph_idx ON study (referring_physician_name_ph1, referring_physician_name_ph2);
