/* WADO-RS rendered and thumbnail (PS3.18 10.4.1.1.3, 10.7): a frame as a
 * PNG, windowed by the instance's own window (else its pixel range), for
 * browsers, viewers' series lists and the study pages. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "browse.h"
#include "log.h"
#include "png_encode.h"
#include "storage.h"
#include "web_internal.h"

#define THUMBNAIL_BOX 128
#define MAX_BOX 4096

/* Whether the client takes a PNG. */
static bool accepts_png(const pn_web_req *r)
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	return !a || !a[0] || strstr(a, "image/png") || strstr(a, "image/*") || strstr(a, "*/*");
}

/* viewport=W,H (PS3.18 8.3.5.1.2): the box the picture must fit. */
static int viewport(const pn_web_req *r, unsigned *w, unsigned *h)
{
	const char *v = pn_web_arg(r, "viewport");
	if (!v)
		return 0;
	unsigned a, b;
	char end;
	if (sscanf(v, "%u,%u%c", &a, &b, &end) != 2 || a == 0 || b == 0 || a > MAX_BOX || b > MAX_BOX)
		return -1;
	*w = a;
	*h = b;
	return 0;
}

enum MHD_Result pn_web_rendered(pn_web_req *r, const char *study, const char *series, const char *sop,
                                unsigned long frame, bool thumbnail)
{
	if (!accepts_png(r))
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE, "pictures are served as image/png");
	unsigned w = thumbnail ? THUMBNAIL_BOX : 0, h = thumbnail ? THUMBNAIL_BOX : 0;
	if (viewport(r, &w, &h) < 0)
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "viewport is W,H (1 to %d each)", MAX_BOX);
	if (!r->ctx->db)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	pn_instance_file f;
	int rc = sop ? pn_browse_instance(r->ctx->db, study, series, sop, &f)
	             : pn_browse_middle_instance(r->ctx->db, series, &f);
	if (rc < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer: %s",
		                    pn_db_errmsg(r->ctx->db));
	if (rc == 0)
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such %s", sop ? "instance" : "series");
	char *full = NULL;
	if (pn_storage_full_path(r->ctx->storage, f.path, &full) < 0)
		return pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the index names a path outside the storage");
	pn_dcm_image img;
	rc = pn_dcm_render(full, frame, w, h, &img);
	free(full);
	if (rc == -ENODATA)
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "instance %s has no pixel data", f.sop_uid);
	if (rc == -ENOTSUP)
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE,
		                    "instance %s cannot be rendered here (no decoder for how "
		                    "it is stored)",
		                    f.sop_uid);
	if (rc == -ENOENT)
		return pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the file of instance %s is missing", f.sop_uid);
	if (rc < 0)
		return pn_web_error(r, rc == -ENOMEM ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_NOT_FOUND,
		                    "instance %s: frame %lu cannot be rendered", f.sop_uid, frame + 1);
	unsigned char *png = NULL;
	size_t len = 0;
	rc = pn_png_encode(img.pixels, img.width, img.height, img.channels, &png, &len);
	free(img.pixels);
	if (rc < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "could not encode the picture");
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, png, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(png);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "image/png");
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}
