/* WADO-RS rendered and thumbnail (PS3.18 10.4.1.1.3, 10.7): a frame as a
 * PNG, windowed by the instance's own window (else its pixel range), for
 * browsers, viewers' series lists and the study pages. */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "browse.h"
#include "log.h"
#include "jpeg_encode.h"
#include "png_encode.h"
#include "storage.h"
#include "web_internal.h"

#define THUMBNAIL_BOX 128
#define MAX_BOX 4096

/* The picture format the client takes: PNG (also for no Accept or a
 * wildcard), JPEG when it names image/jpeg before image/png, or none. */
typedef enum { PICTURE_NONE, PICTURE_PNG, PICTURE_JPEG } picture;

static picture picture_format(const pn_web_req *r)
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	if (!a || !a[0])
		return PICTURE_PNG;
	const char *png = strstr(a, "image/png"), *jpeg = strstr(a, "image/jpeg");
	if (jpeg && (!png || jpeg < png))
		return PICTURE_JPEG;
	if (png || strstr(a, "image/*") || strstr(a, "*/*"))
		return PICTURE_PNG;
	return PICTURE_NONE;
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
	picture format = picture_format(r);
	if (format == PICTURE_NONE)
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE, "pictures are served as image/png or image/jpeg");
	int quality = 90;
	const char *qs = pn_web_arg(r, "quality");
	if (qs) {
		char *end;
		long qv = strtol(qs, &end, 10);
		if (*end || qv < 1 || qv > 100)
			return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "quality is 1 to 100");
		quality = (int)qv;
	}
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
	rc = format == PICTURE_JPEG
	         ? pn_jpeg_encode(img.pixels, img.width, img.height, img.channels, quality, &png, &len)
	         : pn_png_encode(img.pixels, img.width, img.height, img.channels, &png, &len);
	free(img.pixels);
	if (rc < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "could not encode the picture");
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, png, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(png);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        format == PICTURE_JPEG ? "image/jpeg" : "image/png");
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}

/* WADO-RS frames (PS3.18 10.4.1.1.2): uncompressed, as multipart/related;
 * type="application/octet-stream", one part a frame, decoded one at a time
 * as the client reads. */

#define MAX_FRAMES 4096

typedef struct {
	char *path;
	bool raw;       /* the stored compressed bytes, in their own media type */
	char media[32]; /* raw: image/jpeg, image/jls, ... */
	char ts[PN_UID_MAX + 1];
	unsigned long frames[MAX_FRAMES];
	size_t n, next;
	char boundary[33];
	char head[256];
	size_t head_len, head_pos;
	pn_dcm_buf cur;
	size_t cur_pos;
	bool trailer;
	char peer[64];
} frames_stream;

static void frames_free(void *cls)
{
	frames_stream *f = cls;
	free(f->cur.data);
	free(f->path);
	free(f);
}

/* The next part's header and bytes into f; false at the end (the closing
 * boundary queued), -1 on a failure. */
static int next_frame(frames_stream *f)
{
	free(f->cur.data);
	f->cur = (pn_dcm_buf){0};
	f->cur_pos = 0;
	if (f->next == f->n) {
		if (f->trailer)
			return 0;
		f->trailer = true;
		f->head_len = (size_t)snprintf(f->head, sizeof(f->head), "\r\n--%s--\r\n", f->boundary);
		f->head_pos = 0;
		return 1;
	}
	unsigned long frame = f->frames[f->next++];
	char ts[PN_UID_MAX + 1];
	int rc = f->raw ? pn_dcm_frame_encapsulated(f->path, frame, &f->cur, ts)
	                : pn_dcm_frames(f->path, &frame, 1, &f->cur);
	if (rc < 0) {
		pn_error("http %s: WADO-RS: frame %lu of \"%s\" cannot be read (%s)", f->peer, frame + 1, f->path,
		         strerror(-rc));
		return -1;
	}
	char type[160];
	if (f->raw)
		snprintf(type, sizeof(type), "%s; transfer-syntax=%s", f->media, f->ts);
	else
		snprintf(type, sizeof(type), "application/octet-stream");
	f->head_len =
	    (size_t)snprintf(f->head, sizeof(f->head), "%s--%s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
	                     f->next > 1 ? "\r\n" : "", f->boundary, type, f->cur.len);
	f->head_pos = 0;
	return 1;
}

