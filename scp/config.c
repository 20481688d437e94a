#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <netdb.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dicom_values.h"
#include "log.h"

/* Embedded defaults: a development node that accepts anyone (said so in the
 * log at start-up). Production configurations list their peers. */
#define DEFAULT_AE_TITLE "PACSNODE"
#define DEFAULT_BIND "0.0.0.0"
#define DEFAULT_PORT 11112
#define DEFAULT_STORAGE_ROOT "/var/lib/pacsnode/storage"
#define DEFAULT_CONNINFO "dbname=pacsnode"
#define DEFAULT_TLS_PORT 2762 /* IANA dicom-tls */
#define DEFAULT_HTTP_PORT 8042
#define DEFAULT_HTTP_BIND "127.0.0.1"
#define DEFAULT_AUDIT_SPOOL "/var/lib/pacsnode/audit-spool"
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

static int parse_node_id(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	if (!pn_node_id_valid(value)) {
		snprintf(st->err, sizeof(st->err),
		         "expected 1-%d letters, digits, '.', '_' or '-', the first a letter or a digit, got \"%.80s\"",
		         PN_NODE_ID_MAX, value);
		return -EINVAL;
	}
	snprintf((char *)field, PN_NODE_ID_MAX + 1, "%s", value);
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

/* An IANA zone name the system's tz database has (PostgreSQL's packages
 * use the same files): letters, digits, '_', '-', '+' and '/', no "..". */
static bool zone_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n >= sizeof(((pn_config *)0)->tz_name) || name[0] == '/' || strstr(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-' || c == '+' || c == '/'))
			return false;
	}
	if (strcmp(name, "UTC") == 0)
		return true;
	char path[128];
	snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", name);
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* An IANA name ("Europe/Paris") or a fixed "+HHMM" / "-HHMM". */
static int parse_timezone(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)field;
	(void)min;
	(void)max;
	pn_config *c = st->cfg;
	int minutes;
	if (pn_tz_offset_parse(value, &minutes)) {
		c->tz_name[0] = '\0';
		c->tz_offset = minutes;
		return 0;
	}
	if (!zone_name_valid(value)) {
		snprintf(st->err, sizeof(st->err),
		         "expected a time zone name of the tz database (Europe/Paris) or +HHMM / -HHMM, got \"%.100s\"",
		         value);
		return -EINVAL;
	}
	snprintf(c->tz_name, sizeof(c->tz_name), "%s", value);
	c->tz_offset = 0;
	return 0;
}

/* The host's zone: /etc/timezone's name when the tz database has it, else
 * UTC. */
static void default_timezone(pn_config *c)
{
	snprintf(c->tz_name, sizeof(c->tz_name), "UTC");
	c->tz_offset = 0;
	FILE *f = fopen("/etc/timezone", "r");
	if (!f)
		return;
	char line[128];
	if (fgets(line, sizeof(line), f)) {
		line[strcspn(line, " \t\r\n")] = '\0';
		if (zone_name_valid(line)) /* shorter than tz_name */
			memcpy(c->tz_name, line, strlen(line) + 1);
	}
	fclose(f);
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

/* A size in GiB, decimals allowed (0.5), into bytes; at most max GiB. */
static int parse_gib(parse_state *st, void *field, const char *value, long min, long max)
{
	char *end;
	errno = 0;
	double gib = strtod(value, &end);
	if (errno || end == value || *end || !(gib >= (double)min && gib <= (double)max)) {
		snprintf(st->err, sizeof(st->err),
		         "expected a size in GiB from %ld to %ld (decimals allowed), got \"%s\"", min, max, value);
		return -EINVAL;
	}
	*(uint64_t *)field = (uint64_t)(gib * 1073741824.0);
	return 0;
}

static int parse_retention_policy(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)min;
	(void)max;
	const char *names[] = {pn_retention_policy_name(PN_RETENTION_RECEIVED),
	                       pn_retention_policy_name(PN_RETENTION_ACCESSED)};
	int i;
	if (pick_name(st, value, names, 2, &i) < 0)
		return -EINVAL;
	*(pn_retention_policy *)field = i == 0 ? PN_RETENTION_RECEIVED : PN_RETENTION_ACCESSED;
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
	} ops[] = {{"store", PN_ALLOW_STORE},
	           {"find", PN_ALLOW_FIND},
	           {"move", PN_ALLOW_MOVE},
	           {"get", PN_ALLOW_GET},
	           {"commit", PN_ALLOW_COMMIT}};
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
			         "expected a comma-separated list of store, find, move, get, commit; got \"%s\"",
			         value);
			return -EINVAL;
		}
		p += n;
	}
	*(unsigned *)field = allow;
	return 0;
}

