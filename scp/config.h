/* The node's configuration: embedded defaults, overridden by an INI file.
 * One immutable object, built whole or not at all, passed down by pointer. */
#ifndef PN_CONFIG_H
#define PN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "index.h"      /* pn_dup_policy */
#include "retention.h"  /* pn_retention_policy */
#include "write_mode.h" /* pn_write_policy */

enum {
	PN_ALLOW_STORE = 1 << 0,
	PN_ALLOW_FIND = 1 << 1,
	PN_ALLOW_MOVE = 1 << 2,
	PN_ALLOW_GET = 1 << 3,
	PN_ALLOW_COMMIT = 1 << 4, /* storage commitment: needs host and port for the report */
};

/* An IPv4 address or range, host byte order: a matches when
 * (a & mask) == addr. */
typedef struct {
	uint32_t addr, mask;
} pn_cidr;

#define PN_PEER_MAX_FROM 32

typedef struct {
	char label[64];
	char ae_title[17];
	char host[256];
	int port;
	unsigned allow; /* PN_ALLOW_* */
	/* Where it may connect from: `addresses`, else `host` (its addresses,
	 * resolved at load), else anywhere (n_from 0). */
	pn_cidr from[PN_PEER_MAX_FROM];
	size_t n_from;
	/* Its certificate, when pinned: then admitted only over TLS, with it. */
	bool has_cert_sha256;
	unsigned char cert_sha256[32];
	char cert_subject[512]; /* RFC 2253 form; "" = not pinned */
	bool tls;               /* outgoing associations to it use TLS */
} pn_peer;

typedef enum { PN_AUDIT_NONE, PN_AUDIT_UDP, PN_AUDIT_TLS, PN_AUDIT_FILE } pn_audit_kind;

/* [node] node_id: 1-63 of [A-Za-z0-9._-], first a letter or digit. */
#define PN_NODE_ID_MAX 63

typedef struct pn_config {
	char ae_title[17];
	char node_id[PN_NODE_ID_MAX + 1]; /* names this node's tmp/ folder and database lock (docs/scale.md) */
	char bind[64];
	int port;
	bool require_called_ae;
	bool accept_unknown_calling_ae;

	int workers;
	int max_associations;
	int max_pdu;
	int acse_timeout;
	int dimse_timeout;
	int stop_timeout; /* seconds a stop waits for associations in progress */

	char *storage_root;
	pn_dup_policy duplicate_policy;
	int max_inflated_mib; /* a deflated dataset may inflate to this much */
	pn_write_policy write_mode;
	/* [retention] min_free_gib: stores are refused (0xA700) while the
	 * storage's file system has less free; 0: never */
	uint64_t min_free_bytes;
	/* the background deletions (retention.h, docs/operations.md); none of
	 * them is on by default: an archive deletes nothing unless told */
	uint64_t max_storage_bytes; /* 0: no quota */
	int max_study_age_days;     /* 0: no age limit */
	bool delete_for_free_space; /* delete while free space is low */
	pn_retention_policy retention_policy;
	int deletes_per_minute;
	int retention_interval; /* seconds between rounds */

	char *conninfo;
	int log_level;

	/* [tls]: the listener runs when tls_port != 0 and a certificate is
	 * given; the certificate is also ours for outgoing TLS. */
	int tls_port;
	char *tls_certificate, *tls_private_key, *tls_ca, *tls_crl; /* NULL: not given */
	bool tls_require_client_certificate;

	/* [audit] */
	pn_audit_kind audit_kind;
	char audit_host[256]; /* udp:// and tls:// */
	int audit_port;
	char *audit_path;  /* file: */
	char *audit_spool; /* the spool folder */
	int audit_spool_max_mib;

	/* [http]: the web pages and DICOMweb (docs/web.md). HTTPS when a
	 * certificate is given here or in [tls]; users NULL: no login, only
	 * allowed on a loopback bind. */
	int http_port; /* 0: off */
	char http_bind[64];
	char *http_certificate, *http_private_key;
	char *http_users;
	int http_max_connections;
	int http_idle_timeout; /* seconds a kept-alive connection may idle */
	int http_max_body_mib; /* STOW-RS bodies */
	int max_matches;       /* C-FIND: 0 = no limit */
	/* [commitment] retry_for: seconds a storage commitment report is
	 * tried again, with back-off, while its peer cannot be reached */
	int commit_retry_for;
	bool pn_case_insensitive; /* C-FIND: person names */
	/* [query] timezone: the zone of stored dates and times whose study
	 * carries no Timezone Offset From UTC, for Timezone query adjustment:
	 * an IANA name (tz_name), or a fixed offset (tz_name "", tz_offset
	 * minutes east of UTC) */
	char tz_name[64];
	int tz_offset;

	pn_peer *peers;
	size_t n_peers;

	char *source; /* the file read, or "(embedded defaults)" */
} pn_config;

/* Builds the configuration from `path` (NULL: embedded defaults only).
 * On error returns a negative code and writes one line naming the file, the
 * line and the key into errbuf. */
int pn_config_load(const char *path, pn_config **ret_config, char *errbuf, size_t errlen);
void pn_config_free(pn_config *config); /* NULL is a no-op */

/* A configuration read again (SIGHUP): the keys that cannot change while
 * the node runs (ports, bind addresses, process counts, storage root,
 * database, audit target) are set back to the running values where they
 * differ, and named in `list` ("[node] port, [storage] root"). Returns how
 * many, or -ENOMEM. */
int pn_config_keep_restart_keys(pn_config *fresh, const pn_config *running, char *list, size_t len);

/* Whether the TLS listener is on. */
bool pn_config_tls_listener(const pn_config *config);
/* The certificate and key HTTPS uses ([http] ones, else [tls] ones), or
 * NULL when the web is plain HTTP. */
const char *pn_config_http_certificate(const pn_config *config);
const char *pn_config_http_private_key(const pn_config *config);
/* Whether `bind` is an address of the loopback (127.0.0.0/8). */
bool pn_config_bind_is_loopback(const char *bind);

/* Whether `addr` (numeric IPv4, e.g. "127.0.0.2") is one the peer may
 * connect from. */
bool pn_peer_admits_address(const pn_peer *peer, const char *addr);

/* The peer whose AE title is `ae`, or NULL. */
const pn_peer *pn_config_find_peer(const pn_config *config, const char *ae);

/* Checks an AE title (1-16 characters of the default repertoire, no
 * backslash or control characters, not only spaces). */
bool pn_ae_title_valid(const char *ae);
/* A [node] node_id: 1-63 letters, digits, '.', '_' or '-', the first a
 * letter or a digit (so it is a safe folder name). */
bool pn_node_id_valid(const char *id);

const char *pn_dup_policy_name(pn_dup_policy p);
const char *pn_retention_policy_name(pn_retention_policy p);

#endif
