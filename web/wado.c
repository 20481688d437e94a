/* WADO-RS retrieval of instances (PS3.18 10.4): a study, a series or one
 * instance as multipart/related; type="application/dicom". The index gives
 * the files (the same SQL as C-MOVE's); each goes out as it lies on disk
 * when the client takes its transfer syntax, read into the response as the
 * client reads, so memory stays flat whatever the study's size; converted
 * without loss otherwise (docs/web.md). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "audit_tally.h"
#include "browse.h"
#include "find.h"
#include "hold.h"
#include "log.h"
#include "part10.h"
#include "storage.h"
#include "web_internal.h"

#define TS_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define BLOCK (256 * 1024)

/* What the Accept header asks of the instances: as stored (""), or one
 * transfer syntax. -1: nothing we serve here. */
static int wanted_syntax(const pn_web_req *r, char ts[PN_UID_MAX + 1])
{
	const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
	ts[0] = '\0';
	if (!a || !a[0])
		return 0; /* a plain client (curl): the files as they are */
	char buf[2048];
	snprintf(buf, sizeof(buf), "%s", a);
	char *save = NULL;
	for (char *range = strtok_r(buf, ",", &save); range; range = strtok_r(NULL, ",", &save)) {
		char *psave = NULL;
		char *type = strtok_r(range, ";", &psave);
		if (!type)
			continue;
		type += strspn(type, " \t");
		type[strcspn(type, " \t")] = '\0';
		bool any = strcmp(type, "*/*") == 0;
		bool multipart = strcmp(type, "multipart/related") == 0 || strcmp(type, "multipart/*") == 0;
		if (!any && !multipart)
			continue;
		bool dicom = any, have_ts = false, refused = false;
		char want[PN_UID_MAX + 1] = "";
		for (char *p = strtok_r(NULL, ";", &psave); p; p = strtok_r(NULL, ";", &psave)) {
			p += strspn(p, " \t");
			char *eq = strchr(p, '=');
			if (!eq)
				continue;
			*eq = '\0';
			char *v = eq + 1;
			size_t n = strlen(v);
			while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
				v[--n] = '\0';
			if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
				v[n - 1] = '\0';
				v++;
			}
			if (strcmp(p, "type") == 0)
				dicom = strcmp(v, "application/dicom") == 0;
			else if (strcmp(p, "transfer-syntax") == 0) {
				have_ts = true;
				snprintf(want, sizeof(want), "%s", strcmp(v, "*") == 0 ? "" : v);
			} else if (strcmp(p, "q") == 0 && strtod(v, NULL) <= 0)
				refused = true;
		}
		if (!dicom || refused)
			continue;
		/* PS3.18 8.7.3.5.2: without a transfer-syntax parameter, explicit
		 * VR little endian; "*": whatever the server has. */
		if (multipart && !have_ts)
			snprintf(want, sizeof(want), "%s", TS_EXPLICIT_LE);
		if (want[0] && !pn_uid_valid(want))
			continue;
		snprintf(ts, PN_UID_MAX + 1, "%s", want);
		return 0;
	}
	return -1;
}

typedef struct {
	pn_store_ctx *ctx;
	char want[PN_UID_MAX + 1];
	char boundary[33];
	char peer[64], user[64];
	bool https;
	bool running; /* the index query */
	bool done;    /* no more rows */
	bool trailer; /* the closing boundary is out */
	/* the current part: its header, then a file or a converted copy */
	char head[512];
	size_t head_len, head_pos;
	int fd;
	char *conv;
	size_t conv_len, conv_pos;
	bool in_part;
	unsigned long long parts, missing, unconvertible;
	pn_audit_tally *tally;
	pn_hold hold; /* the study, until the answer is out */
} wado;

static void end_part(wado *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	free(w->conv);
	w->conv = NULL;
	w->conv_len = w->conv_pos = 0;
	w->in_part = false;
}

/* Opens the next instance that can be sent; false when there are no more
 * (w->done) or the query failed (logged, -1 in *err). */
