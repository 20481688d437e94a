#!/usr/bin/python3
"""A minimal C-FIND SCU for the benchmark: one association, many queries,
each timed from the first byte of the request to the final response.

Written from PS3.8 (A-ASSOCIATE, P-DATA-TF, A-RELEASE) and PS3.7 (C-FIND,
C-ECHO): no library, so that the per-query overhead on the client side is
small and the same for every server.

    findclient.py run --port P --aec AE --plan PLAN.json --out RESULT.json
                      [--shapes a,b] [--max-seconds S] [--echo N]
                      [--tls CERT KEY CA]
        --tls: the association over TLS (Python's ssl: this client
        certificate and key, the server verified against CA and its name,
        127.0.0.1, checked in its certificate)
    findclient.py compare-tls --port P --tls-port PT --aec AE --tls CERT KEY CA
                      --plan PLAN.json --out RESULT.json [--shapes a,b]
                      [--repeat R] [--echo N] [--setups N]
        the same queries over a plain association (port P) and over a TLS
        one (port PT), both open at once, every query sent on one and then
        on the other (which goes first alternates), R times over each
        shape's queries; also C-ECHO round trips and association set-ups
        (connect, TLS handshake, A-ASSOCIATE) on each
    findclient.py write-queries --plan PLAN.json --dir DIR --count K [--shapes a,b]
        writes the first K timed queries of each shape as Part-10 files for
        dcmtk findscu (DIR/<shape>/q0001.dcm ...)
    findclient.py findscu --port P --aec AE --dir DIR --out RESULT.json [--runs R]
                          [--tls CERT KEY CA]
        times findscu over K files and over 1 file (median of R runs each):
        mean per query = (T_K - T_1) / (K - 1); --tls: findscu +tls

Exit status: 0 on success, 3 if the server does not accept C-FIND (the
result file then says why), 1 on other trouble.
"""

import argparse
import json
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dicomenc as enc  # noqa: E402
from lib import pct as percentile  # noqa: E402

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"
MAX_PDU = 65536
PENDING = (0xFF00, 0xFF01)
TAG_STATUS = 0x00000900
TAG_DATASET_TYPE = 0x00000800
TAG_ERROR_COMMENT = 0x00000902


class UlError(Exception):
    pass


def _item(kind, payload):
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _pdu(kind, payload):
    return struct.pack(">BBI", kind, 0, len(payload)) + payload


def _ae(title):
    return title.encode("ascii").ljust(16, b" ")[:16]


def _cmd_elem(tag, raw):
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(raw)) + raw


def _uid(u):
    b = u.encode("ascii")
    return b + (b"\0" if len(b) % 2 else b"")


def command(items):
    """Implicit VR little endian command set with its group length."""
    body = b"".join(_cmd_elem(t, v) for t, v in items)
    return _cmd_elem(0x00000000, struct.pack("<I", len(body))) + body


def parse_command(data):
    out, off = {}, 0
    while off + 8 <= len(data):
        g, e, n = struct.unpack_from("<HHI", data, off)
        out[(g << 16) | e] = data[off + 8:off + 8 + n]
        off += 8 + n
    return out


