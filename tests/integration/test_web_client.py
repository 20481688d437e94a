"""An independent DICOMweb client (issue 20): npm's dicomweb-client, what
OHIF uses, run by Node.js against a node holding a study stored over DIMSE:
it finds the study, its series and instances (the attributes C-FIND's model
gives), retrieves the series (bytes identical to the stored files), an
instance's metadata and its first frame (the native pixel data), and stores
an instance with STOW-RS."""

import base64
import json
import os
import shutil
import subprocess
from io import BytesIO

import pydicom
import pytest

import findscu_util as F
import pacsnode_harness as H
import web_util as W

SCRIPT = os.path.join(H.REPO, "tests", "js", "dicomweb_client.js")
MODULES = os.path.join(H.REPO, "tests", "js", "node_modules", "dicomweb-client")
pytestmark = pytest.mark.skipif(not (shutil.which("node") and os.path.isdir(MODULES)),
                                reason="Node.js or tests/js/node_modules missing (scripts/dev.sh test installs them)")


def run_client(node, study, part10, auth=None):
    argv = ["node", SCRIPT, "http://127.0.0.1:%d/dicomweb" % node.http_port, study, part10]
    if auth:
        argv += list(auth)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    steps = {}
    for line in r.stdout.splitlines():
        o = json.loads(line)
        steps[o["step"]] = o["value"]
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return steps


def test_dicomweb_client(node_factory, corpus, scu_dir, testdir, it_base):
    users = W.write_users(os.path.join(testdir, "users"), [("ohif", "viewer", "write")], owner=it_base[1])
    node = node_factory(node_class=W.WebNode, http={"users": users})
    model = F.Model(corpus.entries)
    # the study with the most native instances in one series
    native = [e for e in corpus.entries if e["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"]
    study = max({e["study_instance_uid"] for e in native},
                key=lambda s: len(model.studies[s].children[0].children))
    entries = [e for e in corpus.entries if e["study_instance_uid"] == study]
    run = H.storescu(node.port, [e["abspath"] for e in entries], scu_dir)
    assert run.all_success(), run.summary()
    other = next(e for e in corpus.entries if e["study_instance_uid"] != study)
    steps = run_client(node, study, other["abspath"], auth=("ohif", "viewer"))

    st = model.studies[study]
    [found] = [pydicom.Dataset.from_json(o) for o in steps["studies"]]
    assert found.StudyInstanceUID == study
    assert found.PatientID == st.value("PatientID")
    assert int(found.NumberOfStudyRelatedInstances) == sum(len(s.children) for s in st.children)
    series = [pydicom.Dataset.from_json(o) for o in steps["series"]]
    assert {s.SeriesInstanceUID for s in series} == {s.key for s in st.children}
    first = next(s for s in st.children if s.key == series[0].SeriesInstanceUID)
    instances = [pydicom.Dataset.from_json(o) for o in steps["instances"]]
    assert {i.SOPInstanceUID for i in instances} == {i.key for i in first.children}
    # retrieved: the stored files, byte for byte
    stored = {}
    for row in node.query("SELECT i.sop_uid, i.path FROM instance i JOIN series s ON s.pk = i.series_fk "
                          "WHERE s.series_uid = %s", (first.key,)):
        with open(os.path.join(node.storage, row["path"]), "rb") as f:
            stored[row["sop_uid"]] = f.read()
    # The library asks without a transfer-syntax parameter: explicit VR
    # little endian (PS3.18 8.7.3.5.2). Instances stored so come back as
    # the stored file, byte for byte; the others converted.
    got = {}
    for b in steps["retrieved"]:
        data = base64.b64decode(b)
        ds = pydicom.dcmread(BytesIO(data))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        got[str(ds.SOPInstanceUID)] = data
    assert set(got) == set(stored)
    same = 0
    for uid, data in stored.items():
        if pydicom.dcmread(BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID == \
                "1.2.840.10008.1.2.1":
            assert got[uid] == data, uid
            same += 1
    assert same > 0, "test bug: no instance stored in explicit VR little endian"
    # metadata and the first frame of the first instance found
    sop = instances[0].SOPInstanceUID
    [meta] = [pydicom.Dataset.from_json(o) for o in steps["metadata"]]
    assert meta.SOPInstanceUID == sop
    original = pydicom.dcmread(next(e["abspath"] for e in entries if e["sop_instance_uid"] == sop))
    assert meta.Rows == original.Rows and meta.Columns == original.Columns
    [frame] = [base64.b64decode(b) for b in steps["frames"]]
    if not original.file_meta.TransferSyntaxUID.is_compressed:
        size = int(original.Rows) * int(original.Columns) * int(original.SamplesPerPixel) * \
            int(original.BitsAllocated) // 8
        assert frame == original.PixelData[:size]
    # STOW-RS through the library
    answer = steps["stored"]
    answer = json.loads(answer) if isinstance(answer, str) else answer
    refs = [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]]
    assert refs == [other["sop_instance_uid"]]
    assert node.query("SELECT 1 FROM instance WHERE sop_uid = %s", (other["sop_instance_uid"],))
