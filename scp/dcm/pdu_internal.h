// P-DATA-TF PDUs written by the adapter itself (PS3.8 9.3.5), for the two
// hot paths that bypass DIMSE_sendMessage: a stored dataset sent as it lies
// on disk (retrieve.cc) and C-FIND pending responses (query.cc). dcmtk keeps
// no state about P-DATA it sends, so the association stays consistent.
#ifndef PN_DCM_PDU_INTERNAL_H
#define PN_DCM_PDU_INTERNAL_H

#include <dcmtk/config/osconfig.h>

#include <cstddef>
#include <cstdint>
#include <vector>

// The 12 header bytes of a PDU holding one PDV of `len` bytes.
void pn_pdu_header(unsigned char h[12], uint32_t len, unsigned char pres_id, bool command, bool last);

// Appends `len` bytes as PDVs of at most `max` bytes (even), one PDU each,
// headers included; the last one flagged last.
void pn_pdu_append(std::vector<unsigned char> &out, const unsigned char *data, size_t len, unsigned char pres_id,
                   bool command, size_t max);

class DcmTransportConnection;

// Writes all of it: on the socket (MSG_MORE: more follows at once), or,
// with `tls` (the association's TLS connection), as TLS records through
// it. 0, -ETIMEDOUT (the socket's send timeout) or -EPROTO.
int pn_pdu_send_all(int sock, DcmTransportConnection *tls, const unsigned char *p, size_t len, bool more);

#endif
