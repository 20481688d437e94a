#!/usr/bin/env bash
# Store benchmark: N synthetic CT instances (512x512x16 bit, ~512 KB each) sent
# with dcmtk storescu over 1 and over 4 parallel associations to
#   pacsnode, dcmtk storescp (files only) and Orthanc + PostgreSQL index.
# Prints instances/s and MB/s per receiver, the pacsnode ratios and PASS/FAIL
# against the targets, and writes the table to bench/results/.
# With --tls, also pacsnode over DICOM TLS and storescp +tls made durable
# (issue 19), the senders being storescu +tls with a client certificate.
#
# Usage (as root): bash bench/store/run.sh [--count N] [options]; see --help
# and bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$(dirname "$HERE")/lib.sh"   # BENCH_DIR, REPO_DIR and the shared settings too

COUNT=2000
STEPS="storescp,orthanc,pacsnode"   # --only: the receivers
INFO_ROWS=1              # also measure "storescp --ignore --bit-preserving" (1 assoc), "storescp --fork" (4)
                         # and storescp made durable (+ fsync: 1 assoc plain, 4 assoc --fork)
SETTLE_SECONDS=${BENCH_SETTLE_SECONDS:-8}   # pause after each run (see settle)
REPEAT=3
TLS=0                    # --tls: the TLS rows (pacsnode over TLS, storescp +tls [+ fsync])
WAIT_QUIET=0             # --wait-quiet: before each run, wait until other work on the machine stops
NODES=""                 # --nodes LIST: also pacsnode as N nodes on one database and storage root (issue 23)

usage() {
    cat <<EOF
usage: bash bench/store/run.sh [options]
  --count N             instances to send per measurement (default 2000)
  --repeat R            measurements per receiver and association count; the
                        table shows the median (default 3)
  --only LIST           receivers to run, comma separated, from
                        storescp,orthanc,pacsnode (default: all three)
  --no-info-rows        skip the informational "storescp --ignore
                        --bit-preserving", "storescp --fork" and
                        "storescp + fsync" rows
  --work-base DIR       where the temporary work dir is made (default
                        \$BENCH_WORK_BASE or /var/tmp; must be a real disk,
                        not tmpfs, for fsync to mean anything)
  --results FILE        write the table here instead of
                        bench/results/store-<date>[-n<N>].txt
  --tls                 also measure pacsnode over DICOM TLS and storescp +tls
                        made durable (+ fsync), senders storescu +tls with a
                        client certificate (P-256 certificates made in the
                        work dir); adds the TLS targets of issue 19 and the
                        CPU time of each run (default results file
                        bench/results/store-tls-<date>[-n<N>].txt)
  --wait-quiet          before each run, wait (at most 15 minutes) until the
                        machine's other work uses under 0.1 CPU (a shared
                        machine: another session's test suite), and do a
                        run again (up to 3 tries) when other work kept more
                        than 0.3 CPU busy during it
  --nodes LIST          also measure pacsnode as N identical nodes on one
                        PostgreSQL database and one storage root, for each N
                        of LIST (comma separated, e.g. 1,2,3): the $PARALLEL
                        associations dealt round-robin over the nodes' ports
                        (what a TCP front spreading associations does), with
                        the CPU each run costs (issue 23); adds the rows
                        "pacsnode, N node(s)"
  --no-netns            do not run the servers in a private network namespace
  --keep                keep the work dir (logs, stores, cluster) afterwards
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
        --no-info-rows) INFO_ROWS=0; shift ;;
        --tls) TLS=1; shift ;;
        --wait-quiet) WAIT_QUIET=1; shift ;;
        --nodes) NODES=${2:?}; shift 2 ;;
        --nodes=*) NODES=${1#*=}; shift ;;
        *) bench_option "$@"; shift "$OPT_SHIFT" ;;   # bench/lib.sh: --work-base, --results, ...
    esac
