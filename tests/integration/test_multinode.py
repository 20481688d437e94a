"""Several nodes on one PostgreSQL and one storage root (issue 23 point 1,
docs/scale.md, "Several nodes"): three pacsnode processes, node_ids n1..n3, each its
own port, sharing one database and one storage root.

- the same study sent through all three at the same moment: one row per
  instance, series, study and patient, one file per instance, the kept
  counts and Modalities in Study exact, every instance found from every
  node, the duplicate policy holding across nodes;
- C-MOVE and C-GET from one node of what another stored;
- a node killed with SIGKILL under load: the others go on, every
  acknowledged instance has its row and its file, the killed node's
  leftovers in tmp/<its id>/ settled by another node, and by itself when
  it starts again, the live nodes' folders never touched;
- a node restarted while the others store;
- two nodes with one node_id: the second refuses to start;
- a node whose start-up session was lost keeps its claim on its node_id.

The live nodes' folders are watched with a sentinel: a file in
tmp/<node_id>/ whose name carries no process id. A running node's own
housekeeping leaves such a file alone (it settles only the files of its
ended processes, known by the pid in their names); a settler of a gone
node removes everything in that node's folder. So a sentinel that
disappears while its node runs means another node settled a live node.
"""

import os
import re
import signal
import time

import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
import retrieve_util as R
from pacsnode_harness import gen_corpus

MOVER = "MOVER"
SENTINEL = "pn-sentinel-no-pid"


def peer(ae, port=104, allow="store"):
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "allow": allow}


def make_study(scu_dir, tag, plan, patient_id="PN-MULTI"):
    """Instances of one patient: plan [(study, series, modality, n)]. Returns
    manifest entries in sending order."""
    out = []
    for st, se, mod, n in plan:
        for i in range(1, n + 1):
            name = "%s-%s-%s-%d" % (tag, st, se, i)
            out.append(gen_corpus.make_instance(
                os.path.join(scu_dir, name + ".dcm"), name=name, patient_id=patient_id,
                study_uid=gen_corpus.make_uid(0, tag, "study", st),
                series_uid=gen_corpus.make_uid(0, tag, "series", st, se),
                sop_uid=gen_corpus.make_uid(0, tag, "sop", st, se, str(i)), modality=mod,
                instance_number=i))
    return out


def plant(folder, name=SENTINEL, data=b"not a DICOM file"):
    """A file in a node's temporary folder, owned like the node's files."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    st = os.stat(os.path.dirname(folder))
    os.chown(path, st.st_uid, st.st_gid)
    return path


def files_in(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def assert_clean(node):
    problems = C.storage_problems(node)
    assert not problems, "storage root %s vs index:\n  %s" % (node.storage, "\n  ".join(problems))
    wrong = C.wrong_counts(node)
    assert not wrong, "kept counts differ from the rows: %s" % wrong


def acknowledged(runs):
    """{SOP Instance UID: path} of every instance some storescu was told
    was stored (0x0000, or a warning: the node kept it)."""
    out = {}
    for r in runs:
        for f in r.files:
            s = r.status(f)
            if s is not None and (H.is_success(s) or H.is_warning(s)):
                out[sop_of(f)] = f
    return out


_sops = {}


def sop_of(path):
    if path not in _sops:
        import pydicom
        with gen_corpus.quiet_pydicom():
            _sops[path] = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    return _sops[path]


def assert_acknowledged_kept(node, runs):
    """Nothing acknowledged lost: each has its row, and its row's file is
    there with the checksum it names (storage_problems)."""
    rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
    acked = acknowledged(runs)
    lost = sorted(set(acked) - set(rows))
    assert not lost, "%d acknowledged instances have no row: %s" % (len(lost), lost[:5])
    for sop in acked:
        path = os.path.join(node.storage, rows[sop]["path"])
        assert os.path.isfile(path), "acknowledged %s: file %s missing" % (sop, path)
        assert C.checksum_file(path) == rows[sop]["checksum"], "acknowledged %s: file changed" % sop
    return acked


def wait_until(pred, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def find_images(port, study, series, workdir, aet="PNFIND"):
    ds = F.query_dataset("IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                                   "SOPInstanceUID": ""})
    run = F.findscu(port, ds, workdir, aet=aet)
    assert run.final == F.SUCCESS, run.summary()
    return sorted(str(r.SOPInstanceUID) for r in run.responses)


def find_study(port, study, workdir):
    ds = F.query_dataset("STUDY", {"StudyInstanceUID": study, "NumberOfStudyRelatedSeries": "",
                                   "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": ""})
    run = F.findscu(port, ds, workdir)
    assert run.final == F.SUCCESS and len(run.responses) == 1, run.summary()
    r = run.responses[0]
    mods = r.ModalitiesInStudy
    mods = [mods] if isinstance(mods, str) else list(mods)
    return int(r.NumberOfStudyRelatedSeries), int(r.NumberOfStudyRelatedInstances), sorted(mods)


def dataset_bytes(path):
    """The bytes after a Part-10 file's meta group (explicit VR LE; its
    first element is the group length)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[128:132] == b"DICM", path
    assert data[132:136] == b"\x02\x00\x00\x00" and data[136:138] == b"UL", path
    glen = int.from_bytes(data[140:144], "little")
    return data[144 + glen:]


