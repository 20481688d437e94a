// DICOM TLS (PS3.15 Annex B) through dcmtk's dcmtls, tightened on the
// native OpenSSL context: dcmtk 3.6.7 has no RFC 8996 profile, and its
// non-downgrading BCP 195 profile alone still accepts DHE key exchange on
// TLS 1.2 (measured with storescp +tls and openssl s_client).
#include "pn_dcm.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmtls/tlslayer.h>
#include <dcmtk/oflog/oflog.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include "tls_internal.h"

struct pn_dcm_tls {
	DcmTLSTransportLayer *layer = nullptr;
	bool acceptor = false;
};

namespace
{

// TLS 1.2: ECDHE key exchange with AES-GCM only (RFC 9325 4.2); TLS 1.3
// suites are all AEAD.
const char k_tls12_suites[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                              "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";
const char k_tls13_suites[] = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
const char k_groups[] = "X25519:P-256:P-384";

// What the handshake in progress learned; one association at a time per
// process, so one static record.
pn_dcm_tls_outcome g_outcome;
bool g_key_asked_passphrase;

void name_rfc2253(X509_NAME *name, char *out, size_t len)
{
	out[0] = '\0';
	BIO *bio = BIO_new(BIO_s_mem());
	if (!bio)
		return;
	// Escapes control characters and non-ASCII bytes: the subject comes
	// from the peer and goes into logs.
	if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		int n = BIO_read(bio, out, (int)len - 1);
		out[n > 0 ? n : 0] = '\0';
	}
	BIO_free(bio);
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
			*p = '?';
}

extern "C" int verify_cb(int ok, X509_STORE_CTX *store)
{
	if (!ok && !g_outcome.verify_error[0]) {
		int err = X509_STORE_CTX_get_error(store);
		char subject[256] = "";
		X509 *cert = X509_STORE_CTX_get_current_cert(store);
		if (cert)
			name_rfc2253(X509_get_subject_name(cert), subject, sizeof(subject));
		// Name the class of failure in the words an operator looks for.
		const char *kind = "";
		switch (err) {
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
		case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		case X509_V_ERR_CERT_SIGNATURE_FAILURE:
			kind = "untrusted certificate, not issued by the configured CA: ";
			break;
		case X509_V_ERR_CERT_HAS_EXPIRED:
			kind = "expired certificate: ";
			break;
		case X509_V_ERR_CERT_NOT_YET_VALID:
			kind = "not yet valid certificate: ";
			break;
		case X509_V_ERR_CERT_REVOKED:
			kind = "revoked certificate: ";
			break;
		default:
			break;
		}
		snprintf(g_outcome.verify_error, sizeof(g_outcome.verify_error), "%s%s (certificate \"%s\")", kind,
		         X509_verify_cert_error_string(err), subject);
	}
	return ok;
}

extern "C" void info_cb(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if (!(where & SSL_CB_HANDSHAKE_DONE))
		return;
	g_outcome.done = true;
	snprintf(g_outcome.protocol, sizeof(g_outcome.protocol), "%s", SSL_get_version(ssl));
	snprintf(g_outcome.cipher, sizeof(g_outcome.cipher), "%s", SSL_get_cipher_name(ssl));
	X509 *peer = SSL_get0_peer_certificate(ssl);
	if (!peer)
		return;
	unsigned int n = 0;
	if (X509_digest(peer, EVP_sha256(), g_outcome.cert_sha256, &n) == 1 && n == 32)
		g_outcome.has_cert = true;
	name_rfc2253(X509_get_subject_name(peer), g_outcome.cert_subject, sizeof(g_outcome.cert_subject));
}

// A daemon cannot type a passphrase: refuse instead of prompting on a
// terminal (OpenSSL's default callback would).
extern "C" int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)userdata;
	g_key_asked_passphrase = true;
	return -1;
}

void say(char *err, size_t errlen, const char *what, const char *file, const OFCondition &c)
{
	unsigned long e = ERR_peek_last_error();
	char ossl[256] = "";
	if (e)
		ERR_error_string_n(e, ossl, sizeof(ossl));
	snprintf(err, errlen, "%s \"%s\": %s%s%s", what, file, c.text(), ossl[0] ? "; " : "", ossl);
	ERR_clear_error();
}

int tighten(SSL_CTX *ctx, char *err, size_t errlen)
{
	// dcmtk leaves the security level at 0 (every historic profile has
	// to work); BCP 195 keys (RSA >= 2048, EC >= 224 bits) pass level 2.
	SSL_CTX_set_security_level(ctx, 2);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 || SSL_CTX_set_max_proto_version(ctx, 0) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, k_tls12_suites) != 1 || SSL_CTX_set_ciphersuites(ctx, k_tls13_suites) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, k_groups) != 1) {
		snprintf(err, errlen, "could not restrict the TLS context to the BCP 195 protocols and suites");
		return -EINVAL;
	}
	SSL_CTX_clear_options(ctx, SSL_OP_LEGACY_SERVER_CONNECT);
	SSL_CTX_set_options(ctx, SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_COMPRESSION |
	                             SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), verify_cb);
	SSL_CTX_set_info_callback(ctx, info_cb);
	return 0;
}

} // namespace

void pn_dcm_tls_reset_outcome()
{
	memset(&g_outcome, 0, sizeof(g_outcome));
	ERR_clear_error();
}

const pn_dcm_tls_outcome &pn_dcm_tls_last_outcome()
{
	return g_outcome;
}

