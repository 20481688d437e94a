#include "tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int pn_tls_create(const pn_config *cfg, bool acceptor, pn_dcm_tls **ret_tls, char *err, size_t errlen)
{
	pn_dcm_tls_params p = {
	    .certificate = cfg->tls_certificate,
	    .private_key = cfg->tls_private_key,
	    .ca = cfg->tls_ca,
	    .crl = cfg->tls_crl,
	    .require_client_certificate = cfg->tls_require_client_certificate,
	};
	if (!p.certificate || !p.private_key) {
		snprintf(err, errlen, "[tls] certificate and private_key are not set");
		return -EINVAL;
	}
	return pn_dcm_tls_create(&p, acceptor, ret_tls, err, errlen);
}

int pn_tls_check(const pn_config *cfg, char *err, size_t errlen)
{
	if (!cfg->tls_certificate)
		return 0;
	pn_dcm_tls *t = NULL;
	int rc = pn_tls_create(cfg, pn_config_tls_listener(cfg), &t, err, errlen);
	pn_dcm_tls_free(t);
	return rc;
}

bool pn_tls_is_tls_connection(const pn_config *cfg, int fd)
{
	if (!pn_config_tls_listener(cfg))
		return false;
	struct sockaddr_in local;
	socklen_t len = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0 || local.sin_family != AF_INET)
		return false;
	return ntohs(local.sin_port) == cfg->tls_port;
}

bool pn_tls_peer_pinned(const pn_peer *peer)
{
	return peer->has_cert_sha256 || peer->cert_subject[0];
}

void pn_tls_fingerprint_text(const unsigned char sha256[32], char out[96])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 3 * i, 4, i < 31 ? "%02X:" : "%02X", sha256[i]);
}

bool pn_tls_peer_matches(const pn_peer *peer, const pn_dcm_assoc_info *info, char *why, size_t whylen)
{
	if (!pn_tls_peer_pinned(peer))
		return true;
	if (!info->tls) {
		snprintf(why, whylen, "[peer.%s] pins a certificate, so it is admitted only over TLS", peer->label);
		return false;
	}
	if (!info->has_cert) {
		snprintf(why, whylen, "[peer.%s] pins a certificate and none was presented", peer->label);
		return false;
	}
	if (peer->has_cert_sha256 && memcmp(peer->cert_sha256, info->cert_sha256, 32) != 0) {
		char fp[96];
		pn_tls_fingerprint_text(info->cert_sha256, fp);
		snprintf(why, whylen, "certificate %s (\"%s\") does not match the SHA-256 pinned by [peer.%s]", fp,
		         info->cert_subject, peer->label);
		return false;
	}
	if (peer->cert_subject[0] && strcmp(peer->cert_subject, info->cert_subject) != 0) {
		snprintf(why, whylen, "certificate subject \"%s\" does not match \"%s\" pinned by [peer.%s]",
		         info->cert_subject, peer->cert_subject, peer->label);
		return false;
	}
	return true;
}
