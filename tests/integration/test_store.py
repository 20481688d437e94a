"""C-STORE into a real pacsnode: the file on disk, the index rows, the
duplicate policies, hierarchy conflicts, hostile UIDs and concurrent senders.

The expected values come from tests/corpus/gen_corpus.py's manifest (what
the generator wrote), never from reading the node back.
"""

import os
import re
import struct
import threading
import time

import pytest

import pacsnode_checks as C
import pacsnode_harness as H
import rawscu
from pacsnode_harness import gen_corpus

# Files and directories a test directory holds besides the node's storage
# root: anything else appearing there was written where it must not be.
OWN_FILES = ("pacsnode.conf", "node.log", "node.stdout")


def stray_files(node):
    """Files under the node's directory that are neither the storage root's
    nor the harness's own: a path outside the storage root was written."""
    out = []
    for rel in C.walk_files(node.dir):
        if rel in OWN_FILES:
            continue
        if rel.startswith(os.path.relpath(node.storage, node.dir) + os.sep):
            continue
        out.append(rel)
    return sorted(out)


def assert_storage_clean(node):
    problems = C.storage_problems(node)
    assert not problems, "storage root %s vs index:\n  %s" % (node.storage, "\n  ".join(problems))
    stray = stray_files(node)
    assert not stray, "files written outside the storage root: %s" % stray


def assert_log(node, *patterns, what):
    """Loose log check: some line matches one of the regexes (ignoring case)."""
    rx = "|".join("(?:%s)" % p for p in patterns)
    line = node.wait_for_log(rx)
    assert line, "no log line about %s (looked for /%s/) in %s:\n%s" % (
        what, rx, node.log_path, H.tail(node.log_path))
    return line


def stored_path(node, row):
    return os.path.join(node.storage, row["path"])


# --------------------------------------------------------------------------


def test_echo(node):
    r = H.echoscu(node.port, aet="PNECHO")
    assert r.ok, r.output
    assert_log(node, "PNECHO", what="the association from PNECHO")


def test_store_corpus(node, corpus, scu_dir):
    """Every corpus file: success, one row, the same dataset on disk, every
    typed column as the manifest says, the expected number of rows."""
    run = H.storescu(node.port, corpus.paths(), scu_dir, aet="PNCORPUS")
    assert run.all_success(), run.summary()

    assert {t: node.count(t) for t in ("patient", "study", "series", "instance")} == {
        "patient": corpus.expected["patients"],
        "study": corpus.expected["studies"],
        "series": corpus.expected["series"],
        "instance": corpus.expected["instances"],
    }

    rows = C.joined_rows(node)
    problems = []
    for e in corpus.entries:
        sop = e["sop_instance_uid"]
        row = rows.get(sop)
        name = "%s (%s)" % (e["path"], sop)
        if row is None:
            problems.append("%s: no instance row" % name)
            continue
        problems += ["%s: %s" % (name, d) for d in C.column_differences(row, e)]
        if row["instance.calling_ae"] != "PNCORPUS":
            problems.append("%s: calling_ae %r" % (name, row["instance.calling_ae"]))
        path = os.path.join(node.storage, row["instance.path"])
        if not os.path.isfile(path):
            problems.append("%s: no file at %s" % (name, path))
            continue
        problems += ["%s: %s" % (name, d) for d in C.compare_part10(
            e["abspath"], path, e["sop_class_uid"], sop, e["transfer_syntax_uid"])]
    assert not problems, "%d problems:\n  %s" % (len(problems), "\n  ".join(problems))

    assert_storage_clean(node)
    assert_log(node, "PNCORPUS", what="the association from PNCORPUS")


def test_same_patient_id_other_issuer_is_another_patient(node, corpus, scu_dir):
    shared = [e for e in corpus.entries if e["attrs"]["PatientID"] == "SHARED-42"]
    assert len({e["attrs"]["IssuerOfPatientID"] for e in shared}) == 2, "corpus changed"
    run = H.storescu(node.port, corpus.paths(shared), scu_dir)
    assert run.all_success(), run.summary()
    rows = node.query("SELECT patient_id, issuer, patient_name FROM patient ORDER BY issuer")
    assert rows == [
        {"patient_id": "SHARED-42", "issuer": "HOSP_A", "patient_name": "Smith^Anna"},
        {"patient_id": "SHARED-42", "issuer": "HOSP_B", "patient_name": "Smith^Anne"},
    ]
    assert node.count("study") == len({e["study_instance_uid"] for e in shared})


