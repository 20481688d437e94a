/* The C-MOVE and C-GET SCPs (PS3.4 C.4.2, C.4.3): the identifier selects
 * instances through the same index query as C-FIND; each instance is then
 * read from disk and sent in its own C-STORE sub-operation, to the
 * configured destination (C-MOVE) or back on the same association (C-GET). */
#include "retrieve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dicom_values.h"
#include "find.h"
#include "find_match.h"
#include "hold.h"
#include "retention.h"
#include "audit_tally.h"
#include "log.h"
#include "part10.h"
#include "status.h"
#include "uid.h"

#define TAG_LEVEL PN_TAG_(0x0008, 0x0052)
#define TAG_SOP_UID PN_TAG_(0x0008, 0x0018)
#define TAG_PATIENT_ID PN_TAG_(0x0010, 0x0020)
#define TAG_STUDY_UID PN_TAG_(0x0020, 0x000D)
#define TAG_SERIES_UID PN_TAG_(0x0020, 0x000E)
#define PN_TAG_(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

#define UID_PATIENT_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.1.2"
#define UID_STUDY_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define UID_PATIENT_ROOT_GET "1.2.840.10008.5.1.4.1.2.1.3"
#define UID_STUDY_ROOT_GET "1.2.840.10008.5.1.4.1.2.2.3"

/* One instance to send: strings owned. */
typedef struct {
	char *sop_uid, *sop_class_uid, *ts, *path;
	size_t study; /* index into target_list.studies */
} target;

/* Whose instances they are, for the audit trail: one entry per run of
 * targets of the same study (the index gives a study's instances
 * together), not per target. */
typedef struct {
	char *study_uid, *patient_id, *patient_name;
} study_of;

typedef struct {
	target *items;
	size_t n, cap;
	study_of *studies;
	size_t n_studies, cap_studies;
} target_list;

static void targets_free(target_list *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->items[i].sop_uid);
		free(t->items[i].sop_class_uid);
		free(t->items[i].ts);
		free(t->items[i].path);
	}
	for (size_t i = 0; i < t->n_studies; i++) {
		free(t->studies[i].study_uid);
		free(t->studies[i].patient_id);
		free(t->studies[i].patient_name);
	}
	free(t->studies);
	free(t->items);
	memset(t, 0, sizeof *t);
}

static int targets_add(target_list *t, const pn_find_row *row)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		target *items = realloc(t->items, cap * sizeof *items);
		if (!items)
			return -ENOMEM;
		t->items = items;
		t->cap = cap;
	}
	target *x = &t->items[t->n];
	x->sop_uid = strdup(row->sop_uid);
	x->sop_class_uid = strdup(row->sop_class_uid);
	x->ts = strdup(row->transfer_syntax_uid);
	x->path = strdup(row->path);
	t->n++; /* counted now so that targets_free frees a partial entry */
	if (!x->sop_uid || !x->sop_class_uid || !x->ts || !x->path)
		return -ENOMEM;
	const char *study = row->study_uid ? row->study_uid : "";
	if (t->n_studies == 0 || strcmp(t->studies[t->n_studies - 1].study_uid, study) != 0) {
		if (t->n_studies == t->cap_studies) {
			size_t cap = t->cap_studies ? t->cap_studies * 2 : 4;
			study_of *grown = realloc(t->studies, cap * sizeof *grown);
			if (!grown)
				return -ENOMEM;
			t->studies = grown;
			t->cap_studies = cap;
		}
		study_of *so = &t->studies[t->n_studies++];
		so->study_uid = strdup(study);
		so->patient_id = strdup(row->patient_id ? row->patient_id : "");
		so->patient_name = strdup(row->patient_name ? row->patient_name : "");
		if (!so->study_uid || !so->patient_id || !so->patient_name)
			return -ENOMEM;
	}
	x->study = t->n_studies - 1;
	return 0;
}

