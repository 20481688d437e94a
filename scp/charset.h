/* DICOM Specific Character Set (0008,0005) to UTF-8, PS3.5 6.1 and Annex
 * C/D: single-byte sets, UTF-8, GB18030/GBK, and ISO 2022 code extensions
 * (escape sequences switching G0/G1, reset to the initial sets at value,
 * component and line delimiters), including Japanese (ISO 2022 IR 13/87/159),
 * Korean (IR 149) and Chinese (IR 58).
 *
 * We do this ourselves over iconv(3) because Debian's dcmtk converts with
 * glibc iconv and refuses ISO 2022 IR 87. */
#ifndef PN_CHARSET_H
#define PN_CHARSET_H

#include <stddef.h>

typedef struct pn_charset pn_charset;

/* `spec` is the value of Specific Character Set, backslash-separated, or
 * NULL/"" for the default repertoire. -EINVAL for a term we do not know. */
int pn_charset_create(const char *spec, pn_charset **ret_cs);
void pn_charset_free(pn_charset *cs); /* NULL is a no-op */

/* Converts `len` bytes of one element value to NUL-terminated UTF-8
 * (malloc'ed). Bytes that cannot be decoded become U+FFFD and the result is
 * -EILSEQ (with *ret_out still set); 0 otherwise; -ENOMEM. */
int pn_charset_to_utf8(pn_charset *cs, const char *in, size_t len, char **ret_out);

/* Length of the well-formed UTF-8 sequence (RFC 3629: at most 4 bytes, no
 * overlong forms, no surrogates, at most U+10FFFF) at s[0..n), or 0. */
size_t pn_utf8_sequence(const unsigned char *s, size_t n);

/* The reverse, for answers: UTF-8 to a Specific Character Set made of one
 * single-byte term without code extensions ("ISO_IR 100", "ISO_IR 144"...).
 * create returns -ENOTSUP for anything else (the caller answers in
 * ISO_IR 192 then). */
typedef struct pn_charset_encoder pn_charset_encoder;
int pn_charset_encoder_create(const char *spec, pn_charset_encoder **ret_enc);
void pn_charset_encoder_free(pn_charset_encoder *enc);
/* -EILSEQ when some character has no encoding in the set; -ENOMEM. */
int pn_charset_from_utf8(pn_charset_encoder *enc, const char *in, size_t len, char **ret_out);

#endif
