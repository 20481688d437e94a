#!/usr/bin/env bash
# Web benchmark (issue 20): DICOMweb and the study browser, for
#   pacsnode with 1,000,000 instances   (index loaded with COPY, as bench/find)
#   pacsnode with   100,000 instances   (the same loader)
#   Orthanc + PostgreSQL index + its DICOMweb plugin with the same 100,000
#                                       (C-STORE, as bench/find fills it)
# measured in one run:
#   QIDO-RS    p50/p99 per query shape of bench/find (plus all series of a
#              study), one kept-alive connection, each answer's matches
#              checked against the generator's model
#   WADO-RS    of a 1,000-instance CT study (instances/s, MB/s), beside
#              pacsnode's own C-MOVE of the same study to a storescp
#   STOW-RS    of 2,000 CT instances over 1 and 4 connections, beside
#              storescu's C-STORE of the same files to pacsnode
#   pages      the index (/) and a 20-series study page, p50/p99
# Prints the tables with PASS/FAIL against issue 20's targets, the disk's
# floor measured in the same run, and writes bench/results/web-<date>.txt.
#
# A full run (the defaults) takes about 30 minutes on the 2-core development
# VM (28 and 33 in the runs kept), plus about a minute the first time to
# write the data; the smoke run of bench/web/README.md about 2 minutes.
#
# Usage (as root): bash bench/web/run.sh [options]; see --help and
# bench/web/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$(dirname "$HERE")/lib.sh"   # BENCH_DIR, REPO_DIR and the shared settings too

LARGE_REPEAT=${LARGE_REPEAT:-2}      # Orthanc takes 30 s a large result
MAX_SECONDS=${MAX_SECONDS:-30}       # cap on one shape's timed queries
plan_settings                        # bench/lib.sh: N_BIG, N_SMALL, QUERIES, ... REGIMES
PAGE_COUNT=${PAGE_COUNT:-100}        # timed requests per page
THUMB_COUNT=${THUMB_COUNT:-10}       # study page + all its thumbnails, timed
WADO_COUNT=1000                      # instances in the retrieved study
WADO_REPEAT=6                        # WADO-RS / C-MOVE runs per source
STOW_COUNT=2000                      # instances per STOW-RS / C-STORE run
STOW_BATCH=1                         # instances per STOW-RS request
REPEAT=3                             # STOW-RS / C-STORE runs per receiver and K
SERIES=20                            # series in the study page's study
SETTLE_SECONDS=${BENCH_SETTLE_SECONDS:-8}   # pause after each run that wrote
ORTHANC_STABLE_AGE=${ORTHANC_STABLE_AGE:-5}
PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-1GB}
# for pg_start (bench/lib.sh): find's settings for the bulk loads, store's
# WAL sync method
PG_OPTS="-c shared_buffers=$PG_SHARED_BUFFERS -c max_wal_size=8GB -c maintenance_work_mem=512MB -c wal_sync_method=fdatasync"
STEPS="big,small,orthanc,wado,stow"

