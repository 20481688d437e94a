/* A study or a series to save, as one ZIP file (zip.h): the stored files
 * as they are, STUDY/SERIES/SOP.dcm, read into the archive as the client
 * reads it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "audit_tally.h"
#include "hold.h"
#include "log.h"
#include "part10.h"
#include "search.h"
#include "storage.h"
#include "web_internal.h"
#include "zip.h"

#define BLOCK (256 * 1024)

typedef struct {
	pn_store_ctx *ctx;
	pn_web_search *search;
	pn_zip *zip;
	pn_bytes out; /* headers and descriptors waiting to go */
	size_t out_pos;
	int fd;
	bool done, finished;
	unsigned long long files, missing;
	pn_audit_tally *tally;
	char peer[64], user[64];
	bool https;
	pn_hold hold; /* the study, until the archive is out */
} download;

static void audit_study(void *ctx, const pn_audit_study *study, bool failed)
{
	download *d = ctx;
	pn_audit_assoc who = {.calling_ae = d->user[0] ? d->user : "HTTP",
	                      .called_ae = d->ctx->cfg->ae_title,
	                      .peer_addr = d->peer,
	                      .tls = d->https};
	pn_audit_instances_transferred(d->ctx->audit, &who, false, NULL, study, failed);
}

static void download_free(void *cls)
{
	download *d = cls;
	if (d->fd >= 0)
		close(d->fd);
	pn_web_search_free(d->search);
	pn_hold_release(d->ctx->db, &d->hold);
	pn_zip_free(d->zip);
	pn_bytes_free(&d->out);
	if (pn_audit_enabled(d->ctx->audit) && !pn_audit_tally_empty(d->tally))
		pn_audit_tally_each(d->tally, audit_study, d);
	pn_audit_tally_free(d->tally);
	if (d->missing)
		pn_warning("http %s: download: %llu files sent, %llu missing (left out, logged above)", d->peer,
		           d->files, d->missing);
	free(d);
}

/* Opens the next file and queues its entry's header; false at the end. */
static int next_file(download *d)
{
	for (;;) {
		pn_dcm_ds *rsp = NULL;
		pn_find_row row;
		int rc = pn_web_search_next(d->search, NULL, &rsp, &row);
		if (rc == 0)
			return 0;
		if (rc < 0) {
			pn_error("http %s: download: the index query failed", d->peer);
			return -1;
		}
		char *series = NULL;
		pn_dcm_ds_get(rsp, 0x0020000E, &series);
		pn_dcm_ds_free(rsp);
		char *full = NULL;
		int fd = -1;
		pn_part10_meta meta;
		struct stat st;
		/* the absolute path only for the message below */
		if (pn_storage_full_path(d->ctx->storage, row.path, &full) == 0)
			fd = pn_storage_get(d->ctx->storage, row.path);
		bool ok = fd >= 0 && pn_part10_meta_read(fd, &meta) == 0 &&
		          strcmp(meta.sop_instance_uid, row.sop_uid) == 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
		if (!ok) {
			pn_error(
			    "http %s: download: the file of instance %s (\"%s\") is missing or not the instance the "
			    "index names; left out",
			    d->peer, row.sop_uid, full ? full : row.path);
			if (fd >= 0)
				close(fd);
			free(full);
			free(series);
			d->missing++;
			pn_audit_tally_add(d->tally, row.study_uid, row.patient_id, row.patient_name, row.sop_class_uid,
			                   false);
			continue;
		}
		free(full);
		/* UIDs only: checked digits and dots, nothing a path could abuse */
		char name[256];
		snprintf(name, sizeof(name), "%s/%s/%s.dcm", row.study_uid,
		         series && pn_uid_valid(series) ? series : "series", row.sop_uid);
		free(series);
		if (pn_zip_entry_begin(d->zip, name, st.st_mtime, &d->out) < 0) {
			close(fd);
			return -1;
		}
		posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		d->fd = fd;
		d->files++;
		pn_audit_tally_add(d->tally, row.study_uid, row.patient_id, row.patient_name, row.sop_class_uid, true);
		return 1;
	}
}