def test_patient_names_are_utf8(node, corpus, scu_dir):
    """One instance per generated patient; names decoded from ISO_IR 100,
    ISO_IR 192 and ISO 2022 IR 87 into UTF-8."""
    first = {}
    for e in corpus.entries:
        if e["origin"] == "generated":
            first.setdefault((e["attrs"]["PatientID"], e["attrs"]["IssuerOfPatientID"]), e)
    run = H.storescu(node.port, corpus.paths(first.values()), scu_dir)
    assert run.all_success(), run.summary()
    got = {(r["patient_id"], r["issuer"]): r["patient_name"]
           for r in node.query("SELECT patient_id, issuer, patient_name FROM patient")}
    want = {k: e["attrs"]["PatientName"] for k, e in first.items()}
    assert got == want
    names = set(got.values())
    for literal in ("Müller^Hans", "Öberg^Åsa", "Ελληνική^Δοκιμή", "Müller^Jürgen", "山田^太郎"):
        assert literal in names
    japanese = got[("PN-0007", "HOSP_JP")]
    assert japanese.split("=")[1] == "山田^太郎", japanese
    assert japanese == "Yamada^Tarou=山田^太郎=やまだ^たろう"


# --------------------------------------------------------------------------
# Duplicates


def two_copies(scu_dir):
    """Two different files with the same SOP Instance UID in the same series."""
    common = dict(seed=0, study_uid=gen_corpus.make_uid(0, "dup-study"),
                  series_uid=gen_corpus.make_uid(0, "dup-series"),
                  sop_uid=gen_corpus.make_uid(0, "dup-sop"), patient_id="PN-DUP")
    first = gen_corpus.make_instance(os.path.join(scu_dir, "first.dcm"), name="dup1",
                                     instance_number=1, **common)
    second = gen_corpus.make_instance(os.path.join(scu_dir, "second.dcm"), name="dup2",
                                      instance_number=7,
                                      set_attrs={"ImageComments": "second copy"}, **common)
    assert first["sha256"] != second["sha256"]
    return first, second


@pytest.mark.parametrize("policy", ["ignore", "replace", "reject"])
def test_duplicate_policy(node_factory, scu_dir, policy):
    node = node_factory(duplicate_policy=policy)
    first, second = two_copies(scu_dir)
    sop = first["sop_instance_uid"]

    run = H.storescu(node.port, [first["path"]], scu_dir, aet="PNFIRST")
    assert run.all_success(), run.summary()
    [row1] = C.instance_rows(node)
    path1 = stored_path(node, row1)
    with open(path1, "rb") as f:
        bytes1 = f.read()
    db1 = C.db_snapshot(node)

    run = H.storescu(node.port, [second["path"]], scu_dir, aet="PNSECOND")
    status = run.status(second["path"])
    rows = C.instance_rows(node)
    assert len(rows) == 1 and node.count("series") == 1 and node.count("study") == 1

    if policy in ("ignore", "reject"):
        if policy == "ignore":
            assert status == H.SUCCESS, run.summary()
        else:
            assert status == H.DUPLICATE, run.summary()
        assert C.db_snapshot(node) == db1, "the index changed"
        with open(path1, "rb") as f:
            assert f.read() == bytes1, "the stored file changed"
        assert not C.compare_part10(first["path"], path1, first["sop_class_uid"], sop,
                                    first["transfer_syntax_uid"])
    else:
        assert status == H.SUCCESS, run.summary()
        row = rows[0]
        assert row["instance_number"] == 7
        assert row["calling_ae"] == "PNSECOND"
        path2 = stored_path(node, row)
        assert not C.compare_part10(second["path"], path2, second["sop_class_uid"], sop,
                                    second["transfer_syntax_uid"])
        assert row["checksum"] == C.checksum_file(path2)
        if row["path"] != row1["path"]:
            assert not os.path.exists(path1), "the replaced file is still there"
        else:
            with open(path2, "rb") as f:
                assert f.read() != bytes1, "same path, old content"
    assert_storage_clean(node)
    assert_log(node, re.escape(sop), "duplicate", what="the duplicate")


