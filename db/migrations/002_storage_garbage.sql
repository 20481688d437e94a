-- Files the index no longer names but that may still be on disk: the old
-- file of an instance replaced under duplicate_policy = replace is recorded
-- here in the same transaction that points the row at the new file, and
-- removed from here once the file is unlinked. A crash in between leaves the
-- row, and the node's start-up recovery unlinks the file then.
CREATE TABLE storage_garbage (
	path       text COLLATE "C" PRIMARY KEY,
	queued_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE storage_garbage IS 'files to unlink (relative to the storage root): replaced instances';
