/* Storage commitment: the worker's part (commit.h). */
#include "commit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file_check.h"
#include "verify_check.h"
#include "status.h"
#include "log.h"
#include "uid.h"

#define TAG_TRANSACTION_UID 0x00081195u
#define TAG_REFERENCED_SOP_SEQUENCE 0x00081199u
#define TAG_REFERENCED_SOP_CLASS_UID 0x00081150u
#define TAG_REFERENCED_SOP_INSTANCE_UID 0x00081155u

/* Files checked at once, and read ahead, for a result. */
#define CHECK_JOBS 4
#define CHECK_WINDOW 32

int pn_commit_lease(const pn_config *cfg)
{
	return cfg->acse_timeout + 2 * cfg->dimse_timeout + 10;
}

typedef struct {
	char transaction_uid[PN_UID_MAX + 1];
	char (*uids)[2][PN_UID_MAX + 1]; /* class, instance */
	pn_commit_ref *refs;
	size_t n;
} request;

static void request_free(request *r)
{
	free(r->uids);
	free(r->refs);
}

/* A UID element of `ds` into out: false when absent, empty or not a UID. */
static bool get_uid(const pn_dcm_ds *ds, uint32_t tag, char out[PN_UID_MAX + 1], int *oom)
{
	char *v = NULL;
	int rc = pn_dcm_ds_get(ds, tag, &v);
	if (rc == -ENOMEM)
		*oom = 1;
	bool ok = rc == 0 && strlen(v) <= PN_UID_MAX && pn_uid_valid(v);
	if (ok)
		memcpy(out, v, strlen(v) + 1);
	free(v);
	return ok;
}

/* The Action Information (PS3.4 J.3.2.1.1): 0, an N-ACTION failure status
 * with *why, or -ENOMEM. */
static int parse(const pn_dcm_ds *ds, request *r, const char **why)
{
	int oom = 0;
	memset(r, 0, sizeof(*r));
	if (!get_uid(ds, TAG_TRANSACTION_UID, r->transaction_uid, &oom)) {
		*why = "Transaction UID (0008,1195) missing or not a UID";
		return oom ? -ENOMEM : PN_STATUS_INVALID_ARGUMENT;
	}
	size_t cap = 0;
	pn_dcm_ds *item = NULL;
	for (;;) {
		pn_dcm_ds *next = NULL;
		int rc = pn_dcm_ds_item_after(ds, TAG_REFERENCED_SOP_SEQUENCE, item, &next);
		pn_dcm_ds_free(item);
		item = next;
		if (rc == -ENOENT)
			break;
		if (rc < 0) {
			request_free(r);
			return -ENOMEM;
		}
		if (r->n == PN_COMMIT_MAX_REFS) {
			pn_dcm_ds_free(item);
			request_free(r);
			*why = "more references than a request may hold";
			return PN_STATUS_RESOURCE_LIMITATION;
		}
		if (r->n == cap) {
			cap = cap ? cap * 2 : 64;
			void *grown = realloc(r->uids, cap * sizeof(*r->uids));
			if (!grown) {
				pn_dcm_ds_free(item);
				request_free(r);
				return -ENOMEM;
			}
			r->uids = grown;
		}
		if (!get_uid(item, TAG_REFERENCED_SOP_CLASS_UID, r->uids[r->n][0], &oom) ||
		    !get_uid(item, TAG_REFERENCED_SOP_INSTANCE_UID, r->uids[r->n][1], &oom)) {
			pn_dcm_ds_free(item);
			request_free(r);
			*why = "a Referenced SOP Sequence item without a valid Referenced SOP Class or Instance UID";
			return oom ? -ENOMEM : PN_STATUS_INVALID_ARGUMENT;
		}
		r->n++;
	}
	if (r->n == 0) {
		request_free(r);
		*why = "Referenced SOP Sequence (0008,1199) missing or empty";
		return PN_STATUS_INVALID_ARGUMENT;
	}
	r->refs = calloc(r->n, sizeof(*r->refs));
	if (!r->refs) {
		request_free(r);
		return -ENOMEM;
	}
	for (size_t i = 0; i < r->n; i++)
		r->refs[i] = (pn_commit_ref){.sop_class_uid = r->uids[i][0], .sop_uid = r->uids[i][1]};
	return 0;
}

