/* The DICOM JSON model (PS3.18 F.2) written straight from explicit VR
 * little endian bytes, without dcmtk: the stored attribute blobs' elements
 * (docs/design.md "The index"), nested sequences included, and the values
 * a response adds as text. QIDO-RS and WADO-RS metadata write their
 * matches with it (docs/web.md).
 *
 * The text is what dcmtk 3.6.7's compact writer (DcmJsonFormatCompact)
 * gives for the dataset dcmtk reads from the same bytes, as the node sets
 * dcmtk up (no input correction: values as stored), byte for byte; where
 * dcmtk's text is not JSON or not the stored value, this one is:
 *   - invalid UTF-8 becomes U+FFFD (dcmtk passes the bytes through);
 *   - a DS that dcmtk would write as "5." or "e5" is written 5, 0e5;
 *   - FL and FD with 9 and 17 significant digits, exact (dcmtk's own
 *     conversion loses the last digits), NaN and infinities as the strings
 *     "NaN", "Infinity", "-Infinity" (dcmtk writes nan, or fails);
 *   - a binary value shorter than one number has no Value (dcmtk fails).
 * Anything whose reading by dcmtk we do not reproduce (non-standard VRs,
 * undefined lengths, items out of order, deeper than PN_JSON_MAX_DEPTH) is
 * refused by pn_json_check: the caller then takes the dcmtk way. */
#ifndef PN_JSON_MODEL_H
#define PN_JSON_MODEL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growing text. After a failed append `oom` stays set and nothing more is
 * added; the text is then cut and must not be sent. */
typedef struct {
	char *data;
	size_t len, cap;
	bool oom;
} pn_json_buf;

/* Room for `more` bytes: 0, or -ENOMEM (and oom). */
int pn_json_grow(pn_json_buf *b, size_t more);
void pn_json_buf_free(pn_json_buf *b); /* keeps nothing; the struct is reusable */

/* Appends n bytes: 0, or -ENOMEM (and oom). */
static inline int pn_json_put(pn_json_buf *b, const void *p, size_t n)
{
	if ((b->oom || b->cap - b->len < n) && pn_json_grow(b, n) < 0)
		return -ENOMEM;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* Sequences nested deeper than this are left to dcmtk. */
#define PN_JSON_MAX_DEPTH 32

/* Whether this writer reads every element of the dataset (a blob, or an
 * item's value) as dcmtk would: standard VRs, explicit lengths that fit,
 * items (FFFE,E000) only in sequences, tags ascending in every item, at most
 * PN_JSON_MAX_DEPTH levels of sequences. 0, or -EBADMSG. */
int pn_json_check(const unsigned char *data, size_t len);

/* The same for one top-level element whose header was read already (its
 * tag, VR and value): for a blob walked into a table of its elements. */
int pn_json_check_elem(uint32_t tag, const char vr[2], const unsigned char *value, size_t len);

/* One attribute, "GGGGEEEE":{"vr":"XX",...}, from its value bytes as the
 * blob holds them (a sequence's: its items); a text value is its bytes, ""
 * an empty attribute of any VR. 0, -EBADMSG (an unknown VR, a malformed
 * sequence: the text is then cut at the attribute), -ENOMEM. */
int pn_json_attr(pn_json_buf *b, uint32_t tag, const char vr[2], const unsigned char *value, size_t len);

/* A dataset's elements as one object "{...}" (group lengths left out, as
 * dcmtk does). 0, -EBADMSG, -ENOMEM; after an error the text is cut. */
int pn_json_dataset(pn_json_buf *b, const unsigned char *data, size_t len);

#endif
