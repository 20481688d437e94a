"""A PostgreSQL primary with a streaming synchronous standby, made by the
test: for the failover tests (test_failover.py).

Both listen on 127.0.0.1 (free ports) and on a unix socket in their own
folder; initdb as the unprivileged user, trust, no fsync (a test never
outlives the machine's page cache: what synchronous replication promises,
the WAL on the standby before the COMMIT is answered, holds without it).
The primary gets synchronous_standby_names (ALTER SYSTEM) once the standby
streams, after pg_basebackup copied its configuration: the promoted standby
has no standby to wait for and goes on committing.
"""

import os
import signal
import subprocess
import time

import psycopg2

import pacsnode_harness as H

STANDBY_NAME = "standby1"


class PgServer:
    """One postmaster of the pair."""

    def __init__(self, base, name, user, settings):
        self.user = user
        self.name = name
        self.dir = H.make_dir(os.path.join(base, name), user, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = H.free_port()
        self.settings = dict(settings)
        self.running = False

    def run(self, *argv, timeout=120, check=True):
        cmd = list(argv)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        r = subprocess.run(cmd, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), r.returncode, r.stdout,
                                                            H.tail(self.log_path)))
        return r

    def start(self):
        opts = "-c listen_addresses=127.0.0.1 -p %d -k %s %s" % (
            self.port, self.dir, " ".join("-c %s=%s" % kv for kv in sorted(self.settings.items())))
        self.run(os.path.join(H.PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log_path, "-w",
                 "-t", "60", "-o", opts, "start")
        self.running = True

    def stop(self):
        if self.running:
            self.run(os.path.join(H.PG_BIN, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t",
                     "60", "stop", check=False)
            self.running = False

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def connect(self, dbname="postgres"):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                                connect_timeout=5)
        conn.autocommit = True
        return conn

    def query(self, sql, params=(), dbname="postgres"):
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def kill(self):
        """SIGKILL to the postmaster we started, as a crash of the server
        would end it. Its backends notice that it is gone and exit by
        themselves; any still there after 10 s are killed by their PID (all
        descend from ours). Its shared memory segment goes too."""
        pid = self.postmaster_pid()
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            lines = f.read().splitlines()
        children = [p for p in _pids() if _ppid(p) == pid]
        os.kill(pid, signal.SIGKILL)
        self.running = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in [pid] + children):
            time.sleep(0.02)
        for p in children:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if len(lines) >= 7 and len(lines[6].split()) == 2:
            subprocess.run(["ipcrm", "-m", lines[6].split()[1]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        return pid


def _pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


class PgPair:
    """The primary and its synchronous standby, and the multi-host conninfo
    a node is given. connect() / conninfo() make it usable where the harness
    takes a PgCluster (Node, pacsnode_checks): whichever is primary now."""

    def __init__(self, base, user, *, synchronous_commit="on"):
        common = {"fsync": "off", "full_page_writes": "off", "max_connections": "100",
                  "wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on"}
        self.primary = PgServer(base, "p", user, dict(common, synchronous_commit=synchronous_commit))
        # cluster_name is the walreceiver's application_name, the name
        # synchronous_standby_names lists
        self.standby = PgServer(base, "s", user, dict(common, cluster_name=STANDBY_NAME))
        self.log_path = self.primary.log_path

    def start(self, dbname):
        p, s = self.primary, self.standby
        p.run(os.path.join(H.PG_BIN, "initdb"), "-D", p.data, "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--no-locale", "--no-sync")
        p.start()
        p.query("CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8'" % dbname)
        # -R: standby.signal and primary_conninfo, as an operator makes one
        s.run(os.path.join(H.PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p.port),
              "-U", "postgres", "-D", s.data, "-R", "-X", "stream", "-c", "fast", "--no-sync")
        s.start()
        # only now: until a standby is there every commit would wait for it
        p.query("ALTER SYSTEM SET synchronous_standby_names = '%s'" % STANDBY_NAME)
        p.query("SELECT pg_reload_conf()")
        self.wait_sync()

    def wait_sync(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            rows = self.primary.query("SELECT sync_state FROM pg_stat_replication "
                                      "WHERE application_name = %s AND state = 'streaming'",
                                      (STANDBY_NAME,))
            if rows and rows[0][0] == "sync":
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the standby is not synchronous after %ds: %r\n%s"
                                   % (timeout, rows, H.tail(self.standby.log_path)))
            time.sleep(0.1)

    def promote(self):
        self.standby.run(os.path.join(H.PG_BIN, "pg_ctl"), "-D", self.standby.data, "-w", "-t",
                         "60", "promote")

    def hosts_conninfo(self, dbname, servers=None, extra=""):
        servers = servers or (self.primary, self.standby)
        return ("host=%s port=%s user=postgres dbname=%s%s"
                % (",".join("127.0.0.1" for _ in servers), ",".join(str(s.port) for s in servers),
                   dbname, " " + extra if extra else ""))

    def conninfo(self, dbname):
        return self.hosts_conninfo(dbname, extra="target_session_attrs=read-write")

    def connect(self, dbname="postgres", autocommit=True):
        conn = psycopg2.connect(self.conninfo(dbname) + " connect_timeout=5")
        conn.autocommit = autocommit
        return conn

    def stop(self):
        for s in (self.standby, self.primary):
            s.stop()