/* One IPv4 address or a.b.c.d/len. */
static int parse_cidr(const char *s, size_t n, pn_cidr *ret)
{
	char buf[32];
	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	long bits = 32;
	char *slash = strchr(buf, '/');
	if (slash) {
		char *end;
		*slash = '\0';
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (errno || end == slash + 1 || *end || bits < 0 || bits > 32)
			return -EINVAL;
	}
	struct in_addr a;
	if (inet_pton(AF_INET, buf, &a) != 1)
		return -EINVAL;
	uint32_t mask = bits == 0 ? 0 : 0xffffffffu << (32 - bits);
	uint32_t addr = ntohl(a.s_addr);
	if (addr & ~mask)
		return -EINVAL; /* host bits set: most likely a typo */
	*ret = (pn_cidr){.addr = addr, .mask = mask};
	return 0;
}

static int parse_addresses(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)field;
	(void)min;
	(void)max;
	pn_peer *peer = st->peer;
	size_t count = 0;
	pn_cidr list[PN_PEER_MAX_FROM];
	const char *p = value;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, ", ");
		if (count == PN_PEER_MAX_FROM || parse_cidr(p, n, &list[count]) < 0) {
			snprintf(st->err, sizeof(st->err),
			         "expected up to %d IPv4 addresses or ranges (a.b.c.d/n, no host bits), got \"%s\"",
			         PN_PEER_MAX_FROM, value);
			return -EINVAL;
		}
		count++;
		p += n;
	}
	if (count == 0) {
		snprintf(st->err, sizeof(st->err), "must not be empty");
		return -EINVAL;
	}
	memcpy(peer->from, list, count * sizeof(list[0]));
	peer->n_from = count;
	return 0;
}

static int hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_sha256(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)field;
	(void)min;
	(void)max;
	unsigned char out[32];
	size_t n = 0;
	for (const char *p = value; *p;) {
		if (*p == ':') {
			p++;
			continue;
		}
		int hi = hex_digit((unsigned char)p[0]), lo = p[1] ? hex_digit((unsigned char)p[1]) : -1;
		if (hi < 0 || lo < 0 || n == sizeof(out)) {
			n = 0;
			break;
		}
		out[n++] = (unsigned char)(hi << 4 | lo);
		p += 2;
	}
	if (n != sizeof(out)) {
		snprintf(st->err, sizeof(st->err),
		         "expected a SHA-256 fingerprint (64 hex digits, colons allowed), got \"%.100s\"", value);
		return -EINVAL;
	}
	memcpy(st->peer->cert_sha256, out, sizeof(out));
	st->peer->has_cert_sha256 = true;
	return 0;
}

/* none, udp://HOST:PORT, tls://HOST:PORT or file:PATH */
static int parse_audit_target(parse_state *st, void *field, const char *value, long min, long max)
{
	(void)field;
	(void)min;
	(void)max;
	pn_config *c = st->cfg;
	if (strcmp(value, "none") == 0) {
		c->audit_kind = PN_AUDIT_NONE;
		return 0;
	}
	if (strncmp(value, "file:", 5) == 0 && value[5]) {
		char *copy = strdup(value + 5);
		if (!copy) {
			snprintf(st->err, sizeof(st->err), "out of memory");
			return -ENOMEM;
		}
		free(c->audit_path);
		c->audit_path = copy;
		c->audit_kind = PN_AUDIT_FILE;
		return 0;
	}
	pn_audit_kind kind = strncmp(value, "udp://", 6) == 0   ? PN_AUDIT_UDP
	                     : strncmp(value, "tls://", 6) == 0 ? PN_AUDIT_TLS
	                                                        : PN_AUDIT_NONE;
	const char *hp = value + 6;
	const char *colon = strrchr(hp, ':');
	char *end = NULL;
	long port = colon ? strtol(colon + 1, &end, 10) : 0;
	if (kind == PN_AUDIT_NONE || !colon || colon == hp || (size_t)(colon - hp) >= sizeof(c->audit_host) ||
	    end == colon + 1 || *end || port < 1 || port > 65535) {
		snprintf(st->err, sizeof(st->err),
		         "expected none, udp://HOST:PORT, tls://HOST:PORT or file:PATH, got \"%.100s\"", value);
		return -EINVAL;
	}
	memcpy(c->audit_host, hp, (size_t)(colon - hp));
	c->audit_host[colon - hp] = '\0';
	c->audit_port = (int)port;
	c->audit_kind = kind;
	return 0;
}