# --------------------------------------------------------------------------
# Hierarchy conflicts and hostile UIDs


@pytest.mark.parametrize("case", ["conflict_series", "conflict_study"])
def test_hierarchy_conflict_is_refused(node, bad_cases, scu_dir, case):
    first, second = bad_cases[case]["files"]
    run = H.storescu(node.port, [first["abspath"]], scu_dir)
    assert run.all_success(), run.summary()
    db1 = C.db_snapshot(node)
    disk1 = C.tree_snapshot(node.storage)

    run = H.storescu(node.port, [second["abspath"]], scu_dir)
    status = run.status(second["abspath"])
    assert H.is_cannot_understand(status), run.summary()
    assert C.db_snapshot(node) == db1, "the index changed"
    assert C.tree_snapshot(node.storage) == disk1, "the storage root changed"
    assert_storage_clean(node)
    assert_log(node, "conflict", re.escape(second["sop_instance_uid"]),
               what="the hierarchy conflict")


REFUSED = [name for name, _a, _v, _w in gen_corpus.BAD_UIDS] + ["missing_study_uid"]


def send_one(node, scu_dir, f, sender):
    """Status of one C-STORE of file entry f; rawscu sends the file's bytes
    untouched, command UIDs included. "aborted"/"rejected" when rawscu got
    no status."""
    if sender == "storescu":
        return H.storescu(node.port, [f["abspath"]], scu_dir).status(f["abspath"])
    try:
        return rawscu.store_file(node.port, f["abspath"], command_sop_class=f["sop_class_uid"],
                                 command_sop_uid=f["sop_instance_uid"] or "")
    except rawscu.UlError as e:
        return str(e)


@pytest.mark.parametrize("sender", ["storescu", "rawscu"])
@pytest.mark.parametrize("case", REFUSED)
def test_bad_uid_is_refused(node, bad_cases, scu_dir, case, sender):
    """Refused with 0xCxxx, nothing in the index, nothing on disk anywhere;
    and the node still stores a good instance afterwards. rawscu also puts
    the bad SOP Instance UID in the command, where an A-ABORT is an
    acceptable answer too (the command cannot be parsed)."""
    [bad] = bad_cases[case]["files"]
    if sender == "storescu" and case == "series_uid_space":
        pytest.skip("dcmtk drops the space when reading the file: storescu sends a valid UID")
    before = C.tree_snapshot(node.dir, ignore=OWN_FILES)
    status = send_one(node, scu_dir, bad, sender)
    if sender == "rawscu" and isinstance(status, str):
        assert "aborted" in status or "closed" in status, status
    else:
        assert H.is_cannot_understand(status), "%s got status %r (outputs in %s)" % (
            sender, status, scu_dir)

    assert {t: node.count(t) for t in ("patient", "study", "series", "instance")} == {
        "patient": 0, "study": 0, "series": 0, "instance": 0}
    assert C.tree_snapshot(node.dir, ignore=OWN_FILES) == before, "files appeared"
    assert_storage_clean(node)
    value = bad.get("bad_value") or ""
    assert_log(node, re.escape(value) if value else "study", r"uid", what="the refused UID")

    good = gen_corpus.make_instance(os.path.join(scu_dir, "good.dcm"), name="after-" + case)
    run = H.storescu(node.port, [good["path"]], scu_dir)
    assert run.all_success(), "the node no longer stores: " + run.summary()


def test_meta_header_uid_is_not_trusted(node, bad_cases, scu_dir):
    """The meta header never travels in a C-STORE: the stored file's meta
    header names the dataset's SOP Instance UID."""
    [f] = bad_cases["meta_mismatch"]["files"]
    assert f["meta_sop_instance_uid"] != f["sop_instance_uid"]
    run = H.storescu(node.port, [f["abspath"]], scu_dir)
    assert run.all_success(), run.summary()
    [row] = C.instance_rows(node)
    assert row["sop_uid"] == f["sop_instance_uid"]
    assert not C.compare_part10(f["abspath"], stored_path(node, row), f["sop_class_uid"],
                                f["sop_instance_uid"], f["transfer_syntax_uid"])
    assert_storage_clean(node)


