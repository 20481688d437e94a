/* What storage.c and storage_recovery.c share: the two structs and the
 * helpers both use. Nothing else includes it. */
#ifndef PN_STORAGE_INTERNAL_H
#define PN_STORAGE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <xxhash.h>

#include "storage.h"
#include "storage_path.h"
#include "write_mode.h"
#include "writer.h"

#define TMP_DIR "tmp"
/* Committed instances whose final folder is not fsync'ed yet: their tmp
 * names stay (and keep them recoverable) until a batched folder fsync. */
#define PENDING_MAX 32
/* Temporary files made ahead of time (see pn_storage_prepare). */
#define SPARES_MAX 8
/* Files whose COMMIT outcome was lost, kept for settling once the index
 * answers again; more wait for start-up recovery. */
#define ABANDONED_MAX 16

struct pn_storage {
	char *root;
	int root_fd;
	bool read_only; /* pn_storage_open_reader: no tmp folder, no writes */
	int tmp_fd;
	int tmp_top_fd;         /* tmp/ itself (tmp_fd too, without a node id) */
	char tmp_rel[80];       /* "tmp" or "tmp/<node_id>", relative to root */
	struct timespec due_at; /* pn_storage_due: when it is next true */
	/* Files are opened with O_DIRECT where the file system allows it
	 * (probed at open); wm says which files keep it (write_mode.h). */
	bool direct;
	pn_write_mode wm;
	pn_writer *writer; /* made on the first file, in the worker process */
	unsigned long seq; /* temporary names */
	struct {
		char tmp_name[PN_REL_PATH_MAX];
		char dir[PN_REL_DIR_LEN + 1];
	} pending[PENDING_MAX];
	int n_pending;
	struct {
		char tmp_name[PN_REL_PATH_MAX];
		char rel[PN_REL_PATH_MAX];
		char note[PN_STORAGE_NOTE_MAX];
	} abandoned[ABANDONED_MAX];
	int n_abandoned;
	char known_dir[PN_REL_DIR_LEN + 1]; /* last series folder seen to exist */
	/* Creating a file costs up to half a millisecond here (after mass
	 * deletions), and making its name durable a folder fsync: the next
	 * instances' files are made while the SCU reads a response, their
	 * names made durable in batches. Oldest first; the durable ones are
	 * the oldest. */
	struct spare {
		int fd;
		uint32_t gen;
		bool durable;
		char name[PN_REL_PATH_MAX];
	} spares[SPARES_MAX];
	int n_spares;
	/* The files begun and not yet done, discarded or abandoned
	 * (pn_storage_lost_files looks at them). */
	pn_storage_file *open_files;
};

struct pn_storage_file {
	pn_storage *s;
	pn_storage_file *next, *prev; /* in s->open_files */
	int fd;
	bool named;         /* rel is set */
	bool name_durable;  /* tmp_name survives a crash (the tmp folder was fsync'ed) */
	uint32_t gen;       /* the generation in tmp_name and rel */
	bool direct;        /* written with O_DIRECT */
	int64_t written_ns; /* when its last byte came (pn_writer_clock_ns); 0: not yet */
	bool linked;
	int64_t size;  /* bytes accepted (buffered or queued) */
	bool queued;   /* the writer has jobs for fd not waited for */
	int io_rc;     /* their outcome, once waited for */
	bool io_known; /* io_rc is set */
	/* The bytes, in the writer's buffers, while no more than those. */
	pn_storage_part parts[PN_WRITER_SLOTS];
	int n_parts; /* -1: more than that */
	XXH3_state_t *xxh;
	char *buf; /* the writer's buffer being filled, or NULL */
	size_t buffered;
	char rel[PN_REL_PATH_MAX];
	char tmp_name[PN_REL_PATH_MAX];
	char tmp_path[PATH_MAX];
	char checksum[PN_CHECKSUM_LEN];
};

/* fsync of the folder at `path` (relative to dirfd). 0 or -errno. */
int pn_storage_fsync_dir_at(int dirfd, const char *path);
/* Creates ab/, ab/cd/ and ab/cd/<series>/ as needed, each made durable. */
int pn_storage_ensure_dirs(pn_storage *s, const char *rel);

#endif
