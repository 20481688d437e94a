"""Checks pacsnode's integration tests share: the storage tree against the
index, a stored Part-10 file against the one sent, index rows against the
corpus manifest."""

import datetime
import hashlib

import xxhash
import os

import pydicom

from pacsnode_harness import gen_corpus


# --------------------------------------------------------------------------
# Storage and index checks


def walk_files(top):
    """Every non-directory under top, as paths relative to top."""
    out = set()
    for root, dirs, files in os.walk(top):
        for name in files:
            out.add(os.path.relpath(os.path.join(root, name), top))
    return out


def tree_snapshot(top, ignore=()):
    """{relative path: (size, mtime_ns)} of the files under top."""
    snap = {}
    for rel in walk_files(top):
        if any(rel == i or rel.startswith(i + os.sep) for i in ignore):
            continue
        try:
            st = os.lstat(os.path.join(top, rel))
        except FileNotFoundError:
            continue
        snap[rel] = (st.st_size, st.st_mtime_ns)
    return snap


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksum_file(path):
    """The node's checksum: "xxh3-128:" + XXH3 128-bit in canonical hex."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "xxh3-128:" + h.hexdigest()


def instance_rows(node):
    return node.query("SELECT * FROM instance ORDER BY sop_uid")


def storage_problems(node):
    """What is wrong with the storage tree against the index: files in tmp/,
    files no row references, rows whose file is missing or outside the root,
    size/sha256 mismatches. Empty list when all is well."""
    problems = []
    root = os.path.realpath(node.storage)
    tmp = os.path.join(root, "tmp")
    if os.path.isdir(tmp):
        left = sorted(walk_files(tmp))
        if left:
            problems.append("left in %s: %s" % (tmp, left[:10]))
    rows = instance_rows(node)
    referenced = set()
    for r in rows:
        rel = r["path"]
        if os.path.isabs(rel) or ".." in rel.split("/") or rel.startswith("tmp/"):
            problems.append("row %s: bad path %r" % (r["sop_uid"], rel))
            continue
        full = os.path.realpath(os.path.join(root, rel))
        if not full.startswith(root + os.sep):
            problems.append("row %s: path %r leaves the storage root" % (r["sop_uid"], rel))
            continue
        referenced.add(os.path.relpath(full, root))
        if not os.path.isfile(full):
            problems.append("row %s: file %s missing" % (r["sop_uid"], full))
            continue
        size = os.path.getsize(full)
        if size != r["size"]:
            problems.append("row %s: size %s, file has %d" % (r["sop_uid"], r["size"], size))
        digest = checksum_file(full)
        if digest != r["checksum"]:
            problems.append("row %s: checksum %s, file has %s" % (r["sop_uid"], r["checksum"], digest))
    on_disk = {p for p in walk_files(root) if not p.startswith("tmp" + os.sep)}
    orphans = sorted(on_disk - referenced)
    if orphans:
        problems.append("files no row references: %s" % orphans[:10])
    return problems


# The counts C-FIND returns and Modalities in Study are kept in the rows by
# triggers (db/migrations/004 and 005): after every test, whatever it
# stored, duplicated, replaced, refused or crashed, they must equal what
# the rows say, and no shard row may be left unfolded.
_COUNT_CHECK = """
SELECT 'series ' || s.pk FROM series s
 WHERE s.n_instances <> (SELECT count(*) FROM instance i WHERE i.series_fk = s.pk)
UNION ALL
SELECT 'study ' || t.pk FROM study t
 WHERE t.n_series <> (SELECT count(*) FROM series s WHERE s.study_fk = t.pk)
    OR t.n_instances
    <> (SELECT count(*) FROM instance i JOIN series s ON s.pk = i.series_fk WHERE s.study_fk = t.pk)
    OR t.modalities IS DISTINCT FROM (SELECT string_agg(DISTINCT x.modality, '\\' ORDER BY x.modality)
                                        FROM series x WHERE x.study_fk = t.pk)
UNION ALL
SELECT 'patient ' || p.pk FROM patient p
 WHERE p.n_studies <> (SELECT count(*) FROM study t WHERE t.patient_fk = p.pk)
    OR p.n_series <> (SELECT count(*) FROM series s JOIN study t ON t.pk = s.study_fk WHERE t.patient_fk = p.pk)
    OR p.n_instances <> (SELECT count(*) FROM instance i JOIN series s ON s.pk = i.series_fk
         JOIN study t ON t.pk = s.study_fk WHERE t.patient_fk = p.pk)
UNION ALL
SELECT 'unfolded shard rows' WHERE EXISTS (SELECT 1 FROM series_count) OR EXISTS (SELECT 1 FROM study_count)
    OR EXISTS (SELECT 1 FROM patient_count)
