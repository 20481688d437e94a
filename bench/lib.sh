# Shared by bench/*/run.sh, sourced at the start: what more than one
# benchmark does the same way (packages, user, network namespace, the
# private PostgreSQL, starting and stopping servers by their PIDs, the exit,
# the retiring of what runs wrote, the data sets, storescu's sends, the
# pacsnode and Orthanc configurations, the C-MOVE destination, the disk's
# floor, the run's description). Functions read the script's settings
# (WORK, RUN_USER, SOCK, PDU, PARALLEL, REP, ...) when they are called.

# ----- the settings every run.sh shares (its options may change them) -------
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
PY=/usr/bin/python3
RUN_USER=pacsnode              # every server runs as this user
SCU_AE=BENCHSCU                # the senders' and requesters' AE title
DEST_AE=MOVEDEST               # the C-MOVE destination's
PDU=65536                      # the max PDU of every sender and receiver
PARALLEL=4                     # "4 associations" / "4 connections"
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}   # --work-base
PACSNODE_BIN=${PACSNODE_BIN:-$REPO_DIR/build/scp/pacsnode}
RESULTS_FILE=""                # --results
USE_NETNS=1                    # --no-netns: 0
KEEP=0                         # --keep: 1

# bench_option ARGS...: the options every run.sh takes (--only LIST, the
# STEPS of check_steps; --work-base DIR,
# --results FILE, --no-netns, --keep, --help; --_inner, the re-run in the
# namespace); OPT_SHIFT: the words it used. Anything else is an error
# (usage, exit 2).
bench_option() {
    OPT_SHIFT=1
    case "$1" in
        --only) STEPS=${2:?}; OPT_SHIFT=2 ;;
        --only=*) STEPS=${1#*=} ;;
        --work-base) WORK_BASE=${2:?}; OPT_SHIFT=2 ;;
        --results) RESULTS_FILE=${2:?}; OPT_SHIFT=2 ;;
        --no-netns) USE_NETNS=0 ;;
        --keep) KEEP=1 ;;
        --_inner) INNER=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
}

# need_int NAME VALUE MIN: a usage error (exit 2) unless VALUE is an
# integer of at least MIN
need_int() {
    case "$2" in ''|*[!0-9]*) ;; *) [ "$2" -ge "$3" ] && return 0 ;; esac
    echo "run.sh: $1 needs an integer of at least $3" >&2
    exit 2
}

