#!/usr/bin/env bash
# Move benchmark: one CT study of N instances (512x512x16 bit, ~525 KB each,
# default N=1000) sent to one dcmtk storescp ("MOVEDEST") three ways:
#   pacsnode  C-MOVE (movescu -S, STUDY level) of the study to MOVEDEST
#   Orthanc + PostgreSQL index, the same C-MOVE
#   storescu  sending the same files from disk to MOVEDEST (the path's limit)
# Prints instances/s and MB/s for each, the ratios pacsnode/storescu and
# pacsnode/Orthanc with PASS/FAIL against the targets, pacsnode's worker peak
# RSS during the move, and writes the table to bench/results/.
#
# Usage (as root): bash bench/move/run.sh [options]; see --help and
# bench/README.md ("move/").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_DIR=$(dirname "$HERE")
. "$BENCH_DIR/lib.sh"
REPO_DIR=$(dirname "$BENCH_DIR")
PY=/usr/bin/python3

COUNT=${BENCH_MOVE_COUNT:-1000}
REPEAT=${BENCH_MOVE_REPEAT:-12}
SOURCES="storescu,orthanc,pacsnode"
SETTLE_SECONDS=${BENCH_SETTLE_SECONDS:-5}   # pause after each run (see settle)
RSS_INTERVAL=0.05                           # seconds between RSS samples
KEEP=0
USE_NETNS=1
PDU=65536
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
PACSNODE_BIN=${PACSNODE_BIN:-$REPO_DIR/build/scp/pacsnode}
RESULTS_FILE=""
RUN_USER=pacsnode
DEST_AE=MOVEDEST
SCU_AE=BENCHSCU

usage() {
    cat <<EOF
usage: bash bench/move/run.sh [options]
  --count N             instances in the study (default 1000, or
                        \$BENCH_MOVE_COUNT)
  --repeat R            measurements per source; the table shows the median
                        (default 12, or \$BENCH_MOVE_REPEAT;
                        a multiple of 6 balances the order)
  --only LIST           sources to measure, comma separated, from
                        storescu,orthanc,pacsnode (default: all three)
  --work-base DIR       where the temporary work dir is made (default
                        \$BENCH_WORK_BASE or /var/tmp; a real disk, not tmpfs)
  --results FILE        write the table here instead of
                        bench/results/move-<date>[-n<N>].txt
  --no-netns            do not run the servers in a private network namespace
  --keep                keep the work dir (logs, stores, cluster) afterwards
environment:
  PACSNODE_BIN          pacsnode binary (default: build/scp/pacsnode)
  BENCH_SETTLE_SECONDS  pause after each run, after a sync (default 5)
EOF
}

ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --count) COUNT=${2:?}; shift 2 ;;
        --count=*) COUNT=${1#*=}; shift ;;
        --repeat) REPEAT=${2:?}; shift 2 ;;
        --repeat=*) REPEAT=${1#*=}; shift ;;
        --only) SOURCES=${2:?}; shift 2 ;;
        --only=*) SOURCES=${1#*=}; shift ;;
        --work-base) WORK_BASE=${2:?}; shift 2 ;;
        --results) RESULTS_FILE=${2:?}; shift 2 ;;
        --no-netns) USE_NETNS=0; shift ;;
        --keep) KEEP=1; shift ;;
        --_inner) INNER=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$COUNT" in ''|*[!0-9]*) echo "run.sh: --count needs a positive integer" >&2; exit 2 ;; esac
[ "$COUNT" -ge 1 ] || { echo "run.sh: --count must be at least 1" >&2; exit 2; }
case "$REPEAT" in ''|*[!0-9]*|0) echo "run.sh: --repeat needs a positive integer" >&2; exit 2 ;; esac
case "$SETTLE_SECONDS" in ''|*[!0-9.]*) echo "run.sh: BENCH_SETTLE_SECONDS must be a number" >&2; exit 2 ;; esac
for s in ${SOURCES//,/ }; do
    case "$s" in storescu|orthanc|pacsnode) ;; *) echo "run.sh: unknown source '$s'" >&2; exit 2 ;; esac
