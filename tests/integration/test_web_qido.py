"""QIDO-RS (issue 20, docs/web.md): the corpus stored over DIMSE is found
over HTTP with the same matches and the same attribute values C-FIND
answers, checked against the manifest's model (findscu_util.Model), never
against the node or its database; the default return attributes,
includefield, limit and offset, Retrieve URL, bad queries and /health."""

import os

import pydicom
import pytest

import findscu_util as F
import web_util as W
from web_util import wnode  # noqa: F401 (a fixture)
from pacsnode_harness import gen_corpus


def uid(skey, sekey=None):
    if sekey is None:
        return gen_corpus.make_uid(0, "study", skey)
    return gen_corpus.make_uid(0, "series", skey, sekey)


@pytest.fixture(scope="module")
def model(corpus):
    return F.Model(corpus.entries)


def norm(kw, v):
    """F.normalise, with a person name of only delimiters ("^^^^") taken as
    the empty name it means (PS3.5 6.2: trailing empty components and their
    delimiters may be left out): the JSON model writes it without a Value."""
    return empty_name(F.normalise(kw, v if v != "" else None))


def empty_name(v):
    if isinstance(v, str) and v and not v.strip("^= "):
        return None
    return v


def check(model, level, keys, datasets, want_count=None, where=""):
    """QIDO answers against the model: the same set of entities as C-FIND's
    rules give, and the model's value for each key at or above the level."""
    want = model.expect(level, {k: v for k, v in keys.items()})
    if want_count is not None:
        assert len(want) == want_count, "test bug: the model gives %d" % len(want)
    got = {}
    for ds in datasets:
        k = F.response_key(level, ds)
        assert k not in got, "%s: %r answered twice" % (where, k)
        got[k] = ds
    assert set(got) == {e.key for e in want}, "%s: missing %s, unexpected %s" % (
        where, sorted({e.key for e in want} - set(got)), sorted(set(got) - {e.key for e in want}))
    upto = F.LEVELS[:F.LEVELS.index(level) + 1]
    by_key = {e.key: e for e in want}
    problems = []
    for k, ds in got.items():
        e = by_key[k]
        assert "QueryRetrieveLevel" not in ds and "SpecificCharacterSet" not in ds, ds
        for kw in keys:
            if kw in F.COMPUTED:
                v = ds.get(kw)
                want_v = model.computed(e, kw)
                if kw in ("ModalitiesInStudy", "SOPClassesInStudy"):
                    vals = [] if v in (None, "") else (
                        [str(x) for x in v] if isinstance(v, pydicom.multival.MultiValue)
                        else [str(v)])
                    if sorted(vals) != want_v:
                        problems.append("%s %s: %r, want %r" % (k, kw, vals, want_v))
                elif v in (None, "") or int(v) != want_v:
                    problems.append("%s %s: %r, want %r" % (k, kw, v, want_v))
                continue
            try:
                klevel = F.level_of(kw)
            except KeyError:
                continue
            if klevel not in upto:
                continue
            if kw not in ds:
                if empty_name(e.value(kw)) is not None:
                    problems.append("%s: %s missing, want %r" % (k, kw, e.value(kw)))
                continue
            got_v = norm(kw, ds[kw].value if ds[kw].value not in ("", None) else None)
            want_v = empty_name(e.value(kw))
            if F.KIND.get(kw) == "float" and got_v is not None and want_v is not None:
                ok = abs(got_v - want_v) < 1e-9
            else:
                ok = got_v == want_v
            if not ok:
                problems.append("%s: %s %r, want %r" % (k, kw, got_v, want_v))
    assert not problems, "%s:\n  %s" % (where, "\n  ".join(problems))


def test_health(wnode):
    r = W.request(wnode.http_port, "/health")
    assert r.status == 200, r
    assert r.json()["status"] == "ok"


STUDY_DEFAULTS = ["StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
                  "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate",
                  "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"]


def test_all_studies_default_attributes(wnode, model):
    dss, raw = W.qido(wnode.http_port, "/dicomweb/studies")
    check(model, "STUDY", {k: "" for k in STUDY_DEFAULTS}, dss, 24, "/studies")
    for ds, obj in zip(dss, raw):
        # PS3.18 table 10.6.3-3, every one present (empty when unknown)
        for kw in STUDY_DEFAULTS + ["InstanceAvailability", "RetrieveURL"]:
            tag = "%08X" % pydicom.datadict.tag_for_keyword(kw)
            assert tag in obj, "%s missing from %s" % (kw, obj)
        assert ds.InstanceAvailability == "ONLINE"
        assert ds.RetrieveURL == "http://127.0.0.1:%d/dicomweb/studies/%s" % (
            wnode.http_port, ds.StudyInstanceUID)
        assert obj["00100010"]["vr"] == "PN"


