/* The SQL migrations compiled into the binary (generated from
 * db/migrations/NNN_name.sql by db/cmake/embed_migrations.cmake).
 * Internal to db/. */
#ifndef PN_MIGRATIONS_H
#define PN_MIGRATIONS_H

#include <stddef.h>

typedef struct {
	int version;      /* NNN: 1, 2, 3, ... without gaps */
	const char *name; /* "NNN_name", stored in schema_version.name */
	const char *sql;  /* NUL-terminated; statements without BEGIN/COMMIT */
	size_t len;
} pn_migration;

/* In ascending version order. */
extern const pn_migration pn_migrations[];
extern const size_t pn_migrations_count;

#endif
