/* How long pn_index_store() takes on one connection, and what the same
 * work as one PL/pgSQL call (bench_store_fn.sql) would take instead.
 *
 *   PN_TEST_PG_CONNINFO=... bench_db_index [STORES [PER_SERIES]]
 *
 * Works in its own throw-away database. Each series gets PER_SERIES
 * instances, each study two series, each patient one study: most stores
 * find patient, study and series there already, as in real traffic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "index.h"
#include "testdb.h"

#ifndef PN_BENCH_FN_SQL
#error "PN_BENCH_FN_SQL: path of bench_store_fn.sql"
#endif

enum { FN_PARAMS = 46 };

static const unsigned char attrs[600] = {0x10, 0x00, 0x10, 0x00, 'P', 'N'};

typedef struct {
	pn_instance_rec rec;
	char pid[32], study[80], series[80], sop[80], path[48];
} bench_rec;

static void make_rec(bench_rec *b, const char *variant, long i, long per_series)
{
	long series = i / per_series, study = series / 2;
	pn_blob blob = {attrs, sizeof attrs};

	snprintf(b->pid, sizeof b->pid, "%s-%ld", variant, study);
	snprintf(b->study, sizeof b->study, "1.2.826.0.1.3680043.10.998.%s.1.%ld", variant, study);
	snprintf(b->series, sizeof b->series, "1.2.826.0.1.3680043.10.998.%s.2.%ld", variant, series);
	snprintf(b->sop, sizeof b->sop, "1.2.826.0.1.3680043.10.998.%s.3.%ld", variant, i);
	snprintf(b->path, sizeof b->path, "%s/%02lx/%ld.dcm", variant, i & 0xff, i);
	b->rec = (pn_instance_rec){
	    .patient_id = b->pid,
	    .issuer = "",
	    .patient_name = "Doe^John",
	    .patient_birth_date = "1960-05-04",
	    .patient_sex = "M",
	    .patient_attrs = blob,
	    .study_uid = b->study,
	    .study_date = "2024-03-01",
	    .study_time = "10:11:12",
	    .accession_number = "A123",
	    .study_id = "1",
	    .study_description = "CT Abdomen",
	    .referring_physician_name = "Who^Dr",
	    .study_attrs = blob,
	    .series_uid = b->series,
	    .modality = "CT",
	    .series_number = "2",
	    .series_description = "axial 1mm",
	    .series_date = "2024-03-01",
	    .series_time = "10:12:00",
	    .body_part_examined = "ABDOMEN",
	    .protocol_name = "ABD",
	    .series_attrs = blob,
	    .sop_uid = b->sop,
	    .sop_class_uid = "1.2.840.10008.5.1.4.1.1.2",
	    .instance_number = "17",
	    .image_type = "ORIGINAL\\PRIMARY\\AXIAL",
	    .rows = "512",
	    .columns = "512",
	    .samples_per_pixel = "1",
	    .photometric_interpretation = "MONOCHROME2",
	    .slice_thickness = "1",
	    .acquisition_date = "2024-03-01",
	    .acquisition_time = "10:12:01",
	    .content_date = "2024-03-01",
	    .content_time = "10:12:02",
	    .instance_attrs = blob,
	    .transfer_syntax_uid = "1.2.840.10008.1.2.1",
	    .path = b->path,
	    .size = 526000,
	    .checksum = "xxh3-128:99aa06d3014798d86001c324468d497f",
	    .calling_ae = "CT1",
	    .specific_character_set = "ISO_IR 192",
	};
}

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void report(const char *what, double *lat, long n, double total_us)
{
	qsort(lat, (size_t)n, sizeof *lat, cmp_double);
	printf("%-28s %7.1f us/store  p50 %7.1f  p99 %7.1f  %7.0f stores/s\n", what, total_us / (double)n, lat[n / 2],
	       lat[n * 99 / 100], (double)n * 1e6 / total_us);
}

static int bench_client(pn_db *db, const char *variant, long n, long per_series, double *lat)
{
	double t0 = now_us();

	for (long i = 0; i < n; i++) {
		pn_index_outcome outcome;
		bench_rec b;
		double t;

		make_rec(&b, variant, i, per_series);
		t = now_us();
		if (pn_index_store(db, &b.rec, PN_DUP_IGNORE, &outcome, NULL) != 0 || outcome != PN_INDEX_STORED) {
			fprintf(stderr, "bench: store %ld: %s\n", i, pn_db_errmsg(db));
			return -1;
		}
		lat[i] = now_us() - t;
	}
	report("client statements", lat, n, now_us() - t0);
	return 0;
}

static int bench_function(PGconn *conn, const char *variant, long n, long per_series, double *lat)
{
	const char *v[FN_PARAMS];
	int len[FN_PARAMS], fmt[FN_PARAMS];
	double t0 = now_us();
	char size[24];

	for (long i = 0; i < n; i++) {
		const pn_instance_rec *r;
		PGresult *res;
		bench_rec b;
		int k = 0;
		double t;

		make_rec(&b, variant, i, per_series);
		r = &b.rec;
		snprintf(size, sizeof size, "%lld", (long long)r->size);
#define T(x) (v[k] = (x), len[k] = 0, fmt[k++] = 0)
#define B(x) (v[k] = (const char *)(x).data, len[k] = (int)(x).len, fmt[k++] = 1)
		T(r->patient_id), T(r->issuer), T(r->patient_name), T(r->patient_birth_date);
		T(r->patient_sex), B(r->patient_attrs);
		T(r->study_uid), T(r->study_date), T(r->study_time), T(r->accession_number);
		T(r->study_id), T(r->study_description), T(r->referring_physician_name);
		B(r->study_attrs);
		T(r->series_uid), T(r->modality), T(r->series_number), T(r->series_description);
		T(r->series_date), T(r->series_time), T(r->body_part_examined), T(r->protocol_name);
		B(r->series_attrs);
		T(r->sop_uid), T(r->sop_class_uid), T(r->instance_number), T(r->image_type);
		T(r->rows), T(r->columns), T(r->number_of_frames), T(r->samples_per_pixel);
		T(r->photometric_interpretation), T(r->slice_thickness), T(r->spacing_between_slices);
		T(r->acquisition_date), T(r->acquisition_time), T(r->content_date), T(r->content_time);
		T(r->transfer_syntax_uid), T(r->path), T(size), T(r->checksum);
		T(r->specific_character_set), T(r->calling_ae), B(r->instance_attrs);
		T("0");
#undef T
#undef B
		t = now_us();
		res = PQexecPrepared(conn, "bench_fn", k, v, len, fmt, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), "0") != 0) {
			fprintf(stderr, "bench: function %ld: %s", i, PQresultErrorMessage(res));
			PQclear(res);
			return -1;
		}
		PQclear(res);
		lat[i] = now_us() - t;
	}
	report("one PL/pgSQL call", lat, n, now_us() - t0);
	return 0;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	long size;

	if (f && fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = calloc(1, (size_t)size + 1)) && fread(buf, 1, (size_t)size, f) != (size_t)size) {
		free(buf);
		buf = NULL;
	}
	if (f)
		fclose(f);
	return buf;
}

static int setup_function(PGconn *conn)
{
	Oid types[FN_PARAMS];
	char sql[1024];
	size_t n = 0;
	char *body = read_file(PN_BENCH_FN_SQL);
	PGresult *res;
	int ok;

	if (!body)
		return -1;
	res = PQexec(conn, body);
	free(body);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (!ok)
		return -1;
	n += (size_t)snprintf(sql + n, sizeof sql - n, "SELECT * FROM pn_bench_store(");
	for (int i = 1; i <= FN_PARAMS; i++) {
		types[i - 1] = (i == 6 || i == 14 || i == 23 || i == 45) ? 17 : 25; /* bytea : text */
		n += (size_t)snprintf(sql + n, sizeof sql - n, "$%d%s", i, i == FN_PARAMS ? "::integer)" : ", ");
	}
	res = PQprepare(conn, "bench_fn", sql, FN_PARAMS, types);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "bench: %s", PQresultErrorMessage(res));
	PQclear(res);
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	const char *admin = getenv("PN_TEST_PG_CONNINFO");
	long n = argc > 1 ? atol(argv[1]) : 2000, per_series = argc > 2 ? atol(argv[2]) : 100;
	char dbname[64], err[256] = "", variant[16];
	char *conninfo;
	pn_db *db = NULL;
	PGconn *conn = NULL;
	double *lat;
	int r = 1;

	if (!admin || n <= 0 || per_series <= 0) {
		fprintf(stderr, "usage: PN_TEST_PG_CONNINFO=... %s [STORES [PER_SERIES]]\n", argv[0]);
		return 2;
	}
	lat = calloc((size_t)n, sizeof *lat);
	conninfo = testdb_create(admin, dbname, sizeof dbname);
	if (!lat || !conninfo)
		return 2;
	if (pn_db_connect(conninfo, &db, err, sizeof err) != 0 || pn_db_migrate(db) != 0) {
		fprintf(stderr, "bench: %s%s\n", err, db ? pn_db_errmsg(db) : "");
		goto out;
	}
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK || setup_function(conn) != 0) {
		fprintf(stderr, "bench: could not set up the function: %s", PQerrorMessage(conn));
		goto out;
	}
	printf("%ld stores, %ld per series, %s\n", n, per_series, PQparameterStatus(conn, "server_version"));
	/* Two rounds each, alternating: the first round warms caches up. */
	for (int round = 0; round < 2; round++) {
		snprintf(variant, sizeof variant, "c%d", round);
		if (bench_client(db, variant, n, per_series, lat) != 0)
			goto out;
		snprintf(variant, sizeof variant, "f%d", round);
		if (bench_function(conn, variant, n, per_series, lat) != 0)
			goto out;
	}
	r = 0;
out:
	PQfinish(conn);
	pn_db_free(db);
	testdb_drop(admin, dbname);
	free(conninfo);
	free(lat);
	return r;
}
