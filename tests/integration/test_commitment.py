"""Storage Commitment Push Model SCP (issue 22; docs/storage-commitment.md)
with npm's dcmjs-dimse as the independent requestor: N-ACTION-RQ answered
once recorded, the result computed from the index and the files (present,
their recorded size and checksum), and the N-EVENT-REPORT-RQ received on
the requestor's association, or on a new one to its configured host and
port (its own SCP, role selection: the node SCP) when that one is gone,
retried while the peer is away and after a restart."""

import json
import re
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest

import pacsnode_harness as H

SCRIPT = os.path.join(H.REPO, "tests", "js", "commitment.js")
MODULES = os.path.join(H.REPO, "tests", "js", "node_modules", "dcmjs-dimse")
pytestmark = pytest.mark.skipif(not (shutil.which("node") and os.path.isdir(MODULES)),
                                reason="Node.js or tests/js/node_modules missing (scripts/dev.sh test installs them)")

CLASS = "1.2.840.10008.1.20.1"
INSTANCE = "1.2.840.10008.1.20.1.1"
MODALITY = "MODALITY"


def commit_node(node_factory, listen_port, allow="store, find, commit", **kw):
    peers = {"mod": {"ae_title": MODALITY, "host": "127.0.0.1", "port": listen_port, "allow": allow},
             "ws": {"ae_title": "WORKSTATION", "host": "127.0.0.1", "port": H.free_port(),
                    "allow": "store, find"}}
    return node_factory(peers=peers, **kw)


def request(node, transaction, refs, calling=MODALITY, linger=2500, **spec):
    """One N-ACTION-RQ; the events the client saw (action, report, closed)."""
    spec.update({"transaction": transaction, "refs": refs, "linger": linger})
    argv = ["node", SCRIPT, "request", "127.0.0.1", str(node.port), calling, node.aet, json.dumps(spec)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=os.path.dirname(SCRIPT))
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return events


def action_status(events):
    [st] = [e["status"] for e in events if e["event"] == "action"]
    return st


def reports(events):
    return [e for e in events if e["event"] == "report"]


