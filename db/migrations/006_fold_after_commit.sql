-- 006: the fold leaves the storing transaction. Under 005 a deferred
-- trigger folded the shard rows into the patient, study and series rows
-- at COMMIT, so the parent rows stayed locked through the commit's WAL
-- flush: associations storing into one series committed one after the
-- other, never together (commit 1.5 ms instead of 0.8 on 4 associations,
-- a third of the store rate; docs/design.md).
--
-- Now the storing transaction commits the instance and its shard rows
-- (the deltas, durable together), and the worker then calls
-- pn_fold_counts(pg_backend_pid()) in a transaction of its own, committed
-- without waiting for the flush: the parent rows are locked for a few
-- statements only. Losing that commit in a crash loses the fold and the
-- deletion of the shard rows together, so the deltas are still there;
-- pn_fold_orphans() folds the rows of backends that are gone (at start-up
-- and after a reconnection).
--
-- Deadlocks: the folds are the only code that locks parent rows for
-- update, and each locks them in one order: patients, then studies, then
-- series, each by pk.

DROP TRIGGER patient_count_fold ON patient_count;
DROP FUNCTION pn_fold_counts();

-- Instance deltas are kept per series only (one upsert per stored
-- instance instead of three); the fold adds them to the series' study and
-- patient. The other shard rows now carry structural changes only
-- (series and studies added, removed or re-parented, modalities), and
-- each such change writes a patient_count row.
ALTER TABLE study_count DROP COLUMN n_instances;
ALTER TABLE patient_count DROP COLUMN n_instances;

CREATE OR REPLACE FUNCTION pn_count_instances(p_series bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO series_count AS c (series_fk, shard, n_instances)
	SELECT d.series_fk, pg_backend_pid(), sum(d.k) FROM unnest(p_series, p_n) AS d (series_fk, k)
	 GROUP BY d.series_fk
	ON CONFLICT (series_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances;
END $$;

CREATE OR REPLACE FUNCTION pn_count_series(p_study bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	WITH d AS (SELECT * FROM unnest(p_study, p_n) AS d (study_fk, k)),
	a AS (
		INSERT INTO study_count AS c (study_fk, shard, n_series, series_changed)
		SELECT d.study_fk, pg_backend_pid(), sum(d.k), true FROM d GROUP BY d.study_fk
		ON CONFLICT (study_fk, shard) DO UPDATE
			SET n_series = c.n_series + excluded.n_series, series_changed = true)
	INSERT INTO patient_count AS c (patient_fk, shard, n_studies, n_series)
	SELECT t.patient_fk, pg_backend_pid(), 0, sum(d.k)
	  FROM d JOIN study t ON t.pk = d.study_fk GROUP BY t.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_series = c.n_series + excluded.n_series;
END $$;

CREATE OR REPLACE FUNCTION pn_count_studies(p_patient bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO patient_count AS c (patient_fk, shard, n_studies, n_series)
	SELECT d.patient_fk, pg_backend_pid(), sum(d.k), 0
	  FROM unnest(p_patient, p_n) AS d (patient_fk, k) GROUP BY d.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_studies = c.n_studies + excluded.n_studies;
END $$;

-- Folds the shard rows of one backend. The rows are claimed by deleting
-- them, so two folds of one shard never add the same delta twice.
-- pacsnode.folding tells the count triggers that these UPDATEs change
-- counts only. Parent rows are locked in one order: by patient, then
-- study, then series (structural changes, rare, first lock all their
-- patients, then their studies, in pk order).
CREATE FUNCTION pn_fold_counts(p_shard integer) RETURNS void
	LANGUAGE plpgsql SET pacsnode.folding = 'on' AS $$
DECLARE
	r record;
BEGIN
	IF EXISTS (SELECT 1 FROM patient_count WHERE shard = p_shard) THEN
		FOR r IN WITH d AS (DELETE FROM patient_count WHERE shard = p_shard RETURNING *)
		         SELECT * FROM d ORDER BY patient_fk LOOP
			CONTINUE WHEN r.n_studies = 0 AND r.n_series = 0;
			UPDATE patient SET n_studies = n_studies + r.n_studies, n_series = n_series + r.n_series
			 WHERE pk = r.patient_fk;
		END LOOP;
		FOR r IN WITH d AS (DELETE FROM study_count WHERE shard = p_shard RETURNING *)
		         SELECT * FROM d ORDER BY study_fk LOOP
			IF r.series_changed THEN
				-- Locked first, then read in a statement of its own:
				-- its snapshot then holds the series of every fold of
				-- this study that committed before we got the lock.
				PERFORM 1 FROM study WHERE pk = r.study_fk FOR NO KEY UPDATE;
				UPDATE study
				   SET n_series = n_series + r.n_series,
				       modalities = (SELECT string_agg(DISTINCT x.modality, '\' ORDER BY x.modality)
				                       FROM series x WHERE x.study_fk = r.study_fk)
				 WHERE pk = r.study_fk;
			ELSIF r.n_series <> 0 THEN
				UPDATE study SET n_series = n_series + r.n_series WHERE pk = r.study_fk;
			END IF;
		END LOOP;
	END IF;

	FOR r IN WITH d AS (DELETE FROM series_count WHERE shard = p_shard RETURNING series_fk, n_instances)
	         SELECT t.patient_fk, s.study_fk, d.series_fk, sum(d.n_instances) AS n
	           FROM d JOIN series s ON s.pk = d.series_fk JOIN study t ON t.pk = s.study_fk
	          GROUP BY t.patient_fk, s.study_fk, d.series_fk
	          ORDER BY t.patient_fk, s.study_fk, d.series_fk LOOP
		CONTINUE WHEN r.n = 0;
		UPDATE patient SET n_instances = n_instances + r.n WHERE pk = r.patient_fk;
		UPDATE study SET n_instances = n_instances + r.n WHERE pk = r.study_fk;
		UPDATE series SET n_instances = n_instances + r.n WHERE pk = r.series_fk;
	END LOOP;
END $$;

-- Folds the shard rows of backends that no longer exist (a crash, a lost
-- connection, a fold whose asynchronous commit was lost). Returns how many
-- shards it folded.
CREATE FUNCTION pn_fold_orphans() RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	s integer;
	n integer := 0;
BEGIN
	FOR s IN SELECT shard FROM patient_count UNION SELECT shard FROM study_count
	         UNION SELECT shard FROM series_count
	         EXCEPT SELECT pid FROM pg_stat_activity ORDER BY 1 LOOP
		PERFORM pn_fold_counts(s);
		n := n + 1;
	END LOOP;
	RETURN n;
END $$;

-- The fold's UPDATEs change counts only: the UPDATE triggers of series
-- and study skip them by pacsnode.folding, which the fold sets for its
-- own duration. (005's pg_trigger_depth() test inside the functions no
-- longer tells, the fold being a plain function now; it stays, harmless.)
DROP TRIGGER series_count_update ON series;
CREATE TRIGGER series_count_update AFTER UPDATE ON series REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT WHEN (current_setting('pacsnode.folding', true) IS DISTINCT FROM 'on')
	EXECUTE FUNCTION pn_count_series_trigger();
DROP TRIGGER study_count_update ON study;
CREATE TRIGGER study_count_update AFTER UPDATE ON study REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT WHEN (current_setting('pacsnode.folding', true) IS DISTINCT FROM 'on')
	EXECUTE FUNCTION pn_count_study_trigger();
