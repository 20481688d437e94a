// C-MOVE and C-GET: their responses, the sub-associations to a move
// destination, and sending a stored file in a C-STORE-RQ (as stored, or
// decompressed when the receiver will not take it so).
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/ofstd/ofstd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <vector>

#include "assoc_internal.h"
#include "tls_internal.h"
#include "dataset_internal.h"
#include "guard_internal.h"
#include "pdu_internal.h"
#include "util_internal.h"

// The decoders dcmtk needs to turn a compressed stored instance into little
// endian; once per process. The SOP Instance UID must never change: the
// C-STORE-RQ names the instance as stored.
void pn_dcm_register_codecs()
{
	static bool done = false;
	if (done)
		return;
	DJDecoderRegistration::registerCodecs(EDC_photometricInterpretation, EUC_never);
	DJLSDecoderRegistration::registerCodecs(EJLSUC_never);
	DcmRLEDecoderRegistration::registerCodecs(OFFalse);
	// Lossless encoders, for a receiver that accepted only a compressed
	// lossless syntax for the class: never a new UID, never lossy.
	DJEncoderRegistration::registerCodecs(ECC_lossyYCbCr, EUC_never);
	DJLSEncoderRegistration::registerCodecs(0, 0, 0, 0, OFTrue, 0, OFTrue, EJLSUC_never);
	DcmRLEEncoderRegistration::registerCodecs();
	done = true;
}

namespace
{

// PS3.8: at most 128 presentation contexts (odd IDs 1..255).
const size_t k_max_contexts = 128;

bool is_uncompressed_le(const char *ts)
{
	return strcmp(ts, UID_LittleEndianExplicitTransferSyntax) == 0 ||
	       strcmp(ts, UID_LittleEndianImplicitTransferSyntax) == 0;
}

// After a failed send: the kernel's send timeout shows as EAGAIN.
int send_errno(const OFCondition &c)
{
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return -ETIMEDOUT;
	return condition_to_errno(c);
}

// Failure statuses carry an Error Comment; success, pending, cancel and
// warnings (PS3.7 C.1) do not.
bool is_failure(unsigned short status)
{
	if (status == 0x0000 || status == 0xFF00 || status == 0xFF01 || status == 0xFE00)
		return false;
	if (status == 0x0001 || status == 0x0107 || status == 0x0116 || (status & 0xF000) == 0xB000)
		return false;
	return true;
}

// Syntaxes we can encode to without losing anything.
bool is_lossless_target(E_TransferSyntax x)
{
	return x == EXS_JPEGProcess14SV1 || x == EXS_JPEGProcess14 || x == EXS_JPEGLSLossless || x == EXS_RLELossless;
}

struct Proposal {
	std::string sop_class;
	std::string ts; // empty: explicit then implicit VR little endian
};

// One context per distinct (class, stored syntax other than little endian)
// and one little endian context per class; compressed ones go first when
// there are more than 128.
std::vector<Proposal> plan_contexts(const pn_dcm_offer *offers, size_t n)
{
	std::vector<std::string> classes;
	std::vector<Proposal> other;
	for (size_t i = 0; i < n; i++) {
		const char *cls = offers[i].sop_class_uid;
		const char *ts = offers[i].transfer_syntax_uid;
		if (!cls || !*cls)
			continue;
		bool known = false;
		for (const auto &c : classes)
			if (c == cls)
				known = true;
		if (!known)
			classes.push_back(cls);
		if (!ts || !*ts || is_uncompressed_le(ts))
			continue;
		bool dup = false;
		for (const auto &p : other)
			if (p.sop_class == cls && p.ts == ts)
				dup = true;
		if (!dup)
			other.push_back(Proposal{cls, ts});
	}
	if (classes.size() > k_max_contexts)
		classes.resize(k_max_contexts);
	size_t room = k_max_contexts - classes.size();
	if (other.size() > room)
		other.resize(room); // those instances will be converted
	std::vector<Proposal> out;
	for (const auto &c : classes) {
		for (const auto &p : other)
			if (p.sop_class == c)
				out.push_back(p);
		out.push_back(Proposal{c, ""});
	}
	return out;
}

// dcmtk keeps the connected socket's descriptor protected; a derived
// class may name the accessor, and the pointer to it works on any
// connection.
struct SocketOf : DcmTransportConnection {
	static int get(DcmTransportConnection *conn)
	{
		DcmNativeSocketType (DcmTransportConnection::*fn)() = &SocketOf::getSocket;
		return (int)(conn->*fn)();
	}
};

int socket_of(T_ASC_Association *assoc)
{
	if (!assoc || !assoc->DULassociation)
		return -1;
	DcmTransportConnection *conn = DUL_getTransportConnection(assoc->DULassociation);
	return conn ? SocketOf::get(conn) : -1;
}

// A presentation context on which we may send a C-STORE-RQ for `sop_class`:
// on our own association any accepted one; on a C-GET SCU's association
// one where it took the SCP role.
bool usable_for_sending(const pn_dcm_assoc *a, const T_ASC_PresentationContext &pc, const char *sop_class)
{
	if (pc.resultReason != ASC_P_ACCEPTANCE || strcmp(pc.abstractSyntax, sop_class) != 0)
		return false;
	if (a->own_net)
		return true;
	return pc.acceptedRole == ASC_SC_ROLE_SCP || pc.acceptedRole == ASC_SC_ROLE_SCUSCP;
}

} // namespace

