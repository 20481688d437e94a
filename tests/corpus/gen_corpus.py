#!/usr/bin/python3
"""Deterministic corpus of small DICOM Part-10 files for pacsnode's tests.

    gen_corpus.py OUTDIR [--seed N]          the corpus + OUTDIR/manifest.json
    gen_corpus.py OUTDIR --bad [--seed N]    negative cases + OUTDIR/bad.json

The manifest is the generator's own record of what it wrote: for each file its
path (relative to OUTDIR), transfer syntax, UIDs and the expected *decoded*
value of every attribute the node indexes, normalised the way the index
stores them (dates "YYYY-MM-DD", times "HH:MM:SS[.ffffff]", numbers as
numbers, text as UTF-8, absent as null). For generated files the expected
values come from the generator's inputs; the file is then read back once as a
self-check that dcmtk's converters did not change an indexed attribute. For
the "foreign" files (copied from pydicom's test data, e.g. the JPEG 2000 ones
dcmtk cannot encode) they are what pydicom decodes from the file.

Needs Debian's python3-pydicom and dcmtk (dcmconv, dcmcjpeg, dcmcjpls,
dcmcrle). Same seed, same bytes.
"""

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

import pydicom
import pydicom.config
import pydicom.data
import pydicom.valuerep
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

# --------------------------------------------------------------------------
# What the standard fixes

TS = {
    "implicit": "1.2.840.10008.1.2",
    "explicit": "1.2.840.10008.1.2.1",
    "big": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "jpeg_baseline": "1.2.840.10008.1.2.4.50",
    "jpeg_extended": "1.2.840.10008.1.2.4.51",
    "jpeg_lossless": "1.2.840.10008.1.2.4.57",
    "jpeg_lossless_sv1": "1.2.840.10008.1.2.4.70",
    "jpegls_lossless": "1.2.840.10008.1.2.4.80",
    "jpegls_near": "1.2.840.10008.1.2.4.81",
    "rle": "1.2.840.10008.1.2.5",
    "j2k_lossless": "1.2.840.10008.1.2.4.90",
    "j2k": "1.2.840.10008.1.2.4.91",
}
TS_NAME = {uid: name for name, uid in TS.items()}
ENCAPSULATED = {TS[n] for n in ("jpeg_baseline", "jpeg_extended", "jpeg_lossless",
                                "jpeg_lossless_sv1", "jpegls_lossless", "jpegls_near",
                                "rle", "j2k_lossless", "j2k")}
LOSSY = {"jpeg_baseline", "jpeg_extended", "jpegls_near"}

# How an explicit VR little endian file becomes each transfer syntax. The
# lossy encoders keep our SOP Instance UID (+un): the manifest names it.
CONVERTERS = {
    "implicit": ["dcmconv", "+ti"],
    "big": ["dcmconv", "+tb"],
    "deflated": ["dcmconv", "+td"],
    "jpeg_baseline": ["dcmcjpeg", "+eb", "+un"],
    "jpeg_extended": ["dcmcjpeg", "+ee", "+un"],
    "jpeg_lossless": ["dcmcjpeg", "+el", "+sv", "6"],
    "jpeg_lossless_sv1": ["dcmcjpeg", "+e1"],
    "jpegls_lossless": ["dcmcjpls", "+el"],
    "jpegls_near": ["dcmcjpls", "+en", "+un"],
    "rle": ["dcmcrle"],
}
# Round-robin order for generated instances: every syntax meets several
# modalities and character sets.
GENERATED_TS = ["implicit", "explicit", "big", "deflated", "jpeg_baseline",
                "jpeg_extended", "jpeg_lossless", "jpeg_lossless_sv1",
                "jpegls_lossless", "jpegls_near", "rle"]

SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
}

# The attributes the node indexes, by level, with how each is normalised.
INDEXED = [
    ("patient", "PatientName", "pn"),
    ("patient", "PatientID", "key"),
    ("patient", "IssuerOfPatientID", "key"),
    ("patient", "PatientBirthDate", "date"),
    ("patient", "PatientSex", "text"),
    ("study", "StudyDate", "date"),
    ("study", "StudyTime", "time"),
    ("study", "AccessionNumber", "text"),
    ("study", "StudyID", "text"),
    ("study", "StudyDescription", "text"),
    ("study", "ReferringPhysicianName", "pn"),
    ("series", "Modality", "text"),
    ("series", "SeriesNumber", "int"),
    ("series", "SeriesDescription", "text"),
    ("series", "SeriesDate", "date"),
    ("series", "SeriesTime", "time"),
    ("series", "BodyPartExamined", "text"),
    ("series", "ProtocolName", "text"),
    ("instance", "InstanceNumber", "int"),
    ("instance", "ImageType", "multi"),
    ("instance", "Rows", "int"),
    ("instance", "Columns", "int"),
    ("instance", "NumberOfFrames", "int"),
    ("instance", "SamplesPerPixel", "int"),
    ("instance", "PhotometricInterpretation", "text"),
    ("instance", "SliceThickness", "float"),
    ("instance", "SpacingBetweenSlices", "float"),
    ("instance", "AcquisitionDate", "date"),
    ("instance", "AcquisitionTime", "time"),
    ("instance", "ContentDate", "date"),
    ("instance", "ContentTime", "time"),
]

