"""DICOM TLS (PS3.15 B.1) and peer binding (issue 19, points 1-4): the TLS
listener with dcmtk's TLS clients and openssl s_client, refused client
certificates, protocol versions and cipher suites, plain and TLS clients on
the wrong port, peers pinned by certificate (SHA-256 or subject) and bound
to addresses, a TLS-only node, an encrypted private key, C-MOVE to a
destination over TLS.

The certificates come from tls_certs.py (openssl command line, made once
per run, copied into each worker's directory for the unprivileged node).
Every refusal must leave exactly one warning-or-error line in the node's
log that names the client's address and the reason.
"""

import os
import re
import socket
import subprocess
import time

import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
import rawscu
import retrieve_util as R
import tls_certs
from pacsnode_harness import gen_corpus

VERIFICATION = "1.2.840.10008.1.1"
ADDR = "127.0.0.1"
ACSE_TIMEOUT = 5
TOOLS = ("openssl", "echoscu", "storescu", "findscu", "movescu", "storescp")


@pytest.fixture(scope="session", autouse=True)
def tools_present():
    import shutil
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail("missing tools for the TLS tests: %s" % ", ".join(missing), pytrace=False)


# --------------------------------------------------------------------------
# A node with a TLS listener


class TlsNode(H.Node):
    """H.Node with a [tls] section: tls_port (a free port), `tls` the keys
    of [tls] (port added); plain=False writes [node] port = 0. Ready when
    its ports listen (seen in /proc, no connection: a TLS probe would log a
    failed handshake) and, with a plain port, C-ECHO works there."""

    def __init__(self, cluster, testdir, dbname, user, *, tls=None, plain=True, **kw):
        self.tls_port = H.free_port()
        self.tls = dict(tls or {})
        self.plain = plain
        super().__init__(cluster, testdir, dbname, user, **kw)

    def write_config(self):
        saved = self.extra_config
        cfg = {s: dict(k) for s, k in saved.items()}
        tls = {"port": self.tls_port}
        tls.update(self.tls)
        tls.update(cfg.get("tls", {}))
        cfg["tls"] = tls
        if not self.plain:
            cfg.setdefault("node", {})["port"] = 0
        self.extra_config = cfg
        try:
            super().write_config()
        finally:
            self.extra_config = saved

    def start(self, timeout=30):
        for attempt in range(3):
            try:
                return super().start(timeout)
            except H.NodeStartError:
                in_use = re.search(r"address already in use|EADDRINUSE", self.log_text(), re.I)
                if not in_use or attempt == 2:
                    raise
                self.stop()
                self.port, self.tls_port = H.free_port(), H.free_port()
                self.write_config()
                self.returncode = None

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while not R.listening(self.tls_port):
            if self.proc.poll() is not None:
                raise H.NodeStartError("node exited with %s during start-up; log %s:\n%s"
                                       % (self.proc.returncode, self.log_path,
                                          H.tail(self.log_path)))
            if time.monotonic() > deadline:
                raise H.NodeStartError("node did not listen on TLS port %d within %ds; log %s:\n%s"
                                       % (self.tls_port, timeout, self.log_path,
                                          H.tail(self.log_path)))
            time.sleep(0.05)
        if self.plain:
            super().wait_ready(max(5, deadline - time.monotonic()))


def tls_keys(pki, **over):
    keys = {"certificate": pki.cert("node"), "private_key": pki.key("node"), "ca": pki.ca}
    keys.update(over)
    return {k: v for k, v in keys.items() if v is not None}


def start_tls_node(node_factory, pki, *, tls=None, limits=None, **kw):
    extra = kw.pop("extra_config", {})
    extra = {s: dict(k) for s, k in extra.items()}
    extra.setdefault("limits", {}).update({"acse_timeout": ACSE_TIMEOUT})
    extra["limits"].update(limits or {})
    return node_factory(node_class=TlsNode, tls=tls_keys(pki, **(tls or {})),
                        extra_config=extra, **kw)


# --------------------------------------------------------------------------
# Clients


def tls_args(pki, name="good", ca=None):
    """dcmtk TLS options: our certificate `name` (None: anonymous TLS,
    +tla), the server checked against `ca` (default: the test CA)."""
    who = ["+tla"] if name is None else ["+tls", pki.key(name), pki.cert(name)]
    return who + ["+cf", ca or pki.ca]