#define CFG(f) offsetof(pn_config, f)
static const config_key node_keys[] = {
    {"node", "ae_title", parse_ae, CFG(ae_title), 0, 0},
    {"node", "node_id", parse_node_id, CFG(node_id), 0, 0},
    {"node", "bind", parse_fixed, CFG(bind), 1, sizeof(((pn_config *)0)->bind)},
    {"node", "port", parse_int, CFG(port), 0, 65535},
    {"node", "require_called_ae", parse_bool, CFG(require_called_ae), 0, 0},
    {"node", "accept_unknown_calling_ae", parse_bool, CFG(accept_unknown_calling_ae), 0, 0},
    {"limits", "workers", parse_int, CFG(workers), 1, 256},
    {"limits", "max_associations", parse_int, CFG(max_associations), 1, 4096},
    {"limits", "max_pdu", parse_int, CFG(max_pdu), 4096, 131072},
    {"limits", "acse_timeout", parse_int, CFG(acse_timeout), 1, 3600},
    {"limits", "dimse_timeout", parse_int, CFG(dimse_timeout), 0, 86400},
    {"limits", "stop_timeout", parse_int, CFG(stop_timeout), 1, 3600},
    {"storage", "root", parse_string, CFG(storage_root), 1, 0},
    {"storage", "duplicate_policy", parse_dup_policy, CFG(duplicate_policy), 0, 0},
    {"storage", "max_inflated_mib", parse_int, CFG(max_inflated_mib), 1, 1048576},
    {"storage", "write_mode", parse_write_mode, CFG(write_mode), 0, 0},
    {"retention", "min_free_gib", parse_gib, CFG(min_free_bytes), 0, 1 << 20},
    {"retention", "max_storage_gib", parse_gib, CFG(max_storage_bytes), 0, 1 << 24},
    {"retention", "max_study_age_days", parse_int, CFG(max_study_age_days), 0, 365000},
    {"retention", "delete_for_free_space", parse_bool, CFG(delete_for_free_space), 0, 0},
    {"retention", "policy", parse_retention_policy, CFG(retention_policy), 0, 0},
    {"retention", "deletes_per_minute", parse_int, CFG(deletes_per_minute), 1, 100000},
    {"retention", "interval", parse_int, CFG(retention_interval), 1, 3600},
    {"database", "conninfo", parse_string, CFG(conninfo), 1, 0},
    {"commitment", "retry_for", parse_int, CFG(commit_retry_for), 0, 30 * 86400},
    {"query", "max_matches", parse_int, CFG(max_matches), 0, 100000000},
    {"query", "pn_case_insensitive", parse_bool, CFG(pn_case_insensitive), 0, 0},
    {"query", "timezone", parse_timezone, 0, 0, 0},
    {"log", "level", parse_log_level, CFG(log_level), 0, 0},
    {"tls", "port", parse_int, CFG(tls_port), 0, 65535},
    {"tls", "certificate", parse_string, CFG(tls_certificate), 1, 0},
    {"tls", "private_key", parse_string, CFG(tls_private_key), 1, 0},
    {"tls", "ca", parse_string, CFG(tls_ca), 1, 0},
    {"tls", "crl", parse_string, CFG(tls_crl), 1, 0},
    {"tls", "require_client_certificate", parse_bool, CFG(tls_require_client_certificate), 0, 0},
    {"audit", "target", parse_audit_target, 0, 0, 0},
    {"audit", "spool", parse_string, CFG(audit_spool), 1, 0},
    {"audit", "spool_max_mib", parse_int, CFG(audit_spool_max_mib), 1, 1048576},
    {"http", "port", parse_int, CFG(http_port), 0, 65535},
    {"http", "bind", parse_fixed, CFG(http_bind), 1, sizeof(((pn_config *)0)->http_bind)},
    {"http", "certificate", parse_string, CFG(http_certificate), 1, 0},
    {"http", "private_key", parse_string, CFG(http_private_key), 1, 0},
    {"http", "users", parse_string, CFG(http_users), 1, 0},
    {"http", "max_connections", parse_int, CFG(http_max_connections), 1, 4096},
    {"http", "idle_timeout", parse_int, CFG(http_idle_timeout), 1, 3600},
    {"http", "max_body_mib", parse_int, CFG(http_max_body_mib), 1, 1048576},
};

