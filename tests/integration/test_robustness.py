"""pacsnode when things go wrong: a failing disk, a database that goes away,
peers that say nothing, too many associations, peers it must refuse, a crash
left behind in the storage folder, the node killed while it stores, a bad
configuration file; and the one log line per association an operator reads
afterwards.

Each test checks the effect (statuses, rows, files, log lines, timings), not
only that the node survived.
"""

import contextlib
import hashlib
import os
import pwd
import re
import resource
import signal
import socket
import struct
import subprocess
import tempfile
import time

import psycopg2
import psycopg2.sql
import pytest

import pacsnode_checks as C
import pacsnode_harness as H
import rawscu
from pacsnode_harness import gen_corpus

VERIFICATION = "1.2.840.10008.1.1"
OUT_OF_STORAGE = 0xA700
OUT_OF_INDEX = 0xA701
NOT_AUTHORIZED = 0x0124


# --------------------------------------------------------------------------
# Helpers


def small_instance(scu_dir, name, **kw):
    """A 16x16 CT instance (about 2 KB)."""
    return gen_corpus.make_instance(os.path.join(scu_dir, name + ".dcm"), name=name, **kw)


def big_instance(scu_dir, name):
    """A 256x256x16 bit CT instance (about 130 KB)."""
    return gen_corpus.make_instance(os.path.join(scu_dir, name + ".dcm"), name=name,
                                    set_attrs={"Rows": 256, "Columns": 256,
                                               "PixelData": bytes(256 * 256 * 2)})


def tmp_files(node):
    """The temporary files: the node's own folder, tmp/<node_id>/, and
    those of tmp/ itself (where earlier builds kept them)."""
    out = []
    for d in (os.path.join(node.storage, "tmp"), node.tmp_dir):
        if os.path.isdir(d):
            out += [n for n in os.listdir(d) if not os.path.isdir(os.path.join(d, n))]
    return sorted(out)


def storage_files(node):
    """Files under the storage root outside tmp/."""
    return {p for p in C.walk_files(node.storage) if not p.startswith("tmp" + os.sep)}


def assert_consistent(node):
    problems = C.storage_problems(node)
    assert not problems, "storage root %s vs index:\n  %s" % (node.storage, "\n  ".join(problems))


