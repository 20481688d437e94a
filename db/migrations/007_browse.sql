-- 007: the study pages list studies newest first, a page at a time; this
-- index gives that order without sorting the whole table (studies without
-- a date last).
CREATE INDEX study_newest_idx ON study (study_date DESC NULLS LAST, study_time DESC NULLS LAST, pk DESC);