/* A reference's Failure Reason from its row alone (0: its file is to be
 * checked). */
static unsigned short judge_row(const pn_commit_item *it)
{
	if (!pn_dcm_is_storage_class(it->sop_class_uid))
		return PN_STATUS_CLASS_NOT_SUPPORTED;
	if (!it->stored_class || !it->path || !it->checksum)
		return PN_STATUS_NO_SUCH_INSTANCE;
	if (strcmp(it->stored_class, it->sop_class_uid) != 0)
		return PN_STATUS_CLASS_INSTANCE_CONFLICT;
	if (it->missing)
		return PN_STATUS_PROCESSING_FAILURE;
	return 0;
}

static pn_stored_file stored_file(const pn_commit_item *it)
{
	return (pn_stored_file){.sop_uid = it->sop_uid,
	                        .sop_class_uid = it->stored_class,
	                        .path = it->path,
	                        .checksum = it->checksum,
	                        .size = it->size};
}

/* The files of the references that passed judge_row, as verify checks
 * them (present, their size and checksum, their meta header naming the
 * instance), CHECK_JOBS at once with reads started CHECK_WINDOW ahead: a
 * cold disk serves a study's files in parallel. */
static void check_files(const char *root, pn_commit_item *items, size_t n)
{
	size_t *todo = malloc((n ? n : 1) * sizeof(*todo));
	size_t m = 0;
	for (size_t i = 0; todo && i < n; i++)
		if (!items[i].failure_reason)
			todo[m++] = i;
	pn_checker *c = NULL;
	if (!todo || (m > 0 && pn_checker_create(root, CHECK_JOBS, CHECK_WINDOW, &c) < 0)) {
		/* no memory or no threads: nothing is said to be committed */
		for (size_t i = 0; i < n; i++)
			if (!items[i].failure_reason)
				items[i].failure_reason = PN_STATUS_PROCESSING_FAILURE;
		free(todo);
		return;
	}
	size_t added = 0;
	for (size_t k = 0; k < m; k++) {
		while (added < m && added - k < CHECK_WINDOW) {
			pn_stored_file f = stored_file(&items[todo[added]]);
			pn_checker_add(c, added++, &f);
		}
		const pn_check *ck = pn_checker_wait(c, k);
		if (ck->status != PN_CHECK_OK)
			items[todo[k]].failure_reason = PN_STATUS_PROCESSING_FAILURE;
	}
	pn_checker_free(c);
	free(todo);
}

int pn_commit_result(pn_db *db, const char *root, long long pk, pn_commit_item **ret_items, size_t *ret_n)
{
	pn_commit_item *items = NULL;
	size_t n = 0;
	int event_type = 0;
	int rc = pn_commit_items(db, pk, &items, &n, &event_type);
	if (rc < 0)
		return rc;
	if (event_type == 0) {
		for (size_t i = 0; i < n; i++)
			items[i].failure_reason = judge_row(&items[i]);
		check_files(root, items, n);
		rc = pn_commit_set_result(db, pk, items, n);
		if (rc < 0) {
			pn_commit_items_free(items, n);
			return rc;
		}
	}
	*ret_items = items;
	*ret_n = n;
	return 0;
}

pn_dcm_commit_ref *pn_commit_refs(const pn_commit_item *items, size_t n)
{
	pn_dcm_commit_ref *refs = calloc(n ? n : 1, sizeof(*refs));
	for (size_t i = 0; refs && i < n; i++)
		refs[i] = (pn_dcm_commit_ref){.sop_class_uid = items[i].sop_class_uid,
		                              .sop_instance_uid = items[i].sop_uid,
		                              .failure_reason = items[i].failure_reason};
	return refs;
}

/* The command's own checks, before its dataset is read (PS3.7 10.1.4):
 * 0 or a failure status with *why. */
