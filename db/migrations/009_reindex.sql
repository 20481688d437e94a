-- 009: pacsnodectl reindex's progress (docs/operations.md). One row from
-- a reindex's first batch until its end: so long as it is there, the
-- index is being rebuilt from the files, and a reindex started again
-- continues after last_mtime_ns/last_path (files are taken in the order
-- they were received: modification time, then path), which each batch
-- moves in the transaction that inserts its rows. The counts are the
-- whole reindex's, over its interrupted runs. The last transaction
-- deletes the row.
CREATE TABLE reindex_progress (
	id            boolean PRIMARY KEY DEFAULT true CHECK (id),
	started_at    timestamptz NOT NULL DEFAULT now(),
	last_mtime_ns bigint,
	last_path     text COLLATE "C",
	files         bigint NOT NULL DEFAULT 0,
	indexed       bigint NOT NULL DEFAULT 0,
	not_indexed   bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE reindex_progress IS 'pacsnodectl reindex in progress (at most one row): where a run started again continues';
COMMENT ON COLUMN reindex_progress.last_mtime_ns IS 'modification time (ns since 1970) of the last file of the last committed batch';
COMMENT ON COLUMN reindex_progress.last_path IS 'path (relative to the storage root) of that file';
COMMENT ON COLUMN reindex_progress.files IS 'files taken so far (indexed or not)';
COMMENT ON COLUMN reindex_progress.indexed IS 'instances indexed so far';
COMMENT ON COLUMN reindex_progress.not_indexed IS 'files listed and not indexed so far (not DICOM, conflicts, duplicates)';
