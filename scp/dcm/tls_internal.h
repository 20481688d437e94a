// TLS pieces shared by the adapter's files (tls.cc, net.cc, retrieve.cc).
// Not part of pn_dcm.h.
#ifndef PN_DCM_TLS_INTERNAL_H
#define PN_DCM_TLS_INTERNAL_H

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/dcmlayer.h>

#include "pn_dcm.h"

// What the last TLS handshake of this process showed.
struct pn_dcm_tls_outcome {
	bool done;              // the handshake completed
	char verify_error[512]; // the first certificate verification failure
	char protocol[16];      // e.g. "TLSv1.3"
	char cipher[64];        // e.g. "TLS_AES_256_GCM_SHA384"
	bool has_cert;          // the peer sent a certificate
	unsigned char cert_sha256[32];
	char cert_subject[512]; // RFC 2253
};

// Before a handshake: forget the last one and OpenSSL's error queue.
void pn_dcm_tls_reset_outcome();
const pn_dcm_tls_outcome &pn_dcm_tls_last_outcome();

// The dcmtk transport layer behind the handle (NULL for NULL).
DcmTransportLayer *pn_dcm_tls_layer(const pn_dcm_tls *tls);

// A requestor's next handshake checks that the server's certificate names
// `host` (an IP address or a DNS name in its subjectAltName).
void pn_dcm_tls_expect_peer(const pn_dcm_tls *tls, const char *host);

#endif
