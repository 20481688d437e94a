/* Writing instances into the index: one transaction per instance, made of
 * prepared statements only (see README.md for the design). */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db_internal.h"
#include "index.h"
#include "node.h"

enum {
	STORE_RETRIES = 5, /* re-runs after serialization failures / deadlocks */
	RETRY_BASE_MS = 10,
	RETRY_CAP_MS = 500,
};

#define MAX_PARAMS PN_MAX_PARAMS

/* Parameter types of pg_type.h, which only the server headers provide. */
#define BYTEAOID ((Oid)17)
#define TEXTOID ((Oid)25)

/* Every value travels as text (cast in the SQL) but the attrs blobs, which
 * travel as binary bytea: the "types" strings say which is which. */
#define INSTANCE_COLUMNS PN_INSTANCE_COLUMNS
#define INSTANCE_VALUES                                                                                                \
	"$1::bigint, $2, $3, $4::integer, $5, $6::integer, $7::integer, $8::integer, $9::integer,"                     \
	" $10, $11::float8, $12::float8, $13::date, $14::time, $15::date, $16::time, $17, $18,"                        \
	" $19::bigint, $20, $21, $22, $23"
#define INSTANCE_TYPES "ttttttttttttttttttttttb" /* 22 text, then attrs */

/* The first key of the workers' advisory locks before node ids ("PNW1"):
 * what recovery claims the files of tmp/ itself by (storage.h); a node's
 * workers use PN_NODE_WORKER_SPACE + its number. The second is the
 * worker's process id. */
#define LEGACY_WORKER_SPACE 1347311409

#define STR_(x) #x
#define STR(x) STR_(x)

enum stmt_id {
	ST_PATIENT_INSERT,
	ST_PATIENT_SELECT,
	ST_STUDY_INSERT,
	ST_STUDY_SELECT,
	ST_STUDY_TIMEZONE,
	ST_SERIES_INSERT,
	ST_SERIES_SELECT,
	ST_INSTANCE_INSERT,
	ST_INSTANCE_LOCK,
	ST_INSTANCE_UPDATE,
	ST_PATH_REFERENCED,
	ST_XACT_STATUS,
	ST_WORKER_LOCK,
	ST_WORKER_UNLOCK,
	ST_NODE_NUM,
	ST_NODE_SHARE,
	ST_GARBAGE_INSERT,
	ST_GARBAGE_DELETE,
	ST_COUNT,
};

static const struct {
	const char *name;
	const char *types; /* one letter a parameter: t text, b bytea */
	const char *sql;
} stmts[ST_COUNT] = {
    [ST_PATIENT_INSERT] = {"pn_index_patient_insert", "tttttb",
                           "INSERT INTO patient (" PN_PATIENT_COLUMNS ")"
                           " VALUES ($1, $2, $3, $4::date, $5, $6)"
                           " ON CONFLICT (patient_id, issuer) DO NOTHING RETURNING pk"},
    [ST_PATIENT_SELECT] = {"pn_index_patient_select", "tt",
                           "SELECT pk FROM patient WHERE patient_id = $1 AND issuer = $2"},
    [ST_STUDY_INSERT] = {"pn_index_study_insert", "tttttttttb",
                         "INSERT INTO study (" PN_STUDY_COLUMNS ")"
                         " VALUES ($1::bigint, $2, $3::date, $4::time, $5, $6, $7, $8, $9::smallint, $10)"
                         " ON CONFLICT (study_uid) DO NOTHING RETURNING pk"},
    [ST_STUDY_SELECT] = {"pn_index_study_select", "t", "SELECT pk, patient_fk FROM study WHERE study_uid = $1"},
    /* the first instance that carries a Timezone Offset From UTC gives the
     * study's; a row that has one is only read */
    [ST_STUDY_TIMEZONE] = {"pn_index_study_timezone", "tt",
                           "UPDATE study SET timezone_offset = $2::smallint"
                           " WHERE pk = $1::bigint AND timezone_offset IS NULL"},
    [ST_SERIES_INSERT] = {"pn_index_series_insert", "tttttttttb",
                          "INSERT INTO series (" PN_SERIES_COLUMNS ")"
                          " VALUES ($1::bigint, $2, $3, $4::integer, $5, $6::date, $7::time,"
                          " $8, $9, $10)"
                          " ON CONFLICT (series_uid) DO NOTHING RETURNING pk"},
    [ST_SERIES_SELECT] = {"pn_index_series_select", "t", "SELECT pk, study_fk FROM series WHERE series_uid = $1"},
    [ST_INSTANCE_INSERT] = {"pn_index_instance_insert", INSTANCE_TYPES,
                            "INSERT INTO instance (" INSTANCE_COLUMNS ") VALUES (" INSTANCE_VALUES ")"
                            " ON CONFLICT (sop_uid) DO NOTHING RETURNING pk, pg_current_xact_id()::text"},
    [ST_INSTANCE_LOCK] = {"pn_index_instance_lock", "t", "SELECT pk, path FROM instance WHERE sop_uid = $1 FOR UPDATE"},
    [ST_INSTANCE_UPDATE] = {"pn_index_instance_update", INSTANCE_TYPES "t",
                            "UPDATE instance SET (" INSTANCE_COLUMNS ", received_at) = (" INSTANCE_VALUES
                            ", now()) WHERE pk = $24::bigint RETURNING pg_current_xact_id()::text"},
    [ST_PATH_REFERENCED] = {"pn_index_path_referenced", "t", "SELECT EXISTS (SELECT 1 FROM instance WHERE path = $1)"},
    [ST_XACT_STATUS] = {"pn_index_xact_status", "t", "SELECT pg_xact_status($1::xid8)"},
    [ST_WORKER_LOCK] = {"pn_index_worker_lock", "tt", "SELECT pg_try_advisory_lock($1::integer, $2::integer)"},
    [ST_WORKER_UNLOCK] = {"pn_index_worker_unlock", "tt", "SELECT pg_advisory_unlock($1::integer, $2::integer)"},
    /* the node's number, registered if need be (pacsnodectl before the
     * node's first start): no identity value is used up when it exists */
    [ST_NODE_NUM] = {"pn_index_node_num", "t",
                     "WITH i AS (INSERT INTO node (id) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM node WHERE id = $1)"
                     " ON CONFLICT (id) DO NOTHING RETURNING num)"
                     " SELECT num FROM i UNION ALL SELECT num FROM node WHERE id = $1"},
    [ST_NODE_SHARE] = {"pn_index_node_share", "t",
                       "SELECT pg_try_advisory_lock_shared(" STR(PN_NODE_LOCK_SPACE) ", $1::integer)"},
    [ST_GARBAGE_INSERT] = {"pn_index_garbage_insert", "t",
                           "INSERT INTO storage_garbage (path) VALUES ($1) ON CONFLICT DO NOTHING"},
    [ST_GARBAGE_DELETE] = {"pn_index_garbage_delete", "t", "DELETE FROM storage_garbage WHERE path = $1"},
};

