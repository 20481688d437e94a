"""The Query/Retrieve extended negotiation (issue 22, points 2 and 3; PS3.4
C.5.1.1.1, C.5.2.1.1, C.5.3.1.1). Relational queries (C.4.1.2.2): a
requestor that proposes byte 0 for the Patient or Study Root C-FIND model
gets it in the A-ASSOCIATE-AC and may then give keys of the levels above,
with any matching, or none; without it the hierarchical rules stay (0xA900
/ 0xC000 for a missing unique key). Relational retrieval (C.4.3.2.2) the
same for C-GET. Empty value matching (byte 5): '""' matches what has the
attribute absent or empty. Fuzzy semantic matching of person names (byte
2): folded, or by a phonetic key. Multiple value matching (byte 6): any of the
'\\'-separated values, each by its own kind. Every field not implemented
is answered 0."""

import os

import pytest

import findscu_util as F
import retrieve_util as R
import web_util as W
import pacsnode_harness as H
from pacsnode_harness import gen_corpus


def uid(*parts):
    return gen_corpus.make_uid(0, "relational", *parts)


PLAN = [("PR-A", "s1", "x1", "CT", 2), ("PR-A", "s1", "x2", "MR", 1), ("PR-B", "s2", "x3", "MR", 2)]


@pytest.fixture
def rnode(node_factory, scu_dir):
    node = node_factory()
    H.store_plan(node, scu_dir, PLAN, uid)
    return node


def query(level, **keys):
    return F.query_dataset(level, keys)


def open_assoc(node, model, offer):
    return F.open_extneg(node.port, "PNREL", model, offer)


def matches(res, kw):
    return sorted(str(getattr(r.dataset, kw)) for r in res.pending)


@pytest.mark.parametrize("model", [F.STUDY_ROOT, F.PATIENT_ROOT])
def test_relational_negotiated_and_answered(rnode, model):
    a = open_assoc(rnode, model, bytes([1, 1, 1, 1, 1, 1, 1]))
    try:
        # bytes 0, 1, 2, 5 and 6 accepted; timezone adjustment (3) and
        # enhanced multi-frame conversion (4) not implemented: 0
        assert a.ext_neg == {model: bytes([1, 1, 1, 1, 0, 1, 1])}, a.ext_neg
        # SERIES by modality across every study and patient
        res = a.c_find(model, query("SERIES", Modality="MR", SeriesInstanceUID=""))
        assert res.final_status == 0x0000
        assert matches(res, "SeriesInstanceUID") == sorted([uid("x2"), uid("x3")])
        # IMAGE by SOP Instance UID alone
        res = a.c_find(model, query("IMAGE", SOPInstanceUID=uid("x3", "2")))
        assert res.final_status == 0x0000 and matches(res, "SOPInstanceUID") == [uid("x3", "2")]
        # an upper-level key with a wildcard
        res = a.c_find(model, query("IMAGE", PatientID="PR-*", SOPInstanceUID="", Modality="CT"))
        assert res.final_status == 0x0000
        assert matches(res, "SOPInstanceUID") == sorted([uid("x1", "1"), uid("x1", "2")])
        a.release()
    finally:
        a.close()


@pytest.mark.parametrize("offer", [None, bytes([0]), bytes([0, 0, 0, 0, 1])])
def test_hierarchical_without_the_negotiation(rnode, offer):
    a = open_assoc(rnode, F.STUDY_ROOT, offer)
    try:
        if offer is None:
            assert a.ext_neg == {}
        else:
            assert a.ext_neg == {F.STUDY_ROOT: bytes(len(offer))}, a.ext_neg
        res = a.c_find(F.STUDY_ROOT, query("SERIES", Modality="MR", SeriesInstanceUID=""))
        assert res.final_status in (0xA900, 0xC000) and not res.pending, res.final_status
        # the hierarchical form still answers
        res = a.c_find(F.STUDY_ROOT, query("SERIES", StudyInstanceUID=uid("s1"), Modality="MR",
                                           SeriesInstanceUID=""))
        assert res.final_status == 0x0000 and matches(res, "SeriesInstanceUID") == [uid("x2")]
        a.release()
    finally:
        a.close()


def get_assoc(node, model, offer):
    a = R.RetrieveAssociation("127.0.0.1", node.port)
    ct = gen_corpus.SOP_CLASS["CT"]
    mr = gen_corpus.SOP_CLASS["MR"]
    a.associate("MOVER", H.NODE_AET, [(model, [R.TS["explicit"]]), (ct, [R.TS["explicit"]]),
                                      (mr, [R.TS["explicit"]])], roles=[ct, mr],
                ext_neg={model: offer} if offer is not None else None)
    return a


