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

/* Replaces every byte that is not part of valid UTF-8 (and every NUL-free
 * control character but TAB, CR, LF, ESC) with '?', in place. Returns the
 * number of replacements. */
size_t pn_utf8_sanitise(char *s);

/* Removes leading and trailing spaces (DICOM padding), in place. */
void pn_trim(char *s);

#endif