static bool next_part(wado *w, int *err)
{
	*err = 0;
	for (;;) {
		pn_find_row row;
		int rc = pn_find_next(w->ctx->db, &row);
		if (rc == 0) {
			pn_find_stop(w->ctx->db);
			w->running = false;
			w->done = true;
			return false;
		}
		if (rc < 0) {
			pn_error("http %s: WADO-RS: the index query failed: %s", w->peer, pn_db_errmsg(w->ctx->db));
			*err = -1;
			return false;
		}
		char *full = NULL;
		if (pn_storage_full_path(w->ctx->storage, row.path, &full) < 0) {
			*err = -1;
			return false;
		}
		/* full: for the messages and a conversion (dcmtk loads a path) */
		int fd = pn_storage_get(w->ctx->storage, row.path);
		pn_part10_meta meta;
		struct stat st;
		bool ok = fd >= 0 && pn_part10_meta_read(fd, &meta) == 0 &&
		          strcmp(meta.sop_instance_uid, row.sop_uid) == 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
		if (!ok) {
			pn_error("http %s: WADO-RS: the file of instance %s (\"%s\") is missing or not the instance "
			         "the index "
			         "names; left out of the answer",
			         w->peer, row.sop_uid, full);
			if (fd >= 0)
				close(fd);
			free(full);
			w->missing++;
			pn_audit_tally_add(w->tally, row.study_uid, row.patient_id, row.patient_name, row.sop_class_uid,
			                   false);
			continue;
		}
		uint64_t len = (uint64_t)st.st_size;
		const char *ts = meta.ts_uid;
		if (w->want[0] && strcmp(w->want, meta.ts_uid) != 0) {
			close(fd);
			fd = -1;
			pn_dcm_buf b = {0};
			int crc = pn_dcm_file_transcode(full, w->want, &b);
			if (crc < 0) {
				pn_warning(
				    "http %s: WADO-RS: instance %s is stored in %s and cannot be converted to %s "
				    "without loss; left out of the answer",
				    w->peer, row.sop_uid, meta.ts_uid, w->want);
				free(full);
				w->unconvertible++;
				pn_audit_tally_add(w->tally, row.study_uid, row.patient_id, row.patient_name,
				                   row.sop_class_uid, false);
				continue;
			}
			w->conv = b.data;
			w->conv_len = b.len;
			len = b.len;
			ts = w->want;
		} else {
			posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		}
		free(full);
		w->fd = fd;
		int n = snprintf(w->head, sizeof(w->head),
		                 "--%s\r\nContent-Type: application/dicom; transfer-syntax=%s\r\n"
		                 "Content-Length: %llu\r\n\r\n",
		                 w->boundary, ts, (unsigned long long)len);
		w->head_len = (size_t)n;
		w->head_pos = 0;
		w->in_part = true;
		w->parts++;
		pn_audit_tally_add(w->tally, row.study_uid, row.patient_id, row.patient_name, row.sop_class_uid, true);
		return true;
	}
}

static ssize_t wado_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	wado *w = cls;
	size_t n = 0;
	while (n < max) {
		if (w->head_pos < w->head_len) {
			size_t k = w->head_len - w->head_pos < max - n ? w->head_len - w->head_pos : max - n;
			memcpy(buf + n, w->head + w->head_pos, k);
			w->head_pos += k;
			n += k;
			continue;
		}
		if (w->in_part) {
			if (w->conv) {
				size_t k = w->conv_len - w->conv_pos < max - n ? w->conv_len - w->conv_pos : max - n;
				memcpy(buf + n, w->conv + w->conv_pos, k);
				w->conv_pos += k;
				n += k;
				if (w->conv_pos < w->conv_len)
					continue;
			} else {
				ssize_t k = read(w->fd, buf + n, max - n);
				if (k < 0) {
					pn_error("http %s: WADO-RS: reading a stored file failed: %m", w->peer);
					return MHD_CONTENT_READER_END_WITH_ERROR;
				}
				n += (size_t)k;
				if (k > 0)
					continue;
			}
			end_part(w);
			memcpy(w->head, "\r\n", 2);
			w->head_len = 2;
			w->head_pos = 0;
			continue;
		}
		if (!w->done) {
			int err;
			if (!next_part(w, &err) && err < 0)
				return MHD_CONTENT_READER_END_WITH_ERROR;
			continue;
		}
		if (!w->trailer) {
			w->trailer = true;
			w->head_len = (size_t)snprintf(w->head, sizeof(w->head), "--%s--\r\n", w->boundary);
			w->head_pos = 0;
			continue;
		}
		break;
	}
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	return (ssize_t)n;
}

typedef struct {
	wado *w;
} audit_ctx;

static void audit_study(void *ctx, const pn_audit_study *study, bool failed)
{
	wado *w = ((audit_ctx *)ctx)->w;
	pn_audit_assoc who = {.calling_ae = w->user[0] ? w->user : "HTTP",
	                      .called_ae = w->ctx->cfg->ae_title,
	                      .peer_addr = w->peer,
	                      .tls = w->https};
	pn_audit_instances_transferred(w->ctx->audit, &who, false, NULL, study, failed);
}