static ssize_t frames_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	frames_stream *f = cls;
	size_t n = 0;
	while (n < max) {
		if (f->head_pos < f->head_len) {
			size_t k = f->head_len - f->head_pos < max - n ? f->head_len - f->head_pos : max - n;
			memcpy(buf + n, f->head + f->head_pos, k);
			f->head_pos += k;
			n += k;
			continue;
		}
		if (f->cur_pos < f->cur.len) {
			size_t k = f->cur.len - f->cur_pos < max - n ? f->cur.len - f->cur_pos : max - n;
			memcpy(buf + n, (char *)f->cur.data + f->cur_pos, k);
			f->cur_pos += k;
			n += k;
			continue;
		}
		int rc = next_frame(f);
		if (rc < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (rc == 0)
			break;
	}
	return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

/* The media type of compressed frames in `ts` (PS3.18 table 8.7.3-2), or
 * NULL. */
static const char *frame_media(const char *ts)
{
	static const struct {
		const char *ts, *media;
	} map[] = {
	    {"1.2.840.10008.1.2.4.50", "image/jpeg"},     {"1.2.840.10008.1.2.4.51", "image/jpeg"},
	    {"1.2.840.10008.1.2.4.57", "image/jpeg"},     {"1.2.840.10008.1.2.4.70", "image/jpeg"},
	    {"1.2.840.10008.1.2.4.80", "image/jls"},      {"1.2.840.10008.1.2.4.81", "image/jls"},
	    {"1.2.840.10008.1.2.4.90", "image/jp2"},      {"1.2.840.10008.1.2.4.91", "image/jp2"},
	    {"1.2.840.10008.1.2.4.92", "image/jpx"},      {"1.2.840.10008.1.2.4.93", "image/jpx"},
	    {"1.2.840.10008.1.2.5", "image/x-dicom-rle"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(ts, map[i].ts) == 0)
			return map[i].media;
	return NULL;
}

/* Whether the Accept header takes compressed frames of `media`: named, or
 * any syntax (transfer-syntax=*, a wildcard type). */
static bool accepts_compressed(const pn_web_req *r, const char *media)
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	if (!a || !media)
		return false;
	return strstr(a, media) || strstr(a, "transfer-syntax=*") || strstr(a, "transfer-syntax=\"*\"") ||
	       strstr(a, "image/*");
}

/* Whether the Accept header takes uncompressed frames. */
static bool accepts_frames(const pn_web_req *r)
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	if (!a || !a[0] || strstr(a, "*/*"))
		return true;
	if (!strstr(a, "application/octet-stream"))
		return false;
	const char *ts = strstr(a, "transfer-syntax=");
	if (!ts)
		return true;
	ts += strlen("transfer-syntax=");
	if (*ts == '"')
		ts++;
	return *ts == '*' || strncmp(ts, "1.2.840.10008.1.2.1", 19) == 0;
}

enum MHD_Result pn_web_frames(pn_web_req *r, const char *study, const char *series, const char *sop, const char *list)
{
	frames_stream *f = calloc(1, sizeof(*f));
	if (!f)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	const char *p = list;
	while (*p) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);
		if (end == p || v == 0 || v > 100000000ul || (*end && *end != ',') || f->n == MAX_FRAMES) {
			free(f);
			return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "frames are a list of numbers from 1, at most %d",
			                    MAX_FRAMES);
		}
		f->frames[f->n++] = v - 1;
		p = *end ? end + 1 : end;
	}
	if (f->n == 0) {
		free(f);
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "no frame asked for");
	}
	if (!r->ctx->db) {
		free(f);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	}
	pn_instance_file file;
	int rc = pn_browse_instance(r->ctx->db, study, series, sop, &file);
	if (rc <= 0) {
		free(f);
		return rc < 0 ? pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer")
		              : pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such instance");
	}
	if (pn_storage_full_path(r->ctx->storage, file.path, &f->path) < 0) {
		free(f);
		return pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the index names a path outside the storage");
	}
	snprintf(f->peer, sizeof(f->peer), "%s", r->peer);
	unsigned char rnd[16];
	RAND_bytes(rnd, sizeof(rnd));
	for (int i = 0; i < 16; i++)
		snprintf(f->boundary + 2 * i, 3, "%02x", rnd[i]);
	/* The highest frame now: one past the end is a 404, an undecodable
	 * instance a 406, before any byte of the answer. */
	unsigned long first = f->frames[0];
	for (size_t i = 1; i < f->n; i++)
		if (f->frames[i] > first)
			first = f->frames[i];
	pn_dcm_buf probe[1];
	/* Compressed as stored when the client takes that (its own media
	 * type), else decoded; a client that takes neither gets a 406. */
	rc = pn_dcm_frame_encapsulated(f->path, first, probe, f->ts);
	if (rc == 0) {
		free(probe[0].data);
		const char *media = frame_media(f->ts);
		if (media && accepts_compressed(r, media)) {
			f->raw = true;
			snprintf(f->media, sizeof(f->media), "%s", media);
		}
	}
	if (!f->raw && (rc == 0 || rc == -EAGAIN || rc == -ENOTSUP)) {
		if (!accepts_frames(r)) {
			frames_free(f);
			return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE,
			                    "instance %s's frames are served as multipart/related; "
			                    "type=\"application/octet-stream\"%s",
			                    sop, rc == 0 ? " or in their own media type" : "");
		}
		rc = pn_dcm_frames(f->path, &first, 1, probe);
		if (rc == 0)
			free(probe[0].data);
	}
	if (rc < 0) {
		frames_free(f);
		if (rc == -ERANGE)
			return pn_web_error(r, MHD_HTTP_NOT_FOUND, "instance %s has no frame %lu", sop, first + 1);
		if (rc == -ENODATA)
			return pn_web_error(r, MHD_HTTP_NOT_FOUND, "instance %s has no pixel data", sop);
		if (rc == -ENOTSUP)
			return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE, "instance %s cannot be decompressed here", sop);
		return pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the file of instance %s cannot be read", sop);
	}
	struct MHD_Response *resp =
	    MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 256 * 1024, frames_read, f, frames_free);
	if (!resp) {
		frames_free(f);
		return MHD_NO;
	}
	char type[128];
	snprintf(type, sizeof(type), "multipart/related; type=\"%s\"; boundary=%s",
	         f->raw ? f->media : "application/octet-stream", f->boundary);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}
