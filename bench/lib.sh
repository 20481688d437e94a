# Shared by bench/*/run.sh, sourced at the start: the set-up every
# benchmark does the same way (packages, user, network namespace, the
# private PostgreSQL, starting and stopping servers by their PIDs) and the
# retiring of what runs wrote. Functions read the script's settings (WORK,
# RUN_USER, SOCK, ...) when they are called.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_host_setup() {           # bench_host_setup PKG...: as root; packages and $RUN_USER
    [ "$(id -u)" = 0 ] || die "run as root (it installs packages and runs servers as user $RUN_USER)"
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Keep the packages' own services (orthanc on all interfaces, the
        # main PostgreSQL cluster) from being started by the installation:
        # a temporary policy-rc.d, unless the machine already has one.
        local own_policy=0 inst_rc=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } || inst_rc=$?
        [ "$own_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
        [ "$inst_rc" = 0 ] || die "apt-get failed (exit $inst_rc)"
    fi
    if ! id -u "$RUN_USER" >/dev/null 2>&1; then
        log "creating system user $RUN_USER"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$RUN_USER"
    fi
}

# Re-runs the script (bench_netns_enter SCRIPT ARGS...) in a fresh network
# namespace whose only interface is lo, so storescp and Orthanc (which
# cannot be bound to one address) are reachable on 127.0.0.1 only. Returns
# only when that is not possible (USE_NETNS=0 then) or not wanted.
bench_netns_enter() {
    [ "$USE_NETNS" = 1 ] || return 0
    if unshare --net true 2>/dev/null; then
        exec unshare --net -- bash "$@" --_inner
    fi
    log "WARNING: cannot create a network namespace; storescp and Orthanc will listen on all interfaces (they have no bind option)"
    USE_NETNS=0
}

bench_inner_setup() {          # bench_inner_setup NAME: inside; sets PG_BIN, ORTHANC_PLUGIN, WORK
    if [ "$USE_NETNS" = 1 ]; then
        ip link set lo up      # a new namespace starts with lo down
        [ "$(ip -o link show | wc -l)" = 1 ] || die "expected a private network namespace with only lo"
    fi
    export TCP_NODELAY=1       # Debian's dcmtk leaves Nagle on without it (~40 ms per C-STORE)
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    ORTHANC_PLUGIN=$(dpkg -L orthanc-postgresql | grep -E '/libOrthancPostgreSQLIndex\.so(\.[0-9.]+)?$' | sort | head -n1)
    [ -n "$ORTHANC_PLUGIN" ] || die "libOrthancPostgreSQLIndex.so not found in package orthanc-postgresql"
    mkdir -p "$WORK_BASE"
    WORK=$(mktemp -d "$WORK_BASE/pacsnode-bench-$1.XXXXXX")
    chmod 755 "$WORK"
    chown "$RUN_USER:" "$WORK"
    SOCK=$WORK/pgsock
    PGDATA_DIR=$WORK/pgdata
    PGPORT=5432                # only names the socket file in $SOCK
    SERVER_PIDFILES=()         # pid files of the servers we started
    PG_STARTED=0
}

stop_pidfile() {               # stop_pidfile FILE: TERM, wait, KILL; only that PID
    local f=$1 pid i
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "PID $pid did not stop after 30 s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

start_server() {               # start_server NAME LOGFILE CMD...: as $RUN_USER, PID in $WORK/NAME.pid
    local name=$1 logf=$2; shift 2
    local pidf=$WORK/$name.pid
    rm -f "$pidf"
    (cd "$WORK" && exec runuser -u "$RUN_USER" -- sh -c 'echo $$ > "$0"; exec "$@"' "$pidf" "$@") >"$logf" 2>&1 &
    SERVER_PIDFILES+=("$pidf")
    local i
    for i in $(seq 1 50); do [ -s "$pidf" ] && return 0; sleep 0.1; done
    die "$name did not start (see $logf)"
}

# ECHO_OPTS: more echoscu options for the next wait_echo (e.g. "${TLS_SCU[@]}"
# for a TLS port); empty by default.
ECHO_OPTS=()
wait_echo() {                  # wait_echo NAME PORT CALLED_AE LOGFILE: 1 and START_ERROR if no answer
    local name=$1 port=$2 aec=$3 logf=$4 i pid
    START_ERROR=""
    pid=$(cat "$WORK/$name.pid")
    for i in $(seq 1 300); do
        if echoscu -q -to 2 -ta 2 -aet "${SCU_AE:-BENCHSCU}" -aec "$aec" ${ECHO_OPTS[@]+"${ECHO_OPTS[@]}"} \
            127.0.0.1 "$port" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            START_ERROR="exited during start-up: $(tail -n1 "$logf")"
            break
        fi
        sleep 0.2
    done
    [ -n "$START_ERROR" ] || START_ERROR="no C-ECHO answer on port $port within 60 s"
    tail -n 20 "$logf" >&2
    log "$name $START_ERROR (log: $logf)"
    return 1
}

# ----- a shared machine (--wait-quiet) --------------------------------------
# The CPU seconds (user, nice, system, irq, softirq, steal) all CPUs of the
# machine have been busy since boot, from /proc/stat.
machine_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}