static unsigned short check_command(const pn_dcm_cmd *cmd, const pn_peer *peer, const char **why)
{
	if (!peer || !(peer->allow & PN_ALLOW_COMMIT)) {
		*why = "not allowed to request storage commitment";
		return PN_STATUS_NOT_AUTHORIZED;
	}
	if (strcmp(cmd->sop_class_uid, PN_DCM_COMMIT_CLASS) != 0) {
		*why = "Requested SOP Class UID is not Storage Commitment Push Model";
		return PN_STATUS_NO_SUCH_CLASS;
	}
	if (strcmp(cmd->sop_instance_uid, PN_DCM_COMMIT_INSTANCE) != 0) {
		*why = "Requested SOP Instance UID is not the well-known 1.2.840.10008.1.20.1.1";
		return PN_STATUS_INVALID_OBJECT;
	}
	if (!cmd->has_action_type_id || cmd->action_type_id != 1) {
		*why = "Action Type ID is not 1 (Request Storage Commitment)";
		return PN_STATUS_NO_SUCH_ACTION;
	}
	if (!cmd->has_dataset) {
		*why = "no Action Information";
		return PN_STATUS_INVALID_ARGUMENT;
	}
	return 0;
}

/* Answers a refused request; -1 when the answer could not be sent. */
static int refuse(pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae, unsigned short status,
                  const char *why)
{
	pn_warning("storage commitment request from \"%s\" refused (0x%04X): %s", calling_ae, status, why);
	return pn_dcm_action_respond(assoc, cmd, status, why) < 0 ? -1 : 0;
}

/* The report on the requestor's association: 0 delivered or left to the
 * senders with the association going on, 1 released, -1 broken. */
static int report_here(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const char *calling_ae, const request *r,
                       long long pk)
{
	pn_commit_item *items = NULL;
	size_t n = 0;
	int rc = pn_commit_result(ctx->db, ctx->cfg->storage_root, pk, &items, &n);
	if (rc < 0) {
		/* the lease runs out, and a sender computes it */
		pn_warning("storage commitment \"%s\" from \"%s\": could not compute the result: %s",
		           r->transaction_uid, calling_ae, pn_db_errmsg(ctx->db));
		return 0;
	}
	size_t failed = 0;
	for (size_t i = 0; i < n; i++)
		failed += items[i].failure_reason != 0;
	pn_dcm_commit_ref *refs = pn_commit_refs(items, n);
	unsigned short status = 0;
	/* A requestor that has sent something since its N-ACTION-RSP (most
	 * often A-RELEASE-RQ) is not interrupted: the report goes on a new
	 * association, and the loop reads what it sent. */
	if (pn_dcm_wait_readable(assoc, 0) != 0) {
		free(refs);
		pn_commit_items_free(items, n);
		pn_info("storage commitment \"%s\" from \"%s\": the requestor went on before its report; reporting "
		        "on a new association",
		        r->transaction_uid, calling_ae);
		if (pn_commit_reschedule(ctx->db, pk, 0, "the requestor went on before its report") < 0)
			pn_warning("storage commitment \"%s\": could not hand the report to the sender (%s); it goes "
			           "when its claim runs out",
			           r->transaction_uid, pn_db_errmsg(ctx->db));
		return 0;
	}
	rc = refs ? pn_dcm_commit_report(assoc, r->transaction_uid, refs, n, ctx->cfg->ae_title,
	                                 ctx->cfg->dimse_timeout, &status)
	          : -ENOMEM;
	free(refs);
	pn_commit_items_free(items, n);
	int out = 0;
	const char *error = NULL;
	switch (rc) {
	case 0:
		if (status != 0)
			pn_warning("storage commitment \"%s\": \"%s\" answered the report with 0x%04X",
			           r->transaction_uid, calling_ae, status);
		else
			pn_info("storage commitment \"%s\" from \"%s\": %zu of %zu committed, reported on its "
			        "association",
			        r->transaction_uid, calling_ae, n - failed, n);
		if (pn_commit_finish(ctx->db, pk, true, NULL) < 0)
			pn_warning("storage commitment \"%s\": could not mark the report delivered (%s); it may be "
			           "sent again",
			           r->transaction_uid, pn_db_errmsg(ctx->db));
		return 0;
	case PN_DCM_RELEASED:
		error = "the requestor released its association first";
		out = 1;
		break;
	case PN_DCM_ABORTED:
		error = "the requestor's association ended first";
		out = -1;
		break;
	case -ENOTSUP:
		error = "no context to report on";
		break;
	default:
		error = "the report could not be sent on the requestor's association";
		out = -1;
		break;
	}
	pn_info("storage commitment \"%s\" from \"%s\": %s; reporting on a new association", r->transaction_uid,
	        calling_ae, error);
	if (pn_commit_reschedule(ctx->db, pk, 0, error) < 0)
		pn_warning("storage commitment \"%s\": could not hand the report to the sender (%s); it goes "
		           "when its claim runs out",
		           r->transaction_uid, pn_db_errmsg(ctx->db));
	if (out == 1) {
		pn_store_settle(ctx);
		pn_dcm_release_ack(assoc);
	}
	return out;
}