def tls_context(cert, key, ca):
    """A TLS client context: our certificate, the server's verified against
    ca (name checked), TLS 1.2 at least (the server picks; pacsnode prefers
    1.3)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class Association:
    def __init__(self, host, port, timeout=120, tls=None):
        """tls: an ssl.SSLContext to wrap the socket with (the handshake
        happens here), or None for plain TCP."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=host)
            except BaseException:
                self.sock.close()
                raise
        self.rf = self.sock.makefile("rb", buffering=1 << 18)
        self.max_send = MAX_PDU
        self.contexts = {}      # abstract syntax -> (pc id, transfer syntax)
        self.ext_neg = {}       # abstract syntax -> the acceptor's extended negotiation bytes
        self.msg_id = 0
        # The pending responses of one request carry the same command
        # bytes: each is parsed once (parsing them every time was most of
        # this client's time per response, on the order of the servers').
        self.parsed = {}

    def negotiated(self):
        """(protocol, cipher suite) over TLS, else None."""
        if isinstance(self.sock, ssl.SSLSocket):
            return self.sock.version(), self.sock.cipher()[0]
        return None

    def close(self):
        try:
            self.rf.close()
        finally:
            self.sock.close()

    def _read(self, n):
        b = self.rf.read(n)
        if len(b) != n:
            raise UlError("connection closed by the peer")
        return b

    def recv_pdu(self):
        kind, _, length = struct.unpack(">BBI", self._read(6))
        return kind, self._read(length)

    def associate(self, calling, called, proposals, ext_neg=None):
        """proposals: [(abstract syntax, [transfer syntaxes])]; ext_neg:
        {abstract syntax: bytes}, SOP Class Extended Negotiation items
        (PS3.7 D.3.3.5) to propose; the acceptor's answers land in
        self.ext_neg the same way."""
        pcs = b""
        asked = {}
        for i, (abstract, tss) in enumerate(proposals):
            pc_id = 2 * i + 1
            asked[pc_id] = abstract
            body = struct.pack(">BBBB", pc_id, 0, 0, 0) + _item(0x30, abstract.encode("ascii"))
            for ts in tss:
                body += _item(0x40, ts.encode("ascii"))
            pcs += _item(0x20, body)
        user = _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, enc.IMPL_CLASS_UID.encode("ascii")) \
            + _item(0x55, enc.IMPL_VERSION.encode("ascii"))
        for abstract, info in (ext_neg or {}).items():
            uid = abstract.encode("ascii")
            user += _item(0x56, struct.pack(">H", len(uid)) + uid + bytes(info))
        body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32
        body += _item(0x10, APP_CONTEXT) + pcs + _item(0x50, user)
        self.sock.sendall(_pdu(0x01, body))
        kind, body = self.recv_pdu()
        if kind == 0x03:
            raise UlError("association rejected (result %d, source %d, reason %d)" % (body[1], body[2], body[3]))
        if kind != 0x02:
            raise UlError("unexpected PDU 0x%02x instead of A-ASSOCIATE-AC" % kind)
        off = 68
        while off + 4 <= len(body):
            item, _, n = struct.unpack_from(">BBH", body, off)
            payload = body[off + 4:off + 4 + n]
            if item == 0x21 and payload[2] == 0:
                ts = b""
                sub = 4
                while sub + 4 <= len(payload):
                    st, _, sn = struct.unpack_from(">BBH", payload, sub)
                    if st == 0x40:
                        ts = payload[sub + 4:sub + 4 + sn]
                    sub += 4 + sn
                pc_id = payload[0]
                if pc_id in asked:
                    self.contexts[asked[pc_id]] = (pc_id, ts.rstrip(b"\0 ").decode("ascii"))
            elif item == 0x50:
                sub = 0
                while sub + 4 <= len(payload):
                    st, _, sn = struct.unpack_from(">BBH", payload, sub)
                    if st == 0x51:
                        (peer_max,) = struct.unpack_from(">I", payload, sub + 4)
                        if peer_max:
                            self.max_send = min(MAX_PDU, peer_max)
                    elif st == 0x56:
                        (un,) = struct.unpack_from(">H", payload, sub + 4)
                        uid = payload[sub + 6:sub + 6 + un].rstrip(b"\0").decode("ascii")
                        self.ext_neg[uid] = payload[sub + 6 + un:sub + 4 + sn]
                    sub += 4 + sn
            off += 4 + n

    def _pdvs(self, pc_id, data, is_command):
        """The P-DATA-TF PDUs carrying data, as one bytes object."""
        room = self.max_send - 6
        out = []
        chunks = [data[i:i + room] for i in range(0, len(data), room)] or [b""]
        for i, chunk in enumerate(chunks):
            control = (1 if is_command else 0) | (2 if i == len(chunks) - 1 else 0)
            out.append(_pdu(0x04, struct.pack(">IBB", len(chunk) + 2, pc_id, control) + chunk))
        return b"".join(out)

    def recv_message(self, want_dataset=True):
        """(command dict, dataset bytes or None). The dataset is read in
        full but only kept when want_dataset."""
        cmd = b""
        ds = []
        state = "cmd"
        read = self.rf.read  # inlined recv_pdu: this loop runs per response
        while True:
            head = read(6)
            if len(head) != 6:
                raise UlError("connection closed by the peer")
            kind = head[0]
            length = int.from_bytes(head[2:6], "big")
            body = read(length)
            if len(body) != length:
                raise UlError("connection closed by the peer")
            if kind != 0x04:
                if kind == 0x07:
                    raise UlError("association aborted by the peer")
                if kind == 0x05:
                    raise UlError("peer asked for release in the middle of an operation")
                raise UlError("unexpected PDU 0x%02x instead of P-DATA-TF" % kind)
            off = 0
            n_body = len(body)
            while off + 6 <= n_body:
                (n,) = struct.unpack_from(">I", body, off)
                control = body[off + 5]
                frag = body[off + 6:off + 4 + n]
                off += 4 + n
                if control & 1:
                    cmd += frag
                    if control & 2:
                        c = self.parsed.get(cmd)
                        if c is None:
                            if len(self.parsed) > 64:
                                self.parsed.clear()
                            c = self.parsed[cmd] = parse_command(cmd)
                        dtype = c.get(TAG_DATASET_TYPE)
                        if dtype is None or struct.unpack("<H", dtype)[0] == 0x0101:
                            return c, None
                        state = "ds"
                        command_done = c
                else:
                    if state != "ds":
                        raise UlError("dataset fragment before the command")
                    if want_dataset:
                        ds.append(frag)
                    if control & 2:
                        return command_done, (b"".join(ds) if want_dataset else b"")

    def next_id(self):
        self.msg_id = self.msg_id % 65535 + 1
        return self.msg_id

    def echo(self):
        pc_id, _ = self.contexts[VERIFICATION]
        mid = self.next_id()
        rq = command([(0x00000002, _uid(VERIFICATION)), (0x00000100, struct.pack("<H", 0x0030)),
                      (0x00000110, struct.pack("<H", mid)), (0x00000800, struct.pack("<H", 0x0101))])
        self.sock.sendall(self._pdvs(pc_id, rq, True))
        c, _ = self.recv_message()
        return struct.unpack("<H", c[TAG_STATUS])[0]

    def find_request(self, identifier):
        """The bytes of one C-FIND-RQ (command and identifier)."""
        pc_id, _ = self.contexts[STUDY_ROOT_FIND]
        mid = self.next_id()
        rq = command([(0x00000002, _uid(STUDY_ROOT_FIND)), (0x00000100, struct.pack("<H", 0x0020)),
                      (0x00000110, struct.pack("<H", mid)), (0x00000700, struct.pack("<H", 0)),
                      (0x00000800, struct.pack("<H", 0x0000))])
        return self._pdvs(pc_id, rq, True) + self._pdvs(pc_id, identifier, False)

    def find(self, request, keep_first=True):
        """Sends a prepared request; returns (seconds, seconds to the first
        response, pending responses, final status, error comment, first
        identifier or None)."""
        first = None
        n = 0
        t_first = None
        t0 = time.perf_counter()
        self.sock.sendall(request)
        while True:
            c, ds = self.recv_message(want_dataset=keep_first and first is None)
            if t_first is None:
                t_first = time.perf_counter() - t0
            st = struct.unpack("<H", c[TAG_STATUS])[0]
            if st in PENDING:
                n += 1
                if keep_first and first is None and ds is not None:
                    first = ds
                continue
            t1 = time.perf_counter()
            comment = enc.text(c[TAG_ERROR_COMMENT]) if TAG_ERROR_COMMENT in c else ""
            return t1 - t0, t_first, n, st, comment, first

    def release(self):
        self.sock.sendall(_pdu(0x05, b"\0" * 4))
        kind, _ = self.recv_pdu()
        if kind != 0x06:
            raise UlError("unexpected PDU 0x%02x instead of A-RELEASE-RP" % kind)


