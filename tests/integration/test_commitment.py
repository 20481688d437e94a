"""Storage Commitment Push Model SCP (issue 22; docs/storage-commitment.md)
with npm's dcmjs-dimse as the independent requestor: N-ACTION-RQ answered
once recorded, the result computed from the index and the files (present,
their recorded size and checksum), and the N-EVENT-REPORT-RQ received on
the requestor's association, or on a new one to its configured host and
port (its own SCP, role selection: the node SCP) when that one is gone,
retried while the peer is away and after a restart."""

import json
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
