// Storage commitment (PS3.4 J.3): the N-ACTION-RSP, the N-EVENT-REPORT-RQ
// with its answer, and the association a report goes on when the
// requestor's own is gone.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "assoc_internal.h"
#include "guard_internal.h"
#include "util_internal.h"

namespace
{

bool is_failure(unsigned short status)
{
	return status != 0x0000 && (status & 0xF000) != 0xB000 && status != 0x0107 && status != 0x0116;
}

// The accepted Storage Commitment context we may send the report on: on
// our own association one where the peer accepted us as SCP; on the
// requestor's one accepted with its default (SCU) role.
T_ASC_PresentationContextID report_context(const pn_dcm_assoc *a)
{
	int n = ASC_countPresentationContexts(a->assoc->params);
	for (int i = 0; i < n; i++) {
		T_ASC_PresentationContext pc;
		if (ASC_getPresentationContext(a->assoc->params, i, &pc).bad())
			continue;
		if (pc.resultReason != ASC_P_ACCEPTANCE ||
		    strcmp(pc.abstractSyntax, UID_StorageCommitmentPushModelSOPClass) != 0)
			continue;
		if (a->own_net ? pc.acceptedRole == ASC_SC_ROLE_SCP
		               : pc.acceptedRole != ASC_SC_ROLE_SCP && pc.acceptedRole != ASC_SC_ROLE_NONE)
			return pc.presentationContextID;
	}
	return 0;
}

bool add_ref(DcmItem *ds, const DcmTagKey &seq, const pn_dcm_commit_ref &r, bool failed)
{
	DcmItem *item = nullptr;
	if (ds->findOrCreateSequenceItem(seq, item, -2).bad() || !item)
		return false;
	if (item->putAndInsertString(DCM_ReferencedSOPClassUID, r.sop_class_uid).bad() ||
	    item->putAndInsertString(DCM_ReferencedSOPInstanceUID, r.sop_instance_uid).bad())
		return false;
	return !failed || item->putAndInsertUint16(DCM_FailureReason, r.failure_reason).good();
}

} // namespace