def identifier_items(shape, keys):
    tag_of = {name: tag for tag, name in shape["return_keys"]}
    from gen import T  # the keyword table of the plan's author
    items = {0x00080052: shape["level"]}
    for tag, _ in shape["return_keys"]:
        items[tag] = ""
    for k, v in keys.items():
        items[tag_of.get(k, T[k])] = v
    return sorted(items.items())


def open_find(a, ext_neg=None):
    """(association, implicit, error): Study Root C-FIND (and Verification)
    accepted on a new association, the extended negotiation proposed."""
    try:
        assoc = Association(a.host, a.port, tls=tls_context(*a.tls) if a.tls else None)
    except OSError as e:    # ssl.SSLError is one
        return None, None, "cannot connect: %s" % e
    try:
        assoc.associate(a.aet, a.aec, [(STUDY_ROOT_FIND, [enc.EXPLICIT_LE, enc.IMPLICIT_LE]),
                                       (VERIFICATION, [enc.IMPLICIT_LE])],
                        ext_neg={STUDY_ROOT_FIND: ext_neg} if ext_neg else None)
    except (UlError, OSError) as e:
        assoc.close()
        return None, None, "association failed: %s" % e
    if STUDY_ROOT_FIND not in assoc.contexts:
        try:
            assoc.release()
        finally:
            assoc.close()
        return None, None, "Study Root C-FIND not accepted"
    return assoc, assoc.contexts[STUDY_ROOT_FIND][1] == enc.IMPLICIT_LE, None


