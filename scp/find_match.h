/* One C-FIND key value, parsed for matching (PS3.4 C.2.2.2).
 *
 * The parse turns what the SCU sent (already decoded to UTF-8) into a form
 * both matchers can use: the SQL layer (db/find.c) binds `value`, `like`,
 * `list`, `lo`/`hi` as parameters; pn_match_test() applies the same rule in
 * C to a stored value, for keys without an indexed column. */
#ifndef PN_FIND_MATCH_H
#define PN_FIND_MATCH_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
	PN_MATCH_UNIVERSAL, /* zero length, or only '*': matches everything */
	PN_MATCH_SINGLE,    /* one exact value */
	PN_MATCH_LIST,      /* values separated by '\\' (UID lists; CS lists), any may match */
	PN_MATCH_WILDCARD,  /* '*' / '?' on a VR that allows them */
	PN_MATCH_RANGE,     /* DA, TM, DT: always a range, a single value gives lo == hi's span */
	PN_MATCH_EMPTY,     /* Empty Value Matching (negotiated): '""' matches absent or empty */
	PN_MATCH_ANY,       /* Multiple Value Matching (negotiated): any of alts[] */
} pn_match_kind;

typedef struct pn_match {
	pn_match_kind kind;
	char vr[3];
	bool fold;     /* case-insensitive: PN when configured so */
	char *value;   /* SINGLE: the value (folded when fold) */
	char *like;    /* WILDCARD: SQL LIKE pattern, escape '\\', folded when fold */
	char *pattern; /* WILDCARD: the DICOM pattern ('*', '?'), folded when fold */
	char **list;   /* LIST: n_list exact values */
	size_t n_list;
	char *lo, *hi;         /* RANGE: normalised bounds, NULL when open */
	bool reversed;         /* RANGE of TM: lo later than hi (see pn_match_parse) */
	struct pn_match *alts; /* ANY: n_alts matches, none of them ANY or UNIVERSAL */
	size_t n_alts;
} pn_match;

/* Parses `value` (UTF-8, leading and trailing spaces already removed; NULL
 * or "" for zero length) of an attribute of VR `vr` ("PN", "DA", ...).
 * `fold` asks for case-insensitive matching (used for PN only).
 * DA bounds are "YYYY-MM-DD", TM bounds "HH:MM:SS.ffffff" (a missing part is
 * the lowest for lo and the highest for hi: "08" as hi is "08:59:59.999999"),
 * DT bounds "YYYY-MM-DD HH:MM:SS.ffffff" (offsets ignored); all fixed width,
 * so bounds and normalised stored values compare as strings.
 * Returns 0, -EINVAL (a value that cannot be understood: bad date, inverted
 * range, invalid UTF-8) or -ENOMEM. On error *ret is cleared. A TM range
 * whose start is later than its end is parsed, with `reversed` set: with
 * combined date-time matching "StudyDate=20240101-20240131,
 * StudyTime=2200-0600" is a range of instants (PS3.4 C.2.2.2.5.1), and
 * the caller refuses it when it stays a range of times of day alone. */
int pn_match_parse(const char *vr, const char *value, bool fold, pn_match *ret);

/* The same with Multiple Value Matching (PS3.4 C.2.2.2.1.2, negotiated):
 * a value of a multi-valued VR other than UI holding '\'-separated values
 * matches when any of them does, each value matched by its own kind
 * (single, wild card, range); ANY when one of them is a wild card or a
 * range, else as pn_match_parse (an exact LIST). */
int pn_match_parse_multi(const char *vr, const char *value, bool fold, pn_match *ret);
void pn_match_clear(pn_match *m);

/* Whether a stored value (UTF-8 as kept in the attribute blobs, NULL or ""
 * when absent or empty) matches. Multi-valued stored values ("A\\B") match
 * when any of their values does. */
bool pn_match_test(const pn_match *m, const char *stored);

/* Unicode lower case with final sigma folded to sigma: the C twin of the
 * SQL function pn_fold() (db/migrations/003). malloc'ed; -EINVAL on invalid
 * UTF-8, -ENOMEM. */
int pn_fold_utf8(const char *in, char **ret_out);

/* DA/TM/DT value normalisation used by the above: 0 or -EINVAL. */
int pn_norm_date(const char *in, char out[11]);
int pn_norm_time(const char *in, bool upper, char out[16]);

#endif
