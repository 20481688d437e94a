"""C-MOVE and C-GET clients, destinations and checks for pacsnode's
retrieve tests (issue 4).

- Storescp: dcmtk's storescp as a C-MOVE destination, started by the test
  on a free port with an association profile (-xf) that accepts either
  every transfer syntax of the corpus, preferring the compressed ones (so
  that an instance offered in its stored syntax is received in it), or
  implicit VR little endian only. Run with -d and +B: every C-STORE-RQ it
  received is parsed from its log (so duplicates are seen even though the
  second file overwrites the first) and the files are the bytes received.
- movescu()/getscu(): dcmtk's clients with -d; every C-MOVE-RSP/C-GET-RSP
  with its status and sub-operation counts parsed from the debug log.
- RetrieveAssociation: a raw Upper Layer client (several presentation
  contexts, SCP/SCU role selection) for C-MOVE and C-GET, answering the
  C-STORE sub-operations of a C-GET itself (slowly if asked), sending
  C-CANCEL after the N-th pending response, returning each response's
  command and the Failed SOP Instance UID List of the final one.
- RawStoreSCP: a minimal storage SCP in a thread, for destinations that
  are slow or abort the association after K instances.
- check_instances(): what arrived against the corpus manifest (never
  against the node): each expected instance exactly once, nothing else;
  in the stored transfer syntax when the receiver accepted it, with the
  same dataset element for element; converted otherwise, with the same
  attributes and the generator's own pixel values for lossless syntaxes.
"""

import collections
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import warnings

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

import pacsnode_checks as C
import pacsnode_harness as H
import rawscu
from pacsnode_harness import gen_corpus

TS = gen_corpus.TS
MOVE = {"patient": "1.2.840.10008.5.1.4.1.2.1.2", "study": "1.2.840.10008.5.1.4.1.2.2.2"}
GET = {"patient": "1.2.840.10008.5.1.4.1.2.1.3", "study": "1.2.840.10008.5.1.4.1.2.2.3"}
MODEL_FLAG = {"patient": "-P", "study": "-S"}
VERIFICATION = "1.2.840.10008.1.1"

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
SUBOPS_WITH_FAILURES = 0xB000
NO_SUBOPS = 0xA702
DESTINATION_UNKNOWN = 0xA801
NOT_AUTHORIZED = 0x0124

UNCOMPRESSED = {TS["implicit"], TS["explicit"], TS["big"]}
LITTLE_ENDIAN_NATIVE = {TS["implicit"], TS["explicit"]}
LOSSLESS_CODED = {TS[k] for k in ("deflated", "jpeg_lossless", "jpeg_lossless_sv1",
                                  "jpegls_lossless", "rle")}
LOSSY_CODED = {TS[k] for k in ("jpeg_baseline", "jpeg_extended", "jpegls_near")}
# compressed syntaxes the node may re-encode into, without loss, when a
# receiver accepted only those for a class; the dcmtk tool that decodes each
LOSSLESS_TARGETS = {TS["jpeg_lossless_sv1"]: "dcmdjpeg", TS["jpeg_lossless"]: "dcmdjpeg",
                    TS["jpegls_lossless"]: "dcmdjpls", TS["rle"]: "dcmdrle"}
# dcmtk (the node's codecs) has no JPEG 2000 decoder.
NOT_DECODABLE = {TS["j2k_lossless"], TS["j2k"]}
# A receiver's order of preference when it accepts everything: compressed
# first, so that what is offered in its stored syntax arrives in it.
ALL_SYNTAXES = [TS[k] for k in ("j2k_lossless", "j2k", "jpeg_lossless", "jpeg_lossless_sv1",
                                "jpeg_baseline", "jpeg_extended", "jpegls_lossless",
                                "jpegls_near", "rle", "deflated", "explicit", "big", "implicit")]
ACCEPT = {"all": ALL_SYNTAXES, "implicit": [TS["implicit"]]}
STORAGE_CLASSES = sorted(set(gen_corpus.SOP_CLASS.values()))
IMPL_CLASS = "2.25.261818146311413236214325166441376307457"


def tool_env():
    return dict(os.environ, TCP_NODELAY="1")


def listening(port):
    """Whether something listens on TCP `port` (any address), from
    /proc/net/tcp{,6}: no connection is made, so the listener logs nothing."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def stop_process(proc, timeout=10):
    """SIGTERM to a process we started (and its own session), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return proc.returncode


# --------------------------------------------------------------------------
# dcmtk logs: DIMSE message blocks


def dimse_blocks(output, direction="INCOMING"):
    """Each "===== INCOMING DIMSE MESSAGE =====" block of a dcmtk -d log as
    a dict of its "Field : value" lines; "_ids" holds the dataset dump that
    follows a response (movescu's "Response Identifiers")."""
    blocks, cur = [], None
    ids_for = None
    for line in output.splitlines():
        if "%s DIMSE MESSAGE" % direction in line:
            cur = {}
            ids_for = None
            continue
        if cur is not None:
            if "END DIMSE MESSAGE" in line:
                blocks.append(cur)
                ids_for = cur
                cur = None
                continue
            m = re.match(r"^D: ([A-Za-z][A-Za-z /-]*?)\s*: (.*)$", line)
            if m:
                cur[m.group(1).strip()] = m.group(2).strip()
            continue
        if ids_for is not None:
            m = re.match(r"^[DI]: \(([0-9a-f]{4}),([0-9a-f]{4})\) (\w\w) (.*?)\s+#", line)
            if m:
                ids_for.setdefault("_ids", {})[(int(m.group(1), 16), int(m.group(2), 16))] = \
                    m.group(4)
    return blocks


def _count(v):
    if v is None or v == "none":
        return None
    return int(v)