DcmTransportLayer *pn_dcm_tls_layer(const pn_dcm_tls *tls)
{
	return tls ? tls->layer : nullptr;
}

void pn_dcm_tls_expect_peer(const pn_dcm_tls *tls, const char *host)
{
	if (!tls || !tls->layer)
		return;
	X509_VERIFY_PARAM *param = SSL_CTX_get0_param(tls->layer->getNativeHandle());
	// The host it was configured under, as an address or a name in the
	// certificate's subjectAltName.
	if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) {
		X509_VERIFY_PARAM_set1_ip(param, nullptr, 0);
		X509_VERIFY_PARAM_set1_host(param, host, 0);
	} else {
		X509_VERIFY_PARAM_set1_host(param, nullptr, 0);
	}
}

// dcmtls logs each failure to load a file as an error of its own; the
// caller logs ours, with the file named, once.
class QuietTLSLog
{
      public:
	QuietTLSLog() : logger_(dcmtk::log4cplus::Logger::getInstance("dcmtk.dcmtls"))
	{
		saved_ = logger_.getLogLevel();
		logger_.setLogLevel(dcmtk::log4cplus::FATAL_LOG_LEVEL);
	}
	~QuietTLSLog()
	{
		logger_.setLogLevel(saved_);
	}

      private:
	dcmtk::log4cplus::Logger logger_;
	dcmtk::log4cplus::LogLevel saved_;
};

extern "C" int pn_dcm_tls_create(const pn_dcm_tls_params *p, bool acceptor, pn_dcm_tls **ret_tls, char *err,
                                 size_t errlen)
{
	pn_dcm_tls *t = nullptr;
	try {
		QuietTLSLog quiet;
		ERR_clear_error();
		t = new pn_dcm_tls();
		t->acceptor = acceptor;
		t->layer = new DcmTLSTransportLayer(acceptor ? NET_ACCEPTOR : NET_REQUESTOR, nullptr, OFTrue);
		SSL_CTX *ctx = t->layer->getNativeHandle();
		if (!ctx) {
			snprintf(err, errlen, "could not create a TLS context");
			pn_dcm_tls_free(t);
			return -ENOMEM;
		}
		SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
		g_key_asked_passphrase = false;
		OFCondition c = t->layer->setPrivateKeyFile(p->private_key, DCF_Filetype_PEM);
		if (c.bad()) {
			if (g_key_asked_passphrase)
				snprintf(
				    err, errlen,
				    "private key \"%s\" is encrypted: a daemon cannot type its passphrase; store it "
				    "unencrypted (openssl pkey -in KEY -out KEY.new), readable only by the node's user",
				    p->private_key);
			else
				say(err, errlen, "could not load the private key", p->private_key, c);
			pn_dcm_tls_free(t);
			return -EINVAL;
		}
		c = t->layer->setCertificateFile(p->certificate, DCF_Filetype_PEM);
		if (c.bad()) {
			say(err, errlen, "could not load the certificate", p->certificate, c);
			pn_dcm_tls_free(t);
			return -EINVAL;
		}
		if (!t->layer->checkPrivateKeyMatchesCertificate()) {
			snprintf(err, errlen, "private key \"%s\" does not belong to certificate \"%s\"",
			         p->private_key, p->certificate);
			pn_dcm_tls_free(t);
			return -EINVAL;
		}
		if (p->ca) {
			struct stat st;
			if (stat(p->ca, &st) < 0) {
				snprintf(err, errlen, "could not read the CA \"%s\": %s", p->ca, strerror(errno));
				pn_dcm_tls_free(t);
				return -ENOENT;
			}
			c = S_ISDIR(st.st_mode) ? t->layer->addTrustedCertificateDir(p->ca, DCF_Filetype_PEM)
			                        : t->layer->addTrustedCertificateFile(p->ca, DCF_Filetype_PEM);
			if (c.bad()) {
				say(err, errlen, "could not load the trusted CA", p->ca, c);
				pn_dcm_tls_free(t);
				return -EINVAL;
			}
		}
		if (p->crl) {
			c = t->layer->addCertificateRevocationList(p->crl, DCF_Filetype_PEM);
			if (c.good())
				c = t->layer->setCRLverification(TCR_checkLeafCRL);
			if (c.bad()) {
				say(err, errlen, "could not load the certificate revocation list", p->crl, c);
				pn_dcm_tls_free(t);
				return -EINVAL;
			}
		}
		// A requestor always checks the server; an acceptor checks a
		// client certificate when one is sent, and requires one unless
		// told otherwise.
		t->layer->setCertificateVerification(!acceptor || p->require_client_certificate ? DCV_requireCertificate
		                                                                                : DCV_checkCertificate);
		c = t->layer->setTLSProfile(TSP_Profile_BCP195_ND);
		if (c.good())
			c = t->layer->activateCipherSuites();
		if (c.bad()) {
			say(err, errlen, "could not set the TLS profile", "BCP 195 non-downgrading", c);
			pn_dcm_tls_free(t);
			return -EINVAL;
		}
		int rc = tighten(ctx, err, errlen);
		if (rc < 0) {
			pn_dcm_tls_free(t);
			return rc;
		}
		*ret_tls = t;
		return 0;
	} catch (...) {
		pn_dcm_tls_free(t);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
}

extern "C" void pn_dcm_tls_free(pn_dcm_tls *t)
{
	if (!t)
		return;
	try {
		delete t->layer;
	} catch (...) {
	}
	delete t;
}