#define PEER(f) offsetof(pn_peer, f)
static const config_key peer_keys[] = {
    {"peer", "ae_title", parse_ae, PEER(ae_title), 0, 0},
    {"peer", "host", parse_fixed, PEER(host), 1, sizeof(((pn_peer *)0)->host)},
    {"peer", "port", parse_int, PEER(port), 1, 65535},
    {"peer", "allow", parse_allow, PEER(allow), 0, 0},
    {"peer", "addresses", parse_addresses, 0, 0, 0},
    {"peer", "certificate_sha256", parse_sha256, 0, 0, 0},
    {"peer", "certificate_subject", parse_fixed, PEER(cert_subject), 1, sizeof(((pn_peer *)0)->cert_subject)},
    {"peer", "tls", parse_bool, PEER(tls), 0, 0},
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

/* Not isalnum(): the locale must not widen what a folder name may hold. */
static bool ascii_alnum(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* The host name's first label, lower-cased, what a node id may not hold
 * made '-'; "pacsnode" when there is nothing left. */
static void default_node_id(char id[PN_NODE_ID_MAX + 1])
{
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) < 0)
		host[0] = '\0';
	size_t n = 0;
	for (const char *p = host; *p && *p != '.' && n < PN_NODE_ID_MAX; p++) {
		unsigned char ch = (unsigned char)*p;
		id[n++] =
		    ascii_alnum(ch) || ch == '_' || ch == '-' ? (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch) : '-';
	}
	id[n] = '\0';
	if (!pn_node_id_valid(id))
		snprintf(id, PN_NODE_ID_MAX + 1, "%s", "pacsnode");
}

static int set_defaults(pn_config *c)
{
	snprintf(c->ae_title, sizeof(c->ae_title), "%s", DEFAULT_AE_TITLE);
	default_node_id(c->node_id);
	snprintf(c->bind, sizeof(c->bind), "%s", DEFAULT_BIND);
	c->port = DEFAULT_PORT;
	c->require_called_ae = true;
	c->accept_unknown_calling_ae = true;
	c->workers = 4;
	c->max_associations = 32;
	c->max_pdu = 65536;
	c->acse_timeout = 30;
	c->dimse_timeout = 60;
	c->stop_timeout = 30;
	c->duplicate_policy = PN_DUP_IGNORE;
	c->max_inflated_mib = 1024;
	c->write_mode = PN_WRITE_AUTO;
	c->min_free_bytes = UINT64_C(1) << 30;
	c->retention_policy = PN_RETENTION_RECEIVED;
	c->deletes_per_minute = 30;
	c->retention_interval = 60;
	c->max_matches = 0;
	c->commit_retry_for = 86400;
	c->pn_case_insensitive = true;
	default_timezone(c);
	c->log_level = PN_LOG_INFO;
	c->tls_port = DEFAULT_TLS_PORT;
	c->tls_require_client_certificate = true;
	c->audit_kind = PN_AUDIT_NONE;
	c->audit_spool_max_mib = 64;
	c->http_port = DEFAULT_HTTP_PORT;
	snprintf(c->http_bind, sizeof(c->http_bind), "%s", DEFAULT_HTTP_BIND);
	c->http_max_connections = 16;
	c->http_idle_timeout = 5;
	c->http_max_body_mib = 4096;
	c->storage_root = strdup(DEFAULT_STORAGE_ROOT);
	c->conninfo = strdup(DEFAULT_CONNINFO);
	c->audit_spool = strdup(DEFAULT_AUDIT_SPOOL);
	return c->storage_root && c->conninfo && c->audit_spool ? 0 : -ENOMEM;
}

