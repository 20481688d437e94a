"""C-MOVE and C-GET (issue 4): both information models at every level,
UID lists, the received datasets against the stored ones, conversion for a
receiver that accepts only implicit VR little endian, unknown and unusable
destinations, permissions, a missing file, cancel, a destination that
aborts mid-way, and flat memory while moving a few hundred instances.

What must arrive, in which syntax and with which statuses comes from the
corpus manifest (gen_corpus's record of what it wrote) and PS3.4 C.4.2 /
C.4.3, never from the node. C-MOVE goes through dcmtk's movescu to a
storescp the test starts; C-GET through getscu; the raw client in
retrieve_util is used for the exact Failed SOP Instance UID List, for C-GET
in each stored syntax (one presentation context per class and syntax),
cancel timing, and a second request on the same association.
"""

import os
import re
import tempfile
import time

import pydicom
import pytest

import findscu_util as F
import pacsnode_harness as H
import retrieve_util as R
from pacsnode_harness import gen_corpus

TS = gen_corpus.TS
MOVER = "MOVER"  # the requesting peer: allow = move, get, find


def uid(skey, sekey=None):
    if sekey is None:
        return gen_corpus.make_uid(0, "study", skey)
    return gen_corpus.make_uid(0, "series", skey, sekey)


def sop(corpus, skey, sekey, inum):
    """The SOP Instance UID of a generated instance, by its plan's names."""
    want = "generated/p"
    for e in corpus.entries:
        name = os.path.basename(e["path"])
        parts = name.split("_")
        if e["path"].startswith(want) and parts[1] == skey and parts[2] == sekey \
                and parts[3] == str(inum):
            return e["sop_instance_uid"]
    raise KeyError((skey, sekey, inum))


def foreign_study(corpus, basename):
    for e in corpus.entries:
        if e["path"] == "foreign/" + basename:
            return e["study_instance_uid"]
    raise KeyError(basename)


def peer(ae, port=104, allow="store"):
    return {"ae_title": ae, "host": "127.0.0.1", "port": port, "allow": allow}


def stop_and_check(node):
    rc = node.stop()
    problems = []
    found = node.sanitizer_reports()
    if found:
        problems.append("%s in node log %s:\n%s" % (", ".join(found), node.log_path,
                                                    H.tail(node.log_path, 60)))
    if rc not in (0, -15):
        problems.append("node exited with %r after SIGTERM; log %s:\n%s"
                        % (rc, node.log_path, H.tail(node.log_path)))
    if getattr(node, "leftovers", None):
        problems.append("node left processes %s running" % node.leftovers)
    return problems


def log_offset(node):
    return os.path.getsize(node.log_path)


