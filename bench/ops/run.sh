#!/usr/bin/env bash
# Operations benchmark: pacsnodectl import and pacsnodectl reindex of N
# synthetic CT instances (512x512x16 bit, ~512 KB each; bench/store's data
# set), side by side in one run: import into an empty storage root and
# database, then reindex of what it stored into an empty database, with the
# files in the page cache (warm) and after dropping it (cold). Prints
# instances/s, MB/s and the CPU seconds of pacsnodectl and of PostgreSQL per
# run, the reindex's own account of where its time went, and writes the
# table to bench/results/ops-<date>.txt.
#
# Usage (as root): bash bench/ops/run.sh [--count N] [--repeat R] [--jobs J]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_DIR=$(dirname "$HERE")
. "$BENCH_DIR/lib.sh"
REPO_DIR=$(dirname "$BENCH_DIR")

COUNT=2000
REPEAT=3
JOBS=2
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
CTL=${PACSNODECTL_BIN:-$REPO_DIR/build/ctl/pacsnodectl}
RUN_USER=pacsnode
RESULTS_FILE=""
KEEP=0

usage() {
    cat <<EOF
usage: bash bench/ops/run.sh [options]
  --count N         instances (default 2000)
  --repeat R        runs of each reindex measurement; the table shows the median (default 3)
  --jobs J          --jobs of import and reindex (default 2)
  --work-base DIR   where the work dir is made (default \$BENCH_WORK_BASE or /var/tmp; a real disk)
  --results FILE    the table's file (default bench/results/ops-<date>[-n<N>].txt)
  --keep            keep the work dir (cluster, storage, outputs)
environment: PACSNODECTL_BIN (default build/ctl/pacsnodectl)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --count) COUNT=${2:?}; shift 2 ;;
        --repeat) REPEAT=${2:?}; shift 2 ;;
        --jobs) JOBS=${2:?}; shift 2 ;;
        --work-base) WORK_BASE=${2:?}; shift 2 ;;
        --results) RESULTS_FILE=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$COUNT$REPEAT$JOBS" in *[!0-9]*) echo "run.sh: --count, --repeat and --jobs need integers" >&2; exit 2 ;; esac
[ -x "$CTL" ] || die "pacsnodectl not found: $CTL (build it, or set PACSNODECTL_BIN)"

bench_host_setup postgresql python3 python3-pydicom python3-numpy
DATA_DIR=$BENCH_DIR/.cache/store-n$COUNT-v1     # the same data set as bench/store
if [ ! -f "$DATA_DIR/.complete" ]; then
    log "generating $COUNT CT instances into $DATA_DIR"
    rm -rf "$DATA_DIR"
    /usr/bin/python3 "$BENCH_DIR/store/gen_data.py" "$DATA_DIR" "$COUNT" >&2
