/* The audit trail's producer side: every event becomes one file in the
 * spool (written, then renamed into place), counted in counters shared by
 * every process of the node. The sender process (audit_send.c) takes them
 * from there. */
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit_internal.h"
#include "audit_msg.h"
#include "log.h"

#define DROP_LOG_INTERVAL_S 10

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A producer's file not yet renamed into place: "tmp.PID.SEQ". */
static bool tmp_name(const char *name)
{
	if (strncmp(name, "tmp.", 4) != 0)
		return false;
	int dots = 0;
	for (const char *p = name + 4; *p; p++) {
		if (*p == '.')
			dots++;
		else if (*p < '0' || *p > '9')
			return false;
	}
	return dots == 1;
}

/* The bytes of the messages waiting to be sent; with `clean`, also
 * removes the half-written files of producers that died before their
 * rename, which nobody will finish (only at the node's start, before the
 * first fork: no producer runs yet). */
static uint64_t spooled_bytes(const char *dir, bool clean)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	uint64_t total = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (tmp_name(de->d_name)) {
			if (clean)
				unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (!pn_audit_spool_name(de->d_name))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
			total += (uint64_t)st.st_size;
	}
	closedir(d);
	return total;
}

/* A new handle: 1 when the target needs a spool (to open next), 0 for
 * target none (*ret is the no-op handle), or a negative errno. */
static int handle_new(const pn_config *cfg, pn_audit **ret)
{
	pn_audit *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->cfg = cfg;
	a->dir_fd = -1;
	if (cfg->audit_kind != PN_AUDIT_NONE && (!cfg->audit_spool || !cfg->audit_spool[0])) {
		free(a);
		return -EINVAL;
	}
	if (gethostname(a->hostname, sizeof(a->hostname) - 1) < 0 || !a->hostname[0])
		snprintf(a->hostname, sizeof(a->hostname), "localhost");
	*ret = a;
	return cfg->audit_kind == PN_AUDIT_NONE ? 0 : 1;
}