LIMIT 5
"""


def wrong_counts(node):
    """Where the kept counts differ from the rows, or unfolded shard rows
    remain; [] when all agree, None without the count columns."""
    try:
        if not node.query("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'study'"
                          " AND column_name = 'modalities') AS have")[0]["have"]:
            return None
        return [r["?column?"] for r in node.query(_COUNT_CHECK)]
    except Exception as e:  # the database may be gone on purpose
        return None if "does not exist" in str(e) else "check failed: %s" % e


# --------------------------------------------------------------------------
# Comparing a stored Part-10 file with the one sent


def _element_differences(a, b, where=""):
    diffs = []
    tags = sorted(set(a.keys()) | set(b.keys()))
    for tag in tags:
        if tag.group == 0x0002 or tag.element == 0x0000 or tag == 0xFFFCFFFC:
            continue  # meta header, group lengths, trailing padding
        name = "%s(%04X,%04X)" % (where, tag.group, tag.element)
        if tag not in a:
            diffs.append("%s only in the stored file" % name)
            continue
        if tag not in b:
            diffs.append("%s missing from the stored file" % name)
            continue
        ea, eb = a[tag], b[tag]
        if ea.VR == "SQ" or eb.VR == "SQ":
            va, vb = ea.value or [], eb.value or []
            if len(va) != len(vb):
                diffs.append("%s: %d items sent, %d stored" % (name, len(va), len(vb)))
                continue
            for i, (ia, ib) in enumerate(zip(va, vb)):
                diffs += _element_differences(ia, ib, "%s[%d]" % (name, i))
            continue
        va, vb = ea.value, eb.value
        if isinstance(va, pydicom.valuerep.PersonName):
            va = str(va)
        if isinstance(vb, pydicom.valuerep.PersonName):
            vb = str(vb)
        if isinstance(va, (list, pydicom.multival.MultiValue)):
            va = [str(x) if isinstance(x, pydicom.valuerep.PersonName) else x for x in va]
            vb = [str(x) if isinstance(x, pydicom.valuerep.PersonName) else x
                  for x in (vb if isinstance(vb, (list, pydicom.multival.MultiValue)) else [vb])]
        if va != vb:
            shown = lambda v: (repr(v[:32]) + "...(%d bytes)" % len(v)  # noqa: E731
                               if isinstance(v, bytes) and len(v) > 32 else repr(v))
            diffs.append("%s %s: sent %s, stored %s" % (name, ea.keyword or ea.name,
                                                        shown(va), shown(vb)))
    return diffs


def compare_part10(sent_path, stored_path, sop_class_uid, sop_uid, ts_uid):
    """Differences between the file sent and the file stored: the stored one
    must be Part-10 (preamble + DICM), with the right meta header, and its
    dataset equal to the sent one element for element (decoded values;
    encapsulated pixel data compared as raw bytes). [] when equal."""
    diffs = []
    with open(stored_path, "rb") as f:
        head = f.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return ["%s is not a Part-10 file (no DICM at offset 128)" % stored_path]
    with gen_corpus.quiet_pydicom():
        sent = pydicom.dcmread(sent_path)
        stored = pydicom.dcmread(stored_path)
    meta = stored.file_meta
    for kw, want in (("MediaStorageSOPClassUID", sop_class_uid),
                     ("MediaStorageSOPInstanceUID", sop_uid),
                     ("TransferSyntaxUID", ts_uid)):
        got = meta.get(kw)
        if got is None or str(got) != want:
            diffs.append("meta %s is %r, wanted %r" % (kw, got, want))
    for ds in (sent, stored):
        ds.decode()
    diffs += _element_differences(sent, stored)
    return diffs


# --------------------------------------------------------------------------
# Index rows against the manifest

# keyword -> (table, column, kind)
COLUMNS = {
    "PatientName": ("patient", "patient_name", "pn"),
    "PatientID": ("patient", "patient_id", "key"),
    "IssuerOfPatientID": ("patient", "issuer", "key"),
    "PatientBirthDate": ("patient", "patient_birth_date", "date"),
    "PatientSex": ("patient", "patient_sex", "text"),
    "StudyDate": ("study", "study_date", "date"),
    "StudyTime": ("study", "study_time", "time"),
    "AccessionNumber": ("study", "accession_number", "text"),
    "StudyID": ("study", "study_id", "text"),
    "StudyDescription": ("study", "study_description", "text"),
    "ReferringPhysicianName": ("study", "referring_physician_name", "pn"),
    "Modality": ("series", "modality", "text"),
    "SeriesNumber": ("series", "series_number", "int"),
    "SeriesDescription": ("series", "series_description", "text"),
    "SeriesDate": ("series", "series_date", "date"),
    "SeriesTime": ("series", "series_time", "time"),
    "BodyPartExamined": ("series", "body_part_examined", "text"),
    "ProtocolName": ("series", "protocol_name", "text"),
    "InstanceNumber": ("instance", "instance_number", "int"),
    "ImageType": ("instance", "image_type", "text"),
    "Rows": ("instance", "rows", "int"),
    "Columns": ("instance", "columns", "int"),
    "NumberOfFrames": ("instance", "number_of_frames", "int"),
    "SamplesPerPixel": ("instance", "samples_per_pixel", "int"),
    "PhotometricInterpretation": ("instance", "photometric_interpretation", "text"),
    "SliceThickness": ("instance", "slice_thickness", "float"),
    "SpacingBetweenSlices": ("instance", "spacing_between_slices", "float"),
    "AcquisitionDate": ("instance", "acquisition_date", "date"),
    "AcquisitionTime": ("instance", "acquisition_time", "time"),
    "ContentDate": ("instance", "content_date", "date"),
    "ContentTime": ("instance", "content_time", "time"),
}

JOINED_SQL = """
SELECT p.patient_id AS "patient.patient_id", p.issuer AS "patient.issuer",
       p.patient_name AS "patient.patient_name",
       p.patient_birth_date AS "patient.patient_birth_date",
       p.patient_sex AS "patient.patient_sex",
       st.study_uid AS "study.study_uid", st.study_date AS "study.study_date",
       st.study_time AS "study.study_time", st.accession_number AS "study.accession_number",
       st.study_id AS "study.study_id", st.study_description AS "study.study_description",
       st.referring_physician_name AS "study.referring_physician_name",
       se.series_uid AS "series.series_uid", se.modality AS "series.modality",
       se.series_number AS "series.series_number",
       se.series_description AS "series.series_description",
       se.series_date AS "series.series_date", se.series_time AS "series.series_time",
       se.body_part_examined AS "series.body_part_examined",
       se.protocol_name AS "series.protocol_name",
       i.sop_uid AS "instance.sop_uid", i.sop_class_uid AS "instance.sop_class_uid",
       i.instance_number AS "instance.instance_number", i.image_type AS "instance.image_type",
       i.rows AS "instance.rows", i.columns AS "instance.columns",
       i.number_of_frames AS "instance.number_of_frames",
       i.samples_per_pixel AS "instance.samples_per_pixel",
       i.photometric_interpretation AS "instance.photometric_interpretation",
       i.slice_thickness AS "instance.slice_thickness",
       i.spacing_between_slices AS "instance.spacing_between_slices",
       i.acquisition_date AS "instance.acquisition_date",
       i.acquisition_time AS "instance.acquisition_time",
       i.content_date AS "instance.content_date", i.content_time AS "instance.content_time",
       i.transfer_syntax_uid AS "instance.transfer_syntax_uid", i.path AS "instance.path",
       i.size AS "instance.size", i.checksum AS "instance.checksum",
       i.specific_character_set AS "instance.specific_character_set",
       i.calling_ae AS "instance.calling_ae", i.received_at AS "instance.received_at"
  FROM instance i
  JOIN series se ON se.pk = i.series_fk
  JOIN study st ON st.pk = se.study_fk
  JOIN patient p ON p.pk = st.patient_fk
