"""WADO-RS (issue 20, docs/web.md): the corpus stored over DIMSE comes back
over HTTP as the files the node stored, byte for byte, in
multipart/related; type="application/dicom"; in explicit VR little endian
when the client asks so (decompressed, pixels checked against dcmtk's own
decompressors run on the original file), refused with 406 where only a
lossy way exists or nothing served matches the Accept header; metadata from
the index equals the original files' attributes; unknown UIDs 404."""

import hashlib
import os
import subprocess

import pydicom
import pytest

import findscu_util as F
import web_util as W
from web_util import wnode  # noqa: F401 (a fixture)

ELE = "1.2.840.10008.1.2.1"
DICOM = 'multipart/related; type="application/dicom"'


def stored_path(node, sop):
    [row] = node.query("SELECT path FROM instance WHERE sop_uid = %s", (sop,))
    return os.path.join(node.storage, row["path"])


def sha(data):
    return hashlib.sha256(data).hexdigest()


def dataset_of(data):
    from io import BytesIO
    return pydicom.dcmread(BytesIO(data), force=False)


def by_series(corpus):
    out = {}
    for e in corpus.entries:
        out.setdefault((e["study_instance_uid"], e["series_instance_uid"]), []).append(e)
    return out


def stored_entries(corpus):
    """The first copy of each SOP instance (the node keeps the first)."""
    seen = {}
    for e in corpus.entries:
        seen.setdefault(e["sop_instance_uid"], e)
    return seen


@pytest.mark.parametrize("accept", ["%s; transfer-syntax=*" % DICOM, "*/*", None])
def test_study_as_stored(wnode, corpus, accept):
    """Every study: each instance once, the stored file's bytes exactly."""
    stored = stored_entries(corpus)
    studies = sorted({e["study_instance_uid"] for e in stored.values()})
    for study in studies:
        headers = {"Accept": accept} if accept else {}
        r = W.request(wnode.http_port, "/dicomweb/studies/%s" % study, headers=headers)
        assert r.status == 200, r
        parts = W.multipart(r)
        want = {u for u, e in stored.items() if e["study_instance_uid"] == study}
        got = {}
        for headers_, data in parts:
            ds = dataset_of(data)
            sop = str(ds.SOPInstanceUID)
            assert sop not in got, "%s twice" % sop
            got[sop] = data
            with open(stored_path(wnode, sop), "rb") as f:
                assert sha(f.read()) == sha(data), sop
            assert headers_["content-type"] == "application/dicom; transfer-syntax=%s" % \
                ds.file_meta.TransferSyntaxUID
        assert set(got) == want, study


def test_series_and_instance(wnode, corpus):
    (study, series), entries = sorted(by_series(corpus).items(), key=lambda kv: -len(kv[1]))[0]
    r = W.request(wnode.http_port, "/dicomweb/studies/%s/series/%s" % (study, series),
                  headers={"Accept": DICOM + "; transfer-syntax=*"})
    assert r.status == 200
    assert {str(dataset_of(d).SOPInstanceUID) for _h, d in W.multipart(r)} == \
        {e["sop_instance_uid"] for e in entries}
    e = entries[0]
    r = W.request(wnode.http_port, "/dicomweb/studies/%s/series/%s/instances/%s"
                  % (study, series, e["sop_instance_uid"]),
                  headers={"Accept": DICOM + "; transfer-syntax=*"})
    assert r.status == 200
    [(_h, data)] = W.multipart(r)
    original = pydicom.dcmread(e["abspath"])
    got = dataset_of(data)
    for elem in original:
        assert got[elem.tag].value == elem.value, elem.tag


DECOMPRESSOR = {"jpeg_lossless": "dcmdjpeg", "jpeg_lossless_sv1": "dcmdjpeg",
                "jpeg_baseline": "dcmdjpeg", "jpegls_lossless": "dcmdjpls", "rle": "dcmdrle"}


@pytest.mark.parametrize("ts_name", sorted(DECOMPRESSOR))
def test_converted_to_explicit_little_endian(wnode, corpus, testdir, ts_name):
    """No transfer-syntax parameter means explicit VR little endian (PS3.18
    8.7.3.5.2): a compressed instance comes back decompressed, its pixels
    those dcmtk's own decompressor makes of the original file."""
    from pacsnode_harness import gen_corpus
    entries = [e for e in stored_entries(corpus).values()
               if e["transfer_syntax_uid"] == gen_corpus.TS[ts_name]]
    if not entries:
        pytest.skip("no %s instance in the corpus" % ts_name)
    e = entries[0]
    r = W.request(wnode.http_port, "/dicomweb/studies/%s/series/%s/instances/%s"
                  % (e["study_instance_uid"], e["series_instance_uid"], e["sop_instance_uid"]),
                  headers={"Accept": DICOM})
    assert r.status == 200, r
    [(h, data)] = W.multipart(r)
    assert h["content-type"] == "application/dicom; transfer-syntax=%s" % ELE
    got = dataset_of(data)
    assert got.file_meta.TransferSyntaxUID == ELE
    assert str(got.SOPInstanceUID) == e["sop_instance_uid"]
    ref = os.path.join(testdir, "ref.dcm")
    subprocess.run([DECOMPRESSOR[ts_name], "+te", e["abspath"], ref], check=True,
                   capture_output=True)
    want = pydicom.dcmread(ref)
    assert got.PixelData == want.PixelData