done
need_int --count "$COUNT" "$PARALLEL"
need_int --repeat "$REPEAT" 1
check_steps receiver storescp orthanc pacsnode
for n in ${NODES//,/ }; do need_int --nodes "$n" 1; done

DATA_DIR=$(ct_dir "$COUNT")

# ---------------------------------------------------------------------------
# Outer phase (host network namespace): packages, user, data. Then re-run
# ourselves inside a fresh network namespace that has only a loopback
# interface, so storescp and Orthanc (which cannot be bound to one address)
# are reachable on 127.0.0.1 only.
# ---------------------------------------------------------------------------
if [ -z "${INNER:-}" ]; then
    bench_host_setup dcmtk orthanc orthanc-postgresql postgresql python3 python3-pydicom python3-numpy iproute2 util-linux gcc libc6-dev \
        $([ "$TLS" = 0 ] || echo openssl)

    ct_data "$DATA_DIR" "$COUNT"

    bench_netns_enter "$HERE/run.sh" "${ARGS[@]}"
    INNER=1
fi

# ---------------------------------------------------------------------------
# Inner phase: the measurements.
# ---------------------------------------------------------------------------
bench_inner_setup store
RESULTS_TSV=$WORK/results.tsv
: > "$RESULTS_TSV"

count_files() {                # count_files DIR [EXCLUDED_SUBDIR]
    if [ -n "${2:-}" ]; then
        find "$1" -path "$1/$2" -prune -o -type f -print | wc -l
    else
        find "$1" -type f | wc -l
    fi
}

# ----- data lists -----------------------------------------------------------
data_lists "$DATA_DIR" "$COUNT"
TOTAL_BYTES=$LIST_BYTES

# cpu_of PID...: the CPU seconds (user + system) each PID's process tree has
# used so far: the processes alive (zombies included) and what they reaped;
# "-" for a PID that is not a number. PID may be "P1+P2+...": the sum of
# those trees (several nodes).
cpu_of() {
    /usr/bin/python3 - "$BENCH_DIR" "$@" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from lib import tree_cpu
roots = sys.argv[2:]
ok = [all(r.isdigit() for r in root.split("+")) for root in roots]
cpu = tree_cpu(*[[int(r) for r in root.split("+")] for root, good in zip(roots, ok) if good])
it = iter(cpu)
print(" ".join("%.2f" % next(it) if good else "-" for good in ok))
PY
}

pg_pid() { head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || echo -; }

# timed_send NAME K RECEIVER PORT CALLED_AE [tls]: send_parts (bench/lib.sh;
# arguments from K on)
# to the server started as NAME; sets SECS, and CPU: the CPU seconds of the
# run, tab separated: the receiver's process tree, the PostgreSQL cluster,
# the senders, and the rest of the machine (all CPUs' busy time during the
# run less those three: kernel threads, and any other work). Returns
# send's status.
timed_send() {
    local name=$1 a b m0 m1 rc=0 sender
    shift
    a=$(cpu_of "$(cat "$WORK/$name.pid")" "$(pg_pid)")
    m0=$(machine_cpu)
    SECS=$(send_parts "$@") || rc=1
    m1=$(machine_cpu)
    b=$(cpu_of "$(cat "$WORK/$name.pid")" "$(pg_pid)")
    sender=$(cat "$WORK/send-$2-$1-r$REP.cpu" 2>/dev/null || echo -)
    CPU=$(awk -v a="$a" -v b="$b" -v s="$sender" -v m="$m0 $m1" 'BEGIN {
        split(a, x, " "); split(b, y, " "); split(m, z, " ")
        for (i = 1; i <= 2; i++) d[i] = (x[i] == "-" || y[i] == "-") ? "-" : sprintf("%.2f", y[i] - x[i])
        o = z[2] - z[1]
        if (d[1] == "-" || d[2] == "-" || s == "-") o = "-"; else o = sprintf("%.2f", o - d[1] - d[2] - s)
        printf "%s\t%s\t%s\t%s", d[1], d[2], s, o }')
    return $rc
}

# record RECEIVER K STATUS SECONDS STORED NOTE  (uses $REP, and $CPU: the
# CPU seconds of the run, see timed_send; reset here)
CPU=$'-\t-\t-\t-'
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$REP" "$3" "$4" "$COUNT" "$TOTAL_BYTES" "$5" "$6" \
        "$CPU" >> "$RESULTS_TSV"
    CPU=$'-\t-\t-\t-'
    if [ "$3" = ok ]; then
        log "  -> $4 s, $(awk -v n="$COUNT" -v t="$4" 'BEGIN { printf "%.1f", n / t }') instances/s ($6)"
    else
        log "  -> FAILED: $5 of $COUNT stored ($6)"
    fi
}

# ----- PostgreSQL cluster ---------------------------------------------------

PG_OPTS="-c wal_sync_method=fdatasync"   # for pg_start (bench/lib.sh)