"""


def joined_rows(node):
    """{sop_uid: {"table.column": value}} for every instance."""
    rows = node.query(JOINED_SQL)
    return {r["instance.sop_uid"]: r for r in rows}


def _typed(kind, value):
    """The manifest's normalised value as the Python value psycopg2 returns."""
    if value is None:
        return None
    if kind == "date":
        return datetime.date.fromisoformat(value)
    if kind == "time":
        return datetime.time.fromisoformat(value)
    return value


def pn_equivalent(value):
    """A PN with empty trailing components and component groups dropped
    (PS3.5 6.2: 'Wang^XiaoDong=王^小東=' and 'Wang^XiaoDong=王^小東' are the
    same name; pydicom prints the second for a file holding the first)."""
    if value is None:
        return None
    groups = [g.rstrip("^") for g in value.split("=")]
    while groups and groups[-1] == "":
        groups.pop()
    return "=".join(groups) or None


def column_differences(row, entry):
    """Differences between one joined row and one manifest entry."""
    diffs = []
    for kw, want in entry["attrs"].items():
        table, col, kind = COLUMNS[kw]
        got = row["%s.%s" % (table, col)]
        want = _typed(kind, want)
        if kind == "float" and got is not None and want is not None:
            ok = abs(got - want) <= 1e-9 * max(1.0, abs(want))
        elif kind in ("text", "pn") and want is None:
            ok = got in (None, "")  # an empty value may be kept as '' or NULL
        elif kind == "pn":
            ok = pn_equivalent(got) == pn_equivalent(want)
        else:
            ok = got == want
        if not ok:
            diffs.append("%s.%s (%s): %r, wanted %r" % (table, col, kw, got, want))
    for col, want in (("sop_class_uid", entry["sop_class_uid"]),
                      ("transfer_syntax_uid", entry["transfer_syntax_uid"]),
                      ("specific_character_set", entry["specific_character_set"])):
        got = row["instance." + col]
        if got != want:
            diffs.append("instance.%s: %r, wanted %r" % (col, got, want))
    for col, want in (("study.study_uid", entry["study_instance_uid"]),
                      ("series.series_uid", entry["series_instance_uid"])):
        if row[col] != want:
            diffs.append("%s: %r, wanted %r" % (col, row[col], want))
    return diffs


def db_snapshot(node):
    """Every row of the four tables, for 'nothing changed' checks."""
    snap = {}
    for table in ("patient", "study", "series", "instance"):
        snap[table] = node.query("SELECT * FROM %s ORDER BY pk" % table)
    return snap