# --------------------------------------------------------------------------
# 1. One study through three nodes at the same moment


@pytest.mark.parametrize("policy", ["ignore", "reject", "replace"])
def test_same_study_through_three_nodes_at_once(cluster_factory, scu_dir, policy):
    """Three storescu released at one instant, one per node, each sending the
    same 12 instances (one patient, two studies, CT and MR series): one row
    each, one file each, counts and Modalities in Study exact, every
    instance found from every node; with reject exactly one node stores
    each instance and the two others answer 0x0111."""
    nodes = cluster_factory(3, duplicate_policy=policy, workers=2, max_associations=4)
    plan = [("a", "ct", "CT", 3), ("a", "mr", "MR", 3), ("b", "ct", "CT", 2), ("b", "mr", "MR", 2),
            ("b", "pt", "PT", 2)]
    files = make_study(scu_dir, "same-" + policy, plan)
    paths = [f["path"] for f in files]
    runs = H.StorescuGroup([n.port for n in nodes], [paths] * 3, scu_dir, aet="PNSAME").wait()
    report = "\n".join(r.summary(only_problems=True) for r in runs)
    for f in files:
        statuses = [r.status(f["path"]) for r in runs]
        if policy == "reject":
            assert sorted(statuses, key=str) == sorted([H.SUCCESS, H.DUPLICATE, H.DUPLICATE], key=str), \
                "%s: %s\n%s" % (f["path"], statuses, report)
        else:
            assert statuses == [H.SUCCESS] * 3, "%s: %s\n%s" % (f["path"], statuses, report)

    n1 = nodes[0]
    assert (n1.count("patient"), n1.count("study"), n1.count("series"), n1.count("instance")) == \
        (1, 2, 5, len(files))
    rows = C.instance_rows(n1)
    assert sorted(r["sop_uid"] for r in rows) == sorted(f["sop_instance_uid"] for f in files)
    for f in files:
        [row] = [r for r in rows if r["sop_uid"] == f["sop_instance_uid"]]
        assert not C.compare_part10(f["path"], os.path.join(n1.storage, row["path"]), f["sop_class_uid"],
                                    f["sop_instance_uid"], f["transfer_syntax_uid"])
    # one file per instance, nothing left in any tmp/<node_id>/
    assert_clean(n1)
    [p] = n1.query("SELECT n_studies, n_series, n_instances FROM patient")
    assert (p["n_studies"], p["n_series"], p["n_instances"]) == (2, 5, len(files))

    studies = {}
    for f in files:
        studies.setdefault(f["study_instance_uid"], {}).setdefault(f["series_instance_uid"], []).append(f)
    want_study = {
        gen_corpus.make_uid(0, "same-" + policy, "study", "a"): (2, 6, ["CT", "MR"]),
        gen_corpus.make_uid(0, "same-" + policy, "study", "b"): (3, 6, ["CT", "MR", "PT"]),
    }
    for node in nodes:
        for study, series in studies.items():
            assert find_study(node.port, study, scu_dir) == want_study[study], node.node_id
            for se, entries in series.items():
                assert find_images(node.port, study, se, scu_dir) == \
                    sorted(e["sop_instance_uid"] for e in entries), node.node_id


# --------------------------------------------------------------------------
# 2. Retrieve from one node what another stored