def test_command_uid_must_match_dataset(node, scu_dir):
    """A C-STORE-RQ whose Affected SOP Instance UID is not the dataset's SOP
    Instance UID (storescu cannot send one; rawscu can) is refused and
    leaves nothing behind. A matching one over the same client stores."""
    good = gen_corpus.make_instance(os.path.join(scu_dir, "raw-good.dcm"), name="raw-good")
    status = rawscu.store_file(node.port, good["path"], command_sop_class=good["sop_class_uid"],
                               command_sop_uid=good["sop_instance_uid"])
    assert status == H.SUCCESS, "control case: 0x%04X" % status
    db1 = C.db_snapshot(node)
    disk1 = C.tree_snapshot(node.storage)

    f = gen_corpus.make_instance(os.path.join(scu_dir, "raw-bad.dcm"), name="raw-bad")
    other = gen_corpus.make_uid(0, "raw-command-only")
    status = rawscu.store_file(node.port, f["path"], command_sop_class=f["sop_class_uid"],
                               command_sop_uid=other)
    assert H.is_cannot_understand(status), "0x%04X" % status
    assert C.db_snapshot(node) == db1, "the index changed"
    assert C.tree_snapshot(node.storage) == disk1, "the storage root changed"
    assert_storage_clean(node)
    assert_log(node, re.escape(other), re.escape(f["sop_instance_uid"]), "mismatch|differ",
               what="the UID mismatch")


def test_command_class_must_match_dataset(node, scu_dir):
    f = gen_corpus.make_instance(os.path.join(scu_dir, "raw-class.dcm"), name="raw-class")
    status = rawscu.store_file(node.port, f["path"], command_sop_class=gen_corpus.SOP_CLASS["MR"],
                               command_sop_uid=f["sop_instance_uid"])
    assert H.is_failure(status), "0x%04X" % status
    assert node.count("instance") == 0
    assert_storage_clean(node)


def test_dataset_is_parsed_from_memory_within_the_buffers_and_from_the_file_beyond(node, scu_dir):
    """The node parses what it received from its write buffers (1 MiB) and
    reads larger instances back from the file: one instance each side of
    that edge, and a small one, are all stored as sent, and the debug log
    says which way each was parsed (so a memory path that always fell back
    to the file would show here)."""
    sizes = {"parse-small": 16, "parse-900k": 660, "parse-2m": 1024}  # rows = columns
    files = {}
    for name, n in sizes.items():
        files[name] = gen_corpus.make_instance(
            os.path.join(scu_dir, name + ".dcm"), name=name,
            set_attrs={"Rows": n, "Columns": n, "PixelData": os.urandom(n * n * 2)})
    assert files["parse-900k"]["size"] < 1024 * 1024 < files["parse-2m"]["size"]

    run = H.storescu(node.port, [f["path"] for f in files.values()], scu_dir)
    assert run.all_success(), run.summary()

    rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
    expect = {"parse-small": "memory", "parse-900k": "memory", "parse-2m": "file"}
    for name, f in files.items():
        row = rows[f["sop_instance_uid"]]
        assert row["size"] > f["size"] - 1024, (name, row["size"], f["size"])
        assert not C.compare_part10(f["path"], stored_path(node, row), f["sop_class_uid"],
                                    f["sop_instance_uid"], f["transfer_syntax_uid"]), name
        line = assert_log(node, r"stored %s \(%d bytes, parsed from " % (
            re.escape(f["sop_instance_uid"]), row["size"]), what="the store of " + name)
        assert "parsed from %s," % expect[name] in line, (name, line)
    assert_storage_clean(node)


def test_text_values_over_4_kib_are_indexed_whole(node, scu_dir):
    """Values over 4 KiB are left in the received bytes while parsing and
    read from them only when the index needs them: a 6,000-character
    ImageComments (LT) must reach the instance's attribute blob whole, from
    a small instance (parsed from memory) and from a 2 MB one (read back
    from the file)."""
    import findscu_util
    comments = "".join("note-%05d;" % i for i in range(600))[:6000]
    assert len(comments) == 6000 and not comments.endswith(" ")
    files = [gen_corpus.make_instance(os.path.join(scu_dir, name + ".dcm"), name=name,
                                      set_attrs=dict({"ImageComments": comments}, **extra))
             for name, extra in (("long-text-small", {}),
                                 ("long-text-2m", {"Rows": 1024, "Columns": 1024,
                                                   "PixelData": bytes(1024 * 1024 * 2)}))]
    run = H.storescu(node.port, [f["path"] for f in files], scu_dir)
    assert run.all_success(), run.summary()
    for f in files:
        [row] = node.query("SELECT attrs FROM instance WHERE sop_uid = %s", (f["sop_instance_uid"],))
        blob = findscu_util.read_identifier(bytes(row["attrs"]))
        assert blob.ImageComments == comments, f["path"]


