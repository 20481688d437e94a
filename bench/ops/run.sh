#!/usr/bin/env bash
# Operations benchmark: pacsnodectl import, reindex and verify of two data
# sets side by side in one run, beside cat of the same files:
# - "ct": N synthetic CT instances (512x512x16 bit, ~512 KB each; bench/store's
#   data set);
# - "small": S small instances (~9 KB: 64x64x16 bit, bench/find's patients,
#   studies and series; bench/ops/gen_small.py).
# Per set: import into an empty storage root and database (timed once: it is
# also how the files get there), then R rounds of: cat and verify with the
# files in the page cache (warm), reindex into an empty database (warm), cat
# with verify's threads and with as many readers as verify keeps reads in
# flight, verify and reindex after dropping the page cache (cold). Prints
# instances/s, MB/s, the CPU seconds of the command, of PostgreSQL and of the
# rest of the machine per run, verify against cat (target: >= 0.8x), the
# commands' own accounts, and writes it all to bench/results/ops-<date>.txt.
#
# Usage (as root): bash bench/ops/run.sh [--count N] [--small S] [--repeat R] [--jobs J] [--wait-quiet]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_DIR=$(dirname "$HERE")
. "$BENCH_DIR/lib.sh"
REPO_DIR=$(dirname "$BENCH_DIR")

COUNT=2000
SMALL=100000
REPEAT=3
JOBS=2
WAIT_QUIET=0
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
CTL=${PACSNODECTL_BIN:-$REPO_DIR/build/ctl/pacsnodectl}
RUN_USER=pacsnode
RESULTS_FILE=""
KEEP=0
TARGET=0.8
# verify keeps 16 files a thread in flight (ctl/verify.c WINDOW_PER_JOB)
VERIFY_WINDOW_PER_JOB=16

usage() {
    cat <<EOF
usage: bash bench/ops/run.sh [options]
  --count N         CT instances (default 2000; 0: none)
  --small S         small instances (default 100000; 0: none)
  --repeat R        rounds of the warm and cold runs; the table shows medians (default 3)
  --jobs J          --jobs of import, reindex and verify, and cat's readers (default 2)
  --wait-quiet      before each run, wait (at most 15 minutes) until other work on the
                    machine stops; a run during which the rest of the machine kept more
                    than 0.3 CPUs busy is done again (up to 3 tries)
  --work-base DIR   where the work dir is made (default \$BENCH_WORK_BASE or /var/tmp; a real disk)
  --results FILE    the report's file (default bench/results/ops-<date>[-n<N>-s<S>].txt)
  --keep            keep the work dir (cluster, storage, outputs)
environment: PACSNODECTL_BIN (default build/ctl/pacsnodectl)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --count) COUNT=${2:?}; shift 2 ;;
        --small) SMALL=${2:?}; shift 2 ;;
        --repeat) REPEAT=${2:?}; shift 2 ;;
        --jobs) JOBS=${2:?}; shift 2 ;;
        --wait-quiet) WAIT_QUIET=1; shift ;;
        --work-base) WORK_BASE=${2:?}; shift 2 ;;
        --results) RESULTS_FILE=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$COUNT$SMALL$REPEAT$JOBS" in *[!0-9]*) echo "run.sh: --count, --small, --repeat and --jobs need integers" >&2; exit 2 ;; esac
[ "$COUNT" -gt 0 ] || [ "$SMALL" -gt 0 ] || { echo "run.sh: nothing to measure (--count 0 and --small 0)" >&2; exit 2; }
[ "$SMALL" = 0 ] || [ "$SMALL" -ge 100 ] || { echo "run.sh: --small needs at least 100 (bench/find's model)" >&2; exit 2; }
[ "$REPEAT" -ge 1 ] && [ "$JOBS" -ge 1 ] || { echo "run.sh: --repeat and --jobs need at least 1" >&2; exit 2; }
[ -x "$CTL" ] || die "pacsnodectl not found: $CTL (build it, or set PACSNODECTL_BIN)"
DEEP=$((JOBS * VERIFY_WINDOW_PER_JOB))
T_START=$EPOCHREALTIME