class Response:
    """One C-MOVE-RSP / C-GET-RSP: status, counts (None when absent),
    Failed SOP Instance UID List (None when absent), Error Comment."""

    def __init__(self, status, remaining, completed, failed, warning, failed_uids=None,
                 comment=None, has_data=False):
        self.status = status
        self.remaining, self.completed, self.failed, self.warning = (remaining, completed,
                                                                     failed, warning)
        self.failed_uids = failed_uids
        self.comment = comment
        self.has_data = has_data

    @property
    def counts(self):
        return (self.remaining, self.completed, self.failed, self.warning)

    def __repr__(self):
        return "<0x%04X r=%s c=%s f=%s w=%s%s>" % (
            self.status, self.remaining, self.completed, self.failed, self.warning,
            " failed_uids=%d" % len(self.failed_uids) if self.failed_uids is not None else "")


def is_pending(status):
    return status in (0xFF00, 0xFF01)


class RetrieveRun:
    """What a retrieve did, whichever client ran it: responses in order,
    the final one, and the C-STORE sub-operations the receiving side saw."""

    def __init__(self, responses, stores=None, output="", cmd=None, returncode=None,
                 association=None, log_path=None):
        self.responses = responses
        self.pending = [r for r in responses if is_pending(r.status)]
        self.final = responses[-1] if responses and not is_pending(responses[-1].status) else None
        self.stores = stores if stores is not None else []
        self.output = output
        self.cmd = cmd
        self.returncode = returncode
        self.association = association
        self.log_path = log_path

    @property
    def final_status(self):
        return self.final.status if self.final is not None else None

    def summary(self):
        lines = ["exit %s, association %s, %d responses, final %r, log %s" % (
            self.returncode, self.association, len(self.responses), self.final, self.log_path)]
        lines += ["  %r" % r for r in self.responses[:8]]
        if len(self.responses) > 8:
            lines.append("  ... %r" % self.responses[-1])
        tail = [ln for ln in self.output.splitlines() if ln.startswith(("E:", "W:", "F:"))]
        lines += ["  " + ln for ln in tail[-10:]]
        return "\n".join(lines)


def _parse_uid_list(v):
    if v is None:
        return None
    v = v.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    elif v.startswith("(no value"):
        return []
    return [u for u in v.split("\\") if u]


def _responses_from_log(output, rsp_type):
    out = []
    for b in dimse_blocks(output):
        if b.get("Message Type") != rsp_type:
            continue
        m = re.match(r"0x([0-9a-fA-F]{4})", b.get("DIMSE Status", ""))
        if not m:
            continue
        ids = b.get("_ids", {})
        out.append(Response(int(m.group(1), 16), _count(b.get("Remaining Suboperations")),
                            _count(b.get("Completed Suboperations")),
                            _count(b.get("Failed Suboperations")),
                            _count(b.get("Warning Suboperations")),
                            _parse_uid_list(ids.get((0x0008, 0x0058))),
                            has_data=b.get("Data Set") == "present"))
    return out


def _association_state(output):
    if re.search(r"Association Rejected", output):
        return "rejected"
    if re.search(r"Association Request Failed", output):
        return "failed"
    if "Association Accepted" in output:
        if re.search(r"Peer Aborted|Association Aborted", output):
            return "aborted"
        return "accepted"
    return None


def _stores_from_log(output):
    """C-STORE-RQs received, from a dcmtk -d log (storescp, getscu)."""
    out = []
    for b in dimse_blocks(output):
        if b.get("Message Type") == "C-STORE RQ":
            out.append({"sop_uid": b.get("Affected SOP Instance UID"),
                        "sop_class": b.get("Affected SOP Class UID"),
                        "originator_ae": b.get("Move Originator AE Title"),
                        "originator_msg_id": b.get("Move Originator ID")})
    return out


def identifier_keys(level, keys):
    """-k arguments for movescu/getscu: QueryRetrieveLevel first; a list
    value becomes a backslash-separated multi-value."""
    args = ["-k", "QueryRetrieveLevel=%s" % level]
    for k, v in keys.items():
        if isinstance(v, (list, tuple)):
            v = "\\".join(v)
        args += ["-k", "%s=%s" % (k, v)]
    return args


_run_counter = [0]


def _run_tool(cmd, workdir, name, timeout):
    _run_counter[0] += 1
    log_path = os.path.join(workdir, "%s-%03d.log" % (name, _run_counter[0]))
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", env=tool_env(), timeout=timeout)
        rc, out = r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        rc = "timeout after %ds" % timeout
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output
                                                                                     or "")
    with open(log_path, "w") as f:
        f.write(" ".join(cmd) + "\n\n" + out)
    return rc, out, log_path


def movescu(port, model, level, keys, workdir, *, aet="MOVER", dest="DEST",
            aec=H.NODE_AET, extra=(), timeout=120):
    """dcmtk's movescu: one C-MOVE with the identifier given as -k keys."""
    os.makedirs(workdir, exist_ok=True)
    cmd = (["movescu", "-d", MODEL_FLAG[model], "-aet", aet, "-aec", aec, "-aem", dest,
            "-to", "10", "-ta", "30", "-td", "60"] + identifier_keys(level, keys)
           + list(extra) + ["127.0.0.1", str(port)])
    rc, out, log_path = _run_tool(cmd, workdir, "movescu", timeout)
    return RetrieveRun(_responses_from_log(out, "C-MOVE RSP"), None, out, cmd, rc,
                       _association_state(out), log_path)


def getscu(port, model, level, keys, workdir, *, aet="MOVER", aec=H.NODE_AET, extra=(),
           timeout=120):
    """dcmtk's getscu: one C-GET; files into a fresh directory (run.outdir),
    run.files {SOP Instance UID: path}, run.stores from its log."""
    os.makedirs(workdir, exist_ok=True)
    _run_counter[0] += 1
    outdir = H.make_dir(os.path.join(workdir, "get%03d" % _run_counter[0]))
    cmd = (["getscu", "-d", MODEL_FLAG[model], "-aet", aet, "-aec", aec, "-od", outdir,
            "-to", "10", "-ta", "30", "-td", "60"] + identifier_keys(level, keys)
           + list(extra) + ["127.0.0.1", str(port)])
    rc, out, log_path = _run_tool(cmd, workdir, "getscu", timeout)
    run = RetrieveRun(_responses_from_log(out, "C-GET RSP"), _stores_from_log(out), out, cmd,
                      rc, _association_state(out), log_path)
    run.outdir = outdir
    run.files = files_by_sop(outdir)
    return run


