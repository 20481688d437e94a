/* JPEG of 8-bit grey or RGB pixels, in memory (libjpeg-turbo): for
 * rendered pictures a client asks as image/jpeg. */
#ifndef PN_WEB_JPEG_ENCODE_H
#define PN_WEB_JPEG_ENCODE_H

#include <stddef.h>

/* channels 1 or 3; *ret_jpeg malloc'ed. quality 1-100. 0, -EINVAL,
 * -ENOMEM. */
int pn_jpeg_encode(const unsigned char *pixels, unsigned width, unsigned height, int channels, int quality,
                   unsigned char **ret_jpeg, size_t *ret_len);

#endif