class Echo:
    def __init__(self, rc, output, seconds):
        self.rc, self.output, self.seconds = rc, output, seconds
        self.ok = rc == 0 and "Received Echo Response (Success)" in output
        self.rejected = "Association Rejected" in output

    def __repr__(self):
        return "echoscu exit %s after %.1f s:\n%s" % (self.rc, self.seconds, self.output)


def echo(port, extra=(), aet="PNTLS", timeout=20):
    cmd = (["echoscu", "-v", "-to", "5", "-ta", "10", "-td", "10", "-aet", aet,
            "-aec", H.NODE_AET] + list(extra) + [ADDR, str(port)])
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace",
                           env=dict(os.environ, TCP_NODELAY="1"), timeout=timeout)
        rc, out = r.returncode, r.stdout
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output
                                                                                     or "")
    return Echo(rc, " ".join(cmd) + "\n" + out, time.monotonic() - t0)


def s_client(port, pki, *args, cert="good", stdin_script=None, timeout=15):
    """openssl s_client with our certificate, the server verified against
    the test CA; stdin empty (or fed by the shell snippet stdin_script).
    Returns (exit status, output)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (ADDR, port), "-CAfile", pki.ca,
           "-verify_return_error"]
    if cert:
        cmd += ["-cert", pki.cert(cert), "-key", pki.key(cert)]
    cmd += list(args)
    try:
        if stdin_script is None:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
            return r.returncode, " ".join(cmd) + "\n" + r.stdout
        feeder = subprocess.Popen(["sh", "-c", stdin_script], stdout=subprocess.PIPE)
        try:
            r = subprocess.run(cmd, stdin=feeder.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=timeout)
        finally:
            feeder.stdout.close()
            feeder.wait(timeout)
        return r.returncode, " ".join(cmd) + "\n" + r.stdout
    except subprocess.TimeoutExpired as e:
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output
                                                                                     or "")
        return "timeout", " ".join(cmd) + "\n" + out


def raw_associate(port, calling, source=ADDR, timeout=10):
    """A-ASSOCIATE-RQ for Verification from a socket bound to `source`
    (e.g. 127.0.0.2): "accepted" (then released) or "rejected ..."."""
    a = rawscu.Association.__new__(rawscu.Association)
    a.sock = socket.create_connection((ADDR, port), timeout=timeout, source_address=(source, 0))
    a.max_send, a.pc_id = rawscu.MAX_PDU, None
    try:
        a.associate(calling, H.NODE_AET, VERIFICATION)
        a.release()
        return "accepted"
    except rawscu.UlError as e:
        return str(e)
    finally:
        a.close()


def listening_ports(pid):
    """TCP ports process `pid` listens on (from its fds and /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_closed(sock, limit):
    """Seconds until the peer closes `sock`; None if still open after limit."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            if not sock.recv(4096):
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None


# --------------------------------------------------------------------------
# The node's log

# the node's own warning/error lines, and dcmtk's (W:, E:, F:) should any
# reach the log unformatted
_LEVEL = re.compile(r"(?:^<[0-4]>|\] )(warning|error): |^[WEF]: ")


def log_offset(node):
    return os.path.getsize(node.log_path)


def log_lines(node, offset):
    with open(node.log_path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace").splitlines()


def warnings_since(node, offset):
    return [ln for ln in log_lines(node, offset) if _LEVEL.search(ln)]


def one_refusal_line(node, offset, reason, *names, what=""):
    """The refusal's log line: exactly one warning-or-error line since
    `offset`; it names the client's address (and each of `names`) and
    matches `reason` (a regex, case ignored)."""
    deadline = time.monotonic() + 5
    while not warnings_since(node, offset) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a second line for the same refusal would come now
    lines = warnings_since(node, offset)
    context = "%s: warning/error lines since the attempt (%s):\n  %s\nlog tail:\n%s" % (
        what, node.log_path, "\n  ".join(lines) or "(none)", H.tail(node.log_path, 15))
    assert len(lines) == 1, "wanted exactly one warning-or-error line. " + context
    line = lines[0]
    assert ADDR in line, "the line does not name the address %s. %s" % (ADDR, context)
    for n in names:
        assert n in line, "the line does not name %s. %s" % (n, context)
    assert re.search(reason, line, re.I), "the line does not say /%s/. %s" % (reason, context)
    print("refusal (%s): %s" % (what, line))
    return line


def assert_alive(node):
    assert node.proc.poll() is None, "the node exited: %s\n%s" % (node.proc.returncode,
                                                                  H.tail(node.log_path))


# --------------------------------------------------------------------------
# Instances


def small_series(directory, n, tag, syntaxes=("explicit", "implicit")):
    study = gen_corpus.make_uid(0, tag, "study")
    series = gen_corpus.make_uid(0, tag, "series")
    out = []
    for i in range(1, n + 1):
        path = os.path.join(directory, "%s-%04d.dcm" % (tag, i))
        e = gen_corpus.make_instance(path, name="%s-%d" % (tag, i), patient_id="PN-" + tag,
                                     study_uid=study, series_uid=series, instance_number=i,
                                     ts=syntaxes[(i - 1) % len(syntaxes)])
        e["abspath"] = path
        e["path"] = os.path.basename(path)
        out.append(e)
    return out


# --------------------------------------------------------------------------
# 1. Good clients


def test_echo_store_find_over_tls_with_a_good_certificate(node_factory, pki, scu_dir):
    """echoscu, storescu and findscu +tls with a certificate from the test
    CA; the stored instances are indexed and on disk as over the plain port;
    the plain port still works beside the TLS one."""
    node = start_tls_node(node_factory, pki)
    assert listening_ports(node.pid) >= {node.port, node.tls_port}, listening_ports(node.pid)
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e
    e = echo(node.tls_port, tls_args(pki, "good2"))
    assert e.ok, e

    entries = small_series(scu_dir, 3, "tlsstore")
    run = H.storescu(node.tls_port, [x["abspath"] for x in entries], scu_dir, aet="PNTLSSTORE",
                     extra=tls_args(pki))
    assert run.all_success(), run.summary()
    assert node.count("instance") == 3
    rows = {r["sop_uid"]: r for r in C.instance_rows(node)}
    for x in entries:
        row = rows[x["sop_instance_uid"]]
        d = C.compare_part10(x["abspath"], os.path.join(node.storage, row["path"]),
                             x["sop_class_uid"], x["sop_instance_uid"], x["transfer_syntax_uid"])
        assert not d, "%s: %s" % (x["path"], d)
    problems = C.storage_problems(node)
    assert not problems, problems

    ds = F.Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = entries[0]["study_instance_uid"]
    ds.PatientID = ""
    fr = F.findscu(node.tls_port, ds, scu_dir, extra=tls_args(pki))
    assert fr.final == 0x0000 and len(fr.responses) == 1, fr.summary()
    assert str(fr.responses[0].PatientID) == "PN-tlsstore", fr.summary()

    e = echo(node.port)
    assert e.ok, e
    assert_alive(node)


def test_revoked_certificate_is_accepted_without_a_crl(node_factory, pki):
    """Without [tls] crl the node cannot know; this makes the refusal with
    a CRL (next test) the CRL's doing."""
    node = start_tls_node(node_factory, pki)
    e = echo(node.tls_port, tls_args(pki, "revoked"))
    assert e.ok, e


# --------------------------------------------------------------------------
# 2. Bad client certificates

BAD_CLIENTS = [
    ("expired", "expired", r"expired"),
    ("notyet", "notyet", r"not yet valid|not valid yet|not before|future"),
    ("untrusted", "untrusted", r"unknown ca|untrusted|not trusted|unable to get (local )?issuer"),
    ("revoked", "revoked", r"revoked"),
    ("anonymous", None, r"no (client )?certificate|did not return a certificate|"
                        r"certificate required|without a certificate"),
]


def test_bad_client_certificates_are_refused(node_factory, pki):
    """With a CRL given: expired, not yet valid, other CA, revoked, none at
    all: echoscu fails, one log line each names 127.0.0.1 and the reason;
    the good certificate still works, before and after."""
    node = start_tls_node(node_factory, pki, tls={"crl": pki.crl})
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e
    failures = []
    for what, cert, reason in BAD_CLIENTS:
        off = log_offset(node)
        e = echo(node.tls_port, tls_args(pki, cert), aet="PNBAD")
        if e.ok or "Association Accepted" in e.output:
            failures.append("%s certificate: the association was accepted\n%r" % (what, e))
            continue
        try:
            one_refusal_line(node, off, reason, what="%s certificate" % what)
        except AssertionError as x:
            failures.append(str(x))
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e
    assert not failures, "\n\n".join(failures)
    assert_alive(node)


def test_no_client_certificate_needed_when_not_required(node_factory, pki):
    """require_client_certificate = no: anonymous TLS is admitted, but a
    certificate that is presented is still verified (else a self-made one
    with a pinned subject would pass for the peer), and a pinned peer still
    needs its certificate."""
    subject = tls_certs.subject_rfc2253(pki.cert("good"))
    node = start_tls_node(node_factory, pki, tls={"require_client_certificate": "no"},
                          peers={"s": pinned("PINS", certificate_subject=subject)})
    e = echo(node.tls_port, tls_args(pki, None))
    assert e.ok, e
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e
    e = echo(node.tls_port, tls_args(pki), aet="PINS")
    assert e.ok, e
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki, "untrusted"), aet="PINS")
    assert not e.ok and "Association Accepted" not in e.output, e
    one_refusal_line(node, off, BAD_CLIENTS[2][2], what="PINS, same subject, untrusted CA")
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki, "expired"))
    assert not e.ok and "Association Accepted" not in e.output, e
    one_refusal_line(node, off, r"expired", what="expired certificate, not required")
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki, None), aet="PINS")
    assert e.rejected and not e.ok, e
    one_refusal_line(node, off, r"certificate", "PINS", what="PINS without a certificate")


