-- 005: the kept counts, and Modalities in Study, move into the rows they
-- describe, so that C-FIND reads them with the row instead of looking up
-- and summing shard rows per match. At a million instances the per-match
-- look-ups (two sums and the modalities) were three quarters of
-- PostgreSQL's time for a 2,524-study name query (docs/find.md).
--
-- Stores still add to shard rows of their own (004), now keyed by the
-- backend's PID, unique among live connections: associations storing
-- into one study never wait for each other while their files are being
-- fsync'ed. At COMMIT a deferred trigger folds the transaction's shard
-- rows into the patient, study and series rows and deletes them, so a
-- parent row is locked only from then to the end of the commit, and
-- outside a transaction in progress the shard tables are empty.
--
-- Deadlocks: the fold is the only code that locks parent rows for update,
-- and it locks them in one order in every transaction: patients, then
-- studies, then series, each by pk.

ALTER TABLE patient
	ADD COLUMN n_studies bigint NOT NULL DEFAULT 0,
	ADD COLUMN n_series bigint NOT NULL DEFAULT 0,
	ADD COLUMN n_instances bigint NOT NULL DEFAULT 0;
ALTER TABLE study
	ADD COLUMN n_series bigint NOT NULL DEFAULT 0,
	ADD COLUMN n_instances bigint NOT NULL DEFAULT 0,
	ADD COLUMN modalities text;
ALTER TABLE series
	ADD COLUMN n_instances bigint NOT NULL DEFAULT 0;

-- Set when the transaction inserted, deleted or moved series of the
-- study: its Modalities in Study are computed again at the fold.
ALTER TABLE study_count ADD COLUMN series_changed boolean NOT NULL DEFAULT false;