PYDICOM_DATA = os.path.dirname(pydicom.data.__file__)

# Third-party files: (path under pydicom's data folder, why it is here).
FOREIGN = [
    ("test_files/MR_small_jp2klossless.dcm", "JPEG 2000 lossless, MR"),
    ("test_files/JPEG2000.dcm", "JPEG 2000 (lossy allowed), SC, nested sequences"),
    ("test_files/GDCMJ2K_TextGBR.dcm", "JPEG 2000 lossless, RGB, no patient module at all"),
    ("charset_files/chrH31.dcm", "\\ISO 2022 IR 87, three PN groups"),
    ("charset_files/chrH32.dcm", "ISO 2022 IR 13\\ISO 2022 IR 87, half-width katakana"),
    ("charset_files/chrX1.dcm", "ISO_IR 192"),
    ("charset_files/chrX2.dcm", "GB18030"),
    ("charset_files/chrI2.dcm", "\\ISO 2022 IR 149 (Korean)"),
    ("charset_files/chrGreek.dcm", "ISO_IR 126"),
    ("charset_files/chrGerm.dcm", "ISO_IR 100"),
    ("charset_files/chrRuss.dcm", "ISO_IR 144"),
    ("charset_files/chrArab.dcm", "ISO_IR 127"),
    ("charset_files/chrHbrw.dcm", "ISO_IR 138"),
]

# --------------------------------------------------------------------------
# Normalisation: DICOM string -> the value the index is expected to hold


def norm_date(value):
    """DA "YYYYMMDD" -> "YYYY-MM-DD"; None if absent or not a real date."""
    if value is None:
        return None
    s = str(value).strip()
    if not re.fullmatch(r"\d{8}", s):
        return None
    try:
        return datetime.date(int(s[:4]), int(s[4:6]), int(s[6:])).isoformat()
    except ValueError:
        return None


def norm_time(value):
    """TM "HH[MM[SS[.F{1,6}]]]" -> "HH:MM:SS[.ffffff]"; None if invalid."""
    if value is None:
        return None
    s = str(value).strip()
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", s)
    if not m or (m.group(4) and not m.group(3)):
        return None
    hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    if hh > 23 or mm > 59 or ss > 59:
        return None
    out = "%02d:%02d:%02d" % (hh, mm, ss)
    if m.group(4):
        out += "." + m.group(4).ljust(6, "0")
    return out


def norm_int(value):
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def norm_float(value):
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def norm_text(value):
    if value is None:
        return None
    s = str(value).strip(" \0")
    return s or None


def norm_multi(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        s = "\\".join(str(v).strip() for v in value)
    else:
        s = str(value).strip()
    return s or None


NORMALISE = {
    "pn": norm_text, "text": norm_text, "date": norm_date, "time": norm_time,
    "int": norm_int, "float": norm_float, "multi": norm_multi,
    "key": lambda v: norm_text(v) or "",  # patient key parts: "" when absent
}


def charset_string(ds):
    """Specific Character Set as the index keeps it: the raw value, the
    values joined with a backslash, None when absent."""
    if "SpecificCharacterSet" not in ds:
        return None
    v = ds.SpecificCharacterSet
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(x) for x in v)
    return str(v)


def expected_from_dataset(ds):
    """The normalised indexed values of a dataset as pydicom decodes it."""
    out = {}
    for _level, keyword, kind in INDEXED:
        value = ds.get(keyword)
        if isinstance(value, pydicom.valuerep.PersonName):
            value = str(value)
        out[keyword] = NORMALISE[kind](value)
    return out


# --------------------------------------------------------------------------
# Deterministic identifiers and pixels


def make_uid(seed, *parts):
    """A 2.25 UID derived from the seed and a name: same inputs, same UID."""
    h = hashlib.sha256(("pacsnode-corpus\0%d\0%s" % (seed, "\0".join(parts))).encode()).digest()
    return "2.25.%d" % int.from_bytes(h[:16], "big")