/* A peer with a host and no `addresses` is admitted from what the host is:
 * resolved once, here, so that no association waits on DNS. */
static int resolve_host(pn_peer *p)
{
	struct in_addr a;
	if (inet_pton(AF_INET, p->host, &a) == 1) {
		p->from[0] = (pn_cidr){.addr = ntohl(a.s_addr), .mask = 0xffffffffu};
		p->n_from = 1;
		return 0;
	}
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(p->host, NULL, &hints, &res) != 0)
		return -ENOENT;
	for (struct addrinfo *r = res; r && p->n_from < PN_PEER_MAX_FROM; r = r->ai_next) {
		uint32_t addr = ntohl(((struct sockaddr_in *)r->ai_addr)->sin_addr.s_addr);
		bool seen = false;
		for (size_t i = 0; i < p->n_from; i++)
			seen |= p->from[i].addr == addr;
		if (!seen)
			p->from[p->n_from++] = (pn_cidr){.addr = addr, .mask = 0xffffffffu};
	}
	freeaddrinfo(res);
	return p->n_from ? 0 : -ENOENT;
}

/* [http]: logins wherever the web is reachable from another machine, and
 * passwords only over HTTPS there. */
static int check_http(pn_config *c, char *err, size_t errlen)
{
	struct in_addr a;
	if (inet_pton(AF_INET, c->http_bind, &a) != 1) {
		snprintf(err, errlen, "%s: [http] bind \"%s\" is not an IPv4 address", c->source, c->http_bind);
		return -EINVAL;
	}
	if ((c->http_certificate != NULL) != (c->http_private_key != NULL)) {
		snprintf(err, errlen, "%s: [http] certificate and private_key must be given together", c->source);
		return -EINVAL;
	}
	bool loopback = pn_config_bind_is_loopback(c->http_bind);
	if (!c->http_users && !loopback) {
		snprintf(
		    err, errlen,
		    "%s: [http] users is missing: the web is served on %s, beyond this machine, so it needs logins",
		    c->source, c->http_bind);
		return -EINVAL;
	}
	if (!loopback && !pn_config_http_certificate(c)) {
		snprintf(err, errlen,
		         "%s: [http] bind %s is not a loopback address: passwords would cross the network in clear; "
		         "give [http] or [tls] certificate and private_key for HTTPS",
		         c->source, c->http_bind);
		return -EINVAL;
	}
	if (c->http_port == c->port || (pn_config_tls_listener(c) && c->http_port == c->tls_port)) {
		snprintf(err, errlen, "%s: [http] port %d is also a DICOM port", c->source, c->http_port);
		return -EINVAL;
	}
	return 0;
}