def test_move_and_get_from_another_node(cluster_factory, scu_dir, testdir):
    dest = R.Storescp(os.path.join(testdir, "dest"), aet="DEST", accept="all").start()
    try:
        peers = {"dest": peer("DEST", dest.port), "mover": peer(MOVER, allow="move, get, find")}
        a, b, _c = cluster_factory(3, peers=peers)
        files = make_study(scu_dir, "retr", [("a", "ct", "CT", 3), ("a", "mr", "MR", 2)])
        run = H.storescu(a.port, [f["path"] for f in files], scu_dir, aet="PNSTORE")
        assert run.all_success(), run.summary()
        rows = {r["sop_uid"]: r for r in C.instance_rows(a)}
        stored = {sop: dataset_bytes(os.path.join(a.storage, r["path"])) for sop, r in rows.items()}
        study = files[0]["study_instance_uid"]

        dest.mark()
        mv = R.movescu(b.port, "study", "STUDY", {"StudyInstanceUID": study}, scu_dir, aet=MOVER, dest="DEST")
        dest.settle()
        problems = R.check_counts(mv, len(files))
        assert not problems, "%s\n%s" % (mv.summary(), "\n".join(problems))
        got = dest.files()
        assert sorted(got) == sorted(stored), mv.summary()
        for sop, path in got.items():
            assert dataset_bytes(path) == stored[sop], "C-MOVE from n2: %s differs from n1's file" % sop
        assert b.wait_for_log(r"association \"%s\"" % MOVER), "the move was not served by n2"

        gt = R.getscu(b.port, "study", "STUDY", {"StudyInstanceUID": study}, scu_dir, aet=MOVER)
        assert gt.final_status == R.SUCCESS, gt.summary()
        assert sorted(gt.files) == sorted(stored), gt.summary()
        for sop, path in gt.files.items():
            assert dataset_bytes(path) == stored[sop], "C-GET from n2: %s differs from n1's file" % sop
        assert_clean(a)
    finally:
        dest.stop()


# --------------------------------------------------------------------------
# 3. A node killed under load


def load_lists(scu_dir, tag, nodes, per_node):
    """Distinct instances for each node: per_node each, one series a node."""
    lists = []
    for node in nodes:
        lists.append([f["path"] for f in make_study(scu_dir, "%s-%s" % (tag, node.node_id),
                                                     [("s", "x", "CT", per_node)],
                                                     patient_id=load_patient(tag, node))])
    return lists


def load_patient(tag, node):
    return ("PN-%s-%s" % (tag, node.node_id))[:64]


def stored_of(node, tag):
    """Instances stored of load_lists(tag)'s list for `node`."""
    return node.query("SELECT count(*) AS n FROM instance i JOIN series s ON s.pk = i.series_fk"
                      " JOIN study t ON t.pk = s.study_fk JOIN patient p ON p.pk = t.patient_fk"
                      " WHERE p.patient_id = %s", (load_patient(tag, node),))[0]["n"]


