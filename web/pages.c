/* The study browser: server-rendered pages over the C-FIND engine
 * (search.h), the same matching as C-FIND and QIDO-RS. Every value shown
 * goes through pn_html_text; nothing is fetched from elsewhere (the style
 * sheet and script are the node's own, static.c). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "html.h"
#include "log.h"
#include "search.h"
#include "uid.h"
#include "web_internal.h"

#define PAGE_SIZE 50
#define MAX_SERIES 2000

enum {
	T_PATIENT_NAME = 0x00100010,
	T_PATIENT_ID = 0x00100020,
	T_ISSUER = 0x00100021,
	T_BIRTH_DATE = 0x00100030,
	T_SEX = 0x00100040,
	T_STUDY_DATE = 0x00080020,
	T_STUDY_TIME = 0x00080030,
	T_ACCESSION = 0x00080050,
	T_MODALITIES = 0x00080061,
	T_STUDY_DESC = 0x00081030,
	T_STUDY_UID = 0x0020000D,
	T_STUDY_ID = 0x00200010,
	T_REFERRING = 0x00080090,
	T_N_SERIES = 0x00201206,
	T_N_STUDY_INSTANCES = 0x00201208,
	T_SERIES_UID = 0x0020000E,
	T_SERIES_NUMBER = 0x00200011,
	T_SERIES_DESC = 0x0008103E,
	T_MODALITY = 0x00080060,
	T_SERIES_DATE = 0x00080021,
	T_SERIES_TIME = 0x00080031,
	T_N_SERIES_INSTANCES = 0x00201209,
	T_PROTOCOL = 0x00181030,
	T_BODY_PART = 0x00180015,
	T_SOP_UID = 0x00080018,
	T_IMAGE_TYPE = 0x00080008,
	T_SLICE_THICKNESS = 0x00180050,
	T_SPACING = 0x00180088,
	T_ROWS = 0x00280010,
	T_COLUMNS = 0x00280011,
	T_SAMPLES = 0x00280002,
	T_PHOTOMETRIC = 0x00280004,
	T_FRAMES = 0x00280008,
	T_INSTANCE_NUMBER = 0x00200013,
};

static const uint32_t study_keys[] = {T_PATIENT_NAME, T_PATIENT_ID, T_ISSUER,    T_BIRTH_DATE, T_SEX,
                                      T_STUDY_DATE,   T_STUDY_TIME, T_ACCESSION, T_MODALITIES, T_STUDY_DESC,
                                      T_STUDY_UID,    T_STUDY_ID,   T_REFERRING, T_N_SERIES,   T_N_STUDY_INSTANCES};
static const uint32_t series_keys[] = {T_SERIES_UID,  T_SERIES_NUMBER,      T_SERIES_DESC, T_MODALITY, T_SERIES_DATE,
                                       T_SERIES_TIME, T_N_SERIES_INSTANCES, T_PROTOCOL,    T_BODY_PART};
static const uint32_t image_keys[] = {T_SOP_UID, T_IMAGE_TYPE, T_SLICE_THICKNESS, T_SPACING, T_ROWS,
                                      T_COLUMNS, T_SAMPLES,    T_PHOTOMETRIC,     T_FRAMES,  T_INSTANCE_NUMBER};

/* A value of a response, or "" (into buf). */
static const char *val(const pn_dcm_ds *ds, uint32_t tag, char *buf, size_t len)
{
	char *v = NULL;
	buf[0] = '\0';
	if (pn_dcm_ds_get(ds, tag, &v) == 0 && v) {
		snprintf(buf, len, "%s", v);
		size_t n = strlen(buf);
		while (n && buf[n - 1] == ' ')
			buf[--n] = '\0';
	}
	free(v);
	return buf;
}

/* A person name for reading: components with spaces, the ideographic and
 * phonetic groups in parentheses. */
