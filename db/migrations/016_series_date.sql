-- 016: a SERIES query by date over all studies (a relational query, C-FIND
-- extended negotiation byte 0; QIDO-RS /series?SeriesDate=...) had only the
-- modality's index, which selects a third of the series: 37 ms at
-- 1,000,000 instances for a day's 27 CT series (bench/find, 2026-12-07).
-- The date first serves a date alone and a date range; the modality second
-- is checked in the index, so Modality + SeriesDate reads only its matches.
-- One entry per series, not per instance: a store pays it once a series.
CREATE INDEX series_date_idx ON series (series_date, modality);