-- 004's functions, with the backend's own shard and series_changed.
CREATE OR REPLACE FUNCTION pn_count_instances(p_series bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	WITH d AS (SELECT * FROM unnest(p_series, p_n) AS d (series_fk, k)),
	up AS (
		SELECT s.study_fk, t.patient_fk, sum(d.k) AS k
		  FROM d JOIN series s ON s.pk = d.series_fk JOIN study t ON t.pk = s.study_fk
		 GROUP BY s.study_fk, t.patient_fk),
	a AS (
		INSERT INTO series_count AS c
		SELECT d.series_fk, pg_backend_pid(), sum(d.k) FROM d GROUP BY d.series_fk
		ON CONFLICT (series_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances),
	b AS (
		INSERT INTO study_count AS c
		SELECT up.study_fk, pg_backend_pid(), 0, sum(up.k), false FROM up GROUP BY up.study_fk
		ON CONFLICT (study_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances)
	INSERT INTO patient_count AS c
	SELECT up.patient_fk, pg_backend_pid(), 0, 0, sum(up.k) FROM up GROUP BY up.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances;
END $$;

CREATE OR REPLACE FUNCTION pn_count_series(p_study bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	WITH d AS (SELECT * FROM unnest(p_study, p_n) AS d (study_fk, k)),
	a AS (
		INSERT INTO study_count AS c
		SELECT d.study_fk, pg_backend_pid(), sum(d.k), 0, true FROM d GROUP BY d.study_fk
		ON CONFLICT (study_fk, shard) DO UPDATE
			SET n_series = c.n_series + excluded.n_series, series_changed = true)
	INSERT INTO patient_count AS c
	SELECT t.patient_fk, pg_backend_pid(), 0, sum(d.k), 0
	  FROM d JOIN study t ON t.pk = d.study_fk GROUP BY t.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_series = c.n_series + excluded.n_series;
END $$;

CREATE OR REPLACE FUNCTION pn_count_studies(p_patient bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO patient_count AS c
	SELECT d.patient_fk, pg_backend_pid(), sum(d.k), 0, 0
	  FROM unnest(p_patient, p_n) AS d (patient_fk, k) GROUP BY d.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_studies = c.n_studies + excluded.n_studies;
END $$;

-- A series whose modality changes changes its study's modalities (a zero
-- count marks the study); otherwise an UPDATE counts only rows that moved
-- to another study.
CREATE OR REPLACE FUNCTION pn_count_series_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	-- The fold's own UPDATEs (inside a trigger) change counts only.
	IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	IF TG_OP = 'INSERT' THEN
		PERFORM pn_count_series(array_agg(study_fk), array_agg(n))
		   FROM (SELECT study_fk, count(*) AS n FROM new_rows GROUP BY study_fk) x;
	ELSIF TG_OP = 'DELETE' THEN
		PERFORM pn_count_series(array_agg(study_fk), array_agg(n))
		   FROM (SELECT study_fk, -count(*) AS n FROM old_rows GROUP BY study_fk) x;
	ELSE
		PERFORM pn_count_series(array_agg(study_fk), array_agg(n))
		   FROM (SELECT study_fk, sum(n)::bigint AS n FROM (
		           SELECT o.study_fk, -1 AS n FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.study_fk <> w.study_fk
		           UNION ALL
		           SELECT w.study_fk, 1 FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.study_fk <> w.study_fk
		           UNION ALL
		           SELECT w.study_fk, 0 FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.modality IS DISTINCT FROM w.modality) m
		         GROUP BY study_fk) x;
	END IF;
	RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION pn_count_study_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	-- The fold's own UPDATEs (inside a trigger) change counts only.
	IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	IF TG_OP = 'INSERT' THEN
		PERFORM pn_count_studies(array_agg(patient_fk), array_agg(n))
		   FROM (SELECT patient_fk, count(*) AS n FROM new_rows GROUP BY patient_fk) x;
	ELSIF TG_OP = 'DELETE' THEN
		PERFORM pn_count_studies(array_agg(patient_fk), array_agg(n))
		   FROM (SELECT patient_fk, -count(*) AS n FROM old_rows GROUP BY patient_fk) x;
	ELSE
		PERFORM pn_count_studies(array_agg(patient_fk), array_agg(n))
		   FROM (SELECT patient_fk, sum(n)::bigint AS n FROM (
		           SELECT o.patient_fk, -1 AS n FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.patient_fk <> w.patient_fk
		           UNION ALL
		           SELECT w.patient_fk, 1 FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.patient_fk <> w.patient_fk) m
		         GROUP BY patient_fk) x;
	END IF;
	RETURN NULL;
END $$;

-- Folds every shard row of this backend. Every count change writes a
-- patient_count row, so a trigger on that table alone sees them all; the
-- later events of the transaction find nothing left.
CREATE FUNCTION pn_fold_counts() RETURNS trigger
	LANGUAGE plpgsql AS $$
DECLARE
	me integer := pg_backend_pid();
	r record;
BEGIN
	-- Already folded by an earlier event of this transaction (a bulk
	-- insert queues one per patient).
	PERFORM 1 FROM patient_count WHERE patient_fk = NEW.patient_fk AND shard = NEW.shard;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	FOR r IN SELECT * FROM patient_count WHERE shard = me ORDER BY patient_fk LOOP
		IF r.n_studies <> 0 OR r.n_series <> 0 OR r.n_instances <> 0 THEN
			UPDATE patient
			   SET n_studies = n_studies + r.n_studies, n_series = n_series + r.n_series,
			       n_instances = n_instances + r.n_instances
			 WHERE pk = r.patient_fk;
		END IF;
	END LOOP;
	DELETE FROM patient_count WHERE shard = me;

	FOR r IN SELECT * FROM study_count WHERE shard = me ORDER BY study_fk LOOP
		IF r.series_changed THEN
			-- Locked first, then read in a statement of its own: its
			-- snapshot then holds the series of every transaction that
			-- folded into this study before us.
			PERFORM 1 FROM study WHERE pk = r.study_fk FOR NO KEY UPDATE;
			UPDATE study
			   SET n_series = n_series + r.n_series, n_instances = n_instances + r.n_instances,
			       modalities = (SELECT string_agg(DISTINCT x.modality, '\' ORDER BY x.modality)
			                       FROM series x WHERE x.study_fk = r.study_fk)
			 WHERE pk = r.study_fk;
		ELSIF r.n_series <> 0 OR r.n_instances <> 0 THEN
			UPDATE study SET n_series = n_series + r.n_series, n_instances = n_instances + r.n_instances
			 WHERE pk = r.study_fk;
		END IF;
	END LOOP;
	DELETE FROM study_count WHERE shard = me;

	FOR r IN SELECT * FROM series_count WHERE shard = me ORDER BY series_fk LOOP
		IF r.n_instances <> 0 THEN
			UPDATE series SET n_instances = n_instances + r.n_instances WHERE pk = r.series_fk;
		END IF;
	END LOOP;
	DELETE FROM series_count WHERE shard = me;
	RETURN NULL;
END $$;

-- The fold finds a transaction's rows by shard: without these indexes it
-- read every row left dead by the commits since the last vacuum.
CREATE INDEX series_count_shard_idx ON series_count (shard);
CREATE INDEX study_count_shard_idx ON study_count (shard);
CREATE INDEX patient_count_shard_idx ON patient_count (shard);

CREATE CONSTRAINT TRIGGER patient_count_fold AFTER INSERT OR UPDATE ON patient_count
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pn_fold_counts();

-- What 004 kept so far, folded once.
UPDATE series s SET n_instances = c.n
  FROM (SELECT series_fk, sum(n_instances) AS n FROM series_count GROUP BY series_fk) c
 WHERE c.series_fk = s.pk;
UPDATE study t SET n_series = c.s, n_instances = c.i
  FROM (SELECT study_fk, sum(n_series) AS s, sum(n_instances) AS i FROM study_count GROUP BY study_fk) c
 WHERE c.study_fk = t.pk;
UPDATE study t SET modalities = m.v
  FROM (SELECT study_fk, string_agg(DISTINCT modality, '\' ORDER BY modality) AS v FROM series GROUP BY study_fk) m
 WHERE m.study_fk = t.pk;
UPDATE patient p SET n_studies = c.st, n_series = c.s, n_instances = c.i
  FROM (SELECT patient_fk, sum(n_studies) AS st, sum(n_series) AS s, sum(n_instances) AS i
          FROM patient_count GROUP BY patient_fk) c
 WHERE c.patient_fk = p.pk;
-- Deleted without a fold (it fires on INSERT and UPDATE only).
DELETE FROM series_count;
DELETE FROM study_count;
DELETE FROM patient_count;