typedef pn_params params;

void pn_params_text(params *p, const char *s)
{
	assert(p->n < MAX_PARAMS);
	p->values[p->n] = s; /* NULL: SQL NULL */
	p->lengths[p->n] = 0;
	p->formats[p->n] = 0;
	p->n++;
}

void pn_params_blob(params *p, pn_blob b)
{
	assert(p->n < MAX_PARAMS);
	p->values[p->n] = b.data ? (const char *)b.data : NULL;
	p->lengths[p->n] = (int)b.len; /* checked against INT_MAX on entry */
	p->formats[p->n] = 1;
	p->n++;
}

static PGresult *run(pn_db *db, enum stmt_id id, const params *p)
{
	assert((size_t)p->n == strlen(stmts[id].types));
	return PQexecPrepared(db->conn, stmts[id].name, p->n, p->values, p->lengths, p->formats, 0);
}

/* One call of ST_WORKER_LOCK or ST_WORKER_UNLOCK for worker `pid` of node
 * `node_num` (0: the key before node ids): 0 with its boolean, or as
 * pn_db_fail(). */
static int worker_lock_call(pn_db *db, enum stmt_id id, int node_num, int pid, bool *ret)
{
	char space[16], text[16];
	params p = {0};
	snprintf(space, sizeof space, "%d", node_num > 0 ? PN_NODE_WORKER_SPACE + node_num : LEGACY_WORKER_SPACE);
	snprintf(text, sizeof text, "%d", pid);
	pn_params_text(&p, space);
	pn_params_text(&p, text);
	PGresult *res = run(db, id, &p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_fail(db, res);
	*ret = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	return 0;
}

/* The node's number, looked up once a process. 0, or as pn_db_fail(), or
 * -EIO. */
static int node_number(pn_db *db)
{
	if (db->node_num > 0 || !db->node_id[0])
		return 0;
	params p = {0};
	pn_params_text(&p, db->node_id);
	PGresult *res = run(db, ST_NODE_NUM, &p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_fail(db, res);
	long n = PQntuples(res) >= 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	if (n <= 0 || n > PN_NODE_NUM_MAX) {
		/* no row: a first registration raced ours; the next call sees it */
		pn_db_set_error(db, "", "could not look up the node id in table node");
		return -EIO;
	}
	db->node_num = (int)n;
	return 0;
}

/* The node lock held shared on this connection: without it nothing is
 * stored, since a session of another node holding it exclusively is
 * settling this node's temporary files (node.h). 0, or as pn_db_fail(),
 * or -EIO. */
static int node_share(pn_db *db)
{
	if (!db->node_id[0] || db->node_shared_gen == db->conn_gen)
		return 0;
	int r = node_number(db);
	if (r != 0)
		return r;
	char num[16];
	params p = {0};
	snprintf(num, sizeof num, "%d", db->node_num);
	pn_params_text(&p, num);
	PGresult *res = run(db, ST_NODE_SHARE, &p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		return pn_db_fail(db, res);
	bool held = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	if (!held) {
		pn_db_set_error(
		    db, "", "the node lock is held by another session (a node settling this node's temporary files)");
		return -EIO;
	}
	db->node_shared_gen = db->conn_gen;
	/* Held again: no settler can start now, so what the check sees stays
	 * true. Failing, only this statement fails: the file in progress is
	 * discarded and the next one is a new file. */
	if (db->files_check && !db->files_check(db->files_check_arg)) {
		pn_db_set_error(db, "",
		                "a temporary file in progress was removed by another node, which took this node for "
		                "gone while its database sessions were lost");
		return -EIO;
	}
	return 0;
}

/* Prepares, once per connection generation, whatever is not prepared yet. */
static int prepare_statements(pn_db *db)
{
	Oid types[MAX_PARAMS];

	if (db->index_gen != db->conn_gen) {
		db->index_gen = db->conn_gen;
		db->index_prepared = 0;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		size_t n = strlen(stmts[i].types);
		PGresult *res;

		if (db->index_prepared & (UINT32_C(1) << i))
			continue;
		assert(stmts[i].name && n <= MAX_PARAMS);
		for (size_t k = 0; k < n; k++)
			types[k] = stmts[i].types[k] == 'b' ? BYTEAOID : TEXTOID;
		res = PQprepare(db->conn, stmts[i].name, stmts[i].sql, (int)n, types);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			return pn_db_fail(db, res);
		PQclear(res);
		db->index_prepared |= UINT32_C(1) << i;
	}
	if (db->worker_pid > 0 && db->worker_locked_gen != db->conn_gen) {
		int r = node_share(db);
		if (r != 0)
			return r;
		/* Before any statement that could store: whoever takes this
		 * lock later knows this session is over. Held by another
		 * session (only a settler that took our reused pid for a dead
		 * one's, for a moment): tried again on the next call. */
		bool held = false;
		r = worker_lock_call(db, ST_WORKER_LOCK, db->node_num, db->worker_pid, &held);
		if (r != 0)
			return r;
		if (held)
			db->worker_locked_gen = db->conn_gen;
	}
	return 0;
}

/* Keeps the storing transaction's id from column col of res's first row. */
static void keep_xact(pn_db *db, const PGresult *res, int col)
{
	const char *x = PQntuples(res) == 1 && PQnfields(res) > col ? PQgetvalue(res, 0, col) : "";
	snprintf(db->xact, sizeof db->xact, "%s", strlen(x) < sizeof db->xact ? x : "");
}

/* Copies a bigint from a text-format result. */
static void copy_pk(char *dst, size_t dstlen, const PGresult *res, int col)
{
	snprintf(dst, dstlen, "%s", PQgetvalue(res, 0, col));
}

/* INSERT ... ON CONFLICT DO NOTHING RETURNING pk, then, when the row was
 * there already, SELECT pk[, parent_fk]. A fresh statement snapshot (read
 * committed) sees a row committed by a concurrent insert we waited for.
 * *ret_parent is "" when we inserted the row. */
static int upsert(pn_db *db, enum stmt_id insert, const params *ins, enum stmt_id select, const params *sel,
                  char ret_pk[24], char ret_parent[24])
{
	PGresult *res = run(db, insert, ins);

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_fail(db, res);
	if (PQntuples(res) == 1) {
		copy_pk(ret_pk, 24, res, 0);
		if (ret_parent)
			ret_parent[0] = '\0';
		PQclear(res);
		return 0;
	}
	PQclear(res);

	res = run(db, select, sel);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_fail(db, res);
	if (PQntuples(res) != 1) {
		/* Conflicting row gone again (deleted meanwhile): start over. */
		PQclear(res);
		pn_db_set_error(db, "", "row vanished between insert and select");
		return PN_DB_RETRY;
	}
	copy_pk(ret_pk, 24, res, 0);
	if (ret_parent)
		copy_pk(ret_parent, 24, res, 1);
	PQclear(res);
	return 0;
}

void pn_index_patient_params(params *p, const pn_instance_rec *rec)
{
	pn_params_text(p, rec->patient_id);
	pn_params_text(p, rec->issuer);
	pn_params_text(p, rec->patient_name);
	pn_params_text(p, rec->patient_birth_date);
	pn_params_text(p, rec->patient_sex);
	pn_params_blob(p, rec->patient_attrs);
}

void pn_index_study_params(params *p, const pn_instance_rec *rec, const char *patient_pk)
{
	pn_params_text(p, patient_pk);
	pn_params_text(p, rec->study_uid);
	pn_params_text(p, rec->study_date);
	pn_params_text(p, rec->study_time);
	pn_params_text(p, rec->accession_number);
	pn_params_text(p, rec->study_id);
	pn_params_text(p, rec->study_description);
	pn_params_text(p, rec->referring_physician_name);
	pn_params_text(p, rec->timezone_offset);
	pn_params_blob(p, rec->study_attrs);
}

void pn_index_series_params(params *p, const pn_instance_rec *rec, const char *study_pk)
{
	pn_params_text(p, study_pk);
	pn_params_text(p, rec->series_uid);
	pn_params_text(p, rec->modality);
	pn_params_text(p, rec->series_number);
	pn_params_text(p, rec->series_description);
	pn_params_text(p, rec->series_date);
	pn_params_text(p, rec->series_time);
	pn_params_text(p, rec->body_part_examined);
	pn_params_text(p, rec->protocol_name);
	pn_params_blob(p, rec->series_attrs);
}

void pn_index_instance_params(params *p, const pn_instance_rec *rec, const char *series_pk, const char *size_text)
{
	pn_params_text(p, series_pk);
	pn_params_text(p, rec->sop_uid);
	pn_params_text(p, rec->sop_class_uid);
	pn_params_text(p, rec->instance_number);
	pn_params_text(p, rec->image_type);
	pn_params_text(p, rec->rows);
	pn_params_text(p, rec->columns);
	pn_params_text(p, rec->number_of_frames);
	pn_params_text(p, rec->samples_per_pixel);
	pn_params_text(p, rec->photometric_interpretation);
	pn_params_text(p, rec->slice_thickness);
	pn_params_text(p, rec->spacing_between_slices);
	pn_params_text(p, rec->acquisition_date);
	pn_params_text(p, rec->acquisition_time);
	pn_params_text(p, rec->content_date);
	pn_params_text(p, rec->content_time);
	pn_params_text(p, rec->transfer_syntax_uid);
	pn_params_text(p, rec->path);
	pn_params_text(p, size_text);
	pn_params_text(p, rec->checksum);
	pn_params_text(p, rec->specific_character_set);
	pn_params_text(p, rec->calling_ae);
	pn_params_blob(p, rec->instance_attrs);
}

/* The SOP instance exists already: apply the policy inside the open
 * transaction. Returns with the transaction committed (REPLACED) or still
 * open (anything else, for the caller to roll back). */
static int existing_instance(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, const char *series_pk,
                             const char *size_text, bool commit, pn_index_outcome *ret_outcome, char **ret_old_path)
{
	params p = {0};
	char pk[24];
	char *old_path;
	PGresult *res;
	int r;

	pn_params_text(&p, rec->sop_uid);
	res = run(db, ST_INSTANCE_LOCK, &p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		return pn_db_fail(db, res);
	if (PQntuples(res) != 1) {
		PQclear(res);
		pn_db_set_error(db, "", "instance vanished between insert and select");
		return PN_DB_RETRY;
	}
	/* Our own file already: an earlier attempt committed although its
	 * connection broke before the answer came. */
	if (strcmp(PQgetvalue(res, 0, 1), rec->path) == 0) {
		PQclear(res);
		*ret_outcome = PN_INDEX_STORED;
		return 0;
	}
	if (policy != PN_DUP_REPLACE) {
		PQclear(res);
		*ret_outcome = policy == PN_DUP_IGNORE ? PN_INDEX_DUP_IGNORED : PN_INDEX_DUP_REJECTED;
		return 0;
	}
	copy_pk(pk, sizeof pk, res, 0);
	old_path = strdup(PQgetvalue(res, 0, 1));
	PQclear(res);
	if (!old_path) {
		pn_db_set_error(db, "", "out of memory");
		return -ENOMEM;
	}

	p.n = 0;
	pn_index_instance_params(&p, rec, series_pk, size_text);
	pn_params_text(&p, pk);
	res = run(db, ST_INSTANCE_UPDATE, &p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pn_db_fail(db, res);
		goto fail;
	}
	keep_xact(db, res, 0);
	PQclear(res);
	/* The old file goes to the garbage list in the same transaction, so a
	 * crash before it is unlinked cannot leave a file without a row. */
	p.n = 0;
	pn_params_text(&p, old_path);
	res = run(db, ST_GARBAGE_INSERT, &p);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		r = pn_db_fail(db, res);
		goto fail;
	}
	PQclear(res);
	if (commit) {
		r = pn_db_command(db, "COMMIT");
		if (r != 0)
			goto fail;
	}
	*ret_outcome = PN_INDEX_REPLACED;
	*ret_old_path = old_path;
	return 0;

fail:
	free(old_path);
	return r;
}

static bool hier_matches(const struct pn_db_hier *h, const pn_instance_rec *rec)
{
	return h->valid && strcmp(h->series_uid, rec->series_uid) == 0 && strcmp(h->study_uid, rec->study_uid) == 0 &&
	       strcmp(h->patient_id, rec->patient_id) == 0 && strcmp(h->issuer, rec->issuer) == 0;
}

static void hier_remember(pn_db *db, const pn_instance_rec *rec, const char *series_pk)
{
	struct pn_db_hier *h = &db->pending;
	h->valid = strlen(rec->series_uid) < sizeof h->series_uid && strlen(rec->study_uid) < sizeof h->study_uid &&
	           strlen(rec->patient_id) < sizeof h->patient_id && strlen(rec->issuer) < sizeof h->issuer;
	if (!h->valid)
		return;
	snprintf(h->series_uid, sizeof h->series_uid, "%s", rec->series_uid);
	snprintf(h->study_uid, sizeof h->study_uid, "%s", rec->study_uid);
	snprintf(h->patient_id, sizeof h->patient_id, "%s", rec->patient_id);
	snprintf(h->issuer, sizeof h->issuer, "%s", rec->issuer);
	snprintf(h->series_pk, sizeof h->series_pk, "%s", series_pk);
}

static void hier_committed(pn_db *db)
{
	if (db->pending.valid)
		db->committed = db->pending;
	db->pending.valid = false;
}

/* One attempt. Returns 0 with the outcome, PN_DB_RETRY, PN_DB_CONN_LOST or
 * a negative errno; on anything but 0 nothing is committed. */
static int store_once(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, bool commit,
                      pn_index_outcome *ret_outcome, char **ret_old_path)
{
	char patient_pk[24], study_pk[24], series_pk[24], parent[24], size_text[24];
	pn_index_outcome outcome = PN_INDEX_STORED;
	char *old_path = NULL;
	params ins = {0}, sel = {0};
	PGresult *res;
	int r;

	/* Read committed whatever the server's default: the SELECT after an
	 * INSERT ... DO NOTHING must see the row a concurrent transaction
	 * committed while we waited for it. */
	db->xact[0] = '\0';
	r = pn_db_command(db, "BEGIN ISOLATION LEVEL READ COMMITTED");
	if (r != 0)
		goto fail;
	db->pending.valid = false;

	if (hier_matches(&db->committed, rec)) {
		/* same series, study and patient as last time: checked then */
		snprintf(series_pk, sizeof series_pk, "%s", db->committed.series_pk);
		goto instance;
	}

	pn_index_patient_params(&ins, rec);
	pn_params_text(&sel, rec->patient_id);
	pn_params_text(&sel, rec->issuer);
	r = upsert(db, ST_PATIENT_INSERT, &ins, ST_PATIENT_SELECT, &sel, patient_pk, NULL);
	if (r != 0)
		goto fail;

	ins.n = sel.n = 0;
	pn_index_study_params(&ins, rec, patient_pk);
	pn_params_text(&sel, rec->study_uid);
	r = upsert(db, ST_STUDY_INSERT, &ins, ST_STUDY_SELECT, &sel, study_pk, parent);
	if (r != 0)
		goto fail;
	if (parent[0] && strcmp(parent, patient_pk) != 0) {
		outcome = PN_INDEX_CONFLICT_STUDY;
		goto rollback;
	}
	if (parent[0] && rec->timezone_offset) {
		/* the study was there: this may be its first instance with an
		 * offset (an instance of the series last stored does not get
		 * here; docs/find.md) */
		sel.n = 0;
		pn_params_text(&sel, study_pk);
		pn_params_text(&sel, rec->timezone_offset);
		res = run(db, ST_STUDY_TIMEZONE, &sel);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			r = pn_db_fail(db, res);
			goto fail;
		}
		PQclear(res);
	}

	ins.n = sel.n = 0;
	pn_index_series_params(&ins, rec, study_pk);
	pn_params_text(&sel, rec->series_uid);
	r = upsert(db, ST_SERIES_INSERT, &ins, ST_SERIES_SELECT, &sel, series_pk, parent);
	if (r != 0)
		goto fail;
	if (parent[0] && strcmp(parent, study_pk) != 0) {
		outcome = PN_INDEX_CONFLICT_SERIES;
		goto rollback;
	}

instance:
	hier_remember(db, rec, series_pk);

	snprintf(size_text, sizeof size_text, "%" PRId64, rec->size);
	ins.n = 0;
	pn_index_instance_params(&ins, rec, series_pk, size_text);
	res = run(db, ST_INSTANCE_INSERT, &ins);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		r = pn_db_fail(db, res);
		goto fail;
	}
	if (PQntuples(res) == 0) {
		PQclear(res);
		r = existing_instance(db, rec, policy, series_pk, size_text, commit, &outcome, &old_path);
		if (r != 0)
			goto fail;
		if (outcome == PN_INDEX_REPLACED)
			goto done; /* committed, or left open for the caller */
		if (outcome == PN_INDEX_STORED && !commit)
			goto done; /* our own row already: nothing to commit, but harmless */
		goto rollback;
	}
	keep_xact(db, res, 1);
	PQclear(res);

	if (commit) {
		r = pn_db_command(db, "COMMIT");
		if (r != 0)
			goto fail;
		hier_committed(db);
	}
	goto done;

rollback:
	/* Nothing of this transaction may stay, the patient, study or series
	 * it may have created included. A broken connection rolls back too. */
	pn_db_rollback(db);
done:
	*ret_outcome = outcome;
	*ret_old_path = old_path;
	return 0;

fail:
	pn_db_rollback(db);
	return r;
}

static bool rec_valid(const pn_instance_rec *rec)
{
	const pn_blob *blobs[] = {&rec->patient_attrs, &rec->study_attrs, &rec->series_attrs, &rec->instance_attrs};

	if (!rec->patient_id || !rec->issuer || !rec->study_uid || !rec->series_uid || !rec->sop_uid ||
	    !rec->sop_class_uid || !rec->transfer_syntax_uid || !rec->path || !rec->checksum || !rec->calling_ae ||
	    rec->size < 0)
		return false;
	for (size_t i = 0; i < sizeof blobs / sizeof blobs[0]; i++)
		if (blobs[i]->len > INT_MAX || (blobs[i]->len > 0 && !blobs[i]->data))
			return false;
	return true;
}

static int store_with_retries(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, bool commit,
                              pn_index_outcome *ret_outcome, char **ret_old_path)
{
	pn_db_retry again = {.max_retries = STORE_RETRIES, .base_ms = RETRY_BASE_MS, .cap_ms = RETRY_CAP_MS};

	if (!db || !rec || !ret_outcome || !rec_valid(rec) ||
	    (policy != PN_DUP_IGNORE && policy != PN_DUP_REPLACE && policy != PN_DUP_REJECT))
		return -EINVAL;
	pn_db_settle(db);
	pn_db_clear_error(db);

	/* At most 1 + STORE_RETRIES + 1 attempts. */
	for (;;) {
		pn_index_outcome outcome;
		char *old_path = NULL;
		int r;

		r = prepare_statements(db);
		if (r == 0)
			r = store_once(db, rec, policy, commit, &outcome, &old_path);
		if (r == 0) {
			*ret_outcome = outcome;
			if (ret_old_path)
				*ret_old_path = old_path;
			else
				free(old_path);
			return 0;
		}
		if (r == -EIO && strcmp(db->sqlstate, "23503") == 0) {
			/* A parent this attempt found, or the series cache named,
			 * was deleted meanwhile (pacsnodectl delete): the next
			 * attempt looks them up again, making them anew. */
			db->committed.valid = false;
			r = PN_DB_RETRY;
		}
		if (!pn_db_run_again(db, &again, &r))
			return r;
	}
}

int pn_index_store(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome *ret_outcome,
                   char **ret_old_path)
{
	return store_with_retries(db, rec, policy, true, ret_outcome, ret_old_path);
}

int pn_index_begin(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome *ret_outcome,
                   char **ret_old_path)
{
	return store_with_retries(db, rec, policy, false, ret_outcome, ret_old_path);
}

/* Reads results up to the pipeline's sync point and leaves pipeline mode. */
static void pipeline_drain(pn_db *db)
{
	for (int guard = 0; guard < 16; guard++) {
		PGresult *res = PQgetResult(db->conn);
		if (!res) {
			if (PQstatus(db->conn) == CONNECTION_BAD)
				break;
			continue;
		}
		ExecStatusType st = PQresultStatus(res);
		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
			break;
	}
	if (PQexitPipelineMode(db->conn) != 1) {
		/* Results that never came: the connection died under the
		 * pipeline, and libpq, still in pipeline mode, refuses every
		 * ordinary call. Start over on a new connection. */
		pn_db_restart(db);
	}
}

int pn_index_begin_send(pn_db *db, const pn_instance_rec *rec)
{
	pn_db_settle(db);
	/* Only on a connection that holds the worker's lock (prepare_statements
	 * takes it): the ordinary path tries again. */
	if (!db || !rec || !rec_valid(rec) || !hier_matches(&db->committed, rec) || db->index_gen != db->conn_gen ||
	    (db->worker_pid > 0 && db->worker_locked_gen != db->conn_gen) ||
	    !(db->index_prepared & (UINT32_C(1) << ST_INSTANCE_INSERT)) || pn_db_broken(db) ||
	    PQtransactionStatus(db->conn) != PQTRANS_IDLE)
		return 0;
	pn_db_clear_error(db);
	params p = {0};
	char size_text[24];
	snprintf(size_text, sizeof size_text, "%" PRId64, rec->size);
	pn_index_instance_params(&p, rec, db->committed.series_pk, size_text);
	if (PQenterPipelineMode(db->conn) != 1)
		return 0;
	db->xact[0] = '\0';
	/* libpq copies the parameters into its buffer: the stack is fine */
	if (PQsendQueryParams(db->conn, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
	    PQsendQueryPrepared(db->conn, stmts[ST_INSTANCE_INSERT].name, p.n, p.values, p.lengths, p.formats, 0) !=
	        1 ||
	    PQpipelineSync(db->conn) != 1) {
		pn_db_set_error_result(db, NULL);
		pipeline_drain(db);
		pn_db_rollback(db);
		return 0; /* the caller takes the ordinary path */
	}
	return 1;
}

int pn_index_begin_finish(pn_db *db, const pn_instance_rec *rec, pn_dup_policy policy, pn_index_outcome *ret_outcome,
                          char **ret_old_path)
{
	PGresult *res;
	bool ok = true, inserted = false;

	/* BEGIN, then the INSERT, each followed by a NULL, then the sync */
	for (int step = 0; step < 2 && ok; step++) {
		res = PQgetResult(db->conn);
		ExecStatusType want = step == 0 ? PGRES_COMMAND_OK : PGRES_TUPLES_OK;
		if (!res || PQresultStatus(res) != want) {
			pn_db_set_error_result(db, res);
			ok = false;
		} else if (step == 1) {
			inserted = PQntuples(res) == 1;
			if (inserted)
				keep_xact(db, res, 1);
		}
		PQclear(res);
		if (ok && (res = PQgetResult(db->conn)) != NULL) { /* the NULL after each result */
			PQclear(res);
			ok = false;
		}
	}
	pipeline_drain(db);
	if (!ok) {
		pn_db_rollback(db);
		/* the ordinary path, with its retries and reconnect */
		return pn_index_begin(db, rec, policy, ret_outcome, ret_old_path);
	}
	if (inserted) {
		hier_remember(db, rec, db->committed.series_pk);
		*ret_outcome = PN_INDEX_STORED;
		if (ret_old_path)
			*ret_old_path = NULL;
		return 0;
	}
	/* A duplicate: the policy decides, inside the same open transaction. */
	char size_text[24];
	char *old_path = NULL;
	pn_index_outcome outcome = PN_INDEX_STORED;
	snprintf(size_text, sizeof size_text, "%" PRId64, rec->size);
	int r = existing_instance(db, rec, policy, db->committed.series_pk, size_text, false, &outcome, &old_path);
	if (r != 0) {
		pn_db_rollback(db);
		return pn_index_begin(db, rec, policy, ret_outcome, ret_old_path);
	}
	if (outcome != PN_INDEX_STORED && outcome != PN_INDEX_REPLACED)
		pn_db_rollback(db);
	*ret_outcome = outcome;
	if (ret_old_path)
		*ret_old_path = old_path;
	else
		free(old_path);
	return 0;
}

int pn_index_commit_send(pn_db *db)
{
	if (PQsendQuery(db->conn, "COMMIT") != 1) {
		pn_db_set_error_result(db, NULL);
		pn_db_rollback(db);
		return -ECONNRESET;
	}
	return 0;
}

int pn_index_commit_wait(pn_db *db)
{
	PGresult *res;
	int r = 0;
	bool got = false;

	while ((res = PQgetResult(db->conn)) != NULL) {
		if (!got && PQresultStatus(res) != PGRES_COMMAND_OK) {
			/* Only the server's own answer says "not committed"; a
			 * failure libpq made up (the connection went, even with
			 * PQstatus still OK) leaves the outcome unknown. */
			pn_db_set_error_result(db, res);
			pn_db_note_failure(db);
			r = pn_db_broken(db) ? -ECONNRESET : -EIO;
		}
		got = true;
		PQclear(res);
	}
	if (!got) {
		pn_db_set_error_result(db, NULL);
		r = -ECONNRESET;
	}
	if (r == 0 && PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
		/* COMMIT of a failed transaction answers ROLLBACK with OK */
		pn_db_set_error(db, "", "transaction was not committed");
		pn_db_rollback(db);
		r = -EIO;
	}
	if (r == 0)
		hier_committed(db);
	return r;
}

void pn_index_rollback(pn_db *db)
{
	pn_db_rollback(db);
}

/* One implicit transaction: SET LOCAL holds until its end. The fold's
 * commit need not wait for the WAL flush: losing it loses the deletion of
 * the shard rows with it (migration 006). */
#define FOLD_SQL "SET LOCAL synchronous_commit = off; SELECT pn_fold_counts(pg_backend_pid())"
#define FOLD_ORPHANS_SQL "SELECT pn_fold_orphans()"

int pn_index_fold_orphans(pn_db *db, int *ret_shards)
{
	if (!db)
		return -EINVAL;
	pn_db_settle(db);
	pn_db_clear_error(db);
	PGresult *res = PQexec(db->conn, FOLD_ORPHANS_SQL);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		return pn_db_public_error(pn_db_fail(db, res));
	}
	if (ret_shards)
		*ret_shards = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	db->orphans_gen = db->conn_gen;
	return 0;
}

int pn_index_fold_send(pn_db *db)
{
	if (!db)
		return -EINVAL;
	pn_db_settle(db);
	/* A new connection: a backend that is gone may have left deltas. */
	if (db->orphans_gen != db->conn_gen) {
		int r = pn_index_fold_orphans(db, NULL);
		if (r < 0)
			return r;
	}
	pn_db_clear_error(db);
	if (PQstatus(db->conn) != CONNECTION_OK || PQtransactionStatus(db->conn) != PQTRANS_IDLE) {
		pn_db_set_error(db, "", "connection not idle");
		return -EIO;
	}
	int r = pn_db_send_async(db, FOLD_SQL);
	if (r == 0)
		db->unfolded = 0;
	return r;
}

int pn_index_fold_note(pn_db *db)
{
	if (!db)
		return -EINVAL;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (db->unfolded++ == 0)
		db->unfolded_since = now;
	long lag_ms = (long)(now.tv_sec - db->unfolded_since.tv_sec) * 1000 +
	              (now.tv_nsec - db->unfolded_since.tv_nsec) / 1000000;
	if (db->unfolded < PN_FOLD_EVERY && lag_ms < PN_FOLD_LAG_MS)
		return 0;
	return pn_index_fold_send(db);
}

bool pn_index_fold_pending(const pn_db *db)
{
	return db && db->unfolded > 0;
}

int pn_index_fold_wait(pn_db *db)
{
	if (!db)
		return -EINVAL;
	return pn_db_async_outcome(db);
}

int pn_index_garbage_done(pn_db *db, const char *path)
{
	pn_db_settle(db);
	params p = {0};
	int r;

	pn_db_clear_error(db);
	pn_params_text(&p, path);
	r = prepare_statements(db);
	if (r != 0)
		return r < 0 ? r : -EIO;
	PGresult *res = run(db, ST_GARBAGE_DELETE, &p);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		r = pn_db_fail(db, res);
		return r < 0 ? r : -EIO;
	}
	PQclear(res);
	return 0;
}

