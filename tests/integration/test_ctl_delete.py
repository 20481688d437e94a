"""pacsnodectl delete (issue 21, point 1): at each level the rows and the
files go, with the parents left empty, and nothing of it is found by
C-FIND or QIDO-RS while what stays keeps exact counts; a delete killed
after its COMMIT leaves only queued files, which the next delete or the
node's next start removes; a running C-MOVE keeps a delete of its study
waiting (or refused); a C-STORE into a study being deleted ends stored
with new parents; bad keys get a clear message; the audit trail gets the
PS3.15 deletion events."""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
import retrieve_util as R
import web_util as W
from pacsnode_harness import gen_corpus

CTL = os.environ.get("PACSNODECTL_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(H.NODE_BIN)), "ctl", "pacsnodectl")
pytestmark = pytest.mark.skipif(not os.access(CTL, os.X_OK), reason="pacsnodectl not built: " + CTL)

MOVER = "MOVER"


def ctl(node, *args, env=None, timeout=120):
    return subprocess.run([CTL, "-c", node.config_path] + list(args), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=dict(os.environ, **(env or {})))


def uid(*parts):
    return gen_corpus.make_uid(0, "ctl-delete", *parts)


# The hierarchy every test starts from: patient A (two studies, one with a
# CT and an MR series), patient B (one study), and a second patient with
# A's PatientID under another issuer.
PLAN = [  # (patient id, issuer, study, series, modality, instances)
    ("PN-A", "HOSP_X", "s1", "x1", "CT", 3),
    ("PN-A", "HOSP_X", "s1", "x2", "MR", 2),
    ("PN-A", "HOSP_X", "s2", "x3", "CT", 1),
    ("PN-B", "HOSP_X", "s3", "x4", "CT", 2),
    ("PN-A", "OTHER", "s4", "x5", "CT", 1),
]


def make_files(scu_dir, tag=""):
    files = []
    for pid, issuer, st, se, mod, n in PLAN:
        for i in range(1, n + 1):
            name = "%s%s-%s-%d" % (tag, st, se, i)
            e = gen_corpus.make_instance(os.path.join(scu_dir, name + ".dcm"), name=name, patient_id=pid,
                                         issuer=issuer, patient_name="Del^" + pid, study_uid=uid(st),
                                         series_uid=uid(se), sop_uid=uid(se, str(i)), modality=mod,
                                         instance_number=i)
            files.append(e["path"])
    return files


def stored(node, scu_dir):
    run = H.storescu(node.port, make_files(scu_dir), scu_dir)
    assert run.all_success(), run.summary()
    return {r["sop_uid"]: r["path"] for r in node.query("SELECT sop_uid, path FROM instance")}


def rows(node, table, column, value):
    return node.query("SELECT * FROM %s WHERE %s = %%s" % (table, column), (value,))


def find(node, scu_dir, model, level, keys):
    run = F.findscu(node.port, F.query_dataset(level, keys), scu_dir, model=model)
    assert run.final == 0, run.summary()
    return run.responses


def find_study(node, scu_dir, study):
    return find(node, scu_dir, F.STUDY_ROOT, "STUDY",
                {"StudyInstanceUID": study, "NumberOfStudyRelatedSeries": "",
                 "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": ""})


def find_patient(node, scu_dir, pid):
    return find(node, scu_dir, F.PATIENT_ROOT, "PATIENT",
                {"PatientID": pid, "IssuerOfPatientID": "", "NumberOfPatientRelatedStudies": "",
                 "NumberOfPatientRelatedSeries": "", "NumberOfPatientRelatedInstances": ""})


def qido(node, path):
    return W.qido(node.http_port, path)[0]


def assert_consistent(node):
    problems = C.storage_problems(node)
    assert not problems, "storage root %s vs index:\n  %s" % (node.storage, "\n  ".join(problems))
    assert node.query("SELECT path FROM storage_garbage") == []
    assert not C.wrong_counts(node), C.wrong_counts(node)


def gone(node, paths):
    return [p for p in paths if os.path.exists(os.path.join(node.storage, p))]


def test_delete_at_each_level(node_factory, scu_dir):
    node = node_factory(node_class=W.WebNode)
    files = stored(node, scu_dir)
    pa_studies = lambda: find_patient(node, scu_dir, "PN-A")  # noqa: E731

    # Without --yes and without a terminal: what would go, and nothing goes.
    r = ctl(node, "delete", "study", uid("s1"))
    assert r.returncode == 1 and "give --yes" in r.stderr, r.stdout + r.stderr
    assert "5 instances" in r.stdout and "2 series (CT\\MR)" in r.stdout, r.stdout
    assert len(rows(node, "study", "study_uid", uid("s1"))) == 1

    # One instance of a series that keeps two: the series, its study and
    # its patient stay, each with one instance fewer.
    victim = uid("x1", "2")
    r = ctl(node, "delete", "instance", victim, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deleted: 0 patients, 0 studies, 0 series, 1 instances" in r.stdout, r.stdout
    assert gone(node, [files[victim]]) == [] and rows(node, "instance", "sop_uid", victim) == []
    assert find(node, scu_dir, F.STUDY_ROOT, "IMAGE", {"StudyInstanceUID": uid("s1"), "SeriesInstanceUID": uid("x1"),
                                                       "SOPInstanceUID": victim}) == []
    [st] = find_study(node, scu_dir, uid("s1"))
    assert (int(st.NumberOfStudyRelatedSeries), int(st.NumberOfStudyRelatedInstances)) == (2, 4), st
    assert list(st.ModalitiesInStudy) == ["CT", "MR"], st
    assert qido(node, "/dicomweb/studies/%s/series/%s/instances?SOPInstanceUID=%s" % (uid("s1"), uid("x1"), victim)) \
        == []
    assert_consistent(node)

    # The only instance of a series and of its study: both go, the patient
    # stays with one study.
    r = ctl(node, "delete", "instance", uid("x3", "1"), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deleted: 0 patients, 1 studies, 1 series, 1 instances" in r.stdout, r.stdout
    assert rows(node, "series", "series_uid", uid("x3")) == [] and rows(node, "study", "study_uid", uid("s2")) == []
    assert find_study(node, scu_dir, uid("s2")) == [] and qido(node, "/dicomweb/studies?StudyInstanceUID=" + uid("s2")) == []
    [pa] = [p for p in pa_studies() if p.IssuerOfPatientID == "HOSP_X"]
    assert (int(pa.NumberOfPatientRelatedStudies), int(pa.NumberOfPatientRelatedSeries),
            int(pa.NumberOfPatientRelatedInstances)) == (1, 2, 4), pa
    assert_consistent(node)

    # A series: its study keeps the other one, Modalities in Study follows.
    r = ctl(node, "delete", "series", uid("x2"), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gone(node, [files[uid("x2", "1")], files[uid("x2", "2")]]) == []
    [st] = find_study(node, scu_dir, uid("s1"))
    assert (int(st.NumberOfStudyRelatedSeries), int(st.NumberOfStudyRelatedInstances)) == (1, 2), st
    assert st.ModalitiesInStudy == "CT", st
    assert find(node, scu_dir, F.STUDY_ROOT, "SERIES", {"StudyInstanceUID": uid("s1"), "SeriesInstanceUID": ""}) \
        and qido(node, "/dicomweb/studies/%s/series?SeriesInstanceUID=%s" % (uid("s1"), uid("x2"))) == []
    assert_consistent(node)

    # A study: its patient, left without one, goes too.
    r = ctl(node, "delete", "study", uid("s3"), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deleted: 1 patients, 1 studies, 1 series, 2 instances" in r.stdout, r.stdout
    assert rows(node, "patient", "patient_id", "PN-B") == [] and find_patient(node, scu_dir, "PN-B") == []
    assert qido(node, "/dicomweb/studies?PatientID=PN-B") == []
    assert_consistent(node)

    # A patient is its PatientID with its issuer: the other PN-A stays.
    r = ctl(node, "delete", "patient", "PN-A", "--issuer", "HOSP_X", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deleted: 1 patients, 1 studies, 1 series, 2 instances" in r.stdout, r.stdout
    [left] = pa_studies()
    assert left.IssuerOfPatientID == "OTHER" and int(left.NumberOfPatientRelatedInstances) == 1, left
    assert [p["sop_uid"] for p in node.query("SELECT sop_uid FROM instance")] == [uid("x5", "1")]
    assert_consistent(node)


def test_bad_keys(node_factory, scu_dir):
    node = node_factory()
    stored(node, scu_dir)
    before = node.count("instance")
    for level, key in (("study", "1.2.03"), ("series", "1.2..3"), ("instance", "x' OR '1'='1"),
                       ("study", "1." * 40 + "1")):
        r = ctl(node, "delete", level, key, "--yes")
        assert r.returncode == 1 and "is not a valid UID" in r.stderr, (level, key, r.stderr)
    r = ctl(node, "delete", "study", "1.2.3.4.5", "--yes")
    assert r.returncode == 1 and "no study 1.2.3.4.5 in the index" in r.stderr, r.stderr
    # the PatientID alone is not a patient: the issuers it has are named
    r = ctl(node, "delete", "patient", "PN-A", "--yes")
    assert r.returncode == 1 and "no patient \"PN-A\" with no issuer" in r.stderr, r.stderr
    assert '--issuer "HOSP_X", --issuer "OTHER"' in r.stderr, r.stderr
    r = ctl(node, "delete", "patient", "PN-\x01", "--yes")
    assert r.returncode == 1 and "not a valid PatientID" in r.stderr, r.stderr
    assert ctl(node, "delete", "study").returncode == 2
    assert ctl(node, "delete", "studies", uid("s1")).returncode == 2
    assert ctl(node, "delete", "study", uid("s1"), "--issuer", "X").returncode == 2
    r = ctl(node, "delete", "--help")
    assert r.returncode == 0 and "usage: pacsnodectl delete" in r.stdout
    assert node.count("instance") == before
    assert_consistent(node)


@pytest.mark.parametrize("settle", ["next-delete", "node-start"])
def test_killed_after_commit(node_factory, scu_dir, settle):
    """SIGKILL after the COMMIT, before any file is removed: no row is left
    without its file, the files wait in storage_garbage, and the next
    delete (or the node's next start) removes them, also when some are
    gone already."""
    node = node_factory()
    files = stored(node, scu_dir)
    s1 = [files[uid(se, str(i))] for se, n in (("x1", 3), ("x2", 2)) for i in range(1, n + 1)]
    p = subprocess.Popen([CTL, "-c", node.config_path, "delete", "study", uid("s1"), "--yes"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, PN_TEST_DELETE_PAUSE="1"))
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "paused after the commit" not in line and time.monotonic() < deadline:
            line = p.stderr.readline()
            assert line or p.poll() is None, "pacsnodectl ended: %r" % p.communicate()
        assert "paused" in line, line
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert rows(node, "study", "study_uid", uid("s1")) == []
    assert sorted(r["path"] for r in node.query("SELECT path FROM storage_garbage")) == sorted(s1)
    assert gone(node, s1) == s1, "files removed before the pause"
    # every row still has its file; the queued files are the only extra ones
    problems = C.storage_problems(node)
    assert len(problems) == 1 and problems[0].startswith("files no row references"), problems
    os.unlink(os.path.join(node.storage, s1[0]))  # one already gone: fine
    if settle == "next-delete":
        r = ctl(node, "delete", "instance", uid("x4", "1"), "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "removed %d files an earlier delete or replace left" % len(s1) in r.stdout, r.stdout
    else:
        node.stop()
        offset = node.start_again()
        assert node.wait_for_log(r"storage recovery: %d files of replaced or deleted instances removed" % len(s1),
                                 timeout=10), H.tail(node.log_path)
        assert offset is not None
    assert gone(node, s1) == []
    assert_consistent(node)


@pytest.fixture
def slow_dest():
    s = R.RawStoreSCP(aet="SLOWDEST", delay=0.4).start()
    yield s
    s.stop()


def peer(ae, port=104, allow="store"):
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "allow": allow}


def test_a_running_move_holds_off_the_delete(node_factory, slow_dest, scu_dir):
    """A C-MOVE of study s1 to a destination taking 0.4 s an instance: a
    delete of s1 with --wait 0 is refused and changes nothing; with a wait
    it ends after the move, which sent every instance; a delete of another
    study does not wait."""
    node = node_factory(peers={"slow": peer("SLOWDEST", slow_dest.port), "mover": peer(MOVER, allow="move, get")})
    stored(node, scu_dir)
    result = {}

    def move():
        result["run"] = R.movescu(node.port, "study", "STUDY", {"StudyInstanceUID": uid("s1")}, scu_dir, aet=MOVER,
                                  dest="SLOWDEST")
        result["ended"] = time.monotonic()

    t = threading.Thread(target=move)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not slow_dest.stores and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow_dest.stores, "the move did not start"
        r = ctl(node, "delete", "study", uid("s1"), "--yes", "--wait", "0")
        assert r.returncode == 1 and "refused: a retrieve of this data" in r.stderr, r.stdout + r.stderr
        assert len(rows(node, "study", "study_uid", uid("s1"))) == 1
        r = ctl(node, "delete", "study", uid("s3"), "--yes", "--wait", "0")
        assert r.returncode == 0, r.stdout + r.stderr
        r = ctl(node, "delete", "study", uid("s1"), "--yes", "--wait", "60")
        ended = time.monotonic()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "waiting up to 60 s" in r.stderr, r.stderr
    finally:
        t.join(60)
    run = result["run"]
    f = run.final
    assert f is not None and f.status == 0 and f.completed == 5 and not f.failed, run.summary()
    assert result["ended"] <= ended + 0.5
    assert len(slow_dest.stores) == 5 and not slow_dest.errors, slow_dest.errors
    assert rows(node, "study", "study_uid", uid("s1")) == []
    assert_consistent(node)


@pytest.mark.node_config(workers=1)
def test_a_store_into_a_study_being_deleted(node, scu_dir):
    """While the delete of s1 holds its rows (3 s), a C-STORE of a new
    instance of series x1 arrives on the worker that stored x1 (its series
    cache names the row being deleted): it waits, then is stored with a new
    series, study and patient; the old instances are gone."""
    stored(node, scu_dir)
    p = subprocess.Popen([CTL, "-c", node.config_path, "delete", "study", uid("s1"), "--yes"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, PN_TEST_DELETE_HOLD_MS="3000"))
    # the delete's session waits, its rows locked, idle in its transaction
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not node.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"):
        time.sleep(0.05)
    new = gen_corpus.make_instance(os.path.join(scu_dir, "late.dcm"), name="late", patient_id="PN-A",
                                   issuer="HOSP_X", patient_name="Del^PN-A", study_uid=uid("s1"),
                                   series_uid=uid("x1"), sop_uid=uid("x1", "late"), modality="CT")
    t0 = time.monotonic()
    run = H.storescu(node.port, [new["path"]], scu_dir)
    took = time.monotonic() - t0
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    assert run.all_success(), run.summary()
    assert took > 1.0, "the store did not wait for the delete (%.2f s)" % took
    left = node.query("SELECT i.sop_uid, s.series_uid, t.study_uid, p.patient_id FROM instance i"
                      " JOIN series s ON s.pk = i.series_fk JOIN study t ON t.pk = s.study_fk"
                      " JOIN patient p ON p.pk = t.patient_fk WHERE t.study_uid = %s", (uid("s1"),))
    assert [(r["sop_uid"], r["series_uid"]) for r in left] == [(uid("x1", "late"), uid("x1"))], left
    [st] = find_study(node, scu_dir, uid("s1"))
    assert int(st.NumberOfStudyRelatedInstances) == 1 and st.ModalitiesInStudy == "CT", st
    assert_consistent(node)


def test_audited(node_factory, scu_dir, testdir, it_base):
    """With an audit trail: a series that leaves its study is DICOM
    Instances Accessed with EventActionCode D; a study that takes its
    patient with it is DICOM Study Deleted and Patient Record D; each names
    the operator (requestor) and us, the study with its SOP classes and
    counts, and the patient. They go through the node's spool and sender,
    also when pacsnodectl runs as root."""
    import test_audit as A  # its Message parses and checks one message
    user = it_base[1]
    spool = H.make_dir(os.path.join(testdir, "audit-spool"), user, mode=0o700)
    out_dir = H.make_dir(os.path.join(testdir, "audit-out"), user)
    log = os.path.join(out_dir, "audit.log")
    node = node_factory(extra_config={"audit": {"target": "file:" + log, "spool": spool}})
    stored(node, scu_dir)

    def messages(kinds, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = []
            if os.path.exists(log):
                with open(log, "rb") as f:
                    got = [A.Message(line.rstrip(b"\n")) for line in f if line.strip()]
            got = [m for m in got if m.event_id in kinds]
            if len(got) >= len(kinds):
                return got
            time.sleep(0.1)
        raise AssertionError("audit messages %s not delivered; spool holds %s" % (kinds, os.listdir(spool)))

    def check_people(m):
        people = m.participants()
        assert len(people) == 2, people
        assert people[0][2] == "true" and people[0][0], people  # the operator asked
        assert people[1][0] == H.NODE_AET and people[1][2] == "false", people

    assert ctl(node, "delete", "series", uid("x2"), "--yes").returncode == 0
    [m] = messages({"110103"})
    assert m.action == "D" and m.outcome == "0", m
    check_people(m)
    [st] = m.objects("110180")
    assert st.get("ParticipantObjectID") == uid("s1")
    assert [(c.get("NumberOfInstances")) for c in st.iter("SOPClass")] == ["2"], m.xml
    assert m.one_object("2").get("ParticipantObjectID") == "PN-A"

    assert ctl(node, "delete", "study", uid("s3"), "--yes").returncode == 0
    got = {m.event_id: m for m in messages({"110103", "110105", "110110"})}
    deleted, record = got["110105"], got["110110"]
    for m in (deleted, record):
        assert m.action == "D" and m.outcome == "0", m
        check_people(m)
        assert m.one_object("2").get("ParticipantObjectID") == "PN-B"
    assert [o.get("ParticipantObjectID") for o in deleted.objects("110180")] == [uid("s3")]
    assert record.objects("110180") == []
    assert not [f for f in os.listdir(spool) if f.endswith(".msg")]


def test_asks_on_a_terminal(node_factory, scu_dir):
    """On a terminal it asks: anything but y/yes deletes nothing (exit 1),
    yes deletes."""
    import pty
    node = node_factory()
    stored(node, scu_dir)

    def answer(text):
        master, slave = pty.openpty()
        p = subprocess.Popen([CTL, "-c", node.config_path, "delete", "series", uid("x4")], stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(slave)
        os.write(master, text.encode())
        out, err = p.communicate(timeout=60)
        os.close(master)
        return p.returncode, out, err

    rc, out, err = answer("n\n")
    assert rc == 1 and "delete them? [y/N]" in out and "nothing deleted" in out, out + err
    assert len(rows(node, "series", "series_uid", uid("x4"))) == 1
    rc, out, err = answer("yes\n")
    assert rc == 0 and "deleted: 1 patients, 1 studies, 1 series, 2 instances" in out, out + err
    assert rows(node, "series", "series_uid", uid("x4")) == []
    assert_consistent(node)


def test_progress_of_a_big_removal(node_factory, scu_dir):
    """From 1,000 queued files on, the removal shows its progress (a plain
    line when not on a terminal) and ends with an empty queue; queued paths
    whose files are gone already count as removed."""
    node = node_factory()
    stored(node, scu_dir)
    fake = []
    for i in range(1500):
        h = "%032x" % (i * 7919 + 1)
        fake.append("%s/%s/%s/%032x.%08x.dcm" % (h[:2], h[2:4], h, i, i))
    with node.connect() as c, c.cursor() as cur:
        cur.executemany("INSERT INTO storage_garbage (path) VALUES (%s)", [(p,) for p in fake])
    r = ctl(node, "delete", "instance", uid("x1", "1"), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"removing files: 1500 of 1500 \(100%\), .*done", r.stderr), r.stderr
    assert "removed 1500 files an earlier delete or replace left" in r.stdout, r.stdout
    assert_consistent(node)
