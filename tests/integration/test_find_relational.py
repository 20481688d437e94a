"""Relational queries (issue 22, point 2; PS3.4 C.4.1.2.2 and C.5.1.1.1):
a requestor that proposes extended negotiation byte 0 for the Patient or
Study Root C-FIND model gets it in the A-ASSOCIATE-AC (every other field
it offered answered 0: not supported) and may then give keys of the levels
above, with any matching, or none; without the negotiation the
hierarchical rules stay (0xA900 / 0xC000 for a missing unique key)."""

import os

import pytest
from pydicom.dataset import Dataset

import findscu_util as F
import retrieve_util as R
import pacsnode_harness as H
from pacsnode_harness import gen_corpus


def uid(*parts):
    return gen_corpus.make_uid(0, "relational", *parts)


PLAN = [("PR-A", "s1", "x1", "CT", 2), ("PR-A", "s1", "x2", "MR", 1), ("PR-B", "s2", "x3", "MR", 2)]


@pytest.fixture
def rnode(node_factory, scu_dir):
    node = node_factory()
    files = []
    for pid, st, se, mod, n in PLAN:
        for i in range(1, n + 1):
            name = "%s-%s-%d" % (st, se, i)
            e = gen_corpus.make_instance(os.path.join(str(scu_dir), name + ".dcm"), name=name, patient_id=pid,
                                         study_uid=uid(st), series_uid=uid(se), sop_uid=uid(se, str(i)),
                                         modality=mod, instance_number=i)
            files.append(e["path"])
    run = H.storescu(node.port, files, str(scu_dir))
    assert run.all_success(), run.summary()
    return node


def query(level, **keys):
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def open_assoc(node, model, offer):
    a = F.FindAssociation("127.0.0.1", node.port)
    a.associate("PNREL", H.NODE_AET, model, ext_neg={model: offer} if offer is not None else None)
    return a


def matches(res, kw):
    return sorted(str(getattr(r.dataset, kw)) for r in res.pending)


@pytest.mark.parametrize("model", [F.STUDY_ROOT, F.PATIENT_ROOT])
def test_relational_negotiated_and_answered(rnode, model):
    a = open_assoc(rnode, model, bytes([1, 1, 1, 1, 1, 1, 1]))
    try:
        # byte 0 accepted, the fields not implemented answered 0
        assert a.ext_neg == {model: bytes([1, 0, 0, 0, 0, 0, 0])}, a.ext_neg
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


@pytest.mark.parametrize("offer", [None, bytes([0]), bytes([0, 1])])
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
    files = []
    for pid, st, se, mod, n in PLAN:
        for i in range(1, n + 1):
            name = "%s-%s-%d" % (st, se, i)
            e = gen_corpus.make_instance(os.path.join(str(scu_dir), name + ".dcm"), name=name, patient_id=pid,
                                         study_uid=uid(st), series_uid=uid(se), sop_uid=uid(se, str(i)),
                                         modality=mod, instance_number=i)
            files.append(e["path"])
    run = H.storescu(node.port, files, str(scu_dir))
    assert run.all_success(), run.summary()
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