bench_host_setup postgresql python3 python3-pydicom python3-numpy
mkdir -p "$BENCH_DIR/.cache"
SETS=()
if [ "$COUNT" -gt 0 ]; then
    CT_DATA=$BENCH_DIR/.cache/store-n$COUNT-v1     # the same data set as bench/store
    if [ ! -f "$CT_DATA/.complete" ]; then
        log "generating $COUNT CT instances into $CT_DATA"
        rm -rf "$CT_DATA"
        /usr/bin/python3 "$BENCH_DIR/store/gen_data.py" "$CT_DATA" "$COUNT" >&2
    fi
    SETS+=(ct)
fi
if [ "$SMALL" -gt 0 ]; then
    # the cache is keyed on the generators' own text: a change makes new files
    hash=$(cat "$HERE/gen_small.py" "$BENCH_DIR/find/gen.py" "$BENCH_DIR/find/dicomenc.py" | sha256sum | cut -c1-10)
    SMALL_DATA=$BENCH_DIR/.cache/ops-small-n$SMALL-$hash
    if [ ! -f "$SMALL_DATA/.complete" ]; then
        find "$BENCH_DIR/.cache" -maxdepth 1 -name "ops-small-n$SMALL-*" ! -path "$SMALL_DATA" -exec rm -rf {} +
        rm -rf "$SMALL_DATA"
        log "generating $SMALL small instances into $SMALL_DATA"
        /usr/bin/python3 "$HERE/gen_small.py" "$SMALL_DATA" "$SMALL" >&2
    fi
    SETS+=(small)
fi
set_data() { if [ "$1" = ct ]; then echo "$CT_DATA"; else echo "$SMALL_DATA"; fi; }
set_count() { if [ "$1" = ct ]; then echo "$COUNT"; else echo "$SMALL"; fi; }
set_bytes() { awk -F= '$1 == "bytes" { print $2 }' "$(set_data "$1")/.complete"; }
for s in "${SETS[@]}"; do chmod -R a+rX "$(set_data "$s")"; done

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
PORT=$(free_port)
for s in "${SETS[@]}"; do
    runuser -u "$RUN_USER" -- mkdir "$WORK/storage-$s"
    cat > "$WORK/$s.conf" <<EOF
[node]
ae_title = PACSNODE
bind = 127.0.0.1
port = $PORT
[storage]
root = $WORK/storage-$s
[database]
conninfo = host=$SOCK user=postgres dbname=pacsnode_$s
[http]
port = 0
EOF
    chmod 644 "$WORK/$s.conf"
done

fresh_db() {                   # fresh_db SET
    "${PSQL[@]}" postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS pacsnode_$1" \
        -c "CREATE DATABASE pacsnode_$1"
}

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

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

# The CPU seconds user-space work has used since boot: the busy time of
# /proc/stat (user, nice, system) less what kernel threads used. A run's
# delta, less the command's and PostgreSQL's own, is what other sessions
# kept busy; a disk-bound run's own write-back and interrupts (kernel
# threads, irq and softirq time) are not taken for other work, nor steal
# (other virtual machines). lib.sh's machine_cpu, for --wait-quiet's
# waiting, counts them all.
user_cpu() {
    # (a process that ends while cat reads makes cat fail: never mind)
    { head -n1 /proc/stat; cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v hz="$(getconf CLK_TCK)" '
        NR == 1 { busy = $2 + $3 + $4; next }
        { sub(/^.*\) /, ""); if (int($7 / 2097152) % 2) k += $12 + $13 }   # PF_KTHREAD
        END { printf "%.2f\n", (busy - k) / hz }'
}

