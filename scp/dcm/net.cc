// Associations and DIMSE messages on a socket handed to us by the listener.
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrae.h>
#include <dcmtk/dcmdata/dcvrlo.h>
#include <dcmtk/dcmdata/dcvrsh.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/dcmdata/dcvrobow.h>
#include <dcmtk/dcmdata/dcvrul.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmtls/tlscond.h>

#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <new>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "assoc_internal.h"
#include "guard_internal.h"
#include "tls_internal.h"
#include "util_internal.h"

// Our implementation identity in the meta header of files we write.
#define PN_IMPLEMENTATION_CLASS_UID "2.25.159142522441686625131027334693319430699"
#define PN_IMPLEMENTATION_VERSION "PACSNODE_010"

struct pn_dcm_net {
	T_ASC_Network *net;
};

namespace
{

// Stored as received: every syntax we can keep without touching the data.
const char *const k_storage_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_MPEG2MainProfileAtMainLevelTransferSyntax,
    UID_MPEG2MainProfileAtHighLevelTransferSyntax,
    UID_MPEG4HighProfileLevel4_1TransferSyntax,
    UID_MPEG4BDcompatibleHighProfileLevel4_1TransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For2DVideoTransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For3DVideoTransferSyntax,
    UID_MPEG4StereoHighProfileLevel4_2TransferSyntax,
    UID_HEVCMainProfileLevel5_1TransferSyntax,
    UID_HEVCMain10ProfileLevel5_1TransferSyntax,
};

const char *const k_echo_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
};

// Queries and retrievals: the identifier is small, any uncompressed syntax
// will do.
const char *const k_query_classes[] = {
    UID_FINDPatientRootQueryRetrieveInformationModel, UID_FINDStudyRootQueryRetrieveInformationModel,
    UID_MOVEPatientRootQueryRetrieveInformationModel, UID_MOVEStudyRootQueryRetrieveInformationModel,
    UID_GETPatientRootQueryRetrieveInformationModel,  UID_GETStudyRootQueryRetrieveInformationModel,
};

bool in_list(const char *uid, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(uid, list[i]) == 0)
			return true;
	return false;
}

bool is_storage_class(const char *uid)
{
	for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; i++)
		if (strcmp(uid, dcmAllStorageSOPClassUIDs[i]) == 0)
			return true;
	return false;
}

void copy_ae(char *dst, const char *src)
{
	size_t n = src ? strnlen(src, PN_AE_MAX) : 0;
	memcpy(dst, src ? src : "", n);
	while (n > 0 && dst[n - 1] == ' ')
		n--;
	dst[n] = '\0';
}

void copy_uid(char *dst, const char *src)
{
	size_t n = src ? strnlen(src, PN_UID_MAX) : 0;
	memcpy(dst, src ? src : "", n);
	dst[n] = '\0';
}

// dcmtk's parsed command holds C strings, cut at a NUL: a UID of the
// command set is taken from its bytes instead when they hold one (see
// show_uid_nuls), so that the command's UID checks refuse it.
void command_uid(DcmDataset *cmdset, const DcmTagKey &tag, char *dst)
{
	DcmElement *el = nullptr;
	if (!cmdset || cmdset->findAndGetElement(tag, el).bad() || !el)
		return;
	OFString value;
	show_uid_nuls(el, value);
	if (!value.empty())
		copy_uid(dst, value.c_str());
}

// Passes bytes to the C sink; remembers the first failure.
class SinkConsumer : public DcmConsumer
{
      public:
	explicit SinkConsumer(const pn_dcm_sink *sink) : sink_(sink), err_(0)
	{
	}
	OFBool good() const override
	{
		return err_ == 0;
	}
	OFCondition status() const override
	{
		return err_ == 0 ? EC_Normal : makeOFCondition(OFM_dcmdata, 900, OF_error, "storage write failed");
	}
	OFBool isFlushed() const override
	{
		return OFTrue;
	}
	offile_off_t avail() const override
	{
		return 1 << 30;
	}
	offile_off_t write(const void *buf, offile_off_t len) override
	{
		if (err_ != 0)
			return 0;
		int rc = sink_->write(sink_->ctx, buf, (size_t)len);
		if (rc < 0) {
			err_ = rc;
			return 0;
		}
		return len;
	}
	void flush() override
	{
	}
	int error() const
	{
		return err_;
	}

      private:
	const pn_dcm_sink *sink_;
	int err_;
};