def make_uid_len(seed, length, *parts):
    """A valid UID of exactly `length` characters (up to 64)."""
    base = make_uid(seed, *parts) + ".0."
    rnd = random.Random(base)
    tail = str(rnd.randint(1, 9)) + "".join(str(rnd.randint(0, 9)) for _ in range(64))
    uid = (base + tail)[:length]
    assert len(uid) == length and not uid.endswith(".") and valid_uid(uid)
    return uid


def valid_uid(uid):
    """PS3.5 9.1: digits and dots, components without leading zero, <= 64."""
    return (len(uid) <= 64
            and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", uid) is not None)


def pixel_bytes(rng, rows, cols, frames, samples, bits_alloc, bits_stored):
    """A smooth gradient plus noise: compresses like an image, fits the bits."""
    maxval = (1 << bits_stored) - 1
    out = bytearray()
    for f in range(frames):
        for r in range(rows):
            for c in range(cols):
                for s in range(samples):
                    base = (r * 7 + c * 3 + f * 11 + s * 40) / (rows * 7 + cols * 3 + 60)
                    v = int(base * maxval * 0.8) + rng.randint(0, max(1, maxval // 20))
                    v = min(maxval, max(0, v))
                    out += v.to_bytes(bits_alloc // 8, "little")
    return bytes(out)


# --------------------------------------------------------------------------
# The corpus plan: patients, studies, series. Inputs here are the expected
# values of the manifest.

PATIENTS = [
    # key, charset, name, id, issuer (None: absent), birth, sex
    ("p01", None, "Doe^John", "PN-0001", "HOSP_A", "19700101", "M"),
    ("p02", "ISO_IR 100", "Müller^Hans", "PN-0002", "HOSP_A", "19450704", "M"),
    ("p03", "ISO_IR 100", "Öberg^Åsa", "PN-0003", "HOSP_B", "19881231", "F"),
    ("p04", "ISO_IR 192", "Ελληνική^Δοκιμή", "PN-0004", None, "20000229", "F"),
    ("p05", "ISO_IR 192", "Müller^Jürgen", "PN-0005", "HOSP_A", "19621015", "M"),
    ("p06", "ISO_IR 192", "山田^太郎", "PN-0006", "HOSP_JP", "19550505", "M"),
    ("p07", ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "PN-0007",
     "HOSP_JP", "19800808", "M"),
    # same PatientID, two issuers: two patients
    ("p08", None, "Smith^Anna", "SHARED-42", "HOSP_A", "19900115", "F"),
    ("p09", None, "Smith^Anne", "SHARED-42", "HOSP_B", "19910216", "F"),
    # quotes and SQL wildcards; empty issuer; no birth date, no sex
    ("p10", "ISO_IR 100", "O'Brien^Seán", "PN'0010", "", None, None),
]

STUDIES = [
    # patient, key, date, time, accession, study id, description, referring,
    # series: (key, modality, number, description, date, time, body part,
    #          protocol, instances, rows, cols)
    ("p01", "s01", "20240131", "101530.123", "ACC-1001", "1001", "CT CHEST W/O CONTRAST",
     "Welby^Marcus", [
         ("ct1", "CT", "1", "Axial 5mm", "20240131", "101600", "CHEST", "CHEST_ROUTINE", 3, 16, 16),
         ("sc1", "OT", "900", "Screen capture", "20240131", "103000", None, None, 2, 16, 16),
     ]),
    ("p02", "s02", "20231224", "0915", "ACC-2002", "2002", "Schädel nativ", "Weiß^Jörg", [
        ("mr1", "MR", "1", "T1 axial", "20231224", "091700", "HEAD", "T1_SE_TRA", 3, 24, 32),
        ("mr2", "MR", "2", "T2 coronal", "20231224", "092500.5", "HEAD", "T2_TSE_COR", 2, 32, 32),
    ]),
    ("p03", "s03", "20220615", "143000", "ACC-3003", "3003", "PET/CT Ganzkörper", "Ång^Östen", [
        ("pt1", "PT", "3", "PET AC", "20220615", "145000", "WHOLEBODY", "PET_WB", 3, 16, 16),
        ("ct2", "CT", "2", "CT für AC", "20220615", "144000", "WHOLEBODY", "CTAC", 2, 16, 16),
    ]),
    ("p04", "s04", "20200101", "235959.999999", "ACC-4004", "4004", "Σπινθηρογράφημα οστών",
     "Παπαδόπουλος^Νίκος", [
         ("nm1", "NM", "1", "Ολόσωμο", "20200101", "235959", "WHOLEBODY", "BONE", 2, 16, 16),
     ]),
    ("p05", "s05", "20190310", "080000", "ACC-5005", "5005", "Thorax", "Schröder^Günther", [
        ("ct3", "CT", "1", "Lunge 1mm", "20190310", "080500", "CHEST", "LUNG_HR", 2, 16, 16),
    ]),
    ("p05", "s05b", "20210911", "17", "ACC-5006", "5006", "Knie rechts", None, [
        ("mr3", "MR", "5", "PD fs sag", "20210911", "1715", "KNEE", "KNEE_PD", 2, 16, 16),
    ]),
    ("p06", "s06", "20180707", "120000", "ACC-6006", "6006", "胸部CT", "鈴木^一郎", [
        ("ct4", "CT", "1", "肺野条件", "20180707", "120100", "CHEST", "胸部ルーチン", 3, 16, 16),
    ]),
    ("p07", "s07", "20170404", "091500", "ACC-7007", "7007", "頭部MRI", "Suzuki^Ichiro=鈴木^一郎",
     [
         ("mr4", "MR", "1", "T2強調", "20170404", "091600", "HEAD", "HEAD_T2", 3, 16, 16),
         ("nm2", "NM", "2", "脳血流", "20170404", "100000", "HEAD", "SPECT", 2, 16, 16),
     ]),
    ("p08", "s08", "20160229", "060000", "ACC-8008", "8008", "CT abdomen", "House^Gregory", [
        ("ct5", "CT", "1", "Portal venous", "20160229", "060100", "ABDOMEN", "ABD_PV", 2, 16, 16),
    ]),
    ("p09", "s09", "20150101", "000000", "ACC-9009", "9009", "PET brain", "Grey^Meredith", [
        ("pt2", "PT", "1", "FDG brain", "20150101", "000100", "BRAIN", "PET_BRAIN", 2, 16, 16),
    ]),
    ("p10", "s10", None, None, None, "10010", "100% contrast_phase", "O'Malley^Seán", [
        ("mr5", "MR", None, "Ax T1 'pre'", None, None, "SPINE", "L_SPINE_T1", 2, 16, 16),
    ]),
]


class Plan:
    """One instance to generate: everything the generator decides up front."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def plan_corpus(seed):
    patients = {p[0]: p for p in PATIENTS}
    plans = []
    ts_cycle = 0
    for (pkey, skey, sdate, stime, acc, sid, sdesc, sref, series) in STUDIES:
        _, charset, pname, pid, issuer, birth, sex = patients[pkey]
        study_uid = make_uid(seed, "study", skey)
        for (sekey, modality, senum, sedesc, sedate, setime, body, proto, n, rows, cols) in series:
            series_uid = make_uid(seed, "series", skey, sekey)
            for inum in range(1, n + 1):
                ts = GENERATED_TS[ts_cycle % len(GENERATED_TS)]
                ts_cycle += 1
                sop_uid = make_uid(seed, "sop", skey, sekey, str(inum))
                if (sekey, inum) == ("ct1", 2):
                    sop_uid = make_uid_len(seed, 64, "sop64")  # longest legal UID
                plans.append(Plan(
                    name="%s_%s_%s_%d_%s" % (pkey, skey, sekey, inum, ts),
                    seed=seed, charset=charset, patient_name=pname, patient_id=pid,
                    issuer=issuer, birth=birth, sex=sex,
                    study_uid=study_uid, study_date=sdate, study_time=stime, accession=acc,
                    study_id=sid, study_desc=sdesc, referring=sref,
                    series_uid=series_uid, modality=modality, series_number=senum,
                    series_desc=sedesc, series_date=sedate, series_time=setime,
                    body_part=body, protocol=proto,
                    sop_uid=sop_uid, instance_number=str(inum), ts=ts, rows=rows, cols=cols))
    return plans


def build_dataset(p):
    """A complete dataset for one plan; returns (dataset, expected values)."""
    modality = p.modality
    rgb = modality == "OT"
    frames = 2 if modality == "NM" else 1
    if p.ts == "jpeg_baseline" or rgb:
        bits_alloc, bits_stored = 8, 8
    elif p.ts == "jpeg_extended":
        bits_alloc, bits_stored = 16, 12
    elif modality == "CT":
        bits_alloc, bits_stored = 16, 12
    elif modality == "NM" and p.instance_number == "1":
        bits_alloc, bits_stored = 8, 8
    else:
        bits_alloc, bits_stored = 16, 16
    samples = 3 if rgb else 1
    lossy = p.ts in LOSSY

    ds = Dataset()
    if p.charset is not None:
        ds.SpecificCharacterSet = p.charset
    image_type = ["DERIVED", "SECONDARY"] if lossy else ["ORIGINAL", "PRIMARY"]
    if modality in ("CT", "MR", "PT"):
        image_type.append("AXIAL")
    elif modality == "NM":
        image_type += ["STATIC", "EMISSION"]
    ds.ImageType = image_type
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = p.sop_uid
    if p.study_date:
        ds.StudyDate = p.study_date
    if p.series_date:
        ds.SeriesDate = p.series_date
    acq_date = p.series_date or "20010203"
    ds.AcquisitionDate = acq_date
    ds.ContentDate = acq_date
    if p.study_time:
        ds.StudyTime = p.study_time
    if p.series_time:
        ds.SeriesTime = p.series_time
    ds.AcquisitionTime = "%02d%02d%02d" % (10 + int(p.instance_number), 5, 7)
    ds.ContentTime = "%02d%02d%02d.%03d" % (10 + int(p.instance_number), 5, 9, 250)
    if p.accession is not None:
        ds.AccessionNumber = p.accession
    else:
        ds.AccessionNumber = ""  # type 2: present, empty
    ds.Modality = "OT" if rgb else modality
    if rgb:
        ds.ConversionType = "WSD"
    ds.Manufacturer = "pacsnode corpus"
    ds.InstitutionName = "Test Hospital"
    ds.ReferringPhysicianName = p.referring or ""
    ds.StudyDescription = p.study_desc
    ds.SeriesDescription = p.series_desc
    ds.PatientName = p.patient_name
    ds.PatientID = p.patient_id
    if p.issuer is not None:
        ds.IssuerOfPatientID = p.issuer
    ds.PatientBirthDate = p.birth or ""
    ds.PatientSex = p.sex or ""
    if p.body_part:
        ds.BodyPartExamined = p.body_part
    if modality == "CT":
        ds.SliceThickness = "5" if p.series_number == "1" else "1.25"
        ds.KVP = "120"
    elif modality == "MR":
        ds.SliceThickness = "3.5"
        ds.SpacingBetweenSlices = "4.0"
    elif modality == "PT":
        ds.SliceThickness = "2.0"
    elif modality == "NM":
        ds.SpacingBetweenSlices = "1.25"
    if p.protocol:
        ds.ProtocolName = p.protocol
    ds.StudyInstanceUID = p.study_uid
    ds.SeriesInstanceUID = p.series_uid
    ds.StudyID = p.study_id
    if p.series_number is not None:
        ds.SeriesNumber = p.series_number
    ds.InstanceNumber = p.instance_number
    if not rgb:
        ds.ImagePositionPatient = ["-100", "-100", str(5 * int(p.instance_number))]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = make_uid(p.seed, "for", p.series_uid)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = str(frames)
        ds.FrameIncrementPointer = Tag("SliceVector")
    ds.Rows = p.rows
    ds.Columns = p.cols
    if not rgb:
        ds.PixelSpacing = ["0.5", "0.5"]
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if modality in ("CT", "PT"):
        ds.RescaleIntercept = "-1024" if modality == "CT" else "0"
        ds.RescaleSlope = "1" if modality == "CT" else "0.25"
    if modality == "NM":
        ds.SliceVector = list(range(1, frames + 1))
        ds.NumberOfSlices = frames
        win = Dataset()
        win.EnergyWindowName = "Tc99m"
        ds.EnergyWindowInformationSequence = Sequence([win])
    rng = random.Random(p.sop_uid)
    ds.PixelData = pixel_bytes(rng, p.rows, p.cols, frames, samples, bits_alloc, bits_stored)
    ds["PixelData"].VR = "OB" if bits_alloc == 8 else "OW"

    expected = expected_from_dataset(ds)
    # What dcmcjpeg does on purpose: lossy JPEG of colour becomes YCbCr.
    if rgb and p.ts in ("jpeg_baseline", "jpeg_extended"):
        expected["PhotometricInterpretation"] = "YBR_FULL_422"
    return ds, expected


def write_part10(ds, path, ts_uid):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts_uid
    meta.ImplementationClassUID = "2.25.261818146311413236214325166441376307457"
    meta.ImplementationVersionName = "PN_CORPUS_1"
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.is_little_endian = True
    ds.is_implicit_VR = ts_uid == TS["implicit"]
    with quiet_pydicom():
        ds.save_as(path, write_like_original=False)


@contextlib.contextmanager
def quiet_pydicom():
    """Writing deliberately invalid values must not warn or raise."""
    old = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom.config.settings.writing_validation_mode = old


def convert(src, dst, ts):
    """src (explicit VR LE) -> dst in transfer syntax `ts` (a TS key)."""
    if ts == "explicit":
        shutil.copyfile(src, dst)
        return
    cmd = CONVERTERS[ts] + ["-q", src, dst]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not os.path.exists(dst):
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stdout))


def file_facts(path):
    with open(path, "rb") as f:
        data = f.read()
    return len(data), hashlib.sha256(data).hexdigest()


def entry_for(outdir, path, ds, expected, origin, extra=None):
    size, sha = file_facts(path)
    e = {
        "path": os.path.relpath(path, outdir),
        "origin": origin,
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
        "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "specific_character_set": charset_string(ds),
        "size": size,
        "sha256": sha,
        "attrs": expected,
    }
    if extra:
        e.update(extra)
    return e


def generate(outdir, seed=0):
    """Writes the corpus and manifest.json into outdir; returns the manifest."""
    os.makedirs(outdir, exist_ok=True)
    gen_dir = os.path.join(outdir, "generated")
    foreign_dir = os.path.join(outdir, "foreign")
    for d in (gen_dir, foreign_dir):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
    entries = []
    with tempfile.TemporaryDirectory(prefix="pn-corpus-") as work:
        for p in plan_corpus(seed):
            ds, expected = build_dataset(p)
            base = os.path.join(work, p.name + ".base.dcm")
            write_part10(ds, base, TS["explicit"])
            final = os.path.join(gen_dir, p.name + ".dcm")
            convert(base, final, p.ts)
            got = pydicom.dcmread(final)
            self_check(final, got, expected, TS[p.ts], p)
            extra = {"lossy": p.ts in LOSSY}
            if "=" in p.patient_name:
                groups = p.patient_name.split("=")
                extra["patient_name_groups"] = dict(zip(
                    ("alphabetic", "ideographic", "phonetic"), groups))
            entries.append(entry_for(outdir, final, got, expected, "generated", extra))

    for rel, why in FOREIGN:
        src = os.path.join(PYDICOM_DATA, rel)
        dst = os.path.join(foreign_dir, os.path.basename(rel))
        shutil.copyfile(src, dst)
        ds = pydicom.dcmread(dst)
        entries.append(entry_for(outdir, dst, ds, expected_from_dataset(ds), "foreign",
                                 {"source": "pydicom/data/" + rel, "note": why}))

    manifest = {
        "format": 1,
        "seed": seed,
        "generator": "tests/corpus/gen_corpus.py",
        "pydicom": pydicom.__version__,
        "files": entries,
        "expected": expected_counts(entries),
    }
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    write_storescu_profile(
        [(e["sop_class_uid"], e["transfer_syntax_uid"]) for e in entries],
        os.path.join(outdir, "storescu.cfg"))
    return manifest


def self_check(path, got, expected, ts_uid, plan):
    """The converted file must still carry what the manifest promises."""
    for kw, want in (("SOPInstanceUID", plan.sop_uid), ("StudyInstanceUID", plan.study_uid),
                     ("SeriesInstanceUID", plan.series_uid)):
        if got.get(kw) != want or (kw == "SOPInstanceUID"
                                   and got.file_meta.MediaStorageSOPInstanceUID != want):
            raise RuntimeError("%s: converter changed %s" % (path, kw))
    if str(got.file_meta.TransferSyntaxUID) != ts_uid:
        raise RuntimeError("%s: transfer syntax %s, wanted %s"
                           % (path, got.file_meta.TransferSyntaxUID, ts_uid))
    actual = expected_from_dataset(got)
    diff = {k: (expected[k], actual[k]) for k in expected if expected[k] != actual[k]}
    if diff:
        raise RuntimeError("%s: converter changed indexed attributes: %r" % (path, diff))


def expected_counts(entries):
    """Rows the index must hold after storing every entry, and a check that
    the corpus itself is a consistent hierarchy."""
    study_patient, series_study = {}, {}
    for e in entries:
        pkey = (e["attrs"]["PatientID"], e["attrs"]["IssuerOfPatientID"])
        if study_patient.setdefault(e["study_instance_uid"], pkey) != pkey:
            raise RuntimeError("corpus bug: study %s under two patients" % e["study_instance_uid"])
        if series_study.setdefault(e["series_instance_uid"], e["study_instance_uid"]) \
                != e["study_instance_uid"]:
            raise RuntimeError("corpus bug: series %s in two studies" % e["series_instance_uid"])
    sops = [e["sop_instance_uid"] for e in entries]
    if len(set(sops)) != len(sops):
        raise RuntimeError("corpus bug: duplicate SOP Instance UID")
    return {
        "patients": len(set(study_patient.values())),
        "studies": len(study_patient),
        "series": len(series_study),
        "instances": len(sops),
    }


def write_storescu_profile(pairs, path, profile="Corpus"):
    """A storescu association profile (-xf path profile) proposing one
    presentation context per (SOP class, transfer syntax) with that syntax
    alone, so that storescu sends every file as it is, never transcoded."""
    pairs = sorted(set(pairs))
    if len(pairs) > 128:
        raise ValueError("more than 128 presentation contexts")
    syntaxes = sorted({ts for _, ts in pairs})
    ts_label = {ts: "TS%d" % i for i, ts in enumerate(syntaxes, 1)}
    lines = ["[[TransferSyntaxes]]"]
    for ts in syntaxes:
        lines += ["[%s]" % ts_label[ts], "TransferSyntax1 = %s" % ts]
    lines += ["", "[[PresentationContexts]]", "[%sContexts]" % profile]
    for i, (cls, ts) in enumerate(pairs, 1):
        lines.append("PresentationContext%d = %s\\%s" % (i, cls, ts_label[ts]))
    lines += ["", "[[Profiles]]", "[%s]" % profile,
              "PresentationContexts = %sContexts" % profile, ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return profile


# --------------------------------------------------------------------------
# Single instances and negative cases


def make_instance(path, seed=0, name="extra", *, patient_id="PN-X", issuer="HOSP_X",
                  patient_name="Extra^Patient", charset=None, study_uid=None,
                  series_uid=None, sop_uid=None, modality="CT", instance_number="1",
                  ts="explicit", set_attrs=None, delete=()):
    """Writes one valid-by-default CT/MR/PT/NM instance to `path`.

    UIDs default to ones derived from (seed, name). `set_attrs` overrides
    attributes by keyword after the dataset is built, `delete` removes them;
    patch_meta_sop_uid() then makes the meta header disagree. Returns the
    manifest-style entry (UIDs, expected attrs, size, sha256)."""
    with quiet_pydicom():
        return _make_instance(path, seed, name, patient_id, issuer, patient_name, charset,
                              study_uid, series_uid, sop_uid, modality, instance_number, ts,
                              set_attrs, delete)


def _make_instance(path, seed, name, patient_id, issuer, patient_name, charset, study_uid,
                   series_uid, sop_uid, modality, instance_number, ts, set_attrs, delete):
    p = Plan(name=name, seed=seed, charset=charset, patient_name=patient_name,
             patient_id=patient_id, issuer=issuer, birth="19800101", sex="O",
             study_uid=study_uid or make_uid(seed, "x-study", name),
             study_date="20240101", study_time="120000", accession="X-" + name[:12],
             study_id="X1", study_desc="extra " + name, referring="Ref^Erence",
             series_uid=series_uid or make_uid(seed, "x-series", name), modality=modality,
             series_number="1", series_desc="extra series", series_date="20240101",
             series_time="120100", body_part="CHEST", protocol="EXTRA",
             sop_uid=sop_uid or make_uid(seed, "x-sop", name),
             instance_number=str(instance_number), ts=ts, rows=16, cols=16)
    ds, _ = build_dataset(p)
    for k, v in (set_attrs or {}).items():
        setattr(ds, k, v)
    for k in delete:
        if k in ds:
            delattr(ds, k)
    expected = expected_from_dataset(ds)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ts == "explicit":
        write_part10(ds, path, TS["explicit"])
    else:
        with tempfile.TemporaryDirectory(prefix="pn-inst-") as work:
            base = os.path.join(work, "base.dcm")
            write_part10(ds, base, TS["explicit"])
            convert(base, path, ts)
    got = pydicom.dcmread(path)
    uid = lambda kw: str(got.get(kw)) if kw in got else None  # noqa: E731
    size, sha = file_facts(path)
    return {
        "path": path, "transfer_syntax_uid": str(got.file_meta.TransferSyntaxUID),
        "sop_class_uid": uid("SOPClassUID"), "sop_instance_uid": uid("SOPInstanceUID"),
        "study_instance_uid": uid("StudyInstanceUID"),
        "series_instance_uid": uid("SeriesInstanceUID"),
        "meta_sop_instance_uid": str(got.file_meta.MediaStorageSOPInstanceUID),
        "specific_character_set": charset_string(got),
        "size": size, "sha256": sha, "attrs": expected,
    }


def patch_meta_sop_uid(entry):
    """Makes the meta header's MediaStorageSOPInstanceUID differ from the
    dataset's SOPInstanceUID, in place in the file (pydicom rewrites the meta
    header from the dataset when it saves): same length, last digit changed."""
    sop = entry["sop_instance_uid"]
    other = sop[:-1] + str((int(sop[-1]) + 1) % 10)
    with open(entry["path"], "rb") as fp:
        data = fp.read()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    at = data.find(sop.encode(), 132, meta_end)
    if at < 0:
        raise RuntimeError("%s: SOP Instance UID not in the meta header" % entry["path"])
    data = data[:at] + other.encode() + data[at + len(sop):]
    with open(entry["path"], "wb") as fp:
        fp.write(data)
    entry["meta_sop_instance_uid"] = other
    entry["size"], entry["sha256"] = file_facts(entry["path"])
    return entry


# Invalid UIDs: (case name, attribute, value, why invalid)
BAD_UIDS = [
    ("sop_uid_letters", "SOPInstanceUID", "1.2.840.10008.999.abc", "letters"),
    ("sop_uid_too_long", "SOPInstanceUID", "1.2." + "1" * 61, "65 characters"),
    ("sop_uid_empty_component", "SOPInstanceUID", "1.2..3", "empty component"),
    ("sop_uid_leading_zero", "SOPInstanceUID", "1.2.03.4", "component with leading zero"),
    ("sop_uid_trailing_dot", "SOPInstanceUID", "1.2.3.", "trailing dot"),
    ("sop_uid_traversal", "SOPInstanceUID", "1.2.3/../../x", "path traversal"),
    ("sop_uid_dotdot", "SOPInstanceUID", "..", "'..' alone"),
    ("study_uid_traversal", "StudyInstanceUID", "../../etc", "path traversal"),
    ("study_uid_too_long", "StudyInstanceUID", "1.2." + "3" * 61, "65 characters"),
    ("study_uid_letters", "StudyInstanceUID", "1.2.x.4", "letters"),
    ("series_uid_slash", "SeriesInstanceUID", "1.2.3/4", "slash"),
    ("series_uid_leading_zero", "SeriesInstanceUID", "1.2.00", "component with leading zero"),
    # dcmtk removes the space when it reads the file (storescu sends 1.2.3):
    # only a raw sender delivers this one as written.
    ("series_uid_space", "SeriesInstanceUID", "1.2 .3", "embedded space"),
]


def make_bad(outdir, seed=0):
    """Writes the negative cases into outdir and outdir/bad.json; returns it.

    Each case: name, files (in sending order), expect:
      "refuse"          every file must get a failure status;
      "refuse_second"   the first file stores, the second is refused;
      "store"           the file stores (meta header mismatch: the meta
                        header never travels in a C-STORE)."""
    os.makedirs(outdir, exist_ok=True)
    cases = []

    def add(name, expect, why, files):
        cases.append({"name": name, "expect": expect, "why": why,
                      "files": [dict(f, path=os.path.relpath(f["path"], outdir)) for f in files]})

    f = make_instance(os.path.join(outdir, "missing_study_uid.dcm"), seed, "missing_study_uid",
                      delete=["StudyInstanceUID"])
    add("missing_study_uid", "refuse", "no StudyInstanceUID", [f])
    for name, attr, value, why in BAD_UIDS:
        f = make_instance(os.path.join(outdir, name + ".dcm"), seed, name,
                          set_attrs={attr: value})
        f["bad_attribute"], f["bad_value"] = attr, value
        add(name, "refuse", why, [f])

    a = make_instance(os.path.join(outdir, "conflict_series_a.dcm"), seed, "conflict_series_a",
                      patient_id="PN-CS")
    b = make_instance(os.path.join(outdir, "conflict_series_b.dcm"), seed, "conflict_series_b",
                      patient_id="PN-CS", series_uid=a["series_instance_uid"])
    add("conflict_series", "refuse_second", "series already belongs to another study", [a, b])

    a = make_instance(os.path.join(outdir, "conflict_study_a.dcm"), seed, "conflict_study_a",
                      patient_id="PN-CSA", patient_name="First^Owner")
    b = make_instance(os.path.join(outdir, "conflict_study_b.dcm"), seed, "conflict_study_b",
                      patient_id="PN-CSB", patient_name="Second^Owner",
                      study_uid=a["study_instance_uid"])
    add("conflict_study", "refuse_second", "study already belongs to another patient", [a, b])

    f = make_instance(os.path.join(outdir, "meta_mismatch.dcm"), seed, "meta_mismatch")
    patch_meta_sop_uid(f)
    add("meta_mismatch", "store",
        "meta header SOP Instance UID differs from the dataset's; storescu sends the "
        "dataset's as Affected SOP Instance UID", [f])

    bad = {"format": 1, "seed": seed, "cases": cases}
    with open(os.path.join(outdir, "bad.json"), "w", encoding="utf-8") as fp:
        json.dump(bad, fp, ensure_ascii=False, indent=1, sort_keys=True)
        fp.write("\n")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bad", action="store_true", help="write the negative cases instead")
    args = ap.parse_args(argv)
    if args.bad:
        bad = make_bad(args.outdir, args.seed)
        print("%d negative cases in %s" % (len(bad["cases"]), args.outdir))
    else:
        m = generate(args.outdir, args.seed)
        print("%d files in %s: %r" % (len(m["files"]), args.outdir, m["expected"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
