-- 015: Timezone query adjustment (C-FIND extended negotiation byte 3,
-- PS3.4 C.2.2.2; docs/find.md). The stored dates and times are local
-- times: in the study's Timezone Offset From UTC (0008,0201) when one of
-- its instances carried it, else in the node's zone ([query] timezone).
-- A query that gives its own offset is matched, and answered, in that.

ALTER TABLE study ADD COLUMN timezone_offset smallint;
COMMENT ON COLUMN study.timezone_offset IS
	'(0008,0201) TimezoneOffsetFromUTC of the first instance of the study that carried it, minutes east of UTC; NULL: the node''s zone';

-- The offset from UTC, in minutes, of the local date and time d t: the
-- data's own offset when known, else the node zone's at that instant (a
-- named zone, DST included). A missing time counts as midnight, a missing
-- date as today (a time alone has no day to take the zone's rule from).
-- node_zone is an IANA name: a fixed offset comes as data_offset instead,
-- since PostgreSQL reads a text '+01' the POSIX way, as UTC-1.
CREATE FUNCTION pn_zone_offset(d date, t time, data_offset integer, node_zone text) RETURNS integer
	LANGUAGE sql STABLE PARALLEL SAFE
	RETURN coalesce(data_offset,
	                (extract(epoch FROM (coalesce(d, current_date) + coalesce(t, time '00:00'))
	                   - ((coalesce(d, current_date) + coalesce(t, time '00:00')) AT TIME ZONE node_zone
	                        AT TIME ZONE 'UTC')) / 60)::integer);
COMMENT ON FUNCTION pn_zone_offset(date, time, integer, text) IS 'Minutes east of UTC of a stored local date and time: its own offset, else the node zone''s';

-- The stored local date and time d t as the local time of a query at
-- query_offset minutes east of UTC; NULL without a time (a date alone
-- names a day, not an instant: db/find.c keeps it as stored). A time
-- without a date wraps.
CREATE FUNCTION pn_in_zone(d date, t time, data_offset integer, node_zone text, query_offset integer)
	RETURNS timestamp
	LANGUAGE sql STABLE PARALLEL SAFE
	RETURN coalesce(d, current_date) + t
	       + make_interval(mins => query_offset - pn_zone_offset(d, t, data_offset, node_zone));
COMMENT ON FUNCTION pn_in_zone(date, time, integer, text, integer) IS 'A stored local date and time in the zone of a query''s Timezone Offset From UTC';