static void wado_free(void *cls)
{
	wado *w = cls;
	end_part(w);
	if (w->running)
		pn_find_stop(w->ctx->db);
	pn_hold_release(w->ctx->db, &w->hold);
	if (pn_audit_enabled(w->ctx->audit) && !pn_audit_tally_empty(w->tally)) {
		audit_ctx a = {.w = w};
		pn_audit_tally_each(w->tally, audit_study, &a);
	}
	if (w->missing || w->unconvertible)
		pn_warning("http %s: WADO-RS: %llu instances sent, %llu left out (%llu files missing, %llu not "
		           "convertible)",
		           w->peer, w->parts, w->missing + w->unconvertible, w->missing, w->unconvertible);
	pn_audit_tally_free(w->tally);
	free(w);
}

enum MHD_Result pn_web_wado(pn_web_req *r, const char *study, const char *series, const char *sop)
{
	char want[PN_UID_MAX + 1];
	if (wanted_syntax(r, want) < 0)
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE,
		                    "instances are served as multipart/related; type=\"application/dicom\"");
	if (want[0] && !pn_dcm_ts_lossless_target(want))
		return pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE,
		                    "transfer syntax %s is not one instances are converted to "
		                    "without loss",
		                    want);
	pn_find_cond conds[3];
	size_t n = 0;
	conds[n++] = (pn_find_cond){.tag = 0x0020000D, .kind = PN_FIND_SINGLE, .value = study};
	if (series)
		conds[n++] = (pn_find_cond){.tag = 0x0020000E, .kind = PN_FIND_SINGLE, .value = series};
	if (sop)
		conds[n++] = (pn_find_cond){.tag = 0x00080018, .kind = PN_FIND_SINGLE, .value = sop};
	pn_find_query q = {.level = PN_FIND_IMAGE, .conds = conds, .n_conds = n, .paths_only = true};
	wado *w = calloc(1, sizeof(*w));
	if (!w || pn_audit_tally_create(&w->tally) < 0) {
		free(w);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	w->ctx = r->ctx;
	w->fd = -1;
	w->https = r->https;
	snprintf(w->want, sizeof(w->want), "%s", want);
	snprintf(w->peer, sizeof(w->peer), "%s", r->peer);
	snprintf(w->user, sizeof(w->user), "%s", r->user);
	unsigned char rnd[16];
	RAND_bytes(rnd, sizeof(rnd));
	for (int i = 0; i < 16; i++)
		snprintf(w->boundary + 2 * i, 3, "%02x", rnd[i]);
	bool held = r->ctx->db && pn_hold_study(&w->hold, study) == 0 && pn_hold_take(r->ctx->db, &w->hold) == 0;
	/* the access noted before the listing streams on the connection */
	if (held)
		pn_web_note_access(r->ctx->db, &w->hold);
	if (!held || pn_find_start(r->ctx->db, &q) < 0) {
		wado_free(w);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	}
	w->running = true;
	/* The first part now: an unknown UID is a 404, not an empty body. */
	int err;
	if (!next_part(w, &err)) {
		enum MHD_Result res;
		if (err < 0)
			res = pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
		else if (w->unconvertible)
			res = pn_web_error(r, MHD_HTTP_NOT_ACCEPTABLE,
			                   "no instance can be converted to %s without loss", want);
		else if (w->missing)
			res = pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the stored files are missing");
		else
			res = pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such %s",
			                   sop      ? "instance"
			                   : series ? "series"
			                            : "study");
		wado_free(w);
		return res;
	}
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK, wado_read, w, wado_free);
	if (!resp) {
		wado_free(w);
		return MHD_NO;
	}
	char type[128];
	snprintf(type, sizeof(type), "multipart/related; type=\"application/dicom\"; boundary=%s", w->boundary);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}

enum MHD_Result pn_web_instance_file(pn_web_req *r, const char *study, const char *series, const char *sop)
{
	if (!r->ctx->db)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	pn_instance_file f;
	int rc = pn_browse_instance(r->ctx->db, study, series, sop, &f);
	if (rc < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	if (rc == 0)
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such instance");
	int fd = pn_storage_get(r->ctx->storage, f.path);
	if (fd == -EINVAL)
		return pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the index names a path outside the storage");
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		return pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the file of instance %s is missing", sop);
	}
	/* sendfile() on plain HTTP: the bytes never pass through here */
	struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	char disp[128];
	snprintf(disp, sizeof(disp), "attachment; filename=\"%s.dcm\"", sop); /* a checked UID */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/dicom");
	MHD_add_response_header(resp, "Content-Disposition", disp);
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}