def test_lossy_only_or_unknown_refused(wnode, corpus):
    from pacsnode_harness import gen_corpus
    e = next(x for x in stored_entries(corpus).values()
             if x["transfer_syntax_uid"] == gen_corpus.TS["explicit"])
    url = "/dicomweb/studies/%s/series/%s/instances/%s" % (
        e["study_instance_uid"], e["series_instance_uid"], e["sop_instance_uid"])
    # to a lossy syntax: never
    r = W.request(wnode.http_port, url, headers={"Accept": DICOM + "; transfer-syntax="
                                                 + gen_corpus.TS["jpeg_baseline"]})
    assert r.status == 406, r
    # a media type we do not serve for instances
    assert W.request(wnode.http_port, url, headers={"Accept": "image/jpeg"}).status == 406
    assert W.request(wnode.http_port, url, headers={
        "Accept": 'multipart/related; type="application/dicom+xml"'}).status == 406
    j2k = [x for x in stored_entries(corpus).values()
           if x["transfer_syntax_uid"] in (gen_corpus.TS["j2k"], gen_corpus.TS["j2k_lossless"])]
    if j2k:
        x = j2k[0]
        r = W.request(wnode.http_port, "/dicomweb/studies/%s/series/%s/instances/%s" % (
            x["study_instance_uid"], x["series_instance_uid"], x["sop_instance_uid"]),
            headers={"Accept": DICOM})
        # dcmtk has no JPEG 2000 decoder: it cannot be made explicit LE
        assert r.status == 406, r


def test_metadata_equals_the_files(wnode, corpus):
    """Metadata from the index, without reading the files: every attribute
    of the original file but the bulk data, with its value."""
    (study, series), entries = sorted(by_series(corpus).items(), key=lambda kv: -len(kv[1]))[0]
    for url in ("/dicomweb/studies/%s/metadata" % study,
                "/dicomweb/studies/%s/series/%s/metadata" % (study, series)):
        r = W.request(wnode.http_port, url)
        assert r.status == 200, r
        assert r.header("Content-Type").startswith("application/dicom+json")
        objs = r.json()
        by_sop = {o["00080018"]["Value"][0]: pydicom.Dataset.from_json(o) for o in objs}
        for e in entries:
            got = by_sop[e["sop_instance_uid"]]
            original = pydicom.dcmread(e["abspath"], stop_before_pixels=True)
            for elem in original:
                if elem.tag.group <= 0x0002 or elem.tag == 0x00080005 or elem.VR in (
                        "OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
                    continue
                assert elem.tag in got, "%s missing from the metadata of %s" % (elem.tag, url)
                a = F.normalise(elem.keyword, elem.value) if elem.keyword in F.KIND else elem.value
                b = F.normalise(elem.keyword, got[elem.tag].value) if elem.keyword in F.KIND \
                    else got[elem.tag].value
                if elem.VR == "PN":
                    a, b = str(a or "").rstrip("^="), str(b or "").rstrip("^=")
                if elem.VR in ("DS", "IS", "FD", "FL") and a not in (None, "") and b not in (None, ""):
                    a = [float(x) for x in (a if isinstance(a, pydicom.multival.MultiValue) else [a])]
                    b = [float(x) for x in (b if isinstance(b, pydicom.multival.MultiValue) else [b])]
                if a in (None, "") and b in (None, ""):
                    continue
                assert a == b, "%s %s: file %r, metadata %r" % (e["sop_instance_uid"], elem.tag, a, b)


@pytest.mark.parametrize("path,status", [
    ("/dicomweb/studies/1.2.3", 404),
    ("/dicomweb/studies/1.2.3/metadata", 404),
    ("/dicomweb/studies/1.2.3/series/1.2.4", 404),
    ("/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5", 404),
    ("/dicomweb/studies/1.2.3/series/1.2.4/instances/1.2.5/metadata", 404),
    ("/dicomweb/studies/1..2", 400),
    ("/dicomweb/studies/1.2.3/series/x", 400),
    ("/dicomweb/studies/1.2.3/series/1.2/instances/%2e%2e", 400),
])
def test_unknown_or_bad(wnode, path, status):
    r = W.request(wnode.http_port, path)
    assert r.status == status, r


def test_missing_file_is_left_out_and_logged(wnode, corpus):
    """A file the index names but the disk lost: the rest of the series is
    still served, and the loss is logged (never a silent short answer)."""
    (study, series), entries = sorted(by_series(corpus).items(), key=lambda kv: -len(kv[1]))[0]
    victim = entries[-1]["sop_instance_uid"]
    path = stored_path(wnode, victim)
    hidden = path + ".hidden"
    os.rename(path, hidden)
    try:
        off = os.path.getsize(wnode.log_path)
        r = W.request(wnode.http_port, "/dicomweb/studies/%s/series/%s" % (study, series),
                      headers={"Accept": DICOM + "; transfer-syntax=*"})
        assert r.status == 200
        sops = {str(dataset_of(d).SOPInstanceUID) for _h, d in W.multipart(r)}
        assert victim not in sops and len(sops) == len({e["sop_instance_uid"] for e in entries}) - 1
        with open(wnode.log_path, "rb") as f:
            f.seek(off)
            text = f.read().decode("utf-8", "replace")
        assert victim in text and "missing" in text, text
    finally:
        os.rename(hidden, path)


def frames_of(path):
    """The frames of a file as pydicom gives them for native pixel data, or
    None when compressed."""
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    data = ds.PixelData
    size = len(data) // n if n else len(data)
    bits = int(ds.BitsAllocated) * int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel)
    size = bits // 8
    return [data[i * size:(i + 1) * size] for i in range(n)]


