"""Fixtures for pacsnode's integration tests.

    /usr/bin/python3 -m pytest -n 2 tests/integration

Each pytest(-xdist) worker starts one private PostgreSQL cluster; each test
gets its own database, TCP port, storage root and node process. Everything
lives under $PACSNODE_TEST_TMPDIR (default /tmp) in pacsnode-it-<worker>-*/,
which is removed when the session passes and kept, with the node's and
PostgreSQL's logs, when something failed.

Environment: PACSNODE_BIN (default build/scp/pacsnode), PACSNODE_TEST_USER
(the account for PostgreSQL and the node when running as root; default
pacsnode, created if missing; "" to run them as ourselves),
PACSNODE_PG_BIN (default /usr/lib/postgresql/15/bin).
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile

import pytest

import pacsnode_checks as C
import pacsnode_harness as H
import tls_certs
from pacsnode_harness import gen_corpus


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "node_config(**kw): how the node fixture configures its node: duplicate_policy, "
        "workers, max_associations, extra_config={section: {key: value}}, "
        "peers={label: {ae_title, host, port, allow}}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(item):
    return any(getattr(item, "rep_" + w, None) is not None and getattr(item, "rep_" + w).failed
               for w in ("setup", "call"))


@pytest.fixture(scope="session")
def it_base(request):
    """(directory, unprivileged user) for this worker's session."""
    user = H.run_as_user()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    parent = os.environ.get("PACSNODE_TEST_TMPDIR", tempfile.gettempdir())
    base = tempfile.mkdtemp(prefix="pacsnode-it-%s-" % worker, dir=parent)
    os.chmod(base, 0o755)
    yield base, user
    if request.session.testsfailed:
        print("\npacsnode-it: kept %s (PostgreSQL log: %s/pg/postgres.log)" % (base, base))
    else:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(it_base):
    base, user = it_base
    cluster = H.PgCluster(base, user)
    cluster.start()
    yield cluster
    cluster.stop()


class Corpus:
    def __init__(self, directory):
        self.dir = str(directory)
        with open(os.path.join(self.dir, "manifest.json"), encoding="utf-8") as f:
            self.manifest = json.load(f)
        self.entries = self.manifest["files"]
        self.expected = self.manifest["expected"]
        for e in self.entries:
            e["abspath"] = os.path.join(self.dir, e["path"])
        self.by_sop = {e["sop_instance_uid"]: e for e in self.entries}

    def paths(self, entries=None):
        return [e["abspath"] for e in (self.entries if entries is None else entries)]


def _shared_dir(tmp_path_factory):
    """A directory all xdist workers of this run share."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


def _generate_once(tmp_path_factory, name, make):
    shared = _shared_dir(tmp_path_factory)
    target = shared / name
    with open(shared / (name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "done").exists():
            make(str(target))
            (target / "done").write_text("ok\n")
    return target


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The generated corpus (seed 0), made once per run."""
    return Corpus(_generate_once(tmp_path_factory, "corpus-seed0",
                                 lambda d: gen_corpus.generate(d, seed=0)))


@pytest.fixture(scope="session")
def bad_cases(tmp_path_factory):
    """{case name: case} from gen_corpus --bad (seed 0), made once per run."""
    d = _generate_once(tmp_path_factory, "bad-seed0", lambda d: gen_corpus.make_bad(d, seed=0))
    with open(d / "bad.json", encoding="utf-8") as f:
        bad = json.load(f)
    for case in bad["cases"]:
        for f in case["files"]:
            f["abspath"] = str(d / f["path"])
    return {c["name"]: c for c in bad["cases"]}


@pytest.fixture(scope="session")
def pki(tmp_path_factory, it_base):
    """The certificates, made once per run (all xdist workers share them),
    copied for this worker so that the node's user owns its keys."""
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    master = tls_certs.generate_once(str(shared / "tls-pki"))
    base, user = it_base
    return master.copy_to(os.path.join(base, "pki"), user)


@pytest.fixture
def testdir(request, it_base):
    """This test's own directory; kept when the test fails."""
    base, _user = it_base
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    path = tempfile.mkdtemp(prefix=name + "-", dir=H.make_dir(os.path.join(base, "tests")))
    os.chmod(path, 0o755)
    yield path
    if _failed(request.node):
        print("\npacsnode-it: test files kept in %s" % path)
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scu_dir(testdir):
    """Where storescu profiles and outputs go."""
    return H.make_dir(os.path.join(testdir, "scu"))


def _stopped_node_problems(node, name="node"):
    """Stops a node of a fixture and says what is wrong with how it ended:
    sanitizer reports, an exit other than 0 after SIGTERM (unless the test
    set node.expect_exit), processes left behind. [] for a node never
    started."""
    rc = node.stop()
    if node.proc is None:
        return []
    problems = []
    found = node.sanitizer_reports()
    if found:
        problems.append("%s in node log %s:\n%s" % (", ".join(found), node.log_path, H.tail(node.log_path, 60)))
    if rc not in (0, -15) and not getattr(node, "expect_exit", False):
        problems.append("%s exited with %r after SIGTERM (wanted 0); log %s:\n%s"
                        % (name, rc, node.log_path, H.tail(node.log_path)))
    if getattr(node, "leftovers", None):
        problems.append("%s left processes %s running after it exited" % (name, node.leftovers))
    return problems