fi
chmod -R a+rX "$DATA_DIR"
BYTES=$(awk -F= '$1 == "bytes" { print $2 }' "$DATA_DIR/.complete")

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
mkdir -p "$WORK_BASE"
WORK=$(mktemp -d "$WORK_BASE/pacsnode-bench-ops.XXXXXX")
chmod 755 "$WORK"
chown "$RUN_USER:" "$WORK"
SOCK=$WORK/pgsock
PGDATA_DIR=$WORK/pgdata
cleanup() {
    runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "PostgreSQL in $PGDATA_DIR (socket only, the defaults but shared_buffers 1GB)"
runuser -u "$RUN_USER" -- mkdir -m 700 "$SOCK"
runuser -u "$RUN_USER" -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --no-locale >/dev/null
runuser -u "$RUN_USER" -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$WORK/postgres.log" -w \
    -o "-c listen_addresses='' -k $SOCK -c shared_buffers=1GB -c max_wal_size=4GB" start >/dev/null
PSQL=(psql -h "$SOCK" -U postgres -X -q -v ON_ERROR_STOP=1)
# a port nothing listens on: reindex refuses while "the node" answers there
PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
STORAGE=$WORK/storage
runuser -u "$RUN_USER" -- mkdir "$STORAGE"
cat > "$WORK/pacsnode.conf" <<EOF
[node]
ae_title = PACSNODE
bind = 127.0.0.1
port = $PORT
[storage]
root = $STORAGE
[database]
conninfo = host=$SOCK user=postgres dbname=pacsnode
[http]
port = 0
EOF
chmod 644 "$WORK/pacsnode.conf"

fresh_db() {
    "${PSQL[@]}" postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS pacsnode" \
        -c "CREATE DATABASE pacsnode"
}

# The CPU seconds PostgreSQL has used: the postmaster's own and its reaped
# children's (a backend's time is its parent's once it ends), and its live
# children's.
pg_cpu() {
    local pm hz
    pm=$(head -n1 "$PGDATA_DIR/postmaster.pid")
    hz=$(getconf CLK_TCK)
    { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
      for c in $(cat "/proc/$pm/task/$pm/children"); do awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || true; done
    } | awk -v hz="$hz" '{ s += $1 } END { printf "%.2f\n", s / hz }'
}

TSV=$WORK/results.tsv
: > "$TSV"
# measure NAME OUTFILE CMD...: one run as $RUN_USER; a row of the TSV
measure() {
    local name=$1 out=$2; shift 2
    local pg0 pg1 t
    wait_quiet
    pg0=$(pg_cpu)
    runuser -u "$RUN_USER" -- /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" "$@" > "$out" 2>&1 || true
    pg1=$(pg_cpu)
    # the last line: before it, time says when the command failed (import
    # says 1 for the data set's .complete, which is not DICOM)
    read -r t u s < <(tail -n1 "$WORK/time.txt")
    printf '%s\t%s\t%s\t%s\n' "$name" "$t" "$(awk -v a="$u" -v b="$s" 'BEGIN { print a + b }')" \
        "$(awk -v a="$pg0" -v b="$pg1" 'BEGIN { print b - a }')" >> "$TSV"
    log "$name: $t s"
}

log "import --jobs $JOBS of $COUNT files"
fresh_db
measure import "$WORK/import.out" "$CTL" -c "$WORK/pacsnode.conf" import --jobs "$JOBS" "$DATA_DIR"
grep -q "imported $((COUNT + 1)) files: $COUNT stored" "$WORK/import.out" || { cat "$WORK/import.out" >&2; die "import did not store every file"; }

for r in $(seq 1 "$REPEAT"); do
    find "$STORAGE" -name '*.dcm' -print0 | xargs -0 cat > /dev/null   # warm: in the page cache
    fresh_db
    measure reindex-warm "$WORK/reindex-warm-$r.out" "$CTL" -c "$WORK/pacsnode.conf" reindex --jobs "$JOBS"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    fresh_db
    measure reindex-cold "$WORK/reindex-cold-$r.out" "$CTL" -c "$WORK/pacsnode.conf" reindex --jobs "$JOBS"
done
for f in "$WORK"/reindex-*.out; do
    grep -q "$COUNT instances indexed" "$f" || { cat "$f" >&2; die "a reindex did not index every file ($f)"; }
done

if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/ops-$(date +%F)$([ "$COUNT" = 2000 ] || echo "-n$COUNT")
    RESULTS_FILE=$base.txt
    i=2
    while [ -e "$RESULTS_FILE" ]; do RESULTS_FILE=$base-$i.txt; i=$((i + 1)); done
fi
mkdir -p "$(dirname "$RESULTS_FILE")"
{
    echo "bench/ops: pacsnodectl import and reindex of $COUNT CT instances ($BYTES bytes), --jobs $JOBS"
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%F %T UTC'), $(nproc) CPUs, median of $REPEAT runs for reindex"
    echo
    /usr/bin/python3 - "$TSV" "$COUNT" "$BYTES" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
n, size = int(sys.argv[2]), int(sys.argv[3])
print("%-14s %8s %10s %8s %14s %16s" % ("run", "s", "inst/s", "MB/s", "ctl CPU s", "PostgreSQL CPU s"))
for name in ("import", "reindex-warm", "reindex-cold"):
    got = [r for r in rows if r[0] == name]
    if not got:
        continue
    t = statistics.median(float(r[1]) for r in got)
    print("%-14s %8.2f %10.0f %8.0f %14.2f %16.2f" % (name, t, n / t, size / 1e6 / t,
          statistics.median(float(r[2]) for r in got), statistics.median(float(r[3]) for r in got)))
EOF
    echo
    echo "where the reindex's time went (its own account), per run:"
    for f in "$WORK"/reindex-*.out; do
        printf '%s: %s\n' "$(basename "$f" .out)" "$(grep -E 'files/s, [0-9]+ MB/s: walk' "$f")"
    done
} | tee "$RESULTS_FILE"
log "table written to $RESULTS_FILE"