def wait_log(node, offset, pattern, timeout=5.0):
    rx = re.compile(pattern, re.I)
    deadline = time.monotonic() + timeout
    while True:
        with open(node.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


WORKER_DIED = r"worker \d+ ended unexpectedly"


def worker_deaths(node, offset=0):
    with open(node.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [ln for ln in text.splitlines() if re.search(WORKER_DIED, ln)]


def assert_alive(node, offset=0):
    assert node.proc.poll() is None, "the node died; log:\n%s" % H.tail(node.log_path)
    died = worker_deaths(node, offset)
    assert not died, "a worker crashed: %s" % died
    r = H.echoscu(node.port, aet="PNECHO")
    assert r.ok, "C-ECHO after the retrieve failed:\n%s" % r.output


def expected_final(outcomes):
    n_fail = sum(1 for o in outcomes.values() if o == "fail")
    if n_fail == 0:
        return R.SUCCESS
    if n_fail == len(outcomes):
        return R.NO_SUBOPS
    return R.SUBOPS_WITH_FAILURES


# --------------------------------------------------------------------------
# The shared rig: one node per xdist worker holding the whole corpus, and
# its C-MOVE destinations


class Rig:
    pass


@pytest.fixture(scope="module")
def rig(pg_cluster, it_base, corpus):
    base, user = it_base
    d = tempfile.mkdtemp(prefix="retrieve-corpus-", dir=H.make_dir(os.path.join(base, "tests")))
    os.chmod(d, 0o755)
    r = Rig()
    r.dir = d
    r.scu = H.make_dir(os.path.join(d, "scu"))
    r.dests = {}
    node = None
    ok = False
    try:
        r.dests["DEST"] = R.Storescp(os.path.join(d, "dest"), aet="DEST", accept="all").start()
        r.dests["DESTI"] = R.Storescp(os.path.join(d, "desti"), aet="DESTI",
                                      accept="implicit").start()
        r.dests["REFUSER"] = R.Storescp(os.path.join(d, "refuser"), aet="REFUSER",
                                        accept="all", extra=["--refuse"]).start()
        r.dead_port = H.free_port()  # nothing listens there
        r.self_port = H.free_port()  # movescu +P listens there in one test
        peers = {
            "dest": peer("DEST", r.dests["DEST"].port),
            "desti": peer("DESTI", r.dests["DESTI"].port),
            "refuser": peer("REFUSER", r.dests["REFUSER"].port),
            "deadend": peer("DEADEND", r.dead_port),
            "mover": peer(MOVER, allow="move, get, find"),
            "nomove": peer("NOMOVE", allow="store, find"),
            "moveonly": peer("MOVEONLY", allow="move"),
            "getonly": peer("GETONLY", allow="get"),
            "self": peer("SELFMOVE", r.self_port, allow="move, store"),
        }
        dbname = "t_retrieve_corpus_%d" % os.getpid()
        pg_cluster.create_db(dbname)
        node = H.Node(pg_cluster, d, dbname, user, workers=2, peers=peers)
        node.start()
        run = H.storescu(node.port, corpus.paths(), r.scu, aet="PNCORPUS")
        assert run.all_success(), run.summary()
        r.node = node
        ok = True
        yield r
    finally:
        problems = stop_and_check(node) if node is not None else []
        for s in r.dests.values():
            s.stop()
        if problems or not ok:
            print("\npacsnode-it: retrieve rig kept in %s" % d)
        if problems:
            pytest.fail("retrieve rig (the node this module shares), at its teardown:\n"
                        + "\n\n".join(problems), pytrace=False)
        if node is not None and not problems:
            pg_cluster.drop_db(node.dbname)


@pytest.fixture
def dest(rig):
    """The accept-everything destination, emptied for this test. Afterwards:
    no worker of the shared node may have crashed meanwhile."""
    for s in rig.dests.values():
        assert s.alive(), "storescp %s died:\n%s" % (s.aet, H.tail(s.log_path))
        s.settle()
        s.mark()
    off = log_offset(rig.node)
    yield rig.dests["DEST"]
    time.sleep(0.1)  # the server logs a worker's death right after it
    died = worker_deaths(rig.node, off)
    with open(rig.node.log_path, "rb") as f:
        f.seek(off)
        text = f.read().decode("utf-8", "replace")
    found = [m for m in H.SANITIZER_MARKERS if m in text]
    if died or found:
        pytest.fail("the shared node, during this test: %s%s (log %s)" % (
            "worker crashed: %s " % died if died else "", ", ".join(found), rig.node.log_path),
            pytrace=False)


# --------------------------------------------------------------------------
# What each level case retrieves


def level_cases(corpus):
    """(id, model, level, keys, expected entries): every level of both
    models, with UID lists at the retrieve level (one with a UID that
    matches nothing) and instances of every stored syntax among them."""
    E = corpus.entries

    def where(f):
        return [e for e in E if f(e)]

    s01, s02, s03, s05, s05b, s06, s07 = (uid(k) for k in ("s01", "s02", "s03", "s05",
                                                           "s05b", "s06", "s07"))
    j2k = foreign_study(corpus, "JPEG2000.dcm")
    j2kl = foreign_study(corpus, "MR_small_jp2klossless.dcm")
    h31 = foreign_study(corpus, "chrH31.dcm")
    ct1a, ct1b = sop(corpus, "s01", "ct1", 1), sop(corpus, "s01", "ct1", 2)
    ct4a, ct4c = sop(corpus, "s06", "ct4", 1), sop(corpus, "s06", "ct4", 3)
    nomatch = "1.2.826.0.1.3680043.10.543.999.1"
    return [
        ("patient-PATIENT", "patient", "PATIENT", {"PatientID": "PN-0002"},
         where(lambda e: e["attrs"]["PatientID"] == "PN-0002")),
        ("patient-PATIENT-shared-id", "patient", "PATIENT", {"PatientID": "SHARED-42"},
         where(lambda e: e["attrs"]["PatientID"] == "SHARED-42")),  # both issuers match
        ("patient-STUDY-list", "patient", "STUDY",
         {"PatientID": "PN-0005", "StudyInstanceUID": [s05, s05b]},
         where(lambda e: e["study_instance_uid"] in (s05, s05b))),
        ("patient-SERIES", "patient", "SERIES",
         {"PatientID": "PN-0003", "StudyInstanceUID": s03, "SeriesInstanceUID": uid("s03", "pt1")},
         where(lambda e: e["series_instance_uid"] == uid("s03", "pt1"))),
        ("patient-IMAGE-list", "patient", "IMAGE",
         {"PatientID": "PN-0001", "StudyInstanceUID": s01,
          "SeriesInstanceUID": uid("s01", "ct1"), "SOPInstanceUID": [ct1a, ct1b]},
         where(lambda e: e["sop_instance_uid"] in (ct1a, ct1b))),
        ("study-STUDY-list", "study", "STUDY", {"StudyInstanceUID": [s01, s07, j2k, j2kl, h31]},
         where(lambda e: e["study_instance_uid"] in (s01, s07, j2k, j2kl, h31))),
        ("study-STUDY", "study", "STUDY", {"StudyInstanceUID": s03},
         where(lambda e: e["study_instance_uid"] == s03)),
        ("study-SERIES-list", "study", "SERIES",
         {"StudyInstanceUID": s02, "SeriesInstanceUID": [uid("s02", "mr1"), uid("s02", "mr2")]},
         where(lambda e: e["study_instance_uid"] == s02)),
        ("study-SERIES-list-nomatch", "study", "SERIES",
         {"StudyInstanceUID": s07, "SeriesInstanceUID": [uid("s07", "nm2"), nomatch]},
         where(lambda e: e["series_instance_uid"] == uid("s07", "nm2"))),
        ("study-IMAGE-list", "study", "IMAGE",
         {"StudyInstanceUID": s06, "SeriesInstanceUID": uid("s06", "ct4"),
          "SOPInstanceUID": [ct4a, ct4c]},
         where(lambda e: e["sop_instance_uid"] in (ct4a, ct4c))),
    ]


CASE_IDS = ["patient-PATIENT", "patient-PATIENT-shared-id", "patient-STUDY-list",
            "patient-SERIES", "patient-IMAGE-list", "study-STUDY-list", "study-STUDY",
            "study-SERIES-list", "study-SERIES-list-nomatch", "study-IMAGE-list"]


def case(corpus, case_id):
    for c in level_cases(corpus):
        if c[0] == case_id:
            return c
    raise KeyError(case_id)


def test_level_cases_cover_every_stored_syntax(corpus):
    """The cases below retrieve instances of every syntax in the corpus."""
    seen = {e["transfer_syntax_uid"] for c in level_cases(corpus) for e in c[4]}
    assert not set(TS.values()) - seen, sorted(set(TS.values()) - seen)
    for c in level_cases(corpus):
        assert c[4], "case %s selects nothing" % c[0]


# --------------------------------------------------------------------------
# C-MOVE


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_move(rig, dest, corpus, case_id):
    """movescu to a storescp that accepts every syntax: every instance
    arrives once, in its stored syntax, with the stored dataset; pending
    responses count the sub-operations; final 0x0000."""
    _, model, level, keys, entries = case(corpus, case_id)
    run = R.movescu(rig.node.port, model, level, keys, rig.scu, aet=MOVER, dest="DEST")
    dest.settle()
    problems = R.check_counts(run, len(entries))
    got, _ = R.check_instances(dest.stores(), dest.files(), entries, R.ACCEPT["all"],
                               originator=MOVER)
    problems += got
    reqs = set(dest.requests())
    if reqs != {(H.NODE_AET, "DEST")}:
        problems.append("sub-associations calling/called %r, wanted our AE title to DEST"
                        % sorted(reqs))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))
    assert len(run.pending) >= len(entries) - 1, "a pending response per sub-operation"


