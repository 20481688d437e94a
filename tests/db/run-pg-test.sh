#!/bin/sh
# Runs a command with PN_TEST_PG_CONNINFO pointing at a private, throw-away
# PostgreSQL server: its own data directory, a Unix socket in that directory,
# no TCP. The directory (data and server log) is removed when the command
# succeeds and kept, with its path printed, when it fails.
#
#   tests/db/run-pg-test.sh build/tests/db/test_db_index
#
# When PN_TEST_PG_CONNINFO is already set, the command runs against that
# server instead. PostgreSQL refuses to run as root: as root the server runs
# as PN_TEST_PG_USER (default: nobody). PN_TEST_PG_BINDIR overrides where
# initdb and pg_ctl are looked for.
set -eu

if [ $# -eq 0 ]; then
	echo "usage: $0 COMMAND [ARG...]" >&2
	exit 2
fi
if [ -n "${PN_TEST_PG_CONNINFO:-}" ]; then
	exec "$@"
fi

bindir=${PN_TEST_PG_BINDIR:-}
if [ -z "$bindir" ]; then
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/initdb" ]; then
			bindir=$d
			break
		fi
	done
fi
if [ -z "$bindir" ] && command -v initdb >/dev/null 2>&1; then
	bindir=$(dirname "$(command -v initdb)")
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
	echo "$0: could not find initdb (install postgresql, or set PN_TEST_PG_BINDIR)" >&2
	exit 2
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/pn-pg-XXXXXX")
as_server() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
	user=${PN_TEST_PG_USER:-nobody}
	chown "$user" "$dir"
	as_server() { runuser -u "$user" -- "$@"; }
fi

stop_server() {
	as_server "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# fsync is off: these tests check behaviour, not durability.
if ! as_server "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C \
	>"$dir/initdb.log" 2>&1; then
	echo "$0: initdb failed, see $dir/initdb.log" >&2
	exit 2
fi
if ! as_server "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
	-o "-k $dir -c listen_addresses= -p 5432 -c fsync=off -c max_connections=50" \
	start >/dev/null; then
	echo "$0: the server did not start, see $dir/server.log" >&2
	exit 2
fi
trap stop_server EXIT INT TERM

status=0
PN_TEST_PG_CONNINFO="host=$dir port=5432 user=postgres dbname=postgres" "$@" || status=$?

stop_server
trap - EXIT INT TERM
if [ "$status" -eq 0 ]; then
	rm -rf "$dir"
else
	echo "$0: exit status $status; server data and log kept in $dir" >&2
fi
exit "$status"