# STEPS: what to measure (--only), comma separated. check_steps WHAT
# NAME...: a usage error unless each is one of the NAMEs; want NAME:
# whether it is in STEPS.
check_steps() {
    local what=$1 s all
    shift
    all="$*"
    for s in ${STEPS//,/ }; do
        case " $all " in *" $s "*) ;; *) echo "run.sh: unknown $what '$s' (${all// /, })" >&2; exit 2 ;; esac
    done
}
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# plan_settings: find/gen.py's two data sets and its query plan, as find/
# and web/ take them from the environment (a script sets its own default
# of any first); plan_check: their usage errors
plan_settings() {
    N_BIG=${N_INSTANCES:-1000000}
    N_SMALL=${N_SMALL:-100000}
    QUERIES=${QUERIES:-100}                  # timed queries per shape
    export WARMUP=${WARMUP:-5}               # untimed queries per shape first
    LARGE_TARGET=${LARGE_TARGET:-10000}      # studies matched by the large query
    export LARGE_REPEAT=${LARGE_REPEAT:-3}
    export LITERAL_REPEAT=${LITERAL_REPEAT:-20}   # the literal SMI* and *SON, repeated
    MAX_SECONDS=${MAX_SECONDS:-120}          # cap on one shape's timed queries
    REGIMES=${REGIMES:-idle,busy}            # CPU regimes (bench/README.md, "find/")
}
plan_check() {
    local v r
    need_int "the big set (N_INSTANCES, --instances)" "$N_BIG" 100
    need_int "the small set (N_SMALL, --orthanc-instances)" "$N_SMALL" 100
    need_int "QUERIES (--queries)" "$QUERIES" 1
    for v in WARMUP LARGE_TARGET LARGE_REPEAT LITERAL_REPEAT MAX_SECONDS; do need_int "$v" "${!v}" 0; done
    for r in ${REGIMES//,/ }; do
        case "$r" in idle|busy) ;; *) echo "run.sh: unknown regime '$r' in REGIMES (idle, busy)" >&2; exit 2 ;; esac
    done
}

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
    ORTHANC_PLUGIN=""          # a benchmark without Orthanc need not install it
    if dpkg-query -W orthanc-postgresql >/dev/null 2>&1; then
        ORTHANC_PLUGIN=$(dpkg -L orthanc-postgresql | grep -E '/libOrthancPostgreSQLIndex\.so(\.[0-9.]+)?$' | sort | head -n1)
        [ -n "$ORTHANC_PLUGIN" ] || die "libOrthancPostgreSQLIndex.so not found in package orthanc-postgresql"
    fi
    mkdir -p "$WORK_BASE"
    WORK=$(mktemp -d "$WORK_BASE/pacsnode-bench-$1.XXXXXX")
    chmod 755 "$WORK"
    chown "$RUN_USER:" "$WORK"
    SOCK=$WORK/pgsock
    PGDATA_DIR=$WORK/pgdata
    PGPORT=5432                # only names the socket file in $SOCK
    SERVER_PIDFILES=()         # pid files of the servers we started
    PG_STARTED=0
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
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
        if echoscu -q -to 2 -ta 2 -aet "$SCU_AE" -aec "$aec" ${ECHO_OPTS[@]+"${ECHO_OPTS[@]}"} \
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
    echoscu -d -to 5 -ta 5 -aet "$SCU_AE" -aec "$2" "${TLS_SCU[@]}" 127.0.0.1 "$1" 2>&1 \
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

# ----- the inner phase's exit -----------------------------------------------
# bench_cleanup (the EXIT trap bench_inner_setup sets): the spinner, the
# script's bench_cleanup_hook if it has one, every server by its PID file,
# PostgreSQL; then the work dir removed, kept (--keep: KEEP=1), or, after a
# failure, only its logs and results kept.
SPIN_PID=""
bench_cleanup() {
    local rc=$? f
    trap - EXIT INT TERM
    spin_stop
    if declare -F bench_cleanup_hook >/dev/null; then bench_cleanup_hook; fi
    for f in "${SERVER_PIDFILES[@]}"; do stop_pidfile "$f"; done
    wait 2>/dev/null || true
    if [ "$PG_STARTED" = 1 ]; then
        runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        log "work dir kept: $WORK"
    elif [ $rc != 0 ]; then
        find "$WORK" -mindepth 1 -maxdepth 1 ! -name '*.log' ! -name '*.tsv' ! -name '*.txt' ! -name '*.json' \
            -exec rm -rf {} +
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}

# spin_start / spin_stop: the "busy" CPU regime (bench/README.md, "find/"):
# a nice-19 loop keeps one CPU from idling meanwhile. regime_start REGIME:
# --wait-quiet's wait, then the spinner if REGIME is busy (spin_stop after).
regime_start() {
    wait_quiet
    [ "$1" != busy ] || spin_start
}
spin_start() {
    nice -n 19 sh -c 'while :; do :; done' &
    SPIN_PID=$!
}
spin_stop() {
    [ -n "$SPIN_PID" ] || return 0
    kill "$SPIN_PID" 2>/dev/null || true
    wait "$SPIN_PID" 2>/dev/null || true
    SPIN_PID=""
}

# ----- small helpers --------------------------------------------------------
secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

note_load() {                  # note_load STEP SECONDS NOTE: a row of $LOADS
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$LOADS"
    log "  $1: $2 s${3:+ ($3)}"
}

