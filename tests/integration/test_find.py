"""C-FIND (issue 3, docs/find.md): both information models at every level,
every matching kind, response contents, computed attributes, character
sets, rule violations, C-CANCEL, and a 100,000-match query in flat memory.

Expected answers come from the corpus manifest (gen_corpus's record of what
it sent) through findscu_util.Model, never from the node or its database.
Most queries go through dcmtk's findscu; the raw client (findscu_util.find)
is used where the exact bytes matter (VRs, Error Comment, cancel timing,
100,000 responses).
"""

import os
import re
import tempfile
import time

import pydicom
import pytest

import findscu_util as F
import pacsnode_harness as H
from pacsnode_harness import gen_corpus

P, S = F.PATIENT_ROOT, F.STUDY_ROOT


def uid(skey, sekey=None):
    """A generated study's (or series') UID, from the plan's own names."""
    if sekey is None:
        return gen_corpus.make_uid(0, "study", skey)
    return gen_corpus.make_uid(0, "series", skey, sekey)


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def model(corpus):
    return F.Model(corpus.entries)


def _stop_and_check(node):
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


@pytest.fixture(scope="module")
def cnode(pg_cluster, it_base, corpus):
    """One node per xdist worker holding the whole corpus (stored once with
    storescu), shared by the read-only query tests of this module."""
    base, user = it_base
    d = tempfile.mkdtemp(prefix="find-corpus-", dir=H.make_dir(os.path.join(base, "tests")))
    os.chmod(d, 0o755)
    dbname = "t_find_corpus_%d" % os.getpid()
    pg_cluster.create_db(dbname)
    node = H.Node(pg_cluster, d, dbname, user, workers=2)
    try:
        node.start()
        run = H.storescu(node.port, corpus.paths(), H.make_dir(os.path.join(d, "scu")),
                         aet="PNCORPUS")
        assert run.all_success(), run.summary()
    except BaseException:
        node.stop()
        print("\npacsnode-it: corpus node kept in %s" % d)
        raise
    yield node
    problems = _stop_and_check(node)
    if problems:
        print("\npacsnode-it: corpus node kept in %s (database %s)" % (d, dbname))
        pytest.fail("\n\n".join(problems), pytrace=False)
    pg_cluster.drop_db(dbname)


def log_offset(node):
    return os.path.getsize(node.log_path)