def run_shape(a, assoc, implicit, shape, result):
    r = {"name": shape["name"], "label": shape["label"], "level": shape["level"],
         "ms": [], "first_ms": [], "responses": [], "expected": [], "bad": [], "missing_keys": [],
         "truncated": False, "ext_neg": bool(shape.get("ext_neg"))}
    result["shapes"].append(r)

    def one(q, timed):
        req = assoc.find_request(enc.dataset(identifier_items(shape, q["keys"]), implicit=implicit))
        secs, t_first, n, st, comment, first = assoc.find(req, keep_first=not r["missing_keys"] and timed)
        if st != 0x0000:
            r["bad"].append({"keys": q["keys"], "status": "0x%04x" % st, "comment": comment,
                             "responses": n, "expected": q["expected"]})
        elif n != q["expected"]:
            r["bad"].append({"keys": q["keys"], "status": "0x0000", "responses": n,
                             "expected": q["expected"]})
        if first is not None and not r["missing_keys"]:
            have = enc.decode_flat(first, implicit=implicit)
            missing = [name for tag, name in shape["return_keys"] if tag not in have]
            r["missing_keys"] = missing or ["-"]
            r["first_response"] = {"%08X" % t: enc.text(v) for t, v in sorted(have.items())}
        return secs, t_first, n

    for q in shape["warmup"]:
        one(q, False)
    t_start = time.perf_counter()
    for q in shape["queries"]:
        secs, t_first, n = one(q, True)
        r["ms"].append(secs * 1000)
        r["first_ms"].append(t_first * 1000)
        r["responses"].append(n)
        r["expected"].append(q["expected"])
        if a.max_seconds and time.perf_counter() - t_start > a.max_seconds:
            r["truncated"] = len(r["ms"]) < len(shape["queries"])
            break
    r["planned"] = len(shape["queries"])
    if r["missing_keys"] == ["-"]:
        r["missing_keys"] = []


def run_shapes(a, assoc, implicit, shapes, result, save):
    """The shapes one after the other on assoc, then released and closed
    whatever happens; 0, or 1 with result["error"] set."""
    try:
        for shape in shapes:
            run_shape(a, assoc, implicit, shape, result)
            save()
        assoc.release()
        return 0
    except (UlError, OSError) as e:
        result["error"] = "%s (after %d shapes)" % (e, len(result["shapes"]))
        return 1
    finally:
        assoc.close()