# settle: after a run that wrote, flush its dirty pages and give the disk
# SETTLE_SECONDS to write back what it acknowledged (an fsync-heavy receiver
# would otherwise pay for its predecessor's gigabyte); then --wait-quiet's
# wait
settle() {
    sync
    sleep "$SETTLE_SECONDS"
    wait_quiet
}

# first_error LOG: the first error line of a dcmtk tool's log (E: or F:),
# else its first warning
first_error() {
    grep -m1 -E '^[EF]: ' "$1" || grep -m1 -E '^W: ' "$1" || echo "(no error line in $(basename "$1"))"
}

results_path() {               # results_path BASE: BASE.txt, or the first free BASE-<k>.txt
    local f=$1.txt i=2
    while [ -e "$f" ]; do f=$1-$i.txt; i=$((i + 1)); done
    echo "$f"
}

# ----- data -----------------------------------------------------------------
ct_dir() { echo "$BENCH_DIR/.cache/store-n$1-v1"; }   # ct_dir N: ct_data's cache of N
ct_data() {                    # ct_data DIR N: store/gen_data.py's CT study of N instances, made once
    if [ ! -f "$1/.complete" ]; then
        log "generating $2 CT instances into $1"
        rm -rf "$1"
        /usr/bin/python3 "$BENCH_DIR/store/gen_data.py" "$1" "$2" >&2
    else
        log "using cached data set $1"
    fi
}

# find_files_dir N: the cache of find/gen.py's N instances as Part-10 files,
# keyed on the generator's own text (a change makes new files)
find_files_dir() {
    echo "$BENCH_DIR/.cache/find-files-n$1-$(cat "$BENCH_DIR/find/gen.py" "$BENCH_DIR/find/dicomenc.py" \
        | sha256sum | cut -c1-10)"
}
find_files() {                 # find_files N DIR: the files, in PARALLEL shards DIR/s<k>, made once
    if [ ! -f "$2/.complete" ]; then
        log "writing the $1 instances as files into $2"
        # files of an older generator for the same N are stale
        mkdir -p "$BENCH_DIR/.cache"
        find "$BENCH_DIR/.cache" -maxdepth 1 -name "find-files-n$1-*" ! -path "$2" -exec rm -rf {} +
        rm -rf "$2"
        local t0=$EPOCHREALTIME
        /usr/bin/python3 "$BENCH_DIR/find/gen.py" files "$1" "$2" "$PARALLEL"
        touch "$2/.complete"
        log "  files written in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s"
    else
        log "using cached files $2"
    fi
}

# data_lists DIR N: $LISTS/all, the ct-*.dcm files of DIR in order (there
# must be N), and $LISTS/part0.. its PARALLEL contiguous parts; LIST_BYTES:
# their size. The files are read once, so that the senders read from RAM.
data_lists() {
    LISTS=$WORK/lists
    mkdir -p "$LISTS"
    find "$1" -maxdepth 1 -name 'ct-*.dcm' | sort > "$LISTS/all"
    [ "$(wc -l < "$LISTS/all")" = "$2" ] || die "data set $1 does not hold $2 files; delete it and re-run"
    split -n "l/$PARALLEL" -d -a 1 "$LISTS/all" "$LISTS/part"
    LIST_BYTES=$(xargs -a "$LISTS/all" stat -c %s | awk '{s+=$1} END {print s}')
    xargs -a "$LISTS/all" cat > /dev/null
}

# ----- storescu -------------------------------------------------------------
# wait_senders TAG PID...: waits for the storescu #0, #1, ... of TAG (logs
# $WORK/send-TAG-<k>.log); non-zero, each failure logged, if any failed
wait_senders() {
    local tag=$1 i=0 pid rc=0
    shift
    for pid in "$@"; do
        if ! wait "$pid"; then
            rc=1
            log "storescu $tag #$i failed: $(first_error "$WORK/send-$tag-$i.log")"
        fi
        i=$((i + 1))
    done
    return $rc
}

