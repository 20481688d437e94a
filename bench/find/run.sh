#!/usr/bin/env bash
# C-FIND benchmark: query latency (p50, p99) per query shape and the response
# rate of a large result, for
#   pacsnode with 1,000,000 instances   (loaded with COPY, not C-STORE)
#   pacsnode with   100,000 instances   (the same loader)
#   Orthanc + PostgreSQL index with the same 100,000 instances (C-STORE)
# all from one deterministic synthetic data set (bench/find/gen.py).
# Prints the table with the ratios and the targets of issue 3, and writes it
# to bench/results/find-<date>.txt. With --tls, each pacsnode set is also
# queried over DICOM TLS beside plain TCP (issue 19's TLS row).
#
# Usage (as root): bash bench/find/run.sh [options]; see --help and
# bench/README.md ("find/").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$(dirname "$HERE")/lib.sh"   # BENCH_DIR, REPO_DIR and the shared settings too

plan_settings                        # bench/lib.sh: N_BIG, N_SMALL, QUERIES, ... REGIMES
FINDSCU_K=${FINDSCU_K:-50}           # query files per findscu run
FINDSCU_RUNS=${FINDSCU_RUNS:-3}
N_CHECK=${N_CHECK:-300}              # loader check: instances C-STOREd and COPYed
ORTHANC_STORAGE_ACCESS=${ORTHANC_STORAGE_ACCESS:-Always}   # Orthanc's default
PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-1GB}
# for pg_start (bench/lib.sh); a bigger max_wal_size only spares the bulk
# load checkpoint storms
PG_OPTS="-c shared_buffers=$PG_SHARED_BUFFERS -c max_wal_size=8GB -c maintenance_work_mem=512MB"
ORTHANC_STABLE_AGE=${ORTHANC_STABLE_AGE:-5}     # Orthanc's default: 60
STEPS="check,pacs-big,pacs-small,orthanc"
TLS=0                                # --tls: the plain/TLS comparison
WAIT_QUIET=0                         # --wait-quiet (bench/lib.sh)
TLS_REPEAT=${TLS_REPEAT:-5}          # passes over each selective shape's queries
TLS_FINDSCU_K=${TLS_FINDSCU_K:-100}  # --tls: query files per findscu run (at most QUERIES)
TLS_FINDSCU_RUNS=${TLS_FINDSCU_RUNS:-5}
TLS_SHAPES=patient_id,accession,series_modality,image_series   # the selective shapes

usage() {
    cat <<EOF
usage: bash bench/find/run.sh [options]
  --only LIST       steps to run, comma separated, from
                    check,pacs-big,pacs-small,orthanc (default: all)
  --work-base DIR   where the temporary work dir is made (default
                    \$BENCH_WORK_BASE or /var/tmp)
  --results FILE    write the table here instead of
                    bench/results/find-<date>[-<sizes>].txt
  --tls             also compare C-FIND over plain TCP and over DICOM TLS on
                    each pacsnode set measured: the selective shapes on two
                    associations open at once (TLS_REPEAT passes), in each
                    CPU regime; P-256 certificates made in the work dir
                    (default results file bench/results/find-tls-<date>...)
  --wait-quiet      before each server's queries in each regime, wait (at most
                    15 minutes) until other work on the machine uses under
                    0.1 CPU (a shared machine)
  --no-netns        do not run the servers in a private network namespace
  --keep            keep the work dir (logs, cluster, results) afterwards
  --instances N, --orthanc-instances N, --queries N
                    the same as N_INSTANCES, N_SMALL and QUERIES below