extern "C" int pn_dcm_action_respond(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status, const char *comment)
{
	try {
		T_DIMSE_Message rsp;
		memset(&rsp, 0, sizeof(rsp));
		rsp.CommandField = DIMSE_N_ACTION_RSP;
		T_DIMSE_N_ActionRSP &r = rsp.msg.NActionRSP;
		r.MessageIDBeingRespondedTo = cmd->message_id;
		r.DimseStatus = status;
		r.DataSetType = DIMSE_DATASET_NULL;
		// Affected SOP Class/Instance UID and Action Type ID repeat the
		// request's (PS3.7 10.1.4.1); UIDs only when they fit.
		if (cmd->sop_class_uid[0]) {
			OFStandard::strlcpy(r.AffectedSOPClassUID, cmd->sop_class_uid, sizeof(r.AffectedSOPClassUID));
			r.opts |= O_NACTION_AFFECTEDSOPCLASSUID;
		}
		if (cmd->sop_instance_uid[0]) {
			OFStandard::strlcpy(r.AffectedSOPInstanceUID, cmd->sop_instance_uid,
			                    sizeof(r.AffectedSOPInstanceUID));
			r.opts |= O_NACTION_AFFECTEDSOPINSTANCEUID;
		}
		if (cmd->has_action_type_id) {
			r.ActionTypeID = cmd->action_type_id;
			r.opts |= O_NACTION_ACTIONTYPEID;
		}
		std::unique_ptr<DcmDataset> detail;
		if (comment && *comment && is_failure(status)) {
			detail.reset(new DcmDataset());
			char buf[65];
			snprintf(buf, sizeof(buf), "%s", comment);
			detail->putAndInsertString(DCM_ErrorComment, buf);
		}
		OFCondition c =
		    DIMSE_sendMessageUsingMemoryData(a->assoc, cmd->pres_id, &rsp, detail.get(), NULL, NULL, NULL);
		return c.good() ? 0 : -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_commit_report(pn_dcm_assoc *a, const char *transaction_uid, const pn_dcm_commit_ref *refs,
                                    size_t n, const char *retrieve_ae, int timeout, unsigned short *ret_status)
{
	ParseGuard guard;
	try {
		if (!a || !a->assoc)
			return -EINVAL;
		T_ASC_PresentationContextID pres_id = report_context(a);
		if (pres_id == 0)
			return -ENOTSUP;
		DcmDataset info;
		bool failed = false;
		if (info.putAndInsertString(DCM_TransactionUID, transaction_uid).bad())
			return -ENOMEM;
		if (retrieve_ae && *retrieve_ae && info.putAndInsertString(DCM_RetrieveAETitle, retrieve_ae).bad())
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			bool f = refs[i].failure_reason != 0;
			failed |= f;
			if (!add_ref(&info, f ? DCM_FailedSOPSequence : DCM_ReferencedSOPSequence, refs[i], f))
				return -ENOMEM;
		}
		T_DIMSE_Message rq;
		memset(&rq, 0, sizeof(rq));
		rq.CommandField = DIMSE_N_EVENT_REPORT_RQ;
		T_DIMSE_N_EventReportRQ &r = rq.msg.NEventReportRQ;
		unsigned short msg_id = a->next_msg_id++;
		r.MessageID = msg_id;
		OFStandard::strlcpy(r.AffectedSOPClassUID, UID_StorageCommitmentPushModelSOPClass,
		                    sizeof(r.AffectedSOPClassUID));
		OFStandard::strlcpy(r.AffectedSOPInstanceUID, UID_StorageCommitmentPushModelSOPInstance,
		                    sizeof(r.AffectedSOPInstanceUID));
		r.EventTypeID = failed ? 2 : 1;
		r.DataSetType = DIMSE_DATASET_PRESENT;
		OFCondition c = DIMSE_sendMessageUsingMemoryData(a->assoc, pres_id, &rq, NULL, &info, NULL, NULL);
		if (c.bad())
			return c == DUL_PEERABORTEDASSOCIATION || c == DUL_NETWORKCLOSED ? PN_DCM_ABORTED : -EPROTO;

		T_DIMSE_Message rsp;
		memset(&rsp, 0, sizeof(rsp));
		T_ASC_PresentationContextID rsp_pres = 0;
		DcmDataset *cmdset = nullptr;
		DcmDataset *detail = nullptr;
		c = DIMSE_receiveCommand(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, timeout, &rsp_pres,
		                         &rsp, &detail, &cmdset);
		std::unique_ptr<DcmDataset> cmdset_owner(cmdset), detail_owner(detail);
		if (guard.tripped())
			return -EPROTO;
		if (int rc = receive_outcome(c))
			return rc;
		if (rsp.CommandField != DIMSE_N_EVENT_REPORT_RSP ||
		    rsp.msg.NEventReportRSP.MessageIDBeingRespondedTo != msg_id)
			return -EPROTO;
		// An Event Reply is not defined for this event: drop any.
		if (rsp.msg.NEventReportRSP.DataSetType != DIMSE_DATASET_NULL) {
			DIC_UL bytes = 0, pdvs = 0;
			c = DIMSE_ignoreDataSet(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, timeout,
			                        &bytes, &pdvs);
			if (c.bad())
				return condition_to_errno(c);
		}
		*ret_status = rsp.msg.NEventReportRSP.DimseStatus;
		return 0;
	} catch (...) {
		return guard.tripped() ? -EPROTO : -ENOMEM;
	}
}

extern "C" int pn_dcm_commit_open(const char *host, int port, const char *our_ae, const char *peer_ae,
                                  unsigned long max_pdu, int acse_timeout, int dimse_timeout, const pn_dcm_tls *tls,
                                  char *tls_error, size_t tls_error_len, pn_dcm_assoc **ret_assoc)
{
	try {
		auto add = [](T_ASC_Parameters *params) {
			const char *le[] = {UID_LittleEndianExplicitTransferSyntax,
			                    UID_LittleEndianImplicitTransferSyntax};
			// Role selection: SCU role 0, SCP role 1 for us (the
			// requestor of this association).
			return ASC_addPresentationContext(params, 1, UID_StorageCommitmentPushModelSOPClass, le, 2,
			                                  ASC_SC_ROLE_SCP)
			    .good();
		};
		pn_dcm_assoc *a = nullptr;
		int rc = pn_dcm_request(host, port, our_ae, peer_ae, max_pdu, acse_timeout, dimse_timeout, tls,
		                        tls_error, tls_error_len, add, &a);
		if (rc < 0)
			return rc;
		if (report_context(a) == 0) { // accepted, but not with us as SCP
			pn_dcm_scu_close(a);
			return -ECONNREFUSED;
		}
		*ret_assoc = a;
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}