def test_move_converts_for_an_implicit_only_receiver(rig, dest, corpus):
    """Every study to a storescp accepting implicit VR little endian only:
    lossless (JPEG 14/SV1, JPEG-LS, RLE, deflated, explicit, big endian)
    arrive as implicit with the generator's pixel values; lossy ones
    decompressed; JPEG 2000 (no codec) count as failed: 0xB000 with
    exactly their UIDs in the Failed SOP Instance UID List."""
    desti = rig.dests["DESTI"]
    studies = sorted({e["study_instance_uid"] for e in corpus.entries})
    run = R.raw_move(rig.node.port, "study", "STUDY", {"StudyInstanceUID": studies},
                     dest="DESTI", calling=MOVER)
    desti.settle()
    problems, outcomes = R.check_instances(desti.stores(), desti.files(), corpus.entries,
                                           R.ACCEPT["implicit"], originator=MOVER)
    failed = sorted(s for s, o in outcomes.items() if o == "fail")
    assert len(failed) == 3, "corpus changed: JPEG 2000 instances %s" % failed
    assert {o for o in outcomes.values()} == {"same", "lossless", "lossy", "fail"}
    problems += R.check_counts(run, len(corpus.entries), failed=len(failed),
                               final_status=R.SUBOPS_WITH_FAILURES)
    if run.final is not None and sorted(run.final.failed_uids or []) != failed:
        problems.append("Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, failed))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_move_jpeg_lossless_to_implicit_with_movescu(rig, dest, corpus):
    """The issue's own case with dcmtk's movescu: a JPEG lossless (SV1 and
    process 14) series to the implicit-only storescp: 0x0000, implicit VR
    little endian, the pixel values the generator encoded."""
    desti = rig.dests["DESTI"]
    entries = [e for e in corpus.entries if e["series_instance_uid"] == uid("s05", "ct3")]
    assert {e["transfer_syntax_uid"] for e in entries} == {TS["jpeg_lossless"],
                                                          TS["jpeg_lossless_sv1"]}
    run = R.movescu(rig.node.port, "study", "SERIES",
                    {"StudyInstanceUID": uid("s05"), "SeriesInstanceUID": uid("s05", "ct3")},
                    rig.scu, aet=MOVER, dest="DESTI")
    desti.settle()
    problems = R.check_counts(run, len(entries))
    got, outcomes = R.check_instances(desti.stores(), desti.files(), entries,
                                      R.ACCEPT["implicit"])
    problems += got
    assert set(outcomes.values()) == {"lossless"}
    for path in desti.files().values():
        ts = R.received_syntax(path)
        if ts != TS["implicit"]:
            problems.append("%s received in %s" % (path, ts))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_move_only_jpeg2000_to_implicit_fails_all(rig, dest, corpus):
    """A study whose only instance cannot be converted: 0xA702, failed 1,
    nothing stored at the receiver."""
    desti = rig.dests["DESTI"]
    st = foreign_study(corpus, "MR_small_jp2klossless.dcm")
    entries = [e for e in corpus.entries if e["study_instance_uid"] == st]
    assert len(entries) == 1
    run = R.raw_move(rig.node.port, "study", "STUDY", {"StudyInstanceUID": st},
                     dest="DESTI", calling=MOVER)
    desti.settle()
    problems = R.check_counts(run, 1, failed=1, final_status=R.NO_SUBOPS)
    assert not desti.stores(), "storescp received %r" % desti.stores()
    if run.final is not None and run.final.failed_uids is not None:
        if run.final.failed_uids != [entries[0]["sop_instance_uid"]]:
            problems.append("Failed SOP Instance UID List %r" % run.final.failed_uids)
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_get_no_match_is_success_with_nothing_sent(rig, dest):
    run = R.getscu(rig.node.port, "study", "SERIES",
                   {"StudyInstanceUID": uid("s02"),
                    "SeriesInstanceUID": "1.2.826.0.1.3680043.10.543.999.3"}, rig.scu, aet=MOVER)
    assert run.final_status == R.SUCCESS, run.summary()
    assert (run.final.completed or 0, run.final.failed or 0, run.final.warning or 0) == (0, 0, 0)
    assert not run.stores and not run.files


def test_move_no_match_is_success_with_nothing_sent(rig, dest):
    """PS3.4 C.4.2.3.1: no match is no sub-operation: 0x0000, counts 0."""
    run = R.movescu(rig.node.port, "study", "STUDY",
                    {"StudyInstanceUID": "1.2.826.0.1.3680043.10.543.999.2"}, rig.scu,
                    aet=MOVER, dest="DEST")
    dest.settle()
    assert run.final_status == R.SUCCESS, run.summary()
    assert (run.final.completed or 0, run.final.failed or 0, run.final.warning or 0) == (0, 0, 0)
    assert not dest.stores()


def test_move_unknown_destination(rig, dest, corpus):
    """0xA801, no sub-operation, no connection to any configured receiver,
    a log line naming the destination."""
    off = log_offset(rig.node)
    before = {k: s.associations() for k, s in rig.dests.items()}
    run = R.movescu(rig.node.port, "study", "STUDY", {"StudyInstanceUID": uid("s01")},
                    rig.scu, aet=MOVER, dest="NOBODY")
    assert run.final_status == R.DESTINATION_UNKNOWN, run.summary()
    assert not run.pending, "pending responses before refusing: %r" % run.pending
    time.sleep(0.3)
    after = {k: s.associations() for k, s in rig.dests.items()}
    assert after == before, "a receiver was contacted: %r -> %r" % (before, after)
    assert wait_log(rig.node, off, r"NOBODY"), "no log line names the unknown destination"


@pytest.mark.parametrize("which", ["REFUSER", "DEADEND"])
def test_move_to_a_destination_that_refuses_or_is_unreachable(rig, dest, corpus, which):
    """The destination rejects the association (storescp --refuse) or
    nothing listens on its port: 0xA702 (unable to perform sub-operations),
    every sub-operation failed, the node logs it and goes on."""
    entries = [e for e in corpus.entries if e["study_instance_uid"] == uid("s02")]
    off = log_offset(rig.node)
    run = R.raw_move(rig.node.port, "study", "STUDY", {"StudyInstanceUID": uid("s02")},
                     dest=which, calling=MOVER)
    problems = R.check_counts(run, len(entries), failed=len(entries),
                              final_status=R.NO_SUBOPS)
    want = sorted(e["sop_instance_uid"] for e in entries)
    if run.final is not None and run.final.failed_uids is not None \
            and sorted(run.final.failed_uids) != want:
        problems.append("Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, want))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))
    assert wait_log(rig.node, off, which), "no log line names %s" % which
    if which == "REFUSER":
        rig.dests["REFUSER"].settle()
        assert not rig.dests["REFUSER"].stores()
    assert_alive(rig.node, off)


@pytest.mark.parametrize("calling,op", [("NOMOVE", "move"), ("GETONLY", "move"),
                                        ("NOMOVE", "get"), ("MOVEONLY", "get")])
def test_retrieve_without_permission_is_refused(rig, dest, corpus, calling, op):
    """A peer not allowed to move (get): 0x0124 Not authorized, nothing
    sent, a log line naming it."""
    off = log_offset(rig.node)
    keys = {"StudyInstanceUID": uid("s01")}
    if op == "move":
        run = R.movescu(rig.node.port, "study", "STUDY", keys, rig.scu, aet=calling,
                        dest="DEST")
        dest.settle()
        stores = dest.stores()
    else:
        run = R.getscu(rig.node.port, "study", "STUDY", keys, rig.scu, aet=calling)
        stores = run.stores
    assert run.final_status == R.NOT_AUTHORIZED, run.summary()
    assert not run.pending
    assert not stores, "instances were sent: %r" % stores
    line = wait_log(rig.node, off, r'"%s".*(refused|not allowed)' % calling)
    assert line, "no log line about the refused %s from %s" % (op, calling)


def test_move_and_get_allowed_by_their_own_right(rig, dest, corpus):
    """MOVEONLY may move, GETONLY may get (the counterpart of the refusals)."""
    entries = [e for e in corpus.entries if e["series_instance_uid"] == uid("s01", "ct1")]
    keys = {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": uid("s01", "ct1")}
    run = R.movescu(rig.node.port, "study", "SERIES", keys, rig.scu, aet="MOVEONLY",
                    dest="DEST")
    assert not R.check_counts(run, len(entries)), run.summary()
    run = R.getscu(rig.node.port, "study", "SERIES", keys, rig.scu, aet="GETONLY")
    assert not R.check_counts(run, len(entries)), run.summary()


def test_move_to_the_requester_itself(rig, dest, corpus):
    """The usual workstation set-up: movescu listening (+P) names itself as
    the destination; the node connects to the configured address of that
    AE title and movescu receives the series."""
    entries = [e for e in corpus.entries if e["series_instance_uid"] == uid("s02", "mr2")]
    outdir = H.make_dir(os.path.join(rig.scu, "self"))
    run = R.movescu(rig.node.port, "study", "SERIES",
                    {"StudyInstanceUID": uid("s02"), "SeriesInstanceUID": uid("s02", "mr2")},
                    rig.scu, aet="SELFMOVE", dest="SELFMOVE",
                    extra=["+P", str(rig.self_port), "+xa", "-od", outdir])
    problems = R.check_counts(run, len(entries))
    got, _ = R.check_instances(R._stores_from_log(run.output), R.files_by_sop(outdir), entries,
                               R.ACCEPT["all"], same_syntax=False)
    problems += got
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_two_moves_on_one_association(rig, dest, corpus):
    """Two C-MOVEs one after the other on the same association: both
    complete with their own counts and message IDs."""
    a = [e for e in corpus.entries if e["series_instance_uid"] == uid("s01", "ct1")]
    b = [e for e in corpus.entries if e["series_instance_uid"] == uid("s01", "sc1")]
    assoc = R.RetrieveAssociation("127.0.0.1", rig.node.port)
    try:
        assoc.associate(MOVER, H.NODE_AET, [(R.MOVE["study"], [TS["explicit"]])])
        runs = []
        for entries, se in ((a, "ct1"), (b, "sc1")):
            runs.append(assoc.retrieve(R.MOVE["study"], R.retrieve_dataset(
                "SERIES", {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": uid("s01", se)}),
                dest="DEST"))
        assoc.release()
    finally:
        assoc.close()
    dest.settle()
    problems = R.check_counts(runs[0], len(a)) + R.check_counts(runs[1], len(b))
    got, _ = R.check_instances(dest.stores(), dest.files(), a + b, R.ACCEPT["all"])
    problems += got
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("what,model,level,keys", [
    ("no StudyInstanceUID above the series", "study", "SERIES",
     {"SeriesInstanceUID": uid("s02", "mr1")}),
    ("no PatientID above the study", "patient", "STUDY", {"StudyInstanceUID": uid("s02")}),
    ("PATIENT level in Study Root", "study", "PATIENT", {"PatientID": "PN-0002"}),
    ("a wildcard in a UID", "study", "STUDY", {"StudyInstanceUID": "2.25.*"}),
    ("a list above the retrieve level", "study", "SERIES",
     {"StudyInstanceUID": [uid("s02"), uid("s07")], "SeriesInstanceUID": uid("s02", "mr1")}),
    ("no QueryRetrieveLevel", "study", None, {"StudyInstanceUID": uid("s02")}),
])
def test_move_with_a_bad_identifier_fails(rig, dest, what, model, level, keys):
    """PS3.4 C.4.2.2.1: unique keys only, one value above the retrieve
    level. Anything else: a failure status (0xA900 identifier does not
    match SOP class, or 0xCxxx unable to process), no sub-operation."""
    ds = R.retrieve_dataset(level or "STUDY", keys)
    if level is None:
        del ds.QueryRetrieveLevel
    assoc = R.RetrieveAssociation("127.0.0.1", rig.node.port)
    try:
        assoc.associate(MOVER, H.NODE_AET, [(R.MOVE[model], [TS["explicit"]])])
        run = assoc.retrieve(R.MOVE[model], ds, dest="DEST")
        assoc.release()
    finally:
        assoc.close()
    dest.settle()
    st = run.final_status
    assert st == 0xA900 or (st is not None and 0xC000 <= st <= 0xCFFF), \
        "%s: %s" % (what, run.summary())
    assert not run.pending and not dest.stores(), "%s: %s" % (what, run.summary())


def test_move_same_uid_twice_in_a_list_is_sent_once(rig, dest, corpus):
    """A UID list naming one instance twice: one sub-operation."""
    one = sop(corpus, "s01", "ct1", 3)
    entries = [corpus.by_sop[one]]
    run = R.movescu(rig.node.port, "study", "IMAGE",
                    {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": uid("s01", "ct1"),
                     "SOPInstanceUID": [one, one]}, rig.scu, aet=MOVER, dest="DEST")
    dest.settle()
    problems = R.check_counts(run, 1)
    got, _ = R.check_instances(dest.stores(), dest.files(), entries, R.ACCEPT["all"])
    problems += got
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_get_without_role_selection_sends_nothing(rig, dest, corpus):
    """PS3.4 C.4.3.1 / PS3.7 D.3.3.4: the C-STOREs of a C-GET go on contexts
    where the SCU took the SCP role. An SCU that proposed the storage
    context without role selection gets no C-STORE-RQ (which it could not
    accept): every sub-operation fails."""
    entries = [e for e in corpus.entries if e["series_instance_uid"] == uid("s01", "ct1")]
    pairs = sorted({(e["sop_class_uid"], e["transfer_syntax_uid"]) for e in entries})
    assoc = R.RetrieveAssociation("127.0.0.1", rig.node.port)
    try:
        ctx = [(R.GET["study"], [TS["explicit"]])] + R.get_contexts(pairs)
        assoc.associate(MOVER, H.NODE_AET, ctx, roles=())
        run = assoc.retrieve(R.GET["study"], R.retrieve_dataset(
            "SERIES", {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": uid("s01", "ct1")}))
        assoc.release()
    finally:
        assoc.close()
    assert not run.stores, "C-STORE-RQs on contexts without the SCP role: %r" % run.stores
    problems = R.check_counts(run, len(entries), failed=len(entries), final_status=R.NO_SUBOPS)
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_get_without_a_storage_context_for_the_class_fails(rig, dest, corpus):
    """C-GET of an MR series by an SCU that offered only a CT storage
    context: every sub-operation fails (0xA702), each UID listed."""
    entries = [e for e in corpus.entries if e["series_instance_uid"] == uid("s02", "mr1")]
    pairs = [(gen_corpus.SOP_CLASS["CT"], TS["explicit"])]
    run = R.raw_get(rig.node.port, "study", "SERIES",
                    {"StudyInstanceUID": uid("s02"), "SeriesInstanceUID": uid("s02", "mr1")},
                    pairs, calling=MOVER)
    problems = R.check_counts(run, len(entries), failed=len(entries), final_status=R.NO_SUBOPS)
    want = sorted(e["sop_instance_uid"] for e in entries)
    if run.final is not None and run.final.failed_uids is not None \
            and sorted(run.final.failed_uids) != want:
        problems.append("Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, want))
    assert not run.stores
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


# --------------------------------------------------------------------------
# C-GET


GETSCU_ACCEPTS = [TS["explicit"], TS["big"], TS["implicit"]]  # getscu's default proposal


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_get(rig, dest, corpus, case_id):
    """getscu (proposing uncompressed syntaxes only): every instance
    arrives once in its output directory, converted where needed with the
    same attributes and the original (or decoded) pixels; JPEG 2000 fails.
    Final status and counts from the outcomes."""
    _, model, level, keys, entries = case(corpus, case_id)
    run = R.getscu(rig.node.port, model, level, keys, rig.scu, aet=MOVER)
    # getscu offers one context per class with three syntaxes: the node
    # picks one, so an uncompressed instance may come in another of them.
    problems, outcomes = R.check_instances(run.stores, run.files, entries, GETSCU_ACCEPTS,
                                           same_syntax=False)
    n_fail = sum(1 for o in outcomes.values() if o == "fail")
    problems += R.check_counts(run, len(entries), failed=n_fail,
                               final_status=expected_final(outcomes))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


@pytest.mark.parametrize("model", ["patient", "study"])
def test_get_in_stored_syntaxes(rig, dest, corpus, model):
    """A C-GET SCU proposing one storage context per (class, stored
    syntax), with the SCP role: every instance of every study arrives in
    the syntax it is stored in, dataset identical; final 0x0000."""
    pairs = [(e["sop_class_uid"], e["transfer_syntax_uid"]) for e in corpus.entries]
    outdir = H.make_dir(os.path.join(rig.scu, "rawget-%s" % model))
    if model == "study":
        keys = {"StudyInstanceUID": sorted({e["study_instance_uid"] for e in corpus.entries})}
        level, entries = "STUDY", corpus.entries
    else:
        keys = {"PatientID": "PN-0007"}
        level = "PATIENT"
        entries = [e for e in corpus.entries if e["attrs"]["PatientID"] == "PN-0007"]
    run = R.raw_get(rig.node.port, model, level, keys, pairs, calling=MOVER, outdir=outdir)
    files = {s["sop_uid"]: s["path"] for s in run.stores if "path" in s}
    problems, _ = R.check_instances(run.stores, files, entries, R.ACCEPT["all"])
    problems += R.check_counts(run, len(entries))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_get_converts_for_an_implicit_only_requester(rig, dest, corpus):
    """C-GET whose SCU accepts implicit VR little endian only (one context
    per class): lossless instances arrive as implicit with the original
    pixels, lossy ones decompressed, JPEG 2000 in the Failed SOP Instance
    UID List of a 0xB000."""
    pairs = [(c, TS["implicit"]) for c in sorted({e["sop_class_uid"] for e in corpus.entries})]
    outdir = H.make_dir(os.path.join(rig.scu, "rawget-implicit"))
    studies = sorted({e["study_instance_uid"] for e in corpus.entries})
    run = R.raw_get(rig.node.port, "study", "STUDY", {"StudyInstanceUID": studies}, pairs,
                    calling=MOVER, outdir=outdir)
    files = {s["sop_uid"]: s["path"] for s in run.stores if "path" in s}
    problems, outcomes = R.check_instances(run.stores, files, corpus.entries,
                                           R.ACCEPT["implicit"])
    failed = sorted(s for s, o in outcomes.items() if o == "fail")
    problems += R.check_counts(run, len(corpus.entries), failed=len(failed),
                               final_status=R.SUBOPS_WITH_FAILURES)
    if run.final is not None and sorted(run.final.failed_uids or []) != failed:
        problems.append("Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, failed))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


@pytest.mark.parametrize("skey", ["s02", "s05"])
def test_get_uncompressed_only_with_getscu(rig, dest, corpus, skey):
    """getscu +xi: storage contexts with uncompressed syntaxes only (dcmtk
    3.6.7's getscu then proposes explicit VR little endian alone, whatever
    its help says): a study of JPEG (lossless and lossy) and JPEG-LS
    instances arrives decompressed in what it proposed, lossless pixels
    intact, final 0x0000."""
    entries = [e for e in corpus.entries if e["study_instance_uid"] == uid(skey)]
    run = R.getscu(rig.node.port, "study", "STUDY", {"StudyInstanceUID": uid(skey)}, rig.scu,
                   aet=MOVER, extra=["+xi"])
    cls = R.DCMTK_CLASS_NAMES[entries[0]["sop_class_uid"]]
    offered = R.proposed_syntaxes(run.output, cls)
    assert offered and set(offered) <= R.UNCOMPRESSED, "getscu +xi proposed %r" % offered
    problems, outcomes = R.check_instances(run.stores, run.files, entries, offered)
    assert "lossless" in outcomes.values() and "same" not in outcomes.values()
    problems += R.check_counts(run, len(entries))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


def test_get_jpeg_lossless_with_getscu_preferring_it(rig, dest, corpus):
    """getscu +xs (JPEG lossless SV1 first, uncompressed as fallback, in one
    context): the node accepts the SCU's preferred SV1, so the SV1 instance
    comes as it is and the process 14 one re-encoded as SV1 without loss;
    the pixels are the generator's either way."""
    entries = [e for e in corpus.entries if e["series_instance_uid"] == uid("s05", "ct3")]
    run = R.getscu(rig.node.port, "study", "SERIES",
                   {"StudyInstanceUID": uid("s05"), "SeriesInstanceUID": uid("s05", "ct3")},
                   rig.scu, aet=MOVER, extra=["+xs"])
    accepts = R.proposed_syntaxes(run.output, "CTImageStorage")
    assert accepts[0] == TS["jpeg_lossless_sv1"] and set(accepts[1:]) <= R.UNCOMPRESSED, accepts
    problems, outcomes = R.check_instances(run.stores, run.files, entries, accepts,
                                           same_syntax=False)
    assert sorted(outcomes.values()) == ["lossless", "same"]
    problems += R.check_counts(run, len(entries))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))


# --------------------------------------------------------------------------
# Tests with their own node: missing files, cancel, aborting receivers,
# memory


def small_series(directory, n, tag):
    """n small explicit VR LE CT instances of one series; manifest-like
    entries (with "abspath")."""
    study = gen_corpus.make_uid(0, tag, "study")
    series = gen_corpus.make_uid(0, tag, "series")
    out = []
    for i in range(1, n + 1):
        path = os.path.join(directory, "%s-%04d.dcm" % (tag, i))
        e = gen_corpus.make_instance(path, name="%s-%d" % (tag, i), patient_id="PN-" + tag,
                                     study_uid=study, series_uid=series, instance_number=i)
        e["abspath"] = path
        out.append(e)
    return out


@pytest.fixture
def own_dest(testdir):
    started = []

    def make(aet="DEST", accept="all", extra=()):
        s = R.Storescp(os.path.join(testdir, "storescp-%s" % aet.lower()), aet=aet,
                       accept=accept, extra=extra)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def raw_scps():
    started = []

    def make(**kw):
        s = R.RawStoreSCP(**kw).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def test_missing_and_unreadable_files(node_factory, own_dest, corpus, scu_dir):
    """One stored file deleted, one overwritten with garbage, one cut off
    inside its File Meta Information, one replaced by the file of another
    instance (its bytes would be sent as they are, so the node must see the
    swap): the move ends 0xB000 with exactly those four UIDs in the Failed
    SOP Instance UID List, the others arrive intact, an error line names
    each, the node lives on; the same for C-GET."""
    d = own_dest("DEST")
    node = node_factory(peers={"dest": peer("DEST", d.port), "mover": peer(MOVER, allow="move, get")})
    entries = [e for e in corpus.entries if e["study_instance_uid"] in (uid("s02"), uid("s07"))]
    run = H.storescu(node.port, corpus.paths(entries), scu_dir)
    assert run.all_success(), run.summary()
    missing = sop(corpus, "s02", "mr1", 2)
    garbage = sop(corpus, "s07", "mr4", 1)
    others = [e["sop_instance_uid"] for e in entries if e["sop_instance_uid"] not in (missing, garbage)]
    cut, swapped, donor = others[0], others[1], others[2]
    rows = {r["sop_uid"]: r["path"] for r in node.query("SELECT sop_uid, path FROM instance")}
    os.unlink(os.path.join(node.storage, rows[missing]))
    with open(os.path.join(node.storage, rows[garbage]), "r+b") as f:
        f.truncate(0)
        f.write(b"this is not a DICOM file at all\n" * 4)
    with open(os.path.join(node.storage, rows[cut]), "r+b") as f:
        f.truncate(200)
    with open(os.path.join(node.storage, rows[donor]), "rb") as f:
        donor_bytes = f.read()
    with open(os.path.join(node.storage, rows[swapped]), "wb") as f:
        f.write(donor_bytes)
    bad = sorted([missing, garbage, cut, swapped])
    good = [e for e in entries if e["sop_instance_uid"] not in bad]
    keys = {"StudyInstanceUID": [uid("s02"), uid("s07")]}

    off = log_offset(node)
    run = R.movescu(node.port, "study", "STUDY", keys, scu_dir, aet=MOVER, dest="DEST")
    d.settle()
    problems = R.check_counts(run, len(entries), failed=len(bad),
                              final_status=R.SUBOPS_WITH_FAILURES)
    if run.final is not None and sorted(run.final.failed_uids or []) != bad:
        problems.append("movescu: Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, bad))
    got, _ = R.check_instances(d.stores(), d.files(), good, R.ACCEPT["all"])
    problems += got
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))
    for u in bad:
        assert wait_log(node, off, r" error: .*%s|%s.* error" % (u, u)), \
            "no error line names %s:\n%s" % (u, H.tail(node.log_path))
    assert wait_log(node, off, r" error: .*%s: file .* holds another instance" % swapped), \
        "the swapped file is not reported as such:\n%s" % H.tail(node.log_path)
    assert_alive(node)

    pairs = [(e["sop_class_uid"], e["transfer_syntax_uid"]) for e in entries]
    outdir = H.make_dir(os.path.join(scu_dir, "rawget"))
    run = R.raw_get(node.port, "study", "STUDY", keys, pairs, calling=MOVER, outdir=outdir)
    files = {s["sop_uid"]: s["path"] for s in run.stores if "path" in s}
    problems = R.check_counts(run, len(entries), failed=len(bad), final_status=R.SUBOPS_WITH_FAILURES)
    if run.final is not None and sorted(run.final.failed_uids or []) != bad:
        problems.append("C-GET: Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, bad))
    got, _ = R.check_instances(run.stores, files, good, R.ACCEPT["all"])
    problems += got
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))
    assert_alive(node)


N_CANCEL = 30


def test_move_cancel(node_factory, raw_scps, scu_dir):
    """movescu --cancel 1 while a slow destination takes 0.2 s per
    instance: 0xFE00 with the counts adding up to the total, some still
    remaining, and only the completed ones received."""
    slow = raw_scps(aet="SLOWDEST", delay=0.2)
    node = node_factory(peers={"slow": peer("SLOWDEST", slow.port),
                               "mover": peer(MOVER, allow="move, get")})
    entries = small_series(scu_dir, N_CANCEL, "cancel")
    run = H.storescu(node.port, [e["path"] for e in entries], scu_dir)
    assert run.all_success(), run.summary()
    t0 = time.monotonic()
    run = R.movescu(node.port, "study", "STUDY",
                    {"StudyInstanceUID": entries[0]["study_instance_uid"]}, scu_dir,
                    aet=MOVER, dest="SLOWDEST", extra=["--cancel", "1"])
    took = time.monotonic() - t0
    f = run.final
    assert f is not None and f.status == R.CANCEL, run.summary()
    assert None not in (f.completed, f.failed, f.warning), run.summary()
    remaining = f.remaining or 0
    assert f.completed + f.failed + f.warning + remaining == N_CANCEL, run.summary()
    assert remaining > 0, "cancel did not stop the sub-operations: %r (%.1f s)" % (f, took)
    time.sleep(0.3)
    assert len(slow.stores) == f.completed + f.warning, (slow.stores, f)
    assert not slow.errors, slow.errors
    assert_alive(node)


def test_get_cancel_then_the_association_goes_on(node_factory, scu_dir):
    """C-CANCEL after the first pending C-GET response while the SCU takes
    0.1 s per C-STORE: 0xFE00, counts adding up, remaining > 0, as many
    C-STOREs as sub-operations done; then another C-GET on the same
    association succeeds."""
    node = node_factory(peers={"mover": peer(MOVER, allow="move, get")})
    entries = small_series(scu_dir, N_CANCEL, "gcancel")
    run = H.storescu(node.port, [e["path"] for e in entries], scu_dir)
    assert run.all_success(), run.summary()
    pairs = [(entries[0]["sop_class_uid"], TS["explicit"])]
    assoc = R.RetrieveAssociation("127.0.0.1", node.port)
    try:
        ctx = [(R.GET["study"], [TS["explicit"]])] + R.get_contexts(pairs)
        assoc.associate(MOVER, H.NODE_AET, ctx, roles={c for c, _ in pairs})
        run = assoc.retrieve(R.GET["study"], R.retrieve_dataset(
            "STUDY", {"StudyInstanceUID": entries[0]["study_instance_uid"]}),
            cancel_after=1, store_delay=0.1)
        f = run.final
        assert f.status == R.CANCEL, run.summary()
        remaining = f.remaining or 0
        assert f.completed + f.failed + f.warning + remaining == N_CANCEL, run.summary()
        assert remaining > 0, run.summary()
        assert len(run.stores) == f.completed + f.failed + f.warning, (len(run.stores), f)
        one = entries[-1]
        run2 = assoc.retrieve(R.GET["study"], R.retrieve_dataset(
            "IMAGE", {"StudyInstanceUID": one["study_instance_uid"],
                      "SeriesInstanceUID": one["series_instance_uid"],
                      "SOPInstanceUID": one["sop_instance_uid"]}))
        assert not R.check_counts(run2, 1), run2.summary()
        assert [s["sop_uid"] for s in run2.stores] == [one["sop_instance_uid"]]
        assoc.release()
    finally:
        assoc.close()
    assert_alive(node)


def test_move_destination_aborts_mid_way(node_factory, raw_scps, scu_dir):
    """The destination aborts the association on its 4th C-STORE-RQ: the
    move ends 0xB000; completed = what it acknowledged, every other
    instance failed and listed; the node lives on."""
    n = 12
    aborter = raw_scps(aet="ABORTER", abort_after=3)
    node = node_factory(peers={"aborter": peer("ABORTER", aborter.port),
                               "mover": peer(MOVER, allow="move, get")})
    entries = small_series(scu_dir, n, "abort")
    run = H.storescu(node.port, [e["path"] for e in entries], scu_dir)
    assert run.all_success(), run.summary()
    off = log_offset(node)
    run = R.raw_move(node.port, "study", "STUDY",
                     {"StudyInstanceUID": entries[0]["study_instance_uid"]}, dest="ABORTER",
                     calling=MOVER)
    acked = {s["sop_uid"] for s in aborter.stores}
    assert aborter.aborted >= 1, "the destination never aborted"
    assert len(acked) >= 3
    problems = R.check_counts(run, n, completed=len(acked), failed=n - len(acked),
                              final_status=R.SUBOPS_WITH_FAILURES)
    want = sorted({e["sop_instance_uid"] for e in entries} - acked)
    if run.final is not None and sorted(run.final.failed_uids or []) != want:
        problems.append("Failed SOP Instance UID List %r, wanted %r"
                        % (run.final.failed_uids, want))
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))
    assert wait_log(node, off, r"C-MOVE"), "no log line about the move"
    assert_alive(node)


def test_requester_aborts_mid_move(node_factory, raw_scps, scu_dir):
    """The requester aborts its association after the first pending
    response: what happens to the sub-operations is undefined (PS3.4
    C.4.2.3.1 note 2), but the node must stop sending soon, stay up, and
    keep its worker."""
    slow = raw_scps(aet="SLOWDEST", delay=0.1)
    node = node_factory(peers={"slow": peer("SLOWDEST", slow.port),
                               "mover": peer(MOVER, allow="move, get")})
    entries = small_series(scu_dir, N_CANCEL, "rqabort")
    run = H.storescu(node.port, [e["path"] for e in entries], scu_dir)
    assert run.all_success(), run.summary()
    off = log_offset(node)
    assoc = R.RetrieveAssociation("127.0.0.1", node.port)
    try:
        assoc.associate(MOVER, H.NODE_AET, [(R.MOVE["study"], [TS["explicit"]])])

        def abort(n, rsp):
            assoc.abort()
            raise StopIteration
        with pytest.raises((StopIteration, OSError)):
            assoc.retrieve(R.MOVE["study"], R.retrieve_dataset(
                "STUDY", {"StudyInstanceUID": entries[0]["study_instance_uid"]}),
                dest="SLOWDEST", on_pending=abort)
    finally:
        assoc.close()
    deadline = time.monotonic() + 10
    n = -1
    while time.monotonic() < deadline and n != len(slow.stores):
        n = len(slow.stores)
        time.sleep(0.5)
    assert len(slow.stores) < N_CANCEL, "the node sent the whole study to an absent requester"
    assert_alive(node, off)


def test_get_with_the_smallest_pdu(node_factory, scu_dir):
    """An SCU that takes PDUs of at most 4,096 bytes (dcmtk's minimum):
    instances of 8 to 128 KiB, sent as they lie on disk, come in P-DATA-TF
    PDUs that never exceed it (PS3.8 D.1: the maximum length bounds the
    PDU's variable field) and arrive with their datasets identical."""
    node = node_factory(peers={"mover": peer(MOVER, allow="move, get")})
    src = H.make_dir(os.path.join(scu_dir, "pdu"))
    study = gen_corpus.make_uid(0, "pdu", "study")
    series = gen_corpus.make_uid(0, "pdu", "series")
    tmpl_path = os.path.join(src, "template.dcm")
    gen_corpus.make_instance(tmpl_path, name="pdu-tmpl", patient_id="PN-PDU", study_uid=study, series_uid=series)
    sent = {}
    with gen_corpus.quiet_pydicom():
        ds = pydicom.dcmread(tmpl_path)
        for i, side in enumerate((64, 101, 256)):
            u = gen_corpus.make_uid(0, "pdu", "sop", str(i))
            ds.SOPInstanceUID = u
            ds.file_meta.MediaStorageSOPInstanceUID = u
            ds.Rows = ds.Columns = side
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            ds.PixelData = bytes((7 * k) & 0xFF for k in range(side * side * 2))
            ds["PixelData"].VR = "OW"
            path = os.path.join(src, "p%d.dcm" % i)
            ds.save_as(path, write_like_original=False)
            sent[u] = path
    os.unlink(tmpl_path)
    run = H.storescu(node.port, list(sent.values()), scu_dir)
    assert run.all_success(), run.summary(only_problems=True)

    with gen_corpus.quiet_pydicom():
        pairs = sorted({(pydicom.dcmread(p).SOPClassUID, pydicom.dcmread(p).file_meta.TransferSyntaxUID)
                        for p in sent.values()})
    outdir = H.make_dir(os.path.join(scu_dir, "got"))
    run = R.raw_get(node.port, "study", "STUDY", {"StudyInstanceUID": study}, pairs,
                    calling=MOVER, outdir=outdir, max_pdu=4096)
    problems = R.check_counts(run, len(sent))
    got = {s["sop_uid"]: s["path"] for s in run.stores if "path" in s}
    assert sorted(got) == sorted(sent), run.summary()
    with gen_corpus.quiet_pydicom():
        for u, path in sent.items():
            a, b = pydicom.dcmread(path), pydicom.dcmread(got[u])
            if a != b:
                problems.append("%s: dataset differs" % u)
    assert not problems, "%s\n%s" % (run.summary(), "\n".join(problems))
    assert 0 < run.largest_pdata <= 4096, run.largest_pdata


def test_move_streams_instances(node_factory, own_dest, scu_dir):
    """240 instances of 512 KiB (120 MiB) moved to a storescp that discards
    them: no worker's resident memory grows by more than 40 MiB, so the
    study is never held in memory."""
    n, rows, cols = 240, 512, 512
    d = own_dest("SINK", extra=["--ignore"])
    node = node_factory(peers={"sink": peer("SINK", d.port),
                               "mover": peer(MOVER, allow="move, get")})
    src = H.make_dir(os.path.join(scu_dir, "big"))
    tmpl_path = os.path.join(src, "template.dcm")
    study = gen_corpus.make_uid(0, "stream", "study")
    series = gen_corpus.make_uid(0, "stream", "series")
    gen_corpus.make_instance(tmpl_path, name="stream-tmpl", patient_id="PN-STREAM",
                             study_uid=study, series_uid=series)
    with gen_corpus.quiet_pydicom():
        ds = pydicom.dcmread(tmpl_path)
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, 16, 12, 11
        ds.PixelData = (bytes(range(256)) * (rows * cols * 2 // 256))
        ds["PixelData"].VR = "OW"
        paths = []
        for i in range(n):
            u = gen_corpus.make_uid(0, "stream", "sop", str(i))
            ds.SOPInstanceUID = u
            ds.file_meta.MediaStorageSOPInstanceUID = u
            ds.InstanceNumber = str(i + 1)
            p = os.path.join(src, "s%04d.dcm" % i)
            ds.save_as(p, write_like_original=False)
            paths.append(p)
    os.unlink(tmpl_path)
    run = H.storescu(node.port, paths, scu_dir)
    assert run.all_success(), run.summary(only_problems=True)
    for p in paths:
        os.unlink(p)
    with F.RssSampler(node.pid, period=0.01) as rss:
        run = R.movescu(node.port, "study", "STUDY", {"StudyInstanceUID": study}, scu_dir,
                        aet=MOVER, dest="SINK", timeout=300)
    assert not R.check_counts(run, n), run.summary()
    d.settle()
    assert len(d.stores()) == n
    growth = {pid: rss.peak[pid] - rss.first[pid] for pid in rss.peak}
    assert rss.samples >= 5 and growth, "no samples of the workers' memory"
    worst = max(growth.values())
    print("worker RSS growth while moving (KiB): %r over %d samples" % (growth, rss.samples))
    assert worst < 40 * 1024, "a worker grew by %d KiB while moving %d MiB: %r" % (
        worst, n * rows * cols * 2 >> 20, growth)