def direct_io_possible(folder):
    try:
        fd = os.open(os.path.join(folder, "probe-direct"), os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(os.path.join(folder, "probe-direct"))
    return True


@pytest.mark.parametrize("mode", ["auto", "direct", "buffered"])
def test_write_mode(node_factory, scu_dir, mode):
    """[storage] write_mode: every instance is stored as sent whichever way
    its file is written; `direct` and `buffered` keep to theirs, and `auto`
    tries both before it prefers one (the debug log names the way)."""
    node = node_factory(extra_config={"storage": {"write_mode": mode}})
    direct_ok = direct_io_possible(node.storage)
    # sizes around the 4 KiB blocks and the 128 KiB buffers
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "wm-%d.dcm" % i), name="wm-%d" % i,
                                      set_attrs={"Rows": n, "Columns": n, "PixelData": os.urandom(n * n * 2)})
             for i, n in enumerate([8, 45, 64, 256, 257, 300, 362, 400, 512, 16, 90, 128])]
    run = H.storescu(node.port, [f["path"] for f in files], scu_dir)
    assert run.all_success(), run.summary()
    rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
    ways = []
    for f in files:
        row = rows[f["sop_instance_uid"]]
        assert not C.compare_part10(f["path"], stored_path(node, row), f["sop_class_uid"],
                                    f["sop_instance_uid"], f["transfer_syntax_uid"]), f["path"]
        line = assert_log(node, r"stored %s \(\d+ bytes, parsed from \w+, written \w+\)" % re.escape(
            f["sop_instance_uid"]), what="the store of " + f["path"])
        ways.append(re.search(r"written (\w+)", line).group(1))
    if mode == "buffered" or not direct_ok:
        assert set(ways) == {"buffered"}, ways
    elif mode == "direct":
        assert set(ways) == {"direct"}, ways
    else:
        # four of each first, alternately
        assert ways[:8] == ["direct", "buffered"] * 4, ways
    assert_log(node, r"write_mode = %s" % mode, what="the write mode at start-up")
    assert_storage_clean(node)


# --------------------------------------------------------------------------
# Concurrency

SENDERS = 8


@pytest.mark.parametrize("policy", ["ignore", "replace", "reject"])
def test_concurrent_senders_same_study(node_factory, scu_dir, policy):
    """8 storescu processes released at the same instant, each sending the
    same 5 instances: one patient/study/series row, one row per SOP, one
    file per SOP; with reject exactly one sender wins each SOP."""
    node = node_factory(duplicate_policy=policy, workers=2, max_associations=2 * SENDERS)
    study = gen_corpus.make_uid(0, "race-study")
    series = gen_corpus.make_uid(0, "race-series")
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "race%d.dcm" % i), name="race%d" % i,
                                      patient_id="PN-RACE", study_uid=study, series_uid=series,
                                      instance_number=i + 1, modality=m)
             for i, m in enumerate(["CT", "CT", "MR", "PT", "NM"])]
    group = H.StorescuGroup(node.port, [[f["path"] for f in files]] * SENDERS, scu_dir,
                            aet="PNRACE")
    runs = group.wait()
    report = "\n".join(r.summary(only_problems=True) for r in runs)

    for f in files:
        statuses = [r.status(f["path"]) for r in runs]
        if policy == "reject":
            want = [H.SUCCESS] + [H.DUPLICATE] * (SENDERS - 1)
            assert sorted(statuses, key=str) == sorted(want, key=str), \
                "%s: %s\n%s" % (f["path"], statuses, report)
        else:
            assert statuses == [H.SUCCESS] * SENDERS, "%s: %s\n%s" % (f["path"], statuses, report)

    assert (node.count("patient"), node.count("study"), node.count("series")) == (1, 1, 1)
    rows = C.instance_rows(node)
    assert sorted(r["sop_uid"] for r in rows) == sorted(f["sop_instance_uid"] for f in files)
    for f in files:
        [row] = [r for r in rows if r["sop_uid"] == f["sop_instance_uid"]]
        assert not C.compare_part10(f["path"], stored_path(node, row), f["sop_class_uid"],
                                    f["sop_instance_uid"], f["transfer_syntax_uid"])
    assert_storage_clean(node)
    assert_log(node, "PNRACE", what="the racing associations")


