/* The orphan walk of pacsnodectl verify (verify_orphans.h). */
#include "verify_orphans.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "reindex_walk.h"

/* A file the walk found at a name the node does not give an instance, or
 * that is no regular file, or that could not be read (err). */
typedef struct {
	char *rel;
	int err;
} other_file;

struct pn_orphans {
	const char *root;
	pthread_t thread;
	bool started, joined;
	int walk_rc;
	pn_walk files, rows; /* the walk's, the rows' */
	other_file *others;
	size_t n_others;
	bool others_short; /* out of memory for one */
	/* pn_orphans_next: the others first, then the unnamed files */
	size_t next_other, next_file, next_row;
	char rel[PN_REL_PATH_MAX];
};

static void on_other(void *ctx, const char *rel, pn_walk_other kind, int err)
{
	pn_orphans *o = ctx;
	if (kind == PN_WALK_TMP)
		return; /* the node's files in flight, settled by its recovery */
	if (kind == PN_WALK_UNREADABLE && err == ENOENT)
		return; /* removed since its folder was read */
	other_file *v = realloc(o->others, (o->n_others + 1) * sizeof(*v));
	char *copy = strdup(rel);
	if (!v || !copy) {
		free(copy);
		if (v)
			o->others = v;
		o->others_short = true;
		return;
	}
	o->others = v;
	v[o->n_others++] = (other_file){copy, kind == PN_WALK_UNREADABLE ? err : 0};
}

static void *walker(void *arg)
{
	pn_orphans *o = arg;
	o->walk_rc = pn_walk_root(o->root, false, &o->files, on_other, o);
	if (o->walk_rc == 0)
		pn_walk_sort_by_path(&o->files);
	return NULL;
}

int pn_orphans_start(const char *root, pn_orphans **ret)
{
	pn_orphans *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->root = root;
	int rc = pthread_create(&o->thread, NULL, walker, o);
	if (rc != 0) {
		free(o);
		return -rc;
	}
	o->started = true;
	*ret = o;
	return 0;
}

int pn_orphans_named(pn_orphans *o, const char *rel)
{
	/* a row at another name names no file the walk keeps */
	return pn_storage_rel_path_valid(rel) ? pn_walk_add(&o->rows, rel, 0) : 0;
}

static void join(pn_orphans *o)
{
	if (o->started && !o->joined)
		pthread_join(o->thread, NULL);
	o->joined = true;
}

int pn_orphans_finish(pn_orphans *o)
{
	join(o);
	if (o->walk_rc < 0)
		return o->walk_rc;
	/* The rows come in path order ("C" collation: byte order) already;
	 * sorting them again costs little and makes the merge not depend on
	 * it. */
	pn_walk_sort_by_path(&o->rows);
	return o->others_short ? -ENOMEM : 0;
}

int pn_orphans_next(pn_orphans *o, const char **ret_rel, int *ret_err)
{
	if (o->next_other < o->n_others) {
		const other_file *f = &o->others[o->next_other++];
		*ret_rel = f->rel;
		*ret_err = f->err;
		return 1;
	}
	/* the files and the rows, both in path order, side by side */
	while (o->next_file < o->files.n) {
		const pn_walk_entry *f = &o->files.v[o->next_file];
		while (o->next_row < o->rows.n && pn_walk_cmp_path(&o->rows.v[o->next_row], f) < 0)
			o->next_row++;
		o->next_file++;
		if (o->next_row < o->rows.n && pn_walk_cmp_path(&o->rows.v[o->next_row], f) == 0)
			continue;
		pn_walk_rel(f, o->rel);
		*ret_rel = o->rel;
		*ret_err = 0;
		return 1;
	}
	return 0;
}

void pn_orphans_free(pn_orphans *o)
{
	if (!o)
		return;
	join(o);
	for (size_t i = 0; i < o->n_others; i++)
		free(o->others[i].rel);
	free(o->others);
	pn_walk_free(&o->files);
	pn_walk_free(&o->rows);
	free(o);
}