environment (defaults in brackets):
  N_INSTANCES [1000000]  instances of the big pacsnode set
  N_SMALL [100000]       instances of the set given to pacsnode and Orthanc
  QUERIES [100]          timed queries per shape; WARMUP [5] untimed first
  LARGE_TARGET [10000]   studies the large query matches; LARGE_REPEAT [3]
  LITERAL_REPEAT [20]    repetitions of the literal SMI* and *SON queries
  FINDSCU_K [50]         query files per findscu run; FINDSCU_RUNS [3]
  MAX_SECONDS [120]      stop a shape's timed queries after this long
  REGIMES [idle,busy]    measure with idle CPUs, and/or with one CPU kept
                         busy by a nice-19 spinner (see bench/README.md)
  N_CHECK [300]          instances of the loader check (COPY vs C-STORE)
  ORTHANC_STORAGE_ACCESS [Always]  Orthanc's StorageAccessOnFind
  PG_SHARED_BUFFERS [1GB]
  TLS_REPEAT [5]         --tls: passes over each selective shape's queries
  TLS_FINDSCU_K [100]    --tls: query files per findscu run, plain and +tls;
  TLS_FINDSCU_RUNS [5]     runs (median); 0 or 1: no findscu cross-check
  PACSNODE_BIN           pacsnode binary (default: build/scp/pacsnode)
EOF
}

ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --tls) TLS=1; shift ;;
        --wait-quiet) WAIT_QUIET=1; shift ;;
        # the environment's N_INSTANCES, N_SMALL and QUERIES as options
        --instances) N_BIG=${2:?}; shift 2 ;;
        --orthanc-instances) N_SMALL=${2:?}; shift 2 ;;
        --queries) QUERIES=${2:?}; shift 2 ;;
        *) bench_option "$@"; shift "$OPT_SHIFT" ;;   # bench/lib.sh: --work-base, --results, ...
    esac
done
plan_check
for v in FINDSCU_K FINDSCU_RUNS TLS_REPEAT TLS_FINDSCU_K TLS_FINDSCU_RUNS; do need_int "$v" "${!v}" 0; done
need_int "N_CHECK (the loader check's set)" "$N_CHECK" 100
check_steps step check pacs-big pacs-small orthanc

FILES_DIR=$(find_files_dir "$N_SMALL")
CHECK_DIR=$(find_files_dir "$N_CHECK")

# ---------------------------------------------------------------------------
# Outer phase (host network namespace): packages, user, the files for
# C-STORE. Then re-run ourselves in a network namespace with only loopback.
# ---------------------------------------------------------------------------
if [ -z "${INNER:-}" ]; then
    bench_host_setup dcmtk orthanc orthanc-postgresql postgresql python3 iproute2 util-linux \
        $([ "$TLS" = 0 ] || echo openssl)

    if want orthanc; then find_files "$N_SMALL" "$FILES_DIR"; fi
    if want check; then find_files "$N_CHECK" "$CHECK_DIR"; fi

    bench_netns_enter "$HERE/run.sh" "${ARGS[@]}"
    INNER=1
fi

# ---------------------------------------------------------------------------
# Inner phase
# ---------------------------------------------------------------------------
bench_inner_setup find
LOADS=$WORK/loads.tsv          # step, seconds, note
: > "$LOADS"
[ "$TLS" = 0 ] || tls_make_certs "$WORK/tls"   # bench/lib.sh: CA, node, modality (P-256)

# ----- pacsnode -------------------------------------------------------------
PACS_PORT=""
PACS_TLS_PORT=""
pacs_start() {                 # pacs_start DB TAG [tls]: node on DB, port in PACS_PORT
    local db=$1 tag=$2 dir=$WORK/pacsnode-$2 cfg
    mkdir -p "$dir/storage"; chown -R "$RUN_USER:" "$dir"
    PACS_PORT=$(free_port)
    cfg=$dir/pacsnode.conf
    { pacs_conf "$PACS_PORT" "$dir" "$db"; peer_conf BENCH BENCHSCU 104 "store, find"; } > "$cfg"
    if [ "${3:-}" = tls ]; then
        # and its TLS listener: README.md's three lines, client
        # certificates required (the default); the plain port stays
        PACS_TLS_PORT=$(free_port)
        tls_conf "$PACS_TLS_PORT" >> "$cfg"
    fi
    start_server "pacsnode" "$dir.log" env TCP_NODELAY=1 "$PACSNODE_BIN" -c "$cfg"
    wait_echo pacsnode "$PACS_PORT" PACSNODE "$dir.log" || return 1
    if [ "${3:-}" = tls ]; then
        ECHO_OPTS=("${TLS_SCU[@]}")
        wait_echo pacsnode "$PACS_TLS_PORT" PACSNODE "$dir.log" || { ECHO_OPTS=(); return 1; }
        ECHO_OPTS=()
    fi
}
pacs_stop() { stop_pidfile "$WORK/pacsnode.pid"; }