def cmd_run(a):
    with open(a.plan) as f:
        plan = json.load(f)
    only = set(a.shapes.split(",")) if a.shapes else None
    result = {"target": a.label, "port": a.port, "aec": a.aec, "n_instances": plan["n_instances"],
              "shapes": [], "echo": None, "error": None}

    def save():
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    chosen = [sh for sh in plan["shapes"] if not only or sh["name"] in only]
    plain = [sh for sh in chosen if not sh.get("ext_neg")]
    # shapes that need an extended negotiation, by the bytes they propose:
    # each group on its own association (the others keep the standard rules)
    groups = {}
    for sh in chosen:
        if sh.get("ext_neg"):
            groups.setdefault(tuple(sh["ext_neg"]), []).append(sh)

    assoc, implicit, err = open_find(a)
    if err:
        result["error"] = err
        save()
        return 3 if not err.startswith("cannot connect") else 1
    if assoc.negotiated():
        result["tls"] = "%s, %s" % assoc.negotiated()
    result["transfer_syntax"] = assoc.contexts[STUDY_ROOT_FIND][1]
    rc = 0
    try:
        if a.echo and VERIFICATION in assoc.contexts:
            lat = []
            for _ in range(a.echo):
                t0 = time.perf_counter()
                st = assoc.echo()
                lat.append((time.perf_counter() - t0) * 1000)
                if st != 0:
                    raise UlError("C-ECHO status 0x%04x" % st)
            result["echo"] = {"n": len(lat), "p50": percentile(lat, 50),
                              "p99": percentile(lat, 99), "mean": statistics.fmean(lat)}
    except (UlError, OSError) as e:
        result["error"] = "%s (after %d shapes)" % (e, len(result["shapes"]))
        rc = 1
    if rc:
        assoc.close()
    else:
        rc = run_shapes(a, assoc, implicit, plain, result, save)
    for want, shapes in groups.items():
        if rc:
            break
        assoc, implicit, err = open_find(a, bytes(want))
        answer = tuple(assoc.ext_neg.get(STUDY_ROOT_FIND, b"")) if assoc else ()
        if not err and answer[:len(want)] != want:
            err = "extended negotiation %s not accepted (answer %s)" % (list(want), list(answer))
            try:
                assoc.release()
            finally:
                assoc.close()
        if err:
            result.setdefault("ext_neg_error", {})[",".join(map(str, want))] = err
            for shape in shapes:
                result["shapes"].append({"name": shape["name"], "label": shape["label"], "level": shape["level"],
                                         "error": err})
            continue
        result.setdefault("ext_neg", {})[",".join(map(str, want))] = list(answer)
        rc = run_shapes(a, assoc, implicit, shapes, result, save)
    save()
    return rc


def serving_pids(sock):
    """The PIDs of the processes holding the server's end of this TCP
    connection (the node's worker), found through /proc: [] when they
    cannot be seen (another user's processes, another network namespace)."""
    here, there = sock.getsockname()[1], sock.getpeername()[1]
    inode = None
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                x = line.split()
                if int(x[1].split(":")[1], 16) == there and int(x[2].split(":")[1], 16) == here:
                    inode = x[9]
                    break
    except OSError:
        return []
    if not inode:
        return []
    want, pids = "socket:[%s]" % inode, []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if any(os.readlink("/proc/%s/fd/%s" % (d, fd)) == want for fd in os.listdir("/proc/%s/fd" % d)):
                pids.append(int(d))
        except OSError:
            continue
    return pids


def cpu_ns(pids):
    """CPU time (ns) the threads of these processes have run so far
    (schedstat), or None."""
    total, seen = 0, False
    for pid in pids:
        try:
            for t in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                    total += int(f.read().split()[0])
                    seen = True
        except OSError:
            continue
    return total if seen else None


