#!/usr/bin/env bash
# The README's two commands, on a fresh Debian 12 machine as root:
#   scripts/dev.sh run    install what is missing, build, start a private
#                         PostgreSQL under .dev/, run pacsnode in the foreground
#   scripts/dev.sh test   the same set-up, then every test suite
#   scripts/dev.sh package  only the Debian package: build, check, install,
#                         run, purge (tests/package/test_deb.sh)
# Both can be run again: each step checks what is already there.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dev="$top/.dev"
pgbin=/usr/lib/postgresql/15/bin
run_user=pacsnode # PostgreSQL refuses to run as root
sock="$dev/pgsock"
pgdata="$dev/pgdata"

packages=(build-essential cmake pkg-config git libdcmtk-dev dcmtk libpq-dev postgresql-15 libssl-dev
	libinih-dev libcmocka-dev libsystemd-dev python3 python3-pytest python3-pytest-xdist
	python3-pydicom python3-psycopg2 python3-xxhash libxxhash-dev zlib1g-dev acl clang-format clang
	libclang-rt-14-dev openssl stunnel4 libxml2-utils libmicrohttpd-dev libcrypt-dev whois libpng-dev libjpeg-dev chromium python3-prometheus-client
	debhelper lintian python3-seccomp haproxy)

say() { printf '==> %s\n' "$*" >&2; }

