/* What db.c shares with the other files of db/: the connection struct and
 * the error / retry helpers. Not for use outside db/. */
#ifndef PN_DB_INTERNAL_H
#define PN_DB_INTERNAL_H

#include <stdbool.h>
#include <time.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "db.h"
#include "index.h"

struct pn_db {
	PGconn *conn;
	/* Bumped by every successful (re)connect: server-side prepared
	 * statements belong to one generation. */
	unsigned conn_gen;
	/* index.c: statements prepared in generation index_gen. */
	unsigned index_gen;
	uint32_t index_prepared; /* bit i: statement i prepared */
	/* index.c: the generation whose orphaned count deltas were folded. */
	unsigned orphans_gen;
	uint64_t rng; /* xorshift state for back-off jitter */
	/* The last series this connection committed an instance into, with its
	 * study and patient: the next instances of that series skip the three
	 * upserts. Rows are never re-parented (a feature that moves them must
	 * clear it); a deleted one fails the INSERT's foreign key check, and
	 * the store drops the cache and runs again. `pending` becomes
	 * `committed` when its transaction commits. */
	struct pn_db_hier {
		bool valid;
		char series_uid[65], study_uid[65];
		char patient_id[257], issuer[257]; /* LO: 64 characters of UTF-8 */
		char series_pk[24];
	} committed, pending;
	/* index.c: the transaction id (xid8, as text) of the open storing
	 * transaction once its instance statement has run, "" before: what
	 * to ask about if the answer to its COMMIT is lost. */
	char xact[24];
	/* index.c: the worker whose advisory lock each connection takes
	 * before its first statement (0: none), and the connection generation
	 * that holds it. */
	int worker_pid;
	unsigned worker_locked_gen;
	/* index.c: the node the worker belongs to ([node] node_id, "" for
	 * none), its number once looked up (0 before), and the connection
	 * generation that holds the node lock shared (node.h). */
	char node_id[64];
	int node_num;
	unsigned node_shared_gen;
	/* pn_index_set_files_check: asked once the node lock is held again */
	bool (*files_check)(void *arg);
	void *files_check_arg;
	/* A failure libpq made up itself (no SQLSTATE: the server went away,
	 * or libpq's own state went wrong) while PQstatus may still say OK:
	 * the next pn_db_ensure_connected() reconnects anyway. */
	bool suspect;
	char sqlstate[6];
	char errmsg[512];
	/* An asynchronous statement sent and not collected yet (the count
	 * fold), and the failure of the last one collected, kept for
	 * pn_db_async_outcome(). */
	bool async_sent;
	bool async_failed;
	char async_errmsg[256];
	/* index.c: committed stores whose deltas no fold has taken yet, and
	 * when the first of them committed. */
	unsigned unfolded;
	struct timespec unfolded_since;
	/* find.c: the query being streamed, NULL when none. */
	struct pn_find_state *find;
};

/* The advisory lock space of retrieves and deletes (hold.h), "PNR1"; the
 * second key is hashtext() of the key text. */
#define PN_HOLD_SPACE "1347310129"

/* Before a call of one of db/'s public functions: the asynchronous
 * statement collected, the last error cleared, a broken connection made
 * again. 0, -EINVAL (no db) or -ECONNREFUSED. */
int pn_db_call_begin(pn_db *db);

/* find.c: stops the query and frees the state with its statements. */
void pn_find_state_free(pn_db *db);

/* Internal results of one attempt, besides 0 and negative errno codes. */
enum {
	PN_DB_RETRY = 1,    /* serialization failure / deadlock: run again */
	PN_DB_CONN_LOST = 2 /* connection broken: reconnect, then run again */
};

void pn_db_clear_error(pn_db *db);
void pn_db_set_error(pn_db *db, const char *sqlstate, const char *msg);
/* Copies the error of res (or of the connection when res is NULL). */
void pn_db_set_error_result(pn_db *db, const PGresult *res);

/* Records the error of a failed res, clears res, and classifies it:
 * PN_DB_CONN_LOST (also any failure without a SQLSTATE), PN_DB_RETRY
 * (40001, 40P01) or -EIO. */
int pn_db_fail(pn_db *db, PGresult *res);

/* Maps an internal attempt result (PN_DB_RETRY, PN_DB_CONN_LOST or a
 * negative errno) to what the public functions return. */
int pn_db_public_error(int r);

/* A PostgreSQL array literal of text values, {"a","b"} with '"' and '\\'
 * escaped (malloc'ed, NULL when out of memory): a parameter value, never
 * SQL text. */