/* The identifier's unique keys (PS3.4 C.4.2.2.1): every level above the
 * retrieve level one value, the retrieve level one value or a UID list.
 * Relational retrieval (C.4.2.2.2, when negotiated): the keys of the
 * levels above may be absent; those given still select. Other keys are
 * ignored. */
typedef struct {
	bool patient_root;
	int level;
	char *values[4]; /* by level: PatientID, StudyInstanceUID, ... */
	pn_match matches[4];
	pn_find_cond conds[4];
	size_t n_conds;
} retrieve_keys;

static void keys_clear(retrieve_keys *k)
{
	for (int i = 0; i < 4; i++) {
		free(k->values[i]);
		pn_match_clear(&k->matches[i]);
	}
	memset(k, 0, sizeof *k);
}

static const char *const level_names[4] = {"PATIENT", "STUDY", "SERIES", "IMAGE"};
static const uint32_t unique_tags[4] = {TAG_PATIENT_ID, TAG_STUDY_UID, TAG_SERIES_UID, TAG_SOP_UID};
static const char *const unique_names[4] = {"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"};

static int parse_keys(pn_dcm_ds *id, bool patient_root, bool relational, retrieve_keys *k, unsigned short *ret_status,
                      char *why, size_t whylen)
{
	memset(k, 0, sizeof *k);
	k->patient_root = patient_root;
	*ret_status = PN_STATUS_IDENTIFIER_MISMATCH;
	char *level = NULL;
	int rc = pn_dcm_ds_get(id, TAG_LEVEL, &level);
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0 || !level) {
		snprintf(why, whylen, "QueryRetrieveLevel (0008,0052) is missing");
		return -EINVAL;
	}
	pn_trim(level);
	k->level = -1;
	for (int l = 0; l < 4; l++)
		if (strcmp(level, level_names[l]) == 0)
			k->level = l;
	if (k->level < 0 || (k->level == 0 && !patient_root)) {
		pn_utf8_sanitise(level);
		snprintf(why, whylen, "QueryRetrieveLevel \"%.16s\" is not valid in the %s Root model", level,
		         patient_root ? "Patient" : "Study");
		free(level);
		return -EINVAL;
	}
	free(level);
	/* Study Root has no patient level: its keys start at the study. */
	int first = patient_root ? 0 : 1;
	for (int l = first; l <= k->level; l++) {
		char *v = NULL;
		rc = pn_dcm_ds_get(id, unique_tags[l], &v);
		if (rc == -ENOMEM)
			return rc;
		if (v)
			pn_trim(v);
		if ((!v || !v[0]) && relational && l < k->level) {
			free(v);
			continue;
		}
		if (!v || !v[0]) {
			free(v);
			snprintf(why, whylen, "%s level needs %s", level_names[k->level], unique_names[l]);
			return -EINVAL;
		}
		k->values[l] = v;
		bool uid = l > 0;
		bool list = strchr(v, '\\') != NULL;
		if (strpbrk(v, "*?") || (list && (l < k->level || !uid))) {
			snprintf(why, whylen, "%s must be %s", unique_names[l],
			         l < k->level || !uid ? "a single value" : "a UID or a list of UIDs");
			return -EINVAL;
		}
		rc = pn_match_parse(uid ? "UI" : "LO", v, false, &k->matches[l]);
		if (rc == -ENOMEM)
			return rc;
		if (rc < 0) {
			*ret_status = PN_STATUS_UNABLE_TO_PROCESS;
			snprintf(why, whylen, "%s is not a valid UID%s", unique_names[l], list ? " list" : "");
			return -EINVAL;
		}
		pn_find_cond *c = &k->conds[k->n_conds++];
		c->tag = unique_tags[l];
		c->kind = k->matches[l].kind == PN_MATCH_LIST ? PN_FIND_LIST : PN_FIND_SINGLE;
		c->value = k->matches[l].value;
		c->list = (const char *const *)k->matches[l].list;
		c->n_list = k->matches[l].n_list;
	}
	*ret_status = 0;
	return 0;
}