# wait_quiet: with WAIT_QUIET=1 (--wait-quiet), while nothing of ours runs,
# sample the machine for 3 s and go on once it is under 0.1 CPU busy (at
# most 15 minutes). QUIET_WAITED: the seconds waited in all.
QUIET_WAITED=0
wait_quiet() {
    [ "${WAIT_QUIET:-0}" = 1 ] || return 0
    local i a b busy waited=0
    for i in $(seq 1 300); do
        a=$(machine_cpu); sleep 3; b=$(machine_cpu)
        busy=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", (b - a) / 3 }')
        if awk -v x="$busy" 'BEGIN { exit !(x < 0.10) }'; then
            [ $waited = 0 ] || log "the machine is quiet again after $waited s"
            QUIET_WAITED=$((QUIET_WAITED + waited))
            return 0
        fi
        [ $waited != 0 ] || log "other work on the machine ($busy CPUs busy): waiting for it to stop (--wait-quiet)"
        waited=$((waited + 3))
    done
    QUIET_WAITED=$((QUIET_WAITED + waited))
    log "WARNING: the machine did not become quiet within 15 minutes; measuring anyway"
}

# ----- TLS (bench/*/run.sh --tls) -------------------------------------------
# tls_make_certs DIR: a throw-away PKI made with the openssl command line, all
# P-256 ECDSA (as README.md's "TLS and peers"): ca.pem; node.pem/node.key
# (SAN IP:127.0.0.1 and DNS:localhost, serverAuth + clientAuth: pacsnode's and
# the TLS storescp's certificate); modality.pem/modality.key (clientAuth: the
# senders'). The keys belong to $RUN_USER, mode 0600 (the servers run as that
# user; the senders run as root). Sets TLS_DIR and TLS_SCU, the dcmtk client
# options (+tls KEY CERT +cf CA).
tls_make_certs() {
    local d=$1 n
    TLS_DIR=$d
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -subj "/O=pacsnode bench/CN=Bench CA" -keyout ca.key -out ca.pem
        printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'keyUsage = critical, digitalSignature' \
            'extendedKeyUsage = serverAuth, clientAuth' 'subjectAltName = IP:127.0.0.1, DNS:localhost' > node.ext
        printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'keyUsage = critical, digitalSignature' \
            'extendedKeyUsage = clientAuth' > modality.ext
        for n in node modality; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/O=pacsnode bench/CN=$n" -keyout "$n.key" -out "$n.csr"
            openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
                -extfile "$n.ext" -out "$n.pem"
        done
        openssl verify -CAfile ca.pem node.pem modality.pem
    ) > "$d.log" 2>&1 || { cat "$d.log" >&2; die "could not make the TLS certificates (see $d.log)"; }
    rm -f "$d/ca.key"
    chown -R "$RUN_USER:" "$d"
    chmod 755 "$d"
    chmod 600 "$d"/*.key
    TLS_SCU=(+tls "$d/modality.key" "$d/modality.pem" +cf "$d/ca.pem")
}

# tls_conf PORT: a pacsnode [tls] section for PORT with tls_make_certs'
# node certificate (README.md's three lines; client certificates required,
# the default).
tls_conf() {
    printf '\n[tls]\nport = %s\ncertificate = %s\nprivate_key = %s\nca = %s\n' \
        "$1" "$TLS_DIR/node.pem" "$TLS_DIR/node.key" "$TLS_DIR/ca.pem"
}

# tls_probe PORT CALLED_AE: "protocol, cipher suite" that dcmtk's client (the
# TLS stack storescu and findscu use, same default profile) negotiates with
# the server on PORT, from echoscu -d; "?" when it cannot tell.
tls_probe() {
    echoscu -d -to 5 -ta 5 -aet "${SCU_AE:-BENCHSCU}" -aec "$2" "${TLS_SCU[@]}" 127.0.0.1 "$1" 2>&1 \
        | awk '/^D: +Protocol +:/ { sub(/^D: +Protocol +: */, ""); p = $0 }
               /^D: +Ciphersuite +:/ { sub(/^D: +Ciphersuite +: */, ""); sub(/, encryption.*/, ""); c = $0 }
               END { if (p == "") print "?"; else print p ", " c }'
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