def test_person_name_groups(wnode, corpus):
    """PN in the JSON model: Alphabetic / Ideographic / Phonetic groups."""
    entry = next(e for e in corpus.entries if "patient_name_groups" in e)
    groups = entry["patient_name_groups"]
    r = W.request(wnode.http_port, "/dicomweb/studies?StudyInstanceUID=%s"
                  % entry["study_instance_uid"])
    assert r.status == 200, r
    [obj] = r.json()
    [pn] = obj["00100010"]["Value"]
    assert pn.get("Alphabetic") == groups["alphabetic"], pn
    assert pn.get("Ideographic") == groups["ideographic"], pn
    if groups.get("phonetic"):
        assert pn.get("Phonetic") == groups["phonetic"], pn


QIDO_CASES = [
    # (id, path, query params, level, keys checked, expected count)
    ("patient-id", "/dicomweb/studies", {"PatientID": "PN-0003"}, "STUDY",
     {"PatientID": "PN-0003", "PatientName": "", "StudyDescription": ""}, 1),
    ("accession-by-tag", "/dicomweb/studies", {"00080050": "ACC-7007"}, "STUDY",
     {"AccessionNumber": "ACC-7007"}, 1),
    ("name-wildcard-umlaut", "/dicomweb/studies", {"PatientName": "MÜLLER*"}, "STUDY",
     {"PatientName": "MÜLLER*"}, None),
    ("name-lower-case", "/dicomweb/studies", {"PatientName": "müller*"}, "STUDY",
     {"PatientName": "müller*"}, None),
    ("study-date-range", "/dicomweb/studies", {"StudyDate": "20200101-20211231"}, "STUDY",
     {"StudyDate": "20200101-20211231"}, None),
    ("uid-list-comma", "/dicomweb/studies",
     {"StudyInstanceUID": uid("s01") + "," + uid("s04")}, "STUDY",
     {"StudyInstanceUID": uid("s01") + "\\" + uid("s04")}, 2),
    ("modality-in-study", "/dicomweb/studies", {"ModalitiesInStudy": "MR"}, "STUDY",
     {"ModalitiesInStudy": "MR"}, None),
    ("study-series", "/dicomweb/studies/%s/series" % uid("s03"), {}, "SERIES",
     {"StudyInstanceUID": uid("s03"), "Modality": "", "SeriesNumber": "",
      "SeriesDescription": "", "NumberOfSeriesRelatedInstances": ""}, 2),
    ("series-relational-modality", "/dicomweb/series", {"Modality": "CT"}, "SERIES",
     {"Modality": "CT", "SeriesInstanceUID": ""}, None),
    ("series-instances", "/dicomweb/studies/%s/series/%s/instances" % (uid("s07"),
                                                                        uid("s07", "mr4")),
     {}, "IMAGE", {"StudyInstanceUID": uid("s07"), "SeriesInstanceUID": uid("s07", "mr4"),
                   "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": "",
                   "Rows": "", "Columns": ""}, 3),
    ("study-instances", "/dicomweb/studies/%s/instances" % uid("s01"), {}, "IMAGE",
     {"StudyInstanceUID": uid("s01"), "SOPInstanceUID": ""}, None),
    ("instances-relational-sop", "/dicomweb/instances",
     {"SOPInstanceUID": gen_corpus.make_uid(0, "sop", "s07", "nm2", "1")}, "IMAGE",
     {"SOPInstanceUID": gen_corpus.make_uid(0, "sop", "s07", "nm2", "1"),
      "PatientID": "", "StudyInstanceUID": ""}, 1),
    ("includefield", "/dicomweb/studies",
     {"PatientID": "PN-0003", "includefield": "StudyDescription,00100021"}, "STUDY",
     {"PatientID": "PN-0003", "StudyDescription": "", "IssuerOfPatientID": ""}, 1),
]


@pytest.mark.parametrize("path,params,level,keys,count", [c[1:] for c in QIDO_CASES],
                         ids=[c[0] for c in QIDO_CASES])
def test_qido_matches_like_c_find(wnode, model, path, params, level, keys, count):
    from urllib.parse import urlencode
    q = ("?" + urlencode(params)) if params else ""
    dss, _raw = W.qido(wnode.http_port, path + q)
    check(model, level, keys, dss, count, path + q)
    if count is None:
        assert len(dss) > 0, "test bug: the case matches nothing"