def test_ca_given_as_a_hashed_folder(node_factory, pki):
    node = start_tls_node(node_factory, pki, tls={"ca": pki.ca_dir})
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki, "untrusted"))
    assert not e.ok, e
    one_refusal_line(node, off, BAD_CLIENTS[2][2], what="untrusted certificate, ca folder")


# --------------------------------------------------------------------------
# 3. Protocol versions and cipher suites


def test_protocol_versions_and_cipher_suites(node_factory, pki):
    """TLS 1.3 by default; TLS 1.2 only with ECDHE and AES-GCM (the node's
    key is RSA: ECDHE-RSA-AES*-GCM); DHE, CBC suites and TLS 1.1 refused by
    the server (the client is made willing: SECLEVEL=0 for TLS 1.1)."""
    node = start_tls_node(node_factory, pki)
    rc, out = s_client(node.tls_port, pki)
    assert rc == 0 and re.search(r"^New, TLSv1\.3,", out, re.M), out
    assert "alert" not in out, out
    rc, out = s_client(node.tls_port, pki, "-tls1_2")
    m = re.search(r"^New, TLSv1\.2, Cipher is (\S+)", out, re.M)
    assert rc == 0 and m, out
    assert re.fullmatch(r"ECDHE-RSA-AES(128|256)-GCM-SHA(256|384)", m.group(1)), out

    failures = []
    for what, args, reason in [
            ("DHE on TLS 1.2", ["-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384"],
             r"cipher"),
            ("a CBC suite on TLS 1.2", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"],
             r"cipher"),
            ("TLS 1.1", ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], r"protocol|version"),
            ("TLS 1.0", ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], r"protocol|version")]:
        off = log_offset(node)
        rc, out = s_client(node.tls_port, pki, *args)
        if "no protocols available" in out:
            failures.append("%s: refused by s_client itself, not the server:\n%s" % (what, out))
            continue
        if rc == 0 or not re.search(r"^New, \(NONE\), Cipher is \(NONE\)", out, re.M):
            failures.append("%s: negotiated (exit %s):\n%s" % (what, rc, out))
            continue
        try:
            one_refusal_line(node, off, reason, what=what)
        except AssertionError as x:
            failures.append(str(x))
    assert not failures, "\n\n".join(failures)
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e


