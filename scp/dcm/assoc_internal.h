// The association handle shared by the adapter's files. Not part of pn_dcm.h.
#ifndef PN_DCM_ASSOC_INTERNAL_H
#define PN_DCM_ASSOC_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>

#include <functional>
#include <vector>

#include "pn_dcm.h"

// The Query/Retrieve models extended negotiation is answered for.
#define PN_DCM_QR_MODELS 6

struct pn_dcm_assoc {
	T_ASC_Association *assoc = nullptr;
	int fd = -1;   // ours until dcmtk owns it
	int sock = -1; // the socket, for its timeouts (not owned)
	int data_timeout = 0;
	bool broken = false; // no orderly end possible: just close
	// Over TLS the socket carries records, not PDUs: nothing may be
	// written to it past dcmtk's TLS connection (no sendfile); the
	// adapter's own PDUs go through that connection (write_conn()).
	bool tls = false;
	T_DIMSE_Message msg; // the command being served
	// Requestor associations (pn_dcm_scu_open) own their network.
	T_ASC_Network *own_net = nullptr;
	// Message ID of the next C-STORE-RQ we send on this association.
	unsigned short next_msg_id = 1;
	// C-FIND pending responses (query.cc): the encoded command, kept for
	// the request it answers, and reused buffers.
	bool pending_valid = false;
	unsigned short pending_msg_id = 0, pending_status = 0;
	unsigned char pending_pres_id = 0;
	std::vector<unsigned char> pending_cmd, pending_ds, pending_buf;
	// The C-STORE-RQ sent and not answered yet (0: none).
	unsigned short awaiting_msg_id = 0;
	// A C-CANCEL-RQ read while waiting for a C-STORE-RSP (C-GET): kept for
	// pn_dcm_cancel_requested, forgotten at the next command.
	bool cancel_seen = false;
	unsigned short cancel_msg_id = 0;
	// Extended negotiation (extneg.cc): the PN_EXTNEG_* accepted, by
	// Query/Retrieve model (FIND, MOVE, GET; Patient and Study Root).
	unsigned extneg[PN_DCM_QR_MODELS] = {};
};

// Answers the requestor's SOP Class Extended Negotiation items
// (extneg.cc); before the A-ASSOCIATE-AC is sent.
void pn_dcm_negotiate_extended(pn_dcm_assoc *a);

// Where the adapter's own PDUs go (pn_pdu_send_all): nullptr for the
// plain socket, else the association's TLS connection.
inline DcmTransportConnection *write_conn(const pn_dcm_assoc *a)
{
	return a->tls && a->assoc && a->assoc->DULassociation ? DUL_getTransportConnection(a->assoc->DULassociation)
	                                                      : nullptr;
}

// Opens an association as requestor with the presentation contexts that
// add_contexts puts into its parameters (false: -EINVAL); results as
// pn_dcm_scu_open's (retrieve.cc).
int pn_dcm_request(const char *host, int port, const char *our_ae, const char *peer_ae, unsigned long max_pdu,
                   int acse_timeout, int dimse_timeout, const pn_dcm_tls *tls, char *tls_error, size_t tls_error_len,
                   const std::function<bool(T_ASC_Parameters *)> &add_contexts, pn_dcm_assoc **ret_assoc);

#endif