# send_parts K NAME PORT CALLED_AE [tls]: times K parallel storescu (K=1:
# one process, one association over $LISTS/all; else the K parts); "tls":
# storescu +tls with the modality's certificate (tls_make_certs). Prints the
# elapsed seconds and writes the senders' CPU seconds (user + system) to
# $WORK/send-NAME-K-r$REP.cpu; non-zero if a sender failed or did not use
# exactly one association.
send_parts() {
    local k=$1 rcv=$2 aec=$4 sec=() ports=()
    local tag=$rcv-$k-r$REP lists=() pids=() i rc=0 t0 t1 n
    # PORT may be "P1,P2,...": association i goes to port i mod their number
    # (several nodes behind no front, as a front dealing associations would)
    IFS=, read -r -a ports <<< "$3"
    [ "${5:-}" != tls ] || sec=("${TLS_SCU[@]}")
    if [ "$k" = 1 ]; then lists=("$LISTS/all"); else
        for i in $(seq 0 $((k - 1))); do lists+=("$LISTS/part$i"); done
    fi
    t0=$EPOCHREALTIME
    for i in "${!lists[@]}"; do
        # -ta 120: with plain (single-process) storescp the later associations
        # wait in the listen queue until the earlier ones are released.
        # -td 60: a receiver that stops answering fails the run, not hangs it.
        mapfile -t files < "${lists[$i]}"
        storescu -v -aet "$SCU_AE" -aec "$aec" --max-pdu "$PDU" -ta 120 -td 60 ${sec[@]+"${sec[@]}"} \
            127.0.0.1 "${ports[$((i % ${#ports[@]}))]}" "${files[@]}" > "$WORK/send-$tag-$i.log" 2>&1 &
        pids+=($!)
    done
    wait_senders "$tag" "${pids[@]}" || rc=1
    t1=$EPOCHREALTIME
    # this subshell's reaped children: the storescu processes (and a seq);
    # "times" in this shell, not in a pipe (a subshell has no children yet)
    times > "$WORK/send-$tag.times"
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
                   printf "%.2f\n", 60 * (u[1] + s[1]) + u[2] + s[2] }' "$WORK/send-$tag.times" > "$WORK/send-$tag.cpu"
    for i in "${!lists[@]}"; do
        n=$(grep -c 'Association Accepted' "$WORK/send-$tag-$i.log" || true)
        if [ "$n" != 1 ]; then
            rc=1; log "storescu $tag #$i used $n associations, expected 1"
        fi
    done
    secs_between "$t0" "$t1"
    return $rc
}

# send_shards PORT CALLED_AE DIR TAG: PARALLEL storescu at once, one per
# shard DIR/s<k> (find_files), untimed
send_shards() {
    local port=$1 aec=$2 dir=$3 tag=$4 pids=() i rc=0
    for i in $(seq 0 $((PARALLEL - 1))); do
        [ -d "$dir/s$i" ] || continue
        storescu -aet "$SCU_AE" -aec "$aec" --max-pdu "$PDU" -ta 120 -td 120 +sd +r \
            127.0.0.1 "$port" "$dir/s$i" > "$WORK/send-$tag-$i.log" 2>&1 &
        pids+=($!)
    done
    wait_senders "$tag" "${pids[@]}" || rc=1
    return $rc
}

# storescu_load LOG PORT CALLED_AE FILE...: one storescu over the files on
# one association (a load, untimed); non-zero, and logged, if it failed
storescu_load() {
    local logf=$1 port=$2 aec=$3
    shift 3
    if ! storescu -aet "$SCU_AE" -aec "$aec" --max-pdu "$PDU" -ta 30 -td 120 \
            127.0.0.1 "$port" "$@" > "$logf" 2>&1; then
        log "storescu to $aec on port $port failed: $(first_error "$logf")"
        return 1
    fi
}

