-- 017: a fold updates each patient and study row once, and the parent
-- tables keep room on their pages for the folds' new row versions.
--
-- Under 006 a fold updated a patient once for its structural deltas and
-- again for every series with new instances, and a study once for its
-- series and again for each of its series. Inside one transaction none of
-- those versions can be pruned, so a fold over many series (an import, a
-- reindex, a bulk load; bench/find's 1,000,000 instances in one fold) left
-- every patient row in about eleven versions: 30,000 patients on 10,632
-- pages instead of 817, studies on 26,500 instead of 5,300, and C-FIND's
-- large answer (a hash join reading every patient page) took 39 ms in
-- PostgreSQL instead of 21 (bench/find 2026-12-07, 10,035 studies).
--
-- Now the deltas are summed per patient, study and series first (over
-- every shard folded together: pn_fold_orphans folds all the ended
-- connections' shards in one pass, a bulk load's three COPYs were three
-- folds in one transaction, three versions of each patient) and the
-- rows are visited in one order, by patient, then each of its studies,
-- then each of that study's series (all by pk): every fold takes its locks
-- in that order, so two folds never deadlock (006's three passes could:
-- patients, studies, then patients again for the instance deltas).
--
-- fillfactor: a fold's new version of a row fits on the row's own page
-- (a HOT update: no new index entries, pruned on the page) when the page
-- has room. Under 100 the first update of a full page moved the row and
-- added an entry to each of the patient's eight indexes, on every store's
-- fold. Applies to pages written from now on; existing tables keep their
-- pages until rewritten (VACUUM FULL, or pacsnodectl reindex).
ALTER TABLE patient SET (fillfactor = 80);
ALTER TABLE study SET (fillfactor = 80);
ALTER TABLE series SET (fillfactor = 90);

CREATE FUNCTION pn_fold_shards(p_shards integer[]) RETURNS void
	LANGUAGE plpgsql SET pacsnode.folding = 'on' AS $$
DECLARE
	r record;
BEGIN
	FOR r IN
		WITH pc AS (DELETE FROM patient_count WHERE shard = ANY (p_shards) RETURNING patient_fk, n_studies, n_series),
		     sc AS (DELETE FROM study_count WHERE shard = ANY (p_shards) RETURNING study_fk, n_series, series_changed),
		     ic AS (DELETE FROM series_count WHERE shard = ANY (p_shards) RETURNING series_fk, n_instances),
		     ser AS (SELECT t.patient_fk, s.study_fk, ic.series_fk, sum(ic.n_instances) AS n
		               FROM ic JOIN series s ON s.pk = ic.series_fk JOIN study t ON t.pk = s.study_fk
		              GROUP BY t.patient_fk, s.study_fk, ic.series_fk),
		     stu AS (SELECT t.patient_fk, x.study_fk, sum(x.d_series) AS d_series, bool_or(x.changed) AS changed,
		                    sum(x.d_instances) AS d_instances
		               FROM (SELECT study_fk, n_series AS d_series, series_changed AS changed, 0 AS d_instances FROM sc
		                     UNION ALL
		                     SELECT study_fk, 0, false, n FROM ser) x
		               JOIN study t ON t.pk = x.study_fk
		              GROUP BY t.patient_fk, x.study_fk),
		     pat AS (SELECT x.patient_fk, sum(x.d_studies) AS d_studies, sum(x.d_series) AS d_series,
		                    sum(x.d_instances) AS d_instances
		               FROM (SELECT patient_fk, n_studies AS d_studies, n_series AS d_series, 0 AS d_instances FROM pc
		                     UNION ALL
		                     SELECT patient_fk, 0, 0, n FROM ser) x
		              GROUP BY x.patient_fk)
		SELECT 0 AS lvl, patient_fk, 0::bigint AS study_fk, 0::bigint AS series_fk, d_studies, d_series, d_instances,
		       false AS changed
		  FROM pat
		UNION ALL
		SELECT 1, patient_fk, study_fk, 0, 0, d_series, d_instances, changed FROM stu
		UNION ALL
		SELECT 2, patient_fk, study_fk, series_fk, 0, 0, n, false FROM ser
		ORDER BY patient_fk, study_fk, series_fk
	LOOP
		IF r.lvl = 0 THEN
			CONTINUE WHEN r.d_studies = 0 AND r.d_series = 0 AND r.d_instances = 0;
			UPDATE patient
			   SET n_studies = n_studies + r.d_studies, n_series = n_series + r.d_series,
			       n_instances = n_instances + r.d_instances
			 WHERE pk = r.patient_fk;
		ELSIF r.lvl = 1 THEN
			IF r.changed THEN
				-- Locked first, then read in a statement of its own:
				-- its snapshot then holds the series of every fold of
				-- this study that committed before we got the lock.
				PERFORM 1 FROM study WHERE pk = r.study_fk FOR NO KEY UPDATE;
				UPDATE study
				   SET n_series = n_series + r.d_series, n_instances = n_instances + r.d_instances,
				       modalities = (SELECT string_agg(DISTINCT x.modality, '\' ORDER BY x.modality)
				                       FROM series x WHERE x.study_fk = r.study_fk)
				 WHERE pk = r.study_fk;
			ELSIF r.d_series <> 0 OR r.d_instances <> 0 THEN
				UPDATE study SET n_series = n_series + r.d_series, n_instances = n_instances + r.d_instances
				 WHERE pk = r.study_fk;
			END IF;
		ELSIF r.d_instances <> 0 THEN
			UPDATE series SET n_instances = n_instances + r.d_instances WHERE pk = r.series_fk;
		END IF;
	END LOOP;
END $$;

CREATE OR REPLACE FUNCTION pn_fold_counts(p_shard integer) RETURNS void
	LANGUAGE sql AS $$ SELECT pn_fold_shards(ARRAY[p_shard]) $$;

-- Returns how many shards it folded, as under 006.
CREATE OR REPLACE FUNCTION pn_fold_orphans() RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	s integer[];
BEGIN
	SELECT array_agg(shard) INTO s
	  FROM (SELECT shard FROM patient_count UNION SELECT shard FROM study_count
	        UNION SELECT shard FROM series_count EXCEPT SELECT pid FROM pg_stat_activity) o;
	IF s IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM pn_fold_shards(s);
	RETURN cardinality(s);
END $$;
