/* PNG encoding (png_encode.h). A fast compression level: a thumbnail is sent once
 * and small either way; the time goes to the page that waits for it. */
#include "png_encode.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	unsigned char *data;
	size_t len, cap;
	int failed;
} sink;

static void write_cb(png_structp p, png_bytep data, png_size_t n)
{
	sink *s = png_get_io_ptr(p);
	if (s->failed)
		return;
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16384;
		while (cap < s->len + n)
			cap *= 2;
		unsigned char *d = realloc(s->data, cap);
		if (!d) {
			s->failed = 1;
			return;
		}
		s->data = d;
		s->cap = cap;
	}
	memcpy(s->data + s->len, data, n);
	s->len += n;
}

static void flush_cb(png_structp p)
{
	(void)p;
}

int pn_png_encode(const unsigned char *pixels, unsigned width, unsigned height, int channels, unsigned char **ret_png,
                  size_t *ret_len)
{
	*ret_png = NULL;
	*ret_len = 0;
	if ((channels != 1 && channels != 3) || width == 0 || height == 0 || width > 65535 || height > 65535)
		return -EINVAL;
	png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	if (!p)
		return -ENOMEM;
	png_infop info = png_create_info_struct(p);
	/* volatile: modified between setjmp and a longjmp back to it */
	sink *volatile s = calloc(1, sizeof(sink));
	if (!info || !s) {
		png_destroy_write_struct(&p, info ? &info : NULL);
		free(s);
		return -ENOMEM;
	}
	if (setjmp(png_jmpbuf(p))) {
		png_destroy_write_struct(&p, &info);
		free(s->data);
		free(s);
		return -ENOMEM;
	}
	png_set_write_fn(p, s, write_cb, flush_cb);
	png_set_compression_level(p, 3);
	png_set_IHDR(p, info, width, height, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
	             PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(p, info);
	size_t stride = (size_t)width * (size_t)channels;
	for (unsigned y = 0; y < height; y++)
		png_write_row(p, (png_const_bytep)(pixels + (size_t)y * stride));
	png_write_end(p, info);
	png_destroy_write_struct(&p, &info);
	if (s->failed) {
		free(s->data);
		free(s);
		return -ENOMEM;
	}
	*ret_png = s->data;
	*ret_len = s->len;
	free(s);
	return 0;
}
