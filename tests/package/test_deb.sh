#!/usr/bin/env bash
# The Debian package end to end (scripts/dev.sh package), as root on a
# Debian 12 machine that may be changed and put back:
#  1. dpkg-buildpackage -us -uc -b on a copy of the work tree (tracked and
#     new files), in a temporary folder;
#  2. dpkg -c: the files the package must hold, with their modes;
#  3. lintian: no error (warnings are printed);
#  4. apt-get install ./pacsnode_*.deb (only when no pacsnode package is
#     installed and /var/lib/pacsnode does not exist, so that the end can
#     put everything back), then: the user, the modes of the configuration
#     and of /var/lib/pacsnode, the man pages, the installed unit's score;
#  5. the installed binary on the installed configuration (pointed at a
#     private PostgreSQL cluster and a free port), as the user pacsnode, in
#     the installed unit's sandbox as far as it can be set up without
#     systemd as PID 1 (under systemd the unit itself would run): its mount
#     namespace (unit_mounts.sh: read-only system but /var/lib/pacsnode,
#     private /tmp and /dev, no home, /proc of its own processes) and its
#     system call filter (unit_seccomp.py); echoscu and storescu as the
#     example's peer CT1, pacsnodectl status;
#  6. apt-get purge, and what the package left (the kept /var/lib/pacsnode,
#     a user made for the test) removed: the machine as it was.
# PN_DEB_KEEP=1 keeps the temporary folder. Exit status 0 when all passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
pgbin=/usr/lib/postgresql/15/bin
say() { printf '==> %s\n' "$*" >&2; }
fail() {
	printf 'FAILED: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs the package)"
work=$(mktemp -d /tmp/pacsnode-deb.XXXXXX)
chmod 755 "$work"
installed=0 made_user=0 node_pid="" pg_started=0
# the cluster's socket and the filter's script where the sandbox's private
# /tmp and hidden homes do not hide them
run=$(mktemp -d /run/pacsnode-deb.XXXXXX)
chmod 755 "$run"

cleanup() {
	local rc=$?
	set +e
	if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
		kill -TERM "$node_pid"
		wait "$node_pid" 2>/dev/null
	fi
	if [ $pg_started = 1 ]; then
		runuser -u pacsnode -- "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1
	fi
	rm -rf "$run"
	if [ $installed = 1 ]; then
		say "purging the package"
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 purge -y -q pacsnode >"$work/purge.log" 2>&1 ||
			{ cat "$work/purge.log"; rc=1; }
		# kept by the package at purge on purpose (the archive): ours to remove
		rm -rf /var/lib/pacsnode
		[ ! -e /etc/pacsnode ] || { echo "left behind after purge: /etc/pacsnode" >&2; rc=1; }
		if [ $made_user = 1 ]; then
			deluser --quiet --system pacsnode >/dev/null 2>&1
			getent group pacsnode >/dev/null && delgroup --quiet --system pacsnode >/dev/null 2>&1
		fi
	fi
	if [ "${PN_DEB_KEEP:-}" = 1 ] || [ $rc != 0 ]; then
		echo "kept $work" >&2
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT

# 1. build, on a copy: dpkg-buildpackage writes beside the source folder
say "copying the work tree to $work/src"
mkdir "$work/src"
git -C "$top" ls-files -co --exclude-standard -z | grep -zv '^tests/js/node_modules/' |
	(cd "$top" && tar --null -T - -cf -) | tar -C "$work/src" -xf -
say "dpkg-buildpackage -us -uc -b (log: $work/build.log)"
start=$(date +%s)
(cd "$work/src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
	{ tail -n 40 "$work/build.log"; fail "dpkg-buildpackage"; }
deb=$(ls "$work"/pacsnode_*.deb | grep -v dbgsym)
say "built $(basename "$deb") in $(($(date +%s) - start)) s"

# 2. the file list
dpkg -c "$deb" >"$work/contents"
want=(
	"-rwxr-xr-x root/root ./usr/sbin/pacsnode"
	"-rwxr-xr-x root/root ./usr/sbin/pacsnodectl"
	"-rw-r--r-- root/root ./etc/pacsnode/pacsnode.conf"
	"-rw-r--r-- root/root ./lib/systemd/system/pacsnode.service"
	"-rw-r--r-- root/root ./usr/share/man/man8/pacsnode.8.gz"
	"-rw-r--r-- root/root ./usr/share/man/man8/pacsnodectl.8.gz"
	"-rw-r--r-- root/root ./usr/share/man/man5/pacsnode.conf.5.gz"
	"-rw-r--r-- root/root ./usr/share/doc/pacsnode/README.md"
	"-rw-r--r-- root/root ./usr/share/doc/pacsnode/operations.md"
	"-rw-r--r-- root/root ./usr/share/doc/pacsnode/copyright"
)
for w in "${want[@]}"; do
	mode=${w%% *} rest=${w#* } owner=${rest%% *} path=${rest#* }
	awk -v m="$mode" -v o="$owner" -v p="$path" '$1 == m && $2 == o && $6 == p { f = 1 } END { exit !f }' \
		"$work/contents" || { cat "$work/contents"; fail "dpkg -c: no $mode $owner $path"; }
done
n=$(grep -vc '/$' "$work/contents")
say "dpkg -c: the ${#want[@]} expected files among $n"
dpkg-deb -f "$deb" Depends | grep -q 'libdcmtk17' || fail "Depends without dcmtk's library: $(dpkg-deb -f "$deb" Depends)"
dpkg-deb -f "$deb" Depends | grep -q 'adduser' || fail "Depends without adduser"
grep -qx '/etc/pacsnode/pacsnode.conf' <(dpkg-deb -e "$deb" "$work/control" && cat "$work/control/conffiles") ||
	fail "pacsnode.conf is not a conffile"

# 3. lintian
say "lintian"
lintian --fail-on error -I --pedantic "$work"/pacsnode_*.changes >"$work/lintian.log" 2>&1 ||
	{ cat "$work/lintian.log"; fail "lintian found errors"; }
if grep -qE '^[WIP]:' "$work/lintian.log"; then
	echo "lintian: no errors; warnings and notes:" >&2
	grep -E '^[WIP]:' "$work/lintian.log" | sort -u >&2
fi

# 4. install; one such test at a time on a machine (other work trees),
# and apt waits for another apt rather than failing
mkdir -p /run/lock
exec 9>/run/lock/pacsnode-deb-test.lock
flock 9
apt_wait=(-o DPkg::Lock::Timeout=300)
if dpkg-query -W -f='${Status}' pacsnode 2>/dev/null | grep -q 'install ok installed' || [ -e /var/lib/pacsnode ]; then
	say "a pacsnode package or /var/lib/pacsnode is already here: not installing (the machine could not be put back)"
	exit 0
fi
getent passwd pacsnode >/dev/null || made_user=1
say "apt-get install $(basename "$deb")"
installed=1
DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -q --no-install-recommends "$deb" >"$work/install.log" 2>&1 ||
	{ cat "$work/install.log"; fail "apt-get install"; }
id pacsnode >/dev/null || fail "no user pacsnode"
[ "$(stat -c '%U:%G %a' /etc/pacsnode/pacsnode.conf)" = "root:pacsnode 640" ] ||
	fail "pacsnode.conf is $(stat -c '%U:%G %a' /etc/pacsnode/pacsnode.conf), not root:pacsnode 640"
[ "$(stat -c '%U:%G %a' /var/lib/pacsnode)" = "pacsnode:pacsnode 750" ] ||
	fail "/var/lib/pacsnode is $(stat -c '%U:%G %a' /var/lib/pacsnode)"
for page in pacsnode.8 pacsnodectl.8 pacsnode.conf.5; do
	man -w "${page%.*}" >/dev/null 2>&1 || man -w "${page##*.}" "${page%.*}" >/dev/null || fail "no man page $page"
done
"$here/check_unit.sh" "$(command -v systemd-analyze)" /lib/systemd/system/pacsnode.service 2.5 >&2 ||
	fail "installed unit"
/usr/sbin/pacsnode -V >/dev/null || fail "pacsnode -V"
out=$(systemd-analyze verify --man=no /lib/systemd/system/pacsnode.service 2>&1) && [ -z "$out" ] ||
	fail "systemd-analyze verify: $out"

# 5. the installed node on the installed configuration
say "a private PostgreSQL cluster in $work/pg"
install -d -o pacsnode -m 700 "$work/pg"
runuser -u pacsnode -- "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >/dev/null
install -d -o pacsnode -m 755 "$run/pg"
runuser -u pacsnode -- "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w -t 60 \
	-o "-c listen_addresses='' -k $run/pg -c fsync=off" start >/dev/null
pg_started=1
psql -h "$run/pg" -U postgres -qc "CREATE DATABASE pacsnode"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i -e "s|^conninfo = .*|conninfo = host=$run/pg user=postgres dbname=pacsnode|" \
	-e "0,/^port = 11112/s//port = $port/" -e "0,/^bind = 0.0.0.0/s//bind = 127.0.0.1/" \
	-e "/^\[http\]/,/^\[/s/^port = 8042/port = 0/" /etc/pacsnode/pacsnode.conf
runuser -u pacsnode -- /usr/sbin/pacsnode -t -c /etc/pacsnode/pacsnode.conf >/dev/null 2>&1 ||
	fail "pacsnode -t on the installed configuration: $(runuser -u pacsnode -- /usr/sbin/pacsnode -t -c /etc/pacsnode/pacsnode.conf 2>&1)"
say "starting /usr/sbin/pacsnode in the installed unit's mounts and system call filter, port $port"
cp "$here/unit_seccomp.py" "$run/"
# each of them execs the next (runuser would stay as the parent and end
# with the signal), so $! is the node's PID
"$here/unit_mounts.sh" /var/lib/pacsnode -- setpriv --reuid=pacsnode --regid=pacsnode --init-groups \
	/usr/bin/python3 "$run/unit_seccomp.py" /lib/systemd/system/pacsnode.service \
	/usr/sbin/pacsnode -c /etc/pacsnode/pacsnode.conf 2>"$work/node.log" &
node_pid=$!
for _ in $(seq 100); do
	echoscu -to 2 -aet CT_SCANNER_1 -aec PACSNODE 127.0.0.1 "$port" >/dev/null 2>&1 && break
	kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log"; fail "the node exited"; }
	sleep 0.2
done
echoscu -aet CT_SCANNER_1 -aec PACSNODE 127.0.0.1 "$port" || { cat "$work/node.log"; fail "C-ECHO"; }
PYTHONPATH="$top/tests/corpus" /usr/bin/python3 -c \
	"import gen_corpus, sys; gen_corpus.make_instance(sys.argv[1], name='deb', patient_id='PN-DEB')" "$work/one.dcm"
TCP_NODELAY=1 storescu -aet CT_SCANNER_1 -aec PACSNODE 127.0.0.1 "$port" "$work/one.dcm" ||
	{ cat "$work/node.log"; fail "C-STORE"; }
runuser -u pacsnode -- /usr/sbin/pacsnodectl status >"$work/status.txt" 2>&1 ||
	{ cat "$work/status.txt"; fail "pacsnodectl status"; }
grep -q ' 1 instances' "$work/status.txt" || { cat "$work/status.txt"; fail "status does not count 1 instance"; }
[ -n "$(find /var/lib/pacsnode/storage -type f -not -path '*/tmp/*' | head -1)" ] || fail "nothing under /var/lib/pacsnode/storage"
kill -TERM "$node_pid"
wait "$node_pid" || { cat "$work/node.log"; fail "the node's exit status after SIGTERM"; }
node_pid=""
grep -q 'Bad system call\|signal 31' "$work/node.log" && { cat "$work/node.log"; fail "a call outside the filter"; }
say "the installed node stored an instance and stopped cleanly"