def test_same_answer_as_c_find(wnode, testdir):
    """A study level query through findscu and through QIDO-RS: the same
    studies with the same values, key by key."""
    keys = {k: "" for k in STUDY_DEFAULTS if k != "ModalitiesInStudy"}
    keys["PatientName"] = "*"
    run = F.findscu(wnode.port, F.query_dataset("STUDY", keys), testdir, model=F.STUDY_ROOT)
    assert run.final == F.SUCCESS, run.summary()
    dimse = {str(ds.StudyInstanceUID): ds for ds in run.responses}
    dss, _ = W.qido(wnode.http_port, "/dicomweb/studies?PatientName=*")
    web = {str(ds.StudyInstanceUID): ds for ds in dss}
    assert set(web) == set(dimse)
    for u, ds in web.items():
        for kw in keys:
            a = norm(kw, dimse[u].get(kw))
            b = norm(kw, ds.get(kw))
            assert a == b, "%s %s: C-FIND %r, QIDO-RS %r" % (u, kw, a, b)


def test_limit_offset_pages(wnode):
    _, everything = W.qido(wnode.http_port, "/dicomweb/studies")
    seen = []
    for off in range(0, 30, 7):
        _, page = W.qido(wnode.http_port, "/dicomweb/studies?limit=7&offset=%d" % off)
        assert len(page) == min(7, max(0, len(everything) - off))
        seen += [o["0020000D"]["Value"][0] for o in page]
    assert sorted(seen) == sorted(o["0020000D"]["Value"][0] for o in everything)
    assert len(set(seen)) == len(seen)
    _, none = W.qido(wnode.http_port, "/dicomweb/studies?PatientID=NOBODY")
    assert none == []


def test_includefield_all(wnode, corpus):
    e = next(x for x in corpus.entries if x["attrs"].get("StudyDescription"))
    _, [obj] = W.qido(wnode.http_port, "/dicomweb/studies?StudyInstanceUID=%s&includefield=all"
                      % e["study_instance_uid"])
    # StudyDescription is not a default return attribute
    assert obj["00081030"]["Value"] == [e["attrs"]["StudyDescription"]]


BAD = [
    ("/dicomweb/studies?limit=-1", 400, "limit"),
    ("/dicomweb/studies?limit=abc", 400, "limit"),
    ("/dicomweb/studies?NoSuchKeyword=1", 400, "NoSuchKeyword"),
    ("/dicomweb/studies?StudyDate=2020-01", 400, ""),
    ("/dicomweb/studies?includefield=Bogus", 400, "Bogus"),
    ("/dicomweb/studies?fuzzymatching=maybe", 400, "fuzzymatching"),
    ("/dicomweb/studies/..%2F..%2Fetc/series", 400, "UID"),
    ("/dicomweb/studies/1.2.3.abc/series", 400, "UID"),
    ("/dicomweb/studies/1.2.03/series", 400, "UID"),
    ("/dicomweb/nothing", 404, ""),
    ("/nothing/here", 404, ""),
]


@pytest.mark.parametrize("path,status,word", BAD, ids=[b[0] for b in BAD])
def test_bad_queries(wnode, path, status, word):
    off = os.path.getsize(wnode.log_path)
    r = W.request(wnode.http_port, path)
    assert r.status == status, r
    assert r.header("Content-Type").startswith("text/plain")
    assert word in r.body.decode(), r
    with open(wnode.log_path, "rb") as f:
        f.seek(off)
        new = f.read().decode("utf-8", "replace")
    assert any(("%d" % status) in line and "http" in line for line in new.splitlines()), new
    # and the node goes on serving
    assert W.request(wnode.http_port, "/health").status == 200


def test_not_acceptable(wnode):
    r = W.request(wnode.http_port, "/dicomweb/studies", headers={"Accept": "image/png"})
    assert r.status == 406, r


def test_keep_alive_many_requests(wnode):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", wnode.http_port, timeout=10)
    try:
        sock = None
        for _ in range(50):
            r = W.request(wnode.http_port, "/dicomweb/studies?limit=1", conn=conn)
            assert r.status == 200
            assert len(r.json()) == 1
            # one TCP connection throughout: the node keeps it alive
            assert r.header("Connection") != "close", r
            sock = sock or conn.sock
            assert conn.sock is sock
    finally:
        conn.close()


