#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level = PN_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};
/* syslog priorities: err, warning, info, debug */
static const int level_prio[] = {3, 4, 6, 7};

void pn_log_set_level(int level)
{
	log_level = level;
}

int pn_log_get_level(void)
{
	return log_level;
}

int pn_log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -EINVAL;
}

void pn_log(int level, const char *fmt, ...)
{
	if (level > log_level)
		return;
	int saved_errno = errno;
	char line[2048];
	int n;
	if (getenv("JOURNAL_STREAM")) {
		n = snprintf(line, sizeof(line), "<%d>%s: ", level_prio[level], level_names[level]);
	} else {
		struct timeval tv;
		struct tm tm;
		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		n = snprintf(line, sizeof(line),
		             "%04d-%02d-%02d %02d:%02d:%02d.%03d pacsnode[%d] %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
		             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(),
		             level_names[level]);
	}
	va_list ap;
	va_start(ap, fmt);
	errno = saved_errno; /* so %m works */
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	/* One write per line; a short write to stderr is not worth a retry loop. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
	errno = saved_errno;
}
