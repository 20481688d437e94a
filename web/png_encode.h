/* PNG of 8-bit grey or RGB pixels, in memory (libpng). */
#ifndef PN_WEB_PNG_ENCODE_H
#define PN_WEB_PNG_ENCODE_H

#include <stddef.h>

/* channels 1 or 3; *ret_png malloc'ed. 0, -EINVAL, -ENOMEM. */
int pn_png_encode(const unsigned char *pixels, unsigned width, unsigned height, int channels, unsigned char **ret_png,
                  size_t *ret_len);

#endif