# ----- Orthanc --------------------------------------------------------------
ORTHANC_PORT=""
orthanc_start() {              # orthanc_start DB
    local db=$1 dir=$WORK/orthanc
    ORTHANC_PORT=$(free_port)
    # bench/lib.sh's configuration (bench/README.md), where every key not
    # set keeps Orthanc's default: StorageAccessOnFind=Always,
    # CaseSensitivePN=false, LimitFindResults=0. SyncStorageArea=false only
    # speeds up the (untimed) load.
    orthanc_conf "$dir" pacsnode-bench-find "$db" "$ORTHANC_PORT" "{
        \"SyncStorageArea\": false, \"DicomAlwaysAllowFind\": true,
        \"StorageAccessOnFind\": \"$ORTHANC_STORAGE_ACCESS\", \"StableAge\": $ORTHANC_STABLE_AGE }"
    start_server orthanc "$WORK/orthanc.log" env TCP_NODELAY=1 Orthanc "$dir/orthanc.json"
    wait_echo orthanc "$ORTHANC_PORT" ORTHANC "$WORK/orthanc.log"
}

# ----- queries --------------------------------------------------------------
# measure LABEL PORT AEC PLAN: findclient over the plan once per CPU regime
# (REGIMES: "idle", then "busy" with a nice-19 spinner keeping one CPU from
# idling), then the findscu cross-check (CPUs idle). Never fails the run:
# results (or the error) land in JSON.
measure() {
    local label=$1 port=$2 aec=$3 plan=$4 rc t regime
    local qdir=$WORK/findscu-queries-$(basename "$plan" .json)
    for regime in ${REGIMES//,/ }; do
        regime_start "$regime"
        t=$EPOCHREALTIME
        rc=0
        log "$label, CPUs $regime: $QUERIES queries per shape on one association"
        $PY "$HERE/findclient.py" run --port "$port" --aec "$aec" --label "$label" --plan "$plan" \
            --out "$WORK/find-$label-$regime.json" --max-seconds "$MAX_SECONDS" \
            > "$WORK/findclient-$label-$regime.log" 2>&1 || rc=$?
        if [ $rc = 3 ]; then
            log "$label does not answer C-FIND: $($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["error"])' "$WORK/find-$label-$regime.json")"
        elif [ $rc != 0 ]; then
            log "$label: findclient failed (exit $rc; see $WORK/findclient-$label-$regime.log)"
            tail -n 5 "$WORK/findclient-$label-$regime.log" >&2 || true
        fi
        log "  queries took $(secs_since "$t") s"
        if [ $rc != 3 ] && [ "$FINDSCU_K" -ge 2 ]; then
            t=$EPOCHREALTIME
            [ -d "$qdir" ] || $PY "$HERE/findclient.py" write-queries --plan "$plan" --dir "$qdir" --count "$FINDSCU_K"
            mkdir -p "$WORK/findscu-logs"
            $PY "$HERE/findclient.py" findscu --port "$port" --aec "$aec" --label "$label-$regime" --dir "$qdir" \
                --runs "$FINDSCU_RUNS" --logdir "$WORK/findscu-logs" --out "$WORK/findscu-$label-$regime.json" \
                || log "$label: some findscu run failed (see $WORK/findscu-logs)"
            log "  findscu cross-check took $(secs_since "$t") s"
        fi
        spin_stop
        [ $rc != 3 ] || return 0
    done
}

# measure_tls LABEL PLAN: --tls; the node runs with its TLS listener too
# (PACS_PORT, PACS_TLS_PORT): findclient compare-tls in each CPU regime,
# the selective shapes on a plain and a TLS association open at once; then
# dcmtk findscu over each port, the same query files (a client whose TLS
# is OpenSSL in C, not Python's).
measure_tls() {
    local label=$1 plan=$2 rc t regime kind port k
    local qdir=$WORK/findscu-tls-queries-$(basename "$plan" .json) sec=()
    k=$(( TLS_FINDSCU_K < QUERIES ? TLS_FINDSCU_K : QUERIES ))
    local m0 m1
    for regime in ${REGIMES//,/ }; do
        regime_start "$regime"
        t=$EPOCHREALTIME
        rc=0
        log "$label, CPUs $regime: the selective shapes over plain TCP and over TLS, $TLS_REPEAT passes"
        m0=$(machine_cpu)
        $PY "$HERE/findclient.py" compare-tls --port "$PACS_PORT" --tls-port "$PACS_TLS_PORT" --aec PACSNODE \
            --tls "$TLS_DIR/modality.pem" "$TLS_DIR/modality.key" "$TLS_DIR/ca.pem" --label "$label" \
            --plan "$plan" --repeat "$TLS_REPEAT" --out "$WORK/tls-$label-$regime.json" \
            > "$WORK/findclient-tls-$label-$regime.log" 2>&1 || rc=$?
        m1=$(machine_cpu)
        [ $rc = 0 ] || log "$label: findclient compare-tls failed (exit $rc; see $WORK/findclient-tls-$label-$regime.log)"
        # how busy the whole machine was: the client and the node take turns
        # (about 1 CPU), the spinner of the busy regime 1 more; above that,
        # other work shared the machine
        echo "tls_busy_${label}_$regime=$(awk -v a="$m0" -v b="$m1" -v t="$(secs_since "$t")" 'BEGIN { printf "%.2f", (b - a) / t }')" \
            >> "$WORK/meta.txt"
        log "  took $(secs_since "$t") s"
        if [ "$k" -ge 2 ] && [ "$TLS_FINDSCU_RUNS" -ge 1 ]; then
            t=$EPOCHREALTIME
            [ -d "$qdir" ] || $PY "$HERE/findclient.py" write-queries --plan "$plan" --dir "$qdir" --count "$k" \
                --shapes "$TLS_SHAPES"
            mkdir -p "$WORK/findscu-logs"
            for kind in plain tls; do
                port=$PACS_PORT
                sec=()
                [ $kind = plain ] || { port=$PACS_TLS_PORT; sec=(--tls "$TLS_DIR/modality.pem" "$TLS_DIR/modality.key" "$TLS_DIR/ca.pem"); }
                $PY "$HERE/findclient.py" findscu --port "$port" --aec PACSNODE --label "tls-$label-$regime-$kind" \
                    --dir "$qdir" --runs "$TLS_FINDSCU_RUNS" --logdir "$WORK/findscu-logs" \
                    --out "$WORK/findscu-tls-$label-$regime-$kind.json" ${sec[@]+"${sec[@]}"} \
                    || log "$label: some findscu run ($kind) failed (see $WORK/findscu-logs)"
            done
            log "  findscu over plain and TLS took $(secs_since "$t") s"
        fi
        spin_stop
    done
    # what dcmtk's client negotiates with the node (the Python client's is in the JSON)
    echo "tls_dcmtk_$label=$(tls_probe "$PACS_TLS_PORT" PACSNODE)" >> "$WORK/meta.txt"
}

# fuzzy_expected DB N PLAN: the fuzzy name queries' expected matches, from
# PostgreSQL's Double Metaphone (fuzzystrmatch, with unaccent: what the
# node's migration 012 indexes) of the generator's family names, computed
# on the names themselves, never on the node's rows (gen.py fuzzy-expected)
fuzzy_expected() {
    local db=$1 n=$2 plan=$3
    # the names go in on stdin (COPY): 30,000 patients' are too many for argv
    { echo "CREATE TEMP TABLE fam (n text); COPY fam FROM STDIN;"
      $PY "$HERE/gen.py" family-names "$n" | sed 's/\\/\\\\/g'
      echo '\.'
      echo "SELECT n || E'\t' || coalesce(dmetaphone(unaccent('unaccent'::regdictionary, n)), '') FROM fam;"
    } | PGOPTIONS='-c client_min_messages=warning' psql -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PGPORT" \
            -U postgres -d "$db" -Atq -f - > "$WORK/family-keys-$n.tsv"
    $PY "$HERE/gen.py" fuzzy-expected "$n" "$plan" "$WORK/family-keys-$n.tsv"
}

# ----- steps ----------------------------------------------------------------
# The loader's rows must be what a C-STORE of the same files gives: N_CHECK
# instances both ways, every column but the storage facts compared (the
# kept counts included).
step_check() {
    log "loader check: $N_CHECK instances by C-STORE and by COPY"
    fresh_db loadcheck_store
    pacs_start loadcheck_store check || die "pacsnode does not start"
    send_shards "$PACS_PORT" PACSNODE "$CHECK_DIR" check || die "C-STORE of the check set failed"
    pacs_stop
    load_copy loadcheck_copy "$N_CHECK" check >/dev/null
    local q out_store out_copy bad=0 table
    declare -A Q=(
        [patient]="SELECT patient_id, issuer, patient_name, patient_birth_date, patient_sex, n_studies, n_series, n_instances, encode(attrs, 'hex') FROM patient ORDER BY 1"
        [study]="SELECT s.study_uid, p.patient_id, s.study_date, s.study_time, s.accession_number, s.study_id, s.study_description, s.referring_physician_name, s.n_series, s.n_instances, s.modalities, encode(s.attrs, 'hex') FROM study s JOIN patient p ON p.pk = s.patient_fk ORDER BY 1"
        [series]="SELECT se.series_uid, s.study_uid, se.modality, se.series_number, se.series_description, se.series_date, se.series_time, se.body_part_examined, se.protocol_name, se.n_instances, encode(se.attrs, 'hex') FROM series se JOIN study s ON s.pk = se.study_fk ORDER BY 1"
        [instance]="SELECT i.sop_uid, se.series_uid, i.sop_class_uid, i.instance_number, i.image_type, i.rows, i.columns, i.number_of_frames, i.samples_per_pixel, i.photometric_interpretation, i.slice_thickness, i.spacing_between_slices, i.acquisition_date, i.acquisition_time, i.content_date, i.content_time, i.transfer_syntax_uid, i.specific_character_set, encode(i.attrs, 'hex') FROM instance i JOIN series se ON se.pk = i.series_fk ORDER BY 1"
    )
    for table in patient study series instance; do
        psql_q loadcheck_store "${Q[$table]}" > "$WORK/check-store-$table.txt"
        psql_q loadcheck_copy "${Q[$table]}" > "$WORK/check-copy-$table.txt"
        if ! cmp -s "$WORK/check-store-$table.txt" "$WORK/check-copy-$table.txt"; then
            bad=1
            log "loader check: $table rows differ from C-STORE's:"
            diff "$WORK/check-store-$table.txt" "$WORK/check-copy-$table.txt" | head -n 6 | cut -c1-300 >&2
        fi
    done
    # the file sizes the loader writes are those of the files sent
    local sz_store sz_copy
    sz_store=$(find "$CHECK_DIR" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {print s}')
    sz_copy=$(psql_q loadcheck_copy "SELECT sum(size) FROM instance")
    [ "$sz_store" = "$sz_copy" ] || { bad=1; log "loader check: sizes $sz_copy (COPY) vs $sz_store (files)"; }
    drop_db loadcheck_store; drop_db loadcheck_copy
    if [ $bad = 0 ]; then
        echo "check=COPY rows identical to C-STORE's for $N_CHECK instances (every column but path, size, checksum, calling AE, times; attrs byte for byte)" >> "$WORK/meta.txt"
        log "loader check passed: COPY rows = C-STORE rows"
    else
        echo "check=FAILED: COPY rows differ from C-STORE's (see the log)" >> "$WORK/meta.txt"
        log "loader check FAILED"
    fi
}

step_pacs() {                  # step_pacs big|small
    local which=$1 n db label plan
    if [ "$which" = big ]; then n=$N_BIG; else n=$N_SMALL; fi
    db=pacsfind_$which
    label=pacsnode-$which
    plan=$WORK/plan-$n.json
    [ -f "$plan" ] || $PY "$HERE/gen.py" queries "$n" "$plan" "$QUERIES" "$LARGE_TARGET"
    load_copy "$db" "$n" "$label" || { log "$label: pacsnode does not start; skipped"; return 0; }
    fuzzy_expected "$db" "$n" "$plan"
    if pacs_start "$db" "$label"; then
        measure "$label" "$PACS_PORT" PACSNODE "$plan"
    else
        log "$label: pacsnode does not start; skipped"
    fi
    pacs_stop
    if [ "$TLS" = 1 ]; then    # the same data, the node restarted with TLS
        if pacs_start "$db" "$label-tls" tls; then
            measure_tls "$label" "$plan"
        else
            log "$label: pacsnode with TLS does not start; TLS comparison skipped"
        fi
        pacs_stop
    fi
    [ "$KEEP" = 1 ] || drop_db "$db"
}

step_orthanc() {
    local db=orthanc_find n=$N_SMALL plan
    plan=$WORK/plan-$n.json
    [ -f "$plan" ] || $PY "$HERE/gen.py" queries "$n" "$plan" "$QUERIES" "$LARGE_TARGET"
    orthanc_db "$db"
    orthanc_start "$db" || { log "Orthanc does not start; skipped"; return 0; }
    orthanc_fill "$db" "$n" "$FILES_DIR"
    measure orthanc "$ORTHANC_PORT" ORTHANC "$plan"
    stop_pidfile "$WORK/orthanc.pid"
    [ "$KEEP" = 1 ] || drop_db "$db"
}

# ----- main -----------------------------------------------------------------
bench_started
: > "$WORK/meta.txt"
pacsnode_check || true
log "work dir $WORK; sets of $N_BIG and $N_SMALL instances; $QUERIES queries per shape"
pg_start

if [ -z "$PACSNODE_NOTE" ]; then
    if want check; then step_check; fi
    if want pacs-big; then step_pacs big; fi
    if want pacs-small; then step_pacs small; fi
fi
if want orthanc; then step_orthanc; fi

# ----- report ---------------------------------------------------------------
if [ -z "$RESULTS_FILE" ]; then
    base=$BENCH_DIR/results/find-$([ "$TLS" = 0 ] || echo tls-)$(date +%F)
    [ "$N_BIG/$N_SMALL" = 1000000/100000 ] || base=$base-n$N_BIG-$N_SMALL
    RESULTS_FILE=$(results_path "$base")
fi
mkdir -p "$(dirname "$RESULTS_FILE")"
{
    meta_common orthanc-postgresql
    echo "orthanc_storage_access=$ORTHANC_STORAGE_ACCESS"
    echo "n_big=$N_BIG"
    echo "n_small=$N_SMALL"
    echo "queries=$QUERIES warmup=$WARMUP literal_repeat=$LITERAL_REPEAT large_repeat=$LARGE_REPEAT findscu_k=$FINDSCU_K findscu_runs=$FINDSCU_RUNS max_seconds=$MAX_SECONDS"
    echo "regimes=$REGIMES"
    if [ "$TLS" = 1 ]; then
        echo "tls=1"
        echo "tls_repeat=$TLS_REPEAT"
        echo "tls_findscu=K $TLS_FINDSCU_K (at most QUERIES), $TLS_FINDSCU_RUNS runs"
        [ "$WAIT_QUIET" = 0 ] || echo "wait_quiet=$QUIET_WAITED"
        echo "tls_certs=$(openssl version | cut -d' ' -f1-2); P-256 ECDSA certificates from one CA; client certificate required"
    fi
    echo "findscu_runs=$FINDSCU_RUNS"
    echo "data_big=$($PY "$HERE/gen.py" stats "$N_BIG" | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))')"
    echo "data_small=$($PY "$HERE/gen.py" stats "$N_SMALL" | $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))')"
} >> "$WORK/meta.txt"

$PY "$HERE/report.py" "$WORK" | tee "$RESULTS_FILE"
log "table written to $RESULTS_FILE"