def log_lines(node, offset=0):
    with open(node.log_path, "r", encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read().splitlines()


def wait_log(node, pattern, what, timeout=5.0, offset=0):
    """The first log line (after byte `offset`) matching the regex, waiting a
    little for workers that log after answering; fails the test if none."""
    rx = re.compile(pattern, re.IGNORECASE)
    deadline = time.monotonic() + timeout
    while True:
        for line in log_lines(node, offset):
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            pytest.fail("no log line about %s (looked for /%s/) in %s:\n%s"
                        % (what, pattern, node.log_path, H.tail(node.log_path)), pytrace=False)
        time.sleep(0.1)


def fsize_limit(nbytes):
    """preexec_fn for the node: no file may grow past nbytes. The node
    ignores SIGXFSZ, so such a write fails with EFBIG."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def node_argv_kw():
    """subprocess keywords running a command as the node's account."""
    user = H.run_as_user()
    if not user:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def hold_association(node, calling):
    """A raw association (Verification) that is accepted and then left open."""
    assoc = rawscu.Association(node.host, node.port, timeout=10)
    try:
        assoc.associate(calling, node.aet, VERIFICATION)
    except Exception:
        assoc.close()
        raise
    return assoc


def wait_closed(sock, limit):
    """Seconds until the peer closes `sock` (EOF or reset), reading and
    discarding whatever it sends first; None if it stays open `limit` s."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    received = b""
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0, received
        if not chunk:
            return time.monotonic() - t0, received
        received += chunk
    return None, received


# --------------------------------------------------------------------------
# 1. The disk refuses a write


FSIZE_LIMIT = 64 * 1024


def test_write_failure_answers_a700_and_association_goes_on(node_factory, scu_dir):
    """RLIMIT_FSIZE = 64 KiB on the node: on one association a 2 KB instance
    is stored, a 130 KB one gets 0xA700 (EFBIG), the next 2 KB one is stored.
    Nothing of the refused one remains, the index and the files agree."""
    # info, not debug: the node's log is a file too and must stay under the limit.
    node = node_factory(preexec_fn=fsize_limit(FSIZE_LIMIT), extra_config={"log": {"level": "info"}})
    first = small_instance(scu_dir, "fsz-first")
    big = big_instance(scu_dir, "fsz-big")
    last = small_instance(scu_dir, "fsz-last")
    assert first["size"] < FSIZE_LIMIT // 4 and big["size"] > 2 * FSIZE_LIMIT

    run = H.storescu(node.port, [first["path"], big["path"], last["path"]], scu_dir,
                     aet="PNFSIZE", timeout=30)
    assert run.association == "accepted", run.summary()
    assert [run.status(f["path"]) for f in (first, big, last)] == [
        H.SUCCESS, OUT_OF_STORAGE, H.SUCCESS], run.summary()
    assert run.returncode == 0, run.summary()

    assert tmp_files(node) == [], "left in tmp/"
    rows = C.instance_rows(node)
    assert sorted(r["sop_uid"] for r in rows) == sorted(
        [first["sop_instance_uid"], last["sop_instance_uid"]])
    assert len(storage_files(node)) == 2, sorted(storage_files(node))
    assert_consistent(node)
    for f in (first, last):
        [row] = [r for r in rows if r["sop_uid"] == f["sop_instance_uid"]]
        assert not C.compare_part10(f["path"], os.path.join(node.storage, row["path"]),
                                    f["sop_class_uid"], f["sop_instance_uid"],
                                    f["transfer_syntax_uid"])

    wait_log(node, r"%s.*(File too large|could not write)" % re.escape(big["sop_instance_uid"]),
             "the failed write of the big instance")
    wait_log(node, r'association "PNFSIZE" .*released.* 2 instances stored, 1 failed',
             "the association that went on after the failure")


# --------------------------------------------------------------------------
# 2. The database goes away and comes back


def terminate_backends(pg, dbname):
    """Ends every session on dbname (the node's workers) and waits until
    they are gone."""
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
            ended = len(cur.fetchall())
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (dbname,))
            assert cur.fetchone()[0] == 0, "sessions on %s survived pg_terminate_backend" % dbname
        return ended
    finally:
        conn.close()


def allow_connections(pg, dbname, allow):
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(psycopg2.sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                psycopg2.sql.Identifier(dbname), psycopg2.sql.SQL("true" if allow else "false")))
    finally:
        conn.close()


@pytest.mark.node_config(workers=2)
def test_database_outage_answers_a701_then_recovers_without_restart(node, pg_cluster, scu_dir):
    files = [small_instance(scu_dir, "db%d" % i) for i in range(4)]
    store = lambda f: H.storescu(node.port, [f["path"]], scu_dir, aet="PNDB",  # noqa: E731
                                 timeout=30)
    pid = node.pid

    run = store(files[0])
    assert run.all_success(), run.summary()

    # Sessions killed under the node: the next store reconnects and succeeds.
    assert terminate_backends(pg_cluster, node.dbname) >= 1, "the node had no database session"
    run = store(files[1])
    assert run.status(files[1]["path"]) == H.SUCCESS, (
        "store right after the node's sessions were terminated: " + run.summary())
    assert node.count("instance") == 2
    assert_consistent(node)
    before = storage_files(node)
    db_before = C.db_snapshot(node)

    # The database refuses connections: 0xA701, nothing left on disk.
    allow_connections(pg_cluster, node.dbname, False)
    try:
        terminate_backends(pg_cluster, node.dbname)
        run = store(files[2])
        status = run.status(files[2]["path"])
        files_during = storage_files(node)
        tmp_during = tmp_files(node)
    finally:
        allow_connections(pg_cluster, node.dbname, True)
    assert status == OUT_OF_INDEX, "store while the database is unreachable: " + run.summary()
    assert tmp_during == [], "left in tmp/ after 0xA701"
    assert files_during == before, "files left after 0xA701: %s" % sorted(files_during - before)
    assert C.db_snapshot(node) == db_before
    line = wait_log(node, r"%s.*0xA701" % re.escape(files[2]["sop_instance_uid"]),
                    "the refused store while the database was down")
    assert re.search(r"database|connection", line, re.I), line

    # The database is back: the same node stores again, and the refused one too.
    for f in (files[3], files[2]):
        run = store(f)
        assert run.status(f["path"]) == H.SUCCESS, "store after the database came back: " + run.summary()
    assert node.proc.poll() is None and node.pid == pid, "the node was restarted"
    assert not re.search(r"ended unexpectedly", "\n".join(log_lines(node))), H.tail(node.log_path)
    assert sorted(r["sop_uid"] for r in C.instance_rows(node)) == sorted(
        f["sop_instance_uid"] for f in files)
    assert_consistent(node)


# --------------------------------------------------------------------------
# 3. Silent and half-speaking peers


@pytest.mark.node_config(workers=2)
def test_silent_peers_stall_nobody(node, scu_dir):
    """Two connections that send nothing and one that sends half an
    A-ASSOCIATE-RQ hold both pool workers and an overflow worker (acse_timeout
    is 30 s): a storescu and an echoscu still complete at once."""
    socks = []
    try:
        for _ in range(2):
            socks.append(socket.create_connection((node.host, node.port), timeout=5))
        rq = rawscu.associate_rq("PNHALF", node.aet, VERIFICATION)
        half = socket.create_connection((node.host, node.port), timeout=5)
        socks.append(half)
        half.sendall(rq[:len(rq) // 2])
        time.sleep(0.3)  # the listener has handed them out

        f = small_instance(scu_dir, "past-silent")
        t0 = time.monotonic()
        run = H.storescu(node.port, [f["path"]], scu_dir, aet="PNBUSY", timeout=15)
        store_s = time.monotonic() - t0
        t0 = time.monotonic()
        echo = H.echoscu(node.port, aet="PNBUSYECHO", timeout=15)
        echo_s = time.monotonic() - t0

        assert run.all_success(), run.summary()
        assert store_s < 5, "storescu took %.1f s behind silent peers" % store_s
        assert echo.ok, echo.output
        assert echo_s < 5, "echoscu took %.1f s behind silent peers" % echo_s
        for s in socks:  # still held open by the node, not dropped to make room
            s.setblocking(False)
            try:
                assert s.recv(1) != b"", "the node closed a silent connection early"
            except BlockingIOError:
                pass
    finally:
        for s in socks:
            s.close()
    assert node.count("instance") == 1
    assert_consistent(node)


@pytest.mark.parametrize("what", ["silent", "half A-ASSOCIATE-RQ"])
def test_acse_timeout_closes_idle_connection(node_factory, what):
    """With acse_timeout = 2 the node closes a connection that sends nothing,
    or stops in the middle of its A-ASSOCIATE-RQ, after about 2 s."""
    acse = 2
    node = node_factory(workers=1, extra_config={"limits": {"acse_timeout": acse}})
    s = socket.create_connection((node.host, node.port), timeout=5)
    try:
        if what != "silent":
            rq = rawscu.associate_rq("PNHALF", node.aet, VERIFICATION)
            s.sendall(rq[:len(rq) // 2])
        closed_after, got = wait_closed(s, acse + 6)
    finally:
        s.close()
    assert closed_after is not None, "still open %d s after connecting (acse_timeout = %d)" % (
        acse + 6, acse)
    assert acse - 0.5 <= closed_after <= acse + 3, "closed after %.1f s (acse_timeout = %d)" % (
        closed_after, acse)
    assert got == b"" or got[:1] in (b"\x07", b"\x03"), "unexpected bytes %r" % got[:32]
    wait_log(node, r"dropped before a valid A-ASSOCIATE-RQ.*timed out", "the timed-out connection")
    # The worker it held is free again.
    r = H.echoscu(node.port, aet="PNAFTER", timeout=10)
    assert r.ok, r.output


def test_connection_closed_without_a_byte_is_no_association(node):
    """A TCP connection that closes without sending anything (a port probe,
    a load balancer's health check) is logged as a dropped connection, not
    as an association rejected for its (empty) called AE title."""
    offset = os.path.getsize(node.log_path)
    with socket.create_connection((node.host, node.port), timeout=5):
        pass
    wait_log(node, r'connection closed before|association (from )?"" ', "the empty connection",
             offset=offset)
    time.sleep(0.2)
    lines = log_lines(node, offset)
    bogus = [l for l in lines if re.search(r'association (from )?"" ', l)]
    assert not bogus, "an empty connection was logged as an association:\n" + "\n".join(bogus)
    assert any("connection closed before an A-ASSOCIATE-RQ" in l for l in lines), \
        "\n".join(lines)


# --------------------------------------------------------------------------
# 4. max_associations


@pytest.mark.node_config(workers=1, max_associations=2)
def test_max_associations_rejects_transient(node):
    # The start-up C-ECHO's worker tells the listener it is idle right after
    # logging its association: let that land before counting.
    wait_log(node, r'association "PNTEST"', "the start-up C-ECHO")
    time.sleep(0.2)
    held = [hold_association(node, "PNHOLD1"), hold_association(node, "PNHOLD2")]
    try:
        r = H.echoscu(node.port, aet="PNTHIRD", timeout=15)
        assert not r.ok, "a third association was accepted:\n" + r.output
        assert "Rejected Transient" in r.output and "Local Limit Exceeded" in r.output, r.output
        wait_log(node, r'"PNTHIRD".*rejected \(transient\)', "the rejected third association")

        held[0].release()
        held[0].close()
        held.pop(0)
        # The listener learns that the worker is free a moment after the release.
        deadline = time.monotonic() + 3
        while True:
            r = H.echoscu(node.port, aet="PNFOURTH", timeout=15)
            if r.ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.ok, "still refused 3 s after an association was released:\n" + r.output
    finally:
        for a in held:
            a.close()


# --------------------------------------------------------------------------
# 5. Who may associate, and who may store


def test_called_ae_must_be_ours(node):
    r = H.echoscu(node.port, aet="PNCALLER", aec="WRONG")
    assert not r.ok, r.output
    assert "Rejected Permanent" in r.output, r.output
    assert "Called AE Title Not Recognized" in r.output, r.output
    wait_log(node, r'"PNCALLER".*rejected.*called AE title "WRONG"', "the wrong called AE title")


@pytest.mark.node_config(extra_config={
    "node": {"accept_unknown_calling_ae": "no"},
    "peer.harness": {"ae_title": "PNTEST", "allow": "store"},  # the harness's readiness C-ECHO
    "peer.ws": {"ae_title": "GOODSCU", "allow": "store"},
    "peer.viewer": {"ae_title": "FINDONLY", "allow": "find"},
})
def test_calling_ae_and_peer_rights(node, scu_dir):
    # (b) listed peer: accepted and may store; unknown: rejected.
    r = H.echoscu(node.port, aet="GOODSCU")
    assert r.ok, r.output
    good = small_instance(scu_dir, "peer-good")
    run = H.storescu(node.port, [good["path"]], scu_dir, aet="GOODSCU")
    assert run.all_success(), run.summary()

    r = H.echoscu(node.port, aet="STRANGER")
    assert not r.ok, r.output
    assert "Rejected Permanent" in r.output, r.output
    assert "Calling AE Title Not Recognized" in r.output, r.output
    wait_log(node, r'"STRANGER".*rejected.*calling AE title', "the unknown calling AE title")

    # (c) a peer without "store": 0x0124, nothing stored.
    db1 = C.db_snapshot(node)
    files1 = storage_files(node)
    refused = small_instance(scu_dir, "peer-findonly")
    run = H.storescu(node.port, [refused["path"]], scu_dir, aet="FINDONLY")
    assert run.status(refused["path"]) == NOT_AUTHORIZED, run.summary()
    assert C.db_snapshot(node) == db1, "the index changed"
    assert storage_files(node) == files1 and tmp_files(node) == []
    assert_consistent(node)
    wait_log(node, r'"FINDONLY".*refused.*not allowed to store', "the store by a find-only peer")
    wait_log(node, r'association "FINDONLY" .*released.* 0 instances stored, 1 failed',
             "the find-only peer's association")


# --------------------------------------------------------------------------
# 6. Crash recovery at start-up


def rel_path(series_uid, sop_uid, generation):
    """What scp/storage_path.c names an instance:
    ab/cd/<32 hex of the series>/<32 hex of the instance>.<8 hex>.dcm."""
    s = hashlib.sha256(series_uid.encode("ascii")).hexdigest()[:32]
    i = hashlib.sha256(sop_uid.encode("ascii")).hexdigest()[:32]
    return "%s/%s/%s/%s.%08x.dcm" % (s[:2], s[2:4], s, i, generation)


def tmp_name(rel):
    """The tmp/ name earlier builds gave a file: its final path, flattened."""
    return rel.replace("/", "-")


def part_name(rel, n):
    """A tmp/ name as the node makes it now: in-<generation>-<pid>-<n>."""
    return "in-%s-1-%d" % (rel[-12:-4], n)


def place_final(node, rel, src_path):
    """Copies src_path to its final path under the storage root, with the
    folders the node would have made, owned by the node's user."""
    for n in (2, 5, 38):
        H.make_dir(os.path.join(node.storage, rel[:n]), node.user, 0o750)
    final = os.path.join(node.storage, rel)
    with open(src_path, "rb") as src, open(final, "wb") as dst:
        dst.write(src.read())
    H.chown_to(final, node.user)
    return final


def test_crash_leftovers_are_recovered_at_start(node_factory, scu_dir):
    node = node_factory()
    a = small_instance(scu_dir, "crash-a")
    b = small_instance(scu_dir, "crash-b")
    e = small_instance(scu_dir, "crash-e")
    run = H.storescu(node.port, [a["path"], b["path"], e["path"]], scu_dir)
    assert run.all_success(), run.summary()
    rc = node.stop()
    assert rc in (0, -15), "first run ended with %r" % rc
    rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
    db1 = C.db_snapshot(node)
    user = node.user
    tmp = node.tmp_dir  # the node's own folder of temporary files
    assert tmp_files(node) == []

    # (i) uncommitted: final file and tmp entry, no row.
    c = small_instance(scu_dir, "crash-c")
    c_rel = rel_path(c["series_instance_uid"], c["sop_instance_uid"], 0x0BADC0DE)
    c_final = place_final(node, c_rel, c["path"])
    c_tmp = os.path.join(tmp, tmp_name(c_rel))
    os.link(c_final, c_tmp)
    # (ii) committed A whose tmp entry was not yet unlinked.
    a_rel = rows[a["sop_instance_uid"]]["path"]
    a_final = os.path.join(node.storage, a_rel)
    a_sha = C.sha256_file(a_final)
    a_tmp = os.path.join(tmp, tmp_name(a_rel))
    os.link(a_final, a_tmp)
    # (iii) something that is no name of ours.
    garbage = os.path.join(tmp, "garbage")
    with open(garbage, "w") as f:
        f.write("not a DICOM file\n")
    H.chown_to(garbage, user)
    # Names as the node makes them now, which only carry the generation:
    # recovery reads the UIDs from the file.
    # (iv) committed E whose final link was lost: only its tmp entry is left.
    e_rel = rows[e["sop_instance_uid"]]["path"]
    e_final = os.path.join(node.storage, e_rel)
    e_sha = C.sha256_file(e_final)
    e_tmp = os.path.join(tmp, part_name(e_rel, 1))
    os.link(e_final, e_tmp)
    os.unlink(e_final)
    # (v) uncommitted D: linked, no row.
    d = small_instance(scu_dir, "crash-d")
    d_rel = rel_path(d["series_instance_uid"], d["sop_instance_uid"], 0x00C0FFEE)
    d_final = place_final(node, d_rel, d["path"])
    d_tmp = os.path.join(tmp, part_name(d_rel, 2))
    os.link(d_final, d_tmp)
    # (vi) an instance still being received: the first bytes of a file.
    partial = os.path.join(tmp, "in-0000abcd-1-3")
    with open(c["path"], "rb") as src, open(partial, "wb") as dst:
        dst.write(src.read(200))
    H.chown_to(partial, user)
    # (vii) a spare file made ahead of time, still empty.
    spare = os.path.join(tmp, "in-0000abce-1-4")
    open(spare, "wb").close()
    H.chown_to(spare, user)

    offset = node.start_again()
    line = wait_log(node, r"storage recovery", "the start-up recovery", offset=offset)
    assert re.search(r"\b2 committed .*\b2 uncommitted .*\b3 stray", line), line

    assert not os.path.exists(c_final), "the uncommitted instance's file survived"
    assert not os.path.exists(c_tmp), "the uncommitted instance's tmp entry survived"
    assert os.path.isfile(a_final) and C.sha256_file(a_final) == a_sha, "A's file lost or changed"
    assert not os.path.exists(a_tmp), "A's tmp entry survived"
    assert not os.path.exists(garbage), "tmp/garbage survived"
    assert os.path.isfile(e_final) and C.sha256_file(e_final) == e_sha, "E's file not relinked"
    assert not os.path.exists(d_final), "the uncommitted D's file survived"
    assert not os.path.exists(partial), "the partly received file survived"
    assert not os.path.exists(spare), "the empty spare file survived"
    assert tmp_files(node) == []
    assert C.db_snapshot(node) == db1, "the index changed"
    assert sorted(storage_files(node)) == sorted(r["path"] for r in rows.values())
    assert_consistent(node)
    # And it stores again.
    run = H.storescu(node.port, [c["path"]], scu_dir)
    assert run.all_success(), run.summary()
    assert_consistent(node)


def test_killed_under_load_loses_no_acknowledged_instance(node_factory, scu_dir):
    """SIGKILL to the whole node (listener and workers at once) while four
    storescu processes store into one study, at three moments, with a
    restart after each: every instance a sender was told had been stored
    is there with the bytes it sent; no row lacks its file and no file its
    row; tmp/ is empty; the kept counts agree with the rows. What the kills
    cut off is sent again each time, and at the end the set is complete."""
    node = node_factory()
    total = 400
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "kill-%03d.dcm" % i), name="kill-%03d" % i,
                                      patient_id="PN-KILL", study_uid="1.2.3.4242",
                                      series_uid="1.2.3.4242.%d" % (i % 4), instance_number=str(i + 1),
                                      set_attrs={"Rows": 128, "Columns": 128, "PixelData": bytes(128 * 128 * 2)})
             for i in range(total)]
    by_path = {f["path"]: f for f in files}
    acked = {}

    def check_stored(new):
        rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
        lost = sorted(set(acked) - set(rows))
        assert not lost, "acknowledged and lost: %s" % lost[:5]
        assert_consistent(node)
        for f in new:
            row = rows[f["sop_instance_uid"]]
            diffs = C.compare_part10(f["path"], os.path.join(node.storage, row["path"]),
                                     f["sop_class_uid"], f["sop_instance_uid"], f["transfer_syntax_uid"])
            assert not diffs, diffs
        wrong = C.wrong_counts(node)
        assert not wrong, "kept counts: %s" % wrong
        return rows

    for kill_at in (40, 140, 240, None):
        todo = [f["path"] for f in files if f["sop_instance_uid"] not in acked]
        group = H.StorescuGroup(node.port, [todo[k::4] for k in range(4)], scu_dir)
        if kill_at is not None:
            deadline = time.monotonic() + 60
            while node.count("instance") < kill_at:
                assert time.monotonic() < deadline, "fewer than %d instances stored in 60 s" % kill_at
                time.sleep(0.002)
            node.kill()
        runs = group.wait(120)
        new = [by_path[r.path] for run in runs for r in run.results.values() if r.status == H.SUCCESS]
        for f in new:
            acked[f["sop_instance_uid"]] = f
        if kill_at is None:
            assert len(acked) == total, [r.summary(only_problems=True) for r in runs]
            rows = check_stored(new)
            assert len(rows) == total
            break
        assert len(new) < len(todo), "the kill came after the senders had finished: nothing was cut"
        assert tmp_files(node), "nothing left in tmp/ for the recovery to settle"
        offset = node.start_again()
        wait_log(node, r"storage recovery after an unclean stop", "the start-up recovery", offset=offset)
        check_stored(new)