def test_tls12_renegotiation_is_refused(node_factory, pki):
    """s_client -tls1_2, then "R" (renegotiate) half a second later: the
    server refuses (s_client: "no renegotiation" error, exit 1); had it
    accepted, s_client would verify the server a second time and exit 0
    (checked against openssl s_server -client_renegotiation)."""
    node = start_tls_node(node_factory, pki)
    rc, out = s_client(node.tls_port, pki, "-tls1_2",
                       stdin_script="sleep 0.5; printf 'R\\n'; sleep 2.5")
    assert re.search(r"^New, TLSv1\.2,", out, re.M), out
    assert "RENEGOTIATING" in out, out
    after = out.split("RENEGOTIATING", 1)[1]
    assert "verify return:1" not in after, "renegotiation accepted:\n" + out
    assert rc != 0 and re.search(r"no renegotiation|alert|error", after), (
        "no sign of a refusal within 2.5 s:\n" + out)
    assert_alive(node)


# --------------------------------------------------------------------------
# 4. The wrong protocol on a port; slow TLS peers


def test_plain_client_on_the_tls_port_is_refused_quickly(node_factory, pki):
    node = start_tls_node(node_factory, pki)
    off = log_offset(node)
    e = echo(node.tls_port)
    assert not e.ok and "Association Accepted" not in e.output, e
    assert e.seconds < ACSE_TIMEOUT, "echoscu took %.1f s to fail (acse_timeout %d)" % (
        e.seconds, ACSE_TIMEOUT)
    one_refusal_line(node, off, r"tls|handshake|wrong version|not a tls|plain",
                     what="plain echoscu on the TLS port")
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e