static void put_name(pn_html *h, const char *pn)
{
	char groups[3][256] = {"", "", ""};
	int g = 0;
	size_t k = 0;
	for (const char *p = pn; *p && g < 3; p++) {
		if (*p == '=') {
			groups[g][k] = '\0';
			g++;
			k = 0;
			continue;
		}
		if (k < sizeof(groups[0]) - 1)
			groups[g][k++] = *p == '^' ? ' ' : *p;
	}
	if (g < 3)
		groups[g][k] = '\0';
	bool any = false;
	for (int i = 0; i < 3; i++) {
		char *s = groups[i];
		/* collapse the spaces of empty components */
		char *w = s;
		for (char *r = s; *r; r++)
			if (*r != ' ' || (w > s && w[-1] != ' '))
				*w++ = *r;
		while (w > s && w[-1] == ' ')
			w--;
		*w = '\0';
		if (!s[0])
			continue;
		if (any)
			pn_html_raw(h, " (");
		pn_html_text(h, s);
		if (any)
			pn_html_raw(h, ")");
		any = true;
	}
}

static void put_date(pn_html *h, const char *da)
{
	if (strlen(da) == 8 && strspn(da, "0123456789") == 8)
		pn_html_raw(h, "%.4s-%.2s-%.2s", da, da + 4, da + 6);
	else
		pn_html_text(h, da);
}

static void put_time(pn_html *h, const char *tm)
{
	if (strlen(tm) >= 4 && strspn(tm, "0123456789") >= 4) {
		pn_html_raw(h, "%.2s:%.2s", tm, tm + 2);
		if (strspn(tm, "0123456789") >= 6)
			pn_html_raw(h, ":%.2s", tm + 4);
	} else {
		pn_html_text(h, tm);
	}
}

/* Multi-valued text: values separated by ", ". */
static void put_values(pn_html *h, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\') {
			pn_html_raw(h, ", ");
			continue;
		}
		char one[2] = {*p, 0};
		pn_html_text(h, one);
	}
}

static void head(pn_html *h, const char *title)
{
	pn_html_raw(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	               "<title>");
	pn_html_text(h, title);
	pn_html_raw(h, " - pacsnode</title><link rel=\"stylesheet\" href=\"/static/pacsnode.css\">"
	               "<script src=\"/static/pacsnode.js\" defer></script></head><body>"
	               "<header><a class=\"home\" href=\"/\">pacsnode</a></header><main>");
}

static void foot(pn_html *h)
{
	pn_html_raw(h, "</main></body></html>\n");
}