@contextlib.contextmanager
def own_cluster_node(it_base, testdir, dbname, **node_kw):
    """(cluster, node): a started cluster of the test's own, committing
    synchronously as in production (the shared test cluster commits
    asynchronously, which an immediate stop may undo), and a node on it.
    The cluster lives under the worker's short base directory: a socket
    path has 107 bytes. Both are stopped on the way out, and the node's log
    checked for sanitizer reports."""
    base, user = it_base
    pgbase = tempfile.mkdtemp(prefix="pgc-", dir=base)
    os.chmod(pgbase, 0o755)
    cluster = H.PgCluster(pgbase, user, settings={"synchronous_commit": "on"})
    cluster.start()
    node = None
    try:
        cluster.create_db(dbname)
        node = H.Node(cluster, H.make_dir(os.path.join(testdir, "node"), user), dbname, user, **node_kw)
        node.start()
        yield cluster, node
    finally:
        if node is not None:
            node.stop()
            found = node.sanitizer_reports()
            assert not found, "%s in %s" % (found, node.log_path)
        cluster.stop()


def test_postgres_restart_while_idle_costs_no_store(testdir, it_base, scu_dir):
    """PostgreSQL crashes and comes back while the node is idle: the first
    store afterwards finds its worker's connection dead (on the pipelined
    path, where libpq then refuses ordinary calls), reconnects and
    succeeds; no store is refused."""
    with own_cluster_node(it_base, testdir, "idle", workers=1, max_associations=2) as (cluster, node):
        files = [gen_corpus.make_instance(os.path.join(scu_dir, "idle-%d.dcm" % i), name="idle-%d" % i,
                                          study_uid="1.2.3.4545", series_uid="1.2.3.4545.1")
                 for i in range(4)]
        run = H.storescu(node.port, [f["path"] for f in files[:2]], scu_dir)
        assert run.all_success(), run.summary()
        for _ in range(2):
            cluster.crash()
            cluster.start_again()
        run = H.storescu(node.port, [f["path"] for f in files[2:]], scu_dir)
        assert run.all_success(), run.summary()
        assert len(C.instance_rows(node)) == 4
        assert_consistent(node)
        assert not C.wrong_counts(node)


