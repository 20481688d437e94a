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
#include "log.h"
#include "status.h"

#define PN_TAG_RETRIEVE_AE 0x00080054u

static int encode_text(void *ctx, const char *in, size_t len, char **ret_out)
{
	return pn_charset_from_utf8(ctx, in, len, ret_out);
}

/* Answers in the request's character set when every value fits in it,
 * otherwise in UTF-8 (values are UTF-8 already). */
static int set_charset(pn_dcm_ds *rsp, pn_charset_encoder *enc, const char *request_charset)
{
	if (enc) {
		int rc = pn_dcm_ds_recode_text(rsp, encode_text, enc, request_charset);
		if (rc != -EILSEQ)
			return rc < 0 ? rc : 0;
	}
	int rc = pn_dcm_ds_recode_text(rsp, NULL, NULL, "ISO_IR 192");
	return rc < 0 ? rc : 0;
}

static int put_count(pn_dcm_ds *rsp, uint32_t tag, int64_t n)
{
	char buf[24] = "";
	if (n >= 0)
		snprintf(buf, sizeof buf, "%" PRId64, n);
	return pn_dcm_ds_put(rsp, tag, buf);
}

static int bit_index(unsigned bit)
{
	int i = 0;
	while (bit > 1) {
		bit >>= 1;
		i++;
	}
	return i;
}

/* The response for one row: every key of the request, in its order. */
static int build_response(const pn_query *q, const pn_find_row *row, pn_dcm_ds *const levels[PN_LEVELS],
                          const char *our_ae, pn_dcm_ds **ret_rsp)
{
	pn_dcm_ds *rsp = NULL;
	int rc = pn_dcm_ds_create(&rsp);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < q->n_keys && rc >= 0; i++) {
		const pn_query_key *k = &q->keys[i];
		switch (k->role) {
		case PN_KEY_SKIP:
			break;
		case PN_KEY_LEVEL:
			rc = pn_dcm_ds_put(rsp, k->tag, q->level_name);
			break;
		case PN_KEY_RETRIEVE_AE:
			rc = pn_dcm_ds_put(rsp, k->tag, our_ae);
			break;
		case PN_KEY_AVAILABILITY:
			rc = pn_dcm_ds_put(rsp, k->tag, "ONLINE");
			break;
		case PN_KEY_COMPUTED:
			if (k->computed == PN_FIND_C_MODALITIES)
				rc = pn_dcm_ds_put(rsp, k->tag, row->modalities ? row->modalities : "");
			else if (k->computed == PN_FIND_C_SOP_CLASSES)
				rc = pn_dcm_ds_put(rsp, k->tag, row->sop_classes ? row->sop_classes : "");
			else
				rc = put_count(rsp, k->tag, row->counts[bit_index(k->computed)]);
			break;
		case PN_KEY_RETURN:
			rc = -ENOENT;
			if (k->returned && levels[k->level])
				rc = pn_dcm_ds_copy(rsp, levels[k->level], k->tag, q->identifier);
			if (rc == -ENOENT)
				rc = pn_dcm_ds_put(rsp, k->tag, "");
			break;
		}
	}
	/* Where to retrieve from, in every response (PS3.4 C.4.1.1.3.2): we
	 * keep no media file-sets, so this is the only location we give. */
	if (rc >= 0 && !q->asked_retrieve_ae)
		rc = pn_dcm_ds_put(rsp, PN_TAG_RETRIEVE_AE, our_ae);
	if (rc < 0) {
		pn_dcm_ds_free(rsp);
		return rc;
	}
	*ret_rsp = rsp;
	return 0;
}

/* The parsed attribute blob of each level, kept while the next rows carry
 * the same bytes: a name query returns a patient's studies one after the
 * other, and parsing the blobs was the largest cost per response. */
typedef struct {
	pn_dcm_ds *ds;
	unsigned char *bytes;
	size_t len;
	bool have;
} level_cache;

static void cache_clear(level_cache *c)
{
	pn_dcm_ds_free(c->ds);
	free(c->bytes);
	memset(c, 0, sizeof *c);
}