done
want() { case ",$SOURCES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# The same generator and cache as bench/store: one patient, one study, one
# series of COUNT CT instances.
DATA_DIR=$BENCH_DIR/.cache/store-n$COUNT-v1

# ---------------------------------------------------------------------------
# Outer phase (host network namespace): packages, user, data. Then re-run
# ourselves inside a fresh network namespace whose only interface is lo, so
# storescp and Orthanc (which cannot be bound to one address) are reachable
# on 127.0.0.1 only.
# ---------------------------------------------------------------------------
if [ -z "${INNER:-}" ]; then
    bench_host_setup dcmtk orthanc orthanc-postgresql postgresql python3 python3-pydicom python3-numpy iproute2 util-linux

    if [ ! -f "$DATA_DIR/.complete" ]; then
        log "generating $COUNT CT instances into $DATA_DIR"
        rm -rf "$DATA_DIR"
        $PY "$BENCH_DIR/store/gen_data.py" "$DATA_DIR" "$COUNT" >&2
    else
        log "using cached data set $DATA_DIR"
    fi

    bench_netns_enter "$HERE/run.sh" "${ARGS[@]}"
    INNER=1
fi

# ---------------------------------------------------------------------------
# Inner phase: the measurements.
# ---------------------------------------------------------------------------
bench_inner_setup move
STUDY_UID=$(sed -n 's/^study_uid=//p' "$DATA_DIR/.complete")
[ -n "$STUDY_UID" ] || die "no study_uid in $DATA_DIR/.complete; delete $DATA_DIR and re-run"
DEST_DIR=$WORK/movedest        # the storescp's -od, on the work dir's file system
RESULTS_TSV=$WORK/results.tsv
: > "$RESULTS_TSV"

SAMPLER_PID=""

cleanup() {
    local rc=$? f
    trap - EXIT INT TERM
    if [ -n "$SAMPLER_PID" ]; then kill -TERM "$SAMPLER_PID" 2>/dev/null || true; fi
    for f in "${SERVER_PIDFILES[@]}"; do stop_pidfile "$f"; done
    wait 2>/dev/null || true
    if [ "$PG_STARTED" = 1 ]; then
        runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "$KEEP" = 1 ]; then
        log "work dir kept: $WORK"
    elif [ $rc != 0 ]; then
        # Keep the logs (small) for the post-mortem; drop stores and cluster.
        find "$WORK" -mindepth 1 -maxdepth 1 ! -name '*.log' ! -name '*.tsv' ! -name '*.txt' -exec rm -rf {} +
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

settle() {                     # flush the previous run's dirty pages, then wait
    sync
    # storescp writes ~0.5 GB per run without fsync: the next run should not
    # pay for its write-back
    sleep "$SETTLE_SECONDS"
}

empty_dest() { retire "$DEST_DIR"; mkdir -p "$DEST_DIR"; chown "$RUN_USER:" "$DEST_DIR"; }

secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

# ----- data -----------------------------------------------------------------
LISTS=$WORK/lists
mkdir -p "$LISTS"
find "$DATA_DIR" -maxdepth 1 -name 'ct-*.dcm' | sort > "$LISTS/all"
[ "$(wc -l < "$LISTS/all")" = "$COUNT" ] || die "data set $DATA_DIR does not hold $COUNT files; delete it and re-run"
mapfile -t FILES < "$LISTS/all"
TOTAL_BYTES=$(xargs -a "$LISTS/all" stat -c %s | awk '{s+=$1} END {print s}')
xargs -a "$LISTS/all" cat > /dev/null   # into the page cache: storescu reads from RAM

# ----- PostgreSQL cluster ---------------------------------------------------

# load NAME PORT CALLED_AE: C-STORE the study with one storescu (not timed)
load() {
    local name=$1 port=$2 aec=$3 t0
    t0=$EPOCHREALTIME
    if ! storescu -aet "$SCU_AE" -aec "$aec" --max-pdu "$PDU" -ta 30 -td 120 \
            127.0.0.1 "$port" "${FILES[@]}" > "$WORK/load-$name.log" 2>&1; then
        log "loading into $name failed: $(first_error "$WORK/load-$name.log")"
        return 1
    fi
    log "  $COUNT instances stored into $name in $(secs_between "$t0" "$EPOCHREALTIME") s"
}

# ----- the destination: one storescp for every run --------------------------
DEST_PORT=""
dest_start() {
    mkdir -p "$DEST_DIR"; chown "$RUN_USER:" "$DEST_DIR"
    DEST_PORT=$(free_port)
    # As bench/store's storescp: single process, no host lookups, max PDU
    # 64 KiB, files written (no fsync) into DEST_DIR.
    start_server movedest "$WORK/movedest.log" env TCP_NODELAY=1 storescp -dhl \
        -aet "$DEST_AE" --max-pdu "$PDU" -od "$DEST_DIR" "$DEST_PORT"
    wait_echo movedest "$DEST_PORT" "$DEST_AE" "$WORK/movedest.log" || die "storescp (the destination) does not start"
    log "destination: storescp -aet $DEST_AE on port $DEST_PORT, writing into $DEST_DIR"
}

# ----- Orthanc --------------------------------------------------------------
ORTHANC_PORT=""
ORTHANC_NOTE=""
orthanc_start() {
    local dir=$WORK/orthanc db=orthanc_move cfg
    mkdir -p "$dir/storage" "$dir/index" "$dir/tmp"; chown -R "$RUN_USER:" "$dir"
    fresh_db "$db"
    ORTHANC_PORT=$(free_port)
    cfg=$dir/orthanc.json
    # bench/store's configuration (every key not set keeps Orthanc's
    # default; see bench/README.md) plus the two modalities C-MOVE needs:
    # the destination, and the requester allowed to move. SynchronousCMove
    # stays at its default, true: the C-MOVE is answered as it sends.
    # StableAge 5 instead of 60: the "stable study" bookkeeping after the
    # load is over before the first measurement (run.sh waits for it).
    cat > "$cfg" <<EOF
{
  "Name" : "pacsnode-bench-move",
  "StorageDirectory" : "$dir/storage",
  "IndexDirectory" : "$dir/index",
  "TemporaryDirectory" : "$dir/tmp",
  "StorageCompression" : false,
  "Plugins" : [ "$ORTHANC_PLUGIN" ],
  "LuaScripts" : [ ],

  "HttpServerEnabled" : false,
  "RemoteAccessAllowed" : false,
  "WebDavEnabled" : false,
  "OrthancExplorerEnabled" : false,

  "DicomServerEnabled" : true,
  "DicomAet" : "ORTHANC",
  "DicomPort" : $ORTHANC_PORT,
  "DicomCheckCalledAet" : true,
  "DicomAlwaysAllowEcho" : true,
  "DicomAlwaysAllowStore" : true,
  "DicomAlwaysAllowMove" : false,
  "UnknownSopClassAccepted" : false,
  "DicomModalities" : {
    "$DEST_AE" : { "AET" : "$DEST_AE", "Host" : "127.0.0.1", "Port" : $DEST_PORT },
    "$SCU_AE" : { "AET" : "$SCU_AE", "Host" : "127.0.0.1", "Port" : 104, "AllowMove" : true }
  },
  "OrthancPeers" : { },
  "MaximumPduLength" : $PDU,
  "DicomThreadsCount" : 4,
  "SynchronousCMove" : true,
  "StableAge" : 5,

  "HttpsVerifyPeers" : true,
  "HttpProxy" : "",
  "SaveJobs" : false,

  "PostgreSQL" : {
    "EnableIndex" : true,
    "EnableStorage" : false,
    "Host" : "$SOCK",
    "Port" : $PGPORT,
    "Database" : "$db",
    "Username" : "postgres",
    "Password" : "",
    "EnableSsl" : false,
    "Lock" : true,
    "IndexConnectionsCount" : 1
  }
}
EOF
    start_server orthanc "$WORK/orthanc.log" env TCP_NODELAY=1 Orthanc "$cfg"
    if ! wait_echo orthanc "$ORTHANC_PORT" ORTHANC "$WORK/orthanc.log"; then
        ORTHANC_NOTE="did not start: $START_ERROR"; return 1
    fi
    log "Orthanc on port $ORTHANC_PORT: loading the study"
    if ! load orthanc "$ORTHANC_PORT" ORTHANC; then ORTHANC_NOTE="loading the study failed"; return 1; fi
    local rows files
    rows=$(db_count "$db" "SELECT count(*) FROM resources WHERE resourcetype = 3")
    files=$(find "$dir/storage" -type f | wc -l)
    if [ "$rows" != "$COUNT" ] || [ "$files" != "$COUNT" ]; then
        ORTHANC_NOTE="holds $rows instances ($files files) after the load, not $COUNT"; return 1
    fi
}

# ----- pacsnode -------------------------------------------------------------
PACS_PORT=""
PACS_NOTE=""
pacs_start() {
    local dir=$WORK/pacsnode db=pacsmove cfg
    mkdir -p "$dir/storage"; chown -R "$RUN_USER:" "$dir"
    fresh_db "$db"
    PACS_PORT=$(free_port)
    cfg=$dir/pacsnode.conf
    # bench/store's configuration plus the two peers: the requester may
    # store (the load) and move; the destination only receives. Unknown
    # calling AEs are refused, as in a production configuration.
    cat > "$cfg" <<EOF
[node]
ae_title = PACSNODE
bind = 127.0.0.1
port = $PACS_PORT
require_called_ae = yes
accept_unknown_calling_ae = no

[limits]
workers = 4
max_associations = 32
max_pdu = $PDU

[storage]
root = $dir/storage
duplicate_policy = ignore

[database]
conninfo = host=$SOCK port=$PGPORT user=postgres dbname=$db

[log]
level = warning

[peer.BENCHSCU]
ae_title = $SCU_AE
host = 127.0.0.1
port = 104
allow = store, move

[peer.MOVEDEST]
ae_title = $DEST_AE
host = 127.0.0.1
port = $DEST_PORT
allow = store
EOF
    start_server pacsnode "$WORK/pacsnode.log" env TCP_NODELAY=1 "$PACSNODE_BIN" -c "$cfg"
    if ! wait_echo pacsnode "$PACS_PORT" PACSNODE "$WORK/pacsnode.log"; then
        PACS_NOTE="did not start: $START_ERROR"; return 1
    fi
    log "pacsnode on port $PACS_PORT: loading the study"
    if ! load pacsnode "$PACS_PORT" PACSNODE; then PACS_NOTE="loading the study failed"; return 1; fi
    local rows
    rows=$(db_count "$db" "SELECT count(*) FROM instance")
    if [ "$rows" != "$COUNT" ]; then PACS_NOTE="holds $rows instances after the load, not $COUNT"; return 1; fi
}

# ----- one measurement ------------------------------------------------------
# sampler_start MODE PID TAG / sampler_stop: rss.py around the timed part
RSS_OUT=""
sampler_start() {
    local i
    RSS_OUT=$WORK/rss-$3.txt
    rm -f "$RSS_OUT" "$RSS_OUT.ready"
    $PY "$HERE/rss.py" "$1" "$2" "$RSS_OUT" "$RSS_INTERVAL" &
    SAMPLER_PID=$!
    for i in $(seq 1 200); do [ -e "$RSS_OUT.ready" ] && return 0; sleep 0.01; done
    log "WARNING: the RSS sampler is not ready after 2 s"
}
sampler_stop() {               # sets RSS: 7 tab-separated fields for record
    kill -TERM "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    RSS=$(printf -- '-\t-\t-\t0\t-\t-\t-')
    if [ -s "$RSS_OUT" ]; then
        RSS=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                     OFS = "\t"; print v["first_kb"], v["peak_kb"], v["peak_sum_kb"], v["samples"],
                     v["busy_first_kb"], v["busy_peak_kb"], v["busy_cpu_s"] }' "$RSS_OUT")
    else
        log "WARNING: no RSS samples in $RSS_OUT"
    fi
}