def test_postgres_crash_under_load_loses_no_acknowledged_instance(testdir, it_base, scu_dir):
    """PostgreSQL stopped in immediate mode (its backends killed, crash
    recovery at the next start) while four storescu processes store, and
    started again 0.5 s later, three times. The node is not restarted: stores in the
    outage are refused with 0xA701, then the workers reconnect and store
    again. Every instance a sender was told had been stored is in the index
    with its file. A file whose COMMIT answer was lost is settled as soon
    as PostgreSQL can tell whether that transaction committed, without a
    restart; then what was refused is sent again and the set is complete,
    and a restart finds nothing to recover."""
    with own_cluster_node(it_base, testdir, "crash") as (cluster, node):
        total = 600
        files = [gen_corpus.make_instance(os.path.join(scu_dir, "pgc-%03d.dcm" % i), name="pgc-%03d" % i,
                                          patient_id="PN-PGC", study_uid="1.2.3.4343",
                                          series_uid="1.2.3.4343.%d" % (i % 4), instance_number=str(i + 1),
                                          set_attrs={"Rows": 128, "Columns": 128,
                                                     "PixelData": bytes(128 * 128 * 2)})
                 for i in range(total)]
        by_path = {f["path"]: f for f in files}
        group = H.StorescuGroup(node.port, [[f["path"] for f in files[k::4]] for k in range(4)], scu_dir)
        # Three outages: each may or may not catch a COMMIT in flight.
        for crash_at in (60, 200, 340):
            deadline = time.monotonic() + 60
            while node.count("instance") < crash_at:
                assert time.monotonic() < deadline, "fewer than %d instances stored in 60 s" % crash_at
                time.sleep(0.002)
            cluster.crash()
            time.sleep(0.5)
            cluster.start_again()
        runs = group.wait(120)
        statuses = [(by_path[r.path], r.status) for run in runs for r in run.results.values()]
        acked = {f["sop_instance_uid"]: f for f, st in statuses if st == H.SUCCESS}
        refused = [f for f, st in statuses if st == OUT_OF_INDEX]
        others = [(f["sop_instance_uid"], st) for f, st in statuses if st not in (H.SUCCESS, OUT_OF_INDEX)]
        assert not others, "answers other than success and 0xA701: %s" % others[:5]
        assert refused, "no store fell into the outage"
        assert any(f["sop_instance_uid"] in acked for f in files[500:]), "nothing stored after the outages"
        wait_log(node, r"refused \(0xA701\)", "the refusals during the outage")

        rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
        lost = sorted(set(acked) - set(rows))
        assert not lost, "acknowledged and lost: %s" % lost[:5]
        for uid, f in acked.items():
            path = os.path.join(node.storage, rows[uid]["path"])
            assert not C.compare_part10(f["path"], path, f["sop_class_uid"], uid, f["transfer_syntax_uid"])
        # Without a restart: files whose COMMIT answer was lost were settled
        # once the index answered again, at the latest when their
        # association ended.
        unknown = len([l for l in log_lines(node) if "outcome unknown" in l])
        settled = sum(int(m.group(1)) for m in
                      (re.search(r"settled (\d+) instance file", l) for l in log_lines(node)) if m)
        assert settled == unknown, "%d COMMIT outcomes lost, %d settled" % (unknown, settled)
        assert_consistent(node)
        assert not C.wrong_counts(node)

        run = H.storescu(node.port, [f["path"] for f in refused], scu_dir)
        assert run.all_success(), run.summary(only_problems=True)
        assert len(C.instance_rows(node)) == total
        assert_consistent(node)
        assert not C.wrong_counts(node)
        rc = node.stop()
        assert rc in (0, -15), "the node ended with %r" % rc
        offset = node.start_again()
        assert not [l for l in log_lines(node, offset) if "recovery" in l], "the restart found things to recover"


