#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dicom_values.h"
#include "index.h"
#include "log.h"
#include "record.h"
#include "status.h"
#include "uid.h"

static int sink_write(void *ctx, const void *buf, size_t len)
{
	return pn_storage_file_write(ctx, buf, len);
}

static uint32_t generation(void)
{
	uint32_t g = 0;
	if (getrandom(&g, sizeof(g), 0) != sizeof(g))
		g = (uint32_t)rand();
	return g;
}

/* Sends the response; maps a failure to send to "association unusable". */
static int respond(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, unsigned short status, const char *comment,
                   unsigned short *ret_status)
{
	*ret_status = status;
	return pn_dcm_store_respond(assoc, cmd, status, comment) < 0 ? -EPROTO : 0;
}

static unsigned short problem_status(pn_record_problem p)
{
	switch (p) {
	case PN_RECORD_UID_MISMATCH:
		return PN_STATUS_UID_MISMATCH;
	case PN_RECORD_CLASS_MISMATCH:
		return PN_STATUS_CLASS_MISMATCH;
	default:
		return PN_STATUS_BAD_UID;
	}
}

/* Index the finished file and decide the status. The file is linked and
 * left for the caller to keep (done) or drop (discard) via *ret_keep. */
static unsigned short index_instance(const pn_store_ctx *ctx, pn_storage_file *file, pn_record *rec,
                                     const char *calling_ae, bool *ret_keep, char *why, size_t whylen)
{
	pn_instance_rec *row = pn_record_row(rec);
	row->path = pn_storage_file_rel_path(file);
	row->size = pn_storage_file_size(file);
	row->sha256_hex = pn_storage_file_sha256(file);
	row->calling_ae = calling_ae;
	*ret_keep = false;

	if (!ctx->db) {
		snprintf(why, whylen, "could not index: no database connection");
		return PN_STATUS_OUT_OF_INDEX;
	}
	int rc = pn_storage_file_link(file);
	if (rc < 0) {
		snprintf(why, whylen, "could not store \"%s\": %s", row->path, strerror(-rc));
		return PN_STATUS_OUT_OF_STORAGE;
	}
	pn_index_outcome outcome;
	char *old_path = NULL;
	rc = pn_index_store(ctx->db, row, ctx->cfg->duplicate_policy, &outcome, &old_path);
	if (rc < 0) {
		snprintf(why, whylen, "could not index: %s", pn_db_errmsg(ctx->db));
		return PN_STATUS_OUT_OF_INDEX;
	}
	switch (outcome) {
	case PN_INDEX_STORED:
		*ret_keep = true;
		return PN_STATUS_SUCCESS;
	case PN_INDEX_REPLACED:
		*ret_keep = true;
		if (old_path) {
			rc = pn_storage_remove(ctx->storage, old_path);
			if (rc < 0 && rc != -ENOENT)
				pn_warning("could not remove replaced file \"%s\": %s", old_path, strerror(-rc));
			free(old_path);
		}
		pn_info("instance %s replaced (duplicate_policy = replace)", row->sop_uid);
		return PN_STATUS_SUCCESS;
	case PN_INDEX_DUP_IGNORED:
		pn_info("instance %s already stored: kept the first copy (duplicate_policy = ignore)", row->sop_uid);
		return PN_STATUS_SUCCESS;
	case PN_INDEX_DUP_REJECTED:
		snprintf(why, whylen, "instance %s already stored (duplicate_policy = reject)", row->sop_uid);
		return PN_STATUS_DUPLICATE;
	case PN_INDEX_CONFLICT_STUDY:
		snprintf(why, whylen, "hierarchy conflict: study %s belongs to another patient than \"%s\"",
		         row->study_uid, row->patient_id);
		return PN_STATUS_HIERARCHY_CONFLICT;
	case PN_INDEX_CONFLICT_SERIES:
		snprintf(why, whylen, "hierarchy conflict: series %s belongs to another study than %s", row->series_uid,
		         row->study_uid);
		return PN_STATUS_HIERARCHY_CONFLICT;
	}
	snprintf(why, whylen, "unexpected index outcome %d", (int)outcome);
	return PN_STATUS_OUT_OF_INDEX;
}