static ssize_t download_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	download *d = cls;
	size_t n = 0;
	while (n < max) {
		if (d->out_pos < d->out.len) {
			size_t k = d->out.len - d->out_pos < max - n ? d->out.len - d->out_pos : max - n;
			memcpy(buf + n, d->out.data + d->out_pos, k);
			d->out_pos += k;
			n += k;
			if (d->out_pos == d->out.len)
				d->out.len = d->out_pos = 0;
			continue;
		}
		if (d->fd >= 0) {
			ssize_t k = read(d->fd, buf + n, max - n);
			if (k < 0) {
				pn_error("http %s: download: reading a stored file failed: %m", d->peer);
				return MHD_CONTENT_READER_END_WITH_ERROR;
			}
			if (k > 0) {
				pn_zip_entry_data(d->zip, buf + n, (size_t)k);
				n += (size_t)k;
				continue;
			}
			close(d->fd);
			d->fd = -1;
			if (pn_zip_entry_end(d->zip, &d->out) < 0)
				return MHD_CONTENT_READER_END_WITH_ERROR;
			continue;
		}
		if (!d->done) {
			int rc = next_file(d);
			if (rc < 0)
				return MHD_CONTENT_READER_END_WITH_ERROR;
			if (rc == 0)
				d->done = true;
			continue;
		}
		if (!d->finished) {
			d->finished = true;
			if (pn_zip_finish(d->zip, &d->out) < 0)
				return MHD_CONTENT_READER_END_WITH_ERROR;
			continue;
		}
		break;
	}
	return n ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
}

enum MHD_Result pn_web_download(pn_web_req *r, const char *study, const char *series)
{
	pn_dcm_ds *id = pn_web_identifier("IMAGE");
	if (!id || pn_dcm_ds_put(id, 0x0020000D, study) < 0 ||
	    pn_dcm_ds_put(id, 0x0020000E, series ? series : "") < 0 || pn_dcm_ds_put(id, 0x00080018, "") < 0) {
		pn_dcm_ds_free(id);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	pn_query *q = NULL;
	char why[256];
	if (pn_web_query(id, false, &q, why, sizeof(why)) < 0)
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
	download *d = calloc(1, sizeof(*d));
	if (!d || pn_zip_create(&d->zip) < 0 || pn_audit_tally_create(&d->tally) < 0) {
		pn_query_free(q);
		if (d)
			pn_zip_free(d->zip);
		free(d);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	d->ctx = r->ctx;
	d->fd = -1;
	d->https = r->https;
	snprintf(d->peer, sizeof(d->peer), "%s", r->peer);
	snprintf(d->user, sizeof(d->user), "%s", r->user);
	if (!r->ctx->db || pn_hold_study(&d->hold, study) < 0 || pn_hold_take(r->ctx->db, &d->hold) < 0) {
		pn_query_free(q);
		download_free(d);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	}
	pn_web_note_access(r->ctx->db, &d->hold);
	if (pn_web_search_start(r->ctx, q, false, PN_FIND_ORDER_NUMBER, 0, -1, &d->search) < 0) {
		download_free(d);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	}
	/* The first file now: nothing to save is a 404, not an empty archive. */
	int rc = next_file(d);
	if (rc <= 0) {
		bool missing = d->missing > 0;
		download_free(d);
		if (rc < 0)
			return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index query failed");
		return missing ? pn_web_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "the stored files are missing")
		               : pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such %s", series ? "series" : "study");
	}
	struct MHD_Response *resp =
	    MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK, download_read, d, download_free);
	if (!resp) {
		download_free(d);
		return MHD_NO;
	}
	char disp[160];
	snprintf(disp, sizeof(disp), "attachment; filename=\"%s.zip\"", series ? series : study); /* checked UIDs */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/zip");
	MHD_add_response_header(resp, "Content-Disposition", disp);
	return pn_web_queue(r, MHD_HTTP_OK, resp);
}