def test_concurrent_folds_of_one_study(node, scu_dir):
    """Two folds of one study made to overlap (migration 006): T1 has added
    an MR series and committed, T2 adds a PT series but has not committed
    when T1's fold runs and holds the study row. T2 commits and folds: its
    fold must wait for T1's lock, then add its series to T1's and compute
    the modalities again, T2's series in them (T1's fold, which could not
    see it, wrote "CT\\MR")."""
    f = gen_corpus.make_instance(os.path.join(scu_dir, "fold-ct.dcm"), name="fold-ct", modality="CT")
    run = H.storescu(node.port, [f["path"]], scu_dir)
    assert run.all_success(), run.summary()
    [study] = node.query("SELECT pk FROM study")
    add = "INSERT INTO series (study_fk, series_uid, modality) VALUES (%s, %s, %s)"
    fold = "SELECT pn_fold_counts(pg_backend_pid())"
    t1, t2 = node.connect(), node.connect()
    try:
        t1.autocommit = t2.autocommit = False
        c1, c2 = t1.cursor(), t2.cursor()
        c1.execute(add, (study["pk"], "1.2.3.901", "MR"))
        t1.commit()
        c2.execute(add, (study["pk"], "1.2.3.902", "PT"))
        c1.execute(fold)  # holds the study row; T2's series is not visible
        t2.commit()
        done = threading.Event()
        errors = []

        def fold_t2():
            try:
                c2.execute(fold)  # waits for T1
                t2.commit()
            except Exception as e:  # reported below
                errors.append(e)
            done.set()

        th = threading.Thread(target=fold_t2)
        th.start()
        assert not done.wait(1.0), "T2's fold did not wait for T1's lock on the study row"
        t1.commit()
        th.join(10)
        assert done.is_set() and not errors, errors
    finally:
        t1.close()
        t2.close()
    [row] = node.query("SELECT modalities, n_series FROM study")
    assert (row["modalities"], row["n_series"]) == ("CT\\MR\\PT", 3)


def test_counts_left_by_a_lost_connection_are_folded_at_start(node, scu_dir):
    """A store commits its count deltas with the instance and folds them in
    a second transaction (migration 006). A connection that committed
    deltas and went away before folding leaves them behind: the next start
    folds them (pn_fold_orphans), and the counts are right."""
    f = gen_corpus.make_instance(os.path.join(scu_dir, "orphan-ct.dcm"), name="orphan-ct", modality="CT")
    run = H.storescu(node.port, [f["path"]], scu_dir)
    assert run.all_success(), run.summary()
    [study] = node.query("SELECT pk FROM study")
    conn = node.connect()
    try:
        conn.autocommit = True
        conn.cursor().execute("INSERT INTO series (study_fk, series_uid, modality) VALUES (%s, %s, %s)",
                              (study["pk"], "1.2.3.903", "MR"))
    finally:
        conn.close()
    [left] = node.query("SELECT count(*) AS n FROM patient_count")
    assert left["n"] == 1, "the direct insert should have left its deltas unfolded"
    [row] = node.query("SELECT modalities, n_series FROM study")
    assert (row["modalities"], row["n_series"]) == ("CT", 1)
    node.stop()
    node.start_again()
    node.wait_for_log(r"count recovery: folded the count deltas left by 1 connection")
    [row] = node.query("SELECT modalities, n_series FROM study")
    assert (row["modalities"], row["n_series"]) == ("CT\\MR", 2)
    [p] = node.query("SELECT n_series FROM patient")
    assert p["n_series"] == 2