static enum MHD_Result send_page(pn_web_req *r, unsigned status, pn_html *h)
{
	if (h->failed) {
		pn_html_free(h);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	struct MHD_Response *resp = MHD_create_response_from_buffer(h->len, h->data, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		pn_html_free(h);
		return MHD_NO;
	}
	h->data = NULL;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
	/* Our own style sheet, script and pictures; nothing inline, nothing
	 * from elsewhere. */
	MHD_add_response_header(resp, "Content-Security-Policy",
	                        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
	                        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	return pn_web_queue(r, status, resp);
}

static int put_keys(pn_dcm_ds *id, const uint32_t *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *have = NULL;
		if (pn_dcm_ds_get(id, keys[i], &have) == 0 && have) {
			free(have);
			continue;
		}
		if (pn_dcm_ds_put(id, keys[i], "") < 0)
			return -ENOMEM;
	}
	return 0;
}

#define PUT_KEYS(id, a) put_keys(id, a, sizeof(a) / sizeof(a[0]))

static void study_table_head(pn_html *h)
{
	pn_html_raw(h, "<table class=\"studies\"><thead><tr><th>Patient</th><th>Patient ID</th><th>Birth date</th>"
	               "<th>Sex</th><th>Study date</th><th>Description</th><th>Accession</th><th>Modalities</th>"
	               "<th>Series</th><th>Instances</th></tr></thead><tbody>\n");
}

static void patient_link(pn_html *h, const char *id, const char *issuer)
{
	pn_html_raw(h, "/patients?id=");
	pn_html_url(h, id);
	if (issuer[0]) {
		pn_html_raw(h, "&amp;issuer=");
		pn_html_url(h, issuer);
	}
}

static void study_row(pn_html *h, const pn_dcm_ds *rsp)
{
	char uid[80], b[1024], id[256], issuer[256];
	val(rsp, T_STUDY_UID, uid, sizeof(uid));
	val(rsp, T_PATIENT_ID, id, sizeof(id));
	val(rsp, T_ISSUER, issuer, sizeof(issuer));
	pn_html_raw(h, "<tr data-href=\"/studies/");
	pn_html_text(h, uid);
	pn_html_raw(h, "\"><td class=\"name\"><a href=\"");
	patient_link(h, id, issuer);
	pn_html_raw(h, "\">");
	put_name(h, val(rsp, T_PATIENT_NAME, b, sizeof(b)));
	pn_html_raw(h, "</a></td><td>");
	pn_html_text(h, id);
	if (issuer[0]) {
		pn_html_raw(h, " <span class=\"issuer\">");
		pn_html_text(h, issuer);
		pn_html_raw(h, "</span>");
	}
	pn_html_raw(h, "</td><td>");
	put_date(h, val(rsp, T_BIRTH_DATE, b, sizeof(b)));
	pn_html_raw(h, "</td><td>");
	pn_html_text(h, val(rsp, T_SEX, b, sizeof(b)));
	pn_html_raw(h, "</td><td>");
	put_date(h, val(rsp, T_STUDY_DATE, b, sizeof(b)));
	pn_html_raw(h, " ");
	put_time(h, val(rsp, T_STUDY_TIME, b, sizeof(b)));
	pn_html_raw(h, "</td><td><a href=\"/studies/");
	pn_html_text(h, uid);
	pn_html_raw(h, "\">");
	val(rsp, T_STUDY_DESC, b, sizeof(b));
	pn_html_text(h, b[0] ? b : "(no description)");
	pn_html_raw(h, "</a></td><td>");
	pn_html_text(h, val(rsp, T_ACCESSION, b, sizeof(b)));
	pn_html_raw(h, "</td><td>");
	put_values(h, val(rsp, T_MODALITIES, b, sizeof(b)));
	pn_html_raw(h, "</td><td class=\"num\">");
	pn_html_text(h, val(rsp, T_N_SERIES, b, sizeof(b)));
	pn_html_raw(h, "</td><td class=\"num\">");
	pn_html_text(h, val(rsp, T_N_STUDY_INSTANCES, b, sizeof(b)));
	pn_html_raw(h, "</td></tr>\n");
}

/* "2024-01-31" or "20240131" to "20240131"; false if neither. */
static bool form_date(const char *in, char out[9])
{
	size_t n = strlen(in);
	if (n == 10 && in[4] == '-' && in[7] == '-') {
		snprintf(out, 9, "%.4s%.2s%.2s", in, in + 5, in + 8);
	} else if (n == 8) {
		snprintf(out, 9, "%s", in);
	} else {
		return false;
	}
	return strspn(out, "0123456789") == 8;
}

static const char *form_arg(const pn_web_req *r, const char *name)
{
	const char *v = pn_web_arg(r, name);
	return v && v[0] ? v : NULL;
}

/* The search form's fields into the identifier; a reason when one is bad. */
static int search_keys(const pn_web_req *r, pn_dcm_ds *id, char *why, size_t whylen)
{
	const char *name = form_arg(r, "name"), *pid = form_arg(r, "id"), *acc = form_arg(r, "accession");
	const char *from = form_arg(r, "from"), *to = form_arg(r, "to"), *mod = form_arg(r, "modality");
	char buf[512];
	if (name) {
		/* a name as typed finds the names that begin with it */
		snprintf(buf, sizeof(buf), "%.500s%s", name, strpbrk(name, "*?") ? "" : "*");
		if (pn_dcm_ds_put(id, T_PATIENT_NAME, buf) < 0)
			goto bad;
	}
	if (pid && pn_dcm_ds_put(id, T_PATIENT_ID, pid) < 0)
		goto bad;
	if (acc && pn_dcm_ds_put(id, T_ACCESSION, acc) < 0)
		goto bad;
	if (mod && pn_dcm_ds_put(id, T_MODALITIES, mod) < 0)
		goto bad;
	if (from || to) {
		char a[9] = "", b[9] = "";
		if ((from && !form_date(from, a)) || (to && !form_date(to, b))) {
			snprintf(why, whylen, "a date is YYYY-MM-DD");
			return -EINVAL;
		}
		snprintf(buf, sizeof(buf), "%s-%s", a, b);
		if (pn_dcm_ds_put(id, T_STUDY_DATE, buf) < 0)
			goto bad;
	}
	return 0;
bad:
	snprintf(why, whylen, "a search field cannot be matched");
	return -EINVAL;
}

static void search_form(pn_html *h, const pn_web_req *r)
{
	static const struct {
		const char *name, *label, *type;
	} fields[] = {
	    {"name", "Patient name", "search"},  {"id", "Patient ID", "search"}, {"accession", "Accession", "search"},
	    {"from", "Study date from", "date"}, {"to", "to", "date"},           {"modality", "Modality", "search"},
	};
	pn_html_raw(h, "<form class=\"search\" method=\"get\" action=\"/\">");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		pn_html_raw(h, "<label>%s <input type=\"%s\" name=\"%s\" value=\"", fields[i].label, fields[i].type,
		            fields[i].name);
		pn_html_text(h, pn_web_arg(r, fields[i].name));
		pn_html_raw(h, "\"></label> ");
	}
	pn_html_raw(h, "<button type=\"submit\">Search</button> <a href=\"/\">clear</a></form>\n");
}