# record SOURCE STATUS SECONDS FILES RECV_BYTES NOTE: one TSV row, with $REP,
# the sampler's $RSS and the destination's CPU seconds $DEST_CPU
record() {
    [ "$REP" = 0 ] && return 0   # the warm-up run is not recorded
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$REP" "$2" "$3" \
        "$COUNT" "$TOTAL_BYTES" "$4" "$5" "$RSS" "$DEST_CPU" "$6" >> "$RESULTS_TSV"
}

report_run() {                 # report_run STATUS SECONDS NOTE
    local what="run $REP/$REPEAT"
    [ "$REP" = 0 ] && what="warm-up (not recorded)"
    if [ "$1" = ok ]; then
        log "  $what: $2 s, $(awk -v n="$COUNT" -v t="$2" 'BEGIN { printf "%.1f", n / t }') instances/s ($3)"
    else
        log "  $what: FAILED ($3)"
    fi
}

# check_dest: prints "files bytes" received by the destination
check_dest() {
    local files bytes
    files=$(find "$DEST_DIR" -type f | wc -l)
    bytes=$(find "$DEST_DIR" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    echo "$files $bytes"
}

# dest_ticks: CPU time (user + system, clock ticks) the storescp has used
CLK_TCK=$(getconf CLK_TCK)
dest_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$(cat "$WORK/movedest.pid")/stat"; }
dest_cpu_since() { awk -v a="$1" -v b="$(dest_ticks)" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'; }

# first_error LOG: the first warning/error line of a dcmtk tool's log
first_error() { grep -m1 -E '^[WEF]: ' "$1" || echo "(no error line in $(basename "$1"))"; }

# after_run: empty the destination, flush, wait
after_run() { empty_dest; settle; }

run_storescu() {
    local tag=storescu-r$REP rc=0 t0 t1 d0 secs files rbytes go=$WORK/go-storescu-r$REP spid n note
    log "storescu: $COUNT files from disk to $DEST_AE"
    # The sender waits on a FIFO so that the sampler watches it from its
    # first instruction without its start-up falling into the timed part.
    rm -f "$go"; mkfifo "$go"
    ( read -r _ < "$go"; exec storescu -v -aet "$SCU_AE" -aec "$DEST_AE" --max-pdu "$PDU" -ta 30 -td 120 \
        127.0.0.1 "$DEST_PORT" "${FILES[@]}" > "$WORK/send-$tag.log" 2>&1 ) &
    spid=$!
    sampler_start self "$spid" "$tag"
    d0=$(dest_ticks)
    t0=$EPOCHREALTIME
    echo go > "$go"
    wait "$spid" || rc=$?
    t1=$EPOCHREALTIME
    DEST_CPU=$(dest_cpu_since "$d0")
    sampler_stop
    rm -f "$go"
    secs=$(secs_between "$t0" "$t1")
    read -r files rbytes <<< "$(check_dest)"
    n=$(grep -c 'Association Accepted' "$WORK/send-$tag.log" || true)
    note="storescu exit $rc, $n association(s); $files files received"
    if [ "$rc" = 0 ] && [ "$n" = 1 ] && [ "$files" = "$COUNT" ]; then
        record "storescu" ok "$secs" "$files" "$rbytes" "$note"; report_run ok "$secs" "$note"
    else
        [ "$rc" = 0 ] || note="$note: $(first_error "$WORK/send-$tag.log")"
        record "storescu" FAIL "$secs" "$files" "$rbytes" "$note"; report_run FAIL "$secs" "$note"
    fi
    after_run
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

# run_move SOURCE(pacsnode|orthanc): movescu -S of the study to MOVEDEST
run_move() {
    local src=$1 label port aec mode pid tag=$1-r$REP rc=0 t0 t1 d0 secs files rbytes note st
    if [ "$src" = pacsnode ]; then
        label=pacsnode port=$PACS_PORT aec=PACSNODE mode=children pid=$(cat "$WORK/pacsnode.pid")
    else
        label=Orthanc+PostgreSQL port=$ORTHANC_PORT aec=ORTHANC mode=self pid=$(cat "$WORK/orthanc.pid")
    fi
    log "$label: C-MOVE of the study to $DEST_AE"
    sampler_start "$mode" "$pid" "$tag"
    d0=$(dest_ticks)
    t0=$EPOCHREALTIME
    # -td 120: a source that stops answering fails the run, not hangs it
    timeout 600 movescu -v -S -aet "$SCU_AE" -aec "$aec" -aem "$DEST_AE" --max-pdu "$PDU" -ta 30 -td 120 \
        -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$STUDY_UID" \
        127.0.0.1 "$port" > "$WORK/move-$tag.log" 2>&1 || rc=$?
    t1=$EPOCHREALTIME
    DEST_CPU=$(dest_cpu_since "$d0")
    sampler_stop
    secs=$(secs_between "$t0" "$t1")
    read -r files rbytes <<< "$(check_dest)"
    st=$(move_status "$WORK/move-$tag.log")
    note="movescu exit $rc, final status $st; $files files received"
    if [ "$rc" = 0 ] && [ "$st" = Success ] && [ "$files" = "$COUNT" ]; then
        record "$label" ok "$secs" "$files" "$rbytes" "$note"; report_run ok "$secs" "$note"
    else
        [ "$st" = Success ] || note="$note: $(first_error "$WORK/move-$tag.log")"
        record "$label" FAIL "$secs" "$files" "$rbytes" "$note"; report_run FAIL "$secs" "$note"
        # the warm-up tells whether this source can move at all
        if [ "$REP" = 0 ]; then
            if [ "$src" = pacsnode ]; then PACS_NOTE="warm-up C-MOVE failed: $note"
            else ORTHANC_NOTE="warm-up C-MOVE failed: $note"; fi
        fi
    fi
    after_run
}

run_one() {                    # run_one SOURCE
    case $1 in
        storescu) if want storescu; then run_storescu; fi ;;
        orthanc) if want orthanc && [ -z "$ORTHANC_NOTE" ]; then run_move orthanc; fi ;;
        pacsnode) if want pacsnode && [ -z "$PACS_NOTE" ]; then run_move pacsnode; fi ;;
    esac
}

