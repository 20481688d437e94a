#include "assoc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit_tally.h"
#include "commit.h"
#include "find_scp.h"
#include "log.h"
#include "metrics.h"
#include "retrieve.h"
#include "status.h"
#include "tls.h"

typedef struct {
	unsigned stored;
	unsigned failed;
	unsigned echoes;
	unsigned queries;
	unsigned retrieves, sent;
	unsigned commitments;
} assoc_counts;

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

typedef struct {
	pn_audit *audit;
	const pn_audit_assoc *who;
} audit_ctx;

static void audit_received(void *ctx, const pn_audit_study *study, bool failed)
{
	audit_ctx *a = ctx;
	pn_audit_instances_transferred(a->audit, a->who, true, NULL, study, failed);
}

static pn_audit_assoc audit_who(const pn_dcm_assoc_info *info)
{
	return (pn_audit_assoc){
	    .calling_ae = info->calling_ae, .called_ae = info->called_ae, .peer_addr = info->peer, .tls = info->tls};
}

/* A refusal of who the peer is: logged, audited, rejected as "calling AE
 * title not recognized" (PS3.8 7.1.1.9: nothing more is told). */
static bool refuse_peer(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_assoc_info *info,
                        pn_audit_alert_kind kind, const char *why)
{
	pn_warning("association from \"%s\" at %s rejected: %s", info->calling_ae, info->peer, why);
	pn_audit_assoc who = audit_who(info);
	pn_audit_security_alert(ctx->audit, kind, &who, why);
	pn_dcm_assoc_reject(assoc, PN_REJECT_CALLING_AE);
	return false;
}

/* Whether the association may go ahead; logs and rejects if not. */
static bool admit(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_assoc_info *info)
{
	const pn_config *cfg = ctx->cfg;
	if (cfg->require_called_ae && strcmp(info->called_ae, cfg->ae_title) != 0) {
		pn_warning("association from \"%s\" at %s rejected: called AE title \"%s\" is not ours (\"%s\")",
		           info->calling_ae, info->peer, info->called_ae, cfg->ae_title);
		pn_audit_assoc who = audit_who(info);
		char why[128];
		snprintf(why, sizeof(why), "called AE title \"%s\" is not ours", info->called_ae);
		pn_audit_security_alert(ctx->audit, PN_AUDIT_ALERT_UNAUTHORIZED, &who, why);
		pn_dcm_assoc_reject(assoc, PN_REJECT_CALLED_AE);
		return false;
	}
	const pn_peer *peer = pn_config_find_peer(cfg, info->calling_ae);
	char why[1024];
	if (!peer && !cfg->accept_unknown_calling_ae)
		return refuse_peer(ctx, assoc, info, PN_AUDIT_ALERT_UNAUTHORIZED,
		                   "calling AE title is not a configured peer");
	if (peer && !pn_peer_admits_address(peer, info->peer)) {
		snprintf(why, sizeof(why), "calling AE title of [peer.%s] is not allowed from address %s", peer->label,
		         info->peer);
		return refuse_peer(ctx, assoc, info, PN_AUDIT_ALERT_NODE_AUTH, why);
	}
	if (peer && !pn_tls_peer_matches(peer, info, why, sizeof(why)))
		return refuse_peer(ctx, assoc, info, PN_AUDIT_ALERT_NODE_AUTH, why);
	unsigned accepted = 0;
	int rc = pn_dcm_assoc_accept(assoc, peer && (peer->allow & PN_ALLOW_COMMIT), &accepted);
	if (rc == -EPROTONOSUPPORT) {
		pn_warning("association from \"%s\" at %s rejected: not the DICOM application context",
		           info->calling_ae, info->peer);
		pn_dcm_assoc_reject(assoc, PN_REJECT_APP_CONTEXT);
		return false;
	}
	if (rc == 0 && accepted == 0) {
		pn_warning("association from \"%s\" at %s rejected: no presentation context we support",
		           info->calling_ae, info->peer);
		pn_dcm_assoc_reject(assoc, PN_REJECT_NO_CONTEXT);
		return false;
	}
	if (rc < 0) {
		pn_warning("association from \"%s\" at %s failed while accepting", info->calling_ae, info->peer);
		return false;
	}
	return true;
}

