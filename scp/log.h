/* Logging to stderr, one line per write(2) so lines from several processes
 * never interleave. Under journald (JOURNAL_STREAM set) lines carry a <N>
 * priority prefix instead of a timestamp. The level is the only global. */
#ifndef PN_LOG_H
#define PN_LOG_H

enum { PN_LOG_ERROR = 0, PN_LOG_WARNING, PN_LOG_INFO, PN_LOG_DEBUG };

void pn_log_set_level(int level);
int pn_log_get_level(void);
/* "error", "warning", "info", "debug" -> level; -EINVAL otherwise. */
int pn_log_level_parse(const char *s);

void pn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pn_error(...) pn_log(PN_LOG_ERROR, __VA_ARGS__)
#define pn_warning(...) pn_log(PN_LOG_WARNING, __VA_ARGS__)
#define pn_info(...) pn_log(PN_LOG_INFO, __VA_ARGS__)
#define pn_debug(...) pn_log(PN_LOG_DEBUG, __VA_ARGS__)

#endif
