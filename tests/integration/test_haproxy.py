"""Three nodes behind Debian's haproxy, configured by conf/haproxy.cfg itself.

The test rewrites only what cannot be the same on a test machine: the
addresses (the nodes on 127.0.0.11, .12, .13 where the example has
10.0.0.11, .12, .13), the ports, the CA file, the stats socket and the log
(stdout instead of syslog), and haproxy runs in the foreground as the test's
own process. The balance, the health check (HTTPS /health, then a real
association with C-ECHO), its intervals, the timeouts, retries and
redispatch are the example's, byte for byte. Every rewrite must match
exactly as often as expected, so a reshaped example fails here rather than
being tested half.

What it shows: associations spread over all three nodes; C-ECHO, C-FIND and
HTTPS (/health, QIDO-RS) through the one address; a node killed with
SIGKILL under load is taken out within the check's interval, every store
started after that succeeds through the other two and nothing acknowledged
is lost; the node started again is taken back in and gets associations;
a node whose database is unreachable is taken out by /health while its DICOM
port still answers, and stores go on through the others; a node that hangs
(SIGSTOP) is taken out by the check's timeout; a node drained on haproxy's
stats socket gets no new association, is stopped and started, and is taken
in again after `state ready`.

Without the check (`check` and `track` removed from the example) the killed
node is never taken out and the hung node keeps getting associations (2 of
9 storescu runs failed after storescu's 30 s timeout); without its /health
step the node without a database keeps getting them (2 of 9 runs got
0xA701). A killed node's refused connections alone are retried by haproxy
on the others even without the check.
"""

import contextlib
import csv
import io
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import tempfile
import time

import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
import web_util as W
from pacsnode_harness import gen_corpus

EXAMPLE = os.path.join(H.REPO, "conf", "haproxy.cfg")
HAPROXY = "/usr/sbin/haproxy"
STORE_AET = "PNTEST"

pytestmark = pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy not installed")


def rewrite(text, *, dicom_port, web_port, http_port, node_ports, ca, sock):
    """The example with test addresses, ports and paths; nothing else."""
    exact = [
        ("\tlog /dev/log local0\n", "\tlog stdout format raw local0\n", 1),
        ("\tlog /dev/log local1 notice\n", "", 1),
        ("\tchroot /var/lib/haproxy\n", "", 1),
        ("\tuser haproxy\n", "", 1),
        ("\tgroup haproxy\n", "", 1),
        ("\tdaemon\n", "", 1),
        ("stats socket /run/haproxy/admin.sock ", "stats socket %s " % sock, 1),
        ("\tbind :11112\n", "\tbind 127.0.0.1:%d\n" % dicom_port, 1),
        ("\tbind :8042\n", "\tbind 127.0.0.1:%d\n" % web_port, 1),
        ("tcp-check connect port 8042 ", "tcp-check connect port %d " % http_port, 1),
        ("ca-file /etc/haproxy/pacsnode-ca.pem", "ca-file %s" % ca, 1),
    ]
    for old, new, count in exact:
        assert text.count(old) == count, "conf/haproxy.cfg no longer has %r %d time(s)" % (old, count)
        text = text.replace(old, new)

    def dicom_server(m):
        i = int(m.group(1))
        return "server pacs%d 127.0.0.1%d:%d verifyhost localhost" % (i, i, node_ports[i - 1])

    text, n = re.subn(r"server pacs(\d) 10\.0\.0\.1\1:11112 verifyhost pacs\1\.example\.org", dicom_server, text)
    assert n == 3, "conf/haproxy.cfg: %d DICOM server lines, expected 3" % n
    text, n = re.subn(r"server pacs(\d) 10\.0\.0\.1\1:8042 track",
                      lambda m: "server pacs%s 127.0.0.1%s:%d track" % (m.group(1), m.group(1), http_port), text)
    assert n == 3, "conf/haproxy.cfg: %d web server lines, expected 3" % n
    return text