# ----- main -----------------------------------------------------------------
STARTED=$(date '+%Y-%m-%d %H:%M:%S %Z')
T_START=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORK; study of $COUNT files, $TOTAL_BYTES bytes; max PDU $PDU; load average: $LOAD_START"
# Another benchmark on this machine skews everything: say so in the report.
OTHER_BENCH=$(pgrep -f 'bench/(store|find)/run\.sh' | xargs || true)
[ -z "$OTHER_BENCH" ] || log "WARNING: another benchmark is running (PIDs $OTHER_BENCH): figures will be skewed"

PACSNODE_SHA=""
if want pacsnode; then
    if [ -x "$PACSNODE_BIN" ]; then
        PACSNODE_SHA=$(sha256sum "$PACSNODE_BIN" | cut -c1-12)
    else
        PACS_NOTE="pacsnode binary not found at $PACSNODE_BIN"
        log "$PACS_NOTE: skipping pacsnode"
    fi
fi

dest_start
if want orthanc || { want pacsnode && [ -z "$PACS_NOTE" ]; }; then pg_start; fi
if want orthanc; then orthanc_start || log "Orthanc: $ORTHANC_NOTE; not measured"; fi
if want pacsnode && [ -z "$PACS_NOTE" ]; then pacs_start || log "pacsnode: $PACS_NOTE; not measured"; fi
# the loads leave ~1 GB of dirty pages and Orthanc's stable-study
# bookkeeping (StableAge 5 s): both are over before the first run
sync; sleep $(( SETTLE_SECONDS > 8 ? SETTLE_SECONDS : 8 ))