/* The holds of a retrieve: its PatientID at PATIENT level, else each
 * study it names (one, or a list at STUDY level); a relational retrieve
 * that names no study: the studies of what it selects, listed first. */
static int select_targets(const pn_store_ctx *ctx, const retrieve_keys *k, target_list *out);
static int hold_keys(const pn_store_ctx *ctx, const retrieve_keys *k, pn_hold *h)
{
	if (k->level == 0)
		return pn_hold_patient(h, k->matches[0].value);
	if (!k->values[1]) {
		target_list first = {0};
		int rc = select_targets(ctx, k, &first);
		for (size_t i = 0; rc == 0 && i < first.n_studies; i++)
			rc = pn_hold_study(h, first.studies[i].study_uid);
		targets_free(&first);
		return rc;
	}
	const pn_match *m = &k->matches[1];
	if (m->kind != PN_MATCH_LIST)
		return pn_hold_study(h, m->value);
	int rc = 0;
	for (size_t i = 0; i < m->n_list && rc == 0; i++)
		rc = pn_hold_study(h, m->list[i]);
	return rc;
}

/* Every instance the keys select, in the order the index gives them. */
static int select_targets(const pn_store_ctx *ctx, const retrieve_keys *k, target_list *out)
{
	pn_find_query q = {
	    .level = PN_FIND_IMAGE,
	    .conds = k->conds,
	    .n_conds = k->n_conds,
	    .paths_only = true,
	};
	int rc = pn_find_start(ctx->db, &q);
	if (rc < 0)
		return rc;
	pn_find_row row;
	while ((rc = pn_find_next(ctx->db, &row)) == 1) {
		if ((rc = targets_add(out, &row)) < 0)
			break;
	}
	pn_find_stop(ctx->db);
	return rc;
}

/* Opens a stored file and finds its dataset, so that it can be sent as it
 * lies on disk. The file must hold the instance the index says it does.
 * Returns the descriptor, -ENOENT, -EILSEQ (it holds another instance) or
 * -EBADMSG. */
static int open_stored(const pn_storage *storage, const char *rel, const char *sop_uid, pn_part10_meta *meta,
                       pn_dcm_raw *raw)
{
	int fd = pn_storage_get(storage, rel);
	if (fd < 0)
		return fd == -ENOENT || fd == -ENOTDIR ? -ENOENT : -EBADMSG;
	int rc = pn_part10_meta_read(fd, meta);
	struct stat st;
	if (rc == 0 && strcmp(meta->sop_instance_uid, sop_uid) != 0)
		rc = -EILSEQ;
	if (rc == 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= meta->dataset_offset))
		rc = -EBADMSG;
	if (rc < 0) {
		close(fd);
		return rc;
	}
	raw->fd = fd;
	raw->offset = meta->dataset_offset;
	raw->length = (uint64_t)st.st_size - meta->dataset_offset;
	raw->ts_uid = meta->ts_uid;
	return fd;
}

/* A stored file opened and checked ahead of its sub-operation. */
typedef struct {
	int fd; /* or -errno: the sub-operation fails with it */
	char *full;
	pn_part10_meta meta;
	pn_dcm_raw raw;
} opened;

/* Opens the next instance's file while the receiver still works on the
 * current one, and asks the kernel to read it in: from a cold disk, its
 * reading overlaps the network instead of following it. */
static void open_ahead(const pn_store_ctx *ctx, const target *t, opened *o)
{
	o->full = NULL;
	/* the path too: a conversion hands it to dcmtk (start_sending) */
	if (pn_storage_full_path(ctx->storage, t->path, &o->full) < 0) {
		o->fd = -ENOMEM;
		return;
	}
	o->fd = open_stored(ctx->storage, t->path, t->sop_uid, &o->meta, &o->raw);
	if (o->fd >= 0)
		posix_fadvise(o->fd, 0, 0, POSIX_FADV_WILLNEED);
}

static void opened_close(opened *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -EBADF;
	free(o->full);
	o->full = NULL;
}

