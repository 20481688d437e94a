/* The db/ tests' surroundings (testenv.h). */
#include "testenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testdb.h"

int testenv_open(testenv *e, const char *prog)
{
	char err[256] = "";
	e->admin = getenv("PN_TEST_PG_CONNINFO");
	if (!e->admin || !*e->admin) {
		fprintf(stderr,
		        "%s: PN_TEST_PG_CONNINFO is not set: it must be a libpq conninfo for a role that may "
		        "CREATE DATABASE (tests/db/run-pg-test.sh starts a private server and sets it)\n",
		        prog);
		return 2;
	}
	e->conninfo = testdb_create(e->admin, e->dbname, sizeof e->dbname);
	if (!e->conninfo)
		return 2;
	if (pn_db_connect(e->conninfo, &e->db, err, sizeof err) != 0) {
		fprintf(stderr, "%s: could not connect to \"%s\": %s\n", prog, e->dbname, err);
		return 2;
	}
	e->check = PQconnectdb(e->conninfo);
	if (PQstatus(e->check) != CONNECTION_OK) {
		fprintf(stderr, "%s: %s", prog, PQerrorMessage(e->check));
		return 2;
	}
	return 0;
}

int testenv_close(testenv *e, const char *prog, int failed)
{
	PQfinish(e->check);
	pn_db_free(e->db);
	if (e->conninfo) {
		if (getenv("PN_TEST_KEEP_DB"))
			fprintf(stderr, "%s: kept database \"%s\"\n", prog, e->dbname);
		else if (testdb_drop(e->admin, e->dbname) != 0 && !failed)
			failed = 1;
	}
	free(e->conninfo);
	return failed ? 1 : 0;
}

int run_forked(const char *conninfo, int n, int (*fn)(pn_db *, int, void *), void *arg)
{
	int ready[2], go[2], ok = 0;
	pid_t pids[FORK_MAX];
	char byte;

	if (n > FORK_MAX || pipe(ready) < 0 || pipe(go) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			return -1;
		if (pids[i] == 0) {
			pn_db *mine = NULL;
			char err[256];
			int code;

			/* Never touch the parent's connections: no PQfinish. */
			close(ready[0]);
			close(go[1]);
			if (pn_db_connect(conninfo, &mine, err, sizeof err) < 0) {
				fprintf(stderr, "worker %d: %s\n", i, err);
				_exit(100);
			}
			if (write(ready[1], "r", 1) != 1)
				_exit(101);
			close(ready[1]);
			if (read(go[0], &byte, 1) != 0)
				_exit(102);
			code = fn(mine, i, arg);
			pn_db_free(mine);
			_exit(code);
		}
	}
	close(ready[1]);
	close(go[0]);
	for (int got = 0; got < n && read(ready[0], &byte, 1) == 1;)
		got++;
	close(go[1]); /* release them all */
	close(ready[0]);
	for (int i = 0; i < n; i++) {
		int status;

		if (waitpid(pids[i], &status, 0) != pids[i])
			return -1;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			ok++;
		else
			fprintf(stderr, "worker %d: status 0x%x\n", i, status);
	}
	return ok;
}
