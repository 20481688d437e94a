# Shared by bench/*/run.sh (sourced after WORK and log() are set).

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