extern "C" int pn_dcm_retrieve_respond(pn_dcm_assoc *a, const pn_dcm_cmd *cmd, unsigned short status,
                                       const pn_dcm_subops *ops, const char *failed_uids, const char *comment)
{
	DcmDataset *detail = nullptr;
	DcmDataset *ids = nullptr;
	try {
		pn_dcm_subops zero = {0, 0, 0, 0};
		if (!ops)
			ops = &zero;
		if (comment && *comment && is_failure(status)) {
			detail = new DcmDataset();
			char buf[65];
			snprintf(buf, sizeof(buf), "%s", comment);
			detail->putAndInsertString(DCM_ErrorComment, buf);
		}
		// Pending responses carry no identifier; dcmtk also drops it
		// from a success (nothing failed).
		if (status != 0xFF00 && failed_uids && *failed_uids) {
			ids = new DcmDataset();
			ids->putAndInsertString(DCM_FailedSOPInstanceUIDList, failed_uids);
		}
		// dcmtk leaves Number of Remaining Sub-operations out of final
		// responses except Cancel (PS3.4 C.4.2.1.6).
		OFCondition c;
		if (cmd->kind == PN_CMD_MOVE) {
			T_DIMSE_C_MoveRSP rsp;
			memset(&rsp, 0, sizeof(rsp));
			rsp.DimseStatus = status;
			rsp.NumberOfRemainingSubOperations = (DIC_US)ops->remaining;
			rsp.NumberOfCompletedSubOperations = (DIC_US)ops->completed;
			rsp.NumberOfFailedSubOperations = (DIC_US)ops->failed;
			rsp.NumberOfWarningSubOperations = (DIC_US)ops->warning;
			c = DIMSE_sendMoveResponse(a->assoc, cmd->pres_id, &a->msg.msg.CMoveRQ, &rsp, ids, detail);
		} else if (cmd->kind == PN_CMD_GET) {
			T_DIMSE_C_GetRSP rsp;
			memset(&rsp, 0, sizeof(rsp));
			rsp.DimseStatus = status;
			rsp.NumberOfRemainingSubOperations = (DIC_US)ops->remaining;
			rsp.NumberOfCompletedSubOperations = (DIC_US)ops->completed;
			rsp.NumberOfFailedSubOperations = (DIC_US)ops->failed;
			rsp.NumberOfWarningSubOperations = (DIC_US)ops->warning;
			c = DIMSE_sendGetResponse(a->assoc, cmd->pres_id, &a->msg.msg.CGetRQ, &rsp, ids, detail);
		} else {
			delete detail;
			delete ids;
			return -EINVAL;
		}
		delete detail;
		delete ids;
		return c.good() ? 0 : -EPROTO;
	} catch (...) {
		delete detail;
		delete ids;
		return -ENOMEM;
	}
}