def test_a_node_killed_under_load(cluster_factory, scu_dir):
    """Stores to all three; n2 killed with SIGKILL (listener and workers at
    once) in the middle: n1 and n3 store everything; every instance any
    node acknowledged has its row and file; n2's leftovers in tmp/n2/ are
    settled by n1 or n3 within 25 s, while the sentinels of tmp/n1/ and
    tmp/n3/ stay; killed again with leftovers and started at once, n2
    settles its own folder at start-up."""
    nodes = cluster_factory(3, workers=2, max_associations=4, pid_namespace=True)
    n1, n2, n3 = nodes
    for n in (n1, n3):
        plant(n.tmp_dir)
    lists = load_lists(scu_dir, "kill", nodes, 60)
    group = H.StorescuGroup([n.port for n in nodes], lists, scu_dir, aet="PNLOAD")
    # n2 killed once it has stored some: the storescu to it is mid-way
    assert wait_until(lambda: stored_of(n2, "kill") >= 10, 60, step=0.05), "n2 stored nothing"
    n2.kill()
    runs = group.wait()
    for r in (runs[0], runs[2]):
        assert r.all_success(), r.summary(only_problems=True)
    assert not runs[1].all_success(), "the storescu to n2 did not notice its death"
    acked = assert_acknowledged_kept(n1, runs)
    assert len(acked) >= 120 + 10, "n2 acknowledged fewer than the 10 seen stored"

    # What n2 left: the spares and the file being received of its
    # associations, and a stray planted now (never made by a node).
    plant(n2.tmp_dir, "pn-planted-stray")
    assert files_in(n2.tmp_dir), "nothing in tmp/n2/ to settle"

    # n1 and n3 look for gone nodes at the end of an association, at most
    # every 10 s a worker: a C-ECHO a second keeps them at it.
    def settled():
        for n in (n1, n3):
            H.echoscu(n.port, aet="PNTICK")
        return not files_in(n2.tmp_dir)
    t0 = time.monotonic()
    assert wait_until(settled, 25, step=1), "tmp/n2/ not settled within 25 s: %s" % files_in(n2.tmp_dir)
    took = time.monotonic() - t0
    time.sleep(1)  # the log line comes after the files are gone
    by = [n.node_id for n in (n1, n3) if n.wait_for_log(r"settled the temporary files of 1 node", timeout=0)]
    assert by, "no log line of n1 or n3 about settling n2"
    for n in (n1, n3):
        assert files_in(n.tmp_dir) == [SENTINEL], "%s's tmp folder was touched" % n.node_id
    assert_acknowledged_kept(n1, runs)

    # n1 and n3 still store
    more = load_lists(scu_dir, "after", [n1, n3], 10)
    for n, paths in zip((n1, n3), more):
        r = H.storescu(n.port, paths, scu_dir, aet="PNAFTER")
        assert r.all_success(), r.summary()

    # n2 again, killed again under a store to it alone, started at once:
    # its own start-up settles its folder (n1 and n3, idle, do not look)
    n2.start_again()
    paths = load_lists(scu_dir, "self", [n2], 400)[0]
    group = H.StorescuGroup([n2.port], [paths], scu_dir, aet="PNSELF")
    assert wait_until(lambda: stored_of(n2, "self") >= 20, 60, step=0.05), "n2 stored nothing"
    n2.kill()
    runs2 = group.wait()
    plant(n2.tmp_dir, "pn-planted-stray-2")
    offset = n2.start_again()
    with open(n2.log_path, "rb") as f:
        f.seek(offset)
        log = f.read().decode("utf-8", "replace")
    assert re.search(r"storage recovery after an unclean stop: .*[1-9]\d* stray", log), log[-3000:]
    assert files_in(n2.tmp_dir) == [], files_in(n2.tmp_dir)
    for n in (n1, n3):
        assert files_in(n.tmp_dir) == [SENTINEL], "%s's tmp folder was touched" % n.node_id
    assert_acknowledged_kept(n1, runs + runs2)
    for n in (n1, n3):
        os.unlink(os.path.join(n.tmp_dir, SENTINEL))
    assert_clean(n1)
    print("n2's leftovers settled by %s in %.1f s" % (by, took))


# --------------------------------------------------------------------------
# 4. A node restarted while the others store


class Load:
    """Stores to some nodes, in rounds of `batch` new instances a node (one
    storescu a node, released together), from a thread, until stop()."""

    def __init__(self, nodes, scu_dir, tag, batch=40):
        import threading
        self.nodes, self.scu_dir, self.tag, self.batch = nodes, scu_dir, tag, batch
        self.runs, self.rounds = [], 0
        self.done = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.done.is_set():
                lists = load_lists(self.scu_dir, "%s%d" % (self.tag, self.rounds), self.nodes, self.batch)
                self.runs += H.StorescuGroup([n.port for n in self.nodes], lists, self.scu_dir,
                                             aet="PNBUSY").wait()
                self.rounds += 1
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.done.set()
        self.thread.join(300)
        assert self.error is None, self.error
        return self.runs


def test_a_node_restarted_while_the_others_store(cluster_factory, scu_dir):
    """n1 and n3 store, in rounds, while n2 is stopped and started, then
    killed and started: n2's start-up recovery (of its own folder, of gone
    nodes') never touches theirs: every store succeeds, their sentinels
    stay."""
    nodes = cluster_factory(3, workers=2, max_associations=4, pid_namespace=True)
    n1, n2, n3 = nodes
    for n in (n1, n3):
        plant(n.tmp_dir)
    load = Load([n1, n3], scu_dir, "restart")
    assert wait_until(lambda: stored_of(n1, "restart0") >= 20, 60, step=0.05), "nothing stored"
    n2.stop()
    n2.start_again()
    n2.kill()
    offset = n2.start_again()
    rounds = load.rounds
    time.sleep(1)
    runs = load.stop()
    assert rounds >= 1 and load.rounds > rounds, "the stores did not go on across n2's restarts"
    for r in runs:
        assert r.all_success(), r.summary(only_problems=True)
    with open(n2.log_path, "rb") as f:
        f.seek(offset)
        assert "node_id \"n2\"" in f.read().decode("utf-8", "replace")
    for n in (n1, n3):
        assert files_in(n.tmp_dir) == [SENTINEL], "%s's tmp folder was touched" % n.node_id
        os.unlink(os.path.join(n.tmp_dir, SENTINEL))
    assert n1.count("instance") == sum(len(r.files) for r in runs)
    assert_acknowledged_kept(n1, runs)
    assert_clean(n1)


