"""Database failover: a node whose [database] conninfo lists a primary and
its synchronous standby (host=a,b port=x,y target_session_attrs=read-write)
while the primary dies (SIGKILL of its postmaster) and the standby is
promoted (pg_ctl promote). While no primary is reachable the node answers
C-STORE 0xA701, C-FIND 0xA700 and /health 503; once the standby is
promoted it stores and answers again by itself, without a restart; nothing
it acknowledged is missing from the promoted database or from the disk.
"""

import contextlib
import os
import re
import tempfile
import time

import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
import pg_replica
import web_util as W
from pacsnode_harness import gen_corpus

OUT_OF_INDEX = 0xA701
FIND_OUT_OF_RESOURCES = 0xA700
STUDY = "1.2.3.2323"


@contextlib.contextmanager
def pair_and_node(it_base, testdir, conninfo=None, **node_kw):
    """A primary with a synchronous standby, and a node (with its web on) on
    both. The pair lives under the worker's short base folder (a socket path
    has 107 bytes). Stopped on the way out; the node's log is checked for
    sanitizer reports."""
    base, user = it_base
    pgbase = tempfile.mkdtemp(prefix="fo-", dir=base)
    os.chmod(pgbase, 0o755)
    pair = pg_replica.PgPair(pgbase, user)
    node = None
    try:
        pair.start("pacsnode")
        node = W.WebNode(pair, H.make_dir(os.path.join(testdir, "node"), user), "pacsnode", user,
                         **node_kw)
        if conninfo is not None:
            node.conninfo = conninfo(pair)
            node.write_config()
        node.start()
        yield pair, node
    finally:
        if node is not None:
            node.stop()
            found = node.sanitizer_reports()
            assert not found, "%s in %s" % (found, node.log_path)
        pair.stop()


def instances(scu_dir, prefix, n, px=16):
    return [gen_corpus.make_instance(os.path.join(scu_dir, "%s-%03d.dcm" % (prefix, i)),
                                     name="%s-%03d" % (prefix, i), patient_id="PN-FO",
                                     study_uid=STUDY, series_uid="%s.%d" % (STUDY, i % 4),
                                     instance_number=str(i + 1),
                                     set_attrs={"Rows": px, "Columns": px,
                                                "PixelData": bytes(px * px * 2)})
            for i in range(n)]


def find_images(node):
    """C-FIND at IMAGE level, one query per series of the study: (the
    first final status that is not success, else success; the SOP Instance
    UIDs of the pending responses)."""
    status, found = F.SUCCESS, set()
    for k in range(4):
        ident = F.query_dataset("IMAGE", {"StudyInstanceUID": STUDY,
                                          "SeriesInstanceUID": "%s.%d" % (STUDY, k),
                                          "SOPInstanceUID": ""})
        res = F.find(node.port, F.STUDY_ROOT, F.identifier_bytes(ident))
        if res.final_status != F.SUCCESS and status == F.SUCCESS:
            status = res.final_status
        found |= {str(r.dataset.SOPInstanceUID) for r in res.pending}
    return status, found


def health(node):
    return W.request(node.http_port, "/health", timeout=30).status


def log_lines(node):
    return node.log_text().splitlines()


def test_no_primary_refuses_then_recovers_after_promotion(it_base, testdir, scu_dir):
    """The primary killed, the standby not promoted yet: C-STORE 0xA701
    (nothing left on disk), C-FIND 0xA700, /health 503. Promoted: the same
    node process stores, finds and is healthy again."""
    with pair_and_node(it_base, testdir) as (pair, node):
        files = instances(scu_dir, "out", 4)
        store = lambda f: H.storescu(node.port, [f["path"]], scu_dir, timeout=60)  # noqa: E731
        pid = node.pid
        for f in files[:2]:
            assert store(f).all_success()
        assert find_images(node) == (F.SUCCESS, {f["sop_instance_uid"] for f in files[:2]})
        assert health(node) == 200
        before = C.walk_files(node.storage)

        pair.primary.kill()
        run = store(files[2])
        assert run.status(files[2]["path"]) == OUT_OF_INDEX, run.summary()
        assert {p for p in C.walk_files(node.storage) if not p.startswith("tmp/")} == \
            {p for p in before if not p.startswith("tmp/")}, "a file was kept for a refused store"
        status, found = find_images(node)
        assert status == FIND_OUT_OF_RESOURCES and not found, (hex(status or 0), found)
        assert health(node) == 503
        line = node.wait_for_log(r"%s.*0xA701" % re.escape(files[2]["sop_instance_uid"]))
        assert line and re.search(r"database|connect|read-only|session", line, re.I), line

        pair.promote()
        for f in (files[3], files[2]):
            run = store(f)
            assert run.status(f["path"]) == H.SUCCESS, "after the promotion: " + run.summary()
        assert find_images(node) == (F.SUCCESS, {f["sop_instance_uid"] for f in files})
        assert health(node) == 200
        assert node.proc.poll() is None and node.pid == pid, "the node was restarted"
        assert sorted(r["sop_uid"] for r in C.instance_rows(node)) == sorted(
            f["sop_instance_uid"] for f in files)
        assert not C.storage_problems(node)
        assert not C.wrong_counts(node)


