#!/usr/bin/env bash
# Storage commitment benchmark (issue 22): one CT study of N instances
# (512x512x16 bit, ~525 KB each, default N=1000; the study bench/store and
# bench/move use) stored into pacsnode, then a Storage Commitment N-ACTION-RQ
# for all of it from npm dcmjs-dimse (tests/js/commitment.js), REPEAT times
# with the report on the same association and on a new one, with the files
# in the page cache (as right after the modality sent them) and with the
# cache dropped (each file read from the disk to check its checksum).
# Prints the time to the N-ACTION-RSP and to the N-EVENT-REPORT-RQ, the
# target (report within 1 s of the N-ACTION) with PASS/FAIL, and the disk's
# floor (reading the same files cold with cat), and writes the table to
# bench/results/commit-<date>.txt.
#
# Usage (as root): bash bench/commit/run.sh [options]; see --help and
# bench/README.md ("commit/").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$(dirname "$HERE")/lib.sh"   # BENCH_DIR, REPO_DIR and the shared settings too

COUNT=${BENCH_COMMIT_COUNT:-1000}
REPEAT=${BENCH_COMMIT_REPEAT:-5}
STEPS="warm,cold"              # --only: page cache regimes

usage() {
    cat <<EOF
usage: bash bench/commit/run.sh [options]
  --count N             instances in the study (default 1000, or
                        \$BENCH_COMMIT_COUNT)
  --repeat R            requests per association kind and regime (default 5,
                        or \$BENCH_COMMIT_REPEAT)
  --only LIST           regimes, comma separated, from warm,cold (default both)
  --work-base DIR       where the temporary work dir is made (default
                        \$BENCH_WORK_BASE or /var/tmp; a real disk, not tmpfs)
  --results FILE        write the table here instead of
                        bench/results/commit-<date>[-n<N>].txt
  --no-netns            do not run the servers in a private network namespace
  --keep                keep the work dir (logs, store, cluster) afterwards
environment:
  PACSNODE_BIN          pacsnode binary (default: build/scp/pacsnode)
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
check_steps regime warm cold

DATA_DIR=$(ct_dir "$COUNT")
JS_DIR=$REPO_DIR/tests/js

# ---------------------------------------------------------------------------
# Outer phase: packages, user, the npm client, data; then the measurements in
# a private network namespace (loopback only).
# ---------------------------------------------------------------------------
if [ -z "${INNER:-}" ]; then
    bench_host_setup dcmtk postgresql python3 python3-pydicom python3-numpy iproute2 util-linux
    command -v node >/dev/null || die "node (Node.js) not found: the requester is npm dcmjs-dimse"
    if [ ! -d "$JS_DIR/node_modules/dcmjs-dimse" ]; then
        log "installing tests/js's npm packages (npm ci)"
        (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/js failed"
    fi
    ct_data "$DATA_DIR" "$COUNT"
    bench_netns_enter "$HERE/run.sh" "${ARGS[@]}"
    INNER=1
fi

# ---------------------------------------------------------------------------
# Inner phase.
# ---------------------------------------------------------------------------
bench_started
bench_inner_setup commit
: > "$WORK/meta.txt"
pacsnode_check || true
data_lists "$DATA_DIR" "$COUNT"
mapfile -t FILES < "$LISTS/all"
pg_start

LISTEN_PID=""
bench_cleanup_hook() {         # bench/lib.sh's exit: the report listener too
    if [ -n "${LISTEN_PID:-}" ]; then kill -TERM "$LISTEN_PID" 2>/dev/null || true; fi
}

# the requester's SCP for reports on a new association
LISTEN_PORT=$(free_port)
node "$JS_DIR/commitment.js" listen "$LISTEN_PORT" "$SCU_AE" > "$WORK/listener.out" 2> "$WORK/listener.err" &
LISTEN_PID=$!
for _ in $(seq 1 200); do grep -q '"listening"' "$WORK/listener.out" 2>/dev/null && break; sleep 0.05; done
grep -q '"listening"' "$WORK/listener.out" || die "the report listener did not start (see $WORK/listener.err)"

# pacsnode: bench/lib.sh's configuration, the requester a peer that may
# store and commit, its reports to the listener
DB=pacscommit
fresh_db "$DB"
mkdir -p "$WORK/pacsnode/storage"; chown -R "$RUN_USER:" "$WORK/pacsnode"
PACS_PORT=$(free_port)
{ pacs_conf "$PACS_PORT" "$WORK/pacsnode" "$DB" no
  peer_conf BENCHSCU "$SCU_AE" "$LISTEN_PORT" "store, commit"; } > "$WORK/pacsnode/pacsnode.conf"
start_server pacsnode "$WORK/pacsnode.log" env TCP_NODELAY=1 "$PACSNODE_BIN" -c "$WORK/pacsnode/pacsnode.conf"
wait_echo pacsnode "$PACS_PORT" PACSNODE "$WORK/pacsnode.log" || die "pacsnode did not start: $START_ERROR"
t0=$EPOCHREALTIME
storescu_load "$WORK/load.log" "$PACS_PORT" PACSNODE "${FILES[@]}" || die "storing the study failed"
log "$COUNT instances stored in $(secs_between "$t0" "$EPOCHREALTIME") s"
rows=$(db_count "$DB" "SELECT count(*) FROM instance")
[ "$rows" = "$COUNT" ] || die "pacsnode holds $rows instances after the load, not $COUNT"
psql_q "$DB" "SELECT json_agg(json_build_array(sop_class_uid, sop_uid) ORDER BY sop_uid) FROM instance" \
    > "$WORK/refs.json"
STORED_BYTES=$(psql_q "$DB" "SELECT sum(size) FROM instance")

# the disk's floor: the stored files read cold by cat, 8 at a time (the
# node's check reads several files at once, with reads started ahead)
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$EPOCHREALTIME
find "$WORK/pacsnode/storage" -type f -name '*.dcm' -print0 | xargs -0 -P 8 -n 16 cat > /dev/null
FLOOR_S=$(secs_between "$t0" "$EPOCHREALTIME")
n_files=$(find "$WORK/pacsnode/storage" -type f -name '*.dcm' | wc -l)
log "cold read of the $n_files stored files: $FLOOR_S s"

for regime in warm cold; do
    want "$regime" || continue
    if [ "$regime" = warm ]; then
        xargs -a "$LISTS/all" cat > /dev/null
        find "$WORK/pacsnode/storage" -type f -name '*.dcm' -print0 | xargs -0 cat > /dev/null
    fi
    log "$regime: $REPEAT requests of $COUNT references per association kind"
    $PY "$HERE/commitclient.py" --port "$PACS_PORT" --refs "$WORK/refs.json" --listen-out "$WORK/listener.out" \
        --out "$WORK/commit-$regime.json" --repeat "$REPEAT" $([ "$regime" = cold ] && echo --cold) \
        2> "$WORK/commitclient-$regime.log" || log "$regime: some request failed (see $WORK/commitclient-$regime.log)"
done

if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/commit-$(date +%F)
    [ "$COUNT" = 1000 ] || base=$base-n$COUNT
    RESULTS_FILE=$(results_path "$base")
fi
mkdir -p "$(dirname "$RESULTS_FILE")"
{
    meta_common
    echo "count=$COUNT"
    echo "repeat=$REPEAT"
    echo "stored_bytes=$STORED_BYTES"
    echo "floor_s=$FLOOR_S"
    echo "floor_files=$n_files"
    echo "dcmjs_dimse=$(node -p "require('$JS_DIR/node_modules/dcmjs-dimse/package.json').version")"
    echo "node=$(node --version)"
} >> "$WORK/meta.txt"
$PY "$HERE/report.py" "$WORK" | tee "$RESULTS_FILE"
log "table written to $RESULTS_FILE"
