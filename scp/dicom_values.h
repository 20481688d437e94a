/* Turning DICOM value strings into what the index's typed columns accept.
 * Each function reads the first value of a possibly multi-valued string
 * (up to the first backslash) and returns false when it is not valid, in
 * which case the column is left NULL (the raw value stays in the file and in
 * the level's attribute blob). */
#ifndef PN_DICOM_VALUES_H
#define PN_DICOM_VALUES_H

#include <stdbool.h>
#include <stddef.h>

/* Days in month m (1-12) of year y, leap years included. */
int pn_days_in_month(int y, int m);

/* DA "YYYYMMDD" (and the old "YYYY.MM.DD") -> "YYYY-MM-DD". */
bool pn_da_to_iso(const char *da, char out[11]);
/* TM "HH[MM[SS[.F{1,6}]]]" (and the old "HH:MM:SS") -> "HH:MM:SS[.ffffff]". */
bool pn_tm_to_iso(const char *tm, char out[16]);
/* IS -> integer text within 32 bits. */
bool pn_is_normalise(const char *is, char out[16]);
/* DS (or any numeric VR) -> finite decimal text. */
bool pn_ds_normalise(const char *ds, char out[32]);

/* Timezone Offset From UTC (0008,0201) "+HHMM" / "-HHMM" (surrounding
 * spaces allowed), within -1200..+1400 (PS3.3 C.12.1.1.8) -> minutes east
 * of UTC. */
bool pn_tz_offset_parse(const char *s, int *ret_minutes);

/* A DA / TM pair moved by `minutes` (Timezone query adjustment): tm
 * "HH[MM[SS[.F]]]" (or the old "HH:MM:SS") shifted, wrapping at midnight,
 * and da "YYYYMMDD" (NULL or "" when there is none) carried across it.
 * The time keeps its precision, HH becoming HHMM when the shift is not
 * whole hours. False (outputs untouched) when either value cannot be read
 * or the date leaves years 1-9999. */
bool pn_da_tm_shift(const char *da, const char *tm, int minutes, char da_out[9], char tm_out[24]);

/* Replaces every byte that is not part of valid UTF-8 (and every NUL-free
 * control character but TAB, CR, LF, ESC) with '?', in place. Returns the
 * number of replacements. */
size_t pn_utf8_sanitise(char *s);

/* Removes leading and trailing spaces (DICOM padding), in place. */
void pn_trim(char *s);

#endif
