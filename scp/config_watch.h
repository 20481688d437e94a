/* Whether the configuration changed since the node last started: the
 * Security Alert the audit trail owes for a configuration change (PS3.15
 * A.5.3.11, EventTypeCode "Network Configuration" / "Software
 * Configuration"). The node reads its configuration only at start, so a
 * change takes effect, and is reported, then. */
#ifndef PN_CONFIG_WATCH_H
#define PN_CONFIG_WATCH_H

#include <stdbool.h>
#include <stddef.h>

/* Compares the SHA-256 of the file `config_path` with the one remembered in
 * `state_path` and remembers the new one. 1: changed (what in `detail`), 0:
 * the same, or nothing remembered yet (a first start), or no file (embedded
 * defaults); negative errno when the files cannot be read or written. */
int pn_config_watch(const char *config_path, const char *state_path, char *detail, size_t detail_len);

#endif