def node_children(node):
    """PIDs whose parent is the node's listener: its workers."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == node.pid:
                kids.append(int(d))
    return kids


def busy_workers(node):
    """The node's workers that hold an established TCP connection on its
    port: the ones serving an association right now."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == node.port and fields[3] == "01":
                inodes.add(fields[9])
    busy = []
    for pid in node_children(node):
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                busy.append(pid)
                break
    return busy


def test_killed_worker_takes_only_its_own_association(node_factory, scu_dir):
    """SIGKILL to one worker while four associations store: only that
    association breaks; the other three store every file; the listener
    starts another worker, which serves a new association; nothing
    acknowledged is lost; what the dead worker left in tmp/ is settled
    while the node runs, and the storage and the index agree exactly,
    before and after a restart."""
    node = node_factory()
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "wk-%03d.dcm" % i), name="wk-%03d" % i,
                                      patient_id="PN-WK", study_uid="1.2.3.4646",
                                      series_uid="1.2.3.4646.%d" % (i % 4), instance_number=str(i + 1),
                                      set_attrs={"Rows": 128, "Columns": 128, "PixelData": bytes(128 * 128 * 2)})
             for i in range(400)]
    by_path = {f["path"]: f for f in files}
    lists = [[f["path"] for f in files[k::4]] for k in range(4)]
    group = H.StorescuGroup(node.port, lists, scu_dir)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "no worker busy with 40 or more instances stored"
        busy = busy_workers(node) if node.count("instance") >= 40 else []
        if busy:
            break
        time.sleep(0.002)
    victim = busy[0]
    os.kill(victim, signal.SIGKILL)
    runs = group.wait(120)
    # The victim's association breaks (unless it was releasing already);
    # the others are untouched.
    whole = [run for run in runs if run.all_success()]
    assert len(whole) >= 3, [run.summary(only_problems=True) for run in runs]
    wait_log(node, r"worker %d ended unexpectedly \(killed by signal 9\)" % victim, "the worker's death")
    acked = {by_path[r.path]["sop_instance_uid"] for run in runs for r in run.results.values()
             if r.status == H.SUCCESS}
    rows = {r["sop_uid"] for r in C.instance_rows(node)}
    assert acked <= rows, sorted(acked - rows)[:5]
    # A new association after the death is served, and at its end the
    # dead worker's files in tmp/ (its committed instances' second names,
    # spares, the instance it was receiving) are settled: the storage and
    # the index agree without a restart.
    extra = small_instance(scu_dir, "wk-after")
    run = H.storescu(node.port, [extra["path"]], scu_dir)
    assert run.all_success(), run.summary()
    deadline = time.monotonic() + 10
    while [n for n in tmp_files(node) if "-%d-" % victim in n]:
        assert time.monotonic() < deadline, "the dead worker's files stay in tmp/: %s" % tmp_files(node)
        assert H.echoscu(node.port).ok
        time.sleep(0.05)
    wait_log(node, r"settled the temporary files of ended workers", "the settling")
    assert_consistent(node)
    assert not C.wrong_counts(node)

    rc = node.stop()
    assert rc in (0, -15), "the node ended with %r" % rc
    node.start_again()
    assert_consistent(node)
    assert not C.wrong_counts(node)
    run = H.storescu(node.port, [f["path"] for f in files], scu_dir)
    assert run.all_success(), run.summary(only_problems=True)
    assert len(C.instance_rows(node)) == len(files) + 1