def test_frames(wnode, corpus, testdir):
    """Uncompressed frames: the native pixel data's bytes for a native
    instance; dcmtk's own decompressor's for a compressed one; a frame past
    the end 404."""
    from pacsnode_harness import gen_corpus
    done = 0
    for e in stored_entries(corpus).values():
        ts = e["transfer_syntax_uid"]
        if ts not in (ELE, gen_corpus.TS["jpeg_lossless"], gen_corpus.TS["rle"]):
            continue
        if ts == ELE:
            want = frames_of(e["abspath"])
        else:
            ref = os.path.join(testdir, "ref-%s.dcm" % e["sop_instance_uid"])
            subprocess.run([DECOMPRESSOR["rle" if ts == gen_corpus.TS["rle"] else "jpeg_lossless"], "+te",
                            e["abspath"], ref], check=True, capture_output=True)
            want = frames_of(ref)
        if not want:
            continue
        base = "/dicomweb/studies/%s/series/%s/instances/%s/frames/" % (
            e["study_instance_uid"], e["series_instance_uid"], e["sop_instance_uid"])
        asked = list(range(1, len(want) + 1))[::-1]
        r = W.request(wnode.http_port, base + ",".join(map(str, asked)),
                      headers={"Accept": 'multipart/related; type="application/octet-stream"; '
                                         'transfer-syntax=1.2.840.10008.1.2.1'})
        assert r.status == 200, r
        parts = W.multipart(r)
        assert [d for _h, d in parts] == [want[i - 1] for i in asked]
        assert all(h["content-type"] == "application/octet-stream" for h, _d in parts)
        assert W.request(wnode.http_port, base + str(len(want) + 1)).status == 404
        assert W.request(wnode.http_port, base + "0").status == 400
        # image/jpeg only: the stored JPEG bytes for a JPEG instance, else 406
        assert W.request(wnode.http_port, base + "1", headers={"Accept": "image/jpeg"}).status == \
            (200 if ts == gen_corpus.TS["jpeg_lossless"] else 406)
        done += 1
    assert done >= 3, "test bug: too few instances with frames"


def test_zip_downloads(wnode, corpus):
    """A study and a series as ZIP files: every stored file once, byte for
    byte, CRCs right (zipfile.testzip), names STUDY/SERIES/SOP.dcm."""
    import io
    import zipfile
    (study, series), entries = sorted(by_series(corpus).items(), key=lambda kv: -len(kv[1]))[0]
    for path, want_series in (("/studies/%s/download" % study, None),
                              ("/studies/%s/series/%s/download" % (study, series), series)):
        r = W.request(wnode.http_port, path)
        assert r.status == 200, r
        assert r.header("Content-Type") == "application/zip"
        z = zipfile.ZipFile(io.BytesIO(r.body))
        assert z.testzip() is None
        rows = wnode.query("SELECT i.sop_uid, i.path, se.series_uid FROM instance i JOIN series se ON "
                           "se.pk = i.series_fk JOIN study st ON st.pk = se.study_fk WHERE st.study_uid = %s",
                           (study,))
        if want_series:
            rows = [x for x in rows if x["series_uid"] == want_series]
        names = {"%s/%s/%s.dcm" % (study, x["series_uid"], x["sop_uid"]): x["path"] for x in rows}
        assert set(z.namelist()) == set(names)
        for name, rel in names.items():
            with open(os.path.join(wnode.storage, rel), "rb") as f:
                assert z.read(name) == f.read()
    assert W.request(wnode.http_port, "/studies/1.2.3/download").status == 404
    assert W.request(wnode.http_port, "/studies/1.2.3/series/1.2/download").status == 404


