/* The node's configuration: embedded defaults, overridden by an INI file.
 * One immutable object, built whole or not at all, passed down by pointer. */
#ifndef PN_CONFIG_H
#define PN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "index.h"      /* pn_dup_policy */
#include "write_mode.h" /* pn_write_policy */

enum {
	PN_ALLOW_STORE = 1 << 0,
	PN_ALLOW_FIND = 1 << 1,
	PN_ALLOW_MOVE = 1 << 2,
	PN_ALLOW_GET = 1 << 3,
};

typedef struct {
	char label[64];
	char ae_title[17];
	char host[256];
	int port;
	unsigned allow; /* PN_ALLOW_* */
} pn_peer;

typedef struct pn_config {
	char ae_title[17];
	char bind[64];
	int port;
	bool require_called_ae;
	bool accept_unknown_calling_ae;

	int workers;
	int max_associations;
	int max_pdu;
	int acse_timeout;
	int dimse_timeout;

	char *storage_root;
	pn_dup_policy duplicate_policy;
	int max_inflated_mib; /* a deflated dataset may inflate to this much */
	pn_write_policy write_mode;

	char *conninfo;
	int log_level;

	int max_matches;          /* C-FIND: 0 = no limit */
	bool pn_case_insensitive; /* C-FIND: person names */

	pn_peer *peers;
	size_t n_peers;

	char *source; /* the file read, or "(embedded defaults)" */
} pn_config;

/* Builds the configuration from `path` (NULL: embedded defaults only).
 * On error returns a negative code and writes one line naming the file, the
 * line and the key into errbuf. */
int pn_config_load(const char *path, pn_config **ret_config, char *errbuf, size_t errlen);
void pn_config_free(pn_config *config); /* NULL is a no-op */

/* The peer whose AE title is `ae`, or NULL. */
const pn_peer *pn_config_find_peer(const pn_config *config, const char *ae);

/* Checks an AE title (1-16 characters of the default repertoire, no
 * backslash or control characters, not only spaces). */
bool pn_ae_title_valid(const char *ae);

const char *pn_dup_policy_name(pn_dup_policy p);

#endif