def test_startup_recovery_waits_for_a_session_of_the_earlier_run(node_factory, scu_dir):
    """A database session that still holds the lock of the worker named in
    a tmp/ file (as one of the earlier run still finishing a COMMIT would)
    keeps start-up recovery off that file: after the bounded wait (10 s) it
    is left, with a warning, and so are the running workers. Once the
    session is gone, the next start settles it."""
    node = node_factory()
    assert node.stop() in (0, -15)
    ghost = 4194301  # a worker pid of "the earlier run"; no such process
    d = small_instance(scu_dir, "held-d")
    d_rel = rel_path(d["series_instance_uid"], d["sop_instance_uid"], 0x00C0FFEE)
    d_final = place_final(node, d_rel, d["path"])
    d_tmp = os.path.join(node.storage, "tmp", "in-%s-%d-1" % (d_rel[-12:-4], ghost))
    os.link(d_final, d_tmp)
    conn = node.connect()
    try:
        conn.autocommit = True
        conn.cursor().execute("SELECT pg_advisory_lock(1347311409, %s)", (ghost,))
        t0 = time.monotonic()
        offset = node.start_again()
        waited = time.monotonic() - t0
        wait_log(node, r"storage recovery: 1 temporary files left for later", "the warning", offset=offset)
        assert waited >= 9, "recovery did not wait for the session (%.1f s)" % waited
        assert H.echoscu(node.port).ok
        assert os.path.exists(d_final) and os.path.exists(d_tmp), "a file of a live session was settled"
        # Stopped while the session still holds the lock: a running worker
        # would otherwise settle the file first, at the end of an association.
        assert node.stop() in (0, -15)
    finally:
        conn.close()
    offset = node.start_again()
    wait_log(node, r"storage recovery after an unclean stop: 0 committed instances finished, 1 uncommitted",
             "the recovery", offset=offset)
    assert not os.path.exists(d_final) and not os.path.exists(d_tmp)
    assert_consistent(node)


def test_replaced_file_left_by_a_crash_is_removed_at_start(node_factory, scu_dir):
    """duplicate_policy = replace queues the old file in storage_garbage in
    the transaction that points the row at the new one; if the node dies
    before unlinking it, the next start does."""
    node = node_factory(duplicate_policy="replace")
    a = small_instance(scu_dir, "garbage-a")
    run = H.storescu(node.port, [a["path"]], scu_dir)
    assert run.all_success(), run.summary()
    rc = node.stop()
    assert rc in (0, -15), "first run ended with %r" % rc
    (row,) = C.instance_rows(node)
    # The old generation a crash left behind: same folder, another name.
    old_rel = row["path"][:-len("00000000.dcm")] + "0badc0de.dcm"
    assert old_rel != row["path"]
    old_full = os.path.join(node.storage, old_rel)
    with open(os.path.join(node.storage, row["path"]), "rb") as src, open(old_full, "wb") as dst:
        dst.write(src.read())
    H.chown_to(old_full, node.user)
    node.query("INSERT INTO storage_garbage (path) VALUES (%s)", (old_rel,))

    offset = node.start_again()
    wait_log(node, r"storage recovery: 1 files of replaced or deleted instances removed", "the garbage recovery",
             offset=offset)
    assert not os.path.exists(old_full), "the replaced file survived the restart"
    assert node.query("SELECT path FROM storage_garbage") == []
    assert os.path.isfile(os.path.join(node.storage, row["path"])), "the current file was removed"
    assert_consistent(node)


# --------------------------------------------------------------------------
# 7. Bad configuration


def run_node(argv, timeout=10):
    t0 = time.monotonic()
    r = subprocess.run([H.NODE_BIN] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, errors="replace", timeout=timeout,
                       **node_argv_kw())
    return r, time.monotonic() - t0