# ----- pacsnode -------------------------------------------------------------
# pacs_conf PORT DIR DB [ACCEPT_UNKNOWN]: the configuration every benchmark
# runs pacsnode with (storage under DIR, index in database DB of the private
# cluster, [log] level BENCH_PACSNODE_LOG_LEVEL or warning);
# accept_unknown_calling_ae ACCEPT_UNKNOWN, yes by default. The script adds
# its peers (peer_conf) and its other sections.
pacs_conf() {
    cat <<CONF
[node]
ae_title = PACSNODE
bind = 127.0.0.1
port = $1
require_called_ae = yes
accept_unknown_calling_ae = ${4:-yes}

[limits]
workers = 4
max_associations = 32
max_pdu = $PDU

[storage]
root = $2/storage
duplicate_policy = ignore

[database]
conninfo = host=$SOCK port=$PGPORT user=postgres dbname=$3

[log]
level = ${BENCH_PACSNODE_LOG_LEVEL:-warning}
CONF
}
peer_conf() {                  # peer_conf NAME AE_TITLE PORT ALLOW: a [peer.NAME] on 127.0.0.1
    printf '\n[peer.%s]\nae_title = %s\nhost = 127.0.0.1\nport = %s\nallow = %s\n' "$@"
}

# load_copy DB N TAG: pacsnode's index of find/gen.py's N instances without
# C-STORE: the node migrates a fresh DB (the script's pacs_start DB TAG and
# pacs_stop), then gen.py's rows go in with COPY, table by table, the
# sequences are set, the kept counts folded, VACUUM ANALYZE; each step a
# row of $LOADS (note_load)
load_copy() {
    local db=$1 n=$2 tag=$3 t0 t table cols gen=$BENCH_DIR/find/gen.py
    fresh_db "$db"
    pacs_start "$db" "$tag-migrate" || return 1
    pacs_stop
    for table in patient study series instance; do
        [ "$(psql_q "$db" "SELECT count(*) FROM $table")" = 0 ] || die "$db.$table not empty after migration"
    done
    log "loading $n instances into $db with COPY"
    t0=$EPOCHREALTIME
    for table in patient study series instance; do
        t=$EPOCHREALTIME
        cols=$(/usr/bin/python3 "$gen" columns 0 "$table")
        /usr/bin/python3 "$gen" copy "$n" "$table" \
            | PGOPTIONS='-c client_min_messages=warning' psql -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PGPORT" \
                -U postgres -d "$db" -qc "COPY $table ($cols) FROM STDIN" \
            || die "COPY into $db.$table failed"
        psql_q "$db" "SELECT setval(pg_get_serial_sequence('$table', 'pk'), (SELECT max(pk) FROM $table))" >/dev/null
        note_load "$tag COPY $table" "$(secs_since "$t")" "$(psql_q "$db" "SELECT count(*) FROM $table") rows"
    done
    # The kept counts: each COPY left its deltas (migration 006).
    t=$EPOCHREALTIME
    psql_q "$db" "SELECT pn_fold_orphans()" >/dev/null
    note_load "$tag fold counts" "$(secs_since "$t")" "pn_fold_orphans()"
    note_load "$tag COPY total" "$(secs_since "$t0")" "generation and COPY, pipelined"
    t=$EPOCHREALTIME
    psql_q "$db" "VACUUM ANALYZE" >/dev/null
    note_load "$tag VACUUM ANALYZE" "$(secs_since "$t")" \
        "$(psql_q "$db" "SELECT pg_size_pretty(pg_database_size('$db'))") database"
}

