#include "config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* Embedded defaults: a development node that accepts anyone (said so in the
 * log at start-up). Production configurations list their peers. */
#define DEFAULT_AE_TITLE "PACSNODE"
#define DEFAULT_BIND "0.0.0.0"
#define DEFAULT_PORT 11112
#define DEFAULT_STORAGE_ROOT "/var/lib/pacsnode/storage"
#define DEFAULT_CONNINFO "dbname=pacsnode"
#define MAX_PEERS 1024

typedef struct parse_state {
	pn_config *cfg;
	char err[256]; /* first error, without file and line */
	pn_peer *peer; /* peer of the current [peer.X] section */
	char peer_section[80];
} parse_state;

typedef int (*value_parser)(parse_state *st, void *field, const char *value, long min, long max);

typedef struct {
	const char *section;
	const char *name;
	value_parser parse;
	size_t offset;
	long min, max;
} config_key;

static int parse_int(parse_state *st, void *field, const char *value, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(value, &end, 10);
	if (errno || end == value || *end != '\0' || v < min || v > max) {
		snprintf(st->err, sizeof(st->err), "expected an integer from %ld to %ld, got \"%s\"", min, max, value);
		return -EINVAL;
	}
	*(int *)field = (int)v;
	return 0;
}

static int parse_bool(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*(bool *)field = true;
			return 0;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*(bool *)field = false;
			return 0;
		}
	}
	snprintf(st->err, sizeof(st->err), "expected yes or no, got \"%s\"", value);
	return -EINVAL;
}

static int parse_ae(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	if (!pn_ae_title_valid(value)) {
		snprintf(st->err, sizeof(st->err),
		         "expected an AE title (1-16 characters, no backslash or control characters), got \"%s\"",
		         value);
		return -EINVAL;
	}
	snprintf((char *)field, 17, "%s", value);
	return 0;
}

/* Fixed-size string; max is the buffer size. */
static int parse_fixed(parse_state *st, void *field, const char *value, long min, long max)
{
	if ((long)strlen(value) < min || (long)strlen(value) >= max) {
		snprintf(st->err, sizeof(st->err), "expected %ld to %ld characters, got \"%s\"", min, max - 1, value);
		return -EINVAL;
	}
	memcpy(field, value, strlen(value) + 1);
	return 0;
}

static int parse_string(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)max;
	if ((long)strlen(value) < min) {
		snprintf(st->err, sizeof(st->err), "must not be empty");
		return -EINVAL;
	}
	char *copy = strdup(value);
	if (!copy) {
		snprintf(st->err, sizeof(st->err), "out of memory");
		return -ENOMEM;
	}
	free(*(char **)field);
	*(char **)field = copy;
	return 0;
}

/* Which of n names value is; else says "expected a, b or c". */
static int pick_name(parse_state *st, const char *value, const char *const names[], int n, int *ret_index)
{
	for (int i = 0; i < n; i++) {
		if (strcmp(value, names[i]) == 0) {
			*ret_index = i;
			return 0;
		}
	}
	int len = snprintf(st->err, sizeof(st->err), "expected");
	for (int i = 0; i < n && len >= 0 && (size_t)len < sizeof(st->err); i++)
		len += snprintf(st->err + len, sizeof(st->err) - (size_t)len, "%s %s",
		                i == 0       ? ""
		                : i == n - 1 ? " or"
		                             : ",",
		                names[i]);
	if (len >= 0 && (size_t)len < sizeof(st->err))
		snprintf(st->err + len, sizeof(st->err) - (size_t)len, ", got \"%s\"", value);
	return -EINVAL;
}

static int parse_dup_policy(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	static const pn_dup_policy all[] = {PN_DUP_IGNORE, PN_DUP_REPLACE, PN_DUP_REJECT};
	const char *names[] = {pn_dup_policy_name(all[0]), pn_dup_policy_name(all[1]), pn_dup_policy_name(all[2])};
	int i;
	if (pick_name(st, value, names, 3, &i) < 0)
		return -EINVAL;
	*(pn_dup_policy *)field = all[i];
	return 0;
}

static int parse_write_mode(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	static const pn_write_policy all[] = {PN_WRITE_AUTO, PN_WRITE_DIRECT, PN_WRITE_BUFFERED};
	const char *names[] = {pn_write_policy_name(all[0]), pn_write_policy_name(all[1]),
	                       pn_write_policy_name(all[2])};
	int i;
	if (pick_name(st, value, names, 3, &i) < 0)
		return -EINVAL;
	*(pn_write_policy *)field = all[i];
	return 0;
}

static int parse_log_level(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	int level = pn_log_level_parse(value);
	if (level < 0) {
		snprintf(st->err, sizeof(st->err), "expected error, warning, info or debug, got \"%s\"", value);
		return -EINVAL;
	}
	*(int *)field = level;
	return 0;
}