usage() {
    cat <<EOF
usage: bash bench/web/run.sh [options]
(the defaults: about 30 minutes on a 2-core machine; a smoke run with the
smallest sizes, bench/web/README.md, about 2 minutes)
  --instances N          instances of the big pacsnode set (default 1000000)
  --orthanc-instances N  instances of the set given to pacsnode and to Orthanc
                         (default 100000)
  --queries N            timed QIDO-RS queries per shape (default 100)
  --wado-count N         instances of the WADO-RS / C-MOVE study (default 1000)
  --wado-repeat R        WADO-RS and C-MOVE runs per source (default 6)
  --stow-count N         instances per STOW-RS / C-STORE run (default 2000)
  --stow-batch B         instances per STOW-RS request (default 1)
  --repeat R             STOW-RS / C-STORE runs per receiver and connection
                         count; the table shows the median (default 3)
  --only LIST            steps, comma separated, from big,small,orthanc,wado,stow
                         (default: all; wado needs small and/or orthanc)
  --work-base DIR        where the temporary work dir is made (default
                         \$BENCH_WORK_BASE or /var/tmp; a real disk, not tmpfs)
  --results FILE         write the table here instead of
                         bench/results/web-<date>[-<sizes>].txt
  --no-netns             do not run the servers in a private network namespace
  --keep                 keep the work dir (logs, cluster, stores) afterwards
environment (defaults in brackets):
  WARMUP [5]             untimed queries per shape first
  LARGE_TARGET [10000]   studies the large query matches; LARGE_REPEAT [2]
  LITERAL_REPEAT [20]    repetitions of the literal SMI* and *SON queries
  MAX_SECONDS [30]       stop a shape's timed queries after this long
  REGIMES [idle,busy]    QIDO-RS with idle CPUs and/or one CPU kept busy by a
                         nice-19 spinner (see bench/README.md, "find/")
  PAGE_COUNT [100]       timed requests per page; THUMB_COUNT [10] timed loads
                         of the study page with all its thumbnails
  BENCH_SETTLE_SECONDS [8]  pause after each run that wrote to the disk
  PG_SHARED_BUFFERS [1GB]
  BENCH_PACSNODE_LOG_LEVEL [warning]  pacsnode's [log] level (info logs
                         every HTTP request with its time)
  PACSNODE_BIN           pacsnode binary (default: build/scp/pacsnode)
EOF
}

ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --instances) N_BIG=${2:?}; shift 2 ;;
        --orthanc-instances) N_SMALL=${2:?}; shift 2 ;;
        --queries) QUERIES=${2:?}; shift 2 ;;
        --wado-count) WADO_COUNT=${2:?}; shift 2 ;;
        --wado-repeat) WADO_REPEAT=${2:?}; shift 2 ;;
        --stow-count) STOW_COUNT=${2:?}; shift 2 ;;
        --stow-batch) STOW_BATCH=${2:?}; shift 2 ;;
        --repeat) REPEAT=${2:?}; shift 2 ;;
        *) bench_option "$@"; shift "$OPT_SHIFT" ;;   # bench/lib.sh: --work-base, --results, ...
    esac
done
plan_check
need_int --wado-count "$WADO_COUNT" 1; need_int --wado-repeat "$WADO_REPEAT" 1
need_int --stow-count "$STOW_COUNT" "$PARALLEL"; need_int --stow-batch "$STOW_BATCH" 1
need_int --repeat "$REPEAT" 1; need_int PAGE_COUNT "$PAGE_COUNT" 1; need_int THUMB_COUNT "$THUMB_COUNT" 1
check_steps step big small orthanc wado stow

# the caches: bench/find's files (same key), bench/store's and bench/move's
# CT studies (same directories), the study page's study
FILES_DIR=$(find_files_dir "$N_SMALL")
WADO_DIR=$(ct_dir "$WADO_COUNT")
STOW_DIR=$(ct_dir "$STOW_COUNT")
SERIES_HASH=$(sha256sum "$HERE/gen_series.py" | cut -c1-10)
SERIES_DIR=$BENCH_DIR/.cache/web-series$SERIES-$SERIES_HASH

# ---------------------------------------------------------------------------
# Outer phase (host network namespace): packages, user, data. Then re-run
# ourselves in a network namespace with only loopback.
# ---------------------------------------------------------------------------
if [ -z "${INNER:-}" ]; then
    bench_host_setup dcmtk orthanc orthanc-dicomweb orthanc-postgresql postgresql python3 python3-pydicom \
        python3-numpy iproute2 util-linux

    mkdir -p "$BENCH_DIR/.cache"
    if want orthanc; then find_files "$N_SMALL" "$FILES_DIR"; fi
    if want wado || want big || want small; then ct_data "$WADO_DIR" "$WADO_COUNT"; fi
    if want stow; then ct_data "$STOW_DIR" "$STOW_COUNT"; fi
    if [ ! -f "$SERIES_DIR/.complete" ]; then
        find "$BENCH_DIR/.cache" -maxdepth 1 -name "web-series$SERIES-*" ! -path "$SERIES_DIR" -exec rm -rf {} +
        rm -rf "$SERIES_DIR"
        $PY "$HERE/gen_series.py" "$SERIES_DIR" "$SERIES" 5 >&2
    fi

    bench_netns_enter "$HERE/run.sh" "${ARGS[@]}"
    INNER=1