# ----- Orthanc --------------------------------------------------------------
# orthanc_conf DIR NAME DB PORT [JSON]: DIR/orthanc.json (and DIR's storage,
# index and tmp folders), the configuration every benchmark starts from:
# DICOM on PORT, the PostgreSQL index plugin on database DB, no HTTP
# listener. Every key not set keeps Orthanc's default (bench/README.md,
# "store/": SyncStorageArea true, an fsync of every stored file;
# StoreMD5ForAttachments true); IndexConnectionsCount stays at 1 (the same
# section says why). JSON: an object whose keys replace or add to these.
orthanc_conf() {
    local dir=$1
    mkdir -p "$dir/storage" "$dir/index" "$dir/tmp"; chown -R "$RUN_USER:" "$dir"
    /usr/bin/python3 - "$dir" "$2" "$3" "$4" "${5:-"{}"}" "$ORTHANC_PLUGIN" "$SOCK" "$PGPORT" "$PDU" <<'PY' \
        || die "could not write $dir/orthanc.json"
import json
import sys

d, name, db, port, extra, plugin, sock, pgport, pdu = sys.argv[1:]
conf = {
    "Name": name,
    "StorageDirectory": d + "/storage",
    "IndexDirectory": d + "/index",
    "TemporaryDirectory": d + "/tmp",
    "StorageCompression": False,
    "Plugins": [plugin],
    "LuaScripts": [],
    "HttpServerEnabled": False,
    "RemoteAccessAllowed": False,
    "WebDavEnabled": False,
    "OrthancExplorerEnabled": False,
    "DicomServerEnabled": True,
    "DicomAet": "ORTHANC",
    "DicomPort": int(port),
    "DicomCheckCalledAet": True,
    "DicomAlwaysAllowEcho": True,
    "DicomAlwaysAllowStore": True,
    "UnknownSopClassAccepted": False,
    "DicomModalities": {},
    "OrthancPeers": {},
    "MaximumPduLength": int(pdu),
    "DicomThreadsCount": 4,
    "HttpsVerifyPeers": True,
    "HttpProxy": "",
    "SaveJobs": False,
    "PostgreSQL": {
        "EnableIndex": True,
        "EnableStorage": False,
        "Host": sock,
        "Port": int(pgport),
        "Database": db,
        "Username": "postgres",
        "Password": "",
        "EnableSsl": False,
        "Lock": True,
        "IndexConnectionsCount": 1,
    },
}
conf.update(json.loads(extra))
with open(d + "/orthanc.json", "w") as f:
    json.dump(conf, f, indent=2)
PY
}

# orthanc_settle DB: until Orthanc's table of changes has not grown for
# 3 * ORTHANC_STABLE_AGE seconds (at most 10 minutes). Orthanc marks each
# patient, study and series "stable" StableAge seconds after its last
# instance and records that in the index: the measurements should not
# compete with it.
orthanc_settle() {
    local db=$1 last=-1 now same=0 i
    for i in $(seq 1 600); do
        now=$(psql_q "$db" "SELECT count(*) FROM changes" 2>/dev/null || echo -1)
        if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; last=$now; fi
        [ "$same" -lt $((3 * ORTHANC_STABLE_AGE)) ] || return 0
        sleep 1
    done
    log "WARNING: Orthanc still recording changes after 10 minutes"
}

# orthanc_db DB: a fresh database for an Orthanc to be filled (orthanc_fill),
# synchronous_commit off until then: it only spares the untimed load its
# fsyncs
orthanc_db() {
    fresh_db "$1"
    psql_q postgres "ALTER DATABASE $1 SET synchronous_commit = off" >/dev/null
}

# orthanc_fill DB N DIR: the running Orthanc (ORTHANC_PORT, its index in
# orthanc_db DB) filled with find_files' N instances in DIR over PARALLEL
# associations, its stable events awaited (orthanc_settle), DB's durability
# back to the default, VACUUM ANALYZE; each step a row of $LOADS, the count
# indexed in meta.txt (orthanc_indexed)
orthanc_fill() {
    local db=$1 n=$2 t rows
    log "storing $n instances into Orthanc with $PARALLEL storescu"
    t=$EPOCHREALTIME
    send_shards "$ORTHANC_PORT" ORTHANC "$3" orthanc || log "some storescu failed (counted below)"
    rows=$(psql_q "$db" "SELECT count(*) FROM resources WHERE resourcetype = 3")
    note_load "orthanc C-STORE" "$(secs_since "$t")" "$rows instances indexed, $PARALLEL associations"
    [ "$rows" = "$n" ] || log "WARNING: Orthanc indexed $rows of $n instances"
    echo "orthanc_indexed=$rows" >> "$WORK/meta.txt"
    t=$EPOCHREALTIME
    orthanc_settle "$db"
    note_load "orthanc settle" "$(secs_since "$t")" "until its stable events were recorded (StableAge $ORTHANC_STABLE_AGE s)"
    psql_q postgres "ALTER DATABASE $db RESET synchronous_commit" >/dev/null
    t=$EPOCHREALTIME
    psql_q "$db" "VACUUM ANALYZE" >/dev/null
    note_load "orthanc VACUUM ANALYZE" "$(secs_since "$t")" \
        "$(psql_q "$db" "SELECT pg_size_pretty(pg_database_size('$db'))") database"
}

