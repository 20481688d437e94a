"""pacsnodectl reindex (issue 21): the index rebuilt from the files under
the storage root into an empty database gives the rows C-STORE wrote
(column by column, but keys and the moments of indexing), the same kept
counts and byte for byte the same C-FIND answers at every level; an
interrupted reindex continues where it was; what is not an instance is
named and passed over; conflicts are decided as the store decided them in
the order the files were received; a running node, another session on the
database and a database that holds rows are refused."""

import datetime
import hashlib
import os
import re
import shutil
import signal
import subprocess

import psycopg2
import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
from pacsnode_harness import gen_corpus

CTL = os.environ.get("PACSNODECTL_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(H.NODE_BIN)), "ctl", "pacsnodectl")
pytestmark = pytest.mark.skipif(not os.access(CTL, os.X_OK), reason="pacsnodectl not built: " + CTL)


def ctl(node, *args, env=None, timeout=300):
    return subprocess.run([CTL, "-c", node.config_path] + list(args), capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def rel_path(series_uid, sop_uid, generation):
    """Where the node stores an instance (scp/storage_path.c)."""
    s = hashlib.sha256(series_uid.encode()).hexdigest()[:32]
    i = hashlib.sha256(sop_uid.encode()).hexdigest()[:32]
    return "%s/%s/%s/%s.%08x.dcm" % (s[:2], s[2:4], s, i, generation)


def place(node, src, series_uid, sop_uid, generation, mtime):
    """A file put where the node would have stored it, received at mtime."""
    dst = os.path.join(node.storage, rel_path(series_uid, sop_uid, generation))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)
    os.utime(dst, (mtime, mtime))
    return dst


# --------------------------------------------------------------------------
# What the index holds, and what C-FIND answers

def _plain(v):
    return bytes(v) if isinstance(v, memoryview) else v


ROWS_SQL = {
    "patient": "SELECT p.* FROM patient p",
    "study": "SELECT t.*, p.patient_id AS _patient_id, p.issuer AS _issuer"
             " FROM study t JOIN patient p ON p.pk = t.patient_fk",
    "series": "SELECT s.*, t.study_uid AS _study_uid FROM series s JOIN study t ON t.pk = s.study_fk",
    "instance": "SELECT i.*, s.series_uid AS _series_uid FROM instance i JOIN series s ON s.pk = i.series_fk",
}
KEY = {"patient": ("patient_id", "issuer"), "study": ("study_uid",), "series": ("series_uid",),
       "instance": ("sop_uid",)}
# the keys, and the moments of indexing, which reindex cannot know exactly
UNKNOWABLE = {"pk", "patient_fk", "study_fk", "series_fk", "created_at", "received_at"}


def rows(node):
    """{table: {natural key: {column: value}}}: every column but the keys
    (the parents named by their natural keys instead) and the timestamps,
    which rows_times() gives."""
    out = {}
    for table, sql in ROWS_SQL.items():
        out[table] = {}
        for r in node.query(sql):
            out[table][tuple(r[k] for k in KEY[table])] = {
                k: _plain(v) for k, v in r.items() if k not in UNKNOWABLE}
    return out


def rows_times(node):
    return {r["sop_uid"]: r["received_at"] for r in node.query("SELECT sop_uid, received_at FROM instance")}


def differences(a, b):
    out = []
    for table in ROWS_SQL:
        for key in sorted(set(a[table]) | set(b[table]), key=repr):
            ra, rb = a[table].get(key), b[table].get(key)
            if ra is None or rb is None:
                out.append("%s %s: only %s" % (table, key, "after" if ra is None else "before"))
                continue
            for col in sorted(set(ra) | set(rb)):
                if ra.get(col) != rb.get(col):
                    out.append("%s %s.%s: %r before, %r after" % (table, key, col, ra.get(col), rb.get(col)))
    return out


COUNTS = ["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
          "NumberOfPatientRelatedInstances"]
STUDY_EXTRA = ["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
               "SOPClassesInStudy", "InstanceAvailability"]


def answers(node):
    """Every C-FIND answer at every level, as the identifiers' bytes:
    patients (Patient Root), studies, each study's series, each series'
    images (Study Root), sorted."""
    def ask(root, level, keys):
        res = F.find(node.port, root, F.query_dataset(level, keys))
        assert res.final_status == F.SUCCESS, (level, keys, res.final_status)
        return res.pending

    out = {}
    keys = {k: "" for k in F.PATIENT_KEYS + COUNTS}
    out["PATIENT"] = sorted(r.data for r in ask(F.PATIENT_ROOT, "PATIENT", keys))
    keys = {k: "" for k in F.STUDY_KEYS + F.PATIENT_KEYS + STUDY_EXTRA}
    studies = ask(F.STUDY_ROOT, "STUDY", keys)
    out["STUDY"] = sorted(r.data for r in studies)
    out["SERIES"], out["IMAGE"] = [], []
    for st in studies:
        study_uid = str(st.dataset.StudyInstanceUID)
        keys = {k: "" for k in F.SERIES_KEYS + ["NumberOfSeriesRelatedInstances"]}
        keys["StudyInstanceUID"] = study_uid
        series = ask(F.STUDY_ROOT, "SERIES", keys)
        out["SERIES"] += [r.data for r in series]
        for se in series:
            keys = {k: "" for k in F.IMAGE_KEYS}
            keys.update(StudyInstanceUID=study_uid, SeriesInstanceUID=str(se.dataset.SeriesInstanceUID))
            out["IMAGE"] += [r.data for r in ask(F.STUDY_ROOT, "IMAGE", keys)]
    out["SERIES"].sort()
    out["IMAGE"].sort()
    return out


def recreate_database(node):
    node.cluster.drop_db(node.dbname)
    node.cluster.create_db(node.dbname)


def summary(out):
    m = re.search(r"(\d+) files taken, (\d+) instances indexed \((\d+) already\), (\d+) not indexed", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


# --------------------------------------------------------------------------


def store_corpus(node, corpus, scu_dir):
    """The corpus in two associations of two calling AE titles."""
    paths = corpus.paths()
    half = len(paths) // 2
    for part, aet in ((paths[:half], "MODALITY1"), (paths[half:], "WORKSTATION")):
        run = H.storescu(node.port, part, scu_dir, aet=aet)
        assert run.all_success(), run.summary()


def test_reindex_gives_the_index_c_store_wrote(node_factory, corpus, scu_dir, testdir):
    """The corpus (24 studies of 17 patients, several character sets,
    modalities and transfer syntaxes) stored by C-STORE, the database
    dropped and created again, then reindex: the same rows, counts and
    C-FIND answers once the node runs again; a non-DICOM file, a truncated
    instance, a temporary file in tmp/ and a stray file are named and left
    alone."""
    node = node_factory()
    store_corpus(node, corpus, scu_dir)
    before, times, found = rows(node), rows_times(node), answers(node)
    assert [len(found[lv]) > 0 for lv in F.LEVELS] == [True] * 4, found.keys()
    n = len(before["instance"])
    assert n == len(corpus.entries)
    node.stop()

    # what a reindex must pass over
    junk = place(node, os.path.join(corpus.dir, "manifest.json"), "1.2.3.4", "1.2.3.4.5", 7, 1.7e9)
    cut_src = os.path.join(testdir, "cut.dcm")
    cut = gen_corpus.make_instance(cut_src, name="cut")
    with open(cut_src, "r+b") as f:
        f.truncate(os.path.getsize(cut_src) - 100)
    cut_path = place(node, cut_src, cut["series_instance_uid"], cut["sop_instance_uid"], 1, 1.7e9)
    tmp_file = os.path.join(node.storage, "tmp", "in-0000abcd-4242-1")
    with open(tmp_file, "wb") as f:
        f.write(b"\0" * 300)
    stray = os.path.join(node.storage, "notes.txt")
    with open(stray, "w") as f:
        f.write("not an instance\n")

    recreate_database(node)
    r = ctl(node, "reindex", "--jobs", "2", "--batch", "7")
    assert r.returncode == 1, r.stdout + r.stderr  # the files passed over
    out = r.stdout
    assert summary(out) == (n + 2, n, 0, 2), out
    assert junk + ": not a DICOM Part 10 file: not indexed" in out, out
    assert cut_path + ": not indexed: the dataset cannot be parsed" in out, out
    assert tmp_file + ": a temporary file" in out and stray + ": not a name the node gives" in out, out
    assert os.path.exists(junk) and os.path.exists(cut_path) and os.path.exists(stray)
    assert not C.wrong_counts(node), C.wrong_counts(node)  # folded by reindex, not by the node's start

    node.start_again()
    assert not differences(before, rows(node)), "\n".join(differences(before, rows(node))[:30])
    assert not C.wrong_counts(node), C.wrong_counts(node)
    # received_at is the file's modification time: the store's last write,
    # just before the commit that set it
    for sop, t in rows_times(node).items():
        assert abs((t - times[sop]).total_seconds()) < 5, (sop, t, times[sop])
    assert not node.query("SELECT * FROM reindex_progress")
    after = answers(node)
    for level in found:
        assert after[level] == found[level], level


def test_interrupted_reindex_continues(node_factory, corpus, scu_dir):
    """Killed after its second batch, started again: it says it resumes,
    takes the files after the last committed batch only, and ends with the
    rows and counts of an uninterrupted one; a third run is refused."""
    node = node_factory()
    store_corpus(node, corpus, scu_dir)
    before = rows(node)
    node.stop()
    recreate_database(node)
    r = ctl(node, "reindex", "--batch", "5", env={"PN_REINDEX_TEST_KILL_AFTER": "2"})
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    [p] = node.query("SELECT * FROM reindex_progress")
    assert p["files"] == 10 and p["indexed"] == 10, p
    assert node.count("instance") == 10
    r = ctl(node, "reindex", "--batch", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming the reindex begun at" in r.stdout and "10 files taken so far" in r.stdout, r.stdout
    n = len(corpus.entries)
    assert summary(r.stdout) == (n - 10, n - 10, 0, 0), r.stdout
    assert "the whole reindex, with its interrupted runs: %d files, %d indexed, 0 not" % (n, n) in r.stdout
    assert not differences(before, rows(node)), "\n".join(differences(before, rows(node))[:30])
    assert not C.wrong_counts(node), C.wrong_counts(node)
    assert not node.query("SELECT * FROM reindex_progress")
    r = ctl(node, "reindex")
    assert r.returncode == 1 and "refused: the database holds %d instances" % n in r.stderr, r.stderr
    node.start_again()
    assert node.count("instance") == n


def test_reindex_refuses(node_factory, corpus, scu_dir):
    """A running node; another session on the database; a database with
    rows no interrupted reindex left. --help answers."""
    node = node_factory()
    run = H.storescu(node.port, corpus.paths()[:3], scu_dir)
    assert run.all_success(), run.summary()
    r = ctl(node, "reindex")
    assert r.returncode == 1 and "refused: the node is running" in r.stderr, r.stderr
    node.stop()
    conn = psycopg2.connect(host=node.cluster.sockdir, user="postgres", dbname=node.dbname,
                            application_name="pacsnode")
    try:
        r = ctl(node, "reindex")
        assert r.returncode == 1 and "other session(s)" in r.stderr, r.stderr
    finally:
        conn.close()
    r = ctl(node, "reindex")
    assert r.returncode == 1 and "refused: the database holds 3 instances" in r.stderr, r.stderr
    assert node.count("instance") == 3
    r = ctl(node, "reindex", "--help")
    assert r.returncode == 0 and "--jobs" in r.stdout


@pytest.mark.parametrize("policy", ["ignore", "replace"])
def test_conflicts_decided_as_the_store_did(node_factory, testdir, scu_dir, policy):
    """Files placed by hand with modification times giving their received
    order: a second file of an instance, a study under a second patient, a
    series under a second study. Reindex names each file it does not index
    and ends with the rows a node makes of the same files sent by C-STORE in
    that order (duplicate_policy ignore: the first file of an instance
    stays; replace: the last)."""
    mk = gen_corpus.make_uid
    st1, st2, se1, se2 = mk(0, "c", "st1"), mk(0, "c", "st2"), mk(0, "c", "se1"), mk(0, "c", "se2")
    plan = [  # name, patient, study, series, sop, instance number
        ("a", "PAT-A", st1, se1, mk(0, "c", "i1"), "1"),
        ("b", "PAT-A", st1, se1, mk(0, "c", "i2"), "2"),
        ("dup", "PAT-A", st1, se1, mk(0, "c", "i1"), "9"),         # a second file of i1
        ("other-patient", "PAT-B", st1, se2, mk(0, "c", "i3"), "3"),  # study st1 is PAT-A's
        ("other-study", "PAT-A", st2, se1, mk(0, "c", "i4"), "4"),    # series se1 is st1's
        ("c", "PAT-A", st2, se2, mk(0, "c", "i5"), "5"),
    ]
    src = os.path.join(testdir, "src")
    os.makedirs(src)
    files = []
    for k, (name, pid, st, se, sop, num) in enumerate(plan):
        path = os.path.join(src, "%d-%s.dcm" % (k, name))
        gen_corpus.make_instance(path, name=name, patient_id=pid, study_uid=st, series_uid=se, sop_uid=sop,
                                 instance_number=num)
        files.append(path)
    # the files in this order by C-STORE, one association each
    dimse = node_factory(duplicate_policy=policy)
    for p in files:
        H.storescu(dimse.port, [p], scu_dir)
    node = node_factory(duplicate_policy=policy)
    node.stop()
    placed = [place(node, p, se, sop, 0x100 + k, 1.7e9 + k) for k, (p, (_n, _p, _st, se, sop, _num))
              in enumerate(zip(files, plan))]
    r = ctl(node, "reindex", "--batch", "4")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    if policy == "ignore":
        assert placed[2] + ": not indexed: a second file of instance " + plan[0][4] in out, out
    else:
        assert placed[2] + ": indexed in place of an earlier file of instance " + plan[0][4] in out, out
    assert placed[3] + ": not indexed: hierarchy conflict: study " + st1 in out, out
    assert placed[4] + ": not indexed: hierarchy conflict: series " + se1 in out, out
    node.start_again()
    assert not C.wrong_counts(node), C.wrong_counts(node)
    drop = {"path", "size", "checksum", "calling_ae"}  # the files are the generator's, not the node's

    def norm(rs):
        return {t: {k: {c: v for c, v in r_.items() if c not in drop} for k, r_ in rows_.items()}
                for t, rows_ in rs.items()}
    diffs = differences(norm(rows(dimse)), norm(rows(node)))
    assert not diffs, "\n".join(diffs)
    assert node.count("instance") == 3
