-- 011: SOP Classes in Study (0008,0062) kept, not computed per match, and
-- what InstanceAvailability needs (docs/find.md).
--
-- The classes of each study's instances, one row a pair, kept by
-- statement triggers in the transaction that changes the instances (so
-- exact at every moment, as the counts of 004 are). A store adds its pair
-- only when it is new: the first instance of a class in a study; a second
-- store of the same new pair at the same moment waits for the first's
-- COMMIT (ON CONFLICT), every later one reads the committed row and writes
-- nothing. Deleting instances, or moving them or their series, recomputes
-- the pairs of the studies concerned. Kept beside the study rather than in
-- its row: a store never locks the study row (its counts are sharded for
-- the same reason, 004).
CREATE TABLE study_sop_class (
	study_fk      bigint NOT NULL REFERENCES study (pk) ON DELETE CASCADE,
	sop_class_uid text COLLATE "C" NOT NULL,
	PRIMARY KEY (study_fk, sop_class_uid)
);
COMMENT ON TABLE study_sop_class IS 'The SOP classes of each study''s instances (SOP Classes in Study), kept by triggers on instance and series';

INSERT INTO study_sop_class
SELECT DISTINCT se.study_fk, i.sop_class_uid FROM instance i JOIN series se ON se.pk = i.series_fk;

-- The pairs of these studies computed again from their instances.
CREATE FUNCTION pn_sop_classes_recompute(p_study bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM study_sop_class c
	 WHERE c.study_fk = ANY (p_study)
	   AND NOT EXISTS (SELECT 1 FROM instance x JOIN series y ON y.pk = x.series_fk
	                    WHERE y.study_fk = c.study_fk AND x.sop_class_uid = c.sop_class_uid);
	INSERT INTO study_sop_class
	SELECT DISTINCT y.study_fk, x.sop_class_uid FROM instance x JOIN series y ON y.pk = x.series_fk
	 WHERE y.study_fk = ANY (p_study)
	ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION pn_sop_classes_instance_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO study_sop_class
		SELECT DISTINCT se.study_fk, n.sop_class_uid FROM new_rows n JOIN series se ON se.pk = n.series_fk
		 WHERE NOT EXISTS (SELECT 1 FROM study_sop_class c
		                    WHERE c.study_fk = se.study_fk AND c.sop_class_uid = n.sop_class_uid)
		ON CONFLICT DO NOTHING;
	ELSIF TG_OP = 'DELETE' THEN
		PERFORM pn_sop_classes_recompute(array_agg(DISTINCT se.study_fk))
		   FROM old_rows o JOIN series se ON se.pk = o.series_fk;
	ELSE
		PERFORM pn_sop_classes_recompute(array_agg(DISTINCT se.study_fk))
		   FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		   JOIN series se ON se.pk IN (o.series_fk, w.series_fk)
		  WHERE o.series_fk <> w.series_fk OR o.sop_class_uid <> w.sop_class_uid;
	END IF;
	RETURN NULL;
END $$;

CREATE FUNCTION pn_sop_classes_series_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pn_sop_classes_recompute(array_agg(DISTINCT s))
	   FROM (SELECT o.study_fk, w.study_fk FROM old_rows o JOIN new_rows w ON w.pk = o.pk
	          WHERE o.study_fk <> w.study_fk) m (a, b), unnest(ARRAY[a, b]) s;
	RETURN NULL;
END $$;

CREATE TRIGGER instance_sop_classes_insert AFTER INSERT ON instance REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_sop_classes_instance_trigger();
CREATE TRIGGER instance_sop_classes_delete AFTER DELETE ON instance REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_sop_classes_instance_trigger();
CREATE TRIGGER instance_sop_classes_update AFTER UPDATE ON instance REFERENCING OLD TABLE AS old_rows
	NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pn_sop_classes_instance_trigger();
CREATE TRIGGER series_sop_classes_update AFTER UPDATE ON series REFERENCING OLD TABLE AS old_rows
	NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pn_sop_classes_series_trigger();

-- InstanceAvailability probes (db/find.c): the instances whose file
-- pacsnodectl verify --repair found missing, none in a healthy archive.
CREATE INDEX instance_missing_idx ON instance (series_fk) WHERE missing_since IS NOT NULL;