@pytest.fixture
def gnode(node_factory, scu_dir):
    node = node_factory(peers={"mover": {"ae_title": "MOVER", "allow": "get, move"}})
    H.store_plan(node, scu_dir, PLAN, uid)
    return node


@pytest.mark.parametrize("model", [R.GET["study"], R.GET["patient"]])
def test_relational_retrieval(gnode, model):
    """C-GET with the unique key of the retrieve level only (PS3.4
    C.4.3.2.2), negotiated: the instance, the series; the AC answers the
    two C-GET fields offered, relational retrieval 1 and enhanced
    multi-frame conversion 0."""
    a = get_assoc(gnode, model, bytes([1, 1]))
    try:
        assert a.ext_neg == {model: bytes([1, 0])}, a.ext_neg
        run = a.retrieve(model, R.retrieve_dataset("IMAGE", {"SOPInstanceUID": uid("x3", "2")}))
        assert run.final.status == 0x0000 and [s["sop_uid"] for s in run.stores] == [uid("x3", "2")]
        run = a.retrieve(model, R.retrieve_dataset("SERIES", {"SeriesInstanceUID": uid("x1")}))
        assert run.final.status == 0x0000
        assert sorted(s["sop_uid"] for s in run.stores) == [uid("x1", "1"), uid("x1", "2")]
        a.release()
    finally:
        a.close()


def test_hierarchical_retrieval_without_the_negotiation(gnode):
    model = R.GET["study"]
    a = get_assoc(gnode, model, None)
    try:
        assert a.ext_neg == {}
        run = a.retrieve(model, R.retrieve_dataset("IMAGE", {"SOPInstanceUID": uid("x3", "2")}))
        assert run.final.status in (0xA900, 0xC000) and not run.stores, run.final.status
        a.release()
    finally:
        a.close()


# ---- Empty Value Matching (extended negotiation byte 5) --------------------

@pytest.fixture
def enode(node_factory, scu_dir):
    """Study e1 with an accession number and a series with an operator,
    e2 without either (absent), e3 with both empty."""
    node = node_factory()
    files = []
    for st, acc, op in (("e1", "ACC-1", "Op^A"), ("e2", None, None), ("e3", "", "")):
        name = "empty-" + st
        attrs = {k: v for k, v in (("AccessionNumber", acc), ("OperatorsName", op)) if v is not None}
        e = gen_corpus.make_instance(os.path.join(str(scu_dir), name + ".dcm"), name=name, patient_id="PE-1",
                                     study_uid=uid(st), series_uid=uid(st, "se"), sop_uid=uid(st, "i"),
                                     set_attrs=attrs,
                                     delete=[k for k, v in (("AccessionNumber", acc), ("OperatorsName", op))
                                             if v is None])
        files.append(e["path"])
    run = H.storescu(node.port, files, str(scu_dir))
    assert run.all_success(), run.summary()
    return node


@pytest.mark.parametrize("model", [F.STUDY_ROOT, F.PATIENT_ROOT])
def test_empty_value_matching(enode, model):
    """Negotiated: '""' matches the entities whose attribute is absent or
    empty, in SQL (AccessionNumber, a column) and on the stored attributes
    (OperatorsName); relational queries not asked, so not given."""
    a = open_assoc(enode, model, bytes([0, 0, 0, 0, 0, 1]))
    try:
        assert a.ext_neg == {model: bytes([0, 0, 0, 0, 0, 1])}, a.ext_neg
        res = a.c_find(model, query("STUDY", PatientID="PE-1", StudyInstanceUID="", AccessionNumber='""'))
        assert res.final_status == 0x0000
        assert matches(res, "StudyInstanceUID") == sorted([uid("e2"), uid("e3")])
        for st, want in (("e1", []), ("e2", [uid("e2", "se")]), ("e3", [uid("e3", "se")])):
            res = a.c_find(model, query("SERIES", PatientID="PE-1", StudyInstanceUID=uid(st),
                                        SeriesInstanceUID="", OperatorsName='""'))
            assert res.final_status == 0x0000 and matches(res, "SeriesInstanceUID") == want, st
        a.release()
    finally:
        a.close()


def test_two_quotes_are_a_value_without_the_negotiation(enode):
    a = open_assoc(enode, F.STUDY_ROOT, None)
    try:
        res = a.c_find(F.STUDY_ROOT, query("STUDY", StudyInstanceUID="", AccessionNumber='""'))
        assert res.final_status == 0x0000 and not res.pending
        a.release()
    finally:
        a.close()


# ---- Multiple Value Matching (extended negotiation byte 6) -----------------

