"""What C-FIND (and QIDO-RS, the same code) says of what the node holds
beyond the stored attributes (issue 22, point 4): SOP Classes in Study
kept with the study by triggers (exact after stores, deletes and a
reindex), and Instance Availability OFFLINE, at every level, for what
holds an instance whose file pacsnodectl verify --repair found missing."""

import os

import pytest

import findscu_util as F
import pacsnode_harness as H
from pacsnode_harness import gen_corpus
from test_ctl_delete import ctl

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def uid(*parts):
    return gen_corpus.make_uid(0, "find-kept", *parts)


# (patient, study, series, modality, instances)
PLAN = [("PK-A", "s1", "x1", "CT", 3), ("PK-A", "s1", "x2", "MR", 2), ("PK-A", "s2", "x3", "CT", 1),
        ("PK-B", "s3", "x4", "CT", 2)]


@pytest.fixture
def kept_node(node_factory, scu_dir):
    node = node_factory()
    H.store_plan(node, scu_dir, PLAN, uid)
    return node


def find(node, scu_dir, level, keys, model=F.STUDY_ROOT):
    run = F.findscu(node.port, F.query_dataset(level, keys), str(scu_dir), model=model)
    assert run.final == 0, run.summary()
    return run.responses


def values(v):
    if v is None or v == "":
        return []
    return sorted(str(x) for x in v) if not isinstance(v, str) else [v]


def classes_by_study(node, scu_dir):
    return {str(ds.StudyInstanceUID): values(ds.get("SOPClassesInStudy"))
            for ds in find(node, scu_dir, "STUDY", {"StudyInstanceUID": "", "SOPClassesInStudy": ""})}


def kept_pairs_match_instances(node):
    kept = node.query("SELECT study_fk, sop_class_uid FROM study_sop_class ORDER BY 1, 2")
    derived = node.query("SELECT DISTINCT se.study_fk, i.sop_class_uid FROM instance i"
                         " JOIN series se ON se.pk = i.series_fk ORDER BY 1, 2")
    return kept == derived


def test_sop_classes_in_study_kept_through_stores_and_deletes(kept_node, scu_dir):
    node = kept_node
    assert classes_by_study(node, scu_dir) == {uid("s1"): sorted([CT, MR]), uid("s2"): [CT], uid("s3"): [CT]}
    assert kept_pairs_match_instances(node)
    # the MR series goes: its class with it; one CT of three: the class stays
    r = ctl(node, "delete", "series", uid("x2"), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    r = ctl(node, "delete", "instance", uid("x1", "1"), "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert classes_by_study(node, scu_dir) == {uid("s1"): [CT], uid("s2"): [CT], uid("s3"): [CT]}
    assert kept_pairs_match_instances(node)


def test_instance_availability_offline_where_a_file_is_missing(kept_node, scu_dir):
    node = kept_node
    [row] = node.query("SELECT path FROM instance WHERE sop_uid = %s", (uid("x2", "1"),))
    os.unlink(os.path.join(node.storage, row["path"]))
    # before verify has looked, the node does not know
    images = find(node, scu_dir, "IMAGE", {"StudyInstanceUID": uid("s1"), "SeriesInstanceUID": uid("x2"),
                                           "SOPInstanceUID": "", "InstanceAvailability": ""})
    assert {str(ds.InstanceAvailability) for ds in images} == {"ONLINE"}
    r = ctl(node, "verify", "--repair")
    assert r.returncode == 1 and uid("x2", "1") in r.stdout + r.stderr, r.stdout + r.stderr

    images = find(node, scu_dir, "IMAGE", {"StudyInstanceUID": uid("s1"), "SeriesInstanceUID": uid("x2"),
                                           "SOPInstanceUID": "", "InstanceAvailability": ""})
    assert {str(ds.SOPInstanceUID): str(ds.InstanceAvailability) for ds in images} == {
        uid("x2", "1"): "OFFLINE", uid("x2", "2"): "ONLINE"}
    series = find(node, scu_dir, "SERIES", {"StudyInstanceUID": uid("s1"), "SeriesInstanceUID": "",
                                            "InstanceAvailability": ""})
    assert {str(ds.SeriesInstanceUID): str(ds.InstanceAvailability) for ds in series} == {
        uid("x1"): "ONLINE", uid("x2"): "OFFLINE"}
    studies = find(node, scu_dir, "STUDY", {"StudyInstanceUID": "", "InstanceAvailability": ""})
    assert {str(ds.StudyInstanceUID): str(ds.InstanceAvailability) for ds in studies} == {
        uid("s1"): "OFFLINE", uid("s2"): "ONLINE", uid("s3"): "ONLINE"}
    patients = find(node, scu_dir, "PATIENT", {"PatientID": "", "InstanceAvailability": ""},
                    model=F.PATIENT_ROOT)
    assert {str(ds.PatientID): str(ds.InstanceAvailability) for ds in patients} == {
        "PK-A": "OFFLINE", "PK-B": "ONLINE"}
