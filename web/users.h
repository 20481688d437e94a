/* The web's users file: one "name:crypt-hash:role" line each (roles read
 * and write), hashes from crypt(3), yescrypt preferred (`mkpasswd -m
 * yescrypt`). Read again when it changes, so a user is added or removed
 * without a restart. */
#ifndef PN_WEB_USERS_H
#define PN_WEB_USERS_H

#include <stddef.h>

typedef enum { PN_ROLE_NONE = 0, PN_ROLE_READ, PN_ROLE_WRITE } pn_web_role;

typedef struct pn_web_users pn_web_users;

/* Reads `path`: 0, or a negative errno with one line (the file, the line
 * and what is wrong) in err. */
int pn_web_users_load(const char *path, pn_web_users **ret_users, char *err, size_t errlen);
void pn_web_users_free(pn_web_users *users); /* NULL is a no-op */

/* The role of `name` if `password` is right, else PN_ROLE_NONE. Re-reads
 * the file first if it changed (a broken new file keeps the last good one,
 * logged once). A verified password is remembered (as a keyed digest) so a
 * client's next requests cost no hash. */
pn_web_role pn_web_users_check(pn_web_users *users, const char *name, const char *password);

/* A yescrypt hash of `password` with a fresh salt (libxcrypt's default
 * cost), for the users file. 0, -EINVAL, -ENOSPC, -ENOMEM. */
int pn_web_users_hash(const char *password, char *out, size_t outlen);

/* Sets user `name`'s line in the file at `path` (created if missing) to
 * `hash` and `role`, or removes it (hash NULL; -ENOENT when it is not
 * there). The file is replaced whole by a rename, its mode and owner kept.
 * 0 or a negative errno with one line in err. */
int pn_web_users_set(const char *path, const char *name, const char *hash, pn_web_role role, char *err, size_t errlen);

/* Parses one file's text (for the fuzz target and the loader). */
int pn_web_users_parse(const char *text, size_t len, const char *source, pn_web_users **ret_users, char *err,
                       size_t errlen);

#endif