# ----- C-MOVE ---------------------------------------------------------------
# The destination: one storescp -aet $DEST_AE for the whole run (single
# process, no host lookups, max PDU $PDU, files written without fsync into
# $DEST_DIR, on the work dir's file system), on DEST_PORT.
DEST_PORT=""
dest_start() {
    mkdir -p "$DEST_DIR"; chown "$RUN_USER:" "$DEST_DIR"
    DEST_PORT=$(free_port)
    start_server movedest "$WORK/movedest.log" env TCP_NODELAY=1 storescp -dhl \
        -aet "$DEST_AE" --max-pdu "$PDU" -od "$DEST_DIR" "$DEST_PORT"
    wait_echo movedest "$DEST_PORT" "$DEST_AE" "$WORK/movedest.log" || die "storescp (the destination) does not start"
    log "destination: storescp -aet $DEST_AE on port $DEST_PORT, writing into $DEST_DIR"
}
empty_dest() { retire "$DEST_DIR"; mkdir -p "$DEST_DIR"; chown "$RUN_USER:" "$DEST_DIR"; }
dest_files() {                 # dest_files: "FILES BYTES" the destination holds
    local files bytes
    files=$(find "$DEST_DIR" -type f | wc -l)
    bytes=$(find "$DEST_DIR" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    echo "$files $bytes"
}

# movescu_study PORT CALLED_AE STUDY_UID LOG: movescu -S (Study Root, STUDY
# level) of the study to $DEST_AE; movescu's exit status. -td 120: a source
# that stops answering fails the run, not hangs it.
movescu_study() {
    timeout 600 movescu -v -S -aet "$SCU_AE" -aec "$2" -aem "$DEST_AE" --max-pdu "$PDU" -ta 30 -td 120 \
        -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$3" 127.0.0.1 "$1" > "$4" 2>&1
}

# move_status LOG: the status of the final C-MOVE-RSP as movescu -v names
# it ("Success", "Warning", "Failed", ...), or "none". Success (0x0000)
# means every sub-operation completed (PS3.4 C.4.2.1.5): with a failed or
# warning sub-operation the final status is B000, or A7xx/Cxxx if none
# completed.
move_status() {
    local s
    s=$(sed -n 's/.*Received Final Move Response (\(.*\)).*/\1/p' "$1" | tail -n1)
    echo "${s:-none}"
}

# ----- the disk's floor -----------------------------------------------------
# measure_floor TAG N BYTES: the least any receiver that answers only once
# an instance is durable must do (store/floor.py: N files of the average
# size, each created, written, fsync'ed and its folder fsync'ed), and
# PostgreSQL's rate of one-row INSERT + COMMIT (pgbench, 5 s), each on 1 and
# on PARALLEL threads: "floor_TAG_K=FILES/s COMMITS/s" lines in FLOOR
FLOOR=()
measure_floor() {
    local k f c avg db=floor_bench script=$WORK/floor.sql
    avg=$(($3 / $2))
    for k in 1 "$PARALLEL"; do
        f=$(/usr/bin/python3 "$BENCH_DIR/store/floor.py" "$WORK/floor-$1-$k" "$2" "$avg" "$k") || f="?"
        retire "$WORK/floor-$1-$k"
        c="?"
        if [ "$PG_STARTED" = 1 ]; then
            fresh_db "$db"
            psql_q "$db" "CREATE TABLE t (id bigserial PRIMARY KEY, v int)" >/dev/null
            echo 'INSERT INTO t (v) VALUES (:client_id);' > "$script"
            c=$("$PG_BIN/pgbench" -h "$SOCK" -p "$PGPORT" -U postgres -n -c "$k" -j "$k" -T 5 -f "$script" "$db" \
                2>/dev/null | awk '/^tps = / { printf "%.0f", $3 }')
            drop_db "$db"
            [ -n "$c" ] || c="?"
        fi
        FLOOR+=("floor_$1_$k=$f $c")
        log "floor ($1, $k): durable $((avg / 1000)) KB files $f/s, INSERT+COMMIT $c/s"
    done
    settle
}

# ----- the run's description (meta.txt) -------------------------------------
bench_started() {              # at the start: STARTED, T_START, LOAD_START
    STARTED=$(date '+%Y-%m-%d %H:%M:%S %Z')
    T_START=$EPOCHREALTIME
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
}

# other_benches: the other bench/*/run.sh running on the machine ("PID
# command;" each), not this one nor its subshells; empty when none
other_benches() {
    ps -eo pid=,ppid=,args= | awk -v me=$$ '$1 != me && $2 != me && /bench\/(store|find|move|web)\/run\.sh/ && !/awk/ {
        $2 = ""; print }' | sort -u | head -n 3 | tr '\n' ';'
}