/* Rules that involve more than one key. */
static int check_whole(pn_config *c, char *err, size_t errlen)
{
	if (c->max_associations < c->workers) {
		snprintf(err, errlen, "%s: [limits] max_associations (%d) must be at least workers (%d)", c->source,
		         c->max_associations, c->workers);
		return -EINVAL;
	}
	bool tls_cert = c->tls_certificate || c->tls_private_key;
	if (tls_cert && !(c->tls_certificate && c->tls_private_key)) {
		snprintf(err, errlen, "%s: [tls] certificate and private_key must be given together", c->source);
		return -EINVAL;
	}
	if (pn_config_tls_listener(c) && !c->tls_ca && c->tls_require_client_certificate) {
		snprintf(err, errlen,
		         "%s: [tls] ca is missing: client certificates are required (require_client_certificate), "
		         "so they need a CA to be checked against",
		         c->source);
		return -EINVAL;
	}
	if (c->port == 0 && !pn_config_tls_listener(c)) {
		snprintf(err, errlen,
		         "%s: [node] port is 0 and there is no TLS listener ([tls] certificate, port): "
		         "nothing to listen on",
		         c->source);
		return -EINVAL;
	}
	if (c->port != 0 && c->port == c->tls_port && pn_config_tls_listener(c)) {
		snprintf(err, errlen, "%s: [node] port and [tls] port are both %d", c->source, c->port);
		return -EINVAL;
	}
	if (c->http_port != 0) {
		int rc = check_http(c, err, errlen);
		if (rc < 0)
			return rc;
	}
	if (c->audit_kind == PN_AUDIT_TLS && !c->tls_ca) {
		snprintf(err, errlen, "%s: [audit] target tls:// needs [tls] ca to verify the audit repository",
		         c->source);
		return -EINVAL;
	}
	for (size_t i = 0; i < c->n_peers; i++) {
		pn_peer *p = &c->peers[i];
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
		if ((p->tls || p->has_cert_sha256 || p->cert_subject[0]) && !c->tls_certificate) {
			snprintf(err, errlen,
			         "%s: [peer.%s] uses TLS (tls or a certificate pin) but [tls] has no certificate",
			         c->source, p->label);
			return -EINVAL;
		}
		if (p->tls && !c->tls_ca) {
			snprintf(err, errlen, "%s: [peer.%s] tls = yes needs [tls] ca to verify the peer", c->source,
			         p->label);
			return -EINVAL;
		}
		if ((p->allow & PN_ALLOW_COMMIT) && (!p->host[0] || !p->port)) {
			snprintf(err, errlen,
			         "%s: [peer.%s] allow = commit needs host and port (where its storage commitment "
			         "reports go)",
			         c->source, p->label);
			return -EINVAL;
		}
		if (p->n_from == 0 && p->host[0] && resolve_host(p) < 0) {
			snprintf(err, errlen, "%s: [peer.%s] host \"%s\" does not resolve to an IPv4 address",
			         c->source, p->label, p->host);
			return -EINVAL;
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
	free(c->tls_certificate);
	free(c->tls_private_key);
	free(c->tls_ca);
	free(c->tls_crl);
	free(c->audit_path);
	free(c->audit_spool);
	free(c->http_certificate);
	free(c->http_private_key);
	free(c->http_users);
	free(c->peers);
	free(c->source);
	free(c);
}

bool pn_config_tls_listener(const pn_config *c)
{
	return c->tls_port != 0 && c->tls_certificate && c->tls_private_key;
}

const char *pn_config_http_certificate(const pn_config *c)
{
	return c->http_certificate ? c->http_certificate : c->tls_certificate;
}

const char *pn_config_http_private_key(const pn_config *c)
{
	return c->http_certificate ? c->http_private_key : c->tls_private_key;
}

bool pn_config_bind_is_loopback(const char *bind)
{
	struct in_addr a;
	return inet_pton(AF_INET, bind, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

bool pn_peer_admits_address(const pn_peer *p, const char *addr)
{
	if (p->n_from == 0)
		return true;
	struct in_addr a;
	if (inet_pton(AF_INET, addr, &a) != 1)
		return false;
	uint32_t v = ntohl(a.s_addr);
	for (size_t i = 0; i < p->n_from; i++)
		if ((v & p->from[i].mask) == p->from[i].addr)
			return true;
	return false;
}

const pn_peer *pn_config_find_peer(const pn_config *c, const char *ae)
{
	for (size_t i = 0; i < c->n_peers; i++)
		if (strcmp(c->peers[i].ae_title, ae) == 0)
			return &c->peers[i];
	return NULL;
}

bool pn_node_id_valid(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > PN_NODE_ID_MAX || !ascii_alnum((unsigned char)id[0]))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)id[i];
		if (!ascii_alnum(ch) && ch != '.' && ch != '_' && ch != '-')
			return false;
	}
	return true;
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

/* One restart-only key: kept from `running` in `fresh` when they differ,
 * its name added to the list. */
static void keep_int(pn_config *fresh, const pn_config *running, size_t off, const char *name, char *list, size_t len,
                     int *n)
{
	int *a = (int *)((char *)fresh + off);
	const int *b = (const int *)((const char *)running + off);
	if (*a == *b)
		return;
	*a = *b;
	size_t used = strlen(list);
	snprintf(list + used, len - used, "%s%s", used ? ", " : "", name);
	(*n)++;
}

static void keep_chars(pn_config *fresh, const pn_config *running, size_t off, size_t size, const char *name,
                       char *list, size_t len, int *n)
{
	char *a = (char *)fresh + off;
	const char *b = (const char *)running + off;
	if (strcmp(a, b) == 0)
		return;
	snprintf(a, size, "%s", b);
	size_t used = strlen(list);
	snprintf(list + used, len - used, "%s%s", used ? ", " : "", name);
	(*n)++;
}

static int keep_string(pn_config *fresh, const pn_config *running, size_t off, const char *name, char *list, size_t len,
                       int *n)
{
	char **a = (char **)((char *)fresh + off);
	char *const *b = (char *const *)((const char *)running + off);
	if ((!*a && !*b) || (*a && *b && strcmp(*a, *b) == 0))
		return 0;
	char *copy = NULL;
	if (*b && !(copy = strdup(*b)))
		return -ENOMEM;
	free(*a);
	*a = copy;
	size_t used = strlen(list);
	snprintf(list + used, len - used, "%s%s", used ? ", " : "", name);
	(*n)++;
	return 0;
}

int pn_config_keep_restart_keys(pn_config *fresh, const pn_config *running, char *list, size_t len)
{
	int n = 0;
	list[0] = '\0';
#define KEEP_INT(f, name) keep_int(fresh, running, offsetof(pn_config, f), name, list, len, &n)
#define KEEP_CHARS(f, name) keep_chars(fresh, running, offsetof(pn_config, f), sizeof(fresh->f), name, list, len, &n)
#define KEEP_STRING(f, name)                                                                                           \
	do {                                                                                                           \
		if (keep_string(fresh, running, offsetof(pn_config, f), name, list, len, &n) < 0)                      \
			return -ENOMEM;                                                                                \
	} while (0)
	/* what the listener bound, the processes it counted, the handles made
	 * once before any fork */
	KEEP_CHARS(ae_title, "[node] ae_title");
	KEEP_CHARS(node_id, "[node] node_id");
	KEEP_CHARS(bind, "[node] bind");
	KEEP_INT(port, "[node] port");
	KEEP_INT(tls_port, "[tls] port");
	KEEP_INT(workers, "[limits] workers");
	KEEP_INT(max_associations, "[limits] max_associations");
	KEEP_STRING(storage_root, "[storage] root");
	KEEP_STRING(conninfo, "[database] conninfo");
	KEEP_INT(audit_kind, "[audit] target");
	KEEP_CHARS(audit_host, "[audit] target");
	KEEP_INT(audit_port, "[audit] target");
	KEEP_STRING(audit_path, "[audit] target");
	KEEP_STRING(audit_spool, "[audit] spool");
	KEEP_INT(audit_spool_max_mib, "[audit] spool_max_mib");
	KEEP_INT(http_port, "[http] port");
	KEEP_CHARS(http_bind, "[http] bind");
	KEEP_INT(http_max_connections, "[http] max_connections");
#undef KEEP_INT
#undef KEEP_CHARS
#undef KEEP_STRING
	/* the TLS listener runs or not as it did at start */
	if (pn_config_tls_listener(fresh) != pn_config_tls_listener(running)) {
		size_t used = strlen(list);
		snprintf(list + used, len - used, "%s%s", used ? ", " : "", "[tls] certificate (listener on or off)");
		char *c = running->tls_certificate ? strdup(running->tls_certificate) : NULL;
		char *k = running->tls_private_key ? strdup(running->tls_private_key) : NULL;
		free(fresh->tls_certificate);
		free(fresh->tls_private_key);
		fresh->tls_certificate = c;
		fresh->tls_private_key = k;
		n++;
	}
	return n;
}

const char *pn_retention_policy_name(pn_retention_policy p)
{
	return p == PN_RETENTION_ACCESSED ? "accessed" : "received";
}
