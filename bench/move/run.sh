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
. "$(dirname "$HERE")/lib.sh"   # BENCH_DIR, REPO_DIR and the shared settings too

COUNT=${BENCH_MOVE_COUNT:-1000}
REPEAT=${BENCH_MOVE_REPEAT:-12}
STEPS="storescu,orthanc,pacsnode"   # --only: the sources
SETTLE_SECONDS=${BENCH_SETTLE_SECONDS:-5}   # pause after each run (see settle)
RSS_INTERVAL=0.05                           # seconds between RSS samples

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
        *) bench_option "$@"; shift "$OPT_SHIFT" ;;   # bench/lib.sh: --work-base, --results, ...
    esac
done
need_int --count "$COUNT" 1
need_int --repeat "$REPEAT" 1
case "$SETTLE_SECONDS" in ''|*[!0-9.]*) echo "run.sh: BENCH_SETTLE_SECONDS must be a number" >&2; exit 2 ;; esac
check_steps source storescu orthanc pacsnode

# The same generator and cache as bench/store: one patient, one study, one
# series of COUNT CT instances.
DATA_DIR=$(ct_dir "$COUNT")

# ---------------------------------------------------------------------------
# Outer phase (host network namespace): packages, user, data. Then re-run
# ourselves inside a fresh network namespace whose only interface is lo, so
# storescp and Orthanc (which cannot be bound to one address) are reachable
# on 127.0.0.1 only.
# ---------------------------------------------------------------------------
if [ -z "${INNER:-}" ]; then
    bench_host_setup dcmtk orthanc orthanc-postgresql postgresql python3 python3-pydicom python3-numpy iproute2 util-linux

    ct_data "$DATA_DIR" "$COUNT"

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
bench_cleanup_hook() {         # bench/lib.sh's exit: the RSS sampler too
    if [ -n "${SAMPLER_PID:-}" ]; then kill -TERM "$SAMPLER_PID" 2>/dev/null || true; fi
}

# ----- data -----------------------------------------------------------------
data_lists "$DATA_DIR" "$COUNT"
mapfile -t FILES < "$LISTS/all"
TOTAL_BYTES=$LIST_BYTES

# ----- PostgreSQL cluster ---------------------------------------------------

# load NAME PORT CALLED_AE: C-STORE the study with one storescu (not timed)
load() {
    local name=$1 port=$2 aec=$3 t0
    t0=$EPOCHREALTIME
    storescu_load "$WORK/load-$name.log" "$port" "$aec" "${FILES[@]}" || return 1
    log "  $COUNT instances stored into $name in $(secs_between "$t0" "$EPOCHREALTIME") s"
}

# ----- the destination: one storescp for every run (bench/lib.sh) ----------

# ----- Orthanc --------------------------------------------------------------
ORTHANC_PORT=""
ORTHANC_NOTE=""
orthanc_start() {
    local dir=$WORK/orthanc db=orthanc_move
    fresh_db "$db"
    ORTHANC_PORT=$(free_port)
    # bench/lib.sh's configuration (every key not set keeps Orthanc's
    # default; see bench/README.md) plus the two modalities C-MOVE needs:
    # the destination, and the requester allowed to move. SynchronousCMove
    # stays at its default, true: the C-MOVE is answered as it sends.
    # StableAge 5 instead of 60: the "stable study" bookkeeping after the
    # load is over before the first measurement (run.sh waits for it).
    orthanc_conf "$dir" pacsnode-bench-move "$db" "$ORTHANC_PORT" "{
        \"DicomAlwaysAllowMove\": false,
        \"DicomModalities\": {
            \"$DEST_AE\": { \"AET\": \"$DEST_AE\", \"Host\": \"127.0.0.1\", \"Port\": $DEST_PORT },
            \"$SCU_AE\": { \"AET\": \"$SCU_AE\", \"Host\": \"127.0.0.1\", \"Port\": 104, \"AllowMove\": true } },
        \"SynchronousCMove\": true, \"StableAge\": 5 }"
    start_server orthanc "$WORK/orthanc.log" env TCP_NODELAY=1 Orthanc "$dir/orthanc.json"
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
    # bench/lib.sh's configuration plus the two peers: the requester may
    # store (the load) and move; the destination only receives. Unknown
    # calling AEs are refused, as in a production configuration.
    { pacs_conf "$PACS_PORT" "$dir" "$db" no
      peer_conf BENCHSCU "$SCU_AE" 104 "store, move"
      peer_conf MOVEDEST "$DEST_AE" "$DEST_PORT" store; } > "$cfg"
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

# dest_ticks: CPU time (user + system, clock ticks) the storescp has used
CLK_TCK=$(getconf CLK_TCK)
dest_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$(cat "$WORK/movedest.pid")/stat"; }
dest_cpu_since() { awk -v a="$1" -v b="$(dest_ticks)" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'; }

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
    read -r files rbytes <<< "$(dest_files)"
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
    movescu_study "$port" "$aec" "$STUDY_UID" "$WORK/move-$tag.log" || rc=$?
    t1=$EPOCHREALTIME
    DEST_CPU=$(dest_cpu_since "$d0")
    sampler_stop
    secs=$(secs_between "$t0" "$t1")
    read -r files rbytes <<< "$(dest_files)"
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
bench_started
log "work dir $WORK; study of $COUNT files, $TOTAL_BYTES bytes; max PDU $PDU; load average: $LOAD_START"
# Another benchmark on this machine skews everything: say so in the report.
OTHER_BENCH=$(other_benches)
[ -z "$OTHER_BENCH" ] || log "WARNING: another benchmark is running ($OTHER_BENCH): figures will be skewed"

if want pacsnode; then pacsnode_check || PACS_NOTE=$PACSNODE_NOTE; else PACSNODE_NOTE="not requested (--only $STEPS)"; fi

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
OTHER_BENCH_END=$(other_benches)

# ----- report ---------------------------------------------------------------
if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/move-$(date +%F)
    [ "$COUNT" = 1000 ] || base=$base-n$COUNT
    RESULTS_FILE=$(results_path "$base")   # never overwrites an earlier run of the day
fi
mkdir -p "$(dirname "$RESULTS_FILE")"

{
    meta_common orthanc-postgresql
    echo "other_bench=${OTHER_BENCH:-none} at the start, ${OTHER_BENCH_END:-none} at the end"
    echo "pacsnode_note=$PACS_NOTE"
    echo "orthanc_note=$ORTHANC_NOTE"
    echo "pdu=$PDU"
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
