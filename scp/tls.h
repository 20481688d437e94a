/* The node's use of TLS, in front of the adapter: the contexts built from
 * [tls], which connection is a TLS one, and whether a peer's certificate is
 * the one its configuration pins. The protocol profile itself is in
 * scp/dcm/tls.cc. */
#ifndef PN_TLS_H
#define PN_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "dcm/pn_dcm.h"

/* A context from [tls]: acceptor (the TLS listener's connections) or for
 * outgoing associations. 0 or a negative errno with one line in err. */
int pn_tls_create(const pn_config *cfg, bool acceptor, pn_dcm_tls **ret_tls, char *err, size_t errlen);

/* At start-up and for `pacsnode -t`: builds every context the
 * configuration needs once, so that a bad file, an encrypted key or a key
 * that does not match stops the node before it listens. */
int pn_tls_check(const pn_config *cfg, char *err, size_t errlen);

/* Whether the connection `fd` came in on the TLS listener (by the port it
 * was accepted on: the listener passes bare sockets). */
bool pn_tls_is_tls_connection(const pn_config *cfg, int fd);

/* Whether `peer` pins its certificate (certificate_sha256 or
 * certificate_subject). */
bool pn_tls_peer_pinned(const pn_peer *peer);

/* Whether the certificate the association showed is the one `peer` pins;
 * if not, a reason in words into why. A peer that pins none: true. */
bool pn_tls_peer_matches(const pn_peer *peer, const pn_dcm_assoc_info *info, char *why, size_t whylen);

/* "AB:CD:..." (95 characters and a NUL). */
void pn_tls_fingerprint_text(const unsigned char sha256[32], char out[96]);

#endif
