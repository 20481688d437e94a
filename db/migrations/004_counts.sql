-- 004: the counts C-FIND returns (PS3.4 C.3: Number of Patient/Study/Series
-- Related Studies/Series/Instances), kept by triggers instead of counted
-- at query time. Counting took about half of a 1,320-study answer at a
-- million instances (docs/find.md).
--
-- Exact at every moment: the triggers run in the transaction that inserts
-- the row, so a count changes when, and only when, that row is committed;
-- a rolled-back store (hierarchy conflict, failed fsync) leaves no trace.
--
-- Sharded by backend: each connection adds to rows of its own shard
-- (pg_backend_pid() % 1024), so associations storing into the same study
-- at the same moment never wait for each other's row lock (held until
-- COMMIT, which follows the file's fsync). A count is the sum of a few
-- rows.

CREATE TABLE series_count (
	series_fk   bigint NOT NULL REFERENCES series (pk) ON DELETE CASCADE,
	shard       integer NOT NULL,
	n_instances bigint NOT NULL,
	PRIMARY KEY (series_fk, shard)
);

CREATE TABLE study_count (
	study_fk    bigint NOT NULL REFERENCES study (pk) ON DELETE CASCADE,
	shard       integer NOT NULL,
	n_series    bigint NOT NULL,
	n_instances bigint NOT NULL,
	PRIMARY KEY (study_fk, shard)
);

CREATE TABLE patient_count (
	patient_fk  bigint NOT NULL REFERENCES patient (pk) ON DELETE CASCADE,
	shard       integer NOT NULL,
	n_studies   bigint NOT NULL,
	n_series    bigint NOT NULL,
	n_instances bigint NOT NULL,
	PRIMARY KEY (patient_fk, shard)
);

-- PL/pgSQL rather than SQL functions: a session plans their statements
-- once (an SQL function called from a trigger was planned at every call,
-- 0.3 ms per stored instance). The triggers are per statement, over
-- transition tables: a bulk
-- INSERT ... SELECT or COPY then updates each counter row once, where
-- per-row triggers updated the same row once per inserted row (100,000
-- versions of one row in one transaction: minutes).

-- Adds n[i] instances to series[i], its study and its patient.
CREATE FUNCTION pn_count_instances(p_series bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	WITH d AS (SELECT * FROM unnest(p_series, p_n) AS d (series_fk, k)),
	up AS (
		SELECT s.study_fk, t.patient_fk, sum(d.k) AS k
		  FROM d JOIN series s ON s.pk = d.series_fk JOIN study t ON t.pk = s.study_fk
		 GROUP BY s.study_fk, t.patient_fk),
	a AS (
		INSERT INTO series_count AS c
		SELECT d.series_fk, pg_backend_pid() % 1024, sum(d.k) FROM d GROUP BY d.series_fk
		ON CONFLICT (series_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances),
	b AS (
		INSERT INTO study_count AS c
		SELECT up.study_fk, pg_backend_pid() % 1024, 0, sum(up.k) FROM up GROUP BY up.study_fk
		ON CONFLICT (study_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances)
	INSERT INTO patient_count AS c
	SELECT up.patient_fk, pg_backend_pid() % 1024, 0, 0, sum(up.k) FROM up GROUP BY up.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_instances = c.n_instances + excluded.n_instances;
END $$;

-- Adds n[i] series to study[i] and its patient.
CREATE FUNCTION pn_count_series(p_study bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	WITH d AS (SELECT * FROM unnest(p_study, p_n) AS d (study_fk, k)),
	a AS (
		INSERT INTO study_count AS c
		SELECT d.study_fk, pg_backend_pid() % 1024, sum(d.k), 0 FROM d GROUP BY d.study_fk
		ON CONFLICT (study_fk, shard) DO UPDATE SET n_series = c.n_series + excluded.n_series)
	INSERT INTO patient_count AS c
	SELECT t.patient_fk, pg_backend_pid() % 1024, 0, sum(d.k), 0
	  FROM d JOIN study t ON t.pk = d.study_fk GROUP BY t.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_series = c.n_series + excluded.n_series;
END $$;

-- Adds n[i] studies to patient[i].
CREATE FUNCTION pn_count_studies(p_patient bigint[], p_n bigint[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO patient_count AS c
	SELECT d.patient_fk, pg_backend_pid() % 1024, sum(d.k), 0, 0
	  FROM unnest(p_patient, p_n) AS d (patient_fk, k) GROUP BY d.patient_fk
	ON CONFLICT (patient_fk, shard) DO UPDATE SET n_studies = c.n_studies + excluded.n_studies;
END $$;

-- One trigger function per table: TG_OP says which transition tables
-- exist; an UPDATE counts only rows that moved to another parent.
CREATE FUNCTION pn_count_instance_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		PERFORM pn_count_instances(array_agg(series_fk), array_agg(n))
		   FROM (SELECT series_fk, count(*) AS n FROM new_rows GROUP BY series_fk) x;
	ELSIF TG_OP = 'DELETE' THEN
		PERFORM pn_count_instances(array_agg(series_fk), array_agg(n))
		   FROM (SELECT series_fk, -count(*) AS n FROM old_rows GROUP BY series_fk) x;
	ELSE
		PERFORM pn_count_instances(array_agg(series_fk), array_agg(n))
		   FROM (SELECT series_fk, sum(n)::bigint AS n FROM (
		           SELECT o.series_fk, -1 AS n FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.series_fk <> w.series_fk
		           UNION ALL
		           SELECT w.series_fk, 1 FROM old_rows o JOIN new_rows w ON w.pk = o.pk
		            WHERE o.series_fk <> w.series_fk) m
		         GROUP BY series_fk) x;
	END IF;
	RETURN NULL;
END $$;

CREATE FUNCTION pn_count_series_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
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
		            WHERE o.study_fk <> w.study_fk) m
		         GROUP BY study_fk) x;
	END IF;
	RETURN NULL;
END $$;

CREATE FUNCTION pn_count_study_trigger() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
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

CREATE TRIGGER instance_count_insert AFTER INSERT ON instance REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_instance_trigger();
CREATE TRIGGER instance_count_delete AFTER DELETE ON instance REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_instance_trigger();
CREATE TRIGGER instance_count_update AFTER UPDATE ON instance REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_instance_trigger();
CREATE TRIGGER series_count_insert AFTER INSERT ON series REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_series_trigger();
CREATE TRIGGER series_count_delete AFTER DELETE ON series REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_series_trigger();
CREATE TRIGGER series_count_update AFTER UPDATE ON series REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_series_trigger();
CREATE TRIGGER study_count_insert AFTER INSERT ON study REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_study_trigger();
CREATE TRIGGER study_count_delete AFTER DELETE ON study REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_study_trigger();
CREATE TRIGGER study_count_update AFTER UPDATE ON study REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pn_count_study_trigger();

-- What is there already, in shard 0.
INSERT INTO series_count SELECT series_fk, 0, count(*) FROM instance GROUP BY series_fk;
INSERT INTO study_count
	SELECT s.study_fk, 0, count(*), coalesce(sum(c.n_instances), 0)
	  FROM series s LEFT JOIN series_count c ON c.series_fk = s.pk GROUP BY s.study_fk;
INSERT INTO patient_count
	SELECT t.patient_fk, 0, count(*), coalesce(sum(c.n_series), 0), coalesce(sum(c.n_instances), 0)
	  FROM study t LEFT JOIN study_count c ON c.study_fk = t.pk GROUP BY t.patient_fk;