def test_multiple_value_matching(rnode, enode):
    """Negotiated: '\\'-separated values of a non-UID key match when any
    of them does, each by its own kind (a wild card beside an exact value,
    in SQL on PatientID and on the stored OperatorsName); without it a
    wild card in a list is refused as before."""
    a = open_assoc(rnode, F.STUDY_ROOT, bytes([1, 0, 0, 0, 0, 0, 1]))
    try:
        assert a.ext_neg == {F.STUDY_ROOT: bytes([1, 0, 0, 0, 0, 0, 1])}, a.ext_neg
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientID="XX*\\PR-B", StudyInstanceUID=""))
        assert res.final_status == 0x0000 and matches(res, "StudyInstanceUID") == [uid("s2")]
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientID="PR-A\\P?-B", StudyInstanceUID=""))
        assert res.final_status == 0x0000
        assert matches(res, "StudyInstanceUID") == sorted([uid("s1"), uid("s2")])
        res = a.c_find(F.STUDY_ROOT, query("SERIES", Modality="C*\\XA", SeriesInstanceUID=""))
        assert res.final_status == 0x0000 and matches(res, "SeriesInstanceUID") == [uid("x1")]
        a.release()
    finally:
        a.close()
    a = open_assoc(enode, F.STUDY_ROOT, bytes([0, 0, 0, 0, 0, 0, 1]))
    try:
        res = a.c_find(F.STUDY_ROOT, query("SERIES", StudyInstanceUID=uid("e1"), SeriesInstanceUID="",
                                           OperatorsName="Nobody\\op^*"))
        assert res.final_status == 0x0000 and matches(res, "SeriesInstanceUID") == [uid("e1", "se")]
        a.release()
    finally:
        a.close()
    a = open_assoc(rnode, F.STUDY_ROOT, None)
    try:
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientID="XX*\\PR-B", StudyInstanceUID=""))
        assert res.final_status not in (0x0000, 0xFF00, 0xFF01) and not res.pending, res.final_status
        a.release()
    finally:
        a.close()


# ---- Fuzzy semantic matching of person names (byte 2) ----------------------

NAMES = ["Smith^John", "Smyth^Jon", "SMITH^Jane", "Schmidt^John", "Mueller^Anna", "Jones^John", "Celik^Ayse"]


@pytest.fixture
def fnode(node_factory, scu_dir):
    node = node_factory(node_class=W.WebNode)
    files = []
    for k, name in enumerate(NAMES):
        e = gen_corpus.make_instance(os.path.join(str(scu_dir), "fz%d.dcm" % k), name="fz%d" % k,
                                     patient_id="PF-%d" % k, patient_name=name, study_uid=uid("fz", str(k)),
                                     series_uid=uid("fz", str(k), "se"), sop_uid=uid("fz", str(k), "i"))
        files.append(e["path"])
    run = H.storescu(node.port, files, str(scu_dir))
    assert run.all_success(), run.summary()
    return node


def names(res):
    return sorted(str(r.dataset.PatientName) for r in res.pending)


def test_fuzzy_semantic_matching_of_person_names(fnode):
    """Negotiated: a name matches folded, or by the Double Metaphone of its
    family name (and of its given name when the key has one); 'Müller'
    finds 'Mueller'; a wild card stays a case-insensitive wild card.
    Without it only the configured case-insensitive match."""
    a = open_assoc(fnode, F.STUDY_ROOT, bytes([0, 0, 1]))
    try:
        assert a.ext_neg == {F.STUDY_ROOT: bytes([0, 0, 1])}, a.ext_neg
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientName="Smith^John", StudyInstanceUID=""))
        assert res.final_status == 0x0000
        assert names(res) == sorted(["Smith^John", "Smyth^Jon", "SMITH^Jane"]), names(res)
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientName="smyth", StudyInstanceUID=""))
        assert names(res) == sorted(["Smith^John", "Smyth^Jon", "SMITH^Jane"]), names(res)
        res = a.c_find(F.STUDY_ROOT, query("STUDY", SpecificCharacterSet="ISO_IR 192", PatientName="Müller",
                                           StudyInstanceUID=""))
        assert names(res) == ["Mueller^Anna"], names(res)
        res = a.c_find(F.STUDY_ROOT, query("STUDY", SpecificCharacterSet="ISO_IR 192", PatientName="Çelik^Ayşe",
                                           StudyInstanceUID=""))
        assert names(res) == ["Celik^Ayse"], names(res)
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientName="sm*", StudyInstanceUID=""))
        assert names(res) == sorted(["Smith^John", "Smyth^Jon", "SMITH^Jane"]), names(res)
        a.release()
    finally:
        a.close()
    a = open_assoc(fnode, F.STUDY_ROOT, None)
    try:
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientName="Smith^John", StudyInstanceUID=""))
        assert names(res) == ["Smith^John"], names(res)
        a.release()
    finally:
        a.close()