def test_tls_client_on_the_plain_port_fails_quickly(node_factory, pki):
    node = start_tls_node(node_factory, pki)
    off = log_offset(node)
    e = echo(node.port, tls_args(pki))
    assert not e.ok and "Association Accepted" not in e.output, e
    assert e.seconds < ACSE_TIMEOUT, "echoscu +tls took %.1f s to fail (acse_timeout %d)" % (
        e.seconds, ACSE_TIMEOUT)
    one_refusal_line(node, off, r".", what="TLS echoscu on the plain port")
    e = echo(node.port)
    assert e.ok, e


# The first bytes of a TLS ClientHello: a handshake record announcing 512
# bytes, a ClientHello header announcing 508, then TLS 1.2 and 8 random bytes.
PARTIAL_CLIENT_HELLO = bytes.fromhex("1603010200" "010001fc" "0303") + os.urandom(8)


def test_a_stalled_tls_handshake_stalls_only_its_own_worker(node_factory, pki):
    """A client that sends part of a ClientHello and then nothing: a good TLS
    echo and a plain echo beside it still succeed at once, and the node
    drops the stalled one after acse_timeout, logged."""
    node = start_tls_node(node_factory, pki, workers=2)
    off = log_offset(node)
    stalled = socket.create_connection((ADDR, node.tls_port), timeout=5)
    try:
        stalled.sendall(PARTIAL_CLIENT_HELLO)
        t0 = time.monotonic()  # the node's clock for this connection starts about now
        time.sleep(0.3)
        e = echo(node.tls_port, tls_args(pki), aet="PNBESIDE")
        assert e.ok, e
        assert e.seconds < 3, "TLS echo took %.1f s beside a stalled handshake" % e.seconds
        p = echo(node.port, aet="PNPLAIN")
        assert p.ok, p
        assert p.seconds < 3, "plain echo took %.1f s beside a stalled handshake" % p.seconds
        assert wait_closed(stalled, ACSE_TIMEOUT + 5) is not None, (
            "the stalled handshake is still open %d s after the echoes" % (ACSE_TIMEOUT + 5))
        closed = time.monotonic() - t0
        assert ACSE_TIMEOUT - 1 <= closed <= ACSE_TIMEOUT + 3, (
            "the stalled handshake was closed after %.1f s (acse_timeout %d)"
            % (closed, ACSE_TIMEOUT))
    finally:
        stalled.close()
    one_refusal_line(node, off, r"time|timed out|stall", what="stalled TLS handshake")


# --------------------------------------------------------------------------
# 5. Peers pinned by certificate


def pinned(ae, **keys):
    p = {"ae_title": ae, "host": ADDR, "port": 104, "allow": "store, find"}
    p.update(keys)
    return p


def test_peer_pinned_by_sha256(node_factory, pki):
    """PINA pinned to good's fingerprint as openssl prints it, PINB to
    good2's in lower case without colons: each is admitted with its own
    certificate only (A-ASSOCIATE-RJ with the other one), never over the
    plain port."""
    fa = tls_certs.sha256_fingerprint(pki.cert("good"))
    fb = tls_certs.sha256_fingerprint(pki.cert("good2")).replace(":", "").lower()
    node = start_tls_node(node_factory, pki, peers={
        "a": pinned("PINA", certificate_sha256=fa), "b": pinned("PINB", certificate_sha256=fb),
        "far": pinned("PINFAR", certificate_sha256=fa, host="127.0.0.2")})
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki), aet="PINFAR")  # the right certificate, wrong address
    assert e.rejected and not e.ok, e
    one_refusal_line(node, off, r"not allowed from|address", "PINFAR",
                     what="PINFAR (host 127.0.0.2) from 127.0.0.1 with its certificate")
    for ae, own, other in (("PINA", "good", "good2"), ("PINB", "good2", "good")):
        e = echo(node.tls_port, tls_args(pki, own), aet=ae)
        assert e.ok, e
        off = log_offset(node)
        e = echo(node.tls_port, tls_args(pki, other), aet=ae)
        assert e.rejected and not e.ok, e
        one_refusal_line(node, off, r"certificate does not match|wrong certificate|"
                                    r"does not match|not the pinned|pin", ae,
                         what="%s with %s's certificate" % (ae, other))
        off = log_offset(node)
        e = echo(node.port, aet=ae)
        assert e.rejected and not e.ok, e
        one_refusal_line(node, off, r"tls|certificate", ae, what="%s over the plain port" % ae)
    e = echo(node.tls_port, tls_args(pki), aet="PNOTHER")  # not pinned: any good certificate
    assert e.ok, e