/* The index's own query string with another page. */
static void page_link(pn_html *h, const pn_web_req *r, long page)
{
	static const char *const names[] = {"name", "id", "accession", "from", "to", "modality"};
	pn_html_raw(h, "/?page=%ld", page);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = form_arg(r, names[i]);
		if (!v)
			continue;
		pn_html_raw(h, "&amp;%s=", names[i]);
		pn_html_url(h, v);
	}
}

/* Runs a study query into a table; returns the rows shown, or -1 (the
 * page says why). */
static long studies_table(pn_web_req *r, pn_html *h, pn_query *q, long long offset, long long limit,
                          const char *only_issuer)
{
	pn_web_search *s = NULL;
	if (pn_web_search_start(r->ctx, q, false, PN_FIND_ORDER_NEWEST, offset, limit, &s) < 0) {
		pn_html_raw(h, "<p class=\"error\">The index does not answer.</p>");
		return -1;
	}
	long n = 0;
	pn_dcm_ds *rsp;
	pn_find_row row;
	int rc;
	study_table_head(h);
	while ((rc = pn_web_search_next(s, NULL, &rsp, &row)) == 1) {
		char issuer[256];
		/* a patient is (PatientID, Issuer): "no issuer" is a value */
		if (only_issuer && strcmp(val(rsp, T_ISSUER, issuer, sizeof(issuer)), only_issuer) != 0) {
			pn_dcm_ds_free(rsp);
			continue;
		}
		if (n < PAGE_SIZE)
			study_row(h, rsp);
		n++;
		pn_dcm_ds_free(rsp);
	}
	pn_html_raw(h, "</tbody></table>\n");
	pn_web_search_free(s);
	if (rc < 0) {
		pn_html_raw(h, "<p class=\"error\">The index query failed.</p>");
		pn_error("http %s: the study list failed: %s", r->peer, pn_db_errmsg(r->ctx->db));
		return -1;
	}
	return n;
}