def cmd_compare_tls(a):
    """The same queries over plain TCP and over TLS, on two associations
    open at once: what TLS adds to each query, all else equal."""
    with open(a.plan) as f:
        plan = json.load(f)
    only = a.shapes.split(",")
    ctx = tls_context(*a.tls)
    result = {"target": a.label, "port": a.port, "tls_port": a.tls_port, "aec": a.aec,
              "n_instances": plan["n_instances"], "repeat": a.repeat, "tls": None,
              "setup": {"plain": [], "tls": []}, "echo": {"plain": [], "tls": []}, "shapes": [], "error": None}
    kinds = ("plain", "tls")
    ports = {"plain": a.port, "tls": a.tls_port}
    contexts = [(STUDY_ROOT_FIND, [enc.EXPLICIT_LE, enc.IMPLICIT_LE]), (VERIFICATION, [enc.IMPLICIT_LE])]

    def save():
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    def connect(kind):
        as_ = Association(a.host, ports[kind], tls=ctx if kind == "tls" else None)
        try:
            as_.associate(a.aet, a.aec, contexts)
        except BaseException:
            as_.close()
            raise
        return as_

    assocs = {}
    rc = 0
    try:
        # association set-ups, alternating: connect, handshake, A-ASSOCIATE
        # (timed), then A-RELEASE (not timed)
        for i in range(a.setups):
            for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                t0 = time.perf_counter()
                as_ = connect(kind)
                result["setup"][kind].append((time.perf_counter() - t0) * 1000)
                try:
                    as_.release()
                finally:
                    as_.close()
        for kind in kinds:
            assocs[kind] = connect(kind)
            if STUDY_ROOT_FIND not in assocs[kind].contexts:
                raise UlError("Study Root C-FIND not accepted (%s)" % kind)
        result["tls"] = "%s, %s" % assocs["tls"].negotiated()
        implicit = {k: assocs[k].contexts[STUDY_ROOT_FIND][1] == enc.IMPLICIT_LE for k in kinds}
        # where the time goes: the serving worker's CPU per query (read per
        # shape) and this client's (per query)
        server = {k: serving_pids(assocs[k].sock) for k in kinds}
        result["serving_pids"] = server
        for i in range(a.echo):
            for kind in (kinds if i % 2 == 0 else kinds[::-1]):
                t0 = time.perf_counter()
                st = assocs[kind].echo()
                result["echo"][kind].append((time.perf_counter() - t0) * 1000)
                if st != 0:
                    raise UlError("C-ECHO status 0x%04x (%s)" % (st, kind))
        for shape in plan["shapes"]:
            if shape["name"] not in only:
                continue
            r = {"name": shape["name"], "label": shape["label"], "level": shape["level"],
                 "plain": [], "tls": [], "expected": [], "bad": [],
                 "client_cpu_us": {"plain": 0.0, "tls": 0.0}, "server_cpu_us": {"plain": None, "tls": None}}
            result["shapes"].append(r)

            def one(q, kind):
                req = assocs[kind].find_request(enc.dataset(identifier_items(shape, q["keys"]),
                                                            implicit=implicit[kind]))
                c0 = time.thread_time()
                secs, _, n, st, comment, _ = assocs[kind].find(req, keep_first=False)
                r["client_cpu_us"][kind] += (time.thread_time() - c0) * 1e6
                if st != 0x0000 or n != q["expected"]:
                    r["bad"].append({"keys": q["keys"], "over": kind, "status": "0x%04x" % st,
                                     "comment": comment, "responses": n, "expected": q["expected"]})
                return secs * 1000

            for q in shape["warmup"]:
                for kind in kinds:
                    one(q, kind)
            r["client_cpu_us"] = {"plain": 0.0, "tls": 0.0}   # the timed queries only
            s0 = {k: cpu_ns(server[k]) for k in kinds}
            j = 0
            for _ in range(a.repeat):
                for q in shape["queries"]:
                    for kind in (kinds if j % 2 == 0 else kinds[::-1]):
                        r[kind].append(one(q, kind))
                    r["expected"].append(q["expected"])
                    j += 1
            s1 = {k: cpu_ns(server[k]) for k in kinds}
            for k in kinds:
                n = len(r[k]) or 1
                r["client_cpu_us"][k] /= n
                if s0[k] is not None and s1[k] is not None:
                    r["server_cpu_us"][k] = (s1[k] - s0[k]) / 1000 / n
            save()
        for kind in kinds:
            assocs.pop(kind).release()
    except (UlError, OSError) as e:
        result["error"] = "%s (after %d shapes)" % (e, len(result["shapes"]))
        rc = 3 if not result["shapes"] else 1
    finally:
        for as_ in assocs.values():
            as_.close()
    save()
    return rc