class SinkStream : public DcmOutputStream
{
      public:
	explicit SinkStream(const pn_dcm_sink *sink) : DcmOutputStream(&consumer_), consumer_(sink)
	{
	}
	int error() const
	{
		return consumer_.error();
	}

      private:
	SinkConsumer consumer_;
};

int write_meta_header(SinkStream &out, const pn_dcm_cmd *cmd, const char *calling_ae)
{
	DcmMetaInfo meta;
	Uint8 version[2] = {0, 1};
	Uint32 zero = 0;
	DcmUnsignedLong *gl = new DcmUnsignedLong(DcmTag(DCM_FileMetaInformationGroupLength));
	gl->putUint32Array(&zero, 1);
	meta.insert(gl);
	DcmOtherByteOtherWord *ver = new DcmOtherByteOtherWord(DcmTag(DCM_FileMetaInformationVersion));
	ver->putUint8Array(version, 2);
	meta.insert(ver);
	meta.putAndInsertString(DCM_MediaStorageSOPClassUID, cmd->sop_class_uid);
	meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, cmd->sop_instance_uid);
	meta.putAndInsertString(DCM_TransferSyntaxUID, cmd->transfer_syntax);
	meta.putAndInsertString(DCM_ImplementationClassUID, PN_IMPLEMENTATION_CLASS_UID);
	meta.putAndInsertString(DCM_ImplementationVersionName, PN_IMPLEMENTATION_VERSION);
	if (calling_ae && *calling_ae)
		meta.putAndInsertString(DCM_SourceApplicationEntityTitle, calling_ae);
	if (meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, META_HEADER_DEFAULT_TRANSFERSYNTAX,
	                                      EET_UndefinedLength)
	        .bad())
		return -EINVAL;
	meta.transferInit();
	OFCondition c = meta.write(out, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_ExplicitLength, NULL);
	meta.transferEnd();
	if (out.error() != 0)
		return out.error();
	return c.good() ? 0 : -EIO;
}

} // namespace

extern "C" bool pn_dcm_is_storage_class(const char *uid)
{
	return uid && is_storage_class(uid);
}