# dcmtk's names of the transfer syntaxes in its logs
DCMTK_TS_NAMES = {
    "LittleEndianImplicit": TS["implicit"], "LittleEndianExplicit": TS["explicit"],
    "BigEndianExplicit": TS["big"], "DeflatedLittleEndianExplicit": TS["deflated"],
    "JPEGBaseline": TS["jpeg_baseline"], "JPEGExtended:Process2+4": TS["jpeg_extended"],
    "JPEGLossless:Non-hierarchical:Process14": TS["jpeg_lossless"],
    "JPEGLossless:Non-hierarchical-1stOrderPrediction": TS["jpeg_lossless_sv1"],
    "JPEGLSLossless": TS["jpegls_lossless"], "JPEGLSLossy": TS["jpegls_near"],
    "RLELossless": TS["rle"], "JPEG2000LosslessOnly": TS["j2k_lossless"],
    "JPEG2000": TS["j2k"],
}


DCMTK_CLASS_NAMES = {
    gen_corpus.SOP_CLASS["CT"]: "CTImageStorage", gen_corpus.SOP_CLASS["MR"]: "MRImageStorage",
    gen_corpus.SOP_CLASS["PT"]: "PositronEmissionTomographyImageStorage",
    gen_corpus.SOP_CLASS["NM"]: "NuclearMedicineImageStorage",
    gen_corpus.SOP_CLASS["OT"]: "SecondaryCaptureImageStorage",
}


def proposed_syntaxes(output, abstract_name):
    """The transfer syntaxes (UIDs) a dcmtk tool proposed for the abstract
    syntax named `abstract_name` (e.g. "CTImageStorage"), from the
    A-ASSOCIATE-RQ in its -d log."""
    out, in_rq, cur, in_ts = [], False, None, False
    for line in output.splitlines():
        if "BEGIN A-ASSOCIATE-RQ" in line:
            in_rq = True
            continue
        if "END A-ASSOCIATE-RQ" in line:
            break
        if not in_rq:
            continue
        m = re.match(r"^D:\s+Abstract Syntax: =?(\S+)", line)
        if m:
            cur, in_ts = m.group(1), False
            continue
        if "Proposed Transfer Syntax" in line:
            in_ts = True
            continue
        if "Context ID" in line:
            in_ts = False
            continue
        m = re.match(r"^D:\s+=?(\S+)\s*$", line)
        if in_ts and m and cur == abstract_name:
            name = m.group(1)
            out.append(DCMTK_TS_NAMES.get(name, name))
    return out


def files_by_sop(directory):
    """{SOP Instance UID: path} of the DICOM files in `directory` (one
    level), read from the files themselves."""
    out = {}
    with gen_corpus.quiet_pydicom():
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                out[str(ds.SOPInstanceUID)] = path
            except Exception:
                out.setdefault("?unreadable", [])
                out["?unreadable"].append(path)
    return out


# --------------------------------------------------------------------------
# storescp as the C-MOVE destination