fi

# ---------------------------------------------------------------------------
# Inner phase
# ---------------------------------------------------------------------------
bench_inner_setup web
DICOMWEB_PLUGIN=$(dpkg -L orthanc-dicomweb | grep -E '/libOrthancDicomWeb\.so(\.[0-9.]+)?$' | sort | head -n1)
[ -n "$DICOMWEB_PLUGIN" ] || die "libOrthancDicomWeb.so not found in package orthanc-dicomweb"
LOADS=$WORK/loads.tsv          # step, seconds, note
WADO_TSV=$WORK/wado.tsv        # set, source, rep, status, seconds, instances, bytes, client CPU s, note
STOW_TSV=$WORK/stow.tsv        # receiver, k, rep, status, seconds, stored, bytes, note
: > "$LOADS"; : > "$WADO_TSV"; : > "$STOW_TSV"
: > "$WORK/meta.txt"

# wait_http NAME PORT PATH: until GET PATH answers 200 (60 s)
wait_http() {
    local name=$1 port=$2 path=$3 i pid
    pid=$(cat "$WORK/$name.pid")
    for i in $(seq 1 300); do
        if $PY - "$port" "$path" <<'PY' 2>/dev/null; then return 0; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", sys.argv[2])
sys.exit(0 if c.getresponse().status == 200 else 1)
PY
        kill -0 "$pid" 2>/dev/null || { log "$name exited during start-up"; return 1; }
        sleep 0.2
    done
    log "$name: no 200 from http://127.0.0.1:$port$path within 60 s"
    return 1
}

# the C-MOVE destination: bench/lib.sh's dest_start, as bench/move's
DEST_DIR=$WORK/movedest

# ----- pacsnode -------------------------------------------------------------
PACS_PORT=""
PACS_HTTP=""
pacs_start() {                 # pacs_start DB TAG: ports in PACS_PORT, PACS_HTTP
    local db=$1 tag=$2 dir=$WORK/pacsnode-$2 cfg
    mkdir -p "$dir/storage"; chown -R "$RUN_USER:" "$dir"
    PACS_PORT=$(free_port)
    PACS_HTTP=$(free_port)
    cfg=$dir/pacsnode.conf
    {
        pacs_conf "$PACS_PORT" "$dir" "$db"
        printf '\n[http]\nport = %s\nbind = 127.0.0.1\n' "$PACS_HTTP"
        peer_conf BENCH "$SCU_AE" 104 "store, find, move"
        [ -z "$DEST_PORT" ] || peer_conf MOVEDEST "$DEST_AE" "$DEST_PORT" store
    } > "$cfg"
    start_server pacsnode "$dir.log" env TCP_NODELAY=1 "$PACSNODE_BIN" -c "$cfg"
    wait_echo pacsnode "$PACS_PORT" PACSNODE "$dir.log" || return 1
    wait_http pacsnode "$PACS_HTTP" /health || return 1
}
pacs_stop() { stop_pidfile "$WORK/pacsnode.pid"; }