/* Before a one-statement call: the connection re-made if it broke, the
 * statements prepared. 0 or a public error code. */
static int ready(pn_db *db)
{
	pn_db_settle(db);
	pn_db_clear_error(db);
	if (pn_db_broken(db) && pn_db_ensure_connected(db) < 0)
		return -ECONNREFUSED;
	return pn_db_public_error(prepare_statements(db));
}

void pn_index_set_worker(pn_db *db, const char *node_id, int pid)
{
	if (db) {
		db->worker_pid = pid;
		db->worker_locked_gen = db->conn_gen - 1; /* not held yet */
		snprintf(db->node_id, sizeof db->node_id, "%s", node_id ? node_id : "");
		db->node_num = 0;
		db->node_shared_gen = db->conn_gen - 1;
	}
}

void pn_index_set_files_check(pn_db *db, bool (*fn)(void *arg), void *arg)
{
	if (db) {
		db->files_check = fn;
		db->files_check_arg = arg;
	}
}

int pn_index_worker_take(pn_db *db, bool legacy, int pid, int wait_ms, bool *ret_taken)
{
	if (!db || pid <= 0 || !ret_taken)
		return -EINVAL;
	int r = ready(db);
	if (r != 0)
		return r;
	if (!legacy && (r = pn_db_public_error(node_number(db))) != 0)
		return r;
	int num = legacy ? 0 : db->node_num;
	for (int waited = 0;; waited += 50) {
		r = pn_db_public_error(worker_lock_call(db, ST_WORKER_LOCK, num, pid, ret_taken));
		if (r < 0 || *ret_taken || waited >= wait_ms)
			return r;
		struct timespec ts = {.tv_nsec = 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

void pn_index_worker_release(pn_db *db, bool legacy, int pid)
{
	bool released;
	if (db && pid > 0 && PQstatus(db->conn) == CONNECTION_OK) /* a lost connection released it */
		worker_lock_call(db, ST_WORKER_UNLOCK, legacy ? 0 : db->node_num, pid, &released);
}

const char *pn_index_xact(const pn_db *db)
{
	return db ? db->xact : "";
}

int pn_index_xact_committed(pn_db *db, const char *xact, bool *ret_committed)
{
	params p = {0};

	if (!db || !xact || !xact[0] || !ret_committed)
		return -EINVAL;
	int r = ready(db);
	if (r != 0)
		return r;
	pn_params_text(&p, xact);
	PGresult *res = run(db, ST_XACT_STATUS, &p);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		r = pn_db_public_error(pn_db_fail(db, res));
		/* "transaction ID is in the future": a standby promoted since
		 * never received it, so nothing of it runs or committed here. */
		if (r == -EIO && strcmp(db->sqlstate, "22023") == 0)
			r = -ENOENT;
		return r;
	}
	const char *st = PQgetvalue(res, 0, 0);
	if (PQgetisnull(res, 0, 0)) {
		/* too old for the commit log to tell: cannot be one of ours */
		r = -ENOENT;
	} else if (strcmp(st, "committed") == 0) {
		*ret_committed = true;
	} else if (strcmp(st, "aborted") == 0) {
		*ret_committed = false;
	} else {
		r = -EAGAIN; /* in progress: its backend has not finished it yet */
	}
	PQclear(res);
	return r;
}

int pn_index_path_referenced(pn_db *db, const char *path, bool *ret_referenced)
{
	params p = {0};
	pn_db_retry again = {0}; /* a reconnection, no retry */

	if (!db || !path || !ret_referenced)
		return -EINVAL;
	pn_db_settle(db);
	pn_db_clear_error(db);
	pn_params_text(&p, path);

	for (;;) {
		PGresult *res;
		int r;

		r = prepare_statements(db);
		if (r == 0) {
			res = run(db, ST_PATH_REFERENCED, &p);
			if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
				*ret_referenced = PQgetvalue(res, 0, 0)[0] == 't';
				PQclear(res);
				return 0;
			}
			r = pn_db_fail(db, res);
		}
		if (!pn_db_run_again(db, &again, &r))
			return r;
	}
}
