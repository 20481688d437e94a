/* A query's matches for the web (search.h): the loop of C-FIND's stream,
 * without the DIMSE side. */
#include "search.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "find_response.h"

#define UID_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define TAG_CHARSET 0x00080005u
#define TAG_LEVEL 0x00080052u

struct pn_web_search {
	pn_store_ctx *ctx;
	pn_query *q;
	bool all;
	long long skip, left; /* left: -1 no limit */
	pn_level_blob blobs[PN_LEVELS];
	bool running;
};

pn_dcm_ds *pn_web_identifier(const char *level)
{
	pn_dcm_ds *id = NULL;
	if (pn_dcm_ds_create(&id) < 0)
		return NULL;
	if (pn_dcm_ds_put(id, TAG_CHARSET, "ISO_IR 192") < 0 || pn_dcm_ds_put(id, TAG_LEVEL, level) < 0) {
		pn_dcm_ds_free(id);
		return NULL;
	}
	return id;
}

int pn_web_query(pn_dcm_ds *identifier, bool fuzzy, pn_query **ret, char *why, size_t whylen)
{
	unsigned short status = 0;
	unsigned flags = PN_QUERY_RELATIONAL | (fuzzy ? PN_QUERY_FOLD_NAMES : 0);
	return pn_query_parse(identifier, UID_STUDY_ROOT_FIND, flags, ret, &status, why, whylen);
}

int pn_web_search_start(pn_store_ctx *ctx, pn_query *q, bool all, int order, long long offset, long long limit,
                        pn_web_search **ret)
{
	*ret = NULL;
	pn_web_search *s = calloc(1, sizeof(*s));
	if (!s) {
		pn_query_free(q);
		return -ENOMEM;
	}
	s->ctx = ctx;
	s->q = q;
	s->all = all;
	s->skip = offset > 0 ? offset : 0;
	s->left = limit;
	q->sql.order = order;
	if (pn_find_response_direct_ok(q) && (offset > 0 || limit >= 0)) {
		q->sql.offset = s->skip;
		q->sql.limit = limit > 0 ? limit : 0;
		s->skip = 0;
	}
	if (!ctx->db || pn_find_start(ctx->db, &q->sql) < 0) {
		pn_web_search_free(s);
		return -EIO;
	}
	s->running = true;
	*ret = s;
	return 0;
}

static int merge_each(void *ctx, const pn_dcm_elem *e)
{
	pn_dcm_ds **pair = ctx;
	char *have = NULL;
	if (e->tag == TAG_CHARSET || pn_dcm_ds_get(pair[0], e->tag, &have) == 0) {
		free(have);
		return 0;
	}
	int rc = pn_dcm_ds_copy(pair[0], pair[1], e->tag, NULL);
	return rc == -ENOMEM ? rc : 0;
}

/* Every attribute the index keeps for the levels returned. */
static int merge_all(pn_dcm_ds *rsp, pn_dcm_ds *const levels[PN_LEVELS], int level)
{
	for (int l = 0; l <= level; l++) {
		if (!levels[l])
			continue;
		pn_dcm_ds *pair[2] = {rsp, levels[l]};
		int rc = pn_dcm_ds_each(levels[l], merge_each, pair);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int pn_web_search_next(pn_web_search *s, pn_dcm_ds **ret_rsp, pn_find_row *row)
{
	const pn_query *q = s->q;
	*ret_rsp = NULL;
	for (;;) {
		if (s->left == 0 || !s->running)
			return 0;
		int rc = pn_find_next(s->ctx->db, row);
		if (rc == 0) {
			s->running = false;
			pn_find_stop(s->ctx->db);
			return 0;
		}
		if (rc < 0)
			return -EIO;
		pn_dcm_ds *levels[PN_LEVELS] = {0};
		for (int l = 0; l <= q->level && rc >= 0; l++)
			if ((q->need_levels & (1u << l)) || s->all)
				rc = pn_level_blob_set(&s->blobs[l], &row->attrs[l]);
		if (rc < 0)
			return -ENOMEM;
		for (int l = 0; l <= q->level; l++)
			levels[l] = (q->need_levels & (1u << l)) || s->all ? pn_level_blob_ds(&s->blobs[l], l) : NULL;
		if (!pn_query_post_match(q, levels))
			continue;
		if (s->skip > 0) {
			s->skip--;
			continue;
		}
		pn_dcm_ds *rsp = NULL;
		rc = pn_find_response_build(q, row, levels, s->ctx->cfg->ae_title, NULL, &rsp);
		if (rc == 0 && s->all)
			rc = merge_all(rsp, levels, q->level);
		if (rc < 0) {
			pn_dcm_ds_free(rsp);
			return -ENOMEM;
		}
		pn_dcm_ds_remove(rsp, TAG_LEVEL);
		if (s->left > 0)
			s->left--;
		*ret_rsp = rsp;
		return 1;
	}
}

const pn_query *pn_web_search_query(const pn_web_search *s)
{
	return s->q;
}

void pn_web_search_free(pn_web_search *s)
{
	if (!s)
		return;
	if (s->running && s->q->sql.limit > 0) {
		/* A query cut in SQL has at most `limit` rows left: reading them
		 * costs less than a cancel, which opens a connection of its own
		 * (10 ms a page section, and the next request on this connection
		 * waits for it). */
		pn_find_row row;
		while (pn_find_next(s->ctx->db, &row) == 1)
			;
	}
	if (s->running)
		pn_find_stop(s->ctx->db);
	for (int l = 0; l < PN_LEVELS; l++)
		pn_level_blob_clear(&s->blobs[l]);
	pn_query_free(s->q);
	free(s);
}