int pn_dcm_request(const char *host, int port, const char *our_ae, const char *peer_ae, unsigned long max_pdu,
                   int acse_timeout, int dimse_timeout, const pn_dcm_tls *tls, char *tls_error, size_t tls_error_len,
                   const std::function<bool(T_ASC_Parameters *)> &add_contexts, pn_dcm_assoc **ret_assoc)
{
	pn_dcm_assoc *a = nullptr;
	T_ASC_Parameters *params = nullptr;
	try {
		a = new pn_dcm_assoc();
		if (ASC_initializeNetwork(NET_REQUESTOR, 0, acse_timeout, &a->own_net).bad()) {
			pn_dcm_assoc_free(a);
			return -EPROTO;
		}
		if (tls && ASC_setTransportLayer(a->own_net, pn_dcm_tls_layer(tls), 0).bad()) {
			pn_dcm_assoc_free(a);
			return -EPROTO;
		}
		a->tls = tls != nullptr;
		if (ASC_createAssociationParameters(&params, (long)(max_pdu ? max_pdu : ASC_DEFAULTMAXPDU)).bad()) {
			pn_dcm_assoc_free(a);
			return -ENOMEM;
		}
		if (tls) {
			ASC_setTransportLayerType(params, OFTrue);
			pn_dcm_tls_expect_peer(tls, host);
			pn_dcm_tls_reset_outcome();
		}
		ASC_setAPTitles(params, our_ae, peer_ae, NULL);
		char peer[300];
		snprintf(peer, sizeof(peer), "%s:%d", host, port);
		ASC_setPresentationAddresses(params, OFStandard::getHostName().c_str(), peer);
		if (!add_contexts(params)) {
			ASC_destroyAssociationParameters(&params);
			pn_dcm_assoc_free(a);
			return -EINVAL;
		}

		// dcmtk applies these to the socket it connects; the connect
		// itself gives up after dcmConnectionTimeout.
		dcmConnectionTimeout.set(acse_timeout > 0 ? acse_timeout : -1);
		dcmSocketReceiveTimeout.set(acse_timeout);
		dcmSocketSendTimeout.set(acse_timeout);
		OFCondition c = ASC_requestAssociation(a->own_net, params, &a->assoc);
		if (a->assoc)
			params = nullptr; // the association owns them now
		else
			ASC_destroyAssociationParameters(&params);
		if (c.bad()) {
			a->broken = true;
			pn_dcm_assoc_free(a);
			if (tls && c.module() == OFM_dcmtls) {
				const pn_dcm_tls_outcome &o = pn_dcm_tls_last_outcome();
				if (tls_error && tls_error_len)
					snprintf(tls_error, tls_error_len, "%s%s%s", c.text(),
					         o.verify_error[0] ? ": " : "", o.verify_error);
				return -EACCES;
			}
			if (c == DUL_READTIMEOUT)
				return -ETIMEDOUT;
			// Refused connection, unknown host, connect timeout,
			// rejection, or an abort instead of an answer.
			if (c == DUL_ASSOCIATIONREJECTED || c == DUL_PEERABORTEDASSOCIATION || c == DUL_NETWORKCLOSED ||
			    (c.module() == OFM_dcmnet &&
			     (c.code() == DULC_TCPINITERROR || c.code() == DULC_UNKNOWNHOST)))
				return -ECONNREFUSED;
			return -EPROTO;
		}
		a->sock = socket_of(a->assoc);
		if (a->sock >= 0) {
			// Each C-STORE-RSP is small and answered at once: with Nagle
			// every instance would wait for a delayed ACK.
			int one = 1;
			setsockopt(a->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			set_socket_timeouts(a->sock, dimse_timeout);
		}
		a->data_timeout = dimse_timeout;
		if (ASC_countAcceptedPresentationContexts(a->assoc->params) == 0) {
			pn_dcm_scu_close(a);
			return -ECONNREFUSED;
		}
		*ret_assoc = a;
		return 0;
	} catch (...) {
		if (params)
			ASC_destroyAssociationParameters(&params);
		pn_dcm_assoc_free(a);
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_scu_open(const char *host, int port, const char *our_ae, const char *peer_ae,
                               const pn_dcm_offer *offers, size_t n_offers, unsigned long max_pdu, int acse_timeout,
                               int dimse_timeout, const pn_dcm_tls *tls, char *tls_error, size_t tls_error_len,
                               pn_dcm_assoc **ret_assoc)
{
	try {
		std::vector<Proposal> plan = plan_contexts(offers, n_offers);
		if (plan.empty())
			return -EINVAL;
		auto add = [&plan](T_ASC_Parameters *params) {
			T_ASC_PresentationContextID id = 1;
			for (const auto &p : plan) {
				const char *le[] = {UID_LittleEndianExplicitTransferSyntax,
				                    UID_LittleEndianImplicitTransferSyntax};
				const char *one[] = {p.ts.c_str()};
				OFCondition c =
				    p.ts.empty() ? ASC_addPresentationContext(params, id, p.sop_class.c_str(), le, 2)
				                 : ASC_addPresentationContext(params, id, p.sop_class.c_str(), one, 1);
				if (c.bad())
					return false;
				id = (T_ASC_PresentationContextID)(id + 2);
			}
			return true;
		};
		return pn_dcm_request(host, port, our_ae, peer_ae, max_pdu, acse_timeout, dimse_timeout, tls, tls_error,
		                      tls_error_len, add, ret_assoc);
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" void pn_dcm_scu_close(pn_dcm_assoc *a)
{
	if (!a)
		return;
	try {
		if (a->assoc && a->assoc->DULassociation) {
			if (!a->broken && ASC_releaseAssociation(a->assoc).bad())
				a->broken = true;
			if (a->broken && a->sock >= 0)
				pn_dcm_assoc_abort(a);
		}
	} catch (...) {
		a->broken = true;
	}
	pn_dcm_assoc_free(a);
}

namespace
{

// The C-STORE-RQ command set (PS3.7 9.3.1.1) in implicit VR little endian,
// for a dataset we send ourselves rather than through DIMSE_sendMessage.
int encode_store_rq(const T_DIMSE_C_StoreRQ &rq, std::vector<unsigned char> &out)
{
	DcmDataset cmd;
	bool ok = cmd.putAndInsertString(DCM_AffectedSOPClassUID, rq.AffectedSOPClassUID).good() &&
	          cmd.putAndInsertUint16(DCM_CommandField, 0x0001).good() &&
	          cmd.putAndInsertUint16(DCM_MessageID, rq.MessageID).good() &&
	          cmd.putAndInsertUint16(DCM_Priority, 0x0000).good() &&
	          cmd.putAndInsertUint16(DCM_CommandDataSetType, 0x0000).good() &&
	          cmd.putAndInsertString(DCM_AffectedSOPInstanceUID, rq.AffectedSOPInstanceUID).good();
	if (ok && (rq.opts & O_STORE_MOVEORIGINATORAETITLE))
		ok = cmd.putAndInsertString(DCM_MoveOriginatorApplicationEntityTitle,
		                            rq.MoveOriginatorApplicationEntityTitle)
		         .good() &&
		     cmd.putAndInsertUint16(DCM_MoveOriginatorMessageID, rq.MoveOriginatorID).good();
	if (!ok)
		return -ENOMEM;
	return pn_dcm_encode(cmd, EXS_LittleEndianImplicit, true, out);
}

// 1: the file ended early (cut while we read it).
int sendfile_all(int sock, int fd, uint64_t off, size_t len)
{
	off_t pos = (off_t)off;
	while (len > 0) {
		ssize_t n = sendfile(sock, fd, &pos, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -EPROTO;
		if (n == 0)
			return 1;
		len -= (size_t)n;
	}
	return 0;
}

// 1: the file ended early, as for sendfile_all.
int pread_all(int fd, unsigned char *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -EIO;
		if (n == 0)
			return 1;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

// The dataset as it lies on disk: no parsing, no re-encoding, and no copy
// through our memory either. sendfile() hands the page-cache pages to the
// socket; we write only the 12-byte PDU and PDV headers (PS3.8 9.3.5),
// with PDVs of the size dcmtk would use for this peer. Anything going
// wrong once the command is out leaves the association unusable (half a
// message sent): the connection is closed.
int send_raw(pn_dcm_assoc *a, T_ASC_PresentationContextID id, const T_DIMSE_C_StoreRQ &rq, const pn_dcm_raw *raw)
{
	if (raw->length == 0)
		return -EBADMSG;
	std::vector<unsigned char> cmd;
	int rc = encode_store_rq(rq, cmd);
	if (rc < 0)
		return rc;
	uint64_t chunk_max = a->assoc->sendPDVLength & ~(unsigned long)1; // even fragments
	if (chunk_max < 2 || cmd.size() > chunk_max)
		return -EPROTO;
	DcmTransportConnection *tls = write_conn(a);
	std::vector<unsigned char> pdu;
	pn_pdu_append(pdu, cmd.data(), cmd.size(), id, true, chunk_max);
	rc = pn_pdu_send_all(a->sock, tls, pdu.data(), pdu.size(), true);
	uint64_t off = raw->offset, left = raw->length;
	while (rc == 0 && left > 0) {
		uint64_t chunk = left < chunk_max ? left : chunk_max;
		unsigned char h[12];
		pn_pdu_header(h, (uint32_t)chunk, id, false, left == chunk);
		if (tls) {
			// TLS encrypts in our memory anyway: read the PDU's bytes
			// behind its header and send it as one write (its records)
			pdu.resize(12 + chunk);
			memcpy(pdu.data(), h, 12);
			rc = pread_all(raw->fd, pdu.data() + 12, (size_t)chunk, off);
			if (rc == 0)
				rc = pn_pdu_send_all(a->sock, tls, pdu.data(), pdu.size(), true);
		} else {
			rc = pn_pdu_send_all(a->sock, nullptr, h, sizeof(h), true);
			if (rc == 0)
				rc = sendfile_all(a->sock, raw->fd, off, (size_t)chunk);
		}
		off += chunk;
		left -= chunk;
	}
	if (rc != 0) {
		// Mid-PDU, an A-ABORT would be read as data: end the connection.
		a->broken = true;
		shutdown(a->sock, SHUT_RDWR);
		return rc == 1 ? -EPROTO : rc;
	}
	return 0;
}

// The accepted context for this class in exactly this syntax, or 0.
T_ASC_PresentationContextID context_as_stored(const pn_dcm_assoc *a, const char *sop_class, const char *ts)
{
	T_ASC_Parameters *params = a->assoc->params;
	int count = ASC_countPresentationContexts(params);
	for (int i = 0; i < count; i++) {
		T_ASC_PresentationContext pc;
		if (ASC_getPresentationContext(params, i, &pc).bad() || !usable_for_sending(a, pc, sop_class))
			continue;
		if (strcmp(pc.acceptedTransferSyntax, ts) == 0)
			return pc.presentationContextID;
	}
	return 0;
}

// Through dcmtk: the file parsed, then decompressed or re-encoded as the
// accepted contexts require.
int send_converted(pn_dcm_assoc *a, const char *path, const char *sop_class_uid, const char *stored_ts,
                   T_DIMSE_Message &req)
{
	// Values longer than the default read limit (pixel data) stay on
	// disk until they are written to the network.
	std::unique_ptr<DcmFileFormat> ff;
	int lrc = load_stored_file(path, ff);
	if (lrc < 0)
		return lrc;
	DcmDataset *ds = ff->getDataset();
	E_TransferSyntax have = ds->getOriginalXfer();
	if (have == EXS_Unknown && stored_ts)
		have = DcmXfer(stored_ts).getXfer();
	DcmXfer have_x(have);
	const char *have_uid = have_x.getXferID();

	// As stored if some context took that syntax; otherwise the first
	// of explicit LE, implicit LE, any other native syntax.
	T_ASC_PresentationContextID same = 0, expl = 0, impl = 0, native = 0, lossless = 0;
	std::string same_ts, native_ts, lossless_ts;
	T_ASC_Parameters *params = a->assoc->params;
	int count = ASC_countPresentationContexts(params);
	for (int i = 0; i < count; i++) {
		T_ASC_PresentationContext pc;
		if (ASC_getPresentationContext(params, i, &pc).bad() || !usable_for_sending(a, pc, sop_class_uid))
			continue;
		const char *ts = pc.acceptedTransferSyntax;
		if (!same && have != EXS_Unknown && strcmp(ts, have_uid) == 0)
			same = pc.presentationContextID;
		else if (!expl && strcmp(ts, UID_LittleEndianExplicitTransferSyntax) == 0)
			expl = pc.presentationContextID;
		else if (!impl && strcmp(ts, UID_LittleEndianImplicitTransferSyntax) == 0)
			impl = pc.presentationContextID;
		else if (!native && DcmXfer(ts).getXfer() != EXS_Unknown && DcmXfer(ts).isNotEncapsulated()) {
			native = pc.presentationContextID;
			native_ts = ts;
		} else if (!lossless && is_lossless_target(DcmXfer(ts).getXfer())) {
			lossless = pc.presentationContextID;
			lossless_ts = ts;
		}
	}
	T_ASC_PresentationContextID pres_id = same;
	if (!pres_id) {
		E_TransferSyntax target = EXS_Unknown;
		if (expl) {
			pres_id = expl;
			target = EXS_LittleEndianExplicit;
		} else if (impl) {
			pres_id = impl;
			target = EXS_LittleEndianImplicit;
		} else if (native) {
			pres_id = native;
			target = DcmXfer(native_ts.c_str()).getXfer();
		} else if (lossless) {
			// Decoded first (if compressed), then encoded losslessly.
			if (!have_x.isNotEncapsulated() &&
			    ds->chooseRepresentation(EXS_LittleEndianExplicit, NULL).bad())
				return -ENOTSUP;
			pres_id = lossless;
			target = DcmXfer(lossless_ts.c_str()).getXfer();
			if (ds->chooseRepresentation(target, NULL).bad() || !ds->canWriteXfer(target))
				return -ENOTSUP;
		}
		if (!pres_id)
			return -ENOTSUP;
		// Decompress (JPEG, JPEG-LS, RLE); whatever we have no
		// decoder for (JPEG 2000, video) cannot be sent here.
		if (!have_x.isNotEncapsulated() && ds->chooseRepresentation(target, NULL).bad())
			return -ENOTSUP;
		if (!ds->canWriteXfer(target))
			return -ENOTSUP;
	}

	errno = 0;
	OFCondition c = DIMSE_sendMessageUsingMemoryData(a->assoc, pres_id, &req, NULL, ds, NULL, NULL);
	ff.reset(); // the file is not kept while waiting
	if (c.bad()) {
		a->broken = true;
		return send_errno(c);
	}
	return 0;
}

} // namespace

extern "C" int pn_dcm_store_start(pn_dcm_assoc *a, const char *path, const pn_dcm_raw *raw, const char *sop_class_uid,
                                  const char *sop_instance_uid, const char *stored_ts, const char *originator_ae,
                                  unsigned short originator_msg_id)
{
	try {
		if (a->broken || !a->assoc || a->awaiting_msg_id != 0)
			return -EPROTO;
		T_DIMSE_Message req;
		memset(&req, 0, sizeof(req));
		req.CommandField = DIMSE_C_STORE_RQ;
		T_DIMSE_C_StoreRQ &rq = req.msg.CStoreRQ;
		if (a->next_msg_id == 0)
			a->next_msg_id = 1;
		rq.MessageID = a->next_msg_id++;
		OFStandard::strlcpy(rq.AffectedSOPClassUID, sop_class_uid, sizeof(rq.AffectedSOPClassUID));
		OFStandard::strlcpy(rq.AffectedSOPInstanceUID, sop_instance_uid, sizeof(rq.AffectedSOPInstanceUID));
		rq.Priority = DIMSE_PRIORITY_MEDIUM;
		rq.DataSetType = DIMSE_DATASET_PRESENT;
		if (originator_ae && *originator_ae) {
			OFStandard::strlcpy(rq.MoveOriginatorApplicationEntityTitle, originator_ae,
			                    sizeof(rq.MoveOriginatorApplicationEntityTitle));
			rq.MoveOriginatorID = originator_msg_id;
			rq.opts = O_STORE_MOVEORIGINATORAETITLE | O_STORE_MOVEORIGINATORID;
		}
		T_ASC_PresentationContextID same = raw ? context_as_stored(a, sop_class_uid, raw->ts_uid) : 0;
		if (a->sock < 0 || (a->tls && !write_conn(a)))
			same = 0;
		int rc = same ? send_raw(a, same, rq, raw) : send_converted(a, path, sop_class_uid, stored_ts, req);
		if (rc < 0)
			return rc;
		a->awaiting_msg_id = rq.MessageID;
		return 0;
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_store_finish(pn_dcm_assoc *a, int timeout, unsigned short *ret_status)
{
	try {
		if (a->broken || !a->assoc || a->awaiting_msg_id == 0)
			return -EPROTO;
		unsigned short msg_id = a->awaiting_msg_id;
		a->awaiting_msg_id = 0;
		// DIMSE_storeUser would treat the C-CANCEL-RQ a C-GET SCU may send
		// meanwhile as an error: read the commands ourselves.
		for (;;) {
			T_DIMSE_Message rsp;
			memset(&rsp, 0, sizeof(rsp));
			T_ASC_PresentationContextID rsp_id = 0;
			DcmDataset *detail = nullptr;
			ParseGuard guard; // the peer's response is read by recursion too
			OFCondition c;
			try {
				c = DIMSE_receiveCommand(a->assoc, timeout > 0 ? DIMSE_NONBLOCKING : DIMSE_BLOCKING,
				                         timeout, &rsp_id, &rsp, &detail);
			} catch (const std::bad_alloc &) {
				if (!guard.tripped())
					throw;
			}
			delete detail;
			if (guard.tripped()) {
				a->broken = true;
				return -ELOOP;
			}
			if (c.bad()) {
				a->broken = true;
				return condition_to_errno(c);
			}
			if (rsp.CommandField == DIMSE_C_STORE_RSP &&
			    rsp.msg.CStoreRSP.MessageIDBeingRespondedTo == msg_id) {
				*ret_status = rsp.msg.CStoreRSP.DimseStatus;
				return 0;
			}
			if (rsp.CommandField == DIMSE_C_CANCEL_RQ && !a->own_net) {
				a->cancel_seen = true;
				a->cancel_msg_id = rsp.msg.CCancelRQ.MessageIDBeingRespondedTo;
				continue;
			}
			a->broken = true;
			return -EPROTO;
		}
	} catch (...) {
		return -ENOMEM;
	}
}

extern "C" int pn_dcm_store_send(pn_dcm_assoc *a, const char *path, const pn_dcm_raw *raw, const char *sop_class_uid,
                                 const char *sop_instance_uid, const char *stored_ts, const char *originator_ae,
                                 unsigned short originator_msg_id, int timeout, unsigned short *ret_status)
{
	int rc = pn_dcm_store_start(a, path, raw, sop_class_uid, sop_instance_uid, stored_ts, originator_ae,
	                            originator_msg_id);
	return rc < 0 ? rc : pn_dcm_store_finish(a, timeout, ret_status);
}