/* The dataset for this blob, parsed once; NULL if it cannot be read. */
static pn_dcm_ds *cached_level(level_cache *c, const pn_blob *b, int level)
{
	if (c->have && c->len == b->len && (b->len == 0 || memcmp(c->bytes, b->data, b->len) == 0))
		return c->ds;
	cache_clear(c);
	c->bytes = malloc(b->len ? b->len : 1);
	if (!c->bytes)
		return NULL; /* not kept: parsed again next time */
	memcpy(c->bytes, b->data, b->len);
	c->len = b->len;
	c->have = true;
	if (pn_dcm_ds_load_buffer(b->data, b->len, &c->ds) < 0) {
		pn_warning("C-FIND: a stored attribute blob at level %d cannot be read; left out", level);
		c->ds = NULL;
	}
	return c->ds;
}

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
	level_cache cache[PN_LEVELS] = {0};
	/* Responses are small: while PostgreSQL has the next rows ready they
	 * go out in full TCP segments, not one or two packets each (the
	 * loopback's per-packet work and the client's wake-ups were a large
	 * part of a long answer). Whenever we would wait for PostgreSQL, what
	 * is held is sent. */
	bool corked = pn_dcm_assoc_cork(assoc, true) == 0;
	for (;;) {
		if (corked && !pn_find_row_ready(ctx->db)) {
			pn_dcm_assoc_cork(assoc, false);
			pn_dcm_assoc_cork(assoc, true);
		}
		rc = pn_find_next(ctx->db, &row);
		if (rc == 0)
			break;
		if (rc < 0) {
			snprintf(why, whylen, "index query failed: %s", pn_db_errmsg(ctx->db));
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		for (int l = 0; l <= q->level; l++)
			levels[l] = q->need_levels & (1u << l) ? cached_level(&cache[l], &row.attrs[l], l) : NULL;
		if (!pn_query_post_match(q, levels))
			continue;
		if (ctx->cfg->max_matches > 0 && matches >= (unsigned)ctx->cfg->max_matches) {
			snprintf(why, whylen, "more than %d matches: narrow the query", ctx->cfg->max_matches);
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		pn_dcm_ds *rsp = NULL;
		rc = build_response(q, &row, levels, ctx->cfg->ae_title, &rsp);
		if (rc == 0)
			rc = set_charset(rsp, enc, q->request_charset);
		if (rc < 0) {
			pn_dcm_ds_free(rsp);
			snprintf(why, whylen, "could not build a response (%s)", strerror(-rc));
			status = PN_STATUS_OUT_OF_RESOURCES;
			break;
		}
		rc = pn_dcm_find_respond(assoc, cmd, pending, rsp, NULL);
		pn_dcm_ds_free(rsp);
		if (rc < 0) {
			status = rc;
			break;
		}
		matches++;
		rc = pn_dcm_cancel_requested(assoc, cmd);
		if (rc != 0) {
			status = rc > 0 ? PN_STATUS_CANCELLED : rc;
			break;
		}
	}
	for (int l = 0; l < PN_LEVELS; l++)
		cache_clear(&cache[l]);
	if (corked)
		pn_dcm_assoc_cork(assoc, false);
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

int pn_find_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                   bool allowed, unsigned short *ret_status)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!cmd->has_dataset) {
		pn_warning("C-FIND from \"%s\" refused (0x%04X): the request has no identifier", calling_ae,
		           PN_STATUS_IDENTIFIER_MISMATCH);
		*ret_status = PN_STATUS_IDENTIFIER_MISMATCH;
		return pn_dcm_find_respond(assoc, cmd, PN_STATUS_IDENTIFIER_MISMATCH, NULL, "no identifier");
	}
	pn_dcm_ds *identifier = NULL;
	int rc = pn_dcm_find_receive(assoc, cmd, ctx->cfg->dimse_timeout, &identifier);
	if (rc < 0)
		return rc;
	char why[256] = "";
	unsigned short status;
	if (!allowed) {
		pn_dcm_ds_free(identifier);
		pn_warning("C-FIND from \"%s\" refused: not allowed to query", calling_ae);
		*ret_status = PN_STATUS_NOT_AUTHORIZED;
		return pn_dcm_find_respond(assoc, cmd, PN_STATUS_NOT_AUTHORIZED, NULL, "not allowed to query");
	}
	pn_query *q = NULL;
	rc =
	    pn_query_parse(identifier, cmd->sop_class_uid, ctx->cfg->pn_case_insensitive, &q, &status, why, sizeof why);
	if (rc == -ENOMEM) {
		status = PN_STATUS_OUT_OF_RESOURCES;
		snprintf(why, sizeof why, "out of memory");
	}
	if (rc < 0) {
		pn_warning("C-FIND from \"%s\" refused (0x%04X): %s", calling_ae, status, why);
		*ret_status = status;
		return pn_dcm_find_respond(assoc, cmd, status, NULL, why);
	}
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
	return pn_dcm_find_respond(assoc, cmd, status, NULL, status == PN_STATUS_SUCCESS ? NULL : why);
}