# ----- Orthanc --------------------------------------------------------------
ORTHANC_PORT=""
ORTHANC_HTTP=""
# orthanc_start NAME DB MODE: MODE "find" is bench/find's configuration
# (SyncStorageArea off for the untimed load), "store" bench/store's (every
# other key at its default); both with the HTTP server and the DICOMweb
# plugin
orthanc_start() {
    local name=$1 db=$2 mode=$3 dir=$WORK/$1 sync=""
    ORTHANC_PORT=$(free_port)
    ORTHANC_HTTP=$(free_port)
    [ "$mode" = store ] || sync='"SyncStorageArea": false,'
    # bench/lib.sh's configuration; every key not set keeps Orthanc's
    # default (bench/README.md). The DICOMweb plugin's QidoCaseSensitive is
    # false so that person names match case-insensitively, as pacsnode's
    # and as Orthanc's own C-FIND (CaseSensitivePN false) do: the same
    # queries then have the same matches on both.
    orthanc_conf "$dir" pacsnode-bench-web "$db" "$ORTHANC_PORT" "{ $sync
        \"Plugins\": [ \"$ORTHANC_PLUGIN\", \"$DICOMWEB_PLUGIN\" ],
        \"HttpServerEnabled\": true, \"HttpPort\": $ORTHANC_HTTP, \"AuthenticationEnabled\": false,
        \"StableAge\": $ORTHANC_STABLE_AGE,
        \"DicomWeb\": { \"Enable\": true, \"Root\": \"/dicom-web/\", \"EnableWado\": false,
                       \"QidoCaseSensitive\": false } }"
    start_server "$name" "$WORK/$name.log" env TCP_NODELAY=1 Orthanc "$dir/orthanc.json"
    wait_echo "$name" "$ORTHANC_PORT" ORTHANC "$WORK/$name.log" || return 1
    wait_http "$name" "$ORTHANC_HTTP" /system || return 1
}

# store_dir PORT AEC DIR TAG: one storescu over the *.dcm files of DIR
# (untimed)
store_dir() {
    local t0=$EPOCHREALTIME files
    mapfile -t files < <(find "$3" -maxdepth 1 -name '*.dcm' | sort)
    storescu_load "$WORK/load-$4.log" "$1" "$2" "${files[@]}" || return 1
    note_load "$4" "$(secs_since "$t0")" "${#files[@]} files, one association"
}