class Listener:
    """dcmjs-dimse's SCP on a loopback port: the reports on new associations."""

    def __init__(self, port):
        self.port = port
        self.proc = None
        self.events = queue.Queue()

    def start(self):
        self.proc = subprocess.Popen(["node", SCRIPT, "listen", str(self.port), MODALITY],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=os.path.dirname(SCRIPT))
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_for("listening", 20)
        return self

    def _read(self, proc):
        for line in proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))

    def wait_for(self, kind, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r event from the listener within %.0f s" % (kind, timeout))
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if e["event"] == kind:
                return e

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def listener():
    ls = []

    def make(port=None):
        lst = Listener(port or H.free_port())
        ls.append(lst)
        return lst

    yield make
    for lst in ls:
        lst.stop()


def stored_study(node, corpus, scu_dir, n=4):
    """Stores the first study with at least n instances (n of them); its
    entries."""
    by_study = {}
    for e in corpus.entries:
        by_study.setdefault(e["study_instance_uid"], []).append(e)
    entries = next(v for v in by_study.values() if len(v) >= n)[:n]
    run = H.storescu(node.port, [e["abspath"] for e in entries], scu_dir)
    assert run.all_success(), run.summary()
    return entries


def refs_of(entries):
    return [[e["sop_class_uid"], e["sop_instance_uid"]] for e in entries]


def commitments(node):
    return node.query("SELECT count(*) AS n FROM commitment")[0]["n"]


def row(node, transaction):
    [r] = node.query("SELECT * FROM commitment WHERE transaction_uid = %s", (transaction,))
    return r


def wait_state(node, transaction, state, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        r = row(node, transaction)
        if r["state"] == state or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_all_committed_on_the_same_association(node_factory, listener, corpus, scu_dir):
    node = commit_node(node_factory, H.free_port())
    entries = stored_study(node, corpus, scu_dir)
    t0 = time.monotonic()
    events = request(node, "2.25.1001", refs_of(entries))
    assert action_status(events) == 0x0000
    [rep] = reports(events)
    assert rep["via"] == "same"
    assert rep["eventType"] == 1
    assert rep["sopClass"] == CLASS and rep["sopInstance"] == INSTANCE
    assert rep["transaction"] == "2.25.1001"
    assert rep["retrieveAe"] == node.aet
    assert [[r["cls"], r["uid"]] for r in rep["referenced"]] == refs_of(entries)
    assert rep["failed"] == []
    assert time.monotonic() - t0 < 10
    r = wait_state(node, "2.25.1001", "done")
    assert r["state"] == "done" and r["event_type"] == 1 and r["calling_ae"] == MODALITY


CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def test_failures_computed_from_the_index_and_the_files(node_factory, corpus, scu_dir):
    node = commit_node(node_factory, H.free_port())
    entries = stored_study(node, corpus, scu_dir, n=4)
    ok, tampered, mismatch = entries[0], entries[1], entries[2]
    # one byte of a stored file changed, its size kept: not committed
    [path] = [r["path"] for r in node.query("SELECT path FROM instance WHERE sop_uid = %s",
                                            (tampered["sop_instance_uid"],))]
    with open(os.path.join(node.storage, path), "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    other_class = CT if mismatch["sop_class_uid"] != CT else MR
    refs = [[ok["sop_class_uid"], ok["sop_instance_uid"]],
            [tampered["sop_class_uid"], tampered["sop_instance_uid"]],
            [other_class, mismatch["sop_instance_uid"]],
            [CT, "2.25.999999999999"],      # never stored
            ["1.2.3.4", "2.25.999999999998"]]  # not a storage class
    events = request(node, "2.25.2001", refs)
    assert action_status(events) == 0x0000
    [rep] = reports(events)
    assert rep["eventType"] == 2
    assert [[r["cls"], r["uid"]] for r in rep["referenced"]] == [refs[0]]
    assert [[r["cls"], r["uid"], r["reason"]] for r in rep["failed"]] == [
        refs[1] + [0x0110], refs[2] + [0x0119], refs[3] + [0x0112], refs[4] + [0x0122]]
    r = wait_state(node, "2.25.2001", "done")
    assert r["event_type"] == 2
    reasons = [x["failure_reason"] for x in node.query(
        "SELECT failure_reason FROM commitment_item WHERE commitment_fk = %s ORDER BY ord", (r["pk"],))]
    assert reasons == [None, 0x0110, 0x0119, 0x0112, 0x0122]


def test_malformed_requests_refused(node_factory, corpus, scu_dir):
    node = commit_node(node_factory, H.free_port())
    [e] = stored_study(node, corpus, scu_dir, n=1)
    good = [[e["sop_class_uid"], e["sop_instance_uid"]]]
    cases = [
        ("no transaction UID", dict(transaction=None, refs=good), 0x0115),
        ("not a UID", dict(transaction="2.25.x1", refs=good), 0x0115),
        ("no sequence", dict(transaction="2.25.3001", refs=None), 0x0115),
        ("empty sequence", dict(transaction="2.25.3002", refs=[]), 0x0115),
        ("item without instance", dict(transaction="2.25.3003", refs=[[e["sop_class_uid"], None]]), 0x0115),
        ("item without class", dict(transaction="2.25.3004", refs=[[None, e["sop_instance_uid"]]]), 0x0115),
        ("action type 2", dict(transaction="2.25.3005", refs=good, actionType=2), 0x0123),
        ("another SOP instance", dict(transaction="2.25.3006", refs=good, instance="1.2.3.4"), 0x0117),
    ]
    for name, spec, want in cases:
        events = request(node, linger=300, **spec)
        assert action_status(events) == want, name
        assert reports(events) == [], name
    assert commitments(node) == 0
    # the association stays usable after a refusal: a good request after
    # one on the same node still goes through
    events = request(node, "2.25.3007", good)
    assert action_status(events) == 0 and reports(events)[0]["eventType"] == 1


def test_reused_transaction_uid(node_factory, corpus, scu_dir):
    node = commit_node(node_factory, H.free_port())
    entries = stored_study(node, corpus, scu_dir, n=2)
    refs = refs_of(entries)
    first = request(node, "2.25.4001", refs)
    assert action_status(first) == 0 and reports(first)[0]["eventType"] == 1
    # the same request again (an answer lost): answered and reported again
    again = request(node, "2.25.4001", refs)
    assert action_status(again) == 0
    [rep] = reports(again)
    assert rep["eventType"] == 1 and rep["transaction"] == "2.25.4001"
    # the same Transaction UID for other references: refused, the first
    # request's result untouched
    other = request(node, "2.25.4001", refs[:1])
    assert action_status(other) == 0x0115 and reports(other) == []
    assert node.query("SELECT count(*) AS n FROM commitment_item")[0]["n"] == 2
    assert wait_state(node, "2.25.4001", "done")["event_type"] == 1


def test_peer_without_commit_refused(node_factory, corpus, scu_dir):
    node = commit_node(node_factory, H.free_port())
    [e] = stored_study(node, corpus, scu_dir, n=1)
    for calling in ("WORKSTATION", "UNKNOWN_AE"):  # a peer without commit; not a peer
        events = request(node, "2.25.5001", [[e["sop_class_uid"], e["sop_instance_uid"]]],
                         calling=calling, linger=300)
        kinds = [x["event"] for x in events]
        assert "action" not in kinds and "report" not in kinds, (calling, events)
    assert commitments(node) == 0
    assert node.wait_for_log(r"no presentation context we support")


def test_report_on_a_new_association(node_factory, listener, corpus, scu_dir):
    lst = listener().start()
    node = commit_node(node_factory, lst.port)
    entries = stored_study(node, corpus, scu_dir, n=3)
    t0 = time.monotonic()
    # the requestor aborts its association when the report comes on it
    # (as one that does not take reports there would end it): the report
    # comes again on a new association to its host and port, the node
    # as the class's SCP
    events = request(node, "2.25.6001", refs_of(entries), dropReport=True)
    assert action_status(events) == 0
    assert reports(events) == [] and "dropped" in [x["event"] for x in events]
    assoc = lst.wait_for("association", 20)
    assert assoc["calling"] == node.aet and assoc["called"] == MODALITY
    rep = lst.wait_for("report", 20)
    assert time.monotonic() - t0 < 10
    assert rep["via"] == "new" and rep["eventType"] == 1 and rep["transaction"] == "2.25.6001"
    assert [[r["cls"], r["uid"]] for r in rep["referenced"]] == refs_of(entries)
    r = wait_state(node, "2.25.6001", "done")
    assert r["state"] == "done"


def test_peer_away_then_back(node_factory, listener, corpus, scu_dir):
    lst = listener()
    node = commit_node(node_factory, lst.port)
    entries = stored_study(node, corpus, scu_dir, n=2)
    events = request(node, "2.25.7001", refs_of(entries), dropReport=True)
    assert action_status(events) == 0
    deadline = time.monotonic() + 20
    while row(node, "2.25.7001")["attempts"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    r = row(node, "2.25.7001")
    assert r["state"] == "pending" and r["attempts"] >= 2 and "refused" in r["last_error"]
    lst.start()
    rep = lst.wait_for("report", 30)
    assert rep["transaction"] == "2.25.7001" and rep["eventType"] == 1
    assert wait_state(node, "2.25.7001", "done")["state"] == "done"


def test_pending_report_survives_a_crash(node_factory, listener, corpus, scu_dir):
    lst = listener()
    # short timeouts: a claim the crash cut short runs out sooner
    node = commit_node(node_factory, lst.port, extra_config={"limits": {"acse_timeout": 5, "dimse_timeout": 5}})
    entries = stored_study(node, corpus, scu_dir, n=2)
    events = request(node, "2.25.8001", refs_of(entries), dropReport=True)
    assert action_status(events) == 0
    deadline = time.monotonic() + 20
    while row(node, "2.25.8001")["attempts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert row(node, "2.25.8001")["state"] == "pending"
    node.kill()
    lst.start()
    node.start_again()
    rep = lst.wait_for("report", 60)
    assert rep["transaction"] == "2.25.8001" and rep["eventType"] == 1
    assert [[r["cls"], r["uid"]] for r in rep["referenced"]] == refs_of(entries)
    assert wait_state(node, "2.25.8001", "done")["state"] == "done"


def study_of(folder, n, template_dir):
    """n instances of one series in `folder`: the given folder's .dcm files
    (PN_COMMIT_STUDY_DIR, e.g. bench/store/gen_data.py's 512x512 CT), else
    copies of one small generated CT instance with their own UIDs."""
    import pydicom

    given = os.environ.get("PN_COMMIT_STUDY_DIR")
    if given:
        files = sorted(os.path.join(given, f) for f in os.listdir(given) if f.endswith(".dcm"))[:n]
    else:
        base = os.path.join(template_dir, "base.dcm")
        H.gen_corpus.make_instance(base, name="commit-large")
        ds = pydicom.dcmread(base)
        files = []
        for i in range(n):
            uid = "2.25.%d" % (10**30 + i)
            ds.SOPInstanceUID = uid
            ds.file_meta.MediaStorageSOPInstanceUID = uid
            ds.InstanceNumber = i + 1
            path = os.path.join(folder, "i%05d.dcm" % i)
            ds.save_as(path, write_like_original=False)
            files.append(path)
    refs = []
    for f in files:
        d = pydicom.dcmread(f, stop_before_pixels=True)
        refs.append([str(d.SOPClassUID), str(d.SOPInstanceUID)])
    return files, refs


def test_a_1000_instance_study_reported_within_a_second(node_factory, testdir, scu_dir):
    node = commit_node(node_factory, H.free_port())
    folder = H.make_dir(os.path.join(testdir, "study"))
    files, refs = study_of(folder, 1000, testdir)
    run = H.storescu(node.port, files, scu_dir)
    assert run.all_success(), run.summary()
    if os.environ.get("PN_COMMIT_COLD"):  # the stored files out of the page cache
        for r in node.query("SELECT path FROM instance"):
            fd = os.open(os.path.join(node.storage, r["path"]), os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    events = request(node, "2.25.9001", refs)
    assert action_status(events) == 0
    [rep] = reports(events)
    assert rep["eventType"] == 1 and len(rep["referenced"]) == len(refs)
    t = {e["event"]: e["t"] for e in events}
    answered_ms, reported_ms = t["action"] - t["accepted"], t["report"] - t["accepted"]
    print("\nstorage commitment of %d instances (%.0f MB): N-ACTION-RSP after %d ms, report after %d ms"
          % (len(refs), sum(os.path.getsize(f) for f in files) / 1e6, answered_ms, reported_ms))
    assert reported_ms < 1000


def test_requestor_releasing_at_once_gets_its_report(node_factory, listener, corpus, scu_dir):
    lst = listener().start()
    node = commit_node(node_factory, lst.port)
    entries = stored_study(node, corpus, scu_dir, n=2)
    # released right after the N-ACTION-RSP: on its association when the
    # report was quicker than the release; else (also when the release
    # crossed the report, which it may then have seen: at least once) on
    # a new one
    events = request(node, "2.25.10001", refs_of(entries), linger=0)
    assert action_status(events) == 0
    r = wait_state(node, "2.25.10001", "done")
    assert r["state"] == "done"
    if r["last_error"] is not None:  # not delivered on its association
        rep = lst.wait_for("report", 10)
    else:
        [rep] = reports(events)
    assert rep["transaction"] == "2.25.10001" and rep["eventType"] == 1


def test_report_given_up_after_retry_for(node_factory, corpus, scu_dir):
    node = commit_node(node_factory, H.free_port(), extra_config={"commitment": {"retry_for": 3}})
    entries = stored_study(node, corpus, scu_dir, n=1)
    events = request(node, "2.25.11001", refs_of(entries), dropReport=True)
    assert action_status(events) == 0
    r = wait_state(node, "2.25.11001", "expired", timeout=30)
    assert r["state"] == "expired" and r["finished_at"] is not None
    assert "refused" in r["last_error"]
    assert node.wait_for_log(r'storage commitment "2\.25\.11001" from "MODALITY": report given up after')
    ctl = os.path.join(os.path.dirname(os.path.dirname(H.NODE_BIN)), "ctl", "pacsnodectl")
    ctl = os.environ.get("PACSNODECTL_BIN") or ctl
    r = subprocess.run([ctl, "-c", node.config_path, "status"], capture_output=True, text=True, timeout=60)
    assert "commitment: 0 storage commitment reports owed" in r.stdout and ", 1 given up" in r.stdout, r.stdout


def test_commit_granted_by_a_reload(node_factory, listener, corpus, scu_dir):
    import signal

    lst = listener().start()
    node = commit_node(node_factory, lst.port, allow="store")
    entries = stored_study(node, corpus, scu_dir, n=1)
    events = request(node, "2.25.12001", refs_of(entries), linger=300)
    assert "action" not in [e["event"] for e in events]
    node.peers["mod"]["allow"] = "store, commit"
    node.write_config()
    off = os.path.getsize(node.log_path)
    os.kill(node.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in open(node.log_path, errors="replace").read()[off:]:
        assert time.monotonic() < deadline, H.tail(node.log_path)
        time.sleep(0.05)
    time.sleep(0.5)  # the idle workers' replacements start
    # the sender the listener starts for the new peers delivers
    events = request(node, "2.25.12002", refs_of(entries), dropReport=True)
    assert action_status(events) == 0
    rep = lst.wait_for("report", 20)
    assert rep["transaction"] == "2.25.12002" and rep["eventType"] == 1


def test_two_nodes_on_one_database_send_each_report_once(node_factory, listener, corpus, scu_dir):
    lst = listener()
    a = commit_node(node_factory, lst.port)
    # a second node of the same site: its own node_id, the same database and storage root
    b = commit_node(node_factory, lst.port, node_id="pn-test-b", storage=a.storage,
                    extra_config={"database": {"conninfo": a.conninfo}})
    entries = stored_study(a, corpus, scu_dir, n=2)
    uids = ["2.25.1300%d" % i for i in range(10)]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(5) as pool:
        runs = list(pool.map(lambda iu: request(a if iu[0] % 2 else b, iu[1], refs_of(entries), dropReport=True),
                             enumerate(uids)))
    assert [action_status(ev) for ev in runs] == [0] * len(uids)
    # all owed, both senders trying; then the peer comes back
    deadline = time.monotonic() + 20
    while a.query("SELECT count(*) AS n FROM commitment WHERE attempts = 0")[0]["n"] and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    lst.start()
    deadline = time.monotonic() + 60
    while a.query("SELECT count(*) AS n FROM commitment WHERE state = 'done'")[0]["n"] < len(uids):
        assert time.monotonic() < deadline, a.query("SELECT * FROM commitment WHERE state <> 'done'")
        time.sleep(0.2)
    time.sleep(1)
    got = []
    while not lst.events.empty():
        e = lst.events.get()
        if e["event"] == "report":
            got.append(e["transaction"])
    assert sorted(got) == sorted(uids)  # each once
    senders = set()
    for n in (a, b):
        if re.search(r"reported on a new association", n.log_text()):
            senders.add(n.port)
    print("\nreports sent by %d of the 2 nodes" % len(senders))