# storescp made durable: an LD_PRELOAD shim that fsyncs each file it
# writes before closing it, so its response waits for the disk.
FSYNC_SHIM=$WORK/fsync_on_close.so
cc -O2 -shared -fPIC -o "$FSYNC_SHIM" "$HERE/fsync_on_close.c" -ldl || die "could not build $HERE/fsync_on_close.c"
chmod 755 "$FSYNC_SHIM"

# --tls: a throw-away CA, the servers' and the senders' certificates (P-256
# ECDSA, bench/lib.sh), and what each TLS receiver negotiates with dcmtk's
# client (echoscu -d: the TLS stack and profile storescu uses), once per row.
TLS_NEGOTIATED=$WORK/tls-negotiated.txt
: > "$TLS_NEGOTIATED"
[ "$TLS" = 0 ] || tls_make_certs "$WORK/tls"
note_tls() {                   # note_tls LABEL PORT CALLED_AE
    grep -q "^$1	" "$TLS_NEGOTIATED" && return 0
    printf '%s\t%s\n' "$1" "$(tls_probe "$2" "$3")" >> "$TLS_NEGOTIATED"
}

# ----- receivers ------------------------------------------------------------
run_storescp() {               # run_storescp K [fork|ignore|durable|tls|tls-durable]
    local k=$1 mode=${2:-} name=storescp label=storescp secs rc=0 stored expect=$COUNT flags=() pre=()
    local tls="" durable="" srv_tls=()
    case $mode in
        fork) flags=(--fork) ;;
        # every byte received and written to /dev/null as it comes, not parsed
        ignore) flags=(--ignore --bit-preserving); expect=0 ;;
        # fsync of each file before the response; --fork on 4 associations,
        # so that it, like pacsnode, serves them at once
        durable) durable=1; [ "$k" = 1 ] || flags=(--fork) ;;
        # over TLS (--tls): dcmtk's default profile (non-downgrading BCP
        # 195), the node's certificate, client certificates required and
        # verified against the CA (-rc, its default), as pacsnode's [tls]
        tls) tls=1 ;;
        tls-durable) tls=1; durable=1; [ "$k" = 1 ] || flags=(--fork) ;;
    esac
    [ -z "$durable" ] || pre=(LD_PRELOAD="$FSYNC_SHIM")
    [ -z "$tls" ] || srv_tls=(+tls "$TLS_DIR/node.key" "$TLS_DIR/node.pem" +cf "$TLS_DIR/ca.pem")
    label="storescp${flags[*]:+ ${flags[*]}}${tls:+ +tls}${durable:+ + fsync}"
    local dir=$WORK/store-storescp-$k${mode:+-$mode} port
    mkdir -p "$dir"; chown "$RUN_USER:" "$dir"
    port=$(free_port)
    start_server "$name" "$dir.log" env TCP_NODELAY=1 "${pre[@]}" storescp "${flags[@]}" ${srv_tls[@]+"${srv_tls[@]}"} -dhl \
        -aet STORESCP --max-pdu "$PDU" -od "$dir" "$port"
    [ -z "$tls" ] || ECHO_OPTS=("${TLS_SCU[@]}")
    if ! wait_echo "$name" "$port" STORESCP "$dir.log"; then
        ECHO_OPTS=()
        stop_pidfile "$WORK/$name.pid"
        record "$label" "$k" FAIL "" 0 "did not start: $START_ERROR"
        retire "$dir"; return 0
    fi
    ECHO_OPTS=()
    [ -z "$tls" ] || note_tls "$label" "$port" STORESCP
    log "run $REP/$REPEAT: $label, $k association(s)"
    timed_send "$name" "$k" "storescp$mode" "$port" STORESCP ${tls:+tls} || rc=1
    secs=$SECS
    stop_pidfile "$WORK/$name.pid"
    stored=$(count_files "$dir")
    if [ $rc = 0 ] && [ "$stored" = "$expect" ]; then
        record "$label" "$k" ok "$secs" "$stored" "files in -od dir"
    else
        record "$label" "$k" FAIL "$secs" "$stored" "files in -od dir; sender rc=$rc"
    fi
    retire "$dir"; settle
}