class Haproxy:
    """haproxy in the foreground (-db), our own child; its stats socket read
    for each server's state."""

    def __init__(self, testdir, config_text):
        self.dir = testdir
        self.config_path = os.path.join(testdir, "haproxy.cfg")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(testdir, "haproxy.log")
        self.proc = None

    def start(self, sock):
        self.sock = sock
        check = subprocess.run([HAPROXY, "-c", "-f", self.config_path], capture_output=True, text=True)
        assert check.returncode == 0, "haproxy -c refused the derived configuration:\n%s%s" % (
            check.stdout, check.stderr)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config_path], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert self.proc.poll() is None, "haproxy exited: %s" % H.tail(self.log_path)
            assert time.monotonic() < deadline, "no stats socket: %s" % H.tail(self.log_path)
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # our child, by its pid
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def command(self, line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.sock)
            s.sendall(line.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out.decode()

    def servers(self, backend="pacsnode_dicom"):
        """{server: row of `show stat`} of one backend."""
        text = self.command("show stat")
        rows = list(csv.DictReader(io.StringIO(text.lstrip("# "))))
        return {r["svname"]: r for r in rows if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_state(self, server, want, timeout, checked=False):
        """Seconds until `server`'s status starts with `want` (UP, DOWN)
        and, with checked, its last check passed (L7OK)."""
        t0 = time.monotonic()
        while True:
            row = self.servers()[server]
            if row["status"].startswith(want) and (not checked or row["check_status"] == "L7OK"):
                return time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, "%s not %s after %ds: %s\n%s" % (
                server, want, timeout, {k: row[k] for k in ("status", "check_status", "last_chk")},
                H.tail(self.log_path))
            time.sleep(0.02)


def stores_by_node(node, offset=0):
    """Instances each association from STORE_AET stored, from the node's log."""
    with open(node.log_path, "r", encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        text = f.read()
    rx = r'association "%s" -> "PACSNODE" from [^:]*: released after [\d.]+ s, (\d+) instances stored' % STORE_AET
    return [int(n) for n in re.findall(rx, text)]


def make_files(directory, prefix, n):
    """n small single-instance files, each its own SOP Instance UID."""
    d = H.make_dir(os.path.join(directory, prefix))
    files, by_path = [], {}
    for i in range(n):
        name = "%s-%d" % (prefix, i)
        e = gen_corpus.make_instance(os.path.join(d, name + ".dcm"), name=name, patient_id="PN-HA-%s" % prefix,
                                     study_uid=gen_corpus.make_uid(23, prefix, "study", str(i // 50)),
                                     series_uid=gen_corpus.make_uid(23, prefix, "series", str(i // 10)),
                                     instance_number=str(i + 1))
        files.append(e["path"])
        by_path[e["path"]] = e["sop_instance_uid"]
    return files, by_path


class Load:
    """Threads each running storescu through haproxy, batch after batch,
    until stopped: every run with the time it started."""

    def __init__(self, port, files, workdir, threads=2, batch=4):
        self.port, self.workdir, self.batch = port, workdir, batch
        self.files = list(files)
        self.lock = threading.Lock()
        self.runs = []  # (start, end, StoreRun)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _next(self):
        with self.lock:
            if not self.files:
                return None
            batch, self.files = self.files[:self.batch], self.files[self.batch:]
            return batch

    def _loop(self):
        while not self.stopping.is_set():
            batch = self._next()
            if batch is None:
                return
            t0 = time.monotonic()
            run = H.storescu(self.port, batch, self.workdir, aet=STORE_AET, timeout=120)
            with self.lock:
                self.runs.append((t0, time.monotonic(), run))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(180)

    def acknowledged(self, by_path):
        return {by_path[p] for _t0, _t1, run in self.runs for p, r in run.results.items()
                if r.status == H.SUCCESS}


@contextlib.contextmanager
def front_of(cluster_factory, testdir, pki, base, prepare=None):
    """Three nodes on 127.0.0.11-13 (HTTPS web on one port, the haproxy
    check admitted as [peer.haproxy] from 127.0.0.1, unknown calling AE
    titles refused as in the example pacsnode.conf) and haproxy started on
    the derived configuration, all three checked up. prepare(i, node):
    called before node i (1-3) starts. base: a short folder (the stats
    socket's path must fit in 97 bytes)."""
    http_port = H.free_port()
    nodes = []
    for i in (1, 2, 3):
        extra = {
            "node": {"accept_unknown_calling_ae": "no"},
            "http": {"port": http_port, "bind": "127.0.0.1%d" % i, "certificate": pki.cert("node"),
                     "private_key": pki.key("node")},
            "peer.haproxy": {"ae_title": "HAPROXY", "addresses": "127.0.0.1"},
            "peer.store": {"ae_title": STORE_AET, "allow": "store,find"},
            "peer.find": {"ae_title": "PNFIND", "allow": "find"},
        }
        node = cluster_factory.add(start=False, extra_config=extra, node_id="pacs%d" % i)
        node.host = "127.0.0.1%d" % i
        if prepare:
            prepare(i, node)
        node.write_config()
        node.start()
        nodes.append(node)
    dicom_port, web_port = H.free_port(), H.free_port()
    sock = os.path.join(tempfile.mkdtemp(prefix="ha", dir=base), "stats.sock")
    with open(EXAMPLE, encoding="utf-8") as f:
        text = rewrite(f.read(), dicom_port=dicom_port, web_port=web_port, http_port=http_port,
                       node_ports=[n.port for n in nodes], ca=pki.ca, sock=sock)
    ha = Haproxy(testdir, text)
    ha.dicom_port, ha.web_port = dicom_port, web_port
    ha.start(sock)
    try:
        for i in (1, 2, 3):
            ha.wait_state("pacs%d" % i, "UP", 20, checked=True)
        yield ha, nodes
    finally:
        ha.stop()
        print("\nhaproxy log %s" % ha.log_path)


@pytest.fixture
def front(cluster_factory, testdir, pki, it_base):
    with front_of(cluster_factory, testdir, pki, it_base[0]) as both:
        yield both


def https_context(pki):
    return ssl.create_default_context(cafile=pki.ca)


def test_spread_queries_failover_and_back(front, testdir, scu_dir, pki):
    ha, nodes = front

    # The check itself: each node answered haproxy's association (A-ASSOCIATE,
    # C-ECHO, A-RELEASE) and logged it as released with the C-ECHO answered.
    for node in nodes:
        assert node.wait_for_log(r'association "HAPROXY" -> "PACSNODE" from 127\.0\.0\.1: released .*C-ECHO answered'), \
            H.tail(node.log_path)

    # Spread: six associations at once through the one address.
    files, by_path = make_files(testdir, "spread", 60)
    runs = H.StorescuGroup(ha.dicom_port, [files[i::6] for i in range(6)], scu_dir, aet=STORE_AET).wait()
    for run in runs:
        assert run.all_success(), run.summary(only_problems=True)
    per_node = [sum(stores_by_node(n)) for n in nodes]
    assert sum(per_node) == 60 and all(per_node), "instances stored per node: %s" % per_node

    # C-ECHO and C-FIND through haproxy, several times (several nodes):
    # each answers for all 60, whoever stored them.
    assert H.echoscu(ha.dicom_port, aet=STORE_AET).ok
    study_uids = sorted({gen_corpus.make_uid(23, "spread", "study", str(i // 50)) for i in range(60)})
    for _ in range(3):
        q = F.query_dataset("STUDY", {"PatientID": "PN-HA-spread", "StudyInstanceUID": "",
                                      "NumberOfStudyRelatedInstances": ""})
        r = F.findscu(ha.dicom_port, q, scu_dir)
        assert r.final == 0 and sorted(str(d.StudyInstanceUID) for d in r.responses) == study_uids, r.summary()
        assert sum(int(d.NumberOfStudyRelatedInstances) for d in r.responses) == 60, r.summary()

    # HTTPS through haproxy, untouched (the node's own certificate): /health
    # and QIDO-RS on new connections (leastconn spreads them).
    ctx = https_context(pki)
    for _ in range(3):
        assert W.request(ha.web_port, "/health", https=True, context=ctx).status == 200
        studies, _ = W.qido(ha.web_port, "/dicomweb/studies?PatientID=PN-HA-spread", https=True, context=ctx)
        assert sorted(str(d.StudyInstanceUID) for d in studies) == study_uids

    # A node killed under load.
    load_files, load_by_path = make_files(testdir, "load", 1200)
    victim = nodes[1]
    load_offset = os.path.getsize(victim.log_path)
    load = Load(ha.dicom_port, load_files, scu_dir, threads=4, batch=6).start()
    time.sleep(2)
    t_kill = time.monotonic()
    served = len(stores_by_node(victim, load_offset))
    victim.kill()
    out_after = ha.wait_state("pacs2", "DOWN", 15)
    t_down = time.monotonic()
    assert ha.servers("pacsnode_web")["pacs2"]["status"].startswith("DOWN")
    # the web through the one address meanwhile: never the dead node
    for _ in range(6):
        assert W.request(ha.web_port, "/health", https=True, context=ctx).status == 200
    time.sleep(4)
    load.stop()
    print("\nkill to taken out: %.2f s" % out_after)

    before = [run for t0, _t1, run in load.runs if t0 < t_kill]
    in_flight = [run for t0, t1, run in load.runs if t0 < t_kill < t1]
    between = [run for t0, _t1, run in load.runs if t_kill <= t0 < t_down]
    after = [run for t0, _t1, run in load.runs if t0 >= t_down]
    assert served >= 1, "pacs2 had served no association of the load before it was killed"
    assert len(before) >= 2 and len(after) >= 4, "load too thin: %d runs before, %d after" % (len(before),
                                                                                            len(after))
    for run in after:
        assert run.all_success(), "a store after pacs2 was taken out failed:\n" + run.summary(only_problems=True)
    failed_between = [run for run in between if not run.all_success()]
    print("runs: %d before the kill (%d in flight at the kill, %d of those not all stored), %d between kill "
          "and taken out (%d not all stored), %d after, all stored"
          % (len(before), len(in_flight), len([r for r in in_flight if not r.all_success()]), len(between),
             len(failed_between), len(after)))
    for run in in_flight:
        if not run.all_success():
            print("  in flight: " + run.summary(limit=3, only_problems=True).replace("\n", "\n  "))

    # Nothing acknowledged lost: every instance answered Success is in the
    # shared index.
    acked = load.acknowledged(load_by_path)
    rows = {r["sop_uid"] for r in nodes[0].query("SELECT sop_uid FROM instance")}
    missing = acked - rows
    assert not missing, "%d acknowledged instances not in the index: %s" % (len(missing), sorted(missing)[:5])

    # Back: started again, taken in within rise * inter, and given associations.
    offset = victim.start_again()
    back_after = ha.wait_state("pacs2", "UP", 30, checked=True)
    print("node ready to taken back in: %.2f s" % back_after)
    files2, _ = make_files(testdir, "back", 90)
    runs = H.StorescuGroup(ha.dicom_port, [files2[i::9] for i in range(9)], scu_dir, aet=STORE_AET).wait()
    for run in runs:
        assert run.all_success(), run.summary(only_problems=True)
    assert sum(stores_by_node(victim, offset)) > 0, "pacs2 got no association after it was taken back in"

    # The killed node's leftovers are settled by its own restart: the shared
    # storage agrees with the index.
    problems = C.storage_problems(nodes[0])
    assert not problems, problems


def test_node_without_database_taken_out_by_health(cluster_factory, testdir, scu_dir, pki, it_base):
    """pacs3 reaches PostgreSQL through a socket path of its own (a symlink
    to the cluster's socket): removed, and pacs3's sessions ended, pacs3
    still accepts associations but would answer every C-STORE 0xA701; its
    /health says 503, the check's first step, and haproxy takes it out.
    Stores through haproxy go on through pacs1 and pacs2, all of them
    succeeding; the link back, pacs3 is taken in again."""
    base, user = it_base
    own = tempfile.mkdtemp(prefix="s", dir=base)  # short: a socket path's limit is 107 bytes
    os.chmod(own, 0o755)
    H.chown_to(own, user)
    link = os.path.join(own, ".s.PGSQL.5432")

    def prepare(i, node):
        if i == 3:
            node.conninfo = "host=%s user=postgres dbname=%s application_name=pacs3" % (own, node.dbname)
            os.symlink(os.path.join(node.cluster.sockdir, ".s.PGSQL.5432"), link)

    with front_of(cluster_factory, testdir, pki, base, prepare) as (ha, nodes):
        pacs3 = nodes[2]
        cluster = pacs3.cluster
        os.unlink(link)
        conn = cluster.connect(pacs3.dbname)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = 'pacs3'")
                ended = cur.fetchone()[0]
        finally:
            conn.close()
        assert ended >= 1
        out_after = ha.wait_state("pacs3", "DOWN", 15)
        print("\ndatabase cut to taken out: %.2f s" % out_after)
        row = ha.servers()["pacs3"]
        print("pacs3's last check: %s %s" % (row["check_status"], row["last_chk"]))
        # its DICOM port still answers: only the /health step saw the problem
        assert H.echoscu(pacs3.port, host=pacs3.host, aet=STORE_AET).ok
        offset = os.path.getsize(pacs3.log_path)

        files, _ = make_files(testdir, "nodb", 90)
        runs = H.StorescuGroup(ha.dicom_port, [files[i::9] for i in range(9)], scu_dir, aet=STORE_AET).wait()
        for run in runs:
            assert run.all_success(), run.summary(only_problems=True)
        assert not stores_by_node(pacs3, offset), "an association went to pacs3 while its database was gone"

        os.symlink(os.path.join(cluster.sockdir, ".s.PGSQL.5432"), link)
        back_after = ha.wait_state("pacs3", "UP", 30, checked=True)
        print("database back to taken in: %.2f s" % back_after)


def test_hung_node_taken_out(front, testdir, scu_dir):
    """pacs1 stopped with SIGSTOP (a node that hangs: the kernel still
    completes TCP handshakes into its listen queue, nothing answers, as a
    node stuck on a dead disk or swapping): a TCP connect succeeds, so only
    the check's timeout sees it. It is taken out within inter + fall x
    `timeout check`; then every store through haproxy succeeds without
    waiting on it (without the check they would hang on its queue until
    storescu's own timeout and fail). SIGCONT: taken in again."""
    ha, nodes = front
    pacs1 = nodes[0]
    os.killpg(pacs1.pid, signal.SIGSTOP)
    try:
        out_after = ha.wait_state("pacs1", "DOWN", 30)
        row = ha.servers()["pacs1"]
        print("\nhung to taken out: %.2f s (last check %s %s)" % (out_after, row["check_status"], row["last_chk"]))
        files, _ = make_files(testdir, "hung", 90)
        t0 = time.monotonic()
        runs = H.StorescuGroup(ha.dicom_port, [files[i::9] for i in range(9)], scu_dir, aet=STORE_AET).wait(120)
        took = time.monotonic() - t0
        for run in runs:
            assert run.all_success(), run.summary(only_problems=True)
        assert took < 20, "9 associations through haproxy took %.1f s with pacs1 out" % took
    finally:
        os.killpg(pacs1.pid, signal.SIGCONT)
    back_after = ha.wait_state("pacs1", "UP", 30, checked=True)
    print("resumed to taken in: %.2f s" % back_after)


def test_drain_then_stop_for_maintenance(front, testdir, scu_dir):
    """docs/haproxy.md's maintenance: `set server ... state drain` on the
    stats socket sends pacs3 no new association; stopped (SIGTERM) and
    started again meanwhile, it is taken in again after `state ready`."""
    ha, nodes = front
    pacs3 = nodes[2]
    for backend in ("pacsnode_dicom", "pacsnode_web"):
        assert ha.command("set server %s/pacs3 state drain" % backend).strip() == ""
    assert ha.servers()["pacs3"]["status"] == "DRAIN"
    offset = os.path.getsize(pacs3.log_path)
    files, _ = make_files(testdir, "drain", 90)
    runs = H.StorescuGroup(ha.dicom_port, [files[i::9] for i in range(9)], scu_dir, aet=STORE_AET).wait()
    for run in runs:
        assert run.all_success(), run.summary(only_problems=True)
    assert not stores_by_node(pacs3, offset), "a new association went to pacs3 while it was drained"
    assert pacs3.stop() == 0
    offset = pacs3.start_again()
    for backend in ("pacsnode_dicom", "pacsnode_web"):
        assert ha.command("set server %s/pacs3 state ready" % backend).strip() == ""
    ha.wait_state("pacs3", "UP", 30, checked=True)
    files, _ = make_files(testdir, "ready", 90)
    runs = H.StorescuGroup(ha.dicom_port, [files[i::9] for i in range(9)], scu_dir, aet=STORE_AET).wait()
    for run in runs:
        assert run.all_success(), run.summary(only_problems=True)
    assert sum(stores_by_node(pacs3, offset)) > 0, "pacs3 got no association after `state ready`"
