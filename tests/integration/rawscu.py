"""A deliberately small DICOM Upper Layer client for the cases storescu
and findscu cannot produce: a C-STORE-RQ whose command names another SOP
Instance (or Class) UID than the dataset it carries; C-STOREs and a C-FIND
on one association.

One association, a presentation context per abstract syntax asked for
(explicit VR little endian), C-STOREs, C-FINDs, release. Written from PS3.8
(PDUs), PS3.7 (command set) and PS3.5 (explicit VR encoding); no
negotiation beyond what these tests need.
"""

import socket
import struct

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPL_CLASS = b"2.25.261818146311413236214325166441376307457"
MAX_PDU = 16384


class UlError(Exception):
    pass


def _uid(u):
    b = u.encode("ascii") if isinstance(u, str) else u
    return b + (b"\0" if len(b) % 2 else b"")


def _item(kind, payload):
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _pdu(kind, payload):
    return struct.pack(">BBI", kind, 0, len(payload)) + payload


def _ae(title):
    return title.encode("ascii").ljust(16, b" ")[:16]


def associate_rq(calling, called, abstract, transfer=EXPLICIT_LE, pc_id=1, more=(), ext_neg=None):
    """`abstract` in context pc_id, each of `more` in the next odd ids;
    ext_neg {SOP class UID: application information bytes}: SOP Class
    Extended Negotiation sub-items (PS3.7 D.3.3.5)."""
    pcs = b""
    for i, a in enumerate((abstract,) + tuple(more)):
        pc = struct.pack(">BBBB", pc_id + 2 * i, 0, 0, 0)
        pc += _item(0x30, a.encode("ascii"))
        pc += _item(0x40, transfer.encode("ascii"))
        pcs += _item(0x20, pc)
    user = _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, IMPL_CLASS)
    for uid, info in (ext_neg or {}).items():
        u = uid.encode("ascii")
        user += _item(0x56, struct.pack(">H", len(u)) + u + info)
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
    body += _item(0x10, APP_CONTEXT) + pcs + _item(0x50, user)
    return _pdu(0x01, body)


def _element(group, elem, value):
    """Implicit VR little endian element (command sets are always that)."""
    return struct.pack("<HHI", group, elem, len(value)) + value


def c_store_rq(msg_id, sop_class, sop_uid):
    elems = (_element(0x0000, 0x0002, _uid(sop_class))
             + _element(0x0000, 0x0100, struct.pack("<H", 0x0001))
             + _element(0x0000, 0x0110, struct.pack("<H", msg_id))
             + _element(0x0000, 0x0700, struct.pack("<H", 0))
             + _element(0x0000, 0x0800, struct.pack("<H", 0x0000))
             + _element(0x0000, 0x1000, _uid(sop_uid)))
    return _element(0x0000, 0x0000, struct.pack("<I", len(elems))) + elems


def c_find_rq(msg_id, sop_class):
    elems = (_element(0x0000, 0x0002, _uid(sop_class))
             + _element(0x0000, 0x0100, struct.pack("<H", 0x0020))
             + _element(0x0000, 0x0110, struct.pack("<H", msg_id))
             + _element(0x0000, 0x0700, struct.pack("<H", 0))
             + _element(0x0000, 0x0800, struct.pack("<H", 0x0000)))
    return _element(0x0000, 0x0000, struct.pack("<I", len(elems))) + elems


LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")


def explicit_element(group, elem, vr, value):
    """An explicit VR little endian element with a short-length VR."""
    if len(value) % 2:
        value += b"\0" if vr == "UI" else b" "
    return struct.pack("<HH2sH", group, elem, vr.encode("ascii"), len(value)) + value


def parse_explicit(data):
    """{(group, element): bytes} of the top level of an explicit VR little
    endian dataset (sequences skipped whole when of defined length)."""
    out, off = {}, 0
    while off + 8 <= len(data):
        g, e, vr = struct.unpack_from("<HH2s", data, off)
        if vr in LONG_VRS:
            (n,) = struct.unpack_from("<I", data, off + 8)
            start = off + 12
        else:
            (n,) = struct.unpack_from("<H", data, off + 6)
            start = off + 8
        if n == 0xFFFFFFFF:
            raise UlError("undefined length element (%04x,%04x)" % (g, e))
        out[(g, e)] = data[start:start + n]
        off = start + n
    return out


def parse_command(data):
    """{(group, element): bytes} of an implicit VR LE command set."""
    out, off = {}, 0
    while off + 8 <= len(data):
        g, e, n = struct.unpack_from("<HHI", data, off)
        out[(g, e)] = data[off + 8:off + 8 + n]
        off += 8 + n
    return out


def dataset_bytes(path):
    """The dataset of an explicit VR little endian Part-10 file, as stored
    after its meta header."""
    with open(path, "rb") as f:
        data = f.read()
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise UlError("%s: no Part-10 meta header with a group length" % path)
    (meta_len,) = struct.unpack_from("<I", data, 140)
    return data[144 + meta_len:]