def write_scp_profile(path, syntaxes, classes=STORAGE_CLASSES, name="Dest"):
    """A storescp association profile: Verification, and each storage class
    with `syntaxes` in this order of preference."""
    lines = ["[[TransferSyntaxes]]", "[Accepted]"]
    lines += ["TransferSyntax%d = %s" % (i, ts) for i, ts in enumerate(syntaxes, 1)]
    lines += ["[Echo]", "TransferSyntax1 = %s" % TS["implicit"], "",
              "[[PresentationContexts]]", "[%sContexts]" % name,
              "PresentationContext1 = %s\\Echo" % VERIFICATION]
    lines += ["PresentationContext%d = %s\\Accepted" % (i, c) for i, c in enumerate(classes, 2)]
    lines += ["", "[[Profiles]]", "[%s]" % name, "PresentationContexts = %sContexts" % name, ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return name


class Storescp:
    """One storescp process, ours: start() on a free port, stop() by PID.
    mark() remembers where its log is and empties its output directory;
    stores()/associations()/files() are what came after the mark."""

    def __init__(self, workdir, aet="DEST", accept="all", extra=()):
        self.dir = H.make_dir(workdir)
        self.out = H.make_dir(os.path.join(workdir, "in"))
        self.log_path = os.path.join(workdir, "storescp.log")
        self.aet, self.accept, self.extra = aet, accept, list(extra)
        self.profile_path = os.path.join(workdir, "storescp.cfg")
        write_scp_profile(self.profile_path, ACCEPT[accept])
        self.proc = None
        self.port = None
        self.offset = 0

    def start(self, timeout=10):
        for _attempt in range(3):
            port = H.free_port()
            cmd = (["storescp", "-d", "-aet", self.aet, "-xf", self.profile_path, "Dest", "+B",
                    "-od", self.out, "-ta", "10", "-td", "30"] + self.extra + [str(port)])
            with open(self.log_path, "ab") as log:
                log.write(("\n# %s\n" % " ".join(cmd)).encode())
                log.flush()
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=tool_env(),
                                             start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if listening(port):
                    self.port = port
                    self.offset = os.path.getsize(self.log_path)
                    return self
                time.sleep(0.02)
            self.stop()
        raise RuntimeError("storescp did not start; log %s:\n%s"
                           % (self.log_path, H.tail(self.log_path)))

    def stop(self):
        stop_process(self.proc)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, offset=None):
        with open(self.log_path, "rb") as f:
            f.seek(self.offset if offset is None else offset)
            return f.read().decode("utf-8", "replace")

    def mark(self):
        for name in os.listdir(self.out):
            os.unlink(os.path.join(self.out, name))
        self.offset = os.path.getsize(self.log_path)

    def settle(self, timeout=5.0):
        """Waits until the association in progress (if any) has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            opened = len(re.findall(r"^I: Association Received", text, re.M))
            ended = len(re.findall(r"^[IWEF]: (Association Release|Association Abort|"
                                   r"Peer Abort|Aborting Association|Refusing Association|"
                                   r"Association Request Failed|DIMSE failure|"
                                   r"Network timeout)", text, re.M | re.I))
            if ended >= opened:
                return
            time.sleep(0.02)

    def stores(self):
        return _stores_from_log(self.log_text())

    def associations(self):
        return len(re.findall(r"^I: Association Received", self.log_text(), re.M))

    def files(self):
        return files_by_sop(self.out)

    def requests(self):
        """(calling AE, called AE) of each A-ASSOCIATE-RQ it received."""
        out, calling, in_rq = [], None, False
        for line in self.log_text().splitlines():
            if "BEGIN A-ASSOCIATE-RQ" in line or "END A-ASSOCIATE-RQ" in line:
                in_rq = "BEGIN" in line
                continue
            if not in_rq:
                continue
            m = re.match(r"^D: Calling Application Name:\s+(.*)$", line)
            if m:
                calling = m.group(1).strip()
                continue
            m = re.match(r"^D: Called Application Name:\s+(.*)$", line)
            if m and calling is not None:
                out.append((calling, m.group(1).strip()))
                calling = None
        return out


# --------------------------------------------------------------------------
# Raw Upper Layer: messages with several presentation contexts


def _u16(v):
    return struct.pack("<H", v)


def _el(elem, value):
    return struct.pack("<HHI", 0x0000, elem, len(value)) + value


def _ae_value(title):
    b = title.encode("ascii")
    return b + (b" " if len(b) % 2 else b"")


def command(*elems):
    """A command set from (element, bytes) pairs of group 0000."""
    body = b"".join(_el(e, v) for e, v in sorted(elems))
    return _el(0x0000, struct.pack("<I", len(body))) + body


def cmd_u16(cmd, elem):
    v = cmd.get((0x0000, elem))
    return struct.unpack("<H", v)[0] if v is not None and len(v) == 2 else None


def cmd_str(cmd, elem):
    v = cmd.get((0x0000, elem))
    return v.rstrip(b"\0 ").decode("ascii", "replace") if v is not None else None


def encode_dataset(ds, ts):
    buf = DicomBytesIO()
    buf.is_little_endian = ts != TS["big"]
    buf.is_implicit_VR = ts == TS["implicit"]
    with gen_corpus.quiet_pydicom():
        write_dataset(buf, ds)
    return buf.getvalue()


def decode_dataset(data, ts):
    fp = DicomBytesIO(data)
    fp.is_little_endian = ts != TS["big"]
    fp.is_implicit_VR = ts == TS["implicit"]
    with gen_corpus.quiet_pydicom():
        return pydicom.filereader.read_dataset(fp, fp.is_implicit_VR, fp.is_little_endian)


def write_part10_raw(path, sop_class, sop_uid, ts, data):
    """A Part-10 file around dataset bytes as received, in their syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = IMPL_CLASS
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_file_meta_info(buf, meta, enforce_standard=True)
    meta_bytes = buf.getvalue()
    if not meta_bytes.startswith(b"DICM"):
        meta_bytes = b"DICM" + meta_bytes
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + meta_bytes + data)
    return path


class UlConnection:
    """PDUs and DIMSE messages on a connected socket (either side)."""

    def __init__(self, sock, max_send=rawscu.MAX_PDU):
        self.sock = sock
        self.max_send = max_send
        self._buf = bytearray()
        self._pos = 0
        self._pdvs = collections.deque()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

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

    def recv_pdu(self):
        kind, _, length = struct.unpack(">BBI", self._recv_exact(6))
        if kind == 0x04:
            self.largest_pdata = max(getattr(self, "largest_pdata", 0), length)
        return kind, self._recv_exact(length)

    def send_pdu(self, kind, payload):
        self.sock.sendall(struct.pack(">BBI", kind, 0, len(payload)) + payload)

    def abort(self):
        try:
            self.send_pdu(0x07, b"\0\0\0\0")
        except OSError:
            pass
        self.close()

    def _send_pdvs(self, pc_id, data, is_command):
        room = self.max_send - 6
        chunks = [data[i:i + room] for i in range(0, len(data), room)] or [b""]
        out = []
        for i, chunk in enumerate(chunks):
            control = (1 if is_command else 0) | (2 if i == len(chunks) - 1 else 0)
            pdv = struct.pack(">IBB", len(chunk) + 2, pc_id, control) + chunk
            out.append(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
        self.sock.sendall(b"".join(out))

    def send_message(self, pc_id, cmd, data=None):
        self._send_pdvs(pc_id, cmd, True)
        if data is not None:
            self._send_pdvs(pc_id, data, False)

    def _next_pdv(self):
        while not self._pdvs:
            kind, body = self.recv_pdu()
            if kind == 0x07:
                raise rawscu.UlError("association aborted by the peer")
            if kind == 0x05:
                raise ReleaseRequested()
            if kind != 0x04:
                raise rawscu.UlError("unexpected PDU 0x%02x instead of P-DATA-TF" % kind)
            off = 0
            while off + 6 <= len(body):
                (n,) = struct.unpack_from(">I", body, off)
                self._pdvs.append((body[off + 4], body[off + 5], body[off + 6:off + 4 + n]))
                off += 4 + n
        return self._pdvs.popleft()

    def recv_message(self):
        """(presentation context id, command {(g, e): bytes}, data or None)."""
        parts = []
        while True:
            pc_id, control, data = self._next_pdv()
            if not control & 1:
                raise rawscu.UlError("a data fragment where a command was due")
            parts.append(data)
            if control & 2:
                break
        cmd = rawscu.parse_command(b"".join(parts))
        if cmd_u16(cmd, 0x0800) == 0x0101:
            return pc_id, cmd, None
        parts = []
        while True:
            pid, control, data = self._next_pdv()
            if control & 1:
                raise rawscu.UlError("a command fragment where data was due")
            parts.append(data)
            if control & 2:
                break
        return pc_id, cmd, b"".join(parts)


class ReleaseRequested(Exception):
    pass


def _item(kind, payload):
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _uid_bytes(u):
    return u.encode("ascii")


def _user_info(max_pdu, roles=(), ext_neg=None):
    body = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, _uid_bytes(IMPL_CLASS))
    for uid in roles:
        u = _uid_bytes(uid)
        body += _item(0x54, struct.pack(">H", len(u)) + u + b"\x00\x01")  # SCU no, SCP yes
    for uid, info in (ext_neg or {}).items():  # SOP Class Extended Negotiation
        u = uid.encode("ascii")
        body += _item(0x56, struct.pack(">H", len(u)) + u + info)
    return _item(0x50, body)