# ----- QIDO-RS and pages ----------------------------------------------------
# measure_qido LABEL PORT PREFIX PLAN PING_PATH: the client over the plan
# once per CPU regime, after 100 requests of PING_PATH (the smallest
# request the server answers: a reference); never fails the run (results,
# or the error, land in JSON)
measure_qido() {
    local label=$1 port=$2 prefix=$3 plan=$4 ping=$5 rc t regime
    for regime in ${REGIMES//,/ }; do
        regime_start "$regime"
        t=$EPOCHREALTIME
        rc=0
        log "$label, CPUs $regime: QIDO-RS, $QUERIES queries per shape on one connection"
        $PY "$HERE/webclient.py" qido --port "$port" --prefix "$prefix" --plan "$plan" --label "$label" \
            --out "$WORK/qido-$label-$regime.json" --max-seconds "$MAX_SECONDS" --ping 100 --ping-path "$ping" \
            > "$WORK/qido-$label-$regime.log" 2>&1 || rc=$?
        [ $rc = 0 ] || log "$label: some QIDO-RS answers were wrong or failed (exit $rc; see the table)"
        log "  took $(secs_since "$t") s"
        spin_stop
    done
}

# measure_pages LABEL STUDY_UID: the index and the study page (CPUs idle)
measure_pages() {
    local label=$1 study=$2 rc=0
    log "$label: pages, $PAGE_COUNT requests each"
    $PY "$HERE/webclient.py" get --port "$PACS_HTTP" --path / --count "$PAGE_COUNT" \
        --out "$WORK/page-$label-index.json" || log "$label: the index page failed (see page-$label-index.json)"
    $PY "$HERE/webclient.py" get --port "$PACS_HTTP" --path "/studies/$study" --count "$PAGE_COUNT" \
        --expect-sections "$SERIES" --out "$WORK/page-$label-study.json" \
        || log "$label: the study page failed (see page-$label-study.json)"
    $PY "$HERE/webclient.py" get --port "$PACS_HTTP" --path "/studies/$study" --count "$THUMB_COUNT" --warmup 1 \
        --expect-sections "$SERIES" --thumbnails --out "$WORK/page-$label-thumbs.json" \
        || log "$label: the study page's thumbnails failed (see page-$label-thumbs.json)"
}

# ----- WADO-RS and C-MOVE ---------------------------------------------------
WADO_STUDY=""
WADO_BYTES=""
record_wado() {                # record_wado SET SOURCE STATUS SECONDS INSTANCES BYTES CPU NOTE
    [ "$REP" = 0 ] && return 0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$REP" "$3" "$4" "$5" "$6" "$7" "$8" >> "$WADO_TSV"
}

# wado_run SET SOURCE PORT PREFIX: one WADO-RS retrieve of the study
wado_run() {
    local set=$1 src=$2 port=$3 prefix=$4 out=$WORK/wado-$1-$2-r$REP.json rc=0 secs parts bytes cpu
    $PY "$HERE/webclient.py" wado --port "$port" --prefix "$prefix" --study "$WADO_STUDY" --expect "$WADO_COUNT" \
        --out "$out" || rc=$?
    read -r secs parts bytes cpu <<< "$($PY -c 'import json,sys; d=json.load(open(sys.argv[1]));
print(d.get("seconds", "-"), d.get("parts", "-"), d.get("bytes", "-"), "%.2f" % d.get("client_cpu_s", 0))' "$out")"
    if [ $rc = 0 ]; then
        record_wado "$set" "$src WADO-RS" ok "$secs" "$parts" "$bytes" "$cpu" "one GET, body read whole"
        log "  $src WADO-RS: $secs s, $parts parts, $bytes bytes"
    else
        record_wado "$set" "$src WADO-RS" FAIL "$secs" "$parts" "$bytes" - \
            "$($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("error") or "status %s, %s parts" % (d.get("status"), d.get("parts")))' "$out")"
        log "  $src WADO-RS FAILED (see $out)"
    fi
}

# move_run SET: pacsnode's C-MOVE of the study to the storescp (bench/move's)
move_run() {
    local set=$1 tag=move-$1-r$REP rc=0 t0 secs files bytes st
    t0=$EPOCHREALTIME
    movescu_study "$PACS_PORT" PACSNODE "$WADO_STUDY" "$WORK/$tag.log" || rc=$?
    secs=$(secs_between "$t0" "$EPOCHREALTIME")
    read -r files bytes <<< "$(dest_files)"
    st=$(move_status "$WORK/$tag.log")
    if [ $rc = 0 ] && [ "$st" = Success ] && [ "$files" = "$WADO_COUNT" ]; then
        record_wado "$set" "pacsnode C-MOVE" ok "$secs" "$files" "$bytes" - "movescu to storescp, final status Success"
        log "  pacsnode C-MOVE: $secs s, $files files"
    else
        record_wado "$set" "pacsnode C-MOVE" FAIL "$secs" "$files" "$bytes" - \
            "movescu exit $rc, final status $st: $(first_error "$WORK/$tag.log")"
        log "  pacsnode C-MOVE FAILED (see $WORK/$tag.log)"
    fi
    empty_dest
    settle
}

# wado_rounds SET SOURCES...: warm-up (REP 0) then WADO_REPEAT rounds, the
# order rotating; sources: pacsnode-wado, pacsnode-move, orthanc-wado
wado_rounds() {
    local set=$1 i n src
    shift
    local order=("$@")
    n=${#order[@]}
    for REP in $(seq 0 "$WADO_REPEAT"); do
        log "$set: WADO-RS round $REP/$WADO_REPEAT$([ "$REP" = 0 ] && echo ' (warm-up, not recorded)')"
        for i in "${!order[@]}"; do
            src=${order[$(( (i + REP) % n ))]}
            case $src in
                pacsnode-wado) wado_run "$set" pacsnode "$PACS_HTTP" /dicomweb ;;
                pacsnode-move) move_run "$set" ;;
                orthanc-wado) wado_run "$set" Orthanc "$ORTHANC_HTTP" /dicom-web ;;
            esac
        done
    done
}

