"""C-FIND clients and expected answers for pacsnode's query tests.

- query_dataset/write_query: identifiers built with pydicom (its own
  character set encoding: latin-1 for ISO_IR 100, escape sequences for
  ISO 2022 IR 87), saved as Part-10 files for findscu or as explicit VR
  little endian bytes for the raw client;
- findscu(): dcmtk's findscu with -d and -X; per response the DIMSE status
  (from its debug log) and, for pending ones, the identifier it wrote
  (rsp0001.dcm...), read with pydicom;
- FindAssociation / find(): a raw C-FIND client on rawscu's Upper Layer
  code, for exact bytes (VRs as sent), Error Comments, C-CANCEL at a chosen
  point and 100,000 responses without writing files;
- Model: what the node must answer, computed from the corpus manifest only
  (the generator's record of what it sent), with an independent
  implementation of PS3.4 C.2.2.2 matching as docs/find.md specifies it;
- RssSampler and load_instances(): the streaming test's memory probe and
  bulk loader (rows straight into the node's database).
"""

import os
import re
import socket
import struct
import subprocess
import threading

import pydicom
import pydicom.config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

import pacsnode_harness as H
import rawscu
from pacsnode_harness import gen_corpus

PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
MODEL_FLAG = {PATIENT_ROOT: "-P", STUDY_ROOT: "-S"}
MODELS = {"patient": PATIENT_ROOT, "study": STUDY_ROOT}

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARN = 0xFF01
CANCEL = 0xFE00
REFUSED_RESOURCES = 0xA700
IDENTIFIER_MISMATCH = 0xA900


def is_pending(status):
    return status in (PENDING, PENDING_WARN)


def is_cannot_process(status):
    return status is not None and 0xC000 <= status <= 0xCFFF


# --------------------------------------------------------------------------
# Identifiers


def query_dataset(level, keys, charset=None):
    """A C-FIND identifier. `keys`: {keyword or (group, elem): value};
    value "" or None asks for the attribute (universal matching); a list
    is a multi-valued key; bytes are put in unchanged (to send what pydicom
    would refuse to encode). `level` None leaves QueryRetrieveLevel out."""
    with gen_corpus.quiet_pydicom():  # invalid values are the point of some tests
        return _query_dataset(level, keys, charset)


def _query_dataset(level, keys, charset):
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    if level is not None:
        ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        tag = pydicom.tag.Tag(k) if isinstance(k, tuple) else pydicom.tag.Tag(
            pydicom.datadict.tag_for_keyword(k))
        vr = pydicom.datadict.dictionary_VR(tag)
        if v is None:
            v = ""
        if vr == "SQ":
            ds.add_new(tag, vr, v if v != "" else [])
        else:
            ds.add_new(tag, vr, v)
    return ds


def open_extneg(port, calling, model, offer):
    """A FindAssociation to the node for `model`, proposing the SOP Class
    Extended Negotiation bytes `offer` for it (None: no item); its answer
    is in .ext_neg."""
    a = FindAssociation("127.0.0.1", port)
    a.associate(calling, H.NODE_AET, model, ext_neg={model: offer} if offer is not None else None)
    return a


def identifier_bytes(ds):
    """The identifier as explicit VR little endian bytes (no meta header)."""
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    with gen_corpus.quiet_pydicom():
        write_dataset(buf, ds)
    return buf.getvalue()


def write_query(path, ds, model=STUDY_ROOT):
    """A Part-10 file holding the identifier, for findscu."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = model
    meta.MediaStorageSOPInstanceUID = gen_corpus.make_uid(0, "query", path)
    meta.TransferSyntaxUID = gen_corpus.TS["explicit"]
    meta.ImplementationClassUID = "2.25.261818146311413236214325166441376307457"
    ds = ds.copy()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    with gen_corpus.quiet_pydicom():
        ds.save_as(path, write_like_original=False)
    return path


def read_identifier(data):
    """Explicit VR little endian bytes -> pydicom Dataset (VRs as sent)."""
    fp = DicomBytesIO(data)
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return pydicom.filereader.read_dataset(fp, False, True)


# --------------------------------------------------------------------------
# findscu


class FindRun:
    """One findscu run: statuses of every C-FIND-RSP in order, the pending
    responses' identifiers (pydicom datasets) and the final status."""

    def __init__(self, cmd, returncode, output, outdir):
        self.cmd, self.returncode, self.output, self.outdir = cmd, returncode, output, outdir
        self.statuses = [int(m, 16) for m in
                         re.findall(r"^D: DIMSE Status\s*: 0x([0-9a-fA-F]{4})", output, re.M)]
        self.association = None
        if "Association Accepted" in output:
            self.association = "accepted"
        if re.search(r"Association Rejected|No Acceptable Presentation Contexts|"
                     r"Association Request Failed", output):
            self.association = "refused"
        self.final = self.statuses[-1] if self.statuses and not is_pending(
            self.statuses[-1]) else None
        self.pending = [s for s in self.statuses if is_pending(s)]
        files = sorted(f for f in os.listdir(outdir) if re.fullmatch(r"rsp\d+\.dcm", f))
        self.responses = [pydicom.dcmread(os.path.join(outdir, f), force=True) for f in files]

    def summary(self):
        return ("findscu exit %s, association %s, %d pending (%s), final %s; output in %s\n%s"
                % (self.returncode, self.association, len(self.pending),
                   ",".join("0x%04X" % s for s in sorted(set(self.pending))),
                   "0x%04X" % self.final if self.final is not None else "none", self.outdir,
                   "\n".join(self.output.splitlines()[-12:])))