extern "C" int pn_dcm_net_create(int acse_timeout, const pn_dcm_tls *tls, pn_dcm_net **ret_net)
{
	try {
		// No listening socket: connections are accepted by the listener
		// process and passed to us (dcmExternalSocketHandle).
		DUL_markProcessAsForkedChild();
		pn_dcm_net *n = new pn_dcm_net();
		OFCondition c = ASC_initializeNetwork(NET_ACCEPTOR, 0, acse_timeout, &n->net);
		if (c.bad()) {
			delete n;
			return -EIO;
		}
		// One layer for both kinds of connection: it makes a plain TCP
		// connection when a receive does not ask for TLS.
		if (tls && ASC_setTransportLayer(n->net, pn_dcm_tls_layer(tls), 0).bad()) {
			ASC_dropNetwork(&n->net);
			delete n;
			return -EIO;
		}
		*ret_net = n;
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" void pn_dcm_net_free(pn_dcm_net *net)
{
	if (!net)
		return;
	try {
		ASC_dropNetwork(&net->net);
	} catch (...) {
	}
	delete net;
}

extern "C" int pn_dcm_assoc_receive(pn_dcm_net *net, int fd, bool tls, unsigned long max_pdu, int acse_timeout,
                                    int data_timeout, pn_dcm_assoc **ret_assoc, pn_dcm_assoc_info *ret_info)
{
	pn_dcm_assoc *a = nullptr;
	memset(ret_info, 0, sizeof(*ret_info));
	// Known before any byte is read, for the log line of a failed
	// handshake.
	struct sockaddr_in from;
	socklen_t from_len = sizeof(from);
	if (getpeername(fd, (struct sockaddr *)&from, &from_len) == 0 && from.sin_family == AF_INET)
		inet_ntop(AF_INET, &from.sin_addr, ret_info->peer, sizeof(ret_info->peer));
	else
		snprintf(ret_info->peer, sizeof(ret_info->peer), "(unknown)");
	try {
		a = new pn_dcm_assoc();
		a->assoc = nullptr;
		a->fd = fd;
		a->sock = fd;
		a->tls = tls;
		a->data_timeout = data_timeout;
		// dcmtk applies these to the socket when it takes it over: they
		// also bound the TLS handshake, which runs here in the worker.
		dcmSocketReceiveTimeout.set(acse_timeout);
		dcmSocketSendTimeout.set(acse_timeout);
		dcmExternalSocketHandle.set(fd);
		if (tls)
			pn_dcm_tls_reset_outcome();
		OFCondition c =
		    ASC_receiveAssociation(net->net, &a->assoc, (long)max_pdu, NULL, NULL, tls ? OFTrue : OFFalse);
		dcmExternalSocketHandle.set(-1);
		if (a->assoc && a->assoc->DULassociation)
			a->fd = -1; // owned by dcmtk from now on
		if (c.bad()) {
			a->broken = true;
			pn_dcm_assoc_free(a);
			// A read or write that did not complete: the socket timeout
			// (acse_timeout) ran out in the middle of the handshake.
			if (tls && (c == DCMTLS_EC_TLSReadOperationDidNotComplete ||
			            c == DCMTLS_EC_TLSWriteOperationDidNotComplete)) {
				snprintf(ret_info->tls_error, sizeof(ret_info->tls_error),
				         "the TLS handshake timed out");
				return -ETIMEDOUT;
			}
			if (tls && c.module() == OFM_dcmtls) {
				const pn_dcm_tls_outcome &o = pn_dcm_tls_last_outcome();
				snprintf(ret_info->tls_error, sizeof(ret_info->tls_error), "%s%s%s", c.text(),
				         o.verify_error[0] ? ": " : "", o.verify_error);
				return -EACCES;
			}
			if (c == DUL_READTIMEOUT || errno == EAGAIN || errno == EWOULDBLOCK)
				return -ETIMEDOUT;
			return c == DUL_NETWORKCLOSED ? -ECONNRESET : -EPROTO;
		}
		// dcmtk reports a connection closed before any PDU as success,
		// with empty parameters: that is not an association.
		if (ASC_countPresentationContexts(a->assoc->params) == 0) {
			a->broken = true;
			pn_dcm_assoc_free(a);
			return -ECONNRESET;
		}
		char calling[65] = "", called[65] = "";
		ASC_getAPTitles(a->assoc->params, calling, sizeof(calling), called, sizeof(called), NULL, 0);
		copy_ae(ret_info->calling_ae, calling);
		copy_ae(ret_info->called_ae, called);
		ret_info->peer_max_pdu = a->assoc->params->theirMaxPDUReceiveSize;
		if (tls) {
			const pn_dcm_tls_outcome &o = pn_dcm_tls_last_outcome();
			ret_info->tls = true;
			snprintf(ret_info->tls_protocol, sizeof(ret_info->tls_protocol), "%s", o.protocol);
			snprintf(ret_info->tls_cipher, sizeof(ret_info->tls_cipher), "%s", o.cipher);
			ret_info->has_cert = o.has_cert;
			memcpy(ret_info->cert_sha256, o.cert_sha256, sizeof(o.cert_sha256));
			snprintf(ret_info->cert_subject, sizeof(ret_info->cert_subject), "%s", o.cert_subject);
		}
		*ret_assoc = a;
		return 0;
	} catch (...) {
		dcmExternalSocketHandle.set(-1);
		pn_dcm_assoc_free(a);
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_assoc_reject(pn_dcm_assoc *a, pn_dcm_reject_reason reason)
{
	try {
		T_ASC_RejectParameters rej;
		rej.result = ASC_RESULT_REJECTEDPERMANENT;
		rej.source = ASC_SOURCE_SERVICEUSER;
		switch (reason) {
		case PN_REJECT_BUSY:
			rej.result = ASC_RESULT_REJECTEDTRANSIENT;
			rej.source = ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED;
			rej.reason = ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED;
			break;
		case PN_REJECT_CALLED_AE:
			rej.reason = ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED;
			break;
		case PN_REJECT_CALLING_AE:
			rej.reason = ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED;
			break;
		case PN_REJECT_APP_CONTEXT:
			rej.reason = ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED;
			break;
		default:
			rej.reason = ASC_REASON_SU_NOREASON;
			break;
		}
		return ASC_rejectAssociation(a->assoc, &rej).good() ? 0 : -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_assoc_accept(pn_dcm_assoc *a, bool commitment, unsigned *ret_accepted)
{
	try {
		T_ASC_Parameters *params = a->assoc->params;
		char app_ctx[65] = "";
		ASC_getApplicationContextName(params, app_ctx, sizeof(app_ctx));
		if (strcmp(app_ctx, UID_StandardApplicationContext) != 0) {
			*ret_accepted = 0;
			return -EPROTONOSUPPORT;
		}
		const size_t n_store = sizeof(k_storage_syntaxes) / sizeof(k_storage_syntaxes[0]);
		const size_t n_echo = sizeof(k_echo_syntaxes) / sizeof(k_echo_syntaxes[0]);
		unsigned accepted = 0;
		int count = ASC_countPresentationContexts(params);
		for (int i = 0; i < count; i++) {
			T_ASC_PresentationContext pc;
			if (ASC_getPresentationContext(params, i, &pc).bad())
				continue;
			const char *const *list;
			size_t n;
			T_ASC_SC_ROLE role = ASC_SC_ROLE_DEFAULT;
			if (strcmp(pc.abstractSyntax, UID_VerificationSOPClass) == 0) {
				list = k_echo_syntaxes;
				n = n_echo;
			} else if (in_list(pc.abstractSyntax, k_query_classes,
			                   sizeof(k_query_classes) / sizeof(k_query_classes[0]))) {
				list = k_echo_syntaxes;
				n = n_echo;
			} else if (commitment &&
			           strcmp(pc.abstractSyntax, UID_StorageCommitmentPushModelSOPClass) == 0) {
				// The requestor sends N-ACTION as SCU and receives the
				// N-EVENT-REPORT on this association as the SOP class's
				// SCU does: its default role. A requestor asking to
				// be the SCP only would have us send N-ACTION: not ours.
				if (pc.proposedRole == ASC_SC_ROLE_SCP) {
					ASC_refusePresentationContext(params, pc.presentationContextID,
					                              ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
					continue;
				}
				list = k_echo_syntaxes;
				n = n_echo;
				role = pc.proposedRole == ASC_SC_ROLE_SCUSCP ? ASC_SC_ROLE_SCU : pc.proposedRole;
			} else if (is_storage_class(pc.abstractSyntax)) {
				// Every syntax we keep as received we can also send
				// (from a file stored so, or decompressed to little
				// endian), so a context on which a C-GET SCU takes
				// the SCP role is chosen from the same list.
				list = k_storage_syntaxes;
				n = n_store;
				// Role selection: a C-GET SCU asks to be the storage
				// SCP (we send on the context); grant what it asks.
				// Without a role item, or asking for the SCU role
				// only, the default (it sends, we receive) stays.
				if (pc.proposedRole == ASC_SC_ROLE_SCP || pc.proposedRole == ASC_SC_ROLE_SCUSCP)
					role = pc.proposedRole;
			} else {
				ASC_refusePresentationContext(params, pc.presentationContextID,
				                              ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
				continue;
			}
			// The proposer lists syntaxes in its order of preference;
			// take its first one that we can keep as received.
			const char *chosen = nullptr;
			for (int t = 0; t < pc.transferSyntaxCount && !chosen; t++)
				if (in_list(pc.proposedTransferSyntaxes[t], list, n))
					chosen = pc.proposedTransferSyntaxes[t];
			if (!chosen) {
				ASC_refusePresentationContext(params, pc.presentationContextID,
				                              ASC_P_TRANSFERSYNTAXESNOTSUPPORTED);
				continue;
			}
			if (ASC_acceptPresentationContext(params, pc.presentationContextID, chosen, role).good())
				accepted++;
		}
		*ret_accepted = accepted;
		if (accepted == 0)
			return 0;
		pn_dcm_negotiate_extended(a);
		if (ASC_acknowledgeAssociation(a->assoc).bad())
			return -EPROTO;
		set_socket_timeouts(a->sock, a->data_timeout);
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_next_command(pn_dcm_assoc *a, int timeout, pn_dcm_cmd *cmd)
{
	ParseGuard guard;
	try {
		T_ASC_PresentationContextID pres_id = 0;
		if (pn_dcm_assoc_flush(a) < 0) // held responses never wait for the peer
			return -EPROTO;
		memset(&a->msg, 0, sizeof(a->msg));
		DcmDataset *cmdset = nullptr;
		OFCondition c = DIMSE_receiveCommand(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING,
		                                     timeout, &pres_id, &a->msg, NULL, &cmdset);
		OFunique_ptr<DcmDataset> cmdset_owner(cmdset);
		if (guard.tripped())
			return -ELOOP;
		if (int rc = receive_outcome(c))
			return rc;

		memset(cmd, 0, sizeof(*cmd));
		a->cancel_seen = false; // a cancel seen for an earlier request
		cmd->pres_id = pres_id;
		cmd->command_field = (unsigned)a->msg.CommandField;
		T_ASC_PresentationContext pc;
		if (ASC_findAcceptedPresentationContext(a->assoc->params, pres_id, &pc).good())
			copy_uid(cmd->transfer_syntax, pc.acceptedTransferSyntax);
		switch (a->msg.CommandField) {
		case DIMSE_C_ECHO_RQ:
			cmd->kind = PN_CMD_ECHO;
			cmd->message_id = a->msg.msg.CEchoRQ.MessageID;
			copy_uid(cmd->sop_class_uid, a->msg.msg.CEchoRQ.AffectedSOPClassUID);
			break;
		case DIMSE_C_STORE_RQ:
			cmd->kind = PN_CMD_STORE;
			cmd->message_id = a->msg.msg.CStoreRQ.MessageID;
			cmd->has_dataset = a->msg.msg.CStoreRQ.DataSetType != DIMSE_DATASET_NULL;
			copy_uid(cmd->sop_class_uid, a->msg.msg.CStoreRQ.AffectedSOPClassUID);
			copy_uid(cmd->sop_instance_uid, a->msg.msg.CStoreRQ.AffectedSOPInstanceUID);
			command_uid(cmdset, DCM_AffectedSOPClassUID, cmd->sop_class_uid);
			command_uid(cmdset, DCM_AffectedSOPInstanceUID, cmd->sop_instance_uid);
			break;
		case DIMSE_C_FIND_RQ:
			cmd->kind = PN_CMD_FIND;
			cmd->message_id = a->msg.msg.CFindRQ.MessageID;
			cmd->has_dataset = a->msg.msg.CFindRQ.DataSetType != DIMSE_DATASET_NULL;
			copy_uid(cmd->sop_class_uid, a->msg.msg.CFindRQ.AffectedSOPClassUID);
			command_uid(cmdset, DCM_AffectedSOPClassUID, cmd->sop_class_uid);
			break;
		case DIMSE_C_MOVE_RQ:
			cmd->kind = PN_CMD_MOVE;
			cmd->message_id = a->msg.msg.CMoveRQ.MessageID;
			cmd->has_dataset = a->msg.msg.CMoveRQ.DataSetType != DIMSE_DATASET_NULL;
			copy_uid(cmd->sop_class_uid, a->msg.msg.CMoveRQ.AffectedSOPClassUID);
			command_uid(cmdset, DCM_AffectedSOPClassUID, cmd->sop_class_uid);
			copy_ae(cmd->move_destination, a->msg.msg.CMoveRQ.MoveDestination);
			break;
		case DIMSE_C_GET_RQ:
			cmd->kind = PN_CMD_GET;
			cmd->message_id = a->msg.msg.CGetRQ.MessageID;
			cmd->has_dataset = a->msg.msg.CGetRQ.DataSetType != DIMSE_DATASET_NULL;
			copy_uid(cmd->sop_class_uid, a->msg.msg.CGetRQ.AffectedSOPClassUID);
			command_uid(cmdset, DCM_AffectedSOPClassUID, cmd->sop_class_uid);
			break;
		case DIMSE_N_ACTION_RQ:
			cmd->kind = PN_CMD_ACTION;
			cmd->message_id = a->msg.msg.NActionRQ.MessageID;
			cmd->has_dataset = a->msg.msg.NActionRQ.DataSetType != DIMSE_DATASET_NULL;
			copy_uid(cmd->sop_class_uid, a->msg.msg.NActionRQ.RequestedSOPClassUID);
			copy_uid(cmd->sop_instance_uid, a->msg.msg.NActionRQ.RequestedSOPInstanceUID);
			command_uid(cmdset, DCM_RequestedSOPClassUID, cmd->sop_class_uid);
			command_uid(cmdset, DCM_RequestedSOPInstanceUID, cmd->sop_instance_uid);
			cmd->action_type_id = a->msg.msg.NActionRQ.ActionTypeID;
			cmd->has_action_type_id = cmdset && cmdset->tagExists(DCM_ActionTypeID);
			break;
		case DIMSE_C_CANCEL_RQ:
			// A cancel for a request already answered: nothing to do.
			cmd->kind = PN_CMD_CANCEL;
			cmd->message_id = a->msg.msg.CCancelRQ.MessageIDBeingRespondedTo;
			break;
		default:
			cmd->kind = PN_CMD_OTHER;
			break;
		}
		return 0;
	} catch (...) {
		return guard.tripped() ? -ELOOP : -ENOMEM;
	}
}

extern "C" int pn_dcm_release_ack(pn_dcm_assoc *a)
{
	try {
		return ASC_acknowledgeRelease(a->assoc).good() ? 0 : -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_echo_respond(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status)
{
	try {
		OFCondition c = DIMSE_sendEchoResponse(a->assoc, cmd->pres_id, &a->msg.msg.CEchoRQ, status, NULL);
		return c.good() ? 0 : -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_write_meta(const pn_dcm_cmd *cmd, const char *source_ae, const pn_dcm_sink *sink)
{
	try {
		SinkStream out(sink);
		char ae[PN_AE_MAX + 1] = "";
		if (source_ae && strlen(source_ae) <= PN_AE_MAX)
			copy_ae(ae, source_ae);
		return write_meta_header(out, cmd, ae);
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_store_receive(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, int timeout, const pn_dcm_sink *sink)
{
	try {
		SinkStream out(sink);
		char calling[65] = "";
		ASC_getAPTitles(a->assoc->params, calling, sizeof(calling), NULL, 0, NULL, 0);
		char ae[PN_AE_MAX + 1];
		copy_ae(ae, calling);
		// A failed header write still has to drain the dataset below.
		int rc = write_meta_header(out, cmd, ae);
		T_ASC_PresentationContextID pres_id = 0;
		OFCondition c;
		if (rc == 0) {
			c = DIMSE_receiveDataSetInFile(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING,
			                               timeout, &pres_id, &out, NULL, NULL);
		} else {
			DIC_UL bytes = 0, pdvs = 0;
			c = DIMSE_ignoreDataSet(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, timeout,
			                        &bytes, &pdvs);
			return c.good() ? rc : condition_to_errno(c);
		}
		if (out.error() != 0) // the sink failed; dcmtk drained the rest
			return c.good() || c == DIMSE_OUTOFRESOURCES ? out.error() : condition_to_errno(c);
		if (c.bad())
			return condition_to_errno(c);
		if (pres_id != cmd->pres_id)
			return -EPROTO;
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_wait_readable(pn_dcm_assoc *a, int timeout_ms)
{
	if (!a || !a->assoc || a->sock < 0)
		return -EBADF;
	try {
		// Bytes dcmtk has read already (a TLS record) would not wake poll.
		if (ASC_dataWaiting(a->assoc, 0))
			return 1;
	} catch (...) {
		return -ENOMEM;
	}
	struct pollfd p = {a->sock, POLLIN, 0};
	int n;
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n > 0;
}

extern "C" int pn_dcm_discard_dataset(pn_dcm_assoc *a, int timeout)
{
	try {
		DIC_UL bytes = 0, pdvs = 0;
		OFCondition c = DIMSE_ignoreDataSet(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING, timeout,
		                                    &bytes, &pdvs);
		return c.good() ? 0 : condition_to_errno(c);
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_store_respond(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status, const char *comment)
{
	try {
		T_DIMSE_C_StoreRSP rsp;
		memset(&rsp, 0, sizeof(rsp));
		rsp.DimseStatus = status;
		DcmDataset *detail = nullptr;
		if (comment && *comment && status != 0) {
			detail = new DcmDataset();
			char buf[65];
			snprintf(buf, sizeof(buf), "%s", comment);
			detail->putAndInsertString(DCM_ErrorComment, buf);
		}
		OFCondition c = DIMSE_sendStoreResponse(a->assoc, cmd->pres_id, &a->msg.msg.CStoreRQ, &rsp, detail);
		delete detail;
		return c.good() ? 0 : -EPROTO;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" void pn_dcm_assoc_abort(pn_dcm_assoc *a)
{
	if (!a || !a->assoc)
		return;
	try {
		// After sending A-ABORT dcmtk waits for the peer to close, with its
		// own long timer: a stalled peer would hold us. What the peer says
		// after our abort does not matter, so stop reading first.
		shutdown(a->sock, SHUT_RD);
		ASC_abortAssociation(a->assoc);
		a->broken = true;
	} catch (...) {
	}
}

extern "C" void pn_dcm_assoc_free(pn_dcm_assoc *a)
{
	if (!a)
		return;
	try {
		if (a->assoc) {
			// An orderly drop waits for the peer; a broken one must not.
			if (a->broken)
				ASC_closeTransportConnection(a->assoc);
			else if (a->own_net)
				ASC_dropAssociation(a->assoc); // released: nothing to wait for
			else
				ASC_dropSCPAssociation(a->assoc);
			ASC_destroyAssociation(&a->assoc);
		}
		if (a->own_net)
			ASC_dropNetwork(&a->own_net);
	} catch (...) {
	}
	if (a->fd >= 0)
		close(a->fd);
	delete a;
}