# ----- steps ----------------------------------------------------------------
SERIES_STUDY=$(sed -n 's/^study_uid=//p' "$SERIES_DIR/.complete")
[ -z "${WADO_DIR:-}" ] || [ ! -f "$WADO_DIR/.complete" ] || WADO_STUDY=$(sed -n 's/^study_uid=//p' "$WADO_DIR/.complete")
[ ! -f "$WADO_DIR/.complete" ] || WADO_BYTES=$(sed -n 's/^bytes=//p' "$WADO_DIR/.complete")

plan_for() {                   # plan_for N: the plan's path, made once
    local plan=$WORK/plan-$1.json
    [ -f "$plan" ] || $PY "$HERE/plan.py" "$1" "$plan" "$QUERIES" "$LARGE_TARGET"
    echo "$plan"
}

# step_big: pacsnode at N_BIG: QIDO-RS (before anything else is stored:
# the counts are the model's), then the two studies by C-STORE, the pages
# and WADO-RS (for information: the targets are judged at N_SMALL beside
# Orthanc and pacsnode's own C-MOVE)
step_big() {
    local db=pacsweb_big plan
    plan=$(plan_for "$N_BIG")
    load_copy "$db" "$N_BIG" pacsnode-big || { log "pacsnode-big: pacsnode does not start; skipped"; return 0; }
    pacs_start "$db" pacsnode-big || { log "pacsnode-big: pacsnode does not start; skipped"; return 0; }
    measure_qido pacsnode-big "$PACS_HTTP" /dicomweb "$plan" /health
    store_dir "$PACS_PORT" PACSNODE "$SERIES_DIR" "pacsnode-big C-STORE $SERIES-series study" || true
    store_dir "$PACS_PORT" PACSNODE "$WADO_DIR" "pacsnode-big C-STORE $WADO_COUNT-instance study" || true
    measure_pages pacsnode-big "$SERIES_STUDY"
    for REP in $(seq 0 "$WADO_REPEAT"); do wado_run big pacsnode "$PACS_HTTP" /dicomweb; done
    pacs_stop
    [ "$KEEP" = 1 ] || drop_db "$db"
}