enum MHD_Result pn_web_page_index(pn_web_req *r)
{
	const char *ps = pn_web_arg(r, "page");
	long page = 1;
	if (ps) {
		char *end;
		page = strtol(ps, &end, 10);
		if (*end || page < 1 || page > 1000000)
			return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "page is a number from 1");
	}
	pn_html h = {0};
	head(&h, "Studies");
	pn_html_raw(&h, "<h1>Studies</h1>");
	search_form(&h, r);
	char why[256] = "";
	pn_dcm_ds *id = pn_web_identifier("STUDY");
	if (!id) {
		pn_html_free(&h);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	int rc = search_keys(r, id, why, sizeof(why));
	if (rc == 0)
		rc = PUT_KEYS(id, study_keys);
	pn_query *q = NULL;
	if (rc == 0)
		rc = pn_web_query(id, r->ctx->cfg->pn_case_insensitive, &q, why, sizeof(why));
	else
		pn_dcm_ds_free(id);
	if (rc < 0) {
		pn_html_raw(&h, "<p class=\"error\">");
		pn_html_text(&h, why[0] ? why : "the search cannot be run");
		pn_html_raw(&h, "</p>");
		foot(&h);
		pn_warning("http %s: study search refused: %s", r->peer, why);
		return send_page(r, MHD_HTTP_BAD_REQUEST, &h);
	}
	long n = studies_table(r, &h, q, (long long)(page - 1) * PAGE_SIZE, PAGE_SIZE + 1, NULL);
	if (n >= 0) {
		pn_html_raw(&h, "<nav class=\"pages\">");
		if (page > 1) {
			pn_html_raw(&h, "<a rel=\"prev\" href=\"");
			page_link(&h, r, page - 1);
			pn_html_raw(&h, "\">newer</a> ");
		}
		if (n > 0)
			pn_html_raw(&h, "<span>studies %ld to %ld</span>", (page - 1) * PAGE_SIZE + 1,
			            (page - 1) * PAGE_SIZE + (n > PAGE_SIZE ? PAGE_SIZE : n));
		else
			pn_html_raw(&h, "<span>no study</span>");
		if (n > PAGE_SIZE) {
			pn_html_raw(&h, " <a rel=\"next\" href=\"");
			page_link(&h, r, page + 1);
			pn_html_raw(&h, "\">older</a>");
		}
		pn_html_raw(&h, "</nav>");
	}
	foot(&h);
	return send_page(r, n < 0 ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, &h);
}

enum MHD_Result pn_web_page_patient(pn_web_req *r)
{
	const char *pid = pn_web_arg(r, "id");
	const char *issuer = pn_web_arg(r, "issuer");
	if (!pid || !pid[0] || strlen(pid) > 64 || (issuer && strlen(issuer) > 64))
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "id is a Patient ID (and issuer its issuer)");
	if (strpbrk(pid, "*?\\") || (issuer && strpbrk(issuer, "*?\\")))
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "a Patient ID here is one value, without wildcards");
	pn_dcm_ds *id = pn_web_identifier("STUDY");
	if (!id || pn_dcm_ds_put(id, T_PATIENT_ID, pid) < 0 ||
	    (issuer && issuer[0] && pn_dcm_ds_put(id, T_ISSUER, issuer) < 0) || PUT_KEYS(id, study_keys) < 0) {
		pn_dcm_ds_free(id);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	pn_query *q = NULL;
	char why[256];
	if (pn_web_query(id, true, &q, why, sizeof(why)) < 0)
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
	pn_html h = {0};
	head(&h, pid);
	pn_html_raw(&h, "<h1>Patient ");
	pn_html_text(&h, pid);
	if (issuer && issuer[0]) {
		pn_html_raw(&h, " <span class=\"issuer\">");
		pn_html_text(&h, issuer);
		pn_html_raw(&h, "</span>");
	}
	pn_html_raw(&h, "</h1>");
	long n = studies_table(r, &h, q, 0, -1, issuer ? issuer : "");
	if (n == 0) {
		pn_html_free(&h);
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such patient");
	}
	if (n > PAGE_SIZE)
		pn_html_raw(&h, "<p>The %ld newest of %ld studies.</p>", (long)PAGE_SIZE, n);
	foot(&h);
	return send_page(r, n < 0 ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK, &h);
}

static void dl_row(pn_html *h, const char *label, const char *value)
{
	if (!value || !value[0])
		return;
	pn_html_raw(h, "<dt>%s</dt><dd>", label);
	pn_html_text(h, value);
	pn_html_raw(h, "</dd>");
}

typedef struct {
	char uid[80], number[16], desc[256], modality[32], date[16], time[32], count[16], protocol[256], body_part[64];
} series_info;

/* The study's series, in series number order, into memory (the database
 * connection runs one query at a time, and each series needs its own). */