_counter = [0]


def findscu(port, ds, workdir, *, model=STUDY_ROOT, aet="PNFIND", aec=H.NODE_AET,
            host="127.0.0.1", cancel=None, extra=(), timeout=120):
    """Runs findscu with one query (a Dataset, or the path of a query file)."""
    _counter[0] += 1
    n = _counter[0]
    outdir = H.make_dir(os.path.join(workdir, "find%03d" % n))
    if isinstance(ds, Dataset):
        qpath = write_query(os.path.join(outdir, "query.dcm"), ds, model)
    else:
        qpath = ds
    cmd = ["findscu", "-d", "-X", "-od", outdir, MODEL_FLAG[model], "-to", "10", "-ta", "30",
           "-td", "60", "-aet", aet, "-aec", aec]
    if cancel is not None:
        cmd += ["--cancel", str(cancel)]
    cmd += list(extra) + [host, str(port), qpath]
    env = dict(os.environ, TCP_NODELAY="1")
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", env=env, timeout=timeout)
        rc, out = r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        rc = "timeout after %ds" % timeout
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output
                                                                                     or "")
    with open(os.path.join(outdir, "findscu.log"), "w") as f:
        f.write(" ".join(cmd) + "\n\n" + out)
    return FindRun(cmd, rc, out, outdir)


# --------------------------------------------------------------------------
# Raw C-FIND client