TSV=$WORK/results.tsv
: > "$TSV"
SHARED_CPU=0.3
SHARED_RUNS=0
# measure SET NAME OUTFILE PREP CMD...: one run as $RUN_USER, after PREP
# (shell text, run again before each try: "cold" drops the page cache,
# "fresh_db SET" empties a database for reindex, "true" nothing); a row of
# the TSV: set, name, seconds (the wall time of
# runuser, start-up and exit included), the command's CPU
# seconds, PostgreSQL's, the rest of the machine's, ok|shared. With
# --wait-quiet a run during which the rest of the machine kept more than
# SHARED_CPU CPUs busy is done again (3 tries; the last is kept), but for
# import (its files are there after the first; 100,000 take minutes).
measure() {
    local set=$1 name=$2 out=$3 prep=$4; shift 4
    local try pg0 pg1 m0 m1 t0 t1 t u s cmd pg other state
    for try in 1 2 3; do
        wait_quiet
        eval "$prep"
        pg0=$(pg_cpu); m0=$(user_cpu); t0=$EPOCHREALTIME
        runuser -u "$RUN_USER" -- /usr/bin/time -f "%U %S" -o "$WORK/time.txt" "$@" > "$out" 2>&1 || true
        t1=$EPOCHREALTIME; m1=$(user_cpu); pg1=$(pg_cpu)
        t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        # the last line: before it, time says when the command failed
        read -r u s < <(tail -n1 "$WORK/time.txt")
        cmd=$(awk -v a="$u" -v b="$s" 'BEGIN { printf "%.2f", a + b }')
        pg=$(awk -v a="$pg0" -v b="$pg1" 'BEGIN { printf "%.2f", b - a }')
        other=$(awk -v a="$m0" -v b="$m1" -v c="$cmd" -v p="$pg" 'BEGIN { x = b - a - c - p; printf "%.2f", x < 0 ? 0 : x }')
        state=ok
        # (below 0.05 CPU seconds in all it is runuser's and these samples' own)
        if [ "$WAIT_QUIET" = 1 ] && awk -v o="$other" -v t="$t" -v lim="$SHARED_CPU" 'BEGIN { exit !(o > 0.05 && o / t > lim) }'; then
            state=shared
        fi
        if [ "$state" = shared ] && [ "$try" -lt 3 ] && [ "$name" != import ]; then
            printf '%s\t%s\t%s\t%s\t%s\t%s\tshared\n' "$set" "$name" "$t" "$cmd" "$pg" "$other" >> "$TSV"
            SHARED_RUNS=$((SHARED_RUNS + 1))
            log "  $set $name: the rest of the machine kept $(awk -v o="$other" -v t="$t" 'BEGIN { printf "%.2f", o / t }') CPUs busy: again (--wait-quiet)"
            continue
        fi
        # the third try is kept, shared or not
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$set" "$name" "$t" "$cmd" "$pg" "$other" \
            "$([ "$state" = ok ] && echo ok || echo kept)" >> "$TSV"
        log "$set $name: $t s"
        return 0
    done
}

# cat of a set's stored files: the list in verify's order (the index's,
# by path in byte order), NUL-separated, split by xargs into batches of
# about a quarter of each reader's share, P cat processes at a time.
cat_cmd() {                    # cat_cmd SET P -> the sh -c text
    local n k
    n=$(set_count "$1")
    k=$(( (n + 4 * $2 - 1) / (4 * $2) ))
    echo "xargs -0 -P $2 -n $k cat < $WORK/files-$1.list > /dev/null"
}

check_verify() {               # check_verify OUTFILE COUNT: a clean verify of every file
    grep -q "^verified $2 files, .*: 0 missing, 0 wrong size, 0 wrong checksum, 0 not the instance named; 0 orphans, 0 recent" "$1" \
        || { cat "$1" >&2; die "a verify did not find every file sound ($1)"; }
}

for s in "${SETS[@]}"; do
    n=$(set_count "$s")
    data=$(set_data "$s")
    conf=$WORK/$s.conf
    log "$s: import --jobs $JOBS of $n files"
    measure "$s" import "$WORK/$s-import.out" "fresh_db $s" "$CTL" -c "$conf" import --jobs "$JOBS" "$data"
    # import says 1 more for the data set's .complete, which is not DICOM
    grep -q "imported $((n + 1)) files: $n stored" "$WORK/$s-import.out" \
        || { tail -n 5 "$WORK/$s-import.out" >&2; die "import did not store every file"; }
    find "$WORK/storage-$s" -name '*.dcm' -print0 | LC_ALL=C sort -z > "$WORK/files-$s.list"
    chmod 644 "$WORK/files-$s.list"
    [ "$(tr -cd '\0' < "$WORK/files-$s.list" | wc -c)" = "$n" ] || die "$s: not $n files in the storage"
    for r in $(seq 1 "$REPEAT"); do
        log "$s: round $r of $REPEAT"
        runuser -u "$RUN_USER" -- sh -c "$(cat_cmd "$s" "$JOBS")"   # warm: in the page cache
        measure "$s" cat-warm "$WORK/$s-cat-warm-$r.out" true sh -c "$(cat_cmd "$s" "$JOBS")"
        measure "$s" verify-warm "$WORK/$s-verify-warm-$r.out" true "$CTL" -c "$conf" verify --jobs "$JOBS"
        check_verify "$WORK/$s-verify-warm-$r.out" "$n"
        measure "$s" reindex-warm "$WORK/$s-reindex-warm-$r.out" "fresh_db $s" "$CTL" -c "$conf" reindex --jobs "$JOBS"
        measure "$s" cat-cold "$WORK/$s-cat-cold-$r.out" cold sh -c "$(cat_cmd "$s" "$JOBS")"
        measure "$s" cat-cold-deep "$WORK/$s-cat-cold-deep-$r.out" cold sh -c "$(cat_cmd "$s" "$DEEP")"
        measure "$s" verify-cold "$WORK/$s-verify-cold-$r.out" cold "$CTL" -c "$conf" verify --jobs "$JOBS"
        check_verify "$WORK/$s-verify-cold-$r.out" "$n"
        measure "$s" reindex-cold "$WORK/$s-reindex-cold-$r.out" "fresh_db $s; cold" "$CTL" -c "$conf" reindex --jobs "$JOBS"
    done
    for f in "$WORK/$s"-reindex-*.out; do
        grep -q "$n instances indexed" "$f" || { tail -n 5 "$f" >&2; die "a reindex did not index every file ($f)"; }
    done