# pacsnode_check: the binary to measure, PACSNODE_BIN: PACSNODE_SHA (its
# sha256, 12 digits) and PACSNODE_REV (the commit checked out now: others
# may commit meanwhile); without a binary PACSNODE_NOTE says so (logged),
# and the status is 1
pacsnode_check() {
    PACSNODE_REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    PACSNODE_SHA=""
    PACSNODE_NOTE=""
    if [ -x "$PACSNODE_BIN" ]; then
        PACSNODE_SHA=$(sha256sum "$PACSNODE_BIN" | cut -c1-12)
        return 0
    fi
    PACSNODE_NOTE="pacsnode binary not found at $PACSNODE_BIN"
    log "$PACSNODE_NOTE: skipping pacsnode"
    return 1
}

# meta_common PACKAGE...: the key=value lines every report's header reads:
# the run (bench_started; its duration, the load, the host, the work dir's
# file system), the versions (dcmtk; orthanc and the Orthanc PACKAGEs;
# postgresql, with PG_SHARED_BUFFERS when set), the pacsnode binary
# (pacsnode_check; whether it changed during the run), the namespace
meta_common() {
    local p o sha_end changed=""
    echo "started=$STARTED"
    echo "duration_s=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
    echo "load=$LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "host=$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
    echo "work_fs=$(df -PT "$WORK" | awk 'NR==2 {print $2 " on " $1}')"
    echo "dcmtk=$(dpkg-query -W -f='${Version}' dcmtk)"
    o="orthanc=$(dpkg-query -W -f='${Version}' orthanc 2>/dev/null || echo none)"
    for p in "$@"; do o="$o $p=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || echo none)"; done
    echo "$o"
    echo "postgresql=$("$PG_BIN/postgres" --version | awk '{print $3}')${PG_SHARED_BUFFERS:+ shared_buffers=$PG_SHARED_BUFFERS}"
    if [ -z "${PACSNODE_SHA:-}" ]; then
        echo "pacsnode=${PACSNODE_NOTE:-not measured}"
    else
        sha_end=$(sha256sum "$PACSNODE_BIN" 2>/dev/null | cut -c1-12)
        [ "$sha_end" = "$PACSNODE_SHA" ] \
            || changed="; WARNING: the binary changed during the run (sha256 $sha_end at the end)"
        echo "pacsnode=$PACSNODE_BIN (repo at commit $PACSNODE_REV when the run started; binary sha256" \
            "$PACSNODE_SHA, built $(date -r "$PACSNODE_BIN" '+%F %T')$changed)"
    fi
    echo "netns=$USE_NETNS"
}