# --------------------------------------------------------------------------
# 5. One node_id twice


def test_two_nodes_with_one_node_id(cluster_factory, scu_dir):
    """A second node with n1's node_id (its own port) exits non-zero at
    start-up, saying why; n1 goes on serving, its folder untouched."""
    n1, n2 = cluster_factory(2)
    plant(n1.tmp_dir)
    twin = cluster_factory.add(start=False, node_id="n1")
    twin.expect_exit = True
    with pytest.raises(H.NodeStartError):
        twin.start(timeout=40)
    assert twin.proc.returncode not in (0, None), twin.proc.returncode
    assert twin.wait_for_log(r"node_id \"n1\" is in use", timeout=0), H.tail(twin.log_path)
    assert files_in(n1.tmp_dir) == [SENTINEL]
    os.unlink(os.path.join(n1.tmp_dir, SENTINEL))
    files = make_study(scu_dir, "twin", [("a", "ct", "CT", 3)])
    r = H.storescu(n1.port, [f["path"] for f in files], scu_dir)
    assert r.all_success(), r.summary()
    assert H.echoscu(n1.port).ok
    assert_clean(n1)


# --------------------------------------------------------------------------
# 6. A node whose database sessions were all lost

NODE_LOCK_SPACE = 1347309105  # db/node.h PN_NODE_LOCK_SPACE


def node_lock_holders(node, node_id):
    return [r["pid"] for r in node.query(
        "SELECT l.pid FROM pg_locks l JOIN node n ON n.num = l.objid::integer"
        " WHERE l.locktype = 'advisory' AND l.classid = %s AND n.id = %s AND l.granted",
        (NODE_LOCK_SPACE, node_id))]


def keeper_pid(node):
    """The process id of the node's keeper (nodes.h), from its log line."""
    line = node.wait_for_log(r'debug: node lock of node_id "%s" held by the keeper' % node.node_id, timeout=10)
    assert line, "no keeper in %s" % node.log_path
    return int(re.search(r"pacsnode\[(\d+)\]", line).group(1))


def end_sessions(node):
    """Ends every database session holding the node's lock, as a database
    restart, a failover or a cut network would."""
    holders = node_lock_holders(node, node.node_id)
    assert len(holders) >= 3, "listener, keeper and worker hold the node lock: %r" % holders
    node.query("SELECT pg_terminate_backend(pid) FROM unnest(%s::integer[]) AS pid", (holders,))
    return holders


class OpenAssociation:
    """A raw association storing `files` one by one, when told."""

    def __init__(self, node, files, calling):
        import rawscu
        self.rawscu, self.files = rawscu, files
        self.a = rawscu.Association(node.host, node.port, timeout=15)
        self.a.associate(calling, node.aet, files[0]["sop_class_uid"])

    def store(self, i):
        f = self.files[i]
        return self.a.c_store(f["sop_class_uid"], f["sop_instance_uid"], self.rawscu.dataset_bytes(f["path"]),
                              msg_id=i + 1)

    def close(self, release=True):
        try:
            if release:
                self.a.release()
        finally:
            self.a.close()