int pn_audit_create(const pn_config *cfg, pn_audit **ret)
{
	pn_audit *a = NULL;
	int rc = handle_new(cfg, &a);
	if (rc <= 0) {
		if (rc == 0)
			*ret = a;
		return rc;
	}
	if (mkdir(cfg->audit_spool, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		free(a);
		return rc;
	}
	a->dir_fd = open(cfg->audit_spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->dir_fd < 0) {
		rc = -errno;
		free(a);
		return rc;
	}
	/* Shared by the listener and every child it forks. */
	a->shared = mmap(NULL, sizeof(*a->shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (a->shared == MAP_FAILED) {
		rc = -errno;
		close(a->dir_fd);
		free(a);
		return rc;
	}
	atomic_init(&a->shared->bytes, spooled_bytes(cfg->audit_spool, true));
	atomic_init(&a->shared->dropped, 0);
	atomic_init(&a->shared->seq, 0);
	a->max_bytes = (uint64_t)cfg->audit_spool_max_mib << 20;
	a->enabled = true;
	*ret = a;
	return 0;
}

int pn_audit_attach(const pn_config *cfg, pn_audit **ret)
{
	pn_audit *a = NULL;
	int rc = handle_new(cfg, &a);
	if (rc <= 0) {
		if (rc == 0)
			*ret = a;
		return rc;
	}
	struct stat st;
	a->dir_fd = open(cfg->audit_spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->dir_fd < 0 || fstat(a->dir_fd, &st) < 0 || faccessat(a->dir_fd, ".", W_OK, AT_EACCESS) < 0) {
		rc = -errno;
		pn_audit_free(a);
		return rc;
	}
	/* Root's messages belong to the node's user, so that its sender can
	 * read them. */
	if (geteuid() == 0 && st.st_uid != 0) {
		a->give_away = true;
		a->owner_uid = st.st_uid;
		a->owner_gid = st.st_gid;
	}
	/* Our own counters: the node's are in its memory. The spool's limit
	 * still holds against what is there now. */
	a->shared = calloc(1, sizeof(*a->shared));
	if (!a->shared) {
		pn_audit_free(a);
		return -ENOMEM;
	}
	a->shared_owned = true;
	atomic_init(&a->shared->bytes, spooled_bytes(cfg->audit_spool, false));
	atomic_init(&a->shared->dropped, 0);
	atomic_init(&a->shared->seq, 0);
	a->max_bytes = (uint64_t)cfg->audit_spool_max_mib << 20;
	a->enabled = true;
	*ret = a;
	return 0;
}

void pn_audit_free(pn_audit *a)
{
	if (!a)
		return;
	if (a->dir_fd >= 0)
		close(a->dir_fd);
	if (a->shared_owned)
		free(a->shared);
	else if (a->shared && a->shared != MAP_FAILED)
		munmap(a->shared, sizeof(*a->shared));
	free(a);
}

bool pn_audit_enabled(const pn_audit *a)
{
	return a && a->enabled;
}

unsigned long pn_audit_dropped(const pn_audit *a)
{
	return pn_audit_enabled(a) ? (unsigned long)atomic_load(&a->shared->dropped) : 0;
}

/* Counted always; said at most once per 10 s per process (the handle is
 * each process's own copy, the counter is shared). */
static void dropped(pn_audit *a, const char *why)
{
	unsigned long n = (unsigned long)atomic_fetch_add(&a->shared->dropped, 1) + 1;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!a->drop_logged || now.tv_sec - a->last_drop_log >= DROP_LOG_INTERVAL_S) {
		a->drop_logged = true;
		a->last_drop_log = now.tv_sec;
		pn_warning("%s: message dropped (%lu dropped since start)", why, n);
	}
}

/* One message into the spool: whole, under a name that sorts by time. */
static void spool(pn_audit *a, const char *msg, size_t len)
{
	uint64_t before = atomic_fetch_add(&a->shared->bytes, len);
	if (before + len > a->max_bytes) {
		atomic_fetch_sub(&a->shared->bytes, len);
		char why[96];
		snprintf(why, sizeof(why), "audit spool full (%d MiB)", a->cfg->audit_spool_max_mib);
		dropped(a, why);
		return;
	}
	unsigned long seq = (unsigned long)atomic_fetch_add(&a->shared->seq, 1);
	char tmp[64], name[80];
	snprintf(tmp, sizeof(tmp), "tmp.%d.%lu", (int)getpid(), seq);
	snprintf(name, sizeof(name), "%020" PRId64 "-%d-%lu%s", now_us(), (int)getpid(), seq, PN_AUDIT_SPOOL_SUFFIX);
	int fd = openat(a->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int err = 0;
	if (fd >= 0 && a->give_away && fchown(fd, a->owner_uid, a->owner_gid) < 0) {
		err = errno;
		close(fd);
		unlinkat(a->dir_fd, tmp, 0);
	} else if (fd < 0) {
		err = errno;
	} else {
		ssize_t w = write(fd, msg, len);
		if (w != (ssize_t)len)
			err = w < 0 ? errno : ENOSPC;
		if (close(fd) < 0 && !err)
			err = errno;
		if (!err && renameat(a->dir_fd, tmp, a->dir_fd, name) < 0)
			err = errno;
		if (err)
			unlinkat(a->dir_fd, tmp, 0);
	}
	if (err) {
		atomic_fetch_sub(&a->shared->bytes, len);
		char why[160];
		snprintf(why, sizeof(why), "audit: could not write to the spool \"%s\": %s", a->cfg->audit_spool,
		         strerror(err));
		dropped(a, why);
	}
}

static void emit(pn_audit *a, const pn_audit_event *ev)
{
	if (!pn_audit_enabled(a))
		return;
	pn_audit_source src = {
	    .ae_title = a->cfg->ae_title, .hostname = a->hostname, .pid = (int)getpid(), .time_us = now_us()};
	char *msg = NULL;
	size_t len = 0;
	if (pn_audit_msg_build(&src, ev, &msg, &len) < 0) {
		dropped(a, "audit: out of memory");
		return;
	}
	spool(a, msg, len);
	free(msg);
}

void pn_audit_app_activity(pn_audit *a, bool start)
{
	pn_audit_event ev = {.kind = start ? PN_AUDIT_MSG_APP_START : PN_AUDIT_MSG_APP_STOP};
	emit(a, &ev);
}

void pn_audit_security_alert(pn_audit *a, pn_audit_alert_kind kind, const pn_audit_assoc *who, const char *detail)
{
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_ALERT, .who = who, .alert = kind, .detail = detail};
	emit(a, &ev);
}

void pn_audit_instances_transferred(pn_audit *a, const pn_audit_assoc *who, bool received, const pn_audit_assoc *dest,
                                    const pn_audit_study *study, bool failed)
{
	pn_audit_event ev = {.kind = received ? PN_AUDIT_MSG_RECEIVED : PN_AUDIT_MSG_SENT,
	                     .who = who,
	                     .dest = dest,
	                     .study = study,
	                     .failed = failed};
	emit(a, &ev);
}

void pn_audit_begin_transfer(pn_audit *a, const pn_audit_assoc *who, const pn_audit_assoc *dest,
                             const pn_audit_study *study)
{
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_BEGIN, .who = who, .dest = dest, .study = study};
	emit(a, &ev);
}

void pn_audit_query(pn_audit *a, const pn_audit_assoc *who, const char *sop_class_uid, const char *transfer_syntax_uid,
                    const void *identifier, size_t identifier_len, bool failed)
{
	pn_audit_event ev = {.kind = PN_AUDIT_MSG_QUERY,
	                     .who = who,
	                     .sop_class_uid = sop_class_uid,
	                     .transfer_syntax_uid = transfer_syntax_uid,
	                     .query = identifier,
	                     .query_len = identifier_len,
	                     .failed = failed};
	emit(a, &ev);
}

void pn_audit_deleted(pn_audit *a, pn_audit_deletion kind, const char *user, const char *patient_id,
                      const char *patient_name, const pn_audit_study *studies, size_t n_studies)
{
	static const pn_audit_msg_kind kinds[] = {[PN_AUDIT_DELETED_INSTANCES] = PN_AUDIT_MSG_DELETED_INSTANCES,
	                                          [PN_AUDIT_DELETED_STUDIES] = PN_AUDIT_MSG_DELETED_STUDIES,
	                                          [PN_AUDIT_DELETED_PATIENT] = PN_AUDIT_MSG_DELETED_PATIENT};
	pn_audit_event ev = {.kind = kinds[kind],
	                     .user = user,
	                     .studies = studies,
	                     .n_studies = n_studies,
	                     .patient_id = patient_id,
	                     .patient_name = patient_name};
	emit(a, &ev);
}

bool pn_audit_spool_name(const char *name)
{
	size_t n = strlen(name), s = strlen(PN_AUDIT_SPOOL_SUFFIX);
	return n > s && name[0] >= '0' && name[0] <= '9' && strcmp(name + n - s, PN_AUDIT_SPOOL_SUFFIX) == 0;
}