psql_q() {                     # psql_q DB SQL -> output, unaligned
    PGOPTIONS='-c client_min_messages=warning' psql -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PGPORT" -U postgres \
        -d "$1" -Atqc "$2"
}

db_count() {                   # db_count DB SQL: the count, or "?" (error logged)
    local out
    if out=$(psql_q "$1" "$2" 2>&1); then echo "$out"
    else log "count query on $1 failed: $(echo "$out" | head -n1)"; echo "?"; fi
}

fresh_db() {                   # fresh_db NAME
    psql_q postgres "DROP DATABASE IF EXISTS $1" >/dev/null
    psql_q postgres "CREATE DATABASE $1" >/dev/null
}

drop_db() { psql_q postgres "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null || true; }

# The private cluster: Unix socket only, durability settings spelled out at
# their defaults; PG_OPTS adds the script's own.
pg_start() {
    mkdir -p "$SOCK"; chown "$RUN_USER:" "$SOCK"
    runuser -u "$RUN_USER" -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --no-locale \
        >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$WORK/postgresql.log" -w -t 60 \
        -o "-c listen_addresses='' -k $SOCK -p $PGPORT -c fsync=on -c synchronous_commit=on -c full_page_writes=on ${PG_OPTS:-}" \
        start >/dev/null || { tail -n 20 "$WORK/postgresql.log" >&2; die "PostgreSQL did not start"; }
    PG_STARTED=1
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') running, socket $SOCK (no TCP)"
}

# What a run wrote is moved aside, written back and dropped from the page
# cache, and deleted only at the end (or when it grows too big, followed by
# a pause). Both halves matter on these machines, and both hit whichever
# receiver runs next, so that runs measured their predecessor:
# - deleting: on ext4 without a journal (this disk: fsync goes through
#   ext4_fsync_nojournal) a new inode is never taken from those freed in
#   the last ~30 s; find_inode_bit() steps over each through
#   recently_deleted(), an inode-table lookup apiece. After the 2,000 files
#   of a run were deleted, each file made in the next ~30 s cost about
#   0.3 ms more (perf: 13% of storescp's samples in a move run).
# - keeping the files cached: the next run's page cache then grows into
#   guest memory the VM has not touched yet, and copying into it ran 3x
#   slower (perf: half of storescp's samples in copy_folio_from_iter_atomic;
#   a move fell from ~1,400 to ~500 instances/s on the second run).
RETIRED_MB=0
RETIRE_MAX_MB=${BENCH_RETIRE_MAX_MB:-6000}
RECENTLY_DELETED_SECONDS=35   # dirty_expire_centisecs / 100 + 5, rounded up

retire() {                     # retire PATH: move it under $WORK/retired/
    [ -e "$1" ] || return 0
    local mb to
    mb=$(du -sm "$1" | cut -f1)
    mkdir -p "$WORK/retired"
    to=$(mktemp -u "$WORK/retired/$(basename "$1").XXXXXX")
    mv "$1" "$to"
    RETIRED_MB=$((RETIRED_MB + mb))
    sync
    /usr/bin/python3 - "$to" <<'PY'
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        fd = os.open(os.path.join(root, name), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
    local free_mb
    free_mb=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
    if [ "$RETIRED_MB" -ge "$RETIRE_MAX_MB" ] || [ "$free_mb" -lt 4000 ]; then
        purge_retired wait
    fi
}

purge_retired() {              # purge_retired [wait]: delete; "wait" outlasts the window
    [ -d "$WORK/retired" ] || return 0
    rm -rf "$WORK/retired"
    RETIRED_MB=0
    if [ "${1:-}" = wait ]; then
        log "deleted what earlier runs wrote; waiting ${RECENTLY_DELETED_SECONDS} s before the next run (see bench/lib.sh)"
        sync
        sleep "$RECENTLY_DELETED_SECONDS"
    fi
}