def test_xml_answer(wnode):
    """multipart/related; type="application/dicom+xml": one Native DICOM
    Model document (PS3.19 A.1) a match, the same matches and values as the
    JSON answer."""
    import xml.etree.ElementTree as ET
    _, js = W.qido(wnode.http_port, "/dicomweb/studies?PatientID=PN-000*")
    r = W.request(wnode.http_port, "/dicomweb/studies?PatientID=PN-000*",
                  headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert r.status == 200, r
    parts = W.multipart(r)
    assert len(parts) == len(js) > 0
    by_uid = {o["0020000D"]["Value"][0]: o for o in js}
    for h, data in parts:
        assert h["content-type"] == "application/dicom+xml"
        root = ET.fromstring(data)
        assert root.tag == "NativeDicomModel"
        attrs = {a.get("keyword"): a for a in root.findall("DicomAttribute")}
        uid = attrs["StudyInstanceUID"].find("Value").text
        o = by_uid[uid]
        assert attrs["PatientID"].find("Value").text == o["00100020"]["Value"][0]
        assert "SpecificCharacterSet" not in attrs
        name = attrs["PatientName"].find("PersonName")
        if "Value" in o["00100010"]:
            assert name is not None and name.find("Alphabetic") is not None


def ct_series(corpus):
    """A series of the corpus with pixel data (its study, series and the
    number of its instances)."""
    e = next(x for x in corpus.entries if x["attrs"].get("Modality") == "CT")
    n = sum(1 for x in corpus.entries if x["series_instance_uid"] == e["series_instance_uid"])
    return e["study_instance_uid"], e["series_instance_uid"], n


# Bulk and binary attributes a client may name: PS3.18 10.6.3.3 returns the
# attributes named "that are supported by the origin server"; the index
# keeps no bulk data and the node has no Bulkdata resource to point a
# BulkDataURI at, so they are left out of the answer, never a 400.
BULK = ["PixelData", "7FE00010", "LUTData", "00283006", "OverlayData", "60003000",
        "FloatPixelData", "WaveformData", "EncapsulatedDocument", "IconImageSequence",
        "7FE00010,LUTData,SOPInstanceUID", "00091010", "00091010,00091011,7FE00010"]


@pytest.mark.parametrize("fields", BULK)
def test_includefield_bulk_and_private_ignored(wnode, corpus, fields):
    study, series, n = ct_series(corpus)
    path = "/dicomweb/studies/%s/series/%s/instances" % (study, series)
    _, plain = W.qido(wnode.http_port, path)
    assert len(plain) == n
    r = W.request(wnode.http_port, path + "?includefield=" + fields,
                  headers={"Accept": "application/dicom+json"})
    assert r.status == 200, r
    got = r.json()
    assert len(got) == n
    for obj in got:
        assert "7FE00010" not in obj and "60003000" not in obj, obj
        # what the instances do not have (LUT Data, the corpus holds no
        # private elements) is returned empty, as C-FIND returns a key
        for t, a in obj.items():
            if t == "00283006" or int(t[:4], 16) % 2:
                assert set(a) == {"vr"}, (t, a)
    # the same at the study level and across studies (an instance
    # attribute asked for there is not returned: PS3.18 10.6.3.3)
    for p in ("/dicomweb/studies?includefield=" + fields,
              "/dicomweb/instances?SeriesInstanceUID=%s&includefield=%s" % (series, fields)):
        r = W.request(wnode.http_port, p, headers={"Accept": "application/dicom+json"})
        assert r.status == 200, (p, r)
        assert r.json(), p


def test_includefield_private_returned_when_stored(node_factory, corpus, testdir):
    """A private element named by tag comes back with its Private Creator
    when the index keeps it (PS3.18 10.6.3.3), and a private element the
    instance does not have comes back empty, as C-FIND answers a key;
    neither is a 400."""
    e = next(x for x in corpus.entries if x["attrs"].get("Modality") == "CT"
             and x["transfer_syntax_uid"] in (pydicom.uid.ImplicitVRLittleEndian,
                                              pydicom.uid.ExplicitVRLittleEndian))
    ds = pydicom.dcmread(e["abspath"])
    # explicit VR: in an implicit VR file a private element's VR is unknown
    # (UN) to any reader
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.is_implicit_VR, ds.is_little_endian = False, True
    ds.add_new(0x00090010, "LO", "PACSNODE TEST")
    ds.add_new(0x00091010, "LO", "private text")
    ds.add_new(0x00091011, "US", 7)
    f = os.path.join(testdir, "private.dcm")
    ds.save_as(f, write_like_original=False)
    node = node_factory(node_class=W.WebNode, http={})
    # STOW-RS keeps the file's transfer syntax (storescu's association may
    # agree on implicit VR)
    r = W.stow(node.http_port, [f])
    assert r.status == 200, r
    path = "/dicomweb/studies/%s/series/%s/instances" % (e["study_instance_uid"],
                                                          e["series_instance_uid"])
    _, [obj] = W.qido(node.http_port, path + "?includefield=00091010,00091011,00091020,7FE00010")
    assert obj["00091010"] == {"vr": "LO", "Value": ["private text"]}, obj
    assert obj["00091011"]["Value"] == [7], obj
    assert obj["00090010"]["Value"] == ["PACSNODE TEST"], obj
    assert "7FE00010" not in obj, obj
    assert obj.get("00091020", {"vr": "UN"}) == {"vr": "UN"}, obj