static int parse_allow(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	static const struct {
		const char *name;
		unsigned bit;
	} ops[] = {{"store", PN_ALLOW_STORE}, {"find", PN_ALLOW_FIND}, {"move", PN_ALLOW_MOVE}, {"get", PN_ALLOW_GET}};
	unsigned allow = 0;
	const char *p = value;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, ", ");
		bool found = false;
		for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
			if (strlen(ops[i].name) == n && strncmp(p, ops[i].name, n) == 0) {
				allow |= ops[i].bit;
				found = true;
			}
		}
		if (!found) {
			snprintf(st->err, sizeof(st->err),
			         "expected a comma-separated list of store, find, move, get; got \"%s\"", value);
			return -EINVAL;
		}
		p += n;
	}
	*(unsigned *)field = allow;
	return 0;
}

#define CFG(f) offsetof(pn_config, f)
static const config_key node_keys[] = {
    {"node", "ae_title", parse_ae, CFG(ae_title), 0, 0},
    {"node", "bind", parse_fixed, CFG(bind), 1, sizeof(((pn_config *)0)->bind)},
    {"node", "port", parse_int, CFG(port), 1, 65535},
    {"node", "require_called_ae", parse_bool, CFG(require_called_ae), 0, 0},
    {"node", "accept_unknown_calling_ae", parse_bool, CFG(accept_unknown_calling_ae), 0, 0},
    {"limits", "workers", parse_int, CFG(workers), 1, 256},
    {"limits", "max_associations", parse_int, CFG(max_associations), 1, 4096},
    {"limits", "max_pdu", parse_int, CFG(max_pdu), 4096, 131072},
    {"limits", "acse_timeout", parse_int, CFG(acse_timeout), 1, 3600},
    {"limits", "dimse_timeout", parse_int, CFG(dimse_timeout), 0, 86400},
    {"storage", "root", parse_string, CFG(storage_root), 1, 0},
    {"storage", "duplicate_policy", parse_dup_policy, CFG(duplicate_policy), 0, 0},
    {"storage", "max_inflated_mib", parse_int, CFG(max_inflated_mib), 1, 1048576},
    {"storage", "write_mode", parse_write_mode, CFG(write_mode), 0, 0},
    {"database", "conninfo", parse_string, CFG(conninfo), 1, 0},
    {"query", "max_matches", parse_int, CFG(max_matches), 0, 100000000},
    {"query", "pn_case_insensitive", parse_bool, CFG(pn_case_insensitive), 0, 0},
    {"log", "level", parse_log_level, CFG(log_level), 0, 0},
};

#define PEER(f) offsetof(pn_peer, f)
static const config_key peer_keys[] = {
    {"peer", "ae_title", parse_ae, PEER(ae_title), 0, 0},
    {"peer", "host", parse_fixed, PEER(host), 1, sizeof(((pn_peer *)0)->host)},
    {"peer", "port", parse_int, PEER(port), 1, 65535},
    {"peer", "allow", parse_allow, PEER(allow), 0, 0},
};

static pn_peer *peer_for_section(parse_state *st, const char *section)
{
	if (st->peer && strcmp(st->peer_section, section) == 0)
		return st->peer;
	pn_config *c = st->cfg;
	const char *label = section + strlen("peer.");
	for (size_t i = 0; i < c->n_peers; i++)
		if (strcmp(c->peers[i].label, label) == 0)
			return st->peer = &c->peers[i];
	if (c->n_peers >= MAX_PEERS || strlen(label) == 0 || strlen(label) >= sizeof(c->peers[0].label)) {
		snprintf(st->err, sizeof(st->err), "bad peer section (empty or too long label, or over %d peers)",
		         MAX_PEERS);
		return NULL;
	}
	pn_peer *grown = realloc(c->peers, (c->n_peers + 1) * sizeof(*grown));
	if (!grown) {
		snprintf(st->err, sizeof(st->err), "out of memory");
		return NULL;
	}
	c->peers = grown;
	pn_peer *p = &c->peers[c->n_peers++];
	memset(p, 0, sizeof(*p));
	snprintf(p->label, sizeof(p->label), "%s", label);
	snprintf(st->peer_section, sizeof(st->peer_section), "%s", section);
	return st->peer = p;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
	parse_state *st = user;
	if (st->err[0])
		return 0; /* keep the first error only */

	const config_key *keys = node_keys;
	size_t n = sizeof(node_keys) / sizeof(node_keys[0]);
	void *base = st->cfg;
	const char *table_section = section;
	if (strncmp(section, "peer.", 5) == 0) {
		keys = peer_keys;
		n = sizeof(peer_keys) / sizeof(peer_keys[0]);
		base = peer_for_section(st, section);
		if (!base)
			return 0;
		table_section = "peer";
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(keys[i].section, table_section) != 0 || strcmp(keys[i].name, name) != 0)
			continue;
		if (keys[i].parse(st, (char *)base + keys[i].offset, value, keys[i].min, keys[i].max) < 0) {
			/* name the key in front of the parser's reason */
			char reason[sizeof(st->err)];
			snprintf(reason, sizeof(reason), "%s", st->err);
			snprintf(st->err, sizeof(st->err), "[%s] %s: %.180s", section, name, reason);
			return 0;
		}
		return 1;
	}
	snprintf(st->err, sizeof(st->err), "unknown key \"%s\" in section [%s]", name, section);
	return 0;
}