def cmd_write_queries(a):
    with open(a.plan) as f:
        plan = json.load(f)
    only = set(a.shapes.split(",")) if a.shapes else None
    for shape in plan["shapes"]:
        if shape.get("ext_neg"):   # findscu cannot propose an extended negotiation
            continue
        if shape["name"] in ("large", "name_smi", "name_son"):   # repeated queries
            continue
        if only and shape["name"] not in only:
            continue
        d = os.path.join(a.dir, shape["name"])
        os.makedirs(d, exist_ok=True)
        expected = []
        for i, q in enumerate(shape["queries"][:a.count]):
            ds = enc.dataset(identifier_items(shape, q["keys"]))
            uid = "2.25.%d" % (10 ** 20 + i)
            with open(os.path.join(d, "q%04d.dcm" % (i + 1)), "wb") as f:
                f.write(enc.part10(ds, STUDY_ROOT_FIND, uid))
            expected.append(q["expected"])
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"label": shape["label"], "expected": expected}, f)
    return 0


def cmd_findscu(a):
    """Times dcmtk findscu: K query files on one association, and 1 file."""
    out = {"target": a.label, "shapes": []}
    env = dict(os.environ, TCP_NODELAY="1")
    for name in sorted(os.listdir(a.dir)):
        d = os.path.join(a.dir, name)
        files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".dcm"))
        if len(files) < 2:
            continue
        base = ["findscu", "-q", "-S", "-aet", a.aet, "-aec", a.aec, "-to", "120", "-td", "120"]
        if a.tls:
            cert, key, ca = a.tls
            base += ["+tls", key, cert, "+cf", ca]
        base += [a.host, str(a.port)]

        def timed(args, log):
            t0 = time.perf_counter()
            with open(log, "w") as lf:
                p = subprocess.run(base + args, stdout=lf, stderr=subprocess.STDOUT, env=env)
            return time.perf_counter() - t0, p.returncode

        one, many, rcs = [], [], []
        for r in range(a.runs):
            s, rc = timed([files[0]], os.path.join(a.logdir, "findscu-%s-%s-1-%d.log" % (a.label, name, r)))
            one.append(s)
            rcs.append(rc)
            s, rc = timed(files, os.path.join(a.logdir, "findscu-%s-%s-%d-%d.log" % (a.label, name, len(files), r)))
            many.append(s)
            rcs.append(rc)
        t1, tk = statistics.median(one), statistics.median(many)
        out["shapes"].append({"name": name, "k": len(files), "t1_ms": t1 * 1000, "tk_ms": tk * 1000,
                              "mean_ms": (tk - t1) / (len(files) - 1) * 1000, "rc": max(rcs)})
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0 if all(s["rc"] == 0 for s in out["shapes"]) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "findscu"):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--aec", required=True)
        p.add_argument("--aet", default="BENCHSCU")
        p.add_argument("--label", default="")
        p.add_argument("--out", required=True)
    p = sub.choices["run"]
    p.add_argument("--plan", required=True)
    p.add_argument("--shapes", default="")
    p.add_argument("--max-seconds", type=float, default=0, help="stop a shape's timed queries after this")
    p.add_argument("--echo", type=int, default=50, help="C-ECHOs to time first (0: none)")
    p.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"), help="over TLS, with this client certificate")
    p = sub.add_parser("compare-tls")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the plain DICOM port")
    p.add_argument("--tls-port", type=int, required=True)
    p.add_argument("--aec", required=True)
    p.add_argument("--aet", default="BENCHSCU")
    p.add_argument("--label", default="")
    p.add_argument("--out", required=True)
    p.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"), required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--shapes", default="patient_id,accession,series_modality,image_series",
                   help="the shapes to compare (default: the selective ones)")
    p.add_argument("--repeat", type=int, default=5, help="passes over each shape's queries")
    p.add_argument("--echo", type=int, default=200, help="C-ECHOs on each association (0: none)")
    p.add_argument("--setups", type=int, default=20, help="association set-ups to time on each port")
    p = sub.choices["findscu"]
    p.add_argument("--dir", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--logdir", default=".")
    p.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"), help="findscu +tls, with this client certificate")
    p = sub.add_parser("write-queries")
    p.add_argument("--plan", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--shapes", default="", help="only these shapes")
    a = ap.parse_args()
    if a.cmd == "run":
        return cmd_run(a)
    if a.cmd == "write-queries":
        return cmd_write_queries(a)
    if a.cmd == "compare-tls":
        return cmd_compare_tls(a)
    return cmd_findscu(a)


if __name__ == "__main__":
    sys.exit(main())