MEDIA = {"1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
         "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
         "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
         "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
         "1.2.840.10008.1.2.5": "image/x-dicom-rle"}


def test_compressed_frames_in_their_own_media_type(wnode, corpus):
    """A frame stored compressed, asked in its own media type (or with any
    transfer syntax): the stored fragments as they are (pydicom's reading of
    the original file's encapsulated pixel data), labelled with the media
    type and the transfer syntax; JPEG 2000 so too, though it cannot be
    decoded here."""
    from pydicom.encaps import generate_pixel_data_frame
    seen = set()
    for e in stored_entries(corpus).values():
        ts = e["transfer_syntax_uid"]
        if ts not in MEDIA or ts in seen:
            continue
        seen.add(ts)
        ds = pydicom.dcmread(e["abspath"])
        n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        want = list(generate_pixel_data_frame(ds.PixelData, n))
        base = "/dicomweb/studies/%s/series/%s/instances/%s/frames/" % (
            e["study_instance_uid"], e["series_instance_uid"], e["sop_instance_uid"])
        for accept in ('multipart/related; type="%s"' % MEDIA[ts],
                       'multipart/related; type="application/octet-stream"; transfer-syntax=*'):
            r = W.request(wnode.http_port, base + "1", headers={"Accept": accept})
            assert r.status == 200, (ts, accept, r)
            [(h, data)] = W.multipart(r)
            assert h["content-type"] == "%s; transfer-syntax=%s" % (MEDIA[ts], ts), h
            assert data == want[0], ts
    assert len(seen) >= 3, "test bug: too few compressed syntaxes in the corpus: %s" % seen


def test_rendered_png_and_jpeg(wnode, corpus):
    """rendered: PNG by default, JPEG when asked (a JFIF stream of the
    instance's size), viewport scaling, 406 for a type we do not make."""
    e = next(x for x in stored_entries(corpus).values() if x["transfer_syntax_uid"] == ELE)
    ds = pydicom.dcmread(e["abspath"])
    base = "/dicomweb/studies/%s/series/%s/instances/%s/rendered" % (
        e["study_instance_uid"], e["series_instance_uid"], e["sop_instance_uid"])
    r = W.request(wnode.http_port, base)
    assert r.status == 200 and r.header("Content-Type") == "image/png"
    import struct
    assert struct.unpack(">II", r.body[16:24]) == (int(ds.Columns), int(ds.Rows))
    r = W.request(wnode.http_port, base + "?quality=80", headers={"Accept": "image/jpeg"})
    assert r.status == 200 and r.header("Content-Type") == "image/jpeg", r
    assert r.body[:3] == b"\xff\xd8\xff" and r.body[-2:] == b"\xff\xd9"
    # the SOF0 frame header names the size
    i = r.body.find(b"\xff\xc0")
    h, w = struct.unpack(">HH", r.body[i + 5:i + 9])
    assert (w, h) == (int(ds.Columns), int(ds.Rows))
    r = W.request(wnode.http_port, base + "?viewport=8,8")
    assert max(struct.unpack(">II", r.body[16:24])) <= 8
    assert W.request(wnode.http_port, base, headers={"Accept": "image/gif"}).status == 406
    assert W.request(wnode.http_port, base + "?quality=0", headers={"Accept": "image/jpeg"}).status == 400
    assert W.request(wnode.http_port, base + "?viewport=0,9").status == 400


def test_retrieves_note_the_access(wnode, corpus):
    """WADO-RS and a study's download set the study's access time (what
    [retention] policy = accessed orders by); a QIDO-RS search does not."""
    studies = sorted({e["study_instance_uid"] for e in stored_entries(corpus).values()})[:2]
    wnode.query("UPDATE study SET accessed_at = NULL WHERE study_uid = ANY(%s)", (studies,))

    def accessed(study):
        return wnode.query("SELECT accessed_at FROM study WHERE study_uid = %s", (study,))[0]["accessed_at"]

    r = W.request(wnode.http_port, "/dicomweb/studies?StudyInstanceUID=%s" % studies[0])
    assert r.status == 200 and accessed(studies[0]) is None, r
    r = W.request(wnode.http_port, "/dicomweb/studies/%s" % studies[0])
    assert r.status == 200 and accessed(studies[0]) is not None, r
    r = W.request(wnode.http_port, "/studies/%s/download" % studies[1])
    assert r.status == 200 and accessed(studies[1]) is not None, r
