"""Real processes for pacsnode's integration tests.

A private PostgreSQL cluster (PgCluster), the node itself (Node), dcmtk's
storescu/echoscu with their output parsed into DIMSE statuses (storescu,
StorescuGroup). Everything runs on 127.0.0.1 or a unix socket inside the
test's own directory. conftest.py turns these into fixtures; the checks on
what the node wrote are in pacsnode_checks.py, the raw C-STORE client for
what storescu cannot send in rawscu.py.
"""

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time

import psycopg2
import psycopg2.extras
import psycopg2.sql

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "corpus"))
import gen_corpus  # noqa: E402

PG_BIN = os.environ.get("PACSNODE_PG_BIN", "/usr/lib/postgresql/15/bin")
NODE_BIN = os.environ.get("PACSNODE_BIN", os.path.join(REPO, "build", "scp", "pacsnode"))
NODE_AET = "PACSNODE"
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")


def run_as_user():
    """The unprivileged account for PostgreSQL and the node when we are root
    (PostgreSQL refuses root; the node runs unprivileged in production).
    PACSNODE_TEST_USER overrides; "" means: as ourselves."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("PACSNODE_TEST_USER", "pacsnode")
    if not name:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True)
    return name


def chown_to(path, user):
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def make_dir(path, user=None, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    chown_to(path, user)
    return path


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


# --------------------------------------------------------------------------
# PostgreSQL


class PgCluster:
    """A throw-away cluster: initdb into base/pg, unix socket only, trust.
    Tests run it without fsync and with asynchronous commit (a test never
    outlives the machine's page cache); `settings` overrides those."""

    def __init__(self, base, user, settings=None):
        self.user = user
        self.settings = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off",
                         "max_connections": "200"}
        self.settings.update(settings or {})
        self.dir = make_dir(os.path.join(base, "pg"), user, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.sockdir = self.dir
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.running = False

    def _run(self, *argv, timeout=120):
        cmd = list(argv)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        r = subprocess.run(cmd, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), r.returncode,
                                                            r.stdout, tail(self.log_path)))
        return r.stdout

    def start(self):
        self._run(os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
        self.start_again()

    def start_again(self):
        """pg_ctl start on the existing data directory (after crash(), it
        replays the WAL first)."""
        opts = "-c listen_addresses='' -k %s %s" % (
            self.sockdir, " ".join("-c %s=%s" % kv for kv in sorted(self.settings.items())))
        self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log_path,
                  "-w", "-t", "60", "-o", opts, "start")
        self.running = True

    def crash(self):
        """Immediate shutdown: every backend is killed at once, nothing is
        checkpointed, and the next start runs crash recovery."""
        self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w",
                  "-t", "60", "stop")
        self.running = False

    def stop(self):
        if self.running:
            self._run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                      "-t", "60", "stop")
            self.running = False

    def conninfo(self, dbname):
        return "host=%s user=postgres dbname=%s" % (self.sockdir, dbname)

    def connect(self, dbname="postgres", autocommit=True):
        conn = psycopg2.connect(host=self.sockdir, user="postgres", dbname=dbname)
        conn.autocommit = autocommit
        return conn

    def create_db(self, name):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(psycopg2.sql.SQL("CREATE DATABASE {} TEMPLATE template0 "
                                             "ENCODING 'UTF8'")
                            .format(psycopg2.sql.Identifier(name)))
        finally:
            conn.close()

    def drop_db(self, name):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(psycopg2.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                            .format(psycopg2.sql.Identifier(name)))
        finally:
            conn.close()


# --------------------------------------------------------------------------
# The node


class NodeStartError(Exception):
    pass


