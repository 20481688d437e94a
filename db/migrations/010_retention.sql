-- 010: retention ([retention], docs/operations.md). The node deletes the
-- studies received longest ago (study.created_at: when the study's first
-- instance was indexed; a reindex sets it from the files) or retrieved
-- longest ago (accessed_at, set by C-MOVE, C-GET, WADO-RS and downloads;
-- never retrieved: its reception counts). Both orders are walked from the
-- oldest through an index, a batch at a time, so a round costs the same at
-- a million studies as at a hundred.
ALTER TABLE study ADD COLUMN accessed_at timestamptz;
COMMENT ON COLUMN study.accessed_at IS 'Last retrieved (C-MOVE, C-GET, WADO-RS, download), to about 10 minutes; NULL: never';
CREATE INDEX study_received_idx ON study (created_at, pk);
CREATE INDEX study_accessed_idx ON study ((coalesce(accessed_at, created_at)), pk);