def test_counts_of_an_open_association_are_folded_when_it_pauses(node, scu_dir):
    """The fold of the kept counts runs every few stores, not after each:
    a peer that stored and then keeps its association open without sending
    gets its counts folded once it has been silent for about 10 ms, before
    it releases. The association goes on afterwards."""
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "pause-%d.dcm" % i), name="pause-%d" % i,
                                      patient_id="PN-PAUSE", study_uid="1.2.3.77", series_uid="1.2.3.77.1")
             for i in range(4)]
    a = rawscu.Association(node.host, node.port, timeout=15)
    try:
        a.associate("PNPAUSE", node.aet, files[0]["sop_class_uid"])
        for i, f in enumerate(files[:3]):
            status = a.c_store(f["sop_class_uid"], f["sop_instance_uid"], rawscu.dataset_bytes(f["path"]),
                               msg_id=i + 1)
            assert status == H.SUCCESS
        # Still associated; nothing sent since the last response.
        deadline = time.monotonic() + 5
        while True:
            [row] = node.query("SELECT n_series, n_instances FROM study WHERE study_uid = '1.2.3.77'")
            [left] = node.query("SELECT count(*) AS n FROM series_count")
            if (row["n_series"], row["n_instances"], left["n"]) == (1, 3, 0):
                break
            assert time.monotonic() < deadline, \
                "counts of the open association not folded: %r, %d shard rows" % (row, left["n"])
            time.sleep(0.02)
        status = a.c_store(files[3]["sop_class_uid"], files[3]["sop_instance_uid"],
                           rawscu.dataset_bytes(files[3]["path"]), msg_id=4)
        assert status == H.SUCCESS
        a.release()
    finally:
        a.close()
    [row] = node.query("SELECT n_series, n_instances FROM study WHERE study_uid = '1.2.3.77'")
    assert (row["n_series"], row["n_instances"]) == (1, 4)


def test_a_query_after_stores_on_one_association_counts_them(node, scu_dir):
    """A C-FIND right after C-STOREs on the same association counts what
    they stored: the node folds the association's counts before it
    answers, without waiting for a pause or the 32nd store."""
    study_root_find = "1.2.840.10008.5.1.4.1.2.2.1"
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "ask-%d.dcm" % i), name="ask-%d" % i,
                                      patient_id="PN-ASK", study_uid="1.2.3.78", series_uid="1.2.3.78.1")
             for i in range(2)]
    identifier = (rawscu.explicit_element(0x0008, 0x0052, "CS", b"STUDY")
                  + rawscu.explicit_element(0x0020, 0x000D, "UI", b"1.2.3.78")
                  + rawscu.explicit_element(0x0020, 0x1208, "IS", b""))
    a = rawscu.Association(node.host, node.port, timeout=15)
    try:
        a.associate("PNASK", node.aet, files[0]["sop_class_uid"], more=(study_root_find,))
        for i, f in enumerate(files):
            status = a.c_store(f["sop_class_uid"], f["sop_instance_uid"], rawscu.dataset_bytes(f["path"]),
                               msg_id=i + 1)
            assert status == H.SUCCESS
        rsps = a.c_find(study_root_find, identifier, pc_id=3, msg_id=3)
        a.release()
    finally:
        a.close()
    assert [s for s, _ in rsps] == [0xFF00, 0x0000], rsps
    found = rawscu.parse_explicit(rsps[0][1])
    assert found[(0x0020, 0x1208)].strip() == b"2", found


STUDIES = 25