class Node:
    """One pacsnode process with its own database, port, storage and log.

    Attributes the tests use: port, aet, host, storage (storage root),
    conninfo, dbname, log_path, pid, config_path, dir (the test's directory,
    scanned for stray files), cwd (the node's working directory)."""

    def __init__(self, cluster, testdir, dbname, user, *, duplicate_policy="ignore",
                 workers=2, max_associations=8, extra_config=None, port=None,
                 preexec_fn=None, peers=None, storage=None, node_id="pn-test",
                 pid_namespace=False):
        self.cluster = cluster
        self.dir = testdir
        self.user = user
        self.dbname = dbname
        self.aet = NODE_AET
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conninfo = cluster.conninfo(dbname)
        self.duplicate_policy = duplicate_policy
        self.cwd = make_dir(os.path.join(testdir, "cwd"), user)
        # Deep inside the test dir: "../../x" from the root still lands in
        # a directory the tests scan.
        make_dir(os.path.join(testdir, "srv"), user)
        make_dir(os.path.join(testdir, "srv", "pacsnode"), user)
        # Several nodes may share one storage root (and one database):
        # each has its own node_id, hence its own tmp/<node_id>/.
        self.storage = storage or make_dir(os.path.join(testdir, "srv", "pacsnode", "storage"), user)
        self.node_id = node_id
        self.tmp_dir = os.path.join(self.storage, "tmp", node_id)
        # In a PID namespace of its own, the node's processes get the small
        # process ids another host's would: the nodes' pids collide, as
        # those of nodes on several machines do.
        self.pid_namespace = pid_namespace
        self.config_path = os.path.join(testdir, "pacsnode.conf")
        self.log_path = os.path.join(testdir, "node.log")
        self.stdout_path = os.path.join(testdir, "node.stdout")
        self.proc = None
        self.pid = None
        self.returncode = None
        self.workers = workers
        self.max_associations = max_associations
        self.extra_config = extra_config or {}
        # {label: {"ae_title": ..., "host": ..., "port": ..., "allow": ...}}:
        # one [peer.LABEL] section each (extra_config may still add more).
        self.peers = dict(peers or {})
        # Called in the node's process before exec (e.g. to lower a
        # resource limit); its workers inherit what it sets.
        self.preexec_fn = preexec_fn
        self.write_config()

    def write_config(self):
        cfg = {
            "node": {"ae_title": self.aet, "node_id": self.node_id, "bind": self.host, "port": self.port,
                     "require_called_ae": "yes", "accept_unknown_calling_ae": "yes"},
            "limits": {"workers": self.workers, "max_associations": self.max_associations,
                       "acse_timeout": 30, "dimse_timeout": 60},
            "storage": {"root": self.storage, "duplicate_policy": self.duplicate_policy},
            "database": {"conninfo": self.conninfo},
            "log": {"level": "debug"},
            # the web is on by default (8042): tests running side by side
            # would share that port, so only the web's tests turn it on
            "http": {"port": 0},
        }
        for label, keys in self.peers.items():
            cfg["peer." + label] = dict(keys)
        for section, keys in self.extra_config.items():
            cfg.setdefault(section, {}).update(keys)
        with open(self.config_path, "w") as f:
            for section, keys in cfg.items():
                f.write("[%s]\n" % section)
                for k, v in keys.items():
                    f.write("%s = %s\n" % (k, v))
                f.write("\n")
        os.chmod(self.config_path, 0o644)

    def start(self, timeout=30):
        if not os.access(NODE_BIN, os.X_OK):
            raise NodeStartError("node binary %s not found (build it, or set PACSNODE_BIN)"
                                 % NODE_BIN)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        kw = {}
        if self.user:
            pw = pwd.getpwnam(self.user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            env["HOME"] = self.cwd
        if self.preexec_fn is not None:
            kw["preexec_fn"] = self.preexec_fn
        # a node started again after stop(): the teardown's stop() must see
        # it running (a kept returncode made it skip the node, left behind)
        self.returncode = None
        argv = [NODE_BIN, "-c", self.config_path]
        if self.pid_namespace:
            # unshare (as root) makes the namespace; setpriv drops to the
            # node's user and execs it as the namespace's first process.
            # SIGTERM to unshare reaches the node (--kill-child).
            assert os.geteuid() == 0 and self.preexec_fn is None, "a PID namespace needs root"
            drop = []
            if self.user:
                pw = pwd.getpwnam(self.user)
                drop = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups"]
            argv = ["unshare", "--pid", "--fork", "--kill-child=SIGTERM"] + drop + argv
            kw = {}
        with open(self.log_path, "ab") as log, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                         env=env, start_new_session=True, **kw)
        self.pid = self.proc.pid
        self.wait_ready(timeout)

    def start_again(self, timeout=30):
        """Starts a stopped node once more on the same configuration, port,
        storage root and database (its log is appended to). Returns the log
        offset where this run's lines begin."""
        assert self.proc is None or self.proc.poll() is not None, "the node is still running"
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.returncode = None
        self.leftovers = []
        self.start(timeout)
        return offset

    def wait_ready(self, timeout):
        """Until the port accepts TCP and C-ECHO succeeds (the node has no
        readiness signal a test can wait on other than the port itself)."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self.proc.poll() is not None:
                raise NodeStartError("node exited with %s during start-up; log %s:\n%s"
                                     % (self.proc.returncode, self.log_path, tail(self.log_path)))
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NodeStartError("node did not accept TCP on port %d within %ds; log %s:\n%s"
                                     % (self.port, timeout, self.log_path, tail(self.log_path)))
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        r = echoscu(self.port, host=self.host, timeout=max(5, deadline - time.monotonic()))
        if not r.ok:
            raise NodeStartError("C-ECHO to the new node failed:\n%s\nlog %s:\n%s"
                                 % (r.output, self.log_path, tail(self.log_path)))

    def stop(self, timeout=20):
        """SIGTERM to our node's PID only; returns its exit status. Worker
        processes it left behind (same process group) are reported in
        self.leftovers and then killed: they are ours."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self._signal_node(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = "did not stop within %ds after SIGTERM" % timeout
                self.leftovers = self._group_members()
                self._kill_group()
                return self.returncode
        self.returncode = self.proc.returncode
        deadline = time.monotonic() + 5
        while self._group_members() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.leftovers = self._group_members()
        self._kill_group()
        return self.returncode

    def _signal_node(self, sig):
        """The signal to the node's listener: in a PID namespace, to the
        child of unshare (setpriv's change of user clears the parent-death
        signal --kill-child would send, so unshare cannot pass it on)."""
        target = self.proc.pid
        if self.pid_namespace:
            kids = [p for p in self._group_members() if self._ppid(p) == self.proc.pid]
            target = kids[0] if kids else target
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _ppid(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
        except OSError:
            return None
        return int(stat[stat.rindex(")") + 2:].split()[1])

    def kill(self):
        """SIGKILL to the node's whole process group (listener and workers)
        at once, as a crash or the OOM killer would; waits for the listener
        and for every worker to be gone."""
        os.killpg(self.pid, signal.SIGKILL)
        self.returncode = self.proc.wait()
        deadline = time.monotonic() + 10
        while self._group_members() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self._group_members(), "node processes survived SIGKILL"
        return self.returncode

    def _group_members(self):
        """PIDs still in the node's process group (it leads its own session)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == self.pid and fields[0] != "Z":
                out.append(int(d))
        return out

    def _kill_group(self):
        if self._group_members():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_text(self):
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def sanitizer_reports(self):
        text = self.log_text()
        return [m for m in SANITIZER_MARKERS if m in text]

    def wait_for_log(self, pattern, timeout=5.0, flags=re.IGNORECASE):
        """The first log line matching `pattern` (a regex), waiting a little
        for workers that log after answering; None if none came."""
        rx = re.compile(pattern, flags)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def connect(self):
        return self.cluster.connect(self.dbname)

    def query(self, sql, params=()):
        conn = self.connect()
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                try:
                    cur.execute(sql, params)
                except psycopg2.errors.UndefinedTable as e:
                    raise AssertionError("no index schema in database %s: the node did not "
                                         "migrate it at start-up (%s)"
                                         % (self.dbname, str(e).splitlines()[0])) from None
                return [dict(r) for r in cur.fetchall()] if cur.description else []
        finally:
            conn.close()

    def count(self, table):
        assert table in ("patient", "study", "series", "instance")
        return self.query("SELECT count(*) AS n FROM %s" % table)[0]["n"]


# --------------------------------------------------------------------------
# dcmtk clients


class EchoResult:
    def __init__(self, ok, output):
        self.ok, self.output = ok, output


def echoscu(port, host="127.0.0.1", aet="PNTEST", aec=NODE_AET, timeout=10):
    env = dict(os.environ, TCP_NODELAY="1")
    try:
        r = subprocess.run(["echoscu", "-v", "-to", "5", "-ta", "10", "-td", "10",
                            "-aet", aet, "-aec", aec, host, str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return EchoResult(False, "echoscu timed out: %s" % (e.output or ""))
    ok = r.returncode == 0 and "Received Echo Response (Success)" in r.stdout
    return EchoResult(ok, r.stdout)


SUCCESS = 0x0000
DUPLICATE = 0x0111


def is_success(status):
    return status == SUCCESS


def is_warning(status):
    return status is not None and (status in (0x0001, 0x0107, 0x0116)
                                   or 0xB000 <= status <= 0xBFFF)


def is_failure(status):
    """A C-STORE failure status (PS3.4 B.2.3, PS3.7 C): anything that is not
    success, warning, pending or cancel. None (no response) is not one."""
    return (status is not None and not is_success(status) and not is_warning(status)
            and status not in (0xFE00, 0xFF00, 0xFF01))


def is_cannot_understand(status):
    return status is not None and 0xC000 <= status <= 0xCFFF


class FileResult:
    def __init__(self, path):
        self.path = path
        self.status = None  # DIMSE status of the C-STORE-RSP, None if none came
        self.sent = False   # storescu started sending it
        self.error = None   # what storescu said when there was no status

    def __repr__(self):
        s = "0x%04X" % self.status if self.status is not None else "none"
        return "<%s status=%s%s>" % (os.path.basename(self.path), s,
                                     " error=%r" % self.error if self.error else "")


class StoreRun:
    """What one storescu process did: per-file DIMSE statuses."""

    def __init__(self, files, returncode, output, cmd):
        self.files = list(files)
        self.returncode = returncode
        self.output = output
        self.cmd = cmd
        self.results = {f: FileResult(f) for f in self.files}
        self.association = None  # "accepted", "rejected", "failed", "aborted"
        self.contexts = {}  # id -> [abstract syntax, proposed TS, result]
        self.log_path = None
        self._parse()

    def _parse_negotiation(self, line, state):
        if "BEGIN A-ASSOCIATE-RQ" in line:
            state["block"] = "rq"
        elif "BEGIN A-ASSOCIATE-AC" in line:
            state["block"] = "ac"
        elif "END A-ASSOCIATE" in line:
            state["block"] = None
        if not state.get("block"):
            return
        m = re.match(r"^D:\s+Context ID:\s+(\d+) \((.*)\)", line)
        if m:
            state["ctx"] = self.contexts.setdefault(int(m.group(1)), [None, None, None])
            if state["block"] == "ac":
                state["ctx"][2] = m.group(2)
            return
        m = re.match(r"^D:\s+Abstract Syntax: (.*)$", line)
        if m and state.get("ctx"):
            state["ctx"][0] = m.group(1).strip()
            return
        m = re.match(r"^D:\s{7}(=?[0-9A-Za-z].*)$", line)
        if m and state["block"] == "rq" and state.get("ctx"):
            state["ctx"][1] = m.group(1).strip()

    def rejected_contexts(self):
        return ["context %d %s / %s: %s" % (i, a, t, r) for i, (a, t, r) in
                sorted(self.contexts.items()) if r and r != "Accepted"]

    def _parse(self):
        current = None
        pending_error = None
        state = {}
        for line in self.output.splitlines():
            self._parse_negotiation(line, state)
            m = re.match(r"^I: Sending file: (.*)$", line)
            if m:
                current = self._result(m.group(1))
                if current is not None:
                    current.sent = True
                continue
            m = re.match(r"^D: DIMSE Status\s*: 0x([0-9a-fA-F]{4})", line)
            if m and current is not None:
                current.status = int(m.group(1), 16)
                continue
            m = re.match(r"^E: Store Failed, file: (.*):$", line)
            if m:
                pending_error = self._result(m.group(1))
                continue
            if pending_error is not None and line.startswith("E: "):
                pending_error.error = line[3:]
                pending_error = None
                continue
            if "No presentation context for" in line and current is not None:
                current.error = line[3:]
                continue
            m = re.match(r"^E: Bad DICOM file: (.*?): ", line)
            if m:
                r = self._result(m.group(1))
                if r is not None:
                    r.error = line[3:]
                continue
            if "Association Accepted" in line:
                self.association = "accepted"
            elif "Association Rejected" in line:
                self.association = "rejected"
            elif "Association Request Failed" in line:
                self.association = "failed"
            elif re.search(r"Association Aborted|Peer Aborted|Peer aborted", line):
                self.association = "aborted"
        for r in self.results.values():
            if r.status is None and r.error is None:
                r.error = "sent, no response" if r.sent else "not sent"

    def _result(self, path):
        if path in self.results:
            return self.results[path]
        for r in self.results.values():  # storescu may print it normalised
            if os.path.abspath(r.path) == os.path.abspath(path):
                return r
        return None

    def status(self, path):
        return self.results[path].status

    def statuses(self):
        return {p: r.status for p, r in self.results.items()}

    def not_successful(self):
        return [r for r in self.results.values() if r.status != SUCCESS]

    def all_success(self):
        return not self.not_successful()

    def summary(self, limit=60, only_problems=False):
        lines = ["storescu exit %s, association %s, output %s" % (
            self.returncode, self.association, self.log_path or "(not saved)")]
        lines += ["  rejected: " + c for c in self.rejected_contexts()]
        for r in self.results.values():
            if only_problems and r.status == SUCCESS:
                continue
            lines.append("  %r" % r)
            if len(lines) > limit:
                lines.append("  ...")
                break
        return "\n".join(lines)


def file_pairs(files):
    """(SOP Class UID, Transfer Syntax UID) of each readable file."""
    import pydicom
    pairs = []
    with gen_corpus.quiet_pydicom():
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                pairs.append((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
            except Exception:  # a hostile file: storescu will say what it thinks
                continue
    return pairs


def storescu_command(port, files, workdir, *, aet="PNTEST", aec=NODE_AET,
                     host="127.0.0.1", extra=()):
    """storescu, one association for all `files`, proposing each file's own
    (SOP class, transfer syntax) so nothing is transcoded on the way."""
    os.makedirs(workdir, exist_ok=True)
    cfg = os.path.join(workdir, "storescu-%d-%d.cfg" % (os.getpid(), time.monotonic_ns()))
    pairs = file_pairs(files) or [(gen_corpus.SOP_CLASS["CT"], gen_corpus.TS["explicit"])]
    profile = gen_corpus.write_storescu_profile(pairs, cfg)
    return (["storescu", "-d", "-nh", "-to", "10", "-ta", "30", "-td", "60",
             "-xf", cfg, profile, "-aet", aet, "-aec", aec] + list(extra)
            + [host, str(port)] + list(files))


def _save(run, workdir):
    path = os.path.join(workdir, "storescu-%d-%d.log" % (os.getpid(), time.monotonic_ns()))
    with open(path, "w") as f:
        f.write(" ".join(run.cmd) + "\n\n" + run.output)
    run.log_path = path
    return run


def storescu(port, files, workdir, timeout=300, **kw):
    """Runs storescu to the end; returns a StoreRun (its output is saved in
    workdir, named in run.log_path)."""
    files = [str(f) for f in files]
    cmd = storescu_command(port, files, workdir, **kw)
    env = dict(os.environ, TCP_NODELAY="1")
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", env=env, timeout=timeout)
        return _save(StoreRun(files, r.returncode, r.stdout, cmd), workdir)
    except subprocess.TimeoutExpired as e:
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else e.output
        return _save(StoreRun(files, "timeout after %ds" % timeout, out or "", cmd), workdir)


def store_plan(node, workdir, plan, uid):
    """Stores a small hierarchy by storescu: plan rows (PatientID, study,
    series, modality, instances), UIDs from uid(study), uid(series) and
    uid(series, "i") for instance i."""
    files = []
    for pid, st, se, mod, n in plan:
        for i in range(1, n + 1):
            name = "%s-%s-%d" % (st, se, i)
            e = gen_corpus.make_instance(os.path.join(str(workdir), name + ".dcm"), name=name, patient_id=pid,
                                         study_uid=uid(st), series_uid=uid(se), sop_uid=uid(se, str(i)),
                                         modality=mod, instance_number=i)
            files.append(e["path"])
    run = storescu(node.port, files, str(workdir))
    assert run.all_success(), run.summary()


class StorescuGroup:
    """Several storescu processes released at the same instant: each waits in
    a shell on a pipe that closes only when all have been started. `port`
    may be a list, one per file list (several nodes at once)."""

    def __init__(self, port, file_lists, workdir, **kw):
        ports = list(port) if isinstance(port, (list, tuple)) else [port] * len(file_lists)
        self.procs = []
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, TCP_NODELAY="1")
        try:
            for i, files in enumerate(file_lists):
                files = [str(f) for f in files]
                cmd = storescu_command(ports[i], files, workdir, **kw)
                out = open(os.path.join(workdir, "storescu-%d.out" % i), "w+")
                p = subprocess.Popen(["sh", "-c", 'read _ <&3; exec "$@"', "gate"] + cmd,
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, pass_fds=(read_fd,),
                                     env=dict(env), preexec_fn=lambda: os.dup2(read_fd, 3))
                self.procs.append((p, files, out, cmd))
        finally:
            os.close(read_fd)
            os.close(write_fd)  # EOF: every storescu starts now

    def wait(self, timeout=300):
        runs = []
        deadline = time.monotonic() + timeout
        for p, files, out, cmd in self.procs:
            try:
                rc = p.wait(max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = "timeout"
            out.seek(0)
            run = StoreRun(files, rc, out.read(), cmd)
            run.log_path = out.name
            runs.append(run)
            out.close()
        return runs
