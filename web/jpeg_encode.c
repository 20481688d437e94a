/* JPEG encoding (jpeg_encode.h). libjpeg reports errors through a longjmp
 * from its error handler; ours returns here and frees what it made. */
#include "jpeg_encode.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
	struct jpeg_error_mgr mgr;
	jmp_buf jump;
} error_mgr;

static void on_error(j_common_ptr cinfo)
{
	longjmp(((error_mgr *)cinfo->err)->jump, 1);
}

static void on_message(j_common_ptr cinfo)
{
	(void)cinfo; /* warnings are not worth a line of the node's log */
}

int pn_jpeg_encode(const unsigned char *pixels, unsigned width, unsigned height, int channels, int quality,
                   unsigned char **ret_jpeg, size_t *ret_len)
{
	*ret_jpeg = NULL;
	*ret_len = 0;
	if ((channels != 1 && channels != 3) || width == 0 || height == 0 || width > 65500 || height > 65500)
		return -EINVAL;
	struct jpeg_compress_struct c;
	error_mgr err;
	/* libjpeg's output buffer, held outside this frame: a longjmp back to
	 * setjmp leaves locals changed since undefined, not the heap */
	struct {
		unsigned char *mem;
		unsigned long len;
	} *out = calloc(1, sizeof(*out));
	if (!out)
		return -ENOMEM;
	c.err = jpeg_std_error(&err.mgr);
	err.mgr.error_exit = on_error;
	err.mgr.output_message = on_message;
	if (setjmp(err.jump)) {
		jpeg_destroy_compress(&c);
		free(out->mem);
		free(out);
		return -ENOMEM;
	}
	jpeg_create_compress(&c);
	jpeg_mem_dest(&c, &out->mem, &out->len);
	c.image_width = width;
	c.image_height = height;
	c.input_components = channels;
	c.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, quality, TRUE);
	jpeg_start_compress(&c, TRUE);
	size_t stride = (size_t)width * (size_t)channels;
	while (c.next_scanline < c.image_height) {
		JSAMPROW row = (JSAMPROW)(pixels + (size_t)c.next_scanline * stride);
		jpeg_write_scanlines(&c, &row, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	*ret_jpeg = out->mem;
	*ret_len = out->len;
	free(out);
	return 0;
}