int pn_store_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                    unsigned short *ret_status)
{
	int timeout = ctx->cfg->dimse_timeout;
	char why[512] = "";
	unsigned short status;

	/* The command's UID names the file: check it before anything is
	 * written, and drain the dataset that follows. */
	if (!pn_uid_valid(cmd->sop_instance_uid) || !pn_uid_valid(cmd->sop_class_uid)) {
		char shown[PN_UID_MAX + 1];
		snprintf(shown, sizeof(shown), "%s", cmd->sop_instance_uid);
		pn_utf8_sanitise(shown);
		pn_warning("C-STORE from \"%s\" refused: Affected SOP Instance/Class UID \"%s\" is not a valid UID",
		           calling_ae, shown);
		if (cmd->has_dataset && pn_dcm_discard_dataset(assoc, timeout) < 0)
			return -EPROTO;
		return respond(assoc, cmd, PN_STATUS_BAD_UID, "invalid Affected SOP Instance UID", ret_status);
	}

	char rel[PN_REL_PATH_MAX];
	pn_storage_file *file = NULL;
	int rc = pn_storage_rel_path(cmd->sop_instance_uid, generation(), rel);
	if (rc == 0)
		rc = pn_storage_file_begin(ctx->storage, rel, &file);
	if (rc < 0) {
		pn_error("C-STORE of %s refused: could not create a temporary file: %s", cmd->sop_instance_uid,
		         strerror(-rc));
		if (pn_dcm_discard_dataset(assoc, timeout) < 0)
			return -EPROTO;
		return respond(assoc, cmd, PN_STATUS_OUT_OF_STORAGE, "could not create file", ret_status);
	}

	pn_dcm_sink sink = {.write = sink_write, .ctx = file};
	rc = pn_dcm_store_receive(assoc, cmd, timeout, &sink);
	if (rc == -ETIMEDOUT || rc == -EPROTO || rc == -ENOMEM) {
		pn_storage_file_discard(file);
		pn_warning("C-STORE of %s from \"%s\" broken off while receiving: %s", cmd->sop_instance_uid,
		           calling_ae, rc == -ETIMEDOUT ? "timed out" : "network or protocol error");
		return rc;
	}
	if (rc == 0)
		rc = pn_storage_file_finish(file);
	if (rc < 0) {
		pn_storage_file_discard(file);
		pn_error("C-STORE of %s refused: could not write \"%s\": %s", cmd->sop_instance_uid, rel,
		         strerror(-rc));
		return respond(assoc, cmd, PN_STATUS_OUT_OF_STORAGE, "could not write file", ret_status);
	}

	pn_dcm_ds *ds = NULL;
	pn_record *rec = NULL;
	pn_record_problem problem = PN_RECORD_OK;
	bool charset_ok = true;
	rc = pn_dcm_ds_load(pn_storage_file_tmp_path(file), &ds);
	if (rc < 0) {
		status = PN_STATUS_CANNOT_PARSE;
		snprintf(why, sizeof(why), "the dataset cannot be parsed");
		goto refuse;
	}
	rc = pn_record_build(ds, cmd->sop_class_uid, cmd->sop_instance_uid, &rec, &problem, &charset_ok, why,
	                     sizeof(why));
	if (rc == -EBADMSG) {
		status = problem_status(problem);
		goto refuse;
	}
	if (rc < 0) {
		status = PN_STATUS_OUT_OF_INDEX;
		snprintf(why, sizeof(why), "could not read the attributes: %s", strerror(-rc));
		goto refuse;
	}
	if (!charset_ok)
		pn_warning("instance %s: text not convertible from Specific Character Set \"%s\"; unknown bytes "
		           "indexed as '?'",
		           cmd->sop_instance_uid,
		           pn_record_row(rec)->specific_character_set ? pn_record_row(rec)->specific_character_set
		                                                      : "");

	bool keep = false;
	status = index_instance(ctx, file, rec, calling_ae, &keep, why, sizeof(why));
	pn_record_free(rec);
	pn_dcm_ds_free(ds);
	if (keep)
		pn_storage_file_done(file);
	else
		pn_storage_file_discard(file);
	if (status != PN_STATUS_SUCCESS) {
		if (status == PN_STATUS_OUT_OF_INDEX || status == PN_STATUS_OUT_OF_STORAGE)
			pn_error("C-STORE of %s from \"%s\" refused (0x%04X): %s", cmd->sop_instance_uid, calling_ae,
			         status, why);
		else
			pn_warning("C-STORE of %s from \"%s\" failed (0x%04X): %s", cmd->sop_instance_uid, calling_ae,
			           status, why);
	} else {
		pn_debug("stored %s", cmd->sop_instance_uid);
	}
	return respond(assoc, cmd, status, status == PN_STATUS_SUCCESS ? NULL : why, ret_status);

refuse:
	pn_record_free(rec);
	pn_dcm_ds_free(ds);
	pn_storage_file_discard(file);
	pn_warning("C-STORE of %s from \"%s\" failed (0x%04X): %s", cmd->sop_instance_uid, calling_ae, status, why);
	return respond(assoc, cmd, status, why, ret_status);
}