static int set_defaults(pn_config *c)
{
	snprintf(c->ae_title, sizeof(c->ae_title), "%s", DEFAULT_AE_TITLE);
	snprintf(c->bind, sizeof(c->bind), "%s", DEFAULT_BIND);
	c->port = DEFAULT_PORT;
	c->require_called_ae = true;
	c->accept_unknown_calling_ae = true;
	c->workers = 4;
	c->max_associations = 32;
	c->max_pdu = 65536;
	c->acse_timeout = 30;
	c->dimse_timeout = 60;
	c->duplicate_policy = PN_DUP_IGNORE;
	c->max_inflated_mib = 1024;
	c->write_mode = PN_WRITE_AUTO;
	c->max_matches = 0;
	c->pn_case_insensitive = true;
	c->log_level = PN_LOG_INFO;
	c->storage_root = strdup(DEFAULT_STORAGE_ROOT);
	c->conninfo = strdup(DEFAULT_CONNINFO);
	return c->storage_root && c->conninfo ? 0 : -ENOMEM;
}

/* Rules that involve more than one key. */
static int check_whole(const pn_config *c, char *err, size_t errlen)
{
	if (c->max_associations < c->workers) {
		snprintf(err, errlen, "%s: [limits] max_associations (%d) must be at least workers (%d)", c->source,
		         c->max_associations, c->workers);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->n_peers; i++) {
		const pn_peer *p = &c->peers[i];
		if (!p->ae_title[0]) {
			snprintf(err, errlen, "%s: [peer.%s] ae_title is missing", c->source, p->label);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(c->peers[j].ae_title, p->ae_title) == 0) {
				snprintf(err, errlen, "%s: [peer.%s] ae_title \"%s\" is already used by [peer.%s]",
				         c->source, p->label, p->ae_title, c->peers[j].label);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int pn_config_load(const char *path, pn_config **ret_config, char *errbuf, size_t errlen)
{
	pn_config *c = calloc(1, sizeof(*c));
	int rc = -ENOMEM;
	if (!c || set_defaults(c) < 0) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	c->source = strdup(path ? path : "(embedded defaults)");
	if (!c->source) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	if (path) {
		parse_state st = {.cfg = c};
		int line = ini_parse(path, on_key, &st);
		if (line == -1) {
			snprintf(errbuf, errlen, "could not open configuration file \"%s\": %s", path, strerror(errno));
			rc = -ENOENT;
			goto fail;
		}
		if (line != 0) {
			snprintf(errbuf, errlen, "%s:%d: %s", path, line,
			         st.err[0] ? st.err : "syntax error (expected [section] or key = value)");
			rc = -EINVAL;
			goto fail;
		}
	}
	rc = check_whole(c, errbuf, errlen);
	if (rc < 0)
		goto fail;
	*ret_config = c;
	return 0;
fail:
	pn_config_free(c);
	return rc;
}

void pn_config_free(pn_config *c)
{
	if (!c)
		return;
	free(c->storage_root);
	free(c->conninfo);
	free(c->peers);
	free(c->source);
	free(c);
}

const pn_peer *pn_config_find_peer(const pn_config *c, const char *ae)
{
	for (size_t i = 0; i < c->n_peers; i++)
		if (strcmp(c->peers[i].ae_title, ae) == 0)
			return &c->peers[i];
	return NULL;
}

bool pn_ae_title_valid(const char *ae)
{
	size_t n = strlen(ae);
	if (n == 0 || n > 16)
		return false;
	bool only_spaces = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)ae[i];
		if (ch < 0x20 || ch >= 0x7f || ch == '\\')
			return false;
		if (ch != ' ')
			only_spaces = false;
	}
	return !only_spaces;
}

const char *pn_dup_policy_name(pn_dup_policy p)
{
	switch (p) {
	case PN_DUP_IGNORE:
		return "ignore";
	case PN_DUP_REPLACE:
		return "replace";
	case PN_DUP_REJECT:
		return "reject";
	}
	return "?";
}