run_orthanc() {                # run_orthanc K
    local k=$1 name=orthanc secs rc=0 stored files db=orthanc_bench_$1
    local dir=$WORK/orthanc-$k port
    fresh_db "$db"
    port=$(free_port)
    # bench/lib.sh's configuration as it is: every key not set there keeps
    # Orthanc's default (see bench/README.md), notably SyncStorageArea=true
    # (fsync of every stored file), StoreMD5ForAttachments=true.
    orthanc_conf "$dir" pacsnode-bench "$db" "$port"
    start_server "$name" "$dir.log" env TCP_NODELAY=1 Orthanc "$dir/orthanc.json"
    if ! wait_echo "$name" "$port" ORTHANC "$dir.log"; then
        stop_pidfile "$WORK/$name.pid"
        record Orthanc+PostgreSQL "$k" FAIL "" 0 "did not start: $START_ERROR"
        drop_db "$db"; retire "$dir"; return 0
    fi
    log "run $REP/$REPEAT: Orthanc+PostgreSQL, $k association(s)"
    timed_send "$name" "$k" orthanc "$port" ORTHANC || rc=1
    secs=$SECS
    stop_pidfile "$WORK/$name.pid"
    stored=$(db_count "$db" "SELECT count(*) FROM resources WHERE resourcetype = 3")
    files=$(count_files "$dir/storage")
    if [ $rc = 0 ] && [ "$stored" = "$COUNT" ] && [ "$files" = "$COUNT" ]; then
        record Orthanc+PostgreSQL "$k" ok "$secs" "$stored" "index rows; $files files"
    else
        record Orthanc+PostgreSQL "$k" FAIL "$secs" "$stored" "index rows; $files files; sender rc=$rc"
    fi
    drop_db "$db"; retire "$dir"; settle
}

run_pacsnode() {               # run_pacsnode K [tls]
    local k=$1 tls=${2:-} name=pacsnode secs rc=0 stored files db=pacsbench_$1 label=pacsnode mark
    local dir=$WORK/pacsnode-$k${2:+-$2} port cfg tls_port="" send_port
    mkdir -p "$dir/storage"; chown -R "$RUN_USER:" "$dir"
    fresh_db "$db"
    port=$(free_port)
    send_port=$port
    cfg=$dir/pacsnode.conf
    pacs_conf "$port" "$dir" "$db" > "$cfg"
    if [ -n "$tls" ]; then
        # the same node with its TLS listener (the plain one stays, idle):
        # the three lines of README.md's "TLS and peers"; client
        # certificates required (the default)
        label="pacsnode over TLS"
        tls_port=$(free_port)
        send_port=$tls_port
        tls_conf "$tls_port" >> "$cfg"
    fi
    start_server "$name" "$dir.log" env TCP_NODELAY=1 "$PACSNODE_BIN" -c "$cfg"
    local up=1
    wait_echo "$name" "$port" PACSNODE "$dir.log" || up=0
    if [ $up = 1 ] && [ -n "$tls" ]; then
        ECHO_OPTS=("${TLS_SCU[@]}")
        wait_echo "$name" "$tls_port" PACSNODE "$dir.log" || up=0
        ECHO_OPTS=()
    fi
    if [ $up = 0 ]; then
        stop_pidfile "$WORK/$name.pid"
        record "$label" "$k" FAIL "" 0 "did not start: $START_ERROR"
        drop_db "$db"; retire "$dir"; return 0
    fi
    [ -z "$tls" ] || note_tls "$label" "$tls_port" PACSNODE
    log "run $REP/$REPEAT: $label, $k association(s)"
    mark=$(pg_mark "$db")
    timed_send "$name" "$k" "pacsnode${tls:+-tls}" "$send_port" PACSNODE $tls || rc=1
    secs=$SECS
    stop_pidfile "$WORK/$name.pid"
    pg_cost "$label" "$k" "$db" "$mark"
    stored=$(db_count "$db" "SELECT count(*) FROM instance")
    files=$(count_files "$dir/storage" tmp)
    if [ $rc = 0 ] && [ "$stored" = "$COUNT" ]; then
        record "$label" "$k" ok "$secs" "$stored" "instance rows; $files files"
    else
        record "$label" "$k" FAIL "$secs" "$stored" "instance rows; $files files; sender rc=$rc"
    fi
    drop_db "$db"; retire "$dir"; settle
}

