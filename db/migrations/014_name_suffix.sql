-- 014: person names matched by a leading wildcard only ("*SON": a suffix).
-- 003's trigram indexes answer them, but a trigram of a short suffix is in
-- many names: for '%son' at 1,000,000 instances the trigram index gave
-- 2,515 candidate patients on 2,131 heap pages for 721 matches. A B-tree
-- of the reversed folded name turns the suffix into a prefix, a range of
-- exactly the matches (676 heap pages); db/find.c asks for it when a
-- pattern starts with '%' and does not end with one. The names are
-- reversed after folding, as the values are (pn_fold, then
-- pn_like_reverse), so that folding that changes the number of
-- characters (U+0130 becomes two) is taken the same on both sides.

-- A LIKE pattern (escape '\') read backwards, token by token: an escaped
-- character stays escaped, '%' and '_' stay wildcards; for every text x,
-- x LIKE p exactly when reverse(x) LIKE pn_like_reverse(p).
CREATE FUNCTION pn_like_reverse(text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN (SELECT coalesce(string_agg(m.t[1], '' ORDER BY m.n DESC), '')
	          FROM regexp_matches($1, '\\.|.', 'gs') WITH ORDINALITY AS m (t, n));
COMMENT ON FUNCTION pn_like_reverse(text) IS 'A LIKE pattern (escape backslash) reversed token by token, for the reversed-name indexes';

CREATE INDEX patient_name_fold_rev_idx ON patient (reverse(patient_name_fold) COLLATE "C");
CREATE INDEX study_referring_physician_name_fold_rev_idx ON study (reverse(referring_physician_name_fold) COLLATE "C");