/* Runs commands until release, abort or failure; returns the outcome. */
static const char *serve_commands(const pn_store_ctx *ctx, pn_dcm_assoc *assoc, const pn_dcm_assoc_info *info,
                                  pn_audit_tally *stored, assoc_counts *counts)
{
	const pn_peer *peer = pn_config_find_peer(ctx->cfg, info->calling_ae);
	pn_audit_assoc who = audit_who(info);
	for (;;) {
		pn_dcm_cmd cmd;
		pn_store_idle(ctx, assoc);
		int rc = pn_dcm_next_command(assoc, ctx->cfg->dimse_timeout, &cmd);
		if (rc == PN_DCM_RELEASED) {
			/* Everything stored is settled before the peer hears the
			 * association is over. */
			pn_store_settle(ctx);
			int frc = pn_storage_flush(ctx->storage);
			if (frc < 0)
				pn_warning("could not fsync stored folders (%s); their tmp/ names stay for start-up "
				           "recovery",
				           strerror(-frc));
			pn_dcm_release_ack(assoc);
			return "released";
		}
		if (rc == PN_DCM_ABORTED)
			return "aborted by peer";
		if (rc == -ETIMEDOUT) {
			pn_dcm_assoc_abort(assoc);
			return "aborted: no command within dimse_timeout";
		}
		if (rc == -ELOOP) {
			pn_warning("association from \"%s\": a command set nested too deeply to read; aborted",
			           info->calling_ae);
			pn_dcm_assoc_abort(assoc);
			return "aborted: command set nested too deeply";
		}
		if (rc < 0) {
			pn_dcm_assoc_abort(assoc);
			return "aborted: network or protocol error";
		}
		unsigned short status = 0;
		switch (cmd.kind) {
		case PN_CMD_ECHO:
			counts->echoes++;
			if (pn_dcm_echo_respond(assoc, &cmd, PN_STATUS_SUCCESS) < 0) {
				pn_dcm_assoc_abort(assoc);
				return "aborted: could not send C-ECHO-RSP";
			}
			break;
		case PN_CMD_STORE:
			if (peer && !(peer->allow & PN_ALLOW_STORE)) {
				pn_warning("C-STORE from \"%s\" refused: peer [peer.%s] is not allowed to store",
				           info->calling_ae, peer->label);
				if (pn_dcm_discard_dataset(assoc, ctx->cfg->dimse_timeout) < 0 ||
				    pn_dcm_store_respond(assoc, &cmd, PN_STATUS_NOT_AUTHORIZED,
				                         "not allowed to store") < 0) {
					pn_dcm_assoc_abort(assoc);
					return "aborted: network or protocol error";
				}
				counts->failed++;
				break;
			}
			if (pn_store_handle(ctx, assoc, &cmd, info->calling_ae, stored, &status) < 0) {
				counts->failed++;
				pn_dcm_assoc_abort(assoc);
				return "aborted: network or protocol error during C-STORE";
			}
			if (status == PN_STATUS_SUCCESS)
				counts->stored++;
			else
				counts->failed++;
			break;
		case PN_CMD_FIND:
			counts->queries++;
			pn_store_settle(ctx); /* this association's stores, counted */
			if (pn_find_handle(ctx, assoc, &cmd, &who, !peer || (peer->allow & PN_ALLOW_FIND), &status) <
			    0) {
				pn_dcm_assoc_abort(assoc);
				return "aborted: network or protocol error during C-FIND";
			}
			break;
		case PN_CMD_MOVE:
		case PN_CMD_GET: {
			unsigned need = cmd.kind == PN_CMD_MOVE ? PN_ALLOW_MOVE : PN_ALLOW_GET;
			pn_retrieve_result res;
			counts->retrieves++;
			struct timespec rt0;
			clock_gettime(CLOCK_MONOTONIC, &rt0);
			int rrc = pn_retrieve_handle(ctx, assoc, &cmd, &who, !peer || (peer->allow & need), &res);
			pn_metrics_op_done(cmd.kind == PN_CMD_MOVE ? PN_OP_C_MOVE : PN_OP_C_GET,
			                   seconds_since(&rt0) * 1e3);
			if (rrc < 0) {
				pn_dcm_assoc_abort(assoc);
				return cmd.kind == PN_CMD_MOVE ? "aborted: network or protocol error during C-MOVE"
				                               : "aborted: network or protocol error during C-GET";
			}
			counts->sent += res.completed + res.warning;
			break;
		}
		case PN_CMD_ACTION: {
			counts->commitments++;
			int crc = pn_commit_handle(ctx, assoc, &cmd, info->calling_ae, peer);
			if (crc == 1)
				return "released";
			if (crc < 0) {
				pn_dcm_assoc_abort(assoc);
				return "aborted: network or protocol error during N-ACTION";
			}
			break;
		}
		case PN_CMD_CANCEL:
			/* the request it names is already answered (PS3.7 9.3.2.3) */
			pn_debug("association from \"%s\": C-CANCEL-RQ for finished message %u ignored",
			         info->calling_ae, cmd.message_id);
			break;
		default:
			pn_warning("association from \"%s\": unsupported DIMSE command 0x%04X, aborting",
			           info->calling_ae, cmd.command_field);
			pn_dcm_assoc_abort(assoc);
			return "aborted: unsupported command";
		}
	}
}