char *pn_db_array_literal(const char *const *list, size_t n);

/* Runs a parameterless command expecting PGRES_COMMAND_OK; on failure as
 * pn_db_fail(). */
int pn_db_command(pn_db *db, const char *sql);

/* Sends a parameterless statement (or several, one implicit transaction)
 * without waiting for its outcome; every public function of db/ first
 * collects it with pn_db_settle(). 0 or -EIO. */
int pn_db_send_async(pn_db *db, const char *sql);
void pn_db_settle(pn_db *db);
/* The outcome of the asynchronous statement (collecting it if need be):
 * 0, or -EIO with the error recorded; clears it. */
int pn_db_async_outcome(pn_db *db);

/* The connection is gone or not to be trusted: PQstatus says so, or a
 * failure without a SQLSTATE (libpq's own) was recorded since it was made.
 * pn_db_note_failure() records one from the error last set. */
bool pn_db_broken(const pn_db *db);
void pn_db_note_failure(pn_db *db);

/* Rolls back an open transaction, if any, keeping the recorded error. */
void pn_db_rollback(pn_db *db);
/* Drops the connection and makes a new one at once (the old one is in a
 * state no ordinary call can use); if that fails, the next
 * pn_db_ensure_connected() tries again. */
void pn_db_restart(pn_db *db);

/* The bounded retries of a transaction, after an attempt that ended in r
 * (PN_DB_RETRY, PN_DB_CONN_LOST or a negative errno): true when it is to
 * run again (a serialization failure or deadlock with retries left, after
 * the back-off; a lost connection the first time, made again); else false
 * with *r the public error. */
typedef struct {
	unsigned retries, max_retries, base_ms, cap_ms;
	bool reconnected;
} pn_db_retry;
bool pn_db_run_again(pn_db *db, pn_db_retry *st, int *r);

/* Appends a copy of s to a growing array of strings. 0 or -ENOMEM. */
int pn_db_strings_add(char ***v, size_t *n, size_t *cap, const char *s);

/* Sleeps between half and all of min(cap_ms, base_ms << attempt). */
void pn_db_backoff(pn_db *db, unsigned attempt, unsigned base_ms, unsigned cap_ms);

/* The columns the store fills from a record (pn_instance_rec), in the
 * order pn_index_*_params() give their values: every value as text (cast
 * by the column's type) but the attrs blob, binary. Shared by the store's
 * statements (index.c) and reindex's COPY (reindex.c), so that both write
 * the same row of the same record. */
#define PN_PATIENT_COLUMNS "patient_id, issuer, patient_name, patient_birth_date, patient_sex, attrs"
#define PN_STUDY_COLUMNS                                                                                               \
	"patient_fk, study_uid, study_date, study_time, accession_number, study_id, study_description,"                \
	" referring_physician_name, timezone_offset, attrs"
#define PN_SERIES_COLUMNS                                                                                              \
	"study_fk, series_uid, modality, series_number, series_description, series_date, series_time,"                 \
	" body_part_examined, protocol_name, attrs"
#define PN_INSTANCE_COLUMNS                                                                                            \
	"series_fk, sop_uid, sop_class_uid, instance_number, image_type, rows, columns,"                               \
	" number_of_frames, samples_per_pixel, photometric_interpretation, slice_thickness,"                           \
	" spacing_between_slices, acquisition_date, acquisition_time, content_date,"                                   \
	" content_time, transfer_syntax_uid, path, size, checksum, specific_character_set,"                            \
	" calling_ae, attrs"

enum { PN_MAX_PARAMS = 24 };

/* Statement parameters: values[i] NULL is SQL NULL; formats[i] 1 a blob of
 * lengths[i] bytes, else text. */
typedef struct {
	const char *values[PN_MAX_PARAMS];
	int lengths[PN_MAX_PARAMS];
	int formats[PN_MAX_PARAMS];
	int n;
} pn_params;

void pn_params_text(pn_params *p, const char *s);
void pn_params_blob(pn_params *p, pn_blob b);
/* A record's values for PN_*_COLUMNS; the parents' keys as text. */
void pn_index_patient_params(pn_params *p, const pn_instance_rec *rec);
void pn_index_study_params(pn_params *p, const pn_instance_rec *rec, const char *patient_pk);
void pn_index_series_params(pn_params *p, const pn_instance_rec *rec, const char *study_pk);
void pn_index_instance_params(pn_params *p, const pn_instance_rec *rec, const char *series_pk, const char *size_text);

#endif