class Association:
    def __init__(self, host, port, timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_send = MAX_PDU
        self.pc_id = None

    def close(self):
        self.sock.close()

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise UlError("connection closed by the peer")
            buf += chunk
        return buf

    def recv_pdu(self):
        kind, _, length = struct.unpack(">BBI", self._recv_exact(6))
        return kind, self._recv_exact(length)

    def associate(self, calling, called, abstract, transfer=EXPLICIT_LE, more=(), ext_neg=None):
        """self.ext_neg: the A-ASSOCIATE-AC's extended negotiation items,
        {SOP class UID: application information bytes}."""
        self.accepted = set()
        self.ext_neg = {}
        self.sock.sendall(associate_rq(calling, called, abstract, transfer, more=more, ext_neg=ext_neg))
        kind, body = self.recv_pdu()
        if kind == 0x03:
            raise UlError("association rejected (result %d, source %d, reason %d)"
                          % (body[1], body[2], body[3]))
        if kind != 0x02:
            raise UlError("unexpected PDU 0x%02x instead of A-ASSOCIATE-AC" % kind)
        off = 68
        while off + 4 <= len(body):
            item, _, n = struct.unpack_from(">BBH", body, off)
            payload = body[off + 4:off + 4 + n]
            if item == 0x21 and payload[2] == 0:
                self.accepted.add(payload[0])
                if self.pc_id is None:
                    self.pc_id = payload[0]
            elif item == 0x50:
                sub = 0
                while sub + 4 <= len(payload):
                    st, _, sn = struct.unpack_from(">BBH", payload, sub)
                    if st == 0x51:
                        (peer_max,) = struct.unpack_from(">I", payload, sub + 4)
                        if peer_max:
                            self.max_send = min(MAX_PDU, peer_max)
                    elif st == 0x56:
                        (ul,) = struct.unpack_from(">H", payload, sub + 4)
                        uid = payload[sub + 6:sub + 6 + ul].decode("ascii")
                        self.ext_neg[uid] = payload[sub + 6 + ul:sub + 4 + sn]
                    sub += 4 + sn
            off += 4 + n
        if self.pc_id is None:
            raise UlError("presentation context not accepted")

    def _send_pdvs(self, data, is_command, pc_id=None):
        room = self.max_send - 6  # PDV item: length (4), context id, control header
        chunks = [data[i:i + room] for i in range(0, len(data), room)] or [b""]
        for i, chunk in enumerate(chunks):
            control = (1 if is_command else 0) | (2 if i == len(chunks) - 1 else 0)
            pdv = struct.pack(">IBB", len(chunk) + 2, pc_id or self.pc_id, control) + chunk
            self.sock.sendall(_pdu(0x04, pdv))

    def _recv_command(self):
        return parse_command(self._recv_pdvs())

    def _recv_pdvs(self):
        """The next whole message fragment stream: a command or a dataset."""
        data = b""
        while True:
            kind, body = self.recv_pdu()
            if kind == 0x07:
                raise UlError("association aborted by the peer")
            if kind != 0x04:
                raise UlError("unexpected PDU 0x%02x instead of P-DATA-TF" % kind)
            off = 0
            while off + 6 <= len(body):
                (n,) = struct.unpack_from(">I", body, off)
                control = body[off + 5]
                data += body[off + 6:off + 4 + n]
                off += 4 + n
                if control & 2:
                    return data

    def c_store(self, sop_class, sop_uid, dataset, msg_id=1):
        """Sends one C-STORE-RQ; returns the response's status."""
        self._send_pdvs(c_store_rq(msg_id, sop_class, sop_uid), True)
        self._send_pdvs(dataset, False)
        rsp = self._recv_command()
        status = rsp.get((0x0000, 0x0900))
        if status is None:
            raise UlError("C-STORE-RSP without a status")
        return struct.unpack("<H", status)[0]

    def c_find(self, sop_class, identifier, pc_id, msg_id=1):
        """Sends one C-FIND-RQ on context pc_id; returns [(status, dataset
        bytes or None)] up to and including the final response."""
        if pc_id not in self.accepted:
            raise UlError("presentation context %d not accepted" % pc_id)
        self._send_pdvs(c_find_rq(msg_id, sop_class), True, pc_id)
        self._send_pdvs(identifier, False, pc_id)
        out = []
        while True:
            rsp = self._recv_command()
            (status,) = struct.unpack("<H", rsp[(0x0000, 0x0900)])
            has_data = struct.unpack("<H", rsp[(0x0000, 0x0800)])[0] != 0x0101
            out.append((status, self._recv_pdvs() if has_data else None))
            if status not in (0xFF00, 0xFF01):
                return out

    def release(self):
        self.sock.sendall(_pdu(0x05, b"\0" * 4))
        kind, _ = self.recv_pdu()
        if kind != 0x06:
            raise UlError("unexpected PDU 0x%02x instead of A-RELEASE-RP" % kind)


def store_file(port, path, *, command_sop_class, command_sop_uid, host="127.0.0.1",
               calling="PNRAW", called="PACSNODE", context_sop_class=None):
    """C-STORE of an explicit VR LE Part-10 file's dataset under the given
    command UIDs. Returns the DIMSE status, or raises UlError when the node
    rejects or aborts the association instead of answering."""
    assoc = Association(host, port)
    try:
        assoc.associate(calling, called, context_sop_class or command_sop_class)
        status = assoc.c_store(command_sop_class, command_sop_uid, dataset_bytes(path))
        assoc.release()
        return status
    finally:
        assoc.close()