/* Starts one C-STORE sub-operation: the stored bytes as they are when the
 * receiver took their syntax, converted through dcmtk otherwise. Its
 * answer is read by pn_dcm_store_finish. */
static int start_sending(pn_dcm_assoc *sub, const target *t, opened *o, const char *originator_ae,
                         unsigned short originator_msg_id)
{
	if (o->fd < 0)
		return o->fd;
	/* raw.fd points into o: refresh it in case o was copied */
	o->raw.ts_uid = o->meta.ts_uid;
	return pn_dcm_store_start(sub, o->full, &o->raw, t->sop_class_uid, t->sop_uid, t->ts, originator_ae,
	                          originator_msg_id);
}

typedef struct {
	char *buf;
	size_t len, cap;
} uid_list;

static void uid_list_add(uid_list *l, const char *uid)
{
	size_t n = strlen(uid);
	if (l->len + n + 2 > l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		while (cap < l->len + n + 2)
			cap *= 2;
		char *b = realloc(l->buf, cap);
		if (!b)
			return; /* the list is informative; the counts stay exact */
		l->buf = b;
		l->cap = cap;
	}
	if (l->len)
		l->buf[l->len++] = '\\';
	memcpy(l->buf + l->len, uid, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Whether a C-STORE status counts as completed, warning or failed. */
static bool store_warning(unsigned short s)
{
	return s == 0xB000 || s == 0xB006 || s == 0xB007;
}

typedef struct {
	pn_audit *audit;
	const pn_audit_assoc *who, *dest;
	bool begin;
} audit_ctx;

static void audit_study(void *ctx, const pn_audit_study *study, bool failed)
{
	audit_ctx *a = ctx;
	if (a->begin)
		pn_audit_begin_transfer(a->audit, a->who, a->dest, study);
	else
		pn_audit_instances_transferred(a->audit, a->who, false, a->dest, study, failed);
}

/* One audit message per study: Begin Transferring with what was selected,
 * or DICOM Instances Transferred with what was sent (and whether some of
 * the study failed). */
static void audit_targets(const pn_store_ctx *ctx, const pn_audit_assoc *who, const pn_audit_assoc *dest,
                          const target_list *targets, const bool *sent, bool begin)
{
	if (!pn_audit_enabled(ctx->audit) || targets->n == 0)
		return;
	pn_audit_tally *tally = NULL;
	if (pn_audit_tally_create(&tally) < 0) {
		pn_warning("audit: out of memory; no audit message for this retrieval");
		return;
	}
	for (size_t i = 0; i < targets->n; i++) {
		const target *t = &targets->items[i];
		const study_of *so = &targets->studies[t->study];
		if (pn_audit_tally_add(tally, so->study_uid, so->patient_id, so->patient_name, t->sop_class_uid,
		                       begin || sent[i]) < 0)
			break;
	}
	audit_ctx a = {.audit = ctx->audit, .who = who, .dest = dest, .begin = begin};
	pn_audit_tally_each(tally, audit_study, &a);
	pn_audit_tally_free(tally);
}

int pn_retrieve_handle(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_cmd *cmd, const pn_audit_assoc *who,
                       bool allowed, pn_retrieve_result *ret)
{
	const char *calling_ae = who->calling_ae;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool is_move = cmd->kind == PN_CMD_MOVE;
	const char *op = is_move ? "C-MOVE" : "C-GET";
	memset(ret, 0, sizeof *ret);
	pn_dcm_subops ops = {0};
	char why[256] = "";
	unsigned short status;

	pn_dcm_ds *id = NULL;
	if (cmd->has_dataset) {
		int rc = pn_dcm_find_receive(assoc, cmd, ctx->cfg->dimse_timeout, &id);
		if (rc == -ELOOP) {
			pn_warning("%s from \"%s\": the identifier is nested too deeply to read; association aborted",
			           op, calling_ae);
			return -EPROTO;
		}
		if (rc == -EBADMSG) {
			pn_warning(
			    "%s from \"%s\" refused (0x%04X): the identifier's sequences are nested more than %d "
			    "levels deep",
			    op, calling_ae, PN_STATUS_IDENTIFIER_MISMATCH, PN_DCM_MAX_NESTING);
			ret->status = PN_STATUS_IDENTIFIER_MISMATCH;
			return pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_IDENTIFIER_MISMATCH, &ops, NULL,
			                               "sequences nested too deeply");
		}
		if (rc < 0)
			return rc;
	}
	if (!allowed) {
		pn_dcm_ds_free(id);
		pn_warning("%s from \"%s\" refused: not allowed to %s", op, calling_ae, is_move ? "move" : "get");
		ret->status = PN_STATUS_NOT_AUTHORIZED;
		return pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_NOT_AUTHORIZED, &ops, NULL,
		                               is_move ? "not allowed to move" : "not allowed to get");
	}
	if (!id) {
		pn_warning("%s from \"%s\" refused: the request has no identifier", op, calling_ae);
		ret->status = PN_STATUS_IDENTIFIER_MISMATCH;
		return pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_IDENTIFIER_MISMATCH, &ops, NULL, "no identifier");
	}
	bool patient_root = strcmp(cmd->sop_class_uid, UID_PATIENT_ROOT_MOVE) == 0 ||
	                    strcmp(cmd->sop_class_uid, UID_PATIENT_ROOT_GET) == 0;

	/* The destination first: an unknown one costs nothing else. */
	const pn_peer *dest = NULL;
	if (is_move) {
		dest = pn_config_find_peer(ctx->cfg, cmd->move_destination);
		if (!dest) {
			pn_dcm_ds_free(id);
			pn_warning("C-MOVE from \"%s\" refused: move destination \"%s\" is not a configured peer",
			           calling_ae, cmd->move_destination);
			ret->status = PN_STATUS_MOVE_DESTINATION_UNKNOWN;
			return pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_MOVE_DESTINATION_UNKNOWN, &ops, NULL,
			                               "move destination unknown");
		}
	}

	retrieve_keys keys;
	int rc = parse_keys(id, patient_root, pn_dcm_assoc_extneg(assoc, cmd->sop_class_uid) & PN_EXTNEG_RELATIONAL,
	                    &keys, &status, why, sizeof why);
	pn_dcm_ds_free(id);
	if (rc < 0) {
		keys_clear(&keys);
		if (rc == -ENOMEM) {
			status = PN_STATUS_RETRIEVE_NO_MATCHES;
			snprintf(why, sizeof why, "out of memory");
		}
		pn_warning("%s from \"%s\" refused (0x%04X): %s", op, calling_ae, status, why);
		ret->status = status;
		return pn_dcm_retrieve_respond(assoc, cmd, status, &ops, NULL, why);
	}

	/* What is selected stays until it is sent: no delete of it meanwhile
	 * (hold.h). */
	pn_hold hold = {0};
	rc = hold_keys(ctx, &keys, &hold);
	if (rc == 0)
		rc = pn_hold_take(ctx->db, &hold);
	if (rc == 0 && pn_retention_touch(ctx->db, &hold) < 0)
		pn_debug("%s: the studies' access time was not noted: %s", op, pn_db_errmsg(ctx->db));
	target_list targets = {0};
	if (rc == 0)
		rc = select_targets(ctx, &keys, &targets);
	keys_clear(&keys);
	if (rc < 0) {
		pn_hold_release(ctx->db, &hold);
		targets_free(&targets);
		pn_warning("%s from \"%s\" failed: could not list the instances: %s", op, calling_ae,
		           pn_db_errmsg(ctx->db));
		ret->status = PN_STATUS_RETRIEVE_NO_MATCHES;
		return pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_RETRIEVE_NO_MATCHES, &ops, NULL,
		                               "index query failed");
	}
	ops.remaining = (unsigned)targets.n;
	/* C-MOVE: the destination, as configured; C-GET: the requester. */
	pn_audit_assoc dest_who = {.calling_ae = dest ? dest->ae_title : who->calling_ae,
	                           .called_ae = dest ? dest->ae_title : who->calling_ae,
	                           .peer_addr = dest ? dest->host : who->peer_addr,
	                           .tls = dest ? dest->tls : who->tls};
	bool *sent = calloc(targets.n ? targets.n : 1, sizeof(bool));
	if (!sent) {
		pn_hold_release(ctx->db, &hold);
		targets_free(&targets);
		ret->status = PN_STATUS_RETRIEVE_NO_MATCHES;
		return pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_RETRIEVE_NO_MATCHES, &ops, NULL, "out of memory");
	}
	audit_targets(ctx, who, is_move ? &dest_who : NULL, &targets, sent, true);

	/* C-MOVE: one sub-association to the destination. */
	pn_dcm_assoc *sub = is_move ? NULL : assoc;
	uid_list failed_uids = {0};
	bool cancelled = false, broken = false, refused = false;
	char tls_error[768] = "";
	if (is_move && targets.n > 0) {
		pn_dcm_offer *offers = calloc(targets.n, sizeof *offers);
		if (!offers) {
			rc = -ENOMEM;
		} else {
			for (size_t i = 0; i < targets.n; i++) {
				offers[i].sop_class_uid = targets.items[i].sop_class_uid;
				offers[i].transfer_syntax_uid = targets.items[i].ts;
			}
			rc = dest->tls && !ctx->tls_out
			         ? -ENOTCONN
			         : pn_dcm_scu_open(dest->host, dest->port, ctx->cfg->ae_title, dest->ae_title, offers,
			                           targets.n, (unsigned long)ctx->cfg->max_pdu, ctx->cfg->acse_timeout,
			                           ctx->cfg->dimse_timeout, dest->tls ? ctx->tls_out : NULL, tls_error,
			                           sizeof(tls_error), &sub);
			free(offers);
		}
		if (rc < 0) {
			pn_warning("C-MOVE from \"%s\": cannot open %s association to \"%s\" at %s:%d (%s%s%s)",
			           calling_ae, dest->tls ? "a TLS" : "an", dest->ae_title, dest->host, dest->port,
			           rc == -ECONNREFUSED ? "refused or unreachable"
			           : rc == -EACCES     ? "TLS handshake failed"
			           : rc == -ENOTCONN   ? "no TLS context: see the start-up log"
			                               : strerror(-rc),
			           tls_error[0] ? ": " : "", tls_error);
			refused = true;
			sub = NULL;
		}
	}

	opened cur = {.fd = -EBADF}, next = {.fd = -EBADF};
	if (targets.n > 0 && !refused)
		open_ahead(ctx, &targets.items[0], &cur);
	for (size_t i = 0; i < targets.n && !refused; i++) {
		const target *t = &targets.items[i];
		if (i > 0) {
			opened_close(&cur);
			cur = next;
			next.fd = -EBADF;
			next.full = NULL;
		}
		rc = pn_dcm_cancel_requested(assoc, cmd);
		if (rc != 0) {
			if (rc > 0)
				cancelled = true;
			else
				broken = true; /* the requester is gone */
			break;
		}
		unsigned short st = 0;
		bool requester_gone = false;
		rc = start_sending(sub, t, &cur, is_move ? calling_ae : NULL, is_move ? cmd->message_id : 0);
		if (rc == 0) {
			/* While the receiver works on this instance: C-MOVE's pending
			 * response for what is done (C-GET keeps one message at a
			 * time on its association), and the next file. */
			if (is_move && i > 0 &&
			    pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_PENDING, &ops, NULL, NULL) < 0)
				requester_gone = true;
			if (i + 1 < targets.n)
				open_ahead(ctx, &targets.items[i + 1], &next);
			rc = pn_dcm_store_finish(sub, ctx->cfg->dimse_timeout, &st);
		} else if (i + 1 < targets.n) {
			open_ahead(ctx, &targets.items[i + 1], &next);
		}
		ops.remaining--;
		if (rc == 0 && st == 0) {
			ops.completed++;
			sent[i] = true;
		} else if (rc == 0 && store_warning(st)) {
			ops.warning++;
			sent[i] = true;
		} else {
			ops.failed++;
			uid_list_add(&failed_uids, t->sop_uid);
			if (rc == -ENOENT || rc == -EBADMSG || rc == -EILSEQ)
				pn_error("%s from \"%s\": instance %s: file \"%s\" %s", op, calling_ae, t->sop_uid,
				         t->path,
				         rc == -ENOENT   ? "is missing"
				         : rc == -EILSEQ ? "holds another instance"
				                         : "cannot be read");
			else if (rc == -ENOTSUP)
				pn_warning("%s from \"%s\": instance %s: no accepted presentation context for it", op,
				           calling_ae, t->sop_uid);
			else if (rc == 0)
				pn_warning("%s from \"%s\": instance %s refused by the receiver with status 0x%04X", op,
				           calling_ae, t->sop_uid, st);
		}
		if (rc == -ETIMEDOUT || rc == -EPROTO) {
			broken = true;
			pn_warning("%s from \"%s\": the %s association broke (%s) after %u sub-operations", op,
			           calling_ae, is_move ? "destination's" : "requesting",
			           rc == -ETIMEDOUT ? "timeout" : "protocol", ops.completed + ops.failed + ops.warning);
			break;
		}
		if (requester_gone) {
			cancelled = true; /* the requester left: stop sending on its behalf */
			break;
		}
		if (!is_move && ops.remaining > 0 &&
		    pn_dcm_retrieve_respond(assoc, cmd, PN_STATUS_PENDING, &ops, NULL, NULL) < 0) {
			broken = true; /* C-GET: the same association */
			break;
		}
	}
	opened_close(&cur);
	opened_close(&next);
	if (is_move && sub)
		pn_dcm_scu_close(sub);

	/* What was not attempted: failed, unless the peer cancelled. */
	if (!cancelled && ops.remaining > 0) {
		for (size_t i = targets.n - ops.remaining; i < targets.n; i++)
			uid_list_add(&failed_uids, targets.items[i].sop_uid);
		ops.failed += ops.remaining;
		ops.remaining = 0;
	}
	if (cancelled)
		status = PN_STATUS_CANCELLED;
	else if (ops.failed == 0 && ops.warning == 0)
		status = PN_STATUS_SUCCESS;
	else if (ops.completed == 0 && ops.warning == 0)
		status = PN_STATUS_RETRIEVE_NO_SUBOPS;
	else
		status = PN_STATUS_SUBOPS_WITH_FAILURES;
	ret->status = status;
	ret->completed = ops.completed;
	ret->failed = ops.failed;
	ret->warning = ops.warning;
	pn_info("%s from \"%s\"%s%s: %zu instances, %u sent, %u failed, %u warnings%s, status 0x%04X in %.3f s", op,
	        calling_ae, is_move ? " to " : "", is_move ? dest->ae_title : "", targets.n, ops.completed, ops.failed,
	        ops.warning, cancelled ? ", cancelled" : "", status, seconds_since(&t0));
	audit_targets(ctx, who, is_move ? &dest_who : NULL, &targets, sent, false);
	free(sent);
	targets_free(&targets);
	if (broken && !is_move) {
		pn_hold_release(ctx->db, &hold);
		free(failed_uids.buf);
		return -EPROTO;
	}
	const char *comment = status == PN_STATUS_RETRIEVE_NO_SUBOPS
	                          ? (refused ? "destination refused or unreachable" : "no sub-operation succeeded")
	                          : NULL;
	rc = pn_dcm_retrieve_respond(assoc, cmd, status, &ops, failed_uids.buf, comment);
	/* after the answer: the requester does not wait for it */
	pn_hold_release(ctx->db, &hold);
	free(failed_uids.buf);
	return rc;
}