install_missing() {
	local missing=()
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		say "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q >/dev/null
		apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

ensure_user() {
	id "$run_user" >/dev/null 2>&1 ||
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$run_user"
}

# PostgreSQL runs as $run_user but its data lives under the checkout, which
# may sit below a folder only root can enter (/root, a mktemp -d folder):
# let that one user through, and nobody else.
grant_traverse() {
	local d="$1"
	while [ "$d" != / ]; do
		if ! runuser -u "$run_user" -- test -x "$d"; then
			setfacl -m "u:$run_user:x" "$d" 2>/dev/null || chmod o+x "$d"
			say "allowed user $run_user to traverse $d"
		fi
		d=$(dirname "$d")
	done
}

build() {
	local dir="$1"
	shift
	say "building in ${dir#"$top"/}"
	cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
	cmake --build "$dir" -j"$(nproc)" >/dev/null
}

pg_running() { runuser -u "$run_user" -- "$pgbin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; }

start_postgres() {
	mkdir -p "$dev"
	grant_traverse "$dev"
	if [ ! -f "$pgdata/PG_VERSION" ]; then
		say "initialising a private PostgreSQL cluster in ${pgdata#"$top"/}"
		rm -rf "$pgdata"
		install -d -o "$run_user" -m 700 "$pgdata"
		runuser -u "$run_user" -- "$pgbin/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 \
			--locale=C.UTF-8 >/dev/null
	fi
	install -d -o "$run_user" -m 700 "$sock"
	if ! pg_running; then
		say "starting PostgreSQL (socket in ${sock#"$top"/})"
		runuser -u "$run_user" -- "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/postgresql.log" -w -t 60 \
			-o "-k $sock -c listen_addresses='' -p 5432" start >/dev/null
	fi
	if ! psql -h "$sock" -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname='pacsnode'" |
		grep -q 1; then
		psql -h "$sock" -U postgres -d postgres -qc "CREATE DATABASE pacsnode"
	fi
}

stop_postgres() {
	if pg_running; then
		say "stopping PostgreSQL"
		runuser -u "$run_user" -- "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null || true
	fi
}

setup() {
	[ "$(id -u)" = 0 ] || {
		echo "run this as root (it installs packages and creates the user $run_user)" >&2
		exit 1
	}
	install_missing
	ensure_user
	start_postgres
}

run() {
	setup
	build "$top/build" -DBUILD_TESTING=OFF
	mkdir -p "$dev/storage"
	cat >"$dev/pacsnode.conf" <<-EOF
		; written by scripts/dev.sh run: a development node, everything else embedded defaults
		[storage]
		root = $dev/storage
		[database]
		conninfo = host=$sock user=postgres dbname=pacsnode
		[http]
		; the web on this machine only, without logins (development)
		port = 8042
		bind = 127.0.0.1
	EOF
	trap stop_postgres EXIT
	say "starting pacsnode: DICOM on port 11112, the web at http://127.0.0.1:8042/ (open, no login:" \
		"development only); Ctrl-C stops it; psql: psql -h $sock -U postgres pacsnode"
	"$top/build/scp/pacsnode" -c "$dev/pacsnode.conf" || true
}

# One round of every suite against one build.
run_suite() {
	local build_dir="$1"
	shift
	build "$build_dir" -DBUILD_TESTING=ON "$@"
	grant_traverse "$build_dir"
	local status=0
	say "unit and database tests (ctest, ${build_dir#"$top"/})"
	PN_TEST_PG_CONNINFO="host=$sock user=postgres dbname=postgres" \
		ctest --test-dir "$build_dir" --output-on-failure -j"$(nproc)" || status=1
	say "integration tests (pytest, real PostgreSQL, real dcmtk peers, ${build_dir#"$top"/})"
	PACSNODE_BIN="$build_dir/scp/pacsnode" /usr/bin/python3 -m pytest -n "$(nproc)" -q -p no:cacheprovider \
		"$top/tests/integration" || status=1
	return $status
}

# The libFuzzer targets (tests/fuzz/), a short run each from the seed corpus.
run_fuzz() {
	local dir="$top/build-fuzz" status=0 t
	say "fuzzing the parsers of hostile bytes (${PN_FUZZ_SECONDS:-15} s per target)"
	CC=clang CXX=clang++ cmake -S "$top" -B "$dir" -DPN_FUZZ=ON >/dev/null
	cmake --build "$dir" -j"$(nproc)" >/dev/null
	for t in charset paths match part10 audit config users multipart json; do
		local seeds="$dir/corpus-$t"
		mkdir -p "$seeds"
		cp -n "$top/tests/fuzz/corpus/$t/"* "$seeds/" 2>/dev/null || true
		if "$dir/tests/fuzz/fuzz_$t" -max_total_time="${PN_FUZZ_SECONDS:-15}" -max_len=512 \
			-artifact_prefix="$dir/" "$seeds" >"$dir/fuzz_$t.log" 2>&1; then
			echo "fuzz_$t: $(grep -o 'Done [0-9]* runs' "$dir/fuzz_$t.log"), no failure"
		else
			echo "fuzz_$t FAILED:"
			tail -n 30 "$dir/fuzz_$t.log"
			status=1
		fi
	done
	return $status
}

# The JavaScript test clients (npm dicomweb-client, dcmjs-dimse), from the
# lock file.
# The machine's own Node.js and npm when there are some (Debian's npm
# would conflict with them), else Debian's.
js_clients() {
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		say "installing nodejs and npm"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
	fi
	if [ ! -d "$top/tests/js/node_modules/dicomweb-client" ] || [ ! -d "$top/tests/js/node_modules/dcmjs-dimse" ]; then
		say "installing the JavaScript test clients (tests/js)"
		(cd "$top/tests/js" && npm ci --no-audit --no-fund >/dev/null)
	fi
}

# Every suite twice: a normal build, then AddressSanitizer + UBSan
# (PN_SANITIZE=0 skips the second round, PN_SANITIZE=1 runs only it).
run_tests() {
	setup
	js_clients
	trap stop_postgres EXIT
	local status=0
	say "static checks"
	"$top/tests/check_layout.sh" || status=1
	if [ "${PN_PACKAGE:-}" != 0 ]; then
		run_package || status=1
	fi
	if [ "${PN_FUZZ:-}" != 0 ]; then
		run_fuzz || status=1
	fi
	if [ "${PN_SANITIZE:-}" != 1 ]; then
		run_suite "$top/build" || status=1
	fi
	if [ "${PN_SANITIZE:-}" != 0 ]; then
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
			run_suite "$top/build-asan" -DPN_SANITIZE=ON || status=1
	fi
	if [ $status = 0 ]; then say "all suites passed"; else say "some suites FAILED"; fi
	return $status
}

# The .deb from a copy of the work tree, dpkg -c, lintian, apt install,
# the installed node, apt purge (about 30 s; also a step of run_tests).
run_package() {
	[ "$(id -u)" = 0 ] || {
		echo "run this as root (it installs and purges the package)" >&2
		exit 1
	}
	install_missing
	say "the Debian package (tests/package/test_deb.sh)"
	"$top/tests/package/test_deb.sh"
}

case "${1:-}" in
run) run ;;
test) run_tests ;;
package) run_package ;;
*)
	echo "usage: $0 run|test|package" >&2
	exit 2
	;;
esac