@pytest.fixture
def node_factory(request, pg_cluster, testdir, it_base):
    """node_factory(duplicate_policy=..., workers=..., max_associations=...,
    extra_config=..., peers=..., node_class=...) -> a started Node (or an
    instance of node_class, a subclass of it) with a fresh database. Teardown
    stops each node with SIGTERM and fails the test on sanitizer reports,
    a crash on the way out, or worker processes left behind."""
    _base, user = it_base
    nodes = []

    def make(**kw):
        n = len(nodes)
        digest = hashlib.sha1(("%s/%d/%d" % (request.node.nodeid, os.getpid(), n))
                              .encode()).hexdigest()[:12]
        dbname = "t_%s_%s" % (re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40],
                              digest)
        pg_cluster.create_db(dbname)
        nodedir = H.make_dir(os.path.join(testdir, "node%d" % n))
        node_class = kw.pop("node_class", H.Node)  # e.g. test_tls.TlsNode
        node = node_class(pg_cluster, nodedir, dbname, user, **kw)
        nodes.append(node)
        for attempt in range(3):
            try:
                node.start()
                break
            except H.NodeStartError:
                in_use = re.search(r"address already in use|EADDRINUSE", node.log_text(), re.I)
                if not in_use or attempt == 2:
                    raise
                node.stop()
                node.port = H.free_port()
                node.write_config()
                node.returncode = None
        return node

    yield make

    problems = []
    for node in nodes:
        ended = _stopped_node_problems(node)
        problems.extend(ended)
        if node.proc is None:
            continue
        wrong = C.wrong_counts(node)
        if wrong:
            problems.append("kept counts differ from the rows (migrations 004 to 006) in "
                            "database %s: %s" % (node.dbname, wrong))
    keep = problems or _failed(request.node)
    for node in nodes:
        if keep:
            print("\npacsnode-it: node log %s, database %s (%s), PostgreSQL log %s"
                  % (node.log_path, node.dbname, node.conninfo, pg_cluster.log_path))
        else:
            try:
                pg_cluster.drop_db(node.dbname)
            except Exception as e:  # not worth failing a passed test for
                print("could not drop database %s: %s" % (node.dbname, e))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def cluster_factory(request, pg_cluster, testdir, it_base):
    """cluster_factory(n, **kw) -> n started Nodes on one database and one
    storage root, node_ids "n1".."nN", each its own port, directory and log
    (kw as node_factory's, for every node; start=False leaves them
    unstarted). More nodes of the same cluster: cluster_factory.add(**kw),
    started unless start=False. Teardown as node_factory's, the kept counts
    checked once."""
    _base, user = it_base
    nodes = []
    shared = {}

    def add(start=True, **kw):
        if not shared:
            digest = hashlib.sha1(("%s/%d" % (request.node.nodeid, os.getpid())).encode()).hexdigest()[:12]
            shared["dbname"] = "t_%s_%s" % (re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40], digest)
            pg_cluster.create_db(shared["dbname"])
            H.make_dir(os.path.join(testdir, "shared"), user)
            shared["storage"] = H.make_dir(os.path.join(testdir, "shared", "storage"), user)
        n = len(nodes)
        kw.setdefault("node_id", "n%d" % (n + 1))
        nodedir = H.make_dir(os.path.join(testdir, "node%d" % (n + 1)))
        node = H.Node(pg_cluster, nodedir, shared["dbname"], user, storage=shared["storage"], **kw)
        nodes.append(node)
        if start:
            node.start()
        return node

    def make(n, start=True, **kw):
        return [add(start=start, **kw) for _ in range(n)]

    make.add = add
    yield make

    problems = []
    for node in nodes:
        problems.extend(_stopped_node_problems(node, "node %s" % node.node_id))
    if nodes:
        wrong = C.wrong_counts(nodes[0])
        if wrong:
            problems.append("kept counts differ from the rows in database %s: %s" % (shared["dbname"], wrong))
    keep = problems or _failed(request.node)
    if shared:
        if keep:
            print("\npacsnode-it: node logs %s, database %s, PostgreSQL log %s"
                  % (", ".join(n.log_path for n in nodes), shared["dbname"], pg_cluster.log_path))
        else:
            try:
                pg_cluster.drop_db(shared["dbname"])
            except Exception as e:  # not worth failing a passed test for
                print("could not drop database %s: %s" % (shared["dbname"], e))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def node(request, node_factory):
    """A started node. Configure with @pytest.mark.node_config(...) or by
    indirect parametrisation with a dict of the same keywords."""
    kw = {}
    marker = request.node.get_closest_marker("node_config")
    if marker:
        kw.update(marker.kwargs)
    if hasattr(request, "param"):
        kw.update(request.param)
    return node_factory(**kw)