# Repetition 0 is a warm-up of every path, not recorded: the binaries, the
# source files (into the page cache, as storescu's are) and the lazy
# initialisations of each server get exercised once. A source whose warm-up
# move fails is not measured further.
# The order changes from one round to the next and goes through all six
# permutations: each source runs first, second and last equally often, and
# after each of the others equally often (with REPEAT a multiple of 6). A
# mere rotation of one cyclic order would always put the same source right
# after the same other one.
ORDERS=("storescu orthanc pacsnode" "pacsnode storescu orthanc" "orthanc pacsnode storescu"
        "storescu pacsnode orthanc" "orthanc storescu pacsnode" "pacsnode orthanc storescu")
for REP in $(seq 0 "$REPEAT"); do
    [ "$REP" = 0 ] && log "warm-up round (not recorded)" || log "round $REP of $REPEAT"
    for src in ${ORDERS[$(( REP == 0 ? 0 : (REP - 1) % 6 ))]}; do
        run_one "$src"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
OTHER_BENCH_END=$(pgrep -f 'bench/(store|find)/run\.sh' | xargs || true)

# ----- report ---------------------------------------------------------------
if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/move-$(date +%F)
    [ "$COUNT" = 1000 ] || base=$base-n$COUNT
    RESULTS_FILE=$base.txt
    i=2                        # never overwrite an earlier run of the day
    while [ -e "$RESULTS_FILE" ]; do RESULTS_FILE=$base-$i.txt; i=$((i + 1)); done
