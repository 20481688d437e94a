/* The C-FIND SCP: one request, answered row by row as the index streams
 * them (docs/find.md). */
#include "find_scp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "charset.h"
#include "find_query.h"
#include "find_response.h"
#include "log.h"
#include "metrics.h"
#include "status.h"

/* Matches answered between two looks for a C-CANCEL-RQ. */
#define CANCEL_EVERY 32

/* Runs the query and sends the pending responses; returns the final status
 * (or a negative code when the association broke). */
static int stream(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const pn_query *q,
                  unsigned *ret_matches, char *why, size_t whylen)
{
	pn_charset_encoder *enc = NULL;
	if (q->request_charset && q->request_charset[0])
		pn_charset_encoder_create(q->request_charset, &enc); /* none: UTF-8 answers */

	int rc = pn_find_start(ctx->db, &q->sql);
	if (rc < 0) {
		snprintf(why, whylen, "index query failed: %s", pn_db_errmsg(ctx->db));
		pn_charset_encoder_free(enc);
		return PN_STATUS_OUT_OF_RESOURCES;
	}
	unsigned short pending = q->unmatched ? PN_STATUS_PENDING_UNMATCHED : PN_STATUS_PENDING;
	unsigned matches = 0;
	int status = PN_STATUS_SUCCESS;
	pn_find_row row;
	pn_dcm_ds *levels[PN_LEVELS] = {0};
	pn_level_blob blobs[PN_LEVELS] = {0};
	pn_level_blob *blob_ptrs[PN_LEVELS];
	for (int l = 0; l < PN_LEVELS; l++)
		blob_ptrs[l] = &blobs[l];
	/* The direct encoder writes the two little endian syntaxes. */
	bool explicit_vr = strcmp(cmd->transfer_syntax, "1.2.840.10008.1.2.1") == 0;
	bool direct =
	    pn_find_response_direct_ok(q) && (explicit_vr || strcmp(cmd->transfer_syntax, "1.2.840.10008.1.2") == 0);
	unsigned char *out = NULL;
	size_t out_len = 0, out_cap = 0;
	/* Responses are small: while PostgreSQL has the next rows ready the
	 * adapter holds them and writes them in batches, not one or two
	 * packets each (the loopback's per-packet work, a send each and the
	 * client's wake-ups were a large part of a long answer). Whenever we
	 * would wait for PostgreSQL, what is held is sent. */
	for (;;) {
		bool paused = !pn_find_row_ready(ctx->db);
		if (paused && (rc = pn_dcm_assoc_flush(assoc)) < 0) {
			status = rc;
			break;
		}
		rc = pn_find_next(ctx->db, &row);
		if (rc == 0)
			break;
		if (rc < 0) {
			snprintf(why, whylen, "index query failed: %s", pn_db_errmsg(ctx->db));
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		for (int l = 0; l <= q->level && rc >= 0; l++)
			if (q->need_levels & (1u << l))
				rc = pn_level_blob_set(&blobs[l], &row.attrs[l]);
		if (rc < 0) {
			snprintf(why, whylen, "out of memory");
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		if (!direct) {
			for (int l = 0; l <= q->level; l++)
				levels[l] = q->need_levels & (1u << l) ? pn_level_blob_ds(&blobs[l], l) : NULL;
			if (!pn_query_post_match(q, levels))
				continue;
		}
		if (ctx->cfg->max_matches > 0 && matches >= (unsigned)ctx->cfg->max_matches) {
			snprintf(why, whylen, "more than %d matches: narrow the query", ctx->cfg->max_matches);
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		rc = 1;
		if (direct) {
			out_len = 0;
			rc = pn_find_response_encode(q, &row, blob_ptrs, ctx->cfg->ae_title, explicit_vr, &out,
			                             &out_len, &out_cap);
			if (rc == 0)
				rc = pn_dcm_find_respond_encoded(assoc, cmd, pending, out, out_len);
		}
		if (rc == 1) {
			/* The general way: this row, or this query, needs dcmtk. */
			for (int l = 0; direct && l <= q->level; l++)
				levels[l] = q->need_levels & (1u << l) ? pn_level_blob_ds(&blobs[l], l) : NULL;
			pn_dcm_ds *rsp = NULL;
			rc = pn_find_response_build(q, &row, levels, ctx->cfg->ae_title, enc, &rsp);
			if (rc < 0) {
				snprintf(why, whylen, "could not build a response (%s)", strerror(-rc));
				status = PN_STATUS_OUT_OF_RESOURCES;
				break;
			}
			rc = pn_dcm_find_respond(assoc, cmd, pending, rsp, NULL);
			pn_dcm_ds_free(rsp);
		}
		if (rc == -ENOMEM) {
			snprintf(why, whylen, "could not build a response (%s)", strerror(-rc));
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		if (rc < 0) {
			status = rc;
			break;
		}
		matches++;
		/* Not a poll for each match: every CANCEL_EVERY matches, and
		 * whenever the answer waited for PostgreSQL, is soon enough for
		 * a C-CANCEL-RQ. */
		if (matches % CANCEL_EVERY != 0 && !paused)
			continue;
		rc = pn_dcm_cancel_requested(assoc, cmd);
		if (rc != 0) {
			status = rc > 0 ? PN_STATUS_CANCELLED : rc;
			break;
		}
	}
	for (int l = 0; l < PN_LEVELS; l++)
		pn_level_blob_clear(&blobs[l]);
	free(out);
	pn_find_stop(ctx->db);
	pn_charset_encoder_free(enc);
	*ret_matches = matches;
	return status;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Answers the query; for pn_find_handle, which audits it. */
static int answer(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                  bool allowed, pn_dcm_ds *identifier, unsigned short *ret_status);

int pn_find_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const pn_audit_assoc *who,
                   bool allowed, unsigned short *ret_status)
{
	const char *calling_ae = who->calling_ae;
	if (!cmd->has_dataset) {
		pn_warning("C-FIND from \"%s\" refused (0x%04X): the request has no identifier", calling_ae,
		           PN_STATUS_IDENTIFIER_MISMATCH);
		*ret_status = PN_STATUS_IDENTIFIER_MISMATCH;
		return pn_dcm_find_respond(assoc, cmd, PN_STATUS_IDENTIFIER_MISMATCH, NULL, "no identifier");
	}
	pn_dcm_ds *identifier = NULL;
	int rc = pn_dcm_find_receive(assoc, cmd, ctx->cfg->dimse_timeout, &identifier);
	if (rc == -ELOOP) {
		pn_warning("C-FIND from \"%s\": the identifier is nested too deeply to read; association aborted",
		           calling_ae);
		return -EPROTO;
	}
	if (rc == -EBADMSG) {
		pn_warning("C-FIND from \"%s\" refused (0x%04X): the identifier's sequences are nested more than %d "
		           "levels deep",
		           calling_ae, PN_STATUS_IDENTIFIER_MISMATCH, PN_DCM_MAX_NESTING);
		*ret_status = PN_STATUS_IDENTIFIER_MISMATCH;
		return pn_dcm_find_respond(assoc, cmd, PN_STATUS_IDENTIFIER_MISMATCH, NULL,
		                           "sequences nested too deeply");
	}
	if (rc < 0)
		return rc;
	/* The Query audit message carries the identifier in the context's
	 * little endian syntax (explicit VR for big endian, and says which),
	 * encoded now: the query takes the identifier over. */
	pn_dcm_buf idbuf = {0};
	bool audited = pn_audit_enabled(ctx->audit);
	bool implicit = strcmp(cmd->transfer_syntax, "1.2.840.10008.1.2") == 0;
	if (audited && pn_dcm_ds_encode_le(identifier, !implicit, &idbuf) < 0)
		idbuf = (pn_dcm_buf){0};
	unsigned short status = PN_STATUS_OUT_OF_RESOURCES;
	rc = answer(ctx, assoc, cmd, calling_ae, allowed, identifier, &status);
	if (audited)
		pn_audit_query(ctx->audit, who, cmd->sop_class_uid,
		               implicit ? "1.2.840.10008.1.2" : "1.2.840.10008.1.2.1", idbuf.data, idbuf.len,
		               rc < 0 || (status != PN_STATUS_SUCCESS && status != PN_STATUS_CANCELLED));
	free(idbuf.data);
	*ret_status = status;
	return rc;
}

static int answer(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                  bool allowed, pn_dcm_ds *identifier, unsigned short *ret_status)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc;
	char why[256] = "";
	unsigned short status;
	if (!allowed) {
		pn_dcm_ds_free(identifier);
		pn_warning("C-FIND from \"%s\" refused: not allowed to query", calling_ae);
		*ret_status = PN_STATUS_NOT_AUTHORIZED;
		return pn_dcm_find_respond(assoc, cmd, PN_STATUS_NOT_AUTHORIZED, NULL, "not allowed to query");
	}
	pn_query *q = NULL;
	/* relational queries, empty and multiple value matching, timezone
	 * adjustment only where negotiated (extended negotiation): else the
	 * hierarchical rules hold, '""' is a value like any other, a '\\'
	 * list exact values, and dates and times are compared as stored */
	unsigned neg = pn_dcm_assoc_extneg(assoc, cmd->sop_class_uid);
	unsigned flags = (ctx->cfg->pn_case_insensitive ? PN_QUERY_FOLD_NAMES : 0) |
	                 (neg & PN_EXTNEG_RELATIONAL ? PN_QUERY_RELATIONAL : 0) |
	                 (neg & PN_EXTNEG_EMPTY_VALUE ? PN_QUERY_EMPTY_VALUE : 0) |
	                 (neg & PN_EXTNEG_MULTI_VALUE ? PN_QUERY_MULTI_VALUE : 0) |
	                 (neg & PN_EXTNEG_FUZZY_NAMES ? PN_QUERY_FUZZY_NAMES : 0) |
	                 (neg & PN_EXTNEG_DATETIME ? PN_QUERY_COMBINED_DATETIME : 0) |
	                 (neg & PN_EXTNEG_TZ_ADJUST ? PN_QUERY_TZ_ADJUST : 0);
	rc = pn_query_parse(identifier, cmd->sop_class_uid, flags, &q, &status, why, sizeof why);
	if (rc == -ENOMEM) {
		status = PN_STATUS_OUT_OF_RESOURCES;
		snprintf(why, sizeof why, "out of memory");
	}
	if (rc < 0) {
		pn_warning("C-FIND from \"%s\" refused (0x%04X): %s", calling_ae, status, why);
		*ret_status = status;
		return pn_dcm_find_respond(assoc, cmd, status, NULL, why);
	}
	/* the zone of stored values whose study has no offset of its own */
	q->sql.tz_node_name = ctx->cfg->tz_name;
	q->sql.tz_node_offset = ctx->cfg->tz_offset;
	unsigned matches = 0;
	int final = stream(ctx, assoc, cmd, q, &matches, why, sizeof why);
	const char *level = q->level_name;
	bool patient_root = q->patient_root;
	pn_query_free(q);
	if (final < 0)
		return final; /* the association broke */
	status = (unsigned short) final;
	if (status == PN_STATUS_OUT_OF_RESOURCES)
		pn_warning("C-FIND from \"%s\" ended (0x%04X) after %u matches: %s", calling_ae, status, matches, why);
	else
		pn_debug("C-FIND from \"%s\": %s root, %s level, %u matches%s in %.1f ms", calling_ae,
		         patient_root ? "patient" : "study", level, matches,
		         status == PN_STATUS_CANCELLED ? " (cancelled)" : "", ms_since(&t0));
	*ret_status = status;
	rc = pn_dcm_find_respond(assoc, cmd, status, NULL, status == PN_STATUS_SUCCESS ? NULL : why);
	pn_metrics_op_done(PN_OP_C_FIND, ms_since(&t0));
	return rc;
}