void pn_assoc_serve(const pn_store_ctx *ctx, pn_dcm_net *net, int fd)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pn_dcm_assoc *assoc = NULL;
	pn_dcm_assoc_info info;
	const pn_config *cfg = ctx->cfg;
	bool tls = pn_tls_is_tls_connection(cfg, fd);
	int rc = pn_dcm_assoc_receive(net, fd, tls, (unsigned long)cfg->max_pdu, cfg->acse_timeout, cfg->dimse_timeout,
	                              &assoc, &info);
	if (rc == -ECONNRESET) {
		/* port probes and health checks: not worth a warning */
		pn_debug("connection closed before an A-ASSOCIATE-RQ (from %s)", info.peer);
		return;
	}
	if (rc == -EACCES) {
		pn_metrics_assoc_open();
		pn_metrics_assoc_close(PN_ASSOC_FAILED);
		pn_warning("TLS connection from %s refused: %s", info.peer, info.tls_error);
		pn_audit_assoc who = {
		    .calling_ae = "", .called_ae = cfg->ae_title, .peer_addr = info.peer, .tls = true};
		pn_audit_security_alert(ctx->audit, PN_AUDIT_ALERT_NODE_AUTH, &who, info.tls_error);
		return;
	}
	if (rc < 0) {
		pn_metrics_assoc_open();
		pn_metrics_assoc_close(PN_ASSOC_FAILED);
		pn_warning("connection from %s%s dropped before a valid A-ASSOCIATE-RQ: %s%s%s", info.peer,
		           tls ? " (TLS)" : "", rc == -ETIMEDOUT ? "timed out (acse_timeout)" : "protocol error",
		           info.tls_error[0] ? ": " : "", info.tls_error);
		return;
	}
	if (tls)
		pn_debug("TLS connection from %s: %s, %s, client certificate %s", info.peer, info.tls_protocol,
		         info.tls_cipher, info.has_cert ? info.cert_subject : "none");
	pn_metrics_assoc_open();
	assoc_counts counts = {0};
	const char *outcome = "rejected";
	pn_audit_tally *stored = NULL;
	if (pn_audit_enabled(ctx->audit) && pn_audit_tally_create(&stored) < 0)
		pn_warning("audit: out of memory; the instances of this association are not audited");
	if (admit(ctx, assoc, &info))
		outcome = serve_commands(ctx, assoc, &info, stored, &counts);
	pn_dcm_assoc_free(assoc);
	pn_store_settle(ctx);
	/* One DICOM Instances Transferred message per study received. */
	pn_audit_assoc who = audit_who(&info);
	audit_ctx actx = {.audit = ctx->audit, .who = &who};
	pn_audit_tally_each(stored, audit_received, &actx);
	pn_audit_tally_free(stored);
	pn_storage_flush(ctx->storage); /* after an abort: no-op after a release */
	pn_store_settle_ended(ctx);     /* a crashed worker's files */
	pn_metrics_assoc_close(strcmp(outcome, "released") == 0   ? PN_ASSOC_RELEASED
	                       : strcmp(outcome, "rejected") == 0 ? PN_ASSOC_REJECTED
	                                                          : PN_ASSOC_ABORTED);
	pn_info("association \"%s\" -> \"%s\" from %s%s%s: %s after %.3f s, %u instances stored, %u failed, %u "
	        "queries, %u retrievals (%u instances sent)%s%s",
	        info.calling_ae, info.called_ae, info.peer, info.tls ? " over " : "", info.tls ? info.tls_protocol : "",
	        outcome, seconds_since(&t0), counts.stored, counts.failed, counts.queries, counts.retrieves,
	        counts.sent, counts.echoes ? ", C-ECHO answered" : "",
	        counts.commitments ? ", storage commitment requested" : "");
}

void pn_assoc_reject_busy(pn_dcm_net *net, int fd, bool tls, unsigned long max_pdu, int acse_timeout)
{
	pn_dcm_assoc *assoc = NULL;
	pn_dcm_assoc_info info;
	if (pn_dcm_assoc_receive(net, fd, tls, max_pdu, acse_timeout, acse_timeout, &assoc, &info) < 0)
		return;
	pn_dcm_assoc_reject(assoc, PN_REJECT_BUSY);
	pn_dcm_assoc_free(assoc);
	pn_metrics_assoc_open();
	pn_metrics_assoc_close(PN_ASSOC_REJECTED);
	pn_warning("association from \"%s\" at %s rejected (transient): max_associations reached", info.calling_ae,
	           info.peer);
}