# step_small_orthanc: pacsnode and Orthanc at N_SMALL, both running: QIDO-RS
# of each (the other idle), then the two studies into each, pacsnode's
# pages, and the WADO-RS / C-MOVE rounds
step_small_orthanc() {
    local plan db=pacsweb_small odb=orthanc_web t rows pacs_up=0 orth_up=0
    plan=$(plan_for "$N_SMALL")
    if want wado; then dest_start; fi
    if want small; then
        if load_copy "$db" "$N_SMALL" pacsnode-small && pacs_start "$db" pacsnode-small; then pacs_up=1
        else log "pacsnode-small: pacsnode does not start; skipped"; fi
    fi
    if want orthanc; then
        orthanc_db "$odb"
        if orthanc_start orthanc "$odb" find; then
            orth_up=1
            orthanc_fill "$odb" "$N_SMALL" "$FILES_DIR"
        else
            log "Orthanc does not start; skipped"
        fi
    fi
    [ $pacs_up = 0 ] || measure_qido pacsnode-small "$PACS_HTTP" /dicomweb "$plan" /health
    [ $orth_up = 0 ] || measure_qido orthanc "$ORTHANC_HTTP" /dicom-web "$plan" /system
    local order=()
    if [ $pacs_up = 1 ]; then
        store_dir "$PACS_PORT" PACSNODE "$SERIES_DIR" "pacsnode-small C-STORE $SERIES-series study" || true
        store_dir "$PACS_PORT" PACSNODE "$WADO_DIR" "pacsnode-small C-STORE $WADO_COUNT-instance study" || true
        measure_pages pacsnode-small "$SERIES_STUDY"
        order+=(pacsnode-wado pacsnode-move)
    fi
    if [ $orth_up = 1 ]; then
        store_dir "$ORTHANC_PORT" ORTHANC "$WADO_DIR" "orthanc C-STORE $WADO_COUNT-instance study" || true
        orthanc_settle "$odb"
        order+=(orthanc-wado)
    fi
    if want wado && [ ${#order[@]} -gt 0 ]; then
        settle
        wado_rounds small "${order[@]}"
    fi
    [ $pacs_up = 0 ] || pacs_stop
    [ $orth_up = 0 ] || stop_pidfile "$WORK/orthanc.pid"
    if want wado; then stop_pidfile "$WORK/movedest.pid"; fi
    [ "$KEEP" = 1 ] || { drop_db "$db"; drop_db "$odb"; }
}

# ----- STOW-RS and C-STORE --------------------------------------------------
STOW_BYTES=""
record_stow() {                # record_stow RECEIVER K STATUS SECONDS STORED NOTE
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$REP" "$3" "$4" "$5" "$STOW_BYTES" "$6" >> "$STOW_TSV"
    if [ "$3" = ok ]; then
        log "  -> $4 s, $(awk -v n="$STOW_COUNT" -v t="$4" 'BEGIN { printf "%.1f", n / t }') instances/s ($6)"
    else
        log "  -> FAILED: $5 of $STOW_COUNT stored ($6)"
    fi
}

# judge_stow RECEIVER K CLIENT_RC SECONDS STORED WHAT: the run's row, ok when
# the client succeeded and the receiver holds every instance (STORED, as
# WHAT counts them)
judge_stow() {
    if [ "$3" = 0 ] && [ "$5" = "$STOW_COUNT" ]; then record_stow "$1" "$2" ok "$4" "$5" "$6"
    else record_stow "$1" "$2" FAIL "$4" "$5" "$6; client rc=$3"; fi
}

# stow_client PORT PREFIX K OUT: webclient.py's STOW-RS of $LISTS/all over K
# connections; prints the seconds
stow_client() {
    $PY "$HERE/webclient.py" stow --port "$1" --prefix "$2" --files "$LISTS/all" --connections "$3" \
        --batch "$STOW_BATCH" --out "$4"
}

# stow_one RECEIVER K: RECEIVER pacsnode-stow, pacsnode-cstore or
# orthanc-stow, each on a fresh database and storage
stow_one() {
    local rcv=$1 k=$2 db=web_stow_$2 secs rc=0 stored out label
    fresh_db "$db"
    case $rcv in
        pacsnode-stow|pacsnode-cstore)
            label="pacsnode STOW-RS"
            [ "$rcv" = pacsnode-stow ] || label="pacsnode C-STORE (storescu)"
            if ! pacs_start "$db" "stow-$k-r$REP"; then
                pacs_stop; record_stow "$label" "$k" FAIL "" 0 "did not start"; drop_db "$db"; return 0
            fi
            log "run $REP/$REPEAT: $label, $k connection(s)"
            if [ "$rcv" = pacsnode-stow ]; then
                out=$WORK/stow-pacsnode-$k-r$REP.json
                secs=$(stow_client "$PACS_HTTP" /dicomweb "$k" "$out") || rc=1
            else
                secs=$(send_parts "$k" cstore "$PACS_PORT" PACSNODE) || rc=1
            fi
            pacs_stop
            stored=$(db_count "$db" "SELECT count(*) FROM instance")
            judge_stow "$label" "$k" "$rc" "$secs" "$stored" "instance rows"
            retire "$WORK/pacsnode-stow-$k-r$REP"
            ;;
        orthanc-stow)
            label="Orthanc+PostgreSQL STOW-RS"
            if ! orthanc_start orthanc-stow "$db" store; then
                stop_pidfile "$WORK/orthanc-stow.pid"; record_stow "$label" "$k" FAIL "" 0 "did not start"
                drop_db "$db"; retire "$WORK/orthanc-stow"; return 0
            fi
            log "run $REP/$REPEAT: $label, $k connection(s)"
            out=$WORK/stow-orthanc-$k-r$REP.json
            secs=$(stow_client "$ORTHANC_HTTP" /dicom-web "$k" "$out") || rc=1
            stop_pidfile "$WORK/orthanc-stow.pid"
            stored=$(db_count "$db" "SELECT count(*) FROM resources WHERE resourcetype = 3")
            judge_stow "$label" "$k" "$rc" "$secs" "$stored" "index rows"
            retire "$WORK/orthanc-stow"
            ;;
    esac
    drop_db "$db"
    settle
}