def new_log(node, offset):
    with open(node.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def wait_log(node, offset, pattern, timeout=3.0):
    rx = re.compile(pattern, re.I)
    deadline = time.monotonic() + timeout
    while True:
        for line in new_log(node, offset).splitlines():
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Checking a response set against the model


def assert_charset_present(ds, where):
    """Non-ASCII text needs Specific Character Set in the same response."""
    if "SpecificCharacterSet" in ds:
        return
    for tag in list(ds.keys()):
        el = ds.get_item(tag)
        v = el.value
        if isinstance(v, (bytes, bytearray)):
            bad = any(b > 0x7F for b in v)
        else:
            bad = any(ord(c) > 0x7F for c in str(v if v is not None else ""))
        if bad:
            raise AssertionError("%s: %s holds non-ASCII text %r but the response has no "
                                 "Specific Character Set" % (where, tag, v))


def check_responses(model, level, keys, responses, want, where=""):
    """Responses (pydicom datasets) against the expected entities: the same
    set, every requested key present, with the manifest's value for keys at
    or above the level, the computed value for computed keys."""
    got = {}
    for ds in responses:
        k = F.response_key(level, ds)
        assert k not in got, "%s: %r answered twice" % (where, k)
        got[k] = ds
    want_keys = {e.key for e in want}
    assert set(got) == want_keys, "%s: missing %s, unexpected %s" % (
        where, sorted(map(str, want_keys - set(got))), sorted(map(str, set(got) - want_keys)))
    upto = F.LEVELS[:F.LEVELS.index(level) + 1]
    by_key = {e.key: e for e in want}
    problems = []
    for k, ds in got.items():
        e = by_key[k]
        name = "%s %s" % (level, k)
        assert_charset_present(ds, name)
        if str(ds.get("QueryRetrieveLevel", "")).strip() != level:
            problems.append("%s: QueryRetrieveLevel %r" % (name, ds.get("QueryRetrieveLevel")))
        if ("RetrieveAETitle" in keys or "RetrieveAETitle" in ds) and \
                str(ds.get("RetrieveAETitle", "")).strip() != H.NODE_AET:
            problems.append("%s: RetrieveAETitle %r" % (name, ds.get("RetrieveAETitle")))
        for kw in keys:
            if kw not in ds:
                problems.append("%s: requested key %s missing" % (name, kw))
                continue
            if kw == "InstanceAvailability":
                if str(ds.InstanceAvailability).strip() != "ONLINE":
                    problems.append("%s: InstanceAvailability %r" % (name,
                                                                     ds.InstanceAvailability))
                continue
            if kw in F.COMPUTED:
                want_v = model.computed(e, kw)
                v = ds.get(kw)
                if kw in ("ModalitiesInStudy", "SOPClassesInStudy"):
                    vals = [] if v in (None, "") else (
                        [str(x) for x in v] if isinstance(v, pydicom.multival.MultiValue)
                        else [str(v)])
                    if sorted(vals) != want_v:
                        problems.append("%s: %s %r, want %r" % (name, kw, vals, want_v))
                elif v in (None, "") or int(v) != want_v:
                    problems.append("%s: %s %r, want %r" % (name, kw, v, want_v))
                continue
            try:
                klevel = F.level_of(kw)
            except KeyError:
                continue
            if klevel not in upto:
                if ds[kw].value not in (None, "", b""):
                    problems.append("%s: %s (below the level) returned %r" % (name, kw,
                                                                            ds[kw].value))
                continue
            got_v = F.normalise(kw, ds[kw].value if ds[kw].value != "" else None)
            want_v = e.value(kw)
            if F.KIND.get(kw) == "float" and got_v is not None and want_v is not None:
                ok = abs(got_v - want_v) < 1e-9
            else:
                ok = got_v == want_v
            if not ok:
                problems.append("%s: %s %r, want %r" % (name, kw, got_v, want_v))
    assert not problems, "%s:\n  %s" % (where, "\n  ".join(problems))


def do_find(node, workdir, root, level, keys, charset=None, **kw):
    ds = F.query_dataset(level, keys, charset)
    return F.findscu(node.port, ds, workdir, model=root, **kw)


def assert_found(model, node, workdir, root, level, keys, charset=None, count=None):
    want = model.expect(level, {k: v for k, v in keys.items()})
    if count is not None:
        assert len(want) == count, "test bug: the manifest gives %d matches, the test says %d" \
            % (len(want), count)
    run = do_find(node, workdir, root, level, keys, charset)
    assert run.final == F.SUCCESS, run.summary()
    assert len(run.pending) == len(run.responses) == len(want), run.summary()
    # every key here is one the node matches or computes: 0xFF00, not 0xFF01
    assert set(run.pending) <= {F.PENDING}, run.summary()
    check_responses(model, level, keys, run.responses, want, where=run.outdir)
    return run


# --------------------------------------------------------------------------
# Levels of both models

PATIENT_RETURN = {k: "" for k in F.PATIENT_KEYS}
STUDY_RETURN = {k: "" for k in F.STUDY_KEYS}
SERIES_RETURN = {k: "" for k in F.SERIES_KEYS}
IMAGE_RETURN = {k: "" for k in ["SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows",
                                "Columns", "PhotometricInterpretation", "ImageType",
                                "SliceThickness", "ContentDate", "ContentTime",
                                "NumberOfFrames"]}


def merged(*dicts, **kw):
    out = {}
    for d in dicts:
        out.update(d)
    out.update(kw)
    return out


LEVEL_CASES = [
    ("P-PATIENT-all", P, "PATIENT",
     merged(PATIENT_RETURN, NumberOfPatientRelatedStudies="", NumberOfPatientRelatedSeries="",
            NumberOfPatientRelatedInstances=""), 23),
    ("P-STUDY", P, "STUDY",
     merged(STUDY_RETURN, PatientID="PN-0005", PatientName="", NumberOfStudyRelatedSeries="",
            NumberOfStudyRelatedInstances="", ModalitiesInStudy="", SOPClassesInStudy=""), 2),
    ("P-SERIES", P, "SERIES",
     merged(SERIES_RETURN, PatientID="PN-0002", StudyInstanceUID=uid("s02"),
            NumberOfSeriesRelatedInstances=""), 2),
    ("P-IMAGE", P, "IMAGE",
     merged(IMAGE_RETURN, PatientID="PN-0001", StudyInstanceUID=uid("s01"),
            SeriesInstanceUID=uid("s01", "ct1")), 3),
    ("P-SERIES-other-patient", P, "SERIES",
     merged(SERIES_RETURN, PatientID="PN-0001", StudyInstanceUID=uid("s02")), 0),
    ("S-STUDY-all", S, "STUDY",
     merged(STUDY_RETURN, PATIENT_RETURN, NumberOfStudyRelatedSeries="",
            NumberOfStudyRelatedInstances="", ModalitiesInStudy="", SOPClassesInStudy="",
            NumberOfPatientRelatedStudies="", InstanceAvailability=""), 24),
    ("S-SERIES", S, "SERIES",
     merged(SERIES_RETURN, StudyInstanceUID=uid("s03"), NumberOfSeriesRelatedInstances="",
            InstanceAvailability=""), 2),
    ("S-IMAGE", S, "IMAGE",
     merged(IMAGE_RETURN, StudyInstanceUID=uid("s07"), SeriesInstanceUID=uid("s07", "mr4"),
            InstanceAvailability=""), 3),
    ("S-IMAGE-uid-list", S, "IMAGE",
     merged(IMAGE_RETURN, StudyInstanceUID=uid("s07"), SeriesInstanceUID=uid("s07", "nm2"),
            SOPInstanceUID=gen_corpus.make_uid(0, "sop", "s07", "nm2", "1") + "\\"
            + gen_corpus.make_uid(0, "sop", "s07", "nm2", "2") + "\\" + uid("s01")), 2),
    ("S-SERIES-upper-keys-returned", S, "SERIES",
     merged(SERIES_RETURN, StudyInstanceUID=uid("s02"), StudyDescription="", PatientName="",
            PatientID=""), 2),
]


@pytest.mark.parametrize("root,level,keys,count",
                         [c[1:] for c in LEVEL_CASES], ids=[c[0] for c in LEVEL_CASES])
def test_levels(cnode, model, testdir, root, level, keys, count):
    assert_found(model, cnode, testdir, root, level, keys, count=count)


# --------------------------------------------------------------------------
# Matching kinds (PS3.4 C.2.2.2)

MATCH_CASES = [
    # single values
    ("single-PatientID", S, "STUDY", {"PatientID": "PN-0003"}, None, 1),
    ("single-Accession", S, "STUDY", {"AccessionNumber": "ACC-7007"}, None, 1),
    ("single-Modality", S, "SERIES", {"StudyInstanceUID": uid("s03"), "Modality": "CT"},
     None, 1),
    ("single-InstanceNumber", S, "IMAGE",
     {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": uid("s01", "ct1"),
      "InstanceNumber": "2"}, None, 1),
    ("single-PatientID-quote", S, "STUDY", {"PatientID": "PN'0010"}, None, 1),
    ("single-PatientID-underscore-literal", S, "STUDY", {"PatientID": "PN_0010"}, None, 0),
    ("single-Sex", S, "STUDY", {"PatientSex": "F", "PatientName": ""}, None, 5),
    ("single-padded", S, "STUDY", {"PatientID": "PN-0003 "}, None, 1),
    ("single-SeriesNumber", S, "SERIES", {"StudyInstanceUID": uid("s01"), "SeriesNumber": "1"},
     None, 1),
    ("single-issuer", P, "PATIENT", {"IssuerOfPatientID": "HOSP_JP"}, None, 2),
    ("patient-id-wildcard-own-level", P, "PATIENT", {"PatientID": "SHARED*"}, None, 2),
    # UID list
    ("uid-list", S, "STUDY", {"StudyInstanceUID": uid("s01") + "\\" + uid("s04")}, None, 2),
    # wildcards on person names: case-insensitive, Unicode, whole value
    ("pn-prefix-umlaut", P, "PATIENT", {"PatientName": "MÜLLER*"}, "ISO_IR 192", 2),
    ("pn-exact-lower", P, "PATIENT", {"PatientName": "müller^hans"}, "ISO_IR 192", 1),
    ("pn-question-ascii", P, "PATIENT", {"PatientName": "*^ANN?"}, None, 2),
    ("pn-leading-star", P, "PATIENT", {"PatientName": "*RIEN^*"}, None, 1),
    ("pn-suffix", P, "PATIENT", {"PatientName": "*hans"}, None, 1),
    ("pn-question-non-ascii", P, "PATIENT", {"PatientName": "M?LLER*"}, None, 2),
    ("pn-question-first", P, "PATIENT", {"PatientName": "?BERG*"}, None, 1),
    ("pn-ideographic-group", P, "PATIENT", {"PatientName": "*山田*"}, "ISO_IR 192", 4),
    ("pn-final-sigma", P, "PATIENT", {"PatientName": "ΔΙΟΝΥΣΙΟΣ"}, "ISO_IR 192", 1),
    ("pn-greek-lower", P, "PATIENT", {"PatientName": "ελληνική*"}, "ISO_IR 192", 1),
    ("pn-referring", S, "STUDY", {"ReferringPhysicianName": "weiß*"}, "ISO_IR 192", 1),
    # wildcards on other strings: case-sensitive, SQL characters literal
    ("lo-wildcard-id", S, "STUDY", {"PatientID": "PN-000?"}, None, 8),
    ("lo-percent-literal", S, "STUDY", {"PatientID": "PN%*"}, None, 0),
    ("sh-prefix", S, "STUDY", {"AccessionNumber": "ACC-50*"}, None, 2),
    ("sh-prefix-case", S, "STUDY", {"AccessionNumber": "acc-50*"}, None, 0),
    ("lo-contains", S, "STUDY", {"StudyDescription": "*CT*"}, None, 4),
    ("lo-contains-case", S, "STUDY", {"StudyDescription": "*ct*"}, None, 0),
    ("lo-percent-in-value", S, "STUDY", {"StudyDescription": "100%*"}, None, 1),
    ("lo-underscore-literal", S, "STUDY", {"StudyDescription": "1_0*"}, None, 0),
    ("lo-non-ascii-suffix", S, "STUDY", {"StudyDescription": "*körper"}, "ISO_IR 192", 1),
    ("lo-non-ascii-case", S, "STUDY", {"StudyDescription": "*KÖRPER"}, "ISO_IR 192", 0),
    ("lo-question-non-ascii", S, "STUDY", {"StudyDescription": "Sch?del*"}, None, 1),
    ("series-suffix", S, "SERIES", {"StudyInstanceUID": uid("s03"),
                                    "SeriesDescription": "*AC"}, None, 2),
    # ranges
    ("date-single", S, "STUDY", {"StudyDate": "20240131"}, None, 1),
    ("date-range", S, "STUDY", {"StudyDate": "20200101-20231231"}, None, 4),
    ("date-upto", S, "STUDY", {"StudyDate": "-20170404"}, None, 6),
    ("date-from", S, "STUDY", {"StudyDate": "20231224-"}, None, 2),
    ("birthdate-range", P, "PATIENT", {"PatientBirthDate": "19800101-19901231"}, None, 3),
    ("series-date", S, "SERIES", {"StudyInstanceUID": uid("s02"), "SeriesDate": "20231224"},
     None, 2),
    ("time-range", S, "STUDY", {"StudyTime": "0900-1000"}, None, 2),
    ("time-upto-hour", S, "STUDY", {"StudyTime": "-08"}, None, 3),
    ("time-from-hour", S, "STUDY", {"StudyTime": "17-"}, None, 4),
    ("time-single-minute", S, "STUDY", {"StudyTime": "1015"}, None, 1),
    ("time-fraction-below", S, "STUDY", {"StudyTime": "2359-235959.999998"}, None, 0),
    ("time-fraction-from", S, "STUDY", {"StudyTime": "235959.999999-"}, None, 1),
    # combined and computed keys
    ("combined-name-date", S, "STUDY", {"PatientName": "MÜLLER*", "StudyDate": "20210101-"},
     "ISO_IR 192", 2),
    ("modalities-in-study", S, "STUDY", {"ModalitiesInStudy": "MR"}, None, 5),
    ("modalities-in-study-list", S, "STUDY", {"ModalitiesInStudy": "NM\\PT"}, None, 5),
    # one PatientID, two issuers
    ("shared-id-patient", P, "PATIENT", {"PatientID": "SHARED-42", "IssuerOfPatientID": "",
                                         "PatientName": ""}, None, 2),
    ("shared-id-issuer", P, "PATIENT", {"PatientID": "SHARED-42", "IssuerOfPatientID": "HOSP_A",
                                        "PatientName": ""}, None, 1),
    ("shared-id-studies", P, "STUDY", {"PatientID": "SHARED-42", "IssuerOfPatientID": ""},
     None, 2),
    ("shared-id-issuer-studies", P, "STUDY", {"PatientID": "SHARED-42",
                                              "IssuerOfPatientID": "HOSP_B"}, None, 1),
]


@pytest.mark.parametrize("root,level,keys,charset,count", [c[1:] for c in MATCH_CASES],
                         ids=[c[0] for c in MATCH_CASES])
def test_matching(cnode, model, testdir, root, level, keys, charset, count):
    keys = dict(keys)
    keys.setdefault(F.UNIQUE[level], "")
    if level == "PATIENT":
        keys.setdefault("IssuerOfPatientID", "")
    if root == P and level != "PATIENT":
        keys.setdefault("PatientID", "")
    assert_found(model, cnode, testdir, root, level, keys, charset, count=count)


def test_star_alone_is_universal(cnode, model, testdir):
    """PS3.4 C.2.2.2.4: "*" matches any sequence of characters including a
    zero-length value, so AccessionNumber "*" finds the studies without one
    too."""
    keys = {"StudyInstanceUID": "", "AccessionNumber": "*"}
    want = model.expect("STUDY", keys)
    assert len(want) == len(model.studies) == 24
    run = do_find(cnode, testdir, S, "STUDY", keys)
    assert run.final == F.SUCCESS, run.summary()
    got = {F.response_key("STUDY", ds) for ds in run.responses}
    missing = {e.key for e in want} - got
    assert not missing, "studies without an accession number not found by \"*\": %s" % (
        sorted((e.key, e.attrs["AccessionNumber"]) for e in want if e.key in missing))


@pytest.mark.parametrize("root,level,keys", [
    (P, "PATIENT", {"PatientID": "PN-0001"}),
    (S, "STUDY", {"StudyInstanceUID": uid("s01")}),
    (S, "SERIES", {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": ""}),
    (P, "IMAGE", {"PatientID": "PN-0001", "StudyInstanceUID": uid("s01"),
                  "SeriesInstanceUID": uid("s01", "ct1"), "SOPInstanceUID": ""}),
], ids=["P-PATIENT", "S-STUDY", "S-SERIES", "P-IMAGE"])
def test_retrieve_ae_title_unasked(cnode, testdir, root, level, keys):
    """PS3.4 C.4.1.1.3.2: the SCP returns Retrieve AE Title (it keeps no
    Storage Media File-Set), asked for or not."""
    run = do_find(cnode, testdir, root, level, keys)
    assert run.final == F.SUCCESS and run.responses, run.summary()
    for ds in run.responses:
        assert str(ds.get("RetrieveAETitle", "")).strip() == H.NODE_AET, \
            "RetrieveAETitle %r in %s" % (ds.get("RetrieveAETitle"), run.outdir)


def test_lower_level_keys_are_not_matched(cnode, model, testdir):
    """docs/find.md: keys below the query level are not matched, returned
    empty, and every response is pending 0xFF01."""
    keys = {"StudyInstanceUID": "", "Modality": "CT", "SOPInstanceUID": ""}
    run = do_find(cnode, testdir, S, "STUDY", keys)
    assert run.final == F.SUCCESS, run.summary()
    assert len(run.responses) == len(model.studies), run.summary()
    assert set(run.pending) == {F.PENDING_WARN}, run.summary()
    for ds in run.responses:
        assert "Modality" in ds and not ds.Modality, ds
        assert "SOPInstanceUID" in ds and not ds.SOPInstanceUID, ds


def test_plain_query_is_ff00(cnode, testdir):
    run = do_find(cnode, testdir, S, "STUDY", {"StudyInstanceUID": "", "PatientID": "PN-0001",
                                               "StudyDate": ""})
    assert run.final == F.SUCCESS and run.pending == [F.PENDING], run.summary()


def _energy_window(name):
    item = pydicom.dataset.Dataset()
    item.EnergyWindowName = name
    return [item]


STORED_SET_CASES = [
    # keys without a column, matched against the stored attribute set
    ("lo-exact", "SERIES", {"StudyInstanceUID": uid("s01"), "Manufacturer": "pacsnode corpus"},
     "all"),
    ("lo-suffix", "SERIES", {"StudyInstanceUID": uid("s01"), "Manufacturer": "*corpus"}, "all"),
    ("lo-case", "SERIES", {"StudyInstanceUID": uid("s01"), "Manufacturer": "PACSNODE*"},
     "none"),
    ("lo-other", "SERIES", {"StudyInstanceUID": uid("s01"), "InstitutionName": "Other*"},
     "none"),
    ("ds-single", "IMAGE", {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID":
                            uid("s01", "ct1"), "KVP": "120"}, "all"),
    ("absent-never-matches", "IMAGE", {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID":
                                       uid("s01", "ct1"), "ImageComments": "x*"}, "none"),
    ("sequence-item", "IMAGE", {"StudyInstanceUID": uid("s04"),
                                "SeriesInstanceUID": uid("s04", "nm1"),
                                "EnergyWindowInformationSequence": _energy_window("Tc99m")},
     "all"),
    ("sequence-wildcard", "IMAGE", {"StudyInstanceUID": uid("s04"),
                                    "SeriesInstanceUID": uid("s04", "nm1"),
                                    "EnergyWindowInformationSequence": _energy_window("Tc*")},
     "all"),
    ("sequence-no-match", "IMAGE", {"StudyInstanceUID": uid("s04"),
                                    "SeriesInstanceUID": uid("s04", "nm1"),
                                    "EnergyWindowInformationSequence": _energy_window("Xe133")},
     "none"),
]


@pytest.mark.parametrize("level,keys,which", [c[1:] for c in STORED_SET_CASES],
                         ids=[c[0] for c in STORED_SET_CASES])
def test_match_on_stored_set(cnode, model, testdir, level, keys, which):
    """docs/find.md: keys without a column are matched against the stored
    attribute set, sequences included (an item matches when all its
    non-empty keys match). The generator gives every generated series
    Manufacturer "pacsnode corpus", every CT KVP 120, every NM instance one
    energy window "Tc99m", no instance an ImageComments."""
    keys = merged(keys, **{F.UNIQUE[level]: keys.get(F.UNIQUE[level], "")})
    scope = {k: v for k, v in keys.items() if k in ("StudyInstanceUID", "SeriesInstanceUID")}
    scope[F.UNIQUE[level]] = ""
    everything = model.expect(level, scope)
    assert everything, "test bug: empty scope"
    want = everything if which == "all" else []
    run = do_find(cnode, testdir, S, level, keys)
    assert run.final == F.SUCCESS, run.summary()
    got = sorted(F.response_key(level, ds) for ds in run.responses)
    assert got == sorted(e.key for e in want), run.summary()
    seq = keys.get("EnergyWindowInformationSequence")
    for ds in run.responses:
        if seq is not None:
            items = ds.get("EnergyWindowInformationSequence")
            assert items and str(items[0].EnergyWindowName) == "Tc99m", ds


@pytest.mark.parametrize("ts_option", ["-xi", "-xb", "-xe"])
def test_transfer_syntaxes(cnode, model, testdir, ts_option):
    """The identifier arrives in implicit VR, explicit big endian or
    explicit little endian (the only one findscu proposes) and the answer
    goes back in it: same matches, same values."""
    keys = merged(STUDY_RETURN, PatientName="MÜLLER*", NumberOfStudyRelatedInstances="")
    want = model.expect("STUDY", keys)
    assert len(want) == 3
    ds = F.query_dataset("STUDY", keys, "ISO_IR 100")
    run = F.findscu(cnode.port, ds, testdir, model=S, extra=[ts_option])
    assert run.final == F.SUCCESS, run.summary()
    accepted = re.findall(r"Accepted Transfer Syntax: (\S+)", run.output)
    print("\n%s: accepted %s" % (ts_option, accepted))
    if ts_option == "-xi":
        assert accepted == ["=LittleEndianImplicit"], accepted
    check_responses(model, "STUDY", keys, run.responses, want, where=run.outdir)


# --------------------------------------------------------------------------
# Response contents, byte for byte (raw client)


# Attributes without a column, returned from a level's stored attribute set:
# some corpus files have them, most do not; none has the last three.
BLOB_KEYS = ["NameOfPhysiciansReadingStudy", "PatientWeight", "EthnicGroup", "PatientComments",
             "PatientMotherBirthName", "MedicalAlerts", "Occupation"]


_file_cache = {}


def file_value(entry, keyword):
    """`keyword`'s value in the corpus file itself (what was sent), as a
    string with padding removed; None when absent or empty."""
    path = entry["abspath"]
    if path not in _file_cache:
        with gen_corpus.quiet_pydicom():
            _file_cache[path] = pydicom.dcmread(path, stop_before_pixels=True)
    ds = _file_cache[path]
    if keyword not in ds or ds[keyword].value in (None, "", b""):
        return None
    v = ds[keyword].value
    if isinstance(v, pydicom.multival.MultiValue):
        return "\\".join(str(x) for x in v)
    return str(v).strip(" \0")


def blob_value_matches(keyword, got, want):
    if got is None or want is None:
        return got == want
    if pydicom.datadict.dictionary_VR(keyword) == "DS":
        return [float(x) for x in got.split("\\")] == [float(x) for x in want.split("\\")]
    return got == want


def first_entry_of(corpus, level, key):
    """The first corpus entry (manifest order = sending order) of an entity:
    its attributes are the ones the node keeps for that entity."""
    field = {"STUDY": "study_instance_uid", "SERIES": "series_instance_uid",
             "IMAGE": "sop_instance_uid"}[level]
    return next(e for e in corpus.entries if e[field] == key)


def test_response_vrs_and_empty_keys(cnode, model, corpus):
    """Every requested key, and only those (plus Specific Character Set,
    Query/Retrieve Level, Retrieve AE Title, Instance Availability), with
    its dictionary VR; keys without a column come from the stored attribute
    set (value as in the file sent) or empty."""
    keys = merged(STUDY_RETURN, PATIENT_RETURN, NumberOfStudyRelatedSeries="",
                  NumberOfStudyRelatedInstances="", ModalitiesInStudy="",
                  SOPClassesInStudy="", NumberOfPatientRelatedStudies="",
                  NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances="",
                  InstanceAvailability="", RetrieveAETitle="",
                  **{k: "" for k in BLOB_KEYS})
    ident = F.query_dataset("STUDY", keys)
    res = F.find(cnode.port, S, ident)
    assert res.final_status == F.SUCCESS, "final 0x%04X" % res.final_status
    assert res.n_pending == len(model.studies)
    requested = {pydicom.tag.Tag(pydicom.datadict.tag_for_keyword(k)) for k in keys}
    requested.add(pydicom.tag.Tag(0x0008, 0x0052))
    allowed_extra = {pydicom.tag.Tag(0x0008, 0x0005), pydicom.tag.Tag(0x0008, 0x0054),
                     pydicom.tag.Tag(0x0008, 0x0056)}
    problems = []
    responses = []
    for rsp in res.pending:
        ds = rsp.dataset
        responses.append(ds)
        k = F.response_key("STUDY", ds)
        tags = set(ds.keys())
        for t in requested - tags:
            problems.append("%s: requested %s missing" % (k, pydicom.datadict.keyword_for_tag(t)))
        for t in tags - requested - allowed_extra:
            problems.append("%s: %s not requested" % (k, t))
        for el in ds:
            want_vr = pydicom.datadict.dictionary_VR(el.tag)
            if el.VR != want_vr:
                problems.append("%s: %s VR %s, want %s" % (k, el.keyword, el.VR, want_vr))
        entry = first_entry_of(corpus, "STUDY", k) if k in model.studies else None
        for kw in BLOB_KEYS:
            if kw not in ds or entry is None:
                continue
            got = None if ds[kw].value in (None, "", b"") else str(ds[kw].value).strip(" \0")
            if isinstance(ds[kw].value, pydicom.multival.MultiValue):
                got = "\\".join(str(x) for x in ds[kw].value)
            want = file_value(entry, kw)
            if not blob_value_matches(kw, got, want):
                problems.append("%s: %s %r, the file sent has %r" % (k, kw, got, want))
        if str(ds.get("InstanceAvailability", "")).strip() != "ONLINE":
            problems.append("%s: InstanceAvailability %r" % (k, ds.get("InstanceAvailability")))
    assert not problems, "\n".join(problems[:40])
    # the same responses hold the manifest's values
    want = model.expect("STUDY", keys)
    check_responses(model, "STUDY", {k: v for k, v in keys.items()
                                     if k not in BLOB_KEYS + ["RetrieveAETitle"]},
                    responses, want, where="raw STUDY")


@pytest.mark.parametrize("level,keys,blob_keys", [
    ("SERIES", {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": ""},
     ["Manufacturer", "InstitutionName", "FrameOfReferenceUID", "StationName"]),
    ("IMAGE", {"StudyInstanceUID": uid("s03"), "SeriesInstanceUID": uid("s03", "ct2"),
               "SOPInstanceUID": ""},
     ["KVP", "ImagePositionPatient", "PixelSpacing", "RescaleIntercept", "BitsStored",
      "ImageComments"]),
], ids=["SERIES", "IMAGE"])
def test_other_attributes_from_stored_set(cnode, corpus, testdir, level, keys, blob_keys):
    """docs/find.md: a key without a column is returned from the stored
    attribute set of its level, as it was in the file sent (empty when the
    file had none)."""
    run = do_find(cnode, testdir, S, level, merged(keys, **{k: "" for k in blob_keys}))
    assert run.final == F.SUCCESS and run.responses, run.summary()
    problems = []
    for ds in run.responses:
        k = F.response_key(level, ds)
        entry = first_entry_of(corpus, level, k)
        for kw in blob_keys:
            if kw not in ds:
                problems.append("%s: %s missing" % (k, kw))
                continue
            v = ds[kw].value
            got = None if v in (None, "", b"") else (
                "\\".join(str(x) for x in v) if isinstance(v, pydicom.multival.MultiValue)
                else str(v).strip(" \0"))
            want = file_value(entry, kw)
            if not blob_value_matches(kw, got, want):
                problems.append("%s: %s %r, the file sent has %r" % (k, kw, got, want))
    assert not problems, "%s\n%s" % (run.outdir, "\n".join(problems))


VR_CASES = [
    ("P-PATIENT", P, "PATIENT", merged(PATIENT_RETURN, NumberOfPatientRelatedStudies="",
                                       NumberOfPatientRelatedSeries="",
                                       NumberOfPatientRelatedInstances="", EthnicGroup="")),
    ("S-SERIES", S, "SERIES", merged(SERIES_RETURN, StudyInstanceUID=uid("s02"),
                                     NumberOfSeriesRelatedInstances="", Manufacturer="",
                                     InstanceAvailability="", PatientName="",
                                     StudyDescription="")),
    ("P-IMAGE", P, "IMAGE", merged(IMAGE_RETURN, PatientID="PN-0004", StudyInstanceUID=uid("s04"),
                                   SeriesInstanceUID=uid("s04", "nm1"), KVP="",
                                   EnergyWindowInformationSequence="",
                                   InstanceAvailability="")),
]


@pytest.mark.parametrize("root,level,keys", [c[1:] for c in VR_CASES],
                         ids=[c[0] for c in VR_CASES])
def test_response_vrs_other_levels(cnode, model, root, level, keys):
    """The same byte-level checks at the other levels (raw client)."""
    res = F.find(cnode.port, root, F.query_dataset(level, keys))
    assert res.final_status == F.SUCCESS, "final 0x%04X" % res.final_status
    want = model.expect(level, keys)
    assert res.n_pending == len(want) > 0
    requested = {pydicom.tag.Tag(pydicom.datadict.tag_for_keyword(k)) for k in keys}
    requested.add(pydicom.tag.Tag(0x0008, 0x0052))
    allowed_extra = {pydicom.tag.Tag(0x0008, 0x0005), pydicom.tag.Tag(0x0008, 0x0054),
                     pydicom.tag.Tag(0x0008, 0x0056)}
    problems, responses = [], []
    for rsp in res.pending:
        ds = rsp.dataset
        responses.append(ds)
        k = F.response_key(level, ds)
        tags = set(ds.keys())
        problems += ["%s: requested %s missing" % (k, pydicom.datadict.keyword_for_tag(t))
                     for t in requested - tags]
        problems += ["%s: %s not requested" % (k, t) for t in tags - requested - allowed_extra]
        for el in ds.iterall():
            want_vr = pydicom.datadict.dictionary_VR(el.tag)
            if el.VR != want_vr:
                problems.append("%s: %s VR %s, want %s" % (k, el.keyword, el.VR, want_vr))
    assert not problems, "\n".join(problems[:40])
    check_responses(model, level, {k: v for k, v in keys.items()
                                   if k not in ("EthnicGroup", "Manufacturer", "KVP",
                                                "EnergyWindowInformationSequence")},
                    responses, want, where="raw %s" % level)


def test_response_empty_values_from_data(cnode, model, testdir):
    """p10 has no birth date and no sex; its study no date, time or
    accession number: the keys come back empty."""
    keys = merged(STUDY_RETURN, PatientBirthDate="", PatientSex="", PatientID="PN'0010")
    run = do_find(cnode, testdir, S, "STUDY", keys)
    assert run.final == F.SUCCESS and len(run.responses) == 1, run.summary()
    ds = run.responses[0]
    for kw in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber"):
        assert kw in ds, "%s missing" % kw
        assert ds[kw].value in ("", None), "%s %r" % (kw, ds[kw].value)
    assert str(ds.StudyDescription) == "100% contrast_phase"


# --------------------------------------------------------------------------
# Character sets


def names_of(run):
    return sorted(str(ds.PatientName) for ds in run.responses)


def test_latin1_query_finds_utf8_name(cnode, model, testdir):
    """MÜLLER* sent in ISO_IR 100 (latin-1 bytes on the wire) finds
    Müller^Hans (stored from ISO_IR 100) and Müller^Jürgen (ISO_IR 192);
    the answer comes back in ISO_IR 100, which can encode both."""
    keys = {"PatientName": "MÜLLER*", "PatientID": "", "IssuerOfPatientID": ""}
    ds = F.query_dataset("PATIENT", keys, "ISO_IR 100")
    assert b"M\xdcLLER*" in F.identifier_bytes(ds)
    run = F.findscu(cnode.port, ds, testdir, model=P)
    assert run.final == F.SUCCESS, run.summary()
    assert names_of(run) == ["Müller^Hans", "Müller^Jürgen"], run.summary()
    check_responses(model, "PATIENT", keys, run.responses, model.expect("PATIENT", keys),
                    where=run.outdir)
    for r in run.responses:
        assert r.SpecificCharacterSet == "ISO_IR 100", r.SpecificCharacterSet


def test_latin1_query_answer_needing_utf8(cnode, testdir):
    """A Greek name cannot be written in ISO_IR 100: the answer is ISO_IR 192."""
    ds = F.query_dataset("PATIENT", {"PatientName": "", "PatientID": "PN-0004"}, "ISO_IR 100")
    run = F.findscu(cnode.port, ds, testdir, model=P)
    assert run.final == F.SUCCESS and len(run.responses) == 1, run.summary()
    r = run.responses[0]
    assert r.SpecificCharacterSet == "ISO_IR 192", r.get("SpecificCharacterSet")
    assert str(r.PatientName) == "Ελληνική^Δοκιμή"


@pytest.mark.parametrize("query_name", ["Yamada^Tarou=山田^太郎=やまだ^たろう",
                                        "*=山田^太郎=*", "yamada^tarou=*"])
def test_iso2022_query(cnode, model, testdir, query_name):
    """An ISO 2022 IR 87 query (escape sequences on the wire) finds p07,
    and every answer's name decodes to the manifest's UTF-8 text."""
    keys = {"PatientName": query_name, "PatientID": "", "IssuerOfPatientID": ""}
    ds = F.query_dataset("PATIENT", keys, ["", "ISO 2022 IR 87"])
    if any(ord(c) > 0x7F for c in query_name):
        assert b"\x1b$B" in F.identifier_bytes(ds)
    want = model.expect("PATIENT", keys)
    assert ("PN-0007", "HOSP_JP") in {e.key for e in want}
    run = F.findscu(cnode.port, ds, testdir, model=P)
    assert run.final == F.SUCCESS, run.summary()
    check_responses(model, "PATIENT", keys, run.responses, want, where=run.outdir)
    for r in run.responses:
        assert "SpecificCharacterSet" in r


def test_no_charset_query_non_ascii_answers(cnode, model, testdir):
    """A query in the default repertoire whose answers hold Greek, Japanese,
    Hebrew... text: each response names its character set and decodes to
    the manifest's text."""
    keys = merged(PATIENT_RETURN)
    run = do_find(cnode, testdir, P, "PATIENT", keys)
    assert run.final == F.SUCCESS, run.summary()
    check_responses(model, "PATIENT", keys, run.responses, model.expect("PATIENT", keys),
                    where=run.outdir)
    got = {str(r.PatientName) for r in run.responses if "PatientName" in r}
    for literal in ("Öberg^Åsa", "Ελληνική^Δοκιμή", "山田^太郎", "שרון^דבורה",
                    "Yamada^Tarou=山田^太郎=やまだ^たろう"):
        assert literal in got


# --------------------------------------------------------------------------
# Rule violations

VIOLATIONS = [
    # name, model, level (None: absent), keys, status kind
    ("series-without-study-uid", S, "SERIES", {"SeriesInstanceUID": "", "Modality": "CT"},
     "A900"),
    ("series-empty-study-uid", S, "SERIES", {"StudyInstanceUID": "", "SeriesInstanceUID": ""},
     "A900"),
    ("series-wildcard-study-uid", S, "SERIES", {"StudyInstanceUID": "1.2.*",
                                                "SeriesInstanceUID": ""}, "A900"),
    ("series-list-study-uid", S, "SERIES",
     {"StudyInstanceUID": uid("s01") + "\\" + uid("s02"), "SeriesInstanceUID": ""}, "A900"),
    ("image-without-series-uid", S, "IMAGE", {"StudyInstanceUID": uid("s01"),
                                              "SOPInstanceUID": ""}, "A900"),
    ("unknown-level", S, "FOO", {"StudyInstanceUID": ""}, "A900"),
    ("patient-level-study-root", S, "PATIENT", {"PatientID": "", "PatientName": ""}, "A900"),
    ("no-level", S, None, {"StudyInstanceUID": "", "PatientName": "Doe*"}, "A900"),
    ("empty-level", S, "", {"StudyInstanceUID": "", "PatientName": "Doe*"}, "A900"),
    ("patient-root-study-without-id", P, "STUDY", {"StudyInstanceUID": ""}, "A900"),
    ("patient-root-study-wildcard-id", P, "STUDY", {"PatientID": "PN-*",
                                                    "StudyInstanceUID": ""}, "A900"),
    ("patient-root-image-without-series", P, "IMAGE",
     {"PatientID": "PN-0001", "StudyInstanceUID": uid("s01"), "SOPInstanceUID": ""}, "A900"),
    ("bad-date-range", S, "STUDY", {"StudyInstanceUID": "", "StudyDate": "20240231-2024"},
     "C000"),
    ("inverted-date-range", S, "STUDY", {"StudyInstanceUID": "",
                                         "StudyDate": "20240101-20230101"}, "C000"),
    ("bad-time", S, "STUDY", {"StudyInstanceUID": "", "StudyTime": "2561"}, "C000"),
    ("invalid-utf8", S, "STUDY", {"StudyInstanceUID": "", "PatientName": b"M\xfc\xff*"},
     "C000"),
]


def _status_ok(kind, status):
    if kind == "A900":
        return status == F.IDENTIFIER_MISMATCH
    return F.is_cannot_process(status)


@pytest.mark.parametrize("root,level,keys,kind", [v[1:] for v in VIOLATIONS],
                         ids=[v[0] for v in VIOLATIONS])
def test_rule_violation(cnode, testdir, root, level, keys, kind):
    """A failure final status, no pending response, one warning in the log
    (findscu); the raw client sees the same status and, for 0xCxxx, an
    Error Comment naming the key."""
    charset = "ISO_IR 192" if any(isinstance(v, bytes) for v in keys.values()) else None
    ds = F.query_dataset(level, keys, charset)
    off = log_offset(cnode)
    run = F.findscu(cnode.port, ds, testdir, model=root)
    assert run.association == "accepted", run.summary()
    assert not run.pending and not run.responses, run.summary()
    assert run.final is not None and _status_ok(kind, run.final), run.summary()
    line = wait_log(cnode, off, r" warning: .*PNFIND")
    assert line, "no warning naming the caller logged for the refused query:\n%s" % new_log(
        cnode, off)
    time.sleep(0.1)
    warnings = [ln for ln in new_log(cnode, off).splitlines() if " warning: " in ln]
    assert len(warnings) == 1, "one warning per refused query, got:\n%s" % "\n".join(warnings)

    res = F.find(cnode.port, root, ds)
    assert res.n_pending == 0
    assert _status_ok(kind, res.final_status), "raw client: 0x%04X" % res.final_status
    if kind == "C000":
        comment = res.final.error_comment or ""
        bad = [k for k in keys if k != "StudyInstanceUID"][0]
        tag = pydicom.datadict.tag_for_keyword(bad)
        assert (bad.lower() in comment.lower().replace(" ", "")
                or ("%04x,%04x" % (tag >> 16, tag & 0xFFFF)) in comment.lower()), \
            "Error Comment %r does not name %s" % (comment, bad)


def test_association_survives_violations(cnode, model):
    """A refused query on an association leaves it usable."""
    assoc = F.FindAssociation("127.0.0.1", cnode.port)
    try:
        assoc.associate("PNRAWFIND", H.NODE_AET, S)
        r1 = assoc.c_find(S, F.query_dataset("SERIES", {"SeriesInstanceUID": ""}))
        assert r1.final_status == F.IDENTIFIER_MISMATCH and r1.n_pending == 0
        r2 = assoc.c_find(S, F.query_dataset("STUDY", {"StudyInstanceUID": "",
                                                       "AccessionNumber": "ACC-1001"}))
        assert r2.final_status == F.SUCCESS and r2.n_pending == 1
        assert str(r2.pending[0].dataset.StudyInstanceUID) == uid("s01")
        assoc.release()
    finally:
        assoc.close()


# --------------------------------------------------------------------------
# Computed attributes after stores and duplicates

COUNT_KEYS = {"StudyInstanceUID": "", "NumberOfStudyRelatedSeries": "",
              "NumberOfStudyRelatedInstances": "", "ModalitiesInStudy": "",
              "SOPClassesInStudy": "", "NumberOfPatientRelatedStudies": "",
              "NumberOfPatientRelatedSeries": "", "NumberOfPatientRelatedInstances": "",
              "PatientID": ""}


def study_counts(node, workdir, model):
    run = do_find(node, workdir, S, "STUDY", COUNT_KEYS)
    assert run.final == F.SUCCESS, run.summary()
    check_responses(model, "STUDY", COUNT_KEYS, run.responses, model.expect("STUDY", COUNT_KEYS),
                    where=run.outdir)
    keys = {"StudyInstanceUID": uid("s01"), "SeriesInstanceUID": "",
            "NumberOfSeriesRelatedInstances": "", "Modality": ""}
    run = do_find(node, workdir, S, "SERIES", keys)
    assert run.final == F.SUCCESS, run.summary()
    check_responses(model, "SERIES", keys, run.responses, model.expect("SERIES", keys),
                    where=run.outdir)
    keys = {"PatientID": "PN-0001", "IssuerOfPatientID": "",
            "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedSeries": "",
            "NumberOfPatientRelatedInstances": ""}
    run = do_find(node, workdir, P, "PATIENT", keys)
    assert run.final == F.SUCCESS, run.summary()
    check_responses(model, "PATIENT", keys, run.responses, model.expect("PATIENT", keys),
                    where=run.outdir)
    return run


def test_computed_after_stores(node, corpus, testdir, scu_dir):
    """Counts, ModalitiesInStudy and SOPClassesInStudy follow the index
    exactly: after a partial store, after a duplicate (policy ignore: no
    change), after a new instance in an existing series (+1), after a new
    series of another modality in an existing study."""
    part = [e for e in corpus.entries if e["origin"] == "generated"
            and e["attrs"]["PatientID"] in ("PN-0001", "PN-0005")]
    run = H.storescu(node.port, corpus.paths(part), scu_dir)
    assert run.all_success(), run.summary()
    m = F.Model(part)
    study_counts(node, testdir, m)

    dup = part[:2]
    run = H.storescu(node.port, corpus.paths(dup), scu_dir)
    assert run.all_success(), run.summary()
    study_counts(node, testdir, m)

    first = next(e for e in part if e["study_instance_uid"] == uid("s01"))
    a = first["attrs"]
    extra = gen_corpus.make_instance(
        os.path.join(scu_dir, "extra-ct1.dcm"), name="extra-ct1", patient_id=a["PatientID"],
        issuer=a["IssuerOfPatientID"], study_uid=uid("s01"), series_uid=uid("s01", "ct1"),
        modality="CT", instance_number="9")
    run = H.storescu(node.port, [extra["path"]], scu_dir)
    assert run.all_success(), run.summary()
    m.add(extra)
    assert len(m.series[uid("s01", "ct1")].children) == 4
    study_counts(node, testdir, m)

    nm = gen_corpus.make_instance(
        os.path.join(scu_dir, "extra-nm.dcm"), name="extra-nm", patient_id=a["PatientID"],
        issuer=a["IssuerOfPatientID"], study_uid=uid("s01"), modality="NM",
        instance_number="1")
    run = H.storescu(node.port, [nm["path"]], scu_dir)
    assert run.all_success(), run.summary()
    m.add(nm)
    assert len(m.studies[uid("s01")].children) == 3
    assert "NM" in m.computed(m.studies[uid("s01")], "ModalitiesInStudy")
    study_counts(node, testdir, m)


# --------------------------------------------------------------------------
# Configuration: [query] max_matches and pn_case_insensitive

@pytest.mark.node_config(extra_config={"query": {"max_matches": 5,
                                                 "pn_case_insensitive": "no"}})
def test_query_config(node, corpus, model, testdir, scu_dir):
    run = H.storescu(node.port, corpus.paths(), scu_dir)
    assert run.all_success(), run.summary()
    # more matches than max_matches: 5 pending, then 0xA700 with a comment
    res = F.find(node.port, S, F.query_dataset("STUDY", {"StudyInstanceUID": ""}))
    assert res.n_pending == 5, res.n_pending
    assert res.final_status == F.REFUSED_RESOURCES, "0x%04X" % res.final_status
    assert "5" in (res.final.error_comment or ""), res.final.error_comment
    # fewer: all of them, success
    res = F.find(node.port, S, F.query_dataset("STUDY", {"StudyInstanceUID": "",
                                                         "PatientID": "PN-0005"}))
    assert (res.n_pending, res.final_status) == (2, F.SUCCESS)
    # names case-sensitive now
    keys = {"PatientID": "", "IssuerOfPatientID": "", "PatientName": "MÜLLER*"}
    res = F.find(node.port, P, F.query_dataset("PATIENT", keys, "ISO_IR 192"))
    assert (res.n_pending, res.final_status) == (0, F.SUCCESS)
    keys["PatientName"] = "Müller*"
    res = F.find(node.port, P, F.query_dataset("PATIENT", keys, "ISO_IR 192"))
    assert res.final_status == F.SUCCESS
    assert sorted(str(r.dataset.PatientName) for r in res.pending) == ["Müller^Hans",
                                                                        "Müller^Jürgen"]


# --------------------------------------------------------------------------
# Cancel and streaming


def image_query(bulk, **extra):
    keys = {"StudyInstanceUID": bulk["study_uid"], "SeriesInstanceUID": bulk["series_uid"],
            "SOPInstanceUID": "", "InstanceNumber": ""}
    keys.update(extra)
    return F.query_dataset("IMAGE", keys)


def active_queries(node):
    rows = node.query("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = %s "
                      "AND state = 'active' AND pid <> pg_backend_pid()", (node.dbname,))
    return rows[0]["n"]


@pytest.mark.node_config(workers=1)
def test_cancel(node, testdir):
    """findscu --cancel 10 on 20,000 matches: final 0xFE00 after far fewer
    pending responses; the database query is cancelled too; the
    association goes on answering exactly (raw client, two queries on one
    association)."""
    n = 20000
    bulk = F.load_instances(node, n, tag="cancel")
    run = F.findscu(node.port, image_query(bulk), testdir, model=S, cancel=10)
    assert run.final == F.CANCEL, run.summary()
    print("\nfindscu --cancel 10: %d pending before 0xFE00" % len(run.pending))
    assert 10 <= len(run.pending) < n, run.summary()
    # the C-CANCEL reaches the node while it streams: it must not have
    # sent more than a socket buffer's worth (a few thousand responses)
    assert len(run.pending) <= 10 + 5000, run.summary()

    assoc = F.FindAssociation("127.0.0.1", node.port, rcvbuf=8192)
    try:
        assoc.associate("PNCANCEL", H.NODE_AET, S)
        r = assoc.c_find(S, image_query(bulk), cancel_after=3, keep=False)
        print("raw client, cancel after 3: %d pending before 0x%04X" % (r.n_pending,
                                                                      r.final_status))
        assert r.final_status == F.CANCEL and 3 <= r.n_pending < n, (r.n_pending,
                                                                       r.final_status)
        one = bulk["sop_prefix"] + ".100007"
        r = assoc.c_find(S, image_query(bulk, SOPInstanceUID=one))
        assert r.final_status == F.SUCCESS and r.n_pending == 1
        ds = r.pending[0].dataset
        assert str(ds.SOPInstanceUID) == one and int(ds.InstanceNumber) == 100007
        assoc.release()
    finally:
        assoc.close()
    deadline = time.monotonic() + 5
    while active_queries(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active_queries(node) == 0, "a query is still running in PostgreSQL after cancel"


def node_is_sanitized(node):
    """An AddressSanitizer build (PN_SANITIZE=ON): its runtime keeps freed
    memory in quarantine, so RSS grows with every allocation by design."""
    try:
        with open("/proc/%d/maps" % node.pid) as f:
            if "asan" in f.read():
                return True
    except OSError:
        pass
    with open(H.NODE_BIN, "rb") as f:
        return b"__asan_init" in f.read()


@pytest.mark.node_config(workers=1)
def test_100k_matches_in_flat_memory(node):
    """100,000 instances loaded straight into the index; an IMAGE-level
    query over all of them: 100,000 pending responses, success, and the
    worker's peak RSS during the query stays within 20 MB of where it
    started (a node holding the result set would need well over 40 MB:
    each row carries a 300-character ImageComments)."""
    n = 100000
    t0 = time.monotonic()
    bulk = F.load_instances(node, n, tag="flat")
    load_s = time.monotonic() - t0
    # warm up the worker: same code paths, a few rows
    warm = F.find(node.port, S, image_query(bulk, ImageComments=""), cancel_after=50, keep=False)
    assert warm.final_status in (F.CANCEL, F.SUCCESS)
    workers = F.children_of(node.pid)
    assert workers, "no worker processes under the node's PID %d" % node.pid
    base = {w: F.rss_kb(w) for w in workers}

    seen = {"first": [], "numbers": 0}

    def on_pending(i, rsp):
        if i <= 3:
            seen["first"].append(rsp.dataset)
        seen["numbers"] += 1

    t1 = time.monotonic()
    with F.RssSampler(node.pid, 0.05) as sampler:
        res = F.find(node.port, S, image_query(bulk, ImageComments=""), keep=False,
                     on_pending=on_pending)
    query_s = time.monotonic() - t1
    assert res.final_status == F.SUCCESS, "0x%04X" % res.final_status
    assert res.n_pending == n, res.n_pending
    assert res.pending_statuses == {F.PENDING}, res.pending_statuses
    for ds in seen["first"]:
        assert str(ds.SOPInstanceUID).startswith(bulk["sop_prefix"] + ".")
        assert int(ds.InstanceNumber) == int(str(ds.SOPInstanceUID).rsplit(".", 1)[1])
        assert str(ds.ImageComments) == bulk["comment"]
    if node_is_sanitized(node):
        print("\nsanitizer build: the RSS bound does not apply (ASan quarantines freed "
              "memory); peak %s kB from %s kB" % (sampler.peak, base))
        return
    assert sampler.samples >= 5, "too few RSS samples (%d in %.1f s)" % (sampler.samples,
                                                                         query_s)
    growth = {w: sampler.peak.get(w, 0) - (base.get(w) or sampler.first.get(w, 0))
              for w in sampler.peak}
    worst = max(growth.values())
    print("\nload %.1f s, query %.1f s (%d responses), %d samples, RSS base %s kB, "
          "peak %s kB" % (load_s, query_s, res.n_pending, sampler.samples, base,
                          sampler.peak))
    assert worst < 20 * 1024, "a worker's RSS grew by %d kB during the query (base %s, peak %s)" \
        % (worst, base, sampler.peak)


# --------------------------------------------------------------------------
# The database connection


@pytest.mark.node_config(workers=2)
def test_query_after_database_sessions_ended(node, corpus, scu_dir, pg_cluster):
    """Every worker's session is terminated (as by a server restart): the
    next queries are answered, not refused with 0xA700 (the statement is
    sent again on a new connection when the old one is found broken)."""
    run = H.storescu(node.port, corpus.paths(), scu_dir)
    assert run.all_success(), run.summary()
    keys = {"StudyInstanceUID": "", "PatientID": "PN-0005"}
    for _ in range(4):  # every worker has been used and holds a session
        res = F.find(node.port, S, F.query_dataset("STUDY", keys))
        assert (res.n_pending, res.final_status) == (2, F.SUCCESS)
    from test_robustness import terminate_backends
    assert terminate_backends(pg_cluster, node.dbname) >= 1
    for _ in range(6):
        res = F.find(node.port, S, F.query_dataset("STUDY", keys))
        assert (res.n_pending, res.final_status) == (2, F.SUCCESS), "0x%04X" % res.final_status
    assert "0xA700" not in node.log_text()


# Names for a leading wildcard only (a suffix): the reversed-name index of
# migration 014 answers these (docs/find.md). LIKE's own wildcards in a
# name are literal characters to DICOM; U+0130 folds to two characters.
SUFFIX_NAMES = ["JOHNSON^ANN", "DOE_SON^BOB", "O%NEILSON^CY", "SONNY^DAN", "PETERSEN^EVE",
                "MÜLLERSOHN^FAY", "İSON^GIL", "ΜΑΡΚΟΣ^ΗΛΙΑΣ", "Johnson^Ivy"]
SUFFIX_QUERIES = [
    ("*SON^ANN", ["JOHNSON^ANN"]),
    ("*son^ann", ["JOHNSON^ANN"]),
    ("*SON^*", None),            # ends with a wildcard: the trigram way
    ("*_SON^BOB", ["DOE_SON^BOB"]),
    ("*%NEILSON^CY", ["O%NEILSON^CY"]),
    ("*?ON^BOB", ["DOE_SON^BOB"]),
    ("*N^?VE", ["PETERSEN^EVE"]),
    ("*ohnson^ivy", ["Johnson^Ivy"]),
    ("*SOHN^FAY", ["MÜLLERSOHN^FAY"]),
    ("*i̇son^gil", ["İSON^GIL"]),
    ("*ΑΣ", ["ΜΑΡΚΟΣ^ΗΛΙΑΣ"]),
    ("*ας", ["ΜΑΡΚΟΣ^ΗΛΙΑΣ"]),
    ("*ZZZ", []),
]


def test_name_suffix_by_reversed_index(node_factory, corpus, testdir, scu_dir):
    """A leading-wildcard-only person name (\"*SON\") is matched through the
    B-tree of reversed folded names (migration 014) with the same answers
    as any other pattern: C-FIND's rules, LIKE's % and _ literal, Unicode
    case folding. The plans are read from PostgreSQL's auto_explain, with
    sequential scans off so that an index is always taken: the trigram
    index answered these before."""
    node = node_factory()
    conn = node.cluster.connect("postgres")
    with conn.cursor() as cur:
        for setting in ("session_preload_libraries = 'auto_explain'",
                        "auto_explain.log_min_duration = 0", "enable_seqscan = off"):
            cur.execute("ALTER DATABASE %s SET %s" % (node.dbname, setting))
    conn.close()
    node.stop()
    node.start_again()
    src = next(e for e in corpus.entries if e["attrs"].get("Modality") == "CT")
    files = []
    for i, name in enumerate(SUFFIX_NAMES):
        ds = pydicom.dcmread(src["abspath"])
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = name
        ds.PatientID = "SUFFIX-%d" % i
        ds.StudyInstanceUID = gen_corpus.make_uid(9, "suffix-study", str(i))
        ds.SeriesInstanceUID = gen_corpus.make_uid(9, "suffix-series", str(i))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = gen_corpus.make_uid(
            9, "suffix-sop", str(i))
        f = os.path.join(testdir, "suffix-%d.dcm" % i)
        ds.save_as(f, write_like_original=False)
        files.append(f)
    run = H.storescu(node.port, files, scu_dir)
    assert run.all_success(), run.summary()
    log = node.cluster.log_path
    for pattern, want in SUFFIX_QUERIES:
        off = os.path.getsize(log)
        q = F.query_dataset("STUDY", {"PatientName": pattern, "PatientID": "SUFFIX-*",
                                      "StudyInstanceUID": ""}, charset="ISO_IR 192")
        res = F.findscu(node.port, q, testdir, model=F.STUDY_ROOT)
        assert res.final == F.SUCCESS, res.summary()
        got = sorted(str(ds.PatientName) for ds in res.responses)
        if want is not None:
            assert got == sorted(want), (pattern, got)
        # the statement's plan (auto_explain logs it when the statement ends)
        deadline = time.monotonic() + 5
        while True:
            with open(log, "rb") as fh:
                fh.seek(off)
                text = fh.read().decode("utf-8", "replace")
            if "patient_name_fold" in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        plans = [p for p in text.split("LOG:  duration:") if "patient_name_fold" in p]
        assert plans, (pattern, text[-2000:])
        uses = "patient_name_fold_rev_idx" in plans[-1]
        assert uses == (want is not None), (pattern, plans[-1])