def test_standby_listed_first_is_never_written(it_base, testdir, scu_dir):
    """A conninfo naming the standby first and no target_session_attrs: the
    node's sessions still go to the primary (it asks libpq for a read-write
    session), so the node starts, migrates and stores; the standby has the
    rows by replication."""
    first_standby = lambda pair: pair.hosts_conninfo(  # noqa: E731
        "pacsnode", servers=(pair.standby, pair.primary))
    with pair_and_node(it_base, testdir, conninfo=first_standby) as (pair, node):
        files = instances(scu_dir, "first", 3)
        run = H.storescu(node.port, [f["path"] for f in files], scu_dir)
        assert run.all_success(), run.summary()
        assert find_images(node) == (F.SUCCESS, {f["sop_instance_uid"] for f in files})
        on_standby = pair.standby.query("SELECT count(*) FROM instance", dbname="pacsnode")[0][0]
        assert on_standby == 3
        rows = pair.primary.query("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pacsnode' "
                                  "AND application_name = 'pacsnode'")
        assert rows[0][0] >= 1, "no node session on the primary"
        assert pair.standby.query("SELECT count(*) FROM pg_stat_activity WHERE datname = 'pacsnode' "
                                  "AND application_name = 'pacsnode'")[0][0] == 0


def test_failover_under_load_loses_no_acknowledged_instance(it_base, testdir, scu_dir):
    """NOT RUN YET (written at the end of the time budget). Four storescu associations store 400 instances; after 100 are on the
    standby the primary is killed, and the standby promoted a second later.
    Every answer is success or 0xA701; every instance acknowledged is in the
    promoted database with its file, byte for byte; files whose COMMIT
    answer was lost in the kill are settled without a restart; the refused
    ones sent again are stored, and C-FIND answers all of them."""
    with pair_and_node(it_base, testdir, workers=4) as (pair, node):
        total = 400
        files = instances(scu_dir, "load", total, px=128)
        by_path = {f["path"]: f for f in files}
        pid = node.pid
        group = H.StorescuGroup(node.port, [[f["path"] for f in files[k::4]] for k in range(4)],
                                scu_dir)
        deadline = time.monotonic() + 120
        while pair.standby.query("SELECT count(*) FROM instance", dbname="pacsnode")[0][0] < 100:
            assert time.monotonic() < deadline, "fewer than 100 instances stored in 120 s"
            time.sleep(0.01)
        pair.primary.kill()
        killed_at = time.monotonic()
        time.sleep(1.0)
        pair.promote()
        promoted_after = time.monotonic() - killed_at
        runs = group.wait(300)

        statuses = [(by_path[r.path], r.status) for run in runs for r in run.results.values()]
        acked = {f["sop_instance_uid"]: f for f, st in statuses if st == H.SUCCESS}
        refused = [f for f, st in statuses if st == OUT_OF_INDEX]
        others = [(f["sop_instance_uid"], st) for f, st in statuses
                  if st not in (H.SUCCESS, OUT_OF_INDEX)]
        assert not others, "answers other than success and 0xA701: %s\n%s" % (
            others[:5], "\n".join(r.summary(only_problems=True, limit=10) for r in runs))
        assert refused, "no store fell into the outage (promoted %.1f s after the kill)" % promoted_after
        assert len(acked) > 100
        assert any(f["sop_instance_uid"] in acked for f in files[-40:]), "nothing stored after the promotion"

        rows = {r["sop_uid"]: r for r in C.instance_rows(node)}  # on the promoted server
        lost = sorted(set(acked) - set(rows))
        assert not lost, "acknowledged and not in the promoted database: %s" % lost[:5]
        for uid, f in acked.items():
            path = os.path.join(node.storage, rows[uid]["path"])
            diff = C.compare_part10(f["path"], path, f["sop_class_uid"], uid, f["transfer_syntax_uid"])
            assert not diff, (uid, diff)
        unknown = len([ln for ln in log_lines(node) if "outcome unknown" in ln])
        settled = sum(int(m.group(1)) for m in
                      (re.search(r"settled (\d+) instance file", ln) for ln in log_lines(node)) if m)
        assert settled == unknown, "%d COMMIT outcomes lost, %d settled:\n%s" % (
            unknown, settled, "\n".join(ln for ln in log_lines(node) if "settle" in ln))
        problems = C.storage_problems(node)
        assert not problems, problems

        run = H.storescu(node.port, [f["path"] for f in refused], scu_dir)
        assert run.all_success(), run.summary(only_problems=True)
        status, found = find_images(node)
        assert status == F.SUCCESS and found == {f["sop_instance_uid"] for f in files}, (
            hex(status or 0), len(found))
        assert node.proc.poll() is None and node.pid == pid, "the node was restarted"
        assert not C.storage_problems(node)
        assert not C.wrong_counts(node)
        print("failover: %d acknowledged, %d refused (0xA701), %d COMMIT outcomes lost and settled; "
              "promoted %.1f s after the kill" % (len(acked), len(refused), unknown, promoted_after))