# The disk's floor (bench/lib.sh's measure_floor) on 1 and PARALLEL threads,
# at the start and at the end of the STOW step
step_stow() {
    data_lists "$STOW_DIR" "$STOW_COUNT"   # the senders read the files from RAM
    STOW_BYTES=$LIST_BYTES
    measure_floor start "$STOW_COUNT" "$STOW_BYTES"
    # the order rotates from one repetition to the next (bench/store's reason:
    # a receiver right after another one finds the disk still writing)
    local order=(pacsnode-stow orthanc-stow pacsnode-cstore) i k
    for REP in $(seq 1 "$REPEAT"); do
        for k in 1 "$PARALLEL"; do
            for i in "${!order[@]}"; do
                stow_one "${order[$(( (i + REP - 1) % ${#order[@]} ))]}" "$k"
            done
        done
    done
    measure_floor end "$STOW_COUNT" "$STOW_BYTES"
}

# ----- main -----------------------------------------------------------------
bench_started
OTHERS=$(other_benches)          # for the report
[ -z "$OTHERS" ] || log "WARNING: another benchmark is running: $OTHERS"
pacsnode_check || die "$PACSNODE_NOTE"
log "work dir $WORK; sets of $N_BIG and $N_SMALL instances; $QUERIES queries per shape; steps $STEPS"
pg_start

if want big; then step_big; fi
if want small || want orthanc; then step_small_orthanc; fi
if want stow; then step_stow; fi
OTHERS_END=$(other_benches)

# ----- report ---------------------------------------------------------------
if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/web-$(date +%F)
    [ "$N_BIG/$N_SMALL" = 1000000/100000 ] || base=$base-n$N_BIG-$N_SMALL
    RESULTS_FILE=$(results_path "$base")
fi
mkdir -p "$(dirname "$RESULTS_FILE")"
{
    meta_common orthanc-dicomweb orthanc-postgresql
    echo "others=${OTHERS:-none} at the start; ${OTHERS_END:-none} at the end"
    echo "python=$($PY --version 2>&1 | cut -d' ' -f2)"
    echo "steps=$STEPS"
    echo "n_big=$N_BIG"
    echo "n_small=$N_SMALL"
    echo "queries=$QUERIES warmup=$WARMUP literal_repeat=$LITERAL_REPEAT large_repeat=$LARGE_REPEAT max_seconds=$MAX_SECONDS"
    echo "regimes=$REGIMES"
    echo "pages=$PAGE_COUNT thumbs=$THUMB_COUNT series=$SERIES"
    echo "wado_count=$WADO_COUNT wado_repeat=$WADO_REPEAT wado_bytes=$WADO_BYTES"
    echo "stow_count=$STOW_COUNT stow_batch=$STOW_BATCH repeat=$REPEAT stow_bytes=$STOW_BYTES parallel=$PARALLEL"
    printf '%s\n' "${FLOOR[@]}"
    if want big; then echo "data_big=$($PY "$BENCH_DIR/find/gen.py" stats "$N_BIG" | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))')"; fi
    if want small || want orthanc; then echo "data_small=$($PY "$BENCH_DIR/find/gen.py" stats "$N_SMALL" | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))')"; fi
} >> "$WORK/meta.txt"

$PY "$HERE/report.py" "$WORK" | tee "$RESULTS_FILE"
log "table written to $RESULTS_FILE"