def write_conf(testdir, name, text):
    path = os.path.join(testdir, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def one_error_line(r, path):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "wanted one line on stderr, got:\n" + r.stderr
    assert path in lines[0], lines[0]
    return lines[0]


BAD_VALUE = "; a comment\n[node]\nport = 11112\n\n[limits]\nworkers = many\n"


@pytest.mark.parametrize("check_only", [False, True])
def test_bad_value_stops_the_node(testdir, check_only):
    path = write_conf(testdir, "bad-value.conf", BAD_VALUE)
    r, took = run_node((["-t"] if check_only else []) + ["-c", path])
    assert r.returncode != 0, "exit 0 with workers = many:\n" + r.stdout + r.stderr
    assert took < 5, "took %.1f s to refuse the file" % took
    line = one_error_line(r, path)
    assert "%s:6:" % path in line, line
    assert '"many"' in line and "integer" in line, line


def test_bad_value_error_names_the_key(testdir):
    """README: a bad value stops the node 'with one line naming the file, the
    line and the key'."""
    path = write_conf(testdir, "bad-value.conf", BAD_VALUE)
    r, _took = run_node(["-c", path])
    assert r.returncode != 0
    line = one_error_line(r, path)
    assert "workers" in line, "the error line does not name the key: " + line


@pytest.mark.parametrize("text,lineno,words", [
    ("[limits]\nworkers = 2\nworkerz = 2\n", 3, ['"workerz"', "[limits]"]),
    ("[node]\nport = 11112\n[limitz]\nworkers = 2\n", 4, ['"workers"', "[limitz]"]),
])
def test_unknown_key_stops_the_node(testdir, text, lineno, words):
    path = write_conf(testdir, "unknown.conf", text)
    r, took = run_node(["-c", path])
    assert r.returncode != 0, "exit 0 with an unknown key:\n" + r.stdout + r.stderr
    assert took < 5, "took %.1f s to refuse the file" % took
    line = one_error_line(r, path)
    assert "%s:%d:" % (path, lineno) in line, line
    assert "unknown" in line.lower(), line
    for w in words:
        assert w in line, line


def test_example_configuration_is_valid():
    example = os.path.join(H.REPO, "conf", "pacsnode.conf")
    r = subprocess.run([H.NODE_BIN, "-t", "-c", example], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout, r.stdout


# --------------------------------------------------------------------------
# 8. The association log line


def test_one_log_line_per_association(node, scu_dir):
    files = [small_instance(scu_dir, "logline%d" % i) for i in range(3)]
    run = H.storescu(node.port, [f["path"] for f in files], scu_dir, aet="PNLOGLINE")
    assert run.all_success(), run.summary()
    wait_log(node, r'association "PNLOGLINE"', "the association")
    lines = [l for l in log_lines(node) if re.search(r'association "PNLOGLINE"', l)]
    assert len(lines) == 1, "\n".join(lines)
    line = lines[0]
    assert '"PNLOGLINE" -> "%s"' % node.aet in line, line
    assert "from 127.0.0.1" in line, line
    assert "released" in line, line
    assert "3 instances stored" in line and "0 failed" in line, line
    assert re.search(r"after \d+\.\d+ s", line), line


# --------------------------------------------------------------------------
# systemd readiness (Type=notify)


def test_notifies_systemd_ready_and_stopping(node_factory, testdir, monkeypatch):
    """With NOTIFY_SOCKET set, as systemd sets it, the node sends READY=1 once
    it listens and STOPPING=1 when it shuts down."""
    import socket
    path = os.path.join(testdir, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)  # the node may run as the unprivileged user
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        node = node_factory()
        got = sock.recv(4096).decode()
        assert "READY=1" in got.split("\n"), got
        # it is ready for real: an echo works
        assert H.echoscu(node.port, aet="PNNOTIFY").ok
        node.stop()
        got = sock.recv(4096).decode()
        assert "STOPPING=1" in got.split("\n"), got
    finally:
        sock.close()


def test_dimse_timeout_cuts_a_peer_stalled_mid_dataset(node_factory, scu_dir):
    """After the association is accepted, dimse_timeout bounds every read,
    also in the middle of a P-DATA PDU: a peer that stops half-way through a
    dataset loses its association, nothing of the instance remains, and the
    worker serves others again."""
    dimse = 2
    node = node_factory(workers=1, extra_config={"limits": {"dimse_timeout": dimse}})
    inst = small_instance(scu_dir, "stalled")
    a = rawscu.Association(node.host, node.port, timeout=15)
    try:
        a.associate("PNSTALL", node.aet, inst["sop_class_uid"])
        a._send_pdvs(rawscu.c_store_rq(1, inst["sop_class_uid"], inst["sop_instance_uid"]), True)
        data = rawscu.dataset_bytes(inst["path"])
        pdv = struct.pack(">IBB", len(data) + 2, a.pc_id, 0x02) + data
        pdu = rawscu._pdu(0x04, pdv)
        a.sock.sendall(pdu[:len(pdu) // 2])  # and then nothing
        closed_after, _ = wait_closed(a.sock, dimse + 6)
    finally:
        a.close()
    assert closed_after is not None, "still open %d s into a stalled dataset (dimse_timeout = %d)" % (
        dimse + 6, dimse)
    assert closed_after <= dimse + 3, "closed after %.1f s (dimse_timeout = %d)" % (closed_after, dimse)
    wait_log(node, r"broken off while receiving|association \"PNSTALL\".*aborted", "the stalled store")
    assert tmp_files(node) == []
    assert node.count("instance") == 0
    r = H.echoscu(node.port, aet="PNAFTER", timeout=10)
    assert r.ok, r.output


def test_unparseable_dataset_is_refused_and_the_association_goes_on(node, scu_dir):
    """Bytes that do not parse as a dataset get 0xC000 and leave nothing, and
    the same association then stores a good instance."""
    good = small_instance(scu_dir, "after-garbage")
    data = rawscu.dataset_bytes(good["path"])
    truncated = data[:40] + struct.pack("<HH2sHI", 0x0010, 0x0010, b"UN", 0, 100000) + b"x" * 10
    a = rawscu.Association(node.host, node.port, timeout=15)
    try:
        a.associate("PNGARBAGE", node.aet, good["sop_class_uid"])
        bad_uid = gen_corpus.make_uid(0, "garbage")
        for i, payload in enumerate([truncated, os.urandom(2000)]):
            status = a.c_store(good["sop_class_uid"], bad_uid, payload, msg_id=i + 1)
            assert status == 0xC000, "0x%04X for case %d" % (status, i)
        status = a.c_store(good["sop_class_uid"], good["sop_instance_uid"], data, msg_id=3)
        assert status == H.SUCCESS, "0x%04X" % status
        a.release()
    finally:
        a.close()
    assert node.count("instance") == 1
    assert tmp_files(node) == []
    assert_consistent(node)
    wait_log(node, r"cannot be parsed", "the unparseable dataset")


# ----- hostile structure: nesting and long sequences ------------------------

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def nested_sequences(depth, tag=(0x0040, 0xA730)):
    """`depth` sequences (explicit VR, undefined lengths), each in the one
    item of the one above: 20 bytes a level."""
    sq = struct.pack("<HH2sHI", tag[0], tag[1], b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (sq + item) * depth + ends * depth


LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def insert_element(dataset, tag, encoded):
    """An explicit VR little endian dataset with `encoded` (the element
    `tag`) put among its top-level elements in tag order."""
    off = 0
    while off < len(dataset):
        group, elem, vr = struct.unpack_from("<HH2s", dataset, off)
        if (group, elem) > tag:
            break
        if vr in LONG_VRS:
            (n,) = struct.unpack_from("<I", dataset, off + 8)
            off += 12 + n
        else:
            (n,) = struct.unpack_from("<H", dataset, off + 6)
            off += 8 + n
    return dataset[:off] + encoded + dataset[off:]


def with_nesting(dataset, depth):
    return insert_element(dataset, (0x0040, 0xA730), nested_sequences(depth))


def no_crash(node):
    bad = [line for line in log_lines(node) if re.search(r"ended unexpectedly|signal", line)]
    assert not bad, "a process of the node crashed:\n" + "\n".join(bad)


def test_deeply_nested_sequences_are_refused_without_a_crash(node, scu_dir):
    """dcmtk reads sequences by recursion: 20,000 nested ones (400 KB)
    overflowed a worker's stack, and the file left behind crashed every
    worker that later looked at it. Past 128 levels a C-STORE gets 0xC000
    and the association goes on; 128 levels are stored."""
    cases = [(20000, 0xC000), (129, 0xC000), (128, H.SUCCESS)]
    a = rawscu.Association(node.host, node.port, timeout=30)
    try:
        for i, (depth, want) in enumerate(cases):
            inst = small_instance(scu_dir, "nest-%d" % depth)
            if i == 0:
                a.associate("PNNEST", node.aet, inst["sop_class_uid"])
            payload = with_nesting(rawscu.dataset_bytes(inst["path"]), depth)
            status = a.c_store(inst["sop_class_uid"], inst["sop_instance_uid"], payload, msg_id=i + 1)
            assert status == want, "depth %d: 0x%04X" % (depth, status)
        a.release()
    finally:
        a.close()
    wait_log(node, r"failed \(0xC000\): sequences are nested more than 128 levels deep", "the refusal")
    # Later associations end (and look at tmp/) without crashing.
    good = small_instance(scu_dir, "after-nesting")
    run = H.storescu(node.port, [good["path"]], scu_dir)
    assert run.all_success(), run.summary()
    assert node.count("instance") == 2
    assert tmp_files(node) == []
    assert_consistent(node)
    no_crash(node)


def test_deeply_nested_command_set_aborts_only_its_association(node, scu_dir):
    """A command set is read by the same recursion: 50,000 nested sequences
    in a C-ECHO-RQ abort that association, logged; its worker is replaced
    and the node goes on."""
    el = rawscu._element
    elems = (el(0, 0x0002, rawscu._uid("1.2.840.10008.1.1")) + el(0, 0x0100, struct.pack("<H", 0x30))
             + el(0, 0x0110, struct.pack("<H", 1)) + el(0, 0x0800, struct.pack("<H", 0x0101)))
    sq = struct.pack("<HHI", 0x0000, 0x7FFE, 0xFFFFFFFF)  # unknown, undefined length: a sequence
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    command = el(0, 0, struct.pack("<I", len(elems))) + elems + (sq + item) * 50000 + ends * 50000
    a = rawscu.Association(node.host, node.port, timeout=30)
    try:
        a.associate("PNNEST", node.aet, "1.2.840.10008.1.1")
        # The node reads each PDV as it comes and may abort before the
        # last one is sent.
        with pytest.raises((rawscu.UlError, OSError)):
            a._send_pdvs(command, True)
            a._recv_command()
    finally:
        a.close()
    wait_log(node, r"aborted: command set nested too deeply", "the aborted association")
    # What dcmtk had built is lost with the exception that stopped it: the
    # worker makes way for a fresh one.
    wait_log(node, r"worker retiring", "the worker's retirement")
    wait_log(node, r"worker \d+ retired; starting another", "the replacement")
    good = small_instance(scu_dir, "after-nested-command")
    run = H.storescu(node.port, [good["path"]], scu_dir)
    assert run.all_success(), run.summary()
    no_crash(node)


def test_deeply_nested_identifier(node):
    """A C-FIND identifier 129 levels deep gets 0xA900 and the association
    goes on; one too deep to read aborts the association, logged."""
    e = rawscu.explicit_element
    head = e(0x0008, 0x0052, "CS", b"STUDY ") + e(0x0020, 0x000D, "UI", b"")
    a = rawscu.Association(node.host, node.port, timeout=30)
    try:
        a.associate("PNNEST", node.aet, STUDY_ROOT_FIND)
        r = a.c_find(STUDY_ROOT_FIND, head + nested_sequences(129), a.pc_id, msg_id=1)
        assert [s for s, _ in r] == [0xA900], r
        r = a.c_find(STUDY_ROOT_FIND, head, a.pc_id, msg_id=2)
        assert r[-1][0] == H.SUCCESS, r
        with pytest.raises((rawscu.UlError, OSError)):  # also while sending
            a.c_find(STUDY_ROOT_FIND, head + nested_sequences(50000), a.pc_id, msg_id=3)
    finally:
        a.close()
    wait_log(node, r"C-FIND .*refused \(0xA900\): the identifier's sequences are nested more than 128",
             "the refused identifier")
    wait_log(node, r"C-FIND .*nested too deeply to read; association aborted", "the aborted identifier")
    no_crash(node)


def test_deeply_nested_file_in_tmp_does_not_stop_the_start(node_factory, scu_dir):
    """What a crashed worker left in tmp/ is read at the next start: a file
    too deeply nested to read is removed as never stored, and the node
    starts (it used to crash at every start)."""
    node = node_factory()
    good = small_instance(scu_dir, "nest-tmp")
    rc = node.stop()
    assert rc in (0, -15), "first run ended with %r" % rc
    with open(good["path"], "rb") as f:
        whole = f.read()
    dataset = rawscu.dataset_bytes(good["path"])
    planted = os.path.join(node.storage, "tmp", "in-0000abcd-1-7")
    with open(planted, "wb") as f:
        f.write(whole[:len(whole) - len(dataset)] + with_nesting(dataset, 20000))
    H.chown_to(planted, node.user)
    offset = node.start_again()
    wait_log(node, r"storage recovery", "the start-up recovery", offset=offset)
    assert not os.path.exists(planted), "the unreadable file was kept"
    run = H.storescu(node.port, [good["path"]], scu_dir)
    assert run.all_success(), run.summary()
    assert_consistent(node)
    no_crash(node)


def test_a_sequence_of_many_items_is_stored_and_matched_promptly(node, scu_dir):
    """Items were reached by index, each time from the first: a sequence of
    300,000 empty items (4.8 MB) held a worker for minutes. It is stored
    now, and a C-FIND with sequence matching walks the stored items."""
    good = small_instance(scu_dir, "many-items")
    data = rawscu.dataset_bytes(good["path"])
    n = 300000
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    # Procedure Code Sequence is a study attribute: it lands in the study blob.
    seq = (struct.pack("<HH2sHI", 0x0008, 0x1032, b"SQ", 0, 0xFFFFFFFF) + item * n
           + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    payload = insert_element(data, (0x0008, 0x1032), seq)
    a = rawscu.Association(node.host, node.port, timeout=60)
    started = time.monotonic()
    try:
        a.associate("PNITEMS", node.aet, good["sop_class_uid"], more=(STUDY_ROOT_FIND,))
        status = a.c_store(good["sop_class_uid"], good["sop_instance_uid"], payload)
        assert status == H.SUCCESS, "0x%04X" % status
        e = rawscu.explicit_element
        code = e(0x0008, 0x0100, "SH", b"NOPE")
        sq = (struct.pack("<HH2sHI", 0x0008, 0x1032, b"SQ", 0, 0xFFFFFFFF)
              + struct.pack("<HHI", 0xFFFE, 0xE000, len(code)) + code + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        ident = e(0x0008, 0x0052, "CS", b"STUDY ") + sq + e(0x0020, 0x000D, "UI", b"")
        r = a.c_find(STUDY_ROOT_FIND, ident, a.pc_id + 2, msg_id=2)
        assert [s for s, _ in r] == [H.SUCCESS], "a match among empty items: %r" % r
        a.release()
    finally:
        a.close()
    # Before the fix the store alone took minutes (quadratic in the items).
    assert time.monotonic() - started < 30
    assert node.count("instance") == 1
    assert_consistent(node)
    no_crash(node)