def test_peer_pinned_by_subject(node_factory, pki):
    """PINS pinned to good's subject: admitted with it, refused with good2
    (another subject, same CA) and over the plain port; a certificate with
    the same subject from an untrusted CA is refused in the handshake."""
    subject = tls_certs.subject_rfc2253(pki.cert("good"))
    assert subject == "CN=modality1,O=Test Hospital", subject
    assert tls_certs.subject_rfc2253(pki.cert("untrusted")) == subject
    node = start_tls_node(node_factory, pki, peers={"s": pinned("PINS",
                                                               certificate_subject=subject)})
    e = echo(node.tls_port, tls_args(pki), aet="PINS")
    assert e.ok, e
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki, "good2"), aet="PINS")
    assert e.rejected and not e.ok, e
    one_refusal_line(node, off, r"certificate does not match|wrong certificate|does not match|"
                                r"subject|pin", "PINS", what="PINS with good2's certificate")
    off = log_offset(node)
    e = echo(node.tls_port, tls_args(pki, "untrusted"), aet="PINS")
    assert not e.ok, e
    one_refusal_line(node, off, BAD_CLIENTS[2][2], what="PINS with an untrusted certificate")
    off = log_offset(node)
    e = echo(node.port, aet="PINS")
    assert e.rejected and not e.ok, e
    one_refusal_line(node, off, r"tls|certificate", "PINS", what="PINS over the plain port")


# --------------------------------------------------------------------------
# 6. Peers bound to addresses


def test_peer_address_binding(node_factory):
    """host = 127.0.0.2 admits from 127.0.0.2 only; host = 127.0.0.1 from
    127.0.0.1 only; addresses (replacing host for admission) = 127.0.0.0/8
    from both, = 127.0.0.2/32 from 127.0.0.2 only."""
    def peer(ae, host, addresses=None):
        p = {"ae_title": ae, "host": host, "port": 104, "allow": "store"}
        if addresses:
            p["addresses"] = addresses
        return p
    node = node_factory(peers={"far": peer("FAR", "127.0.0.2"), "near": peer("NEAR", ADDR),
                               "range": peer("RANGE", "127.0.0.2", "127.0.0.0/8"),
                               "only2": peer("ONLY2", ADDR, "127.0.0.2/32"),
                               "list": peer("LIST", "127.0.0.3", "127.0.0.9, 127.0.0.1")})
    for ae, ok_from_1, ok_from_2 in (("FAR", False, True), ("NEAR", True, False),
                                     ("RANGE", True, True), ("ONLY2", False, True),
                                     ("LIST", True, False)):
        off = log_offset(node)
        e = echo(node.port, aet=ae)
        if ok_from_1:
            assert e.ok, e
        else:
            assert e.rejected and not e.ok, e
            one_refusal_line(node, off, r"not allowed from|address|not from", ae,
                             what="%s from 127.0.0.1" % ae)
        off = log_offset(node)
        got = raw_associate(node.port, ae, source="127.0.0.2")
        if ok_from_2:
            assert got == "accepted", "%s from 127.0.0.2: %s" % (ae, got)
        else:
            assert got.startswith("association rejected"), "%s from 127.0.0.2: %s" % (ae, got)
            time.sleep(0.3)
            lines = warnings_since(node, off)
            assert len(lines) == 1 and "127.0.0.2" in lines[0] and ae in lines[0], lines
    assert raw_associate(node.port, "PNUNKNOWN", source="127.0.0.2") == "accepted"


# --------------------------------------------------------------------------
# 7. A TLS-only node