static int list_series(pn_web_req *r, const char *study, series_info **ret, size_t *ret_n)
{
	*ret = NULL;
	*ret_n = 0;
	pn_dcm_ds *id = pn_web_identifier("SERIES");
	if (!id || pn_dcm_ds_put(id, T_STUDY_UID, study) < 0 || PUT_KEYS(id, series_keys) < 0) {
		pn_dcm_ds_free(id);
		return -ENOMEM;
	}
	pn_query *q = NULL;
	char why[256];
	if (pn_web_query(id, false, &q, why, sizeof(why)) < 0)
		return -EINVAL;
	pn_web_search *s = NULL;
	if (pn_web_search_start(r->ctx, q, false, PN_FIND_ORDER_NUMBER, 0, MAX_SERIES, &s) < 0)
		return -EIO;
	series_info *list = calloc(MAX_SERIES, sizeof(*list));
	size_t n = 0;
	pn_dcm_ds *rsp;
	pn_find_row row;
	int rc = list ? 0 : -ENOMEM;
	while (rc == 0 && (rc = pn_web_search_next(s, NULL, &rsp, &row)) == 1) {
		series_info *x = &list[n++];
		val(rsp, T_SERIES_UID, x->uid, sizeof(x->uid));
		val(rsp, T_SERIES_NUMBER, x->number, sizeof(x->number));
		val(rsp, T_SERIES_DESC, x->desc, sizeof(x->desc));
		val(rsp, T_MODALITY, x->modality, sizeof(x->modality));
		val(rsp, T_SERIES_DATE, x->date, sizeof(x->date));
		val(rsp, T_SERIES_TIME, x->time, sizeof(x->time));
		val(rsp, T_N_SERIES_INSTANCES, x->count, sizeof(x->count));
		val(rsp, T_PROTOCOL, x->protocol, sizeof(x->protocol));
		val(rsp, T_BODY_PART, x->body_part, sizeof(x->body_part));
		pn_dcm_ds_free(rsp);
		rc = 0;
	}
	pn_web_search_free(s);
	if (rc < 0) {
		free(list);
		return rc;
	}
	*ret = list;
	*ret_n = n;
	return 0;
}

/* The slices' thickness against their spacing, in words. */
static void put_gap(pn_html *h, const char *thickness, const char *spacing)
{
	char *e1, *e2;
	double t = strtod(thickness, &e1), s = strtod(spacing, &e2);
	if (!thickness[0] || !spacing[0] || *e1 || *e2)
		return;
	double d = s - t;
	if (d > 1e-3)
		pn_html_raw(h, "<dt>Between slices</dt><dd>a gap of %.3g mm</dd>", d);
	else if (d < -1e-3)
		pn_html_raw(h, "<dt>Between slices</dt><dd>an overlap of %.3g mm</dd>", -d);
	else
		pn_html_raw(h, "<dt>Between slices</dt><dd>contiguous</dd>");
}

/* One series' section: its attributes, those of its middle image, its
 * picture. */