# What PostgreSQL pays for the stored instances (docs/scale.md), from the
# node's start to after its stop (a backend's statistics are reported when
# it ends), only this database busy: WAL bytes (the cluster's LSN moved),
# WAL records, full-page images and WAL fsyncs (pg_stat_wal), the
# database's transactions (read-only ones included) and its growth; then
# the instance table's rows, indexes and sizes.
PGCOST_TSV=$WORK/pgcost.tsv
: > "$PGCOST_TSV"
PGCOST_NOW="pg_current_wal_lsn(), (SELECT wal_records FROM pg_stat_wal), (SELECT wal_fpi FROM pg_stat_wal),
    (SELECT wal_sync FROM pg_stat_wal), (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
    pg_database_size(current_database())"
pg_mark() {                    # pg_mark DB: the PGCOST_NOW values
    psql_q "$1" "SELECT $PGCOST_NOW" | tr '|' ' '
}
pg_cost() {                    # pg_cost LABEL K DB MARK: a row of $PGCOST_TSV
    local label=$1 k=$2 db=$3 m=() row
    read -r -a m <<< "$4"
    [ "${#m[@]}" = 6 ] || return 0
    row=$(psql_q "$db" "SELECT pg_wal_lsn_diff(l, '${m[0]}'), r - ${m[1]}, f - ${m[2]}, s - ${m[3]}, x - ${m[4]},
            d - ${m[5]}, (SELECT count(*) FROM instance),
            (SELECT count(*) FROM pg_indexes WHERE tablename = 'instance'),
            pg_relation_size('instance'), pg_indexes_size('instance')
            FROM (SELECT $PGCOST_NOW) AS now (l, r, f, s, x, d)" | tr '|' '\t') || return 0
    printf '%s\t%s\t%s\t%s\n' "$label" "$k" "$REP" "$row" >> "$PGCOST_TSV"
}

# --nodes: N nodes of one site, each its own [node] node_id and port, on one
# database and one storage root (issue 23); the associations dealt over
# their ports (send_parts). The receiver's CPU is all N nodes' trees.
run_pacsnode_nodes() {         # run_pacsnode_nodes N K
    local n=$1 k=$2 secs rc=0 stored files db=pacsbench_nodes label i up=1 ports=() pids=() mark
    local dir=$WORK/pacsnode-nodes-$n port cfg
    label="pacsnode, $n node$([ "$n" = 1 ] || echo s)"
    mkdir -p "$dir/storage"; chown -R "$RUN_USER:" "$dir"
    fresh_db "$db"
    for i in $(seq 1 "$n"); do
        port=$(free_port)
        cfg=$dir/n$i.conf
        # the one key that differs between the nodes: node_id (and the port);
        # their web servers off (all would want 127.0.0.1:8042)
        { pacs_conf "$port" "$dir" "$db" | sed "s/^\[node\]\$/[node]\nnode_id = n$i/"
          printf '\n[http]\nport = 0\n'; } > "$cfg"
        start_server "pacsnode-n$i" "$dir/n$i.log" env TCP_NODELAY=1 "$PACSNODE_BIN" -c "$cfg"
        # one at a time: the first migrates the fresh database
        wait_echo "pacsnode-n$i" "$port" PACSNODE "$dir/n$i.log" || { up=0; break; }
        ports+=("$port")
        pids+=("$(cat "$WORK/pacsnode-n$i.pid")")
    done
    if [ $up = 0 ]; then
        for i in $(seq 1 "$n"); do stop_pidfile "$WORK/pacsnode-n$i.pid"; done
        record "$label" "$k" FAIL "" 0 "did not start: $START_ERROR"
        drop_db "$db"; retire "$dir"; return 0
    fi
    (IFS=+; echo "${pids[*]}") > "$WORK/pacsnodes.pid"
    log "run $REP/$REPEAT: $label, $k association(s) over ports ${ports[*]}"
    mark=$(pg_mark "$db")
    timed_send pacsnodes "$k" "pacsnode-x$n" "$(IFS=,; echo "${ports[*]}")" PACSNODE || rc=1
    secs=$SECS
    rm -f "$WORK/pacsnodes.pid"
    for i in $(seq 1 "$n"); do stop_pidfile "$WORK/pacsnode-n$i.pid"; done
    pg_cost "$label" "$k" "$db" "$mark"
    stored=$(db_count "$db" "SELECT count(*) FROM instance")
    files=$(count_files "$dir/storage" tmp)
    if [ $rc = 0 ] && [ "$stored" = "$COUNT" ] && [ "$files" = "$COUNT" ]; then
        record "$label" "$k" ok "$secs" "$stored" "instance rows; $files files"
    else
        record "$label" "$k" FAIL "$secs" "$stored" "instance rows; $files files; sender rc=$rc"
    fi
    drop_db "$db"; retire "$dir"; settle
}

# ----- main -----------------------------------------------------------------
bench_started
log "work dir $WORK; $COUNT files, $TOTAL_BYTES bytes; max PDU $PDU; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

if want pacsnode; then pacsnode_check || true; else PACSNODE_NOTE="not requested (--only $STEPS)"; fi
if want orthanc || { want pacsnode && [ -z "$PACSNODE_NOTE" ]; }; then pg_start; fi

# Warm-up, not timed: storescu and storescp binaries, libraries and the
# loopback path get exercised once before the first measured run.
warm_up() {
    local dir=$WORK/warmup port n
    mkdir -p "$dir"; chown "$RUN_USER:" "$dir"
    port=$(free_port)
    start_server warmup "$dir.log" env TCP_NODELAY=1 storescp -dhl -aet STORESCP --max-pdu "$PDU" -od "$dir" "$port"
    wait_echo warmup "$port" STORESCP "$dir.log" || die "storescp does not start"
    n=$(( COUNT < 200 ? COUNT : 200 ))
    mapfile -t files < <(head -n "$n" "$LISTS/all")
    storescu -aet BENCHSCU -aec STORESCP --max-pdu "$PDU" -td 60 127.0.0.1 "$port" "${files[@]}" \
        > "$WORK/send-warmup.log" 2>&1 || log "warm-up send failed (ignored; see $WORK/send-warmup.log)"
    stop_pidfile "$WORK/warmup.pid"
    if [ "$TLS" = 1 ]; then        # and storescu +tls, storescp +tls
        port=$(free_port)
        start_server warmup "$dir.log" env TCP_NODELAY=1 storescp +tls "$TLS_DIR/node.key" "$TLS_DIR/node.pem" \
            +cf "$TLS_DIR/ca.pem" -dhl -aet STORESCP --max-pdu "$PDU" -od "$dir" "$port"
        ECHO_OPTS=("${TLS_SCU[@]}")
        wait_echo warmup "$port" STORESCP "$dir.log" || die "storescp +tls does not start"
        ECHO_OPTS=()
        storescu -aet BENCHSCU -aec STORESCP --max-pdu "$PDU" -td 60 "${TLS_SCU[@]}" 127.0.0.1 "$port" "${files[@]}" \
            > "$WORK/send-warmup-tls.log" 2>&1 || log "TLS warm-up send failed (ignored; see $WORK/send-warmup-tls.log)"
        stop_pidfile "$WORK/warmup.pid"
    fi
    retire "$dir"; settle
}
warm_up

# Repetitions go round-robin over all receivers, so that slow drifts of the
# machine (other load, disk write-back) touch every receiver alike.
# One receiver's run, by name.
# measured RUN_FUNCTION ARGS...: one run. With --wait-quiet, a run during
# which the rest of the machine (not the receiver, its PostgreSQL or the
# senders: another session's work) kept more than SHARED_CPU CPUs busy on
# average is done again, up to 3 tries; its row stays in the TSV with the
# status "shared" and is left out of the table. The third try is kept.
SHARED_CPU=0.3
SHARED_RUNS=0
measured() {
    local try before other
    for try in 1 2 3; do
        before=$(wc -l < "$RESULTS_TSV")
        "$@"
        [ "$WAIT_QUIET" = 1 ] && [ "$try" -lt 3 ] || return 0
        [ "$(wc -l < "$RESULTS_TSV")" -gt "$before" ] || return 0
        other=$(tail -n1 "$RESULTS_TSV" | awk -F'\t' -v lim="$SHARED_CPU" \
            '$4 == "ok" && $13 != "-" && $13 / $5 > lim { printf "%.2f", $13 / $5 }')
        [ -n "$other" ] || return 0
        sed -i '$ s/\tok\t/\tshared\t/' "$RESULTS_TSV"
        SHARED_RUNS=$((SHARED_RUNS + 1))
        log "  the rest of the machine kept $other CPUs busy during that run: doing it again (--wait-quiet)"
    done
}

run_one() {                    # run_one RECEIVER K
    case $1 in
        storescp)
            if want storescp; then
                measured run_storescp "$2"
                if [ "$INFO_ROWS" = 1 ]; then
                    if [ "$2" = 1 ]; then measured run_storescp 1 ignore; else measured run_storescp "$2" fork; fi
                    measured run_storescp "$2" durable
                fi
            fi ;;
        orthanc) if want orthanc; then measured run_orthanc "$2"; fi ;;
        pacsnode) if want pacsnode && [ -z "$PACSNODE_NOTE" ]; then measured run_pacsnode "$2"; fi ;;
        # --tls: pacsnode over TLS; storescp +tls made durable (the
        # reference), and as it is (information)
        pacsnode-tls) if want pacsnode && [ -z "$PACSNODE_NOTE" ]; then measured run_pacsnode "$2" tls; fi ;;
        nodes-*) if want pacsnode && [ -z "$PACSNODE_NOTE" ]; then measured run_pacsnode_nodes "${1#nodes-}" "$2"; fi ;;
        storescp-tls)
            if want storescp; then
                measured run_storescp "$2" tls-durable
                if [ "$INFO_ROWS" = 1 ]; then measured run_storescp "$2" tls; fi
            fi ;;
    esac
}