def test_tls_only_node(node_factory, pki):
    node = start_tls_node(node_factory, pki, plain=False)
    assert listening_ports(node.pid) == {node.tls_port}, listening_ports(node.pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDR, node.port), timeout=2).close()
    e = echo(node.tls_port, tls_args(pki))
    assert e.ok, e


# --------------------------------------------------------------------------
# 8. An encrypted private key


def test_encrypted_private_key_stops_the_node(pg_cluster, testdir, it_base, pki):
    _base, user = it_base
    key = pki.encrypted_key
    dbname = "t_tls_encrypted_key_%d" % os.getpid()
    pg_cluster.create_db(dbname)
    try:
        node = TlsNode(pg_cluster, H.make_dir(os.path.join(testdir, "node")), dbname, user,
                       tls=tls_keys(pki, private_key=key))
        r = subprocess.run([H.NODE_BIN, "-t", "-c", node.config_path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=15)
        assert r.returncode != 0, "pacsnode -t accepted an encrypted key:\n" + r.stdout
        assert key in r.stdout and re.search(r"encrypted|passphrase", r.stdout, re.I), r.stdout
        # like any configuration error (README): one line, the node's own
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, "wanted one line from pacsnode -t, got:\n" + r.stdout

        t0 = time.monotonic()
        with pytest.raises(H.NodeStartError):
            node.start(timeout=15)
        assert node.proc.wait(5) != 0
        assert time.monotonic() - t0 < 10
        text = node.log_text()
        assert key in text and re.search(r"encrypted|passphrase", text, re.I), text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert len(lines) == 1, "wanted one line in the log of the failed start, got:\n" + text
    finally:
        pg_cluster.drop_db(dbname)


# --------------------------------------------------------------------------
# 9. C-MOVE to a destination over TLS


@pytest.fixture
def tls_dest(testdir, pki):
    started = []

    def make(aet, cert):
        """storescp +tls with certificate `cert` (None: plain storescp)."""
        extra = [] if cert is None else ["+tls", pki.key(cert), pki.cert(cert), "+cf", pki.ca]
        s = R.Storescp(os.path.join(testdir, "storescp-%s" % aet.lower()), aet=aet, extra=extra)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


def test_move_to_a_tls_destination(node_factory, pki, tls_dest, scu_dir):
    """storescp +tls (requiring a client certificate from the test CA) as a
    tls = yes destination gets every instance byte for byte; a destination
    whose certificate is from an untrusted CA gets nothing, every
    sub-operation fails (0xA702), logged; the same for one that does not
    speak TLS at all."""
    good = tls_dest("DESTTLS", "dest")
    bad = tls_dest("DESTBAD", "dest-untrusted")
    plain = tls_dest("DESTPLAIN", None)
    node = start_tls_node(node_factory, pki, peers={
        "good": {"ae_title": "DESTTLS", "host": ADDR, "port": good.port, "tls": "yes",
                 "allow": "store"},
        "bad": {"ae_title": "DESTBAD", "host": ADDR, "port": bad.port, "tls": "yes",
                "allow": "store"},
        "plain": {"ae_title": "DESTPLAIN", "host": ADDR, "port": plain.port, "tls": "yes",
                  "allow": "store"},
        "mover": {"ae_title": "MOVER", "host": ADDR, "port": 104, "allow": "move, find"}})
    entries = small_series(scu_dir, 4, "tlsmove")
    run = H.storescu(node.port, [x["abspath"] for x in entries], scu_dir)
    assert run.all_success(), run.summary()
    keys = {"StudyInstanceUID": entries[0]["study_instance_uid"]}

    mv = R.movescu(node.port, "study", "STUDY", keys, scu_dir, aet="MOVER", dest="DESTTLS")
    good.settle()
    problems = R.check_counts(mv, len(entries))
    got, _ = R.check_instances(good.stores(), good.files(), entries, R.ACCEPT["all"],
                               originator="MOVER")
    problems += got
    assert not problems, "%s\n%s\nstorescp log %s" % (mv.summary(), "\n".join(problems),
                                                      good.log_path)

    off = log_offset(node)
    mv = R.movescu(node.port, "study", "STUDY", keys, scu_dir, aet="MOVER", dest="DESTBAD")
    bad.settle()
    problems = R.check_counts(mv, len(entries), failed=len(entries), final_status=R.NO_SUBOPS)
    assert not problems, "%s\n%s" % (mv.summary(), "\n".join(problems))
    assert not bad.stores(), bad.stores()
    one_refusal_line(node, off, BAD_CLIENTS[2][2], "DESTBAD",
                     what="C-MOVE to a destination with an untrusted certificate")

    off = log_offset(node)
    mv = R.movescu(node.port, "study", "STUDY", keys, scu_dir, aet="MOVER", dest="DESTPLAIN")
    plain.settle()
    problems = R.check_counts(mv, len(entries), failed=len(entries), final_status=R.NO_SUBOPS)
    assert not problems, "%s\n%s" % (mv.summary(), "\n".join(problems))
    assert not plain.stores(), plain.stores()
    one_refusal_line(node, off, r"tls|handshake", "DESTPLAIN",
                     what="C-MOVE to a tls = yes destination that speaks plain DICOM")
    assert_alive(node)


# --------------------------------------------------------------------------
# 10. C-GET and many C-FIND responses over TLS (the adapter's own PDUs)


@pytest.fixture
def stunnel(testdir, pki):
    """stunnel4 in client mode: a plain local port whose connections it
    carries over TLS to `port`, with our certificate `cert` and the node's
    checked against the test CA (dcmtk's getscu has no +tls)."""
    import shutil
    if shutil.which("stunnel4") is None:
        pytest.fail("stunnel4 is missing (scripts/dev.sh installs it)", pytrace=False)
    procs = []

    def make(port, cert="good"):
        local = H.free_port()
        conf = os.path.join(testdir, "stunnel-%d.conf" % local)
        with open(conf, "w") as f:
            f.write("foreground = yes\npid =\ndebug = notice\n[dicom]\nclient = yes\n"
                    "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\ncert = %s\nkey = %s\n"
                    "CAfile = %s\nverifyChain = yes\ncheckIP = 127.0.0.1\n"
                    % (local, port, pki.cert(cert), pki.key(cert), pki.ca))
        log = open(os.path.join(testdir, "stunnel-%d.log" % local), "w")
        p = subprocess.Popen(["stunnel4", conf], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        deadline = time.time() + 10
        while not R.listening(local):
            assert p.poll() is None and time.time() < deadline, open(log.name).read()
            time.sleep(0.05)
        return local

    yield make
    for p in procs:
        R.stop_process(p)


GETSCU_ACCEPTS = [R.TS["explicit"], R.TS["big"], R.TS["implicit"]]  # getscu's default proposal


def test_get_and_long_find_over_tls(node_factory, pki, stunnel, scu_dir):
    """Over TLS the node sends stored files and C-FIND pending responses
    as PDUs it encodes itself, through the TLS connection (no sendfile):
    getscu through stunnel gets every instance byte for byte, with PDVs
    cut to a small maximum PDU, and a C-FIND with many matches over TLS
    answers exactly what the plain port answers."""
    node = start_tls_node(node_factory, pki, peers={
        "getter": {"ae_title": "GETTER", "host": ADDR, "port": 104, "allow": "get, find"}})
    entries = small_series(scu_dir, 12, "tlsget")
    run = H.storescu(node.port, [x["abspath"] for x in entries], scu_dir)
    assert run.all_success(), run.summary()
    port = stunnel(node.tls_port)
    keys = {"StudyInstanceUID": entries[0]["study_instance_uid"]}
    for pdu in ("16384", "4096"):
        got = R.getscu(port, "study", "STUDY", keys, scu_dir, aet="GETTER",
                       extra=["--max-pdu", pdu])
        problems, _ = R.check_instances(got.stores, got.files, entries, GETSCU_ACCEPTS,
                                        same_syntax=False)
        problems += R.check_counts(got, len(entries))
        assert not problems, "max PDU %s: %s\n%s" % (pdu, got.summary(), "\n".join(problems))

    ds = F.Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = entries[0]["study_instance_uid"]
    ds.SeriesInstanceUID = entries[0]["series_instance_uid"]
    ds.SOPInstanceUID = ""
    ds.InstanceNumber = ""
    ds.PatientName = ""
    plain = F.findscu(node.port, ds, scu_dir, aet="GETTER")
    over_tls = F.findscu(node.tls_port, ds, scu_dir, aet="GETTER", extra=tls_args(pki))
    assert plain.final == 0 and over_tls.final == 0, (plain.summary(), over_tls.summary())
    assert len(over_tls.responses) == len(entries), over_tls.summary()

    def answers(fr):
        return sorted((str(r.SOPInstanceUID), str(r.InstanceNumber), str(r.PatientName))
                      for r in fr.responses)
    assert answers(over_tls) == answers(plain)
    assert_alive(node)