def _el(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def c_find_rq(msg_id, sop_class, priority=0):
    elems = (_el(0x0000, 0x0002, rawscu._uid(sop_class))
             + _el(0x0000, 0x0100, struct.pack("<H", 0x0020))
             + _el(0x0000, 0x0110, struct.pack("<H", msg_id))
             + _el(0x0000, 0x0700, struct.pack("<H", priority))
             + _el(0x0000, 0x0800, struct.pack("<H", 0x0000)))
    return _el(0x0000, 0x0000, struct.pack("<I", len(elems))) + elems


def c_cancel_rq(msg_id):
    elems = (_el(0x0000, 0x0100, struct.pack("<H", 0x0FFF))
             + _el(0x0000, 0x0120, struct.pack("<H", msg_id))
             + _el(0x0000, 0x0800, struct.pack("<H", 0x0101)))
    return _el(0x0000, 0x0000, struct.pack("<I", len(elems))) + elems


class FindResponse:
    def __init__(self, command, data):
        self.command = command
        self.status = struct.unpack("<H", command[(0x0000, 0x0900)])[0]
        self.data = data  # identifier bytes, None when there was none
        comment = command.get((0x0000, 0x0902))
        self.error_comment = comment.rstrip(b"\0 ").decode("ascii", "replace") \
            if comment is not None else None

    @property
    def dataset(self):
        return read_identifier(self.data) if self.data is not None else None


class FindResult:
    def __init__(self):
        self.pending = []       # FindResponse of each pending response (when kept)
        self.n_pending = 0
        self.pending_statuses = set()
        self.final = None       # FindResponse

    @property
    def final_status(self):
        return self.final.status if self.final is not None else None


class FindAssociation(rawscu.Association):
    """rawscu's association with buffered reads and C-FIND / C-CANCEL."""

    def __init__(self, host, port, timeout=60, rcvbuf=None):
        self.sock = None
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.max_send = rawscu.MAX_PDU
        self.pc_id = None
        self._buf = bytearray()
        self._pos = 0
        self.msg_id = 0

    def _recv_exact(self, n):
        while len(self._buf) - self._pos < n:
            chunk = self.sock.recv(1 << 18)
            if not chunk:
                raise rawscu.UlError("connection closed by the peer")
            if self._pos:
                del self._buf[:self._pos]
                self._pos = 0
            self._buf += chunk
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    def _recv_message_part(self, want_command):
        """Command or data set bytes of the next message part."""
        data = []
        while True:
            kind, body = self.recv_pdu()
            if kind == 0x07:
                raise rawscu.UlError("association aborted by the peer")
            if kind != 0x04:
                raise rawscu.UlError("unexpected PDU 0x%02x instead of P-DATA-TF" % kind)
            off = 0
            last = False
            while off + 6 <= len(body):
                (n,) = struct.unpack_from(">I", body, off)
                control = body[off + 5]
                if bool(control & 1) != want_command:
                    raise rawscu.UlError("got a %s fragment, wanted a %s" % (
                        "command" if control & 1 else "data", "command" if want_command
                        else "data"))
                data.append(body[off + 6:off + 4 + n])
                off += 4 + n
                last = bool(control & 2)
            if last:
                return b"".join(data)

    def recv_find_response(self):
        cmd = rawscu.parse_command(self._recv_message_part(True))
        field = struct.unpack("<H", cmd[(0x0000, 0x0100)])[0]
        if field != 0x8020:
            raise rawscu.UlError("command 0x%04x instead of C-FIND-RSP" % field)
        has_data = struct.unpack("<H", cmd[(0x0000, 0x0800)])[0] != 0x0101
        data = self._recv_message_part(False) if has_data else None
        return FindResponse(cmd, data)

    def send_cancel(self, msg_id):
        self._send_pdvs(c_cancel_rq(msg_id), True)

    def c_find(self, sop_class, identifier, *, cancel_after=None, keep=True,
               on_pending=None):
        """One C-FIND; returns a FindResult. `identifier`: bytes or Dataset.
        With cancel_after=N a C-CANCEL-RQ goes out after the N-th pending
        response. keep=False counts pending responses without keeping them."""
        if isinstance(identifier, Dataset):
            identifier = identifier_bytes(identifier)
        self.msg_id += 1
        msg_id = self.msg_id
        self._send_pdvs(c_find_rq(msg_id, sop_class), True)
        self._send_pdvs(identifier, False)
        res = FindResult()
        while True:
            rsp = self.recv_find_response()
            if not is_pending(rsp.status):
                res.final = rsp
                return res
            res.n_pending += 1
            res.pending_statuses.add(rsp.status)
            if keep:
                res.pending.append(rsp)
            if on_pending is not None:
                on_pending(res.n_pending, rsp)
            if cancel_after is not None and res.n_pending == cancel_after:
                self.send_cancel(msg_id)


def find(port, sop_class, identifier, *, host="127.0.0.1", calling="PNRAWFIND",
         called=H.NODE_AET, **kw):
    """One association, one C-FIND, release. Returns a FindResult."""
    assoc = FindAssociation(host, port)
    try:
        assoc.associate(calling, called, sop_class)
        res = assoc.c_find(sop_class, identifier, **kw)
        assoc.release()
        return res
    finally:
        assoc.close()


# --------------------------------------------------------------------------
# Expected answers from the manifest

PATIENT_KEYS = ["PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                "PatientSex"]
STUDY_KEYS = ["StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
              "StudyDescription", "ReferringPhysicianName"]
SERIES_KEYS = ["SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "SeriesDate", "SeriesTime", "BodyPartExamined", "ProtocolName"]
IMAGE_KEYS = ["SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ImageType", "Rows",
              "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
              "SliceThickness", "SpacingBetweenSlices", "AcquisitionDate", "AcquisitionTime",
              "ContentDate", "ContentTime"]
LEVEL_KEYS = {"PATIENT": PATIENT_KEYS, "STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS,
              "IMAGE": IMAGE_KEYS}
LEVELS = ["PATIENT", "STUDY", "SERIES", "IMAGE"]
KIND = {kw: kind for _lvl, kw, kind in gen_corpus.INDEXED}
KIND.update({"StudyInstanceUID": "uid", "SeriesInstanceUID": "uid", "SOPInstanceUID": "uid",
             "SOPClassUID": "uid"})
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
          "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
# PS3.4 C.2.2.2.4: the VRs wildcards apply to
WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}


def level_of(keyword):
    for lvl, keys in LEVEL_KEYS.items():
        if keyword in keys:
            return lvl
    raise KeyError(keyword)


def normalise(keyword, value):
    """A response value (pydicom) in the manifest's normalised form."""
    kind = KIND.get(keyword, "text")
    if value is None:
        return "" if kind == "key" else None
    if isinstance(value, pydicom.valuerep.PersonName):
        value = str(value)
    if kind == "uid":
        return str(value).strip(" \0") or None
    return gen_corpus.NORMALISE[kind](value)


def fold(s):
    """docs/find.md: ICU lower case, final sigma as sigma."""
    return s.lower().replace("\u03c2", "\u03c3")


def _time_bound(s, upper):
    """A TM range bound -> seconds since midnight; an upper bound with fewer
    components covers the whole unit (docs/find.md)."""
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", s.strip())
    assert m, "bad time bound in a test: %r" % s
    hh, mm, ss = int(m.group(1)), m.group(2), m.group(3)
    frac = m.group(4)
    t = hh * 3600 + int(mm or 0) * 60 + int(ss or 0) + (int(frac.ljust(6, "0")) / 1e6
                                                         if frac else 0)
    if upper:
        if mm is None:
            t += 3599.999999
        elif ss is None:
            t += 59.999999
        elif frac is None:
            t += 0.999999
    return t


def _norm_time_seconds(v):
    h, m, s = v.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def matches(keyword, query, value):
    """Whether a stored (normalised, manifest) value matches a query value,
    per PS3.4 C.2.2.2 and docs/find.md. `query` "" is universal."""
    if query in ("", None):
        return True
    kind = KIND.get(keyword, "text")
    vr = pydicom.datadict.dictionary_VR(keyword)
    if vr == "UI":
        return value is not None and value in query.split("\\")
    if vr in ("DA", "TM"):
        if value is None:
            return False
        if vr == "DA":
            lo, sep, hi = query.partition("-")
            if not sep:
                hi = lo
            v = value.replace("-", "")
            return (not lo or v >= lo) and (not hi or v <= hi)
        lo, sep, hi = query.partition("-")
        if not sep:
            hi = lo
        t = _norm_time_seconds(value)
        return ((not lo or t >= _time_bound(lo, False))
                and (not hi or t <= _time_bound(hi, True)))
    if value is None:
        value = ""
    value = str(value)
    if vr == "PN":
        value, query = fold(value), fold(query)
    if vr in WILDCARD_VRS and ("*" in query or "?" in query):
        rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in query)
        return re.fullmatch(rx, value, re.S) is not None
    if value == "":
        return False
    if kind == "int":
        return int(query) == int(value)
    return query.strip() == value


class Entity:
    def __init__(self, level, key, attrs, parent):
        self.level, self.key, self.attrs, self.parent = level, key, attrs, parent
        self.children = []

    def lineage(self):
        """{level: entity} for this entity and every level above it."""
        out, e = {}, self
        while e is not None:
            out[e.level] = e
            e = e.parent
        return out

    def value(self, keyword):
        """The normalised value of `keyword` at its level along the lineage."""
        lvl = level_of(keyword)
        e = self.lineage().get(lvl)
        return None if e is None else e.attrs.get(keyword)


class Model:
    """Patients, studies, series and instances as the node must hold them
    after storing `entries` in order (the first copy of each entity wins:
    the node never updates a row), computed from the manifest only."""

    def __init__(self, entries):
        self.patients, self.studies, self.series, self.instances = {}, {}, {}, {}
        for e in entries:
            self.add(e)

    def add(self, e):
        a = dict(e["attrs"])
        a["StudyInstanceUID"] = e["study_instance_uid"]
        a["SeriesInstanceUID"] = e["series_instance_uid"]
        a["SOPInstanceUID"] = e["sop_instance_uid"]
        a["SOPClassUID"] = e["sop_class_uid"]
        pkey = (a["PatientID"], a["IssuerOfPatientID"])
        p = self.patients.get(pkey)
        if p is None:
            p = self.patients[pkey] = Entity("PATIENT", pkey, {k: a[k] for k in PATIENT_KEYS},
                                             None)
        st = self.studies.get(a["StudyInstanceUID"])
        if st is None:
            st = self.studies[a["StudyInstanceUID"]] = Entity(
                "STUDY", a["StudyInstanceUID"], {k: a[k] for k in STUDY_KEYS}, p)
            p.children.append(st)
        se = self.series.get(a["SeriesInstanceUID"])
        if se is None:
            se = self.series[a["SeriesInstanceUID"]] = Entity(
                "SERIES", a["SeriesInstanceUID"], {k: a[k] for k in SERIES_KEYS}, st)
            st.children.append(se)
        if a["SOPInstanceUID"] in self.instances:
            return  # a duplicate: ignored
        inst = self.instances[a["SOPInstanceUID"]] = Entity(
            "IMAGE", a["SOPInstanceUID"], {k: a.get(k) for k in IMAGE_KEYS}, se)
        se.children.append(inst)

    def entities(self, level):
        return list({"PATIENT": self.patients, "STUDY": self.studies, "SERIES": self.series,
                     "IMAGE": self.instances}[level].values())

    # computed attributes
    def _series_of(self, e):
        if e.level == "PATIENT":
            return [se for st in e.children for se in st.children]
        if e.level == "STUDY":
            return list(e.children)
        return [e]

    def computed(self, e, keyword):
        lin = e.lineage()
        p, st, se = lin.get("PATIENT"), lin.get("STUDY"), lin.get("SERIES")
        if keyword == "NumberOfPatientRelatedStudies":
            return len(p.children)
        if keyword == "NumberOfPatientRelatedSeries":
            return len(self._series_of(p))
        if keyword == "NumberOfPatientRelatedInstances":
            return sum(len(s.children) for s in self._series_of(p))
        if keyword == "NumberOfStudyRelatedSeries":
            return len(st.children)
        if keyword == "NumberOfStudyRelatedInstances":
            return sum(len(s.children) for s in st.children)
        if keyword == "NumberOfSeriesRelatedInstances":
            return len(se.children)
        if keyword == "ModalitiesInStudy":
            return sorted({s.attrs["Modality"] for s in st.children if s.attrs["Modality"]})
        if keyword == "SOPClassesInStudy":
            return sorted({i.attrs["SOPClassUID"] for s in st.children for i in s.children})
        raise KeyError(keyword)

    def expect(self, level, keys):
        """Entities of `level` matching every key of `keys` (a dict of
        keyword -> query value) whose level is the query level or above."""
        upto = LEVELS[:LEVELS.index(level) + 1]
        out = []
        for e in self.entities(level):
            ok = True
            for kw, q in keys.items():
                if kw in COMPUTED:
                    if kw == "ModalitiesInStudy" and q:
                        ok = bool(set(q.split("\\")) & set(self.computed(e, kw)))
                    if not ok:
                        break
                    continue
                try:
                    if level_of(kw) not in upto:
                        continue
                except KeyError:
                    continue  # not an indexed attribute: the tests only ask for it
                if not matches(kw, q, e.value(kw)):
                    ok = False
                    break
            if ok:
                out.append(e)
        return out


COMPUTED = ["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
            "ModalitiesInStudy", "SOPClassesInStudy"]


def response_key(level, ds):
    """The identity of a response: the unique keys down to its level."""
    if level == "PATIENT":
        return (normalise("PatientID", ds.get("PatientID")),
                normalise("IssuerOfPatientID", ds.get("IssuerOfPatientID")))
    return str(ds.get(UNIQUE[level], "")).strip(" \0")


def entity_key(e):
    return e.key


# --------------------------------------------------------------------------
# Memory probe


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return out


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of every child of `pid` every `period` seconds in a
    thread; peak[pid] and first[pid] in kB."""

    def __init__(self, pid, period=0.05):
        self.pid, self.period = pid, period
        self.peak, self.first, self.samples = {}, {}, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for c in children_of(self.pid):
                kb = rss_kb(c)
                if kb is None:
                    continue
                self.first.setdefault(c, kb)
                self.peak[c] = max(self.peak.get(c, 0), kb)
            self.samples += 1
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------
# Bulk loading straight into the node's database


def level_blob(ds):
    """A level's attrs blob as the node writes it: explicit VR little
    endian, no meta header, text in UTF-8 (Specific Character Set ISO_IR
    192 at every level)."""
    ds = ds.copy()
    ds.SpecificCharacterSet = "ISO_IR 192"
    return identifier_bytes(ds)


def load_instances(node, n, *, tag="bulk", patient_id="PN-BULK", comment_len=300):
    """One patient, one study, one series with `n` instances, inserted with
    INSERT ... SELECT generate_series. Each instance's attrs blob is a
    pydicom-encoded template with the SOP Instance UID's last component
    and InstanceNumber (100000 + i, always six digits) patched in, plus an
    ImageComments of `comment_len` characters so that a node holding all
    rows in memory would show it. Returns a dict of the UIDs, the SOP UID
    prefix and the counts."""
    assert n <= 900000
    study_uid = gen_corpus.make_uid(0, tag, "study")
    series_uid = gen_corpus.make_uid(0, tag, "series")
    sop_prefix = "1.2.826.0.1.3680043.10.543.%d" % (len(tag) + 7)
    sop_class = gen_corpus.SOP_CLASS["CT"]

    p = Dataset()
    p.PatientName = "Bulk^Loaded"
    p.PatientID = patient_id
    p.PatientBirthDate = "19700101"
    p.PatientSex = "O"
    st = Dataset()
    st.StudyDate = "20230505"
    st.StudyTime = "101010"
    st.AccessionNumber = "BULK-" + tag[:10]
    st.StudyID = "1"
    st.StudyDescription = "bulk " + tag
    st.ReferringPhysicianName = ""
    st.StudyInstanceUID = study_uid
    se = Dataset()
    se.Modality = "CT"
    se.SeriesNumber = "1"
    se.SeriesDescription = "bulk series"
    se.SeriesInstanceUID = series_uid
    inst = Dataset()
    inst.SOPClassUID = sop_class
    inst.SOPInstanceUID = sop_prefix + ".100000"
    inst.InstanceNumber = "100000"
    inst.ImageComments = ("streamed " * 64)[:comment_len]
    tmpl = level_blob(inst)
    # where the six digits go: the UID's last component and the IS value
    uid_at = tmpl.index((sop_prefix + ".100000").encode()) + len(sop_prefix) + 1
    is_at = tmpl.index(b"100000", uid_at + 6)
    check = read_identifier(tmpl)
    assert str(check.SOPInstanceUID).endswith(".100000") and str(check.InstanceNumber) == "100000"

    conn = node.connect()
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("INSERT INTO patient (patient_id, issuer, patient_name, "
                        "patient_birth_date, patient_sex, attrs) VALUES "
                        "(%s, '', 'Bulk^Loaded', '1970-01-01', 'O', %s) RETURNING pk",
                        (patient_id, level_blob(p)))
            ppk = cur.fetchone()[0]
            cur.execute("INSERT INTO study (patient_fk, study_uid, study_date, study_time, "
                        "accession_number, study_id, study_description, attrs) VALUES "
                        "(%s, %s, '2023-05-05', '10:10:10', %s, '1', %s, %s) RETURNING pk",
                        (ppk, study_uid, st.AccessionNumber, st.StudyDescription,
                         level_blob(st)))
            stpk = cur.fetchone()[0]
            cur.execute("INSERT INTO series (study_fk, series_uid, modality, series_number, "
                        "series_description, attrs) VALUES (%s, %s, 'CT', 1, 'bulk series', %s) "
                        "RETURNING pk", (stpk, series_uid, level_blob(se)))
            sepk = cur.fetchone()[0]
            cur.execute(
                "INSERT INTO instance (series_fk, sop_uid, sop_class_uid, instance_number, "
                " transfer_syntax_uid, path, size, checksum, calling_ae, attrs) "
                "SELECT %(series)s, %(prefix)s || '.' || (100000 + i), %(cls)s, 100000 + i, "
                " %(ts)s, 'bulk/' || %(tag)s || '/' || i || '.dcm', 1000, "
                " 'xxh3-128:' || md5(i::text), 'PNBULK', "
                " overlay(overlay(%(tmpl)s::bytea placing convert_to((100000 + i)::text, "
                "  'UTF8') from %(uid_at)s) placing convert_to((100000 + i)::text, 'UTF8') "
                "  from %(is_at)s) "
                "FROM generate_series(0, %(n)s - 1) AS i",
                {"series": sepk, "prefix": sop_prefix, "cls": sop_class,
                 "ts": gen_corpus.TS["explicit"], "tag": tag, "tmpl": tmpl,
                 "uid_at": uid_at + 1, "is_at": is_at + 1, "n": n})
            # the kept counts, as the node folds them after a store
            cur.execute("SELECT pn_fold_counts(pg_backend_pid())")
            cur.execute("ANALYZE patient; ANALYZE study; ANALYZE series; ANALYZE instance")
        conn.commit()
    finally:
        conn.close()
    return {"study_uid": study_uid, "series_uid": series_uid, "sop_prefix": sop_prefix,
            "sop_class": sop_class, "n": n, "patient_id": patient_id,
            "comment": str(inst.ImageComments)}