int pn_commit_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const char *calling_ae,
                     const pn_peer *peer)
{
	const char *why = NULL;
	unsigned short status = check_command(cmd, peer, &why);
	if (status) {
		if (cmd->has_dataset && pn_dcm_discard_dataset(assoc, ctx->cfg->dimse_timeout) < 0)
			return -1;
		return refuse(assoc, cmd, calling_ae, status, why);
	}
	pn_dcm_ds *ds = NULL;
	int rc = pn_dcm_find_receive(assoc, cmd, ctx->cfg->dimse_timeout, &ds);
	if (rc == -EBADMSG)
		return refuse(assoc, cmd, calling_ae, PN_STATUS_INVALID_ARGUMENT,
		              "Action Information nested too deeply");
	if (rc < 0)
		return -1;
	request r;
	rc = parse(ds, &r, &why);
	pn_dcm_ds_free(ds);
	if (rc == -ENOMEM)
		return refuse(assoc, cmd, calling_ae, PN_STATUS_PROCESSING_FAILURE, "out of memory");
	if (rc > 0)
		return refuse(assoc, cmd, calling_ae, (unsigned short)rc, why);

	/* What this association stored is durable before anything is said
	 * to be committed: its index rows committed, its files' names
	 * fsync'ed. */
	pn_store_settle(ctx);
	int frc = pn_storage_flush(ctx->storage);
	long long pk = 0;
	rc = frc < 0 ? frc
	             : pn_commit_record(ctx->db, r.transaction_uid, calling_ae, r.refs, r.n, pn_commit_lease(ctx->cfg),
	                                &pk);
	if (rc == -EEXIST) {
		char msg[160];
		snprintf(msg, sizeof(msg), "Transaction UID \"%s\" is taken by another request", r.transaction_uid);
		rc = refuse(assoc, cmd, calling_ae, PN_STATUS_INVALID_ARGUMENT, msg);
		request_free(&r);
		return rc;
	}
	if (rc < 0) {
		pn_warning("storage commitment request from \"%s\" refused (0x%04X): could not record it: %s",
		           calling_ae, PN_STATUS_PROCESSING_FAILURE, frc < 0 ? strerror(-frc) : pn_db_errmsg(ctx->db));
		request_free(&r);
		return pn_dcm_action_respond(assoc, cmd, PN_STATUS_PROCESSING_FAILURE, "could not record the request") <
		               0
		           ? -1
		           : 0;
	}
	if (rc == 1)
		pn_info("storage commitment \"%s\" from \"%s\" asked again: reported again", r.transaction_uid,
		        calling_ae);
	if (pn_dcm_action_respond(assoc, cmd, PN_STATUS_SUCCESS, NULL) < 0) {
		/* recorded: the report still goes, on a new association */
		pn_commit_reschedule(ctx->db, pk, 0, "the N-ACTION-RSP could not be sent");
		request_free(&r);
		return -1;
	}
	rc = report_here(ctx, assoc, calling_ae, &r, pk);
	request_free(&r);
	return rc;
}