def test_qido_fuzzymatching_is_the_same_matching(fnode):
    """QIDO-RS fuzzymatching=true goes through the same fuzzy matching."""
    got, _ = W.qido(fnode.http_port, "/dicomweb/studies?PatientName=Smyth%5EJohn&fuzzymatching=true")
    assert sorted(str(d.PatientName) for d in got) == sorted(["Smith^John", "Smyth^Jon", "SMITH^Jane"])
    got, _ = W.qido(fnode.http_port, "/dicomweb/studies?PatientName=Smyth%5EJohn")
    assert [str(d.PatientName) for d in got] == []


# ---- Combined date-time matching (byte 1) ----------------------------------

WHEN = [("d1", "20240101", "230000"), ("d2", "20240102", "010000"), ("d3", "20240102", "120000"),
        ("d4", "20240103", "080000")]


@pytest.fixture
def dnode(node_factory, scu_dir):
    node = node_factory()
    files = []
    for st, date, time_ in WHEN:
        e = gen_corpus.make_instance(os.path.join(str(scu_dir), st + ".dcm"), name=st, patient_id="PD-1",
                                     study_uid=uid(st), series_uid=uid(st, "se"), sop_uid=uid(st, "i"),
                                     set_attrs={"StudyDate": date, "StudyTime": time_})
        files.append(e["path"])
    run = H.storescu(node.port, files, str(scu_dir))
    assert run.all_success(), run.summary()
    return node


def test_combined_date_time_matching(dnode):
    """Negotiated: StudyDate 20240101-20240102 with StudyTime 1200-2359 is
    one range from 2024-01-01 12:00 to 2024-01-02 23:59 (d1, d2, d3);
    apart, the time range holds on each day (d1, d3)."""
    keys = dict(PatientID="PD-1", StudyInstanceUID="", StudyDate="20240101-20240102", StudyTime="1200-2359")
    a = open_assoc(dnode, F.STUDY_ROOT, bytes([0, 1]))
    try:
        assert a.ext_neg == {F.STUDY_ROOT: bytes([0, 1])}, a.ext_neg
        res = a.c_find(F.STUDY_ROOT, query("STUDY", **keys))
        assert res.final_status == 0x0000
        assert matches(res, "StudyInstanceUID") == sorted([uid("d1"), uid("d2"), uid("d3")])
        # an open upper date: from 2024-01-02 09:00 on
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientID="PD-1", StudyInstanceUID="",
                                           StudyDate="20240102-", StudyTime="0900-"))
        assert matches(res, "StudyInstanceUID") == sorted([uid("d3"), uid("d4")])
        a.release()
    finally:
        a.close()
    a = open_assoc(dnode, F.STUDY_ROOT, None)
    try:
        res = a.c_find(F.STUDY_ROOT, query("STUDY", **keys))
        assert res.final_status == 0x0000
        assert matches(res, "StudyInstanceUID") == sorted([uid("d1"), uid("d3")])
        a.release()
    finally:
        a.close()


def test_combined_range_with_a_later_start_time(dnode):
    """Negotiated: StudyDate 20240101-20240102 with StudyTime 2200-0600 is
    2024-01-01 22:00 to 2024-01-02 06:00 (d1, d2), a range of instants
    though its times of day run backwards. Not negotiated, the same keys
    are a time range that ends before it starts: refused as before, and a
    reversed time alone (no date range to pair with) is refused even with
    the negotiation."""
    keys = dict(PatientID="PD-1", StudyInstanceUID="", StudyDate="20240101-20240102", StudyTime="2200-0600")
    a = open_assoc(dnode, F.STUDY_ROOT, bytes([0, 1]))
    try:
        res = a.c_find(F.STUDY_ROOT, query("STUDY", **keys))
        assert res.final_status == 0x0000, hex(res.final_status)
        assert matches(res, "StudyInstanceUID") == sorted([uid("d1"), uid("d2")])
        res = a.c_find(F.STUDY_ROOT, query("STUDY", PatientID="PD-1", StudyInstanceUID="", StudyTime="2200-0600"))
        assert res.final_status & 0xF000 in (0xA000, 0xC000), hex(res.final_status)
        a.release()
    finally:
        a.close()
    a = open_assoc(dnode, F.STUDY_ROOT, None)
    try:
        res = a.c_find(F.STUDY_ROOT, query("STUDY", **keys))
        assert res.final_status & 0xF000 in (0xA000, 0xC000), hex(res.final_status)
        assert not res.pending
        a.release()
    finally:
        a.close()