def test_a_node_whose_sessions_were_lost_refuses_what_another_node_settled(cluster_factory, scu_dir):
    """n1 holds an association open, with temporary files made ahead of
    the next instances in tmp/n1/; its keeper is stopped (SIGSTOP: as if
    its session were lost too and not yet back) and every database session
    of n1 is ended: n1's node lock is free, so n2 takes n1 for gone and
    settles tmp/n1/. The association goes on: at most its next instance is
    refused (its file, taken before n1 was back in the database, is gone);
    every later one is stored, each with its row and file; n1's log says
    what happened."""
    n1, n2 = cluster_factory(2, workers=2)
    files = make_study(scu_dir, "lost", [("a", "ct", "CT", 7)])
    keeper = keeper_pid(n1)
    a = OpenAssociation(n1, files, "PNLOST")
    statuses = []
    try:
        assert a.store(0) == H.SUCCESS
        assert wait_until(lambda: files_in(n1.tmp_dir), 5), "no file made ahead in tmp/n1/"
        ahead = files_in(n1.tmp_dir)
        os.kill(keeper, signal.SIGSTOP)
        try:
            end_sessions(n1)
            assert wait_until(lambda: not node_lock_holders(n1, "n1"), 10), "n1's sessions did not end"

            def settled():
                H.echoscu(n2.port, aet="PNTICK")
                return not set(ahead) & set(files_in(n1.tmp_dir))
            assert wait_until(settled, 25, step=1), "n2 did not settle tmp/n1/: %s" % files_in(n1.tmp_dir)
            assert n2.wait_for_log(r"settled the temporary files of 1 node", timeout=5)
        finally:
            os.kill(keeper, signal.SIGCONT)
        statuses = [a.store(i) for i in range(1, len(files))]
    finally:
        a.close()
    assert all(s == H.SUCCESS for s in statuses[1:]), ["0x%04X" % s for s in statuses]
    rows = {r["sop_uid"] for r in C.instance_rows(n1)}
    want = {files[0]["sop_instance_uid"]} | {f["sop_instance_uid"] for f, s in zip(files[1:], statuses)
                                             if s == H.SUCCESS}
    assert rows == want
    if statuses[0] != H.SUCCESS:
        assert n1.wait_for_log(r"another node took this node for gone", timeout=5), H.tail(n1.log_path)
    assert node_lock_holders(n1, "n1"), "n1's worker holds its node lock again"
    assert_clean(n1)


def test_a_node_whose_sessions_were_lost_takes_its_node_lock_again(cluster_factory, scu_dir):
    """Every database session of n1 ended while an association of it is
    open, with files made ahead in tmp/n1/ and a sentinel: within a few
    seconds n1's keeper holds its node lock again, so n2, associations
    ending on it for 12 s, never takes n1 for gone: tmp/n1/ keeps its
    files, every store of the open association succeeds."""
    n1, n2 = cluster_factory(2, workers=2)
    files = make_study(scu_dir, "keep", [("a", "ct", "CT", 6)])
    plant(n1.tmp_dir)
    a = OpenAssociation(n1, files, "PNKEEP")
    try:
        assert a.store(0) == H.SUCCESS
        assert wait_until(lambda: len(files_in(n1.tmp_dir)) > 1, 5), "no file made ahead in tmp/n1/"
        before = files_in(n1.tmp_dir)
        ended = end_sessions(n1)
        assert wait_until(lambda: set(node_lock_holders(n1, "n1")) - set(ended), 10), \
            "n1's node lock not held again"
        assert n1.wait_for_log(r'node lock of node_id "n1" held again', timeout=5), H.tail(n1.log_path)
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            assert H.echoscu(n2.port, aet="PNTICK").ok
            time.sleep(0.5)
        assert not n2.wait_for_log(r"settled the temporary files of", timeout=0), "n2 settled a live node"
        # (the worker may have made more files ahead meanwhile)
        assert set(before) <= set(files_in(n1.tmp_dir)), (before, files_in(n1.tmp_dir))
        statuses = [a.store(i) for i in range(1, len(files))]
    finally:
        a.close()
    assert statuses == [H.SUCCESS] * (len(files) - 1), ["0x%04X" % s for s in statuses]
    os.unlink(os.path.join(n1.tmp_dir, SENTINEL))
    assert n1.count("instance") == len(files)
    assert_clean(n1)


def test_a_listener_killed_alone_leaves_no_hold_behind(cluster_factory, scu_dir):
    """n1's listener alone killed with SIGKILL (its workers and keeper are
    left to notice): they end, n1's node lock is free within seconds, and
    n1 starts again on its node_id."""
    n1, n2 = cluster_factory(2, workers=2)
    keeper = keeper_pid(n1)
    os.kill(n1.proc.pid, signal.SIGKILL)
    n1.proc.wait()

    def gone(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split(") ")[1][0] == "Z"
        except OSError:
            return True
    assert wait_until(lambda: gone(keeper), 5), "n1's keeper outlived its listener"
    assert wait_until(lambda: not node_lock_holders(n1, "n1"), 10), \
        "n1's node lock still held: %r" % node_lock_holders(n1, "n1")
    n1.start_again()
    files = make_study(scu_dir, "alone", [("a", "ct", "CT", 2)])
    r = H.storescu(n1.port, [f["path"] for f in files], scu_dir)
    assert r.all_success(), r.summary()
    assert_clean(n1)