static int series_section(pn_web_req *r, pn_html *h, const char *study, const series_info *x)
{
	pn_html_raw(h, "<section class=\"series\" id=\"series-");
	pn_html_text(h, x->uid);
	pn_html_raw(h, "\"><h2>");
	pn_html_text(h, x->number[0] ? x->number : "-");
	pn_html_raw(h, " &middot; ");
	pn_html_text(h, x->desc[0] ? x->desc : "(no description)");
	pn_html_raw(h, " <span class=\"modality\">");
	pn_html_text(h, x->modality);
	pn_html_raw(h, "</span></h2><div class=\"body\">");

	pn_dcm_ds *id = pn_web_identifier("IMAGE");
	if (!id || pn_dcm_ds_put(id, T_STUDY_UID, study) < 0 || pn_dcm_ds_put(id, T_SERIES_UID, x->uid) < 0 ||
	    PUT_KEYS(id, image_keys) < 0) {
		pn_dcm_ds_free(id);
		return -ENOMEM;
	}
	pn_query *q = NULL;
	char why[256];
	if (pn_web_query(id, false, &q, why, sizeof(why)) < 0)
		return -EINVAL;
	long long middle = atoll(x->count) / 2;
	pn_web_search *s = NULL;
	if (pn_web_search_start(r->ctx, q, false, PN_FIND_ORDER_NUMBER, middle, 1, &s) < 0)
		return -EIO;
	pn_dcm_ds *img = NULL;
	pn_find_row row;
	char ts[80] = "";
	int rc = pn_web_search_next(s, NULL, &img, &row);
	if (rc == 1 && row.transfer_syntax_uid)
		snprintf(ts, sizeof(ts), "%s", row.transfer_syntax_uid);
	pn_web_search_free(s);
	if (rc < 0)
		return rc;
	char sop[80] = "", b[512], thick[64] = "", space[64] = "", rows[16] = "", cols[16] = "";
	if (img) {
		val(img, T_SOP_UID, sop, sizeof(sop));
		pn_html_raw(h, "<a class=\"picture\" href=\"/dicomweb/studies/");
		pn_html_text(h, study);
		pn_html_raw(h, "/series/");
		pn_html_text(h, x->uid);
		pn_html_raw(h, "/instances/");
		pn_html_text(h, sop);
		pn_html_raw(
		    h, "/rendered\"><img loading=\"lazy\" alt=\"middle image of the series\" src=\"/dicomweb/studies/");
		pn_html_text(h, study);
		pn_html_raw(h, "/series/");
		pn_html_text(h, x->uid);
		pn_html_raw(h, "/instances/");
		pn_html_text(h, sop);
		pn_html_raw(h, "/thumbnail\"></a>");
	}
	pn_html_raw(h, "<dl>");
	dl_row(h, "Series number", x->number);
	dl_row(h, "Description", x->desc);
	dl_row(h, "Modality", x->modality);
	if (x->date[0] || x->time[0]) {
		pn_html_raw(h, "<dt>Date and time</dt><dd>");
		put_date(h, x->date);
		pn_html_raw(h, " ");
		put_time(h, x->time);
		pn_html_raw(h, "</dd>");
	}
	dl_row(h, "Images", x->count);
	dl_row(h, "Protocol", x->protocol);
	dl_row(h, "Body part", x->body_part);
	if (img) {
		val(img, T_IMAGE_TYPE, b, sizeof(b));
		if (b[0]) {
			pn_html_raw(h, "<dt>Image type</dt><dd>");
			put_values(h, b);
			pn_html_raw(h, "</dd>");
		}
		dl_row(h, "Slice thickness (mm)", val(img, T_SLICE_THICKNESS, thick, sizeof(thick)));
		dl_row(h, "Spacing between slices (mm)", val(img, T_SPACING, space, sizeof(space)));
		put_gap(h, thick, space);
		val(img, T_ROWS, rows, sizeof(rows));
		val(img, T_COLUMNS, cols, sizeof(cols));
		if (rows[0] || cols[0]) {
			pn_html_raw(h, "<dt>Rows &times; columns</dt><dd>");
			pn_html_text(h, rows);
			pn_html_raw(h, " &times; ");
			pn_html_text(h, cols);
			pn_html_raw(h, "</dd>");
		}
		dl_row(h, "Frames", val(img, T_FRAMES, b, sizeof(b)));
		dl_row(h, "Samples per pixel", val(img, T_SAMPLES, b, sizeof(b)));
		dl_row(h, "Photometric interpretation", val(img, T_PHOTOMETRIC, b, sizeof(b)));
		const char *ts_name = ts[0] ? pn_dcm_ts_name(ts) : NULL;
		if (ts_name) {
			pn_html_raw(h, "<dt>Transfer syntax</dt><dd>");
			pn_html_text(h, ts_name);
			pn_html_raw(h, " <span class=\"uid\">");
			pn_html_text(h, ts);
			pn_html_raw(h, "</span></dd>");
		} else {
			dl_row(h, "Transfer syntax", ts);
		}
		pn_dcm_ds_free(img);
	}
	pn_html_raw(h, "</dl><p class=\"downloads\"><a href=\"/studies/");
	pn_html_text(h, study);
	pn_html_raw(h, "/series/");
	pn_html_text(h, x->uid);
	pn_html_raw(h, "/download\">the series (ZIP)</a> ");
	if (sop[0]) {
		pn_html_raw(h, "<a href=\"/studies/");
		pn_html_text(h, study);
		pn_html_raw(h, "/series/");
		pn_html_text(h, x->uid);
		pn_html_raw(h, "/instances/");
		pn_html_text(h, sop);
		pn_html_raw(h, "/file\" download>the middle instance (DICOM)</a>");
	}
	pn_html_raw(h, "</p></div></section>\n");
	return 0;
}