done

if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/ops-$(date +%F)$([ "$COUNT" = 2000 ] || echo "-n$COUNT")$([ "$SMALL" = 100000 ] || echo "-s$SMALL")
    RESULTS_FILE=$base.txt
    i=2
    while [ -e "$RESULTS_FILE" ]; do RESULTS_FILE=$base-$i.txt; i=$((i + 1)); done
fi
mkdir -p "$(dirname "$RESULTS_FILE")"
{
    echo "bench/ops: pacsnodectl import, reindex and verify beside cat, --jobs $JOBS, median of $REPEAT rounds"
    for s in "${SETS[@]}"; do
        if [ "$s" = ct ]; then what="CT instances, 512x512x16 bit (bench/store/gen_data.py)"
        else what="small instances, 64x64x16 bit, bench/find's patients, studies and series (bench/ops/gen_small.py)"; fi
        echo "  $s: $(set_count "$s") $what, $(set_bytes "$s") bytes"
    done
    echo "commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO_DIR" diff --quiet HEAD -- ctl scp db 2>/dev/null || echo ' (+ uncommitted changes)'), $(date -u '+%F %T UTC'), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo)"
    echo "work dir on $(df -PT "$WORK" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
    echo "cold: sync; echo 3 > /proc/sys/vm/drop_caches before the run (a VM's host may still cache its disk)"
    echo "cat: runuser -u $RUN_USER -- sh -c 'xargs -0 -P P -n K cat < LIST > /dev/null', LIST every stored file,"
    echo "     absolute paths, in verify's order (LC_ALL=C sort), K = count / (4 P) rounded up; P = $JOBS (verify's threads)"
    echo "     and, cold, P = $DEEP (cat-cold-deep: as many reads in flight as verify keeps, $VERIFY_WINDOW_PER_JOB a thread)"
    [ "$WAIT_QUIET" = 0 ] || echo "--wait-quiet: waited $QUIET_WAITED s for a quiet machine; $SHARED_RUNS runs done again (the rest of the machine > $SHARED_CPU CPUs busy)"
    echo
    args=()
    for s in "${SETS[@]}"; do args+=("$s" "$(set_count "$s")" "$(set_bytes "$s")"); done
    /usr/bin/python3 "$HERE/report.py" "$TSV" "$TARGET" "$JOBS" "$DEEP" "${args[@]}"
    echo
    echo "the commands' own accounts, per run:"
    for s in "${SETS[@]}"; do
        for f in "$WORK/$s"-reindex-*.out; do
            printf '%s: %s\n' "$(basename "$f" .out)" "$(grep -E 'files/s, [0-9]+ MB/s: walk' "$f")"
        done
        for f in "$WORK/$s"-verify-*.out; do
            printf '%s: %s\n' "$(basename "$f" .out)" "$(grep -E '^verified ' "$f" | sed -E 's/: 0 missing.*recent unnamed files//')"
        done
    done
    echo
    awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "the whole run took %.0f s\n", b - a }'
} | tee "$RESULTS_FILE"
log "report written to $RESULTS_FILE"
