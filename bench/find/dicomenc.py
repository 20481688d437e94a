"""A tiny DICOM encoder/decoder for the find benchmark.

Explicit VR little endian datasets (no meta header), implicit VR little
endian (for identifiers on a context that only accepted it), Part-10 files,
and a flat decoder for response identifiers. Only what the benchmark needs:
no sequences, text values only; written from PS3.5 section 7.

Values are str (encoded as UTF-8) or bytes; multi-valued strings are joined
with a backslash by the caller.
"""

import struct

# VR of every attribute the benchmark writes or asks for (PS3.6).
VR = {
    0x00080005: "CS",  # SpecificCharacterSet
    0x00080008: "CS",  # ImageType
    0x00080016: "UI",  # SOPClassUID
    0x00080018: "UI",  # SOPInstanceUID
    0x00080020: "DA",  # StudyDate
    0x00080021: "DA",  # SeriesDate
    0x00080023: "DA",  # ContentDate
    0x00080030: "TM",  # StudyTime
    0x00080031: "TM",  # SeriesTime
    0x00080033: "TM",  # ContentTime
    0x00080050: "SH",  # AccessionNumber
    0x00080052: "CS",  # QueryRetrieveLevel
    0x00080054: "AE",  # RetrieveAETitle
    0x00080056: "CS",  # InstanceAvailability
    0x00080060: "CS",  # Modality
    0x00080061: "CS",  # ModalitiesInStudy
    0x00080062: "UI",  # SOPClassesInStudy
    0x00080070: "LO",  # Manufacturer
    0x00080080: "LO",  # InstitutionName
    0x00080090: "PN",  # ReferringPhysicianName
    0x00081010: "SH",  # StationName
    0x00081030: "LO",  # StudyDescription
    0x0008103E: "LO",  # SeriesDescription
    0x00100010: "PN",  # PatientName
    0x00100020: "LO",  # PatientID
    0x00100030: "DA",  # PatientBirthDate
    0x00100040: "CS",  # PatientSex
    0x00101010: "AS",  # PatientAge
    0x00180015: "CS",  # BodyPartExamined
    0x00181030: "LO",  # ProtocolName
    0x0020000D: "UI",  # StudyInstanceUID
    0x0020000E: "UI",  # SeriesInstanceUID
    0x00200010: "SH",  # StudyID
    0x00200011: "IS",  # SeriesNumber
    0x00200013: "IS",  # InstanceNumber
    0x00201206: "IS",  # NumberOfStudyRelatedSeries
    0x00201208: "IS",  # NumberOfStudyRelatedInstances
    0x00201209: "IS",  # NumberOfSeriesRelatedInstances
}

# VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length.
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPL_CLASS_UID = "2.25.156392765310498721409365821617203482881"
IMPL_VERSION = "PNBENCHFIND1"


def pad(vr, raw):
    """Pads a value to even length: UI with NUL, text with a space."""
    if len(raw) % 2:
        return raw + (b"\0" if vr in ("UI", "OB", "UN") else b" ")
    return raw


def element(tag, value, vr=None):
    """One explicit VR little endian element."""
    vr = vr or VR[tag]
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    raw = pad(vr, raw)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(raw)) + raw
    if len(raw) > 0xFFFF:
        raise ValueError("value too long for VR %s: %08x" % (vr, tag))
    return head + struct.pack("<H", len(raw)) + raw


def element_implicit(tag, value):
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    raw = pad(VR.get(tag, "LO"), raw)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(raw)) + raw


def dataset(items, implicit=False):
    """items: iterable of (tag, value); sorted by tag here."""
    enc = element_implicit if implicit else element
    return b"".join(enc(t, v) for t, v in sorted(items, key=lambda kv: kv[0]))


def part10(ds_bytes, sop_class, sop_uid):
    """A Part-10 file: preamble, DICM, meta header, explicit VR LE dataset."""
    meta = (element(0x00020001, b"\x00\x01", "OB")
            + element(0x00020002, sop_class, "UI")
            + element(0x00020003, sop_uid, "UI")
            + element(0x00020010, EXPLICIT_LE, "UI")
            + element(0x00020012, IMPL_CLASS_UID, "UI")
            + element(0x00020013, IMPL_VERSION, "SH"))
    group_len = element(0x00020000, struct.pack("<I", len(meta)), "UL")
    return b"\0" * 128 + b"DICM" + group_len + meta + ds_bytes


def decode_flat(data, implicit=False):
    """{tag: bytes} of the top-level elements of a dataset (values of
    defined length; decoding stops at an undefined length)."""
    out = {}
    off, n = 0, len(data)
    while off + 8 <= n:
        g, e = struct.unpack_from("<HH", data, off)
        tag = (g << 16) | e
        if implicit:
            (length,) = struct.unpack_from("<I", data, off + 4)
            off += 8
        else:
            vr = data[off + 4:off + 6]
            if vr.decode("ascii", "replace") in _LONG_VRS:
                (length,) = struct.unpack_from("<I", data, off + 8)
                off += 12
            else:
                (length,) = struct.unpack_from("<H", data, off + 6)
                off += 8
        if length == 0xFFFFFFFF:
            # an undefined-length sequence: the benchmark never asks for
            # one, so stop here rather than walk its items
            out[tag] = b""
            break
        out[tag] = bytes(data[off:off + length])
        off += length
    return out


def text(raw):
    """A decoded value as str, padding removed."""
    return raw.rstrip(b"\0 ").decode("utf-8", "replace")