fi
mkdir -p "$(dirname "$RESULTS_FILE")"

PACSNODE_REV=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo "no commit")
{
    echo "started=$STARTED"
    echo "duration_s=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
    echo "load=$LOAD_START at the start, $LOAD_END at the end"
    echo "other_bench=${OTHER_BENCH:-none} at the start, ${OTHER_BENCH_END:-none} at the end"
    echo "host=$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
    echo "work_fs=$(df -PT "$WORK" | awk 'NR==2 {print $2 " on " $1}')"
    echo "dcmtk=$(dpkg-query -W -f='${Version}' dcmtk)"
    echo "orthanc=$(dpkg-query -W -f='${Version}' orthanc) orthanc-postgresql=$(dpkg-query -W -f='${Version}' orthanc-postgresql)"
    echo "postgresql=$("$PG_BIN/postgres" --version | awk '{print $3}')"
    if want pacsnode; then
        if [ -z "$PACSNODE_SHA" ]; then echo "pacsnode=$PACS_NOTE"
        else
            sha_end=$(sha256sum "$PACSNODE_BIN" 2>/dev/null | cut -c1-12)
            changed=""
            [ "$sha_end" = "$PACSNODE_SHA" ] || changed="; WARNING: the binary changed during the run (sha256 $sha_end at the end)"
            echo "pacsnode=$PACSNODE_BIN (repo commit $PACSNODE_REV; binary sha256 $PACSNODE_SHA, built $(date -r "$PACSNODE_BIN" '+%F %T')$changed)"
        fi
    else
        echo "pacsnode=not requested (--only $SOURCES)"
    fi
    echo "pacsnode_note=$PACS_NOTE"
    echo "orthanc_note=$ORTHANC_NOTE"
    echo "pdu=$PDU"
    echo "netns=$USE_NETNS"
    echo "repeat=$REPEAT"
    echo "settle_s=$SETTLE_SECONDS"
    echo "rss_interval_s=$RSS_INTERVAL"
} > "$WORK/meta.txt"

$PY "$HERE/report.py" "$RESULTS_TSV" "$WORK/meta.txt" | tee "$RESULTS_FILE"
log "table written to $RESULTS_FILE"

if awk -F'\t' '$3 != "ok" { bad = 1 } END { exit bad ? 0 : 1 }' "$RESULTS_TSV"; then
    log "some run did not deliver all $COUNT instances (see the table)"
    exit 1
fi
if { want orthanc && [ -n "$ORTHANC_NOTE" ]; } || { want pacsnode && [ -n "$PACS_NOTE" ]; }; then
    log "a source was not measured (see the table)"
    exit 1
fi
exit 0