def test_concurrent_series_of_one_new_study(node_factory, scu_dir):
    """4 storescu processes released at the same instant, each sending its
    own series (its own modality) of the same 25 new studies, so that the
    transactions adding series to one study commit at nearly the same time: the counts and
    Modalities in Study kept in the study and patient rows (migration 005)
    hold every series, whichever association folded its counts first."""
    node = node_factory(workers=4, max_associations=8)
    modalities = ["CT", "MR", "NM", "PT"]
    studies = [gen_corpus.make_uid(0, "fold-study-%d" % k) for k in range(STUDIES)]
    per_sender = []
    for m in modalities:
        files = []
        for k, study in enumerate(studies):
            series = gen_corpus.make_uid(0, "fold-series-%d-%s" % (k, m))
            for i in range(2):
                files.append(gen_corpus.make_instance(
                    os.path.join(scu_dir, "fold-%d-%s-%d.dcm" % (k, m, i)), name="fold-%d-%s-%d" % (k, m, i),
                    patient_id="PN-FOLD", study_uid=study, series_uid=series, instance_number=i + 1,
                    modality=m)["path"])
        per_sender.append(files)
    runs = H.StorescuGroup(node.port, per_sender, scu_dir, aet="PNFOLD").wait()
    for r in runs:
        assert r.all_success(), r.summary()
    rows = node.query("SELECT study_uid, modalities, n_series, n_instances FROM study ORDER BY study_uid")
    assert [(r["study_uid"], r["modalities"], r["n_series"], r["n_instances"]) for r in rows] == \
        [(s, "CT\\MR\\NM\\PT", 4, 8) for s in sorted(studies)]
    [p] = node.query("SELECT n_studies, n_series, n_instances FROM patient")
    assert (p["n_studies"], p["n_series"], p["n_instances"]) == (STUDIES, 4 * STUDIES, 8 * STUDIES)
    [left] = node.query("SELECT (SELECT count(*) FROM study_count) + (SELECT count(*) FROM series_count)"
                        " + (SELECT count(*) FROM patient_count) AS n")
    assert left["n"] == 0, "shard rows left unfolded"


def _with_uid_bytes(dataset, tag, value):
    """The explicit VR LE dataset with the UI element `tag` (group, element)
    given the raw bytes `value` (padded to even length with NUL)."""
    if len(value) % 2:
        value += b"\0"
    head = struct.pack("<HH", *tag) + b"UI"
    at = dataset.index(head)
    (old_len,) = struct.unpack_from("<H", dataset, at + 6)
    return dataset[:at] + head + struct.pack("<H", len(value)) + value + dataset[at + 8 + old_len:]


def test_a_uid_with_a_nul_inside_is_refused(node, scu_dir):
    """A UID is the bytes it has: "UID<NUL>junk" in the command, or in the
    dataset and the command alike, is not the valid UID before the NUL
    (PS3.5 9.1): 0xC001, logged, nothing stored. Cut at the NUL (as dcmtk's
    strings are) both were stored under the first part, with success."""
    f = gen_corpus.make_instance(os.path.join(scu_dir, "nul.dcm"), name="nul")
    uid = f["sop_instance_uid"].encode()
    ds = rawscu.dataset_bytes(f["path"])
    a = rawscu.Association(node.host, node.port, timeout=15)
    try:
        a.associate("PNNUL", node.aet, f["sop_class_uid"])
        in_command = a.c_store(f["sop_class_uid"], uid + b"\0junk", ds, msg_id=1)
        both = a.c_store(f["sop_class_uid"], uid + b"\0junk",
                         _with_uid_bytes(ds, (0x0008, 0x0018), uid + b"\0junk"), msg_id=2)
        control = a.c_store(f["sop_class_uid"], uid, ds, msg_id=3)
        a.release()
    finally:
        a.close()
    assert in_command == 0xC001, "NUL in the command's UID: 0x%04X" % in_command
    assert both == 0xC001, "NUL in the dataset's and the command's UID: 0x%04X" % both
    assert control == H.SUCCESS, "control case: 0x%04X" % control
    assert node.count("instance") == 1
    assert_log(node, r"not a valid UID", what="the UID with a NUL")
    assert_storage_clean(node)


def test_a_query_uid_with_a_nul_inside_is_refused(node, scu_dir):
    """C-FIND with a Study Instance UID "1.2.3<NUL>9": a failure status, not
    a search for "1.2.3"."""
    study_root_find = "1.2.840.10008.5.1.4.1.2.2.1"
    identifier = (rawscu.explicit_element(0x0008, 0x0052, "CS", b"STUDY")
                  + rawscu.explicit_element(0x0020, 0x000D, "UI", b"1.2.3\x009")
                  + rawscu.explicit_element(0x0010, 0x0010, "PN", b""))
    a = rawscu.Association(node.host, node.port, timeout=15)
    try:
        a.associate("PNNULQ", node.aet, study_root_find)
        rsps = a.c_find(study_root_find, identifier, pc_id=1, msg_id=1)
        a.release()
    finally:
        a.close()
    statuses = [s for s, _ in rsps]
    assert len(statuses) == 1 and statuses[0] in (0xA900, 0xC000), statuses