enum MHD_Result pn_web_page_study(pn_web_req *r, const char *study)
{
	pn_dcm_ds *id = pn_web_identifier("STUDY");
	if (!id || pn_dcm_ds_put(id, T_STUDY_UID, study) < 0 || PUT_KEYS(id, study_keys) < 0) {
		pn_dcm_ds_free(id);
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
	}
	pn_query *q = NULL;
	char why[256];
	if (pn_web_query(id, false, &q, why, sizeof(why)) < 0)
		return pn_web_error(r, MHD_HTTP_BAD_REQUEST, "%s", why);
	pn_web_search *s = NULL;
	if (pn_web_search_start(r->ctx, q, false, PN_FIND_ORDER_NONE, 0, 1, &s) < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index does not answer");
	pn_dcm_ds *st = NULL;
	pn_find_row row;
	int rc = pn_web_search_next(s, NULL, &st, &row);
	pn_web_search_free(s);
	if (rc < 0)
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index query failed");
	if (rc == 0)
		return pn_web_error(r, MHD_HTTP_NOT_FOUND, "no such study");
	char b[1024], desc[256], pid[256], issuer[256];
	val(st, T_STUDY_DESC, desc, sizeof(desc));
	pn_html h = {0};
	head(&h, desc[0] ? desc : "Study");
	pn_html_raw(&h, "<h1>");
	pn_html_text(&h, desc[0] ? desc : "(no description)");
	pn_html_raw(&h, "</h1><dl class=\"study\"><dt>Patient</dt><dd><a href=\"");
	patient_link(&h, val(st, T_PATIENT_ID, pid, sizeof(pid)), val(st, T_ISSUER, issuer, sizeof(issuer)));
	pn_html_raw(&h, "\">");
	put_name(&h, val(st, T_PATIENT_NAME, b, sizeof(b)));
	pn_html_raw(&h, "</a></dd>");
	dl_row(&h, "Patient ID", pid);
	dl_row(&h, "Issuer of Patient ID", issuer);
	val(st, T_BIRTH_DATE, b, sizeof(b));
	if (b[0]) {
		pn_html_raw(&h, "<dt>Birth date</dt><dd>");
		put_date(&h, b);
		pn_html_raw(&h, "</dd>");
	}
	dl_row(&h, "Sex", val(st, T_SEX, b, sizeof(b)));
	pn_html_raw(&h, "<dt>Study date</dt><dd>");
	put_date(&h, val(st, T_STUDY_DATE, b, sizeof(b)));
	pn_html_raw(&h, " ");
	put_time(&h, val(st, T_STUDY_TIME, b, sizeof(b)));
	pn_html_raw(&h, "</dd>");
	dl_row(&h, "Accession number", val(st, T_ACCESSION, b, sizeof(b)));
	dl_row(&h, "Study ID", val(st, T_STUDY_ID, b, sizeof(b)));
	val(st, T_REFERRING, b, sizeof(b));
	if (b[0]) {
		pn_html_raw(&h, "<dt>Referring physician</dt><dd>");
		put_name(&h, b);
		pn_html_raw(&h, "</dd>");
	}
	val(st, T_MODALITIES, b, sizeof(b));
	pn_html_raw(&h, "<dt>Modalities</dt><dd>");
	put_values(&h, b);
	pn_html_raw(&h, "</dd>");
	dl_row(&h, "Series", val(st, T_N_SERIES, b, sizeof(b)));
	dl_row(&h, "Instances", val(st, T_N_STUDY_INSTANCES, b, sizeof(b)));
	dl_row(&h, "Study Instance UID", study);
	pn_html_raw(&h, "</dl>\n<p class=\"downloads\"><a href=\"/studies/");
	pn_html_text(&h, study);
	pn_html_raw(&h, "/download\">Download the study (ZIP of its DICOM files)</a></p>\n");
	pn_dcm_ds_free(st);

	series_info *list = NULL;
	size_t n = 0;
	rc = list_series(r, study, &list, &n);
	for (size_t i = 0; rc == 0 && i < n; i++)
		rc = series_section(r, &h, study, &list[i]);
	free(list);
	if (rc < 0) {
		pn_html_free(&h);
		pn_error("http %s: the study page of %s failed: %s", r->peer, study, pn_db_errmsg(r->ctx->db));
		return pn_web_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "the index query failed");
	}
	foot(&h);
	return send_page(r, MHD_HTTP_OK, &h);
}