# The disk's own floor (bench/lib.sh), at the start and at the end, printed
# beside the targets.
measure_floor start "$COUNT" "$TOTAL_BYTES"

# The order rotates from one repetition to the next: a receiver that runs
# right after another one wrote a gigabyte finds the disk still busy with it
# (on this VM, fsync latency depends on what was written just before), so a
# fixed order would always hand the same receiver that penalty.
# With --tls the TLS rows join the rotation, pacsnode over TLS not next to
# plain pacsnode.
ORDER=(storescp orthanc pacsnode)
[ "$TLS" = 0 ] || ORDER=(storescp pacsnode-tls orthanc pacsnode storescp-tls)
# --nodes: their rows on $PARALLEL associations only (one association
# reaches one node), in the same rotation
ORDER_K=("${ORDER[@]}")
for n in ${NODES//,/ }; do ORDER_K+=("nodes-$n"); done
for REP in $(seq 1 "$REPEAT"); do
    for k in 1 "$PARALLEL"; do
        order=("${ORDER[@]}")
        [ "$k" = 1 ] || order=("${ORDER_K[@]}")
        for i in "${!order[@]}"; do
            run_one "${order[$(( (i + REP - 1) % ${#order[@]} ))]}" "$k"
        done
    done
done
measure_floor end "$COUNT" "$TOTAL_BYTES"

# ----- report ---------------------------------------------------------------
if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/store-$([ "$TLS" = 0 ] || echo tls-)$([ -z "$NODES" ] || echo nodes-)$(date +%F)
    [ "$COUNT" = 2000 ] || base=$base-n$COUNT
    RESULTS_FILE=$(results_path "$base")   # never overwrites an earlier run of the day
fi
mkdir -p "$(dirname "$RESULTS_FILE")"

{
    meta_common orthanc-postgresql
    echo "pdu=$PDU"
    echo "repeat=$REPEAT"
    echo "parallel=$PARALLEL"
    [ "$WAIT_QUIET" = 0 ] || echo "wait_quiet=$QUIET_WAITED $SHARED_RUNS $SHARED_CPU"
    [ -z "$NODES" ] || echo "nodes=$NODES"
    printf '%s\n' "${FLOOR[@]}"
    if [ "$TLS" = 1 ]; then
        echo "tls=1"
        echo "tls_certs=$(openssl version | cut -d' ' -f1-2); P-256 ECDSA certificates from one CA; client certificate required and verified by every TLS receiver"
        i=0
        while IFS= read -r line; do echo "tls_negotiated_$i=$line"; i=$((i + 1)); done < "$TLS_NEGOTIATED"
        echo "aes_ni=$(grep -q -w aes /proc/cpuinfo && echo yes || echo no)"
    fi
} > "$WORK/meta.txt"

/usr/bin/python3 "$HERE/report.py" "$RESULTS_TSV" "$WORK/meta.txt" "$PGCOST_TSV" | tee "$RESULTS_FILE"
log "table written to $RESULTS_FILE"

if awk -F'\t' '$4 != "ok" && $4 != "shared" { bad = 1 } END { exit bad ? 0 : 1 }' "$RESULTS_TSV"; then
    log "some receiver did not store all $COUNT instances (see the table)"
    exit 1
fi
exit 0