def _parse_items(body, off):
    while off + 4 <= len(body):
        kind, _, n = struct.unpack_from(">BBH", body, off)
        yield kind, body[off + 4:off + 4 + n]
        off += 4 + n


class RetrieveAssociation(UlConnection):
    """A requesting AE for C-MOVE and C-GET, written from PS3.7/PS3.8."""

    def __init__(self, host, port, timeout=60):
        s = socket.create_connection((host, port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(s)
        self.accepted = {}  # pc id -> (abstract syntax, transfer syntax)
        self.msg_id = 0

    def associate(self, calling, called, contexts, roles=(), max_pdu=None, ext_neg=None):
        """contexts: [(abstract syntax, [transfer syntaxes])]; roles:
        abstract syntaxes for which we propose the SCP role (C-GET);
        ext_neg {SOP class: bytes} proposed, the answer in self.ext_neg."""
        body = struct.pack(">HH", 1, 0) + rawscu._ae(called) + rawscu._ae(calling) + b"\0" * 32
        body += _item(0x10, rawscu.APP_CONTEXT)
        self.proposed = {}
        for i, (abstract, syntaxes) in enumerate(contexts):
            pc_id = 2 * i + 1
            assert pc_id < 256, "too many presentation contexts"
            self.proposed[pc_id] = abstract
            pc = struct.pack(">BBBB", pc_id, 0, 0, 0) + _item(0x30, _uid_bytes(abstract))
            for ts in syntaxes:
                pc += _item(0x40, _uid_bytes(ts))
            body += _item(0x20, pc)
        body += _user_info(max_pdu or rawscu.MAX_PDU, sorted(set(roles)), ext_neg)
        self.send_pdu(0x01, body)
        kind, rsp = self.recv_pdu()
        if kind == 0x03:
            raise rawscu.UlError("association rejected (result %d, source %d, reason %d)"
                                 % (rsp[1], rsp[2], rsp[3]))
        if kind != 0x02:
            raise rawscu.UlError("unexpected PDU 0x%02x instead of A-ASSOCIATE-AC" % kind)
        self.roles = {}
        self.ext_neg = {}
        for item, payload in _parse_items(rsp, 68):
            if item == 0x21 and payload[2] == 0:
                ts = None
                for sub, sp in _parse_items(payload, 4):
                    if sub == 0x40:
                        ts = sp.rstrip(b"\0").decode()
                self.accepted[payload[0]] = (self.proposed.get(payload[0]), ts)
            elif item == 0x50:
                for sub, sp in _parse_items(payload, 0):
                    if sub == 0x51:
                        (peer_max,) = struct.unpack(">I", sp[:4])
                        if peer_max:
                            self.max_send = min(rawscu.MAX_PDU, peer_max)
                    elif sub == 0x54:
                        (n,) = struct.unpack(">H", sp[:2])
                        self.roles[sp[2:2 + n].rstrip(b"\0").decode()] = (sp[2 + n], sp[3 + n])
                    elif sub == 0x56:
                        (n,) = struct.unpack(">H", sp[:2])
                        self.ext_neg[sp[2:2 + n].decode()] = sp[2 + n:]
        return self.accepted

    def context_for(self, abstract):
        for pc_id, (a, ts) in sorted(self.accepted.items()):
            if a == abstract:
                return pc_id, ts
        raise rawscu.UlError("no accepted presentation context for %s" % abstract)

    def release(self):
        self.send_pdu(0x05, b"\0" * 4)
        while True:
            kind, _ = self.recv_pdu()
            if kind == 0x06:
                return
            if kind != 0x04:
                raise rawscu.UlError("unexpected PDU 0x%02x instead of A-RELEASE-RP" % kind)

    def retrieve(self, sop_class, identifier, *, dest=None, cancel_after=None,
                 store_delay=0.0, store_status=None, outdir=None, on_pending=None):
        """One C-MOVE (dest given) or C-GET. A C-GET's C-STORE-RQs are
        answered here (after store_delay seconds; status store_status(uid)
        or success) and saved into outdir when given. Returns a RetrieveRun
        whose stores are what arrived on this association."""
        pc_id, ts = self.context_for(sop_class)
        self.msg_id += 1
        msg_id = self.msg_id
        elems = [(0x0002, rawscu._uid(sop_class)),
                 (0x0100, _u16(0x0021 if dest is not None else 0x0010)),
                 (0x0110, _u16(msg_id)), (0x0700, _u16(0)), (0x0800, _u16(0x0000))]
        if dest is not None:
            elems.append((0x0600, _ae_value(dest)))
        data = identifier if isinstance(identifier, bytes) else encode_dataset(identifier, ts)
        self.send_message(pc_id, command(*elems), data)
        responses, stores = [], []
        rsp_field = 0x8021 if dest is not None else 0x8010
        cancelled = False
        while True:
            rpc, cmd, data = self.recv_message()
            field = cmd_u16(cmd, 0x0100)
            if field == 0x0001:  # C-STORE-RQ of a C-GET
                sop_uid = cmd_str(cmd, 0x1000)
                sop_cls = cmd_str(cmd, 0x0002)
                sts = self.accepted.get(rpc, (None, None))[1]
                rec = {"sop_uid": sop_uid, "sop_class": sop_cls, "ts": sts, "pc_id": rpc,
                       "originator_ae": cmd_str(cmd, 0x1030), "size": len(data or b"")}
                if outdir is not None and data is not None:
                    rec["path"] = write_part10_raw(
                        os.path.join(outdir, "%04d-%s.dcm" % (len(stores), sop_uid)),
                        sop_cls, sop_uid, sts, data)
                stores.append(rec)
                if store_delay:
                    time.sleep(store_delay)
                status = store_status(sop_uid) if store_status else 0
                self.send_message(rpc, command(
                    (0x0002, rawscu._uid(sop_cls)), (0x0100, _u16(0x8001)),
                    (0x0120, _u16(cmd_u16(cmd, 0x0110))), (0x0800, _u16(0x0101)),
                    (0x0900, _u16(status)), (0x1000, rawscu._uid(sop_uid))))
                continue
            if field != rsp_field:
                raise rawscu.UlError("command 0x%04x while waiting for 0x%04x" % (field,
                                                                                  rsp_field))
            if cmd_u16(cmd, 0x0120) != msg_id:
                raise rawscu.UlError("response to message %s, wanted %d"
                                     % (cmd_u16(cmd, 0x0120), msg_id))
            failed = None
            if data is not None:
                ids = decode_dataset(data, self.accepted[rpc][1])
                if "FailedSOPInstanceUIDList" in ids:
                    v = ids.FailedSOPInstanceUIDList
                    failed = [str(x) for x in (v if isinstance(v, (list, pydicom.multival.MultiValue))
                                               else [v] if v else [])]
                else:
                    failed = None
            r = Response(cmd_u16(cmd, 0x0900), cmd_u16(cmd, 0x1020), cmd_u16(cmd, 0x1021),
                         cmd_u16(cmd, 0x1022), cmd_u16(cmd, 0x1023), failed,
                         cmd_str(cmd, 0x0902), data is not None)
            r.raw_data = data
            responses.append(r)
            if not is_pending(r.status):
                run = RetrieveRun(responses, stores, association="accepted")
                run.cancel_sent = cancelled
                return run
            if on_pending is not None:
                on_pending(len(responses), r)
            if cancel_after is not None and len(responses) == cancel_after and not cancelled:
                self.send_message(pc_id, command((0x0100, _u16(0x0FFF)),
                                                 (0x0120, _u16(msg_id)),
                                                 (0x0800, _u16(0x0101))))
                cancelled = True


def retrieve_dataset(level, keys):
    """An identifier: QueryRetrieveLevel and `keys` (a list value becomes a
    multi-valued element); invalid values are written as given."""
    ds = Dataset()
    with gen_corpus.quiet_pydicom():
        ds.QueryRetrieveLevel = level
        for k, v in keys.items():
            setattr(ds, k, "\\".join(v) if isinstance(v, (list, tuple)) else v)
    return ds


def raw_move(port, model, level, keys, *, dest="DEST", calling="MOVER", **kw):
    assoc = RetrieveAssociation("127.0.0.1", port)
    try:
        assoc.associate(calling, H.NODE_AET, [(MOVE[model], [TS["explicit"], TS["implicit"]])])
        run = assoc.retrieve(MOVE[model], retrieve_dataset(level, keys), dest=dest, **kw)
        assoc.release()
        return run
    finally:
        assoc.close()


def get_contexts(pairs):
    """Storage contexts for a C-GET SCU: one per (SOP class, syntax) pair,
    that syntax alone, so each instance can come in the syntax it is in."""
    return [(cls, [ts]) for cls, ts in sorted(set(pairs))]


def raw_get(port, model, level, keys, pairs, *, calling="MOVER", outdir=None, max_pdu=None, **kw):
    """C-GET with storage contexts for `pairs` [(SOP class, TS)] (SCP role).
    The run's largest_pdata is the longest P-DATA-TF PDU received."""
    assoc = RetrieveAssociation("127.0.0.1", port)
    try:
        ctx = [(GET[model], [TS["explicit"], TS["implicit"]])] + get_contexts(pairs)
        assoc.associate(calling, H.NODE_AET, ctx, roles={c for c, _ in pairs}, max_pdu=max_pdu)
        run = assoc.retrieve(GET[model], retrieve_dataset(level, keys), outdir=outdir, **kw)
        assoc.release()
        run.largest_pdata = getattr(assoc, "largest_pdata", 0)
        return run
    finally:
        assoc.close()


# --------------------------------------------------------------------------
# A raw storage SCP: slow, or gone after K instances


class RawStoreSCP:
    """Accepts associations on 127.0.0.1 (one at a time, in a thread), every
    storage context with the first of `syntaxes` proposed; answers C-STORE
    with success after `delay` seconds. With abort_after=K it sends
    A-ABORT and closes on the (K+1)-th C-STORE-RQ of an association."""

    def __init__(self, aet="RAWDEST", delay=0.0, abort_after=None, syntaxes=ALL_SYNTAXES):
        self.aet, self.delay, self.abort_after, self.syntaxes = aet, delay, abort_after, syntaxes
        self.stores = []
        self.associations = 0
        self.aborted = 0
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        self.sock.close()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(30)
            with self._lock:
                self.associations += 1
            ul = UlConnection(conn)
            try:
                self._association(ul)
            except Exception as e:  # noqa: BLE001 - recorded for the test
                self.errors.append(repr(e))
            finally:
                ul.close()

    def _association(self, ul):
        kind, rq = ul.recv_pdu()
        if kind != 0x01:
            return
        pcs = []
        for item, payload in _parse_items(rq, 68):
            if item == 0x20:
                abstract, syntaxes = None, []
                for sub, sp in _parse_items(payload, 4):
                    if sub == 0x30:
                        abstract = sp.rstrip(b"\0").decode()
                    elif sub == 0x40:
                        syntaxes.append(sp.rstrip(b"\0").decode())
                pcs.append((payload[0], abstract, syntaxes))
            elif item == 0x50:
                for sub, sp in _parse_items(payload, 0):
                    if sub == 0x51:
                        (peer_max,) = struct.unpack(">I", sp[:4])
                        if peer_max:
                            ul.max_send = min(rawscu.MAX_PDU, peer_max)
        body = rq[:4] + rq[4:68]  # version, reserved, called, calling, reserved: echoed
        body += _item(0x10, rawscu.APP_CONTEXT)
        accepted = {}
        for pc_id, abstract, syntaxes in pcs:
            pref = [TS["implicit"]] if abstract == VERIFICATION else self.syntaxes
            choice = next((ts for ts in pref if ts in syntaxes), None)
            result = 0 if choice else 4
            accepted[pc_id] = choice
            body += _item(0x21, struct.pack(">BBBB", pc_id, 0, result, 0)
                          + _item(0x40, _uid_bytes(choice or TS["implicit"])))
        body += _user_info(rawscu.MAX_PDU)
        ul.send_pdu(0x02, body)
        n = 0
        while True:
            try:
                pc_id, cmd, data = ul.recv_message()
            except ReleaseRequested:
                ul.send_pdu(0x06, b"\0" * 4)
                return
            field = cmd_u16(cmd, 0x0100)
            if field == 0x0030:
                ul.send_message(pc_id, command((0x0002, rawscu._uid(VERIFICATION)),
                                               (0x0100, _u16(0x8030)),
                                               (0x0120, _u16(cmd_u16(cmd, 0x0110))),
                                               (0x0800, _u16(0x0101)), (0x0900, _u16(0))))
                continue
            if field != 0x0001:
                ul.abort()
                return
            n += 1
            if self.abort_after is not None and n > self.abort_after:
                with self._lock:
                    self.aborted += 1
                ul.abort()
                return
            sop_uid = cmd_str(cmd, 0x1000)
            with self._lock:
                self.stores.append({"sop_uid": sop_uid, "ts": accepted.get(pc_id),
                                    "originator_ae": cmd_str(cmd, 0x1030)})
            if self.delay:
                time.sleep(self.delay)
            ul.send_message(pc_id, command((0x0002, cmd[(0x0000, 0x0002)]),
                                           (0x0100, _u16(0x8001)),
                                           (0x0120, _u16(cmd_u16(cmd, 0x0110))),
                                           (0x0800, _u16(0x0101)), (0x0900, _u16(0)),
                                           (0x1000, rawscu._uid(sop_uid))))


# --------------------------------------------------------------------------
# What arrived against the manifest

_PLANS = {}


def generated_pixels(sop_uid):
    """The generator's own pixel bytes (little endian) for a generated
    instance, rebuilt from its plan: independent of any codec."""
    if not _PLANS:
        _PLANS.update({p.sop_uid: p for p in gen_corpus.plan_corpus(0)})
    p = _PLANS.get(sop_uid)
    if p is None:
        return None
    with gen_corpus.quiet_pydicom():
        ds, _ = gen_corpus.build_dataset(p)
    return bytes(ds.PixelData)


def pixel_le(ds):
    """Native Pixel Data as little endian bytes."""
    data = bytes(ds.PixelData)
    if not ds.is_little_endian and int(ds.get("BitsAllocated", 8)) == 16:
        a = bytearray(data)
        a[0::2], a[1::2] = data[1::2], data[0::2]
        data = bytes(a)
    return data


def outcome(stored_ts, accepted):
    """What must happen to an instance stored in `stored_ts` sent to a
    receiver accepting `accepted` syntaxes: "same" (sent as stored),
    "lossless" (converted, same values), "lossy" (decompressed from a
    lossy syntax), "fail" (no codec: a failed sub-operation)."""
    if stored_ts in accepted:
        return "same"
    if not set(accepted) & (UNCOMPRESSED | set(LOSSLESS_TARGETS)):
        return "fail"
    if stored_ts in NOT_DECODABLE:
        return "fail"
    if stored_ts in LOSSY_CODED:
        return "lossy"
    return "lossless"


# attributes a decoder may legitimately rewrite along with the pixels
DECODER_MAY_CHANGE = {"PixelData", "PhotometricInterpretation", "PlanarConfiguration",
                      "LossyImageCompression", "LossyImageCompressionRatio",
                      "LossyImageCompressionMethod", "BitsStored", "HighBit",
                      "PixelRepresentation"}


def _strip(ds, keywords):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "filename is a file-like object" (deflated files)
        ds = ds.copy()
    for kw in keywords:
        if kw in ds:
            delattr(ds, kw)
    return ds


def compare_converted(sent_path, got_path, accepted, lossy):
    """Differences between an instance as stored and as received after a
    conversion to one of `accepted` (uncompressed) syntaxes."""
    diffs = []
    with gen_corpus.quiet_pydicom():
        sent = pydicom.dcmread(sent_path)
        got = pydicom.dcmread(got_path)
    ts = str(got.file_meta.TransferSyntaxUID)
    if ts in accepted and ts in LOSSLESS_TARGETS:
        # re-encoded losslessly: judge what dcmtk decodes from it
        plain = got_path + ".decoded.dcm"
        r = subprocess.run([LOSSLESS_TARGETS[ts], got_path, plain], capture_output=True, text=True)
        if r.returncode != 0:
            return ["received in %s, which %s cannot decode: %s"
                    % (ts, LOSSLESS_TARGETS[ts], r.stderr.strip())]
        with gen_corpus.quiet_pydicom():
            got = pydicom.dcmread(plain)
        ts = str(got.file_meta.TransferSyntaxUID)
        accepted = list(accepted) + [ts]
        reencoded = True
    else:
        reencoded = False
    if ts not in accepted or ts not in UNCOMPRESSED:
        diffs.append("received in %s, wanted one of %s" % (ts, sorted(set(accepted)
                                                                       & UNCOMPRESSED)))
        return diffs
    for kw, want in (("MediaStorageSOPClassUID", str(sent.SOPClassUID)),
                     ("MediaStorageSOPInstanceUID", str(sent.SOPInstanceUID))):
        if str(got.file_meta.get(kw)) != want:
            diffs.append("meta %s is %r, wanted %r" % (kw, got.file_meta.get(kw), want))
    sent.decode()
    got.decode()
    drop = DECODER_MAY_CHANGE if lossy else {"PixelData"}
    if reencoded:  # dcmtk's encoders record what they did
        drop = drop | {"DerivationDescription", "DerivationCodeSequence"}
    diffs += C._element_differences(_strip(sent, drop), _strip(got, drop))
    if "PixelData" not in got:
        return diffs + ["no Pixel Data"]
    px = pixel_le(got)
    frames = int(sent.get("NumberOfFrames", 1) or 1)
    want_len = (int(sent.Rows) * int(sent.Columns) * frames * int(sent.SamplesPerPixel)
                * int(sent.BitsAllocated) // 8)
    if len(px) not in (want_len, want_len + 1):
        diffs.append("Pixel Data has %d bytes, wanted %d" % (len(px), want_len))
    elif not lossy:
        want = generated_pixels(str(sent.SOPInstanceUID))
        if want is None:  # not generated: the stored file holds native pixels
            want = pixel_le(sent)
        if px[:want_len] != want[:want_len]:
            n = next((i for i in range(want_len) if px[i] != want[i]), None)
            diffs.append("Pixel Data differs from the lossless original (first at byte %s)"
                         % n)
    return diffs


def check_instances(arrivals, files, entries, accepted, *, originator=None, exact=True,
                    same_syntax=True):
    """Problems (a list of strings) with what a receiver got.

    arrivals: the C-STORE-RQs it saw, in order ({"sop_uid", ...});
    files: {SOP Instance UID: path} of what it wrote; entries: manifest
    entries that were to be retrieved; accepted: the syntaxes it accepts.
    Each entry whose outcome is not "fail" must arrive exactly once; no
    other instance may arrive; each file is compared with the stored one.
    same_syntax=False: the receiver offered several syntaxes in one
    context and the sender picks one, so an instance whose stored syntax
    was among them may also come converted (checked as lossless). Either
    way an instance stored in explicit or implicit VR little endian may
    come in the other one: the node offers the two in one context (the
    issue: "the syntax each is stored in plus explicit and implicit VR
    little endian") and the receiver picks one of them.
    Returns (problems, {sop uid: outcome})."""
    problems = []
    by_sop = {e["sop_instance_uid"]: e for e in entries}
    expect = {sop: outcome(e["transfer_syntax_uid"], accepted) for sop, e in by_sop.items()}
    counts = collections.Counter(a["sop_uid"] for a in arrivals)
    for sop, oc in sorted(expect.items()):
        n = counts.get(sop, 0)
        if oc == "fail":
            if n:
                problems.append("%s (%s) arrived %d times but cannot be sent in %s"
                                % (sop, by_sop[sop]["path"], n, accepted))
            continue
        if n != 1:
            problems.append("%s (%s): arrived %d times, wanted once"
                            % (sop, by_sop[sop]["path"], n))
    extra = sorted(set(counts) - set(expect))
    if extra:
        problems.append("instances that were not asked for arrived: %s" % extra[:10])
    if originator is not None:
        bad = sorted({a.get("originator_ae") for a in arrivals} - {originator})
        if bad:
            problems.append("Move Originator AE Title %r, wanted %r" % (bad, originator))
    if not exact:
        return problems, expect
    for sop, oc in sorted(expect.items()):
        if oc == "fail" or counts.get(sop, 0) != 1:
            continue
        e = by_sop[sop]
        path = files.get(sop)
        name = "%s (%s)" % (e["path"], sop)
        if path is None:
            problems.append("%s: announced but no file was written" % name)
            continue
        if oc == "same":
            got_ts, stored_ts = received_syntax(path), e["transfer_syntax_uid"]
            if got_ts != stored_ts and (not same_syntax
                                        or {got_ts, stored_ts} <= LITTLE_ENDIAN_NATIVE):
                oc = "lossless"
        if oc == "same":
            d = C.compare_part10(e["abspath"], path, e["sop_class_uid"], sop,
                                 e["transfer_syntax_uid"])
        else:
            d = compare_converted(e["abspath"], path, accepted, oc == "lossy")
        problems += ["%s [%s]: %s" % (name, oc, x) for x in d]
    return problems, expect


def received_syntax(path):
    with gen_corpus.quiet_pydicom():
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def check_counts(run, n_total, *, completed=None, failed=0, warning=0, final_status=SUCCESS):
    """Problems with a run's responses: every pending response carries all
    four counts adding up to n_total, the remaining count never grows and
    the completed+failed+warning count never shrinks; the final response
    has the wanted status and counts (remaining absent or 0)."""
    problems = []
    if completed is None:
        completed = n_total - failed - warning
    prev_done, prev_rem = -1, n_total + 1
    for i, r in enumerate(run.pending):
        if None in r.counts:
            problems.append("pending response %d lacks a count: %r" % (i + 1, r))
            continue
        if sum(r.counts) != n_total:
            problems.append("pending response %d: counts %r add up to %d, wanted %d"
                            % (i + 1, r, sum(r.counts), n_total))
        done = r.completed + r.failed + r.warning
        if done < prev_done or r.remaining > prev_rem:
            problems.append("pending response %d goes backwards: %r" % (i + 1, r))
        prev_done, prev_rem = done, r.remaining
    f = run.final
    if f is None:
        problems.append("no final response")
        return problems
    if f.status != final_status:
        problems.append("final status 0x%04X, wanted 0x%04X" % (f.status, final_status))
    if f.remaining not in (None, 0):
        problems.append("final response with %d remaining" % f.remaining)
    got = (f.completed, f.failed, f.warning)
    if got != (completed, failed, warning):
        problems.append("final counts completed/failed/warning %r, wanted %r"
                        % (got, (completed, failed, warning)))
    return problems
