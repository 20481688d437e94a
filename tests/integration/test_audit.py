"""The audit trail (issue 19, point 5; PS3.15 A.5, RFC 5424/5425/5426) seen
from an audit repository: a receiver in the test (UDP, then TLS) gets, for
a scripted session, exactly the messages the session should leave, each
RFC 5424-framed, well-formed XML for xmllint and ElementTree, with the
participants and objects the standard names. With the repository down the
node stores as fast as with it up, the messages wait in the spool and all
arrive, once each and in order, when it is back; a full spool is logged and
counted; a changed configuration file raises a Security Alert at the next
start, and only then.
"""

import base64
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest

import findscu_util as F
import pacsnode_harness as H
import retrieve_util as R
from pacsnode_harness import gen_corpus

ADDR = "127.0.0.1"
FRAME = re.compile(rb"^<(\d+)>1 (\S+) (\S+) pacsnode (\d+) IHE\+RFC-3881 - \xef\xbb\xbf(<\?xml .*)\Z",
                   re.S)

APP_ACTIVITY, SECURITY_ALERT = "110100", "110113"
INSTANCES_TRANSFERRED, BEGIN_TRANSFERRING, QUERY = "110104", "110102", "110112"
APP_START, APP_STOP = "110120", "110121"
SOFTWARE_CONFIGURATION, RESTRICTED_FUNCTION = "110131", "110132"


@pytest.fixture(scope="session", autouse=True)
def tools_present():
    import shutil
    missing = [t for t in ("xmllint", "storescu", "findscu", "movescu", "storescp", "echoscu")
               if shutil.which(t) is None]
    if missing:
        pytest.fail("missing tools for the audit tests: %s" % ", ".join(missing), pytrace=False)


# --------------------------------------------------------------------------
# Audit repositories


class Message:
    """One received message: its RFC 5424 header and the parsed XML."""

    def __init__(self, raw):
        self.raw = raw
        m = FRAME.match(raw)
        assert m, "not an RFC 5424 frame with MSGID IHE+RFC-3881 and a BOM: %r" % raw[:200]
        self.pri = int(m.group(1))
        self.timestamp, self.hostname, self.pid = m.group(2).decode(), m.group(3).decode(), m.group(4)
        self.xml = m.group(5)
        assert b"\n" not in raw and b"\r" not in raw, "a raw line break in %r" % raw[:200]
        r = subprocess.run(["xmllint", "--noout", "-"], input=self.xml, capture_output=True)
        assert r.returncode == 0, "xmllint: %s\n%r" % (r.stderr.decode(errors="replace"),
                                                      self.xml[:400])
        self.root = ET.fromstring(self.xml)
        assert self.root.tag == "AuditMessage", self.root.tag
        ev = self.root.find("EventIdentification")
        assert ev is not None, self.xml
        self.event_id = ev.find("EventID").get("csd-code")
        self.action = ev.get("EventActionCode")
        self.outcome = ev.get("EventOutcomeIndicator")
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$",
                        ev.get("EventDateTime") or ""), ev.get("EventDateTime")
        t = ev.find("EventTypeCode")
        self.event_type = t.get("csd-code") if t is not None else None
        src = self.root.find("AuditSourceIdentification")
        assert src is not None and src.get("AuditSourceID"), self.xml

    @property
    def kind(self):
        return (self.event_id, self.event_type or self.action)

    def participants(self):
        """[(UserID, role code or None, requestor, address)]"""
        out = []
        for p in self.root.findall("ActiveParticipant"):
            role = p.find("RoleIDCode")
            out.append((p.get("UserID"), role.get("csd-code") if role is not None else None,
                        p.get("UserIsRequestor"), p.get("NetworkAccessPointID")))
        return out

    def role(self, code):
        found = [p for p in self.participants() if p[1] == code]
        assert len(found) == 1, "role %s in %s" % (code, self.participants())
        return found[0]

    def objects(self, id_type):
        return [o for o in self.root.findall("ParticipantObjectIdentification")
                if o.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type]

    def one_object(self, id_type):
        found = self.objects(id_type)
        assert len(found) == 1, "objects of type %s in %s" % (id_type, self.xml)
        return found[0]

    def __repr__(self):
        return "<%s %s>" % (self.kind, self.xml[:160])


class Receiver:
    """Collects datagrams or RFC 5425 frames in a thread."""

    def __init__(self):
        self.raw = []
        self.lock = threading.Lock()
        self.thread = None
        self.stopping = False

    def messages(self):
        with self.lock:
            return [Message(r) for r in self.raw]

    def count(self):
        with self.lock:
            return len(self.raw)

    def wait_for(self, n, timeout=15.0, settle=1.0):
        """Until at least n arrived, then `settle` seconds more for extras."""
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle)
        return self.messages()


class UdpReceiver(Receiver):
    def __init__(self, port=None):
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((ADDR, port or 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                data = self.sock.recv(70000)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.raw.append(data)

    def close(self):
        self.stopping = True
        self.thread.join()
        self.sock.close()


class TlsReceiver(Receiver):
    """RFC 5425: TLS, then MSG-LEN SP SYSLOG-MSG frames. Asks for a client
    certificate and remembers the subject of the one it got."""

    def __init__(self, cert, key, ca):
        super().__init__()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.load_verify_locations(ca)
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.listener = socket.create_server((ADDR, 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.client_subjects = []
        self.versions = []
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(None)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.errors.append(str(e))
            conn.close()
            return
        tls.settimeout(0.2)
        peer = tls.getpeercert()
        self.client_subjects.append(dict(x[0] for x in peer["subject"]) if peer else None)
        self.versions.append(tls.version())
        buf = b""
        while not self.stopping:
            try:
                chunk = tls.recv(65536)
            except socket.timeout:
                continue
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            buf += chunk
            while True:
                sp = buf.find(b" ")
                if sp < 0:
                    break
                head = buf[:sp]
                assert re.match(rb"^[1-9][0-9]*$", head), "bad MSG-LEN %r" % buf[:40]
                n = int(head)
                if len(buf) < sp + 1 + n:
                    break
                with self.lock:
                    self.raw.append(buf[sp + 1:sp + 1 + n])
                buf = buf[sp + 1 + n:]
        tls.close()

    def close(self):
        self.stopping = True
        self.thread.join()
        self.listener.close()


@pytest.fixture
def receivers():
    made = []

    def make(cls, *a, **kw):
        r = cls(*a, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def closed_udp_port():
    """A UDP port nothing listens on (ours for a moment, then let go)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ADDR, 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# Nodes and data


@pytest.fixture
def spool(testdir, it_base):
    _base, user = it_base
    return H.make_dir(os.path.join(testdir, "audit-spool"), user, mode=0o700)


def audit_node(node_factory, target, spool, peers=None, extra=None, **kw):
    cfg = {"audit": {"target": target, "spool": spool}}
    for section, keys in (extra or {}).items():
        cfg.setdefault(section, {}).update(keys)
    return node_factory(extra_config=cfg, peers=peers, **kw)


def study(directory, n, tag):
    os.makedirs(directory, exist_ok=True)
    st = gen_corpus.make_uid(0, tag, "study")
    se = gen_corpus.make_uid(0, tag, "series")
    out = []
    for i in range(1, n + 1):
        path = os.path.join(directory, "%s-%04d.dcm" % (tag, i))
        e = gen_corpus.make_instance(path, name="%s-%d" % (tag, i), patient_id="PA-" + tag,
                                     patient_name="Audit^" + tag, study_uid=st, series_uid=se,
                                     instance_number=i)
        e["abspath"] = path
        out.append(e)
    return out


def store(node, entries, scu_dir, aet="MODALITY"):
    run = H.storescu(node.port, [x["abspath"] for x in entries], scu_dir, aet=aet)
    assert run.all_success(), run.summary()
    return run


def spooled(spool_dir):
    return sorted(f for f in os.listdir(spool_dir) if f.endswith(".msg"))


def kinds(messages):
    return sorted(m.kind for m in messages)


def log_from(node, offset):
    with open(node.log_path, errors="replace") as f:
        f.seek(offset)
        return f.read()


# --------------------------------------------------------------------------
# 1. A scripted session, over UDP


def test_scripted_session_over_udp(node_factory, receivers, spool, scu_dir, testdir):
    """start; one association storing a 3-instance study; one C-FIND; one
    C-MOVE of the study to a storescp destination; an association refused
    for its called AE title; stop. Exactly seven messages, each standard."""
    rx = receivers(UdpReceiver)
    dest = R.Storescp(os.path.join(testdir, "dest"), aet="DEST").start()
    try:
        node = audit_node(node_factory, "udp://%s:%d" % (ADDR, rx.port), spool, peers={
            "dest": {"ae_title": "DEST", "host": ADDR, "port": dest.port, "allow": "store"},
            "mover": {"ae_title": "MOVER", "host": ADDR, "port": 104, "allow": "move, find"}})
        entries = study(os.path.join(scu_dir, "in"), 3, "session")
        store(node, entries, scu_dir)

        ds = F.Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = entries[0]["study_instance_uid"]
        ds.PatientID = ""
        fr = F.findscu(node.port, ds, scu_dir, aet="FINDER")
        assert fr.final == 0x0000 and len(fr.responses) == 1, fr.summary()

        keys = {"StudyInstanceUID": entries[0]["study_instance_uid"]}
        mv = R.movescu(node.port, "study", "STUDY", keys, scu_dir, aet="MOVER", dest="DEST")
        dest.settle()
        assert not R.check_counts(mv, 3), mv.summary()

        refused = H.echoscu(node.port, aet="INTRUDER", aec="NOTUS")
        assert not refused.ok, refused.output
        assert node.stop() == 0
    finally:
        dest.stop()

    msgs = rx.wait_for(7)
    want = sorted([(APP_ACTIVITY, APP_START), (INSTANCES_TRANSFERRED, "C"), (QUERY, "E"),
                   (BEGIN_TRANSFERRING, "E"), (INSTANCES_TRANSFERRED, "R"),
                   (SECURITY_ALERT, RESTRICTED_FUNCTION), (APP_ACTIVITY, APP_STOP)])
    assert kinds(msgs) == want, "got %s" % [m.kind for m in msgs]
    assert msgs[0].kind == (APP_ACTIVITY, APP_START) and msgs[-1].kind == (APP_ACTIVITY, APP_STOP)
    assert not spooled(spool), "delivered messages still in the spool: %s" % spooled(spool)
    by = {m.kind: m for m in msgs}
    study_uid = entries[0]["study_instance_uid"]
    sop_class = entries[0]["sop_class_uid"]

    for m in msgs:
        assert m.pri == (84 if m.event_id == SECURITY_ALERT else 85), (m.pri, m.kind)
        assert m.pid.isdigit() and m.hostname
        assert m.outcome == "0" or m.event_id == SECURITY_ALERT, m

    for k in ((APP_ACTIVITY, APP_START), (APP_ACTIVITY, APP_STOP)):
        app = by[k].role("110150")  # Application
        assert app[0] == H.NODE_AET, app

    stored = by[(INSTANCES_TRANSFERRED, "C")]
    src, dst = stored.role("110153"), stored.role("110152")
    assert src[0] == "MODALITY" and src[2] == "true" and src[3] == ADDR, src
    assert dst[0] == H.NODE_AET and dst[2] == "false", dst
    st = stored.one_object("110180")
    assert st.get("ParticipantObjectID") == study_uid
    classes = st.findall("ParticipantObjectDescription/SOPClass")
    assert [(c.get("UID"), c.get("NumberOfInstances")) for c in classes] == [(sop_class, "3")]
    assert st.find("ParticipantObjectDescription/Encrypted").text == "false"
    pat = stored.one_object("2")  # Patient ID (RFC 3881)
    assert pat.get("ParticipantObjectID") == "PA-session", pat.attrib
    assert pat.find("ParticipantObjectName").text == "Audit^session"

    q = by[(QUERY, "E")]
    assert q.role("110153")[0] == "FINDER" and q.role("110153")[3] == ADDR
    assert q.role("110152")[0] == H.NODE_AET
    obj = q.one_object("110181")
    assert obj.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1", obj.attrib
    identifier = base64.b64decode(obj.find("ParticipantObjectQuery").text)
    assert study_uid.encode() in identifier, identifier
    ts = [d for d in obj.findall("ParticipantObjectDetail") if d.get("type") == "TransferSyntax"]
    assert len(ts) == 1 and base64.b64decode(ts[0].get("value")).startswith(b"1.2.840.10008.1.2")

    for k in ((BEGIN_TRANSFERRING, "E"), (INSTANCES_TRANSFERRED, "R")):
        m = by[k]
        users = [p[0] for p in m.participants()]
        assert "MOVER" in users and "DEST" in users and H.NODE_AET in users, m.participants()
        assert m.role("110153")[0] == H.NODE_AET, m.participants()
        assert m.role("110152")[0] == "DEST", m.participants()
        assert m.one_object("110180").get("ParticipantObjectID") == study_uid
    sent = by[(INSTANCES_TRANSFERRED, "R")].one_object("110180")
    assert [(c.get("UID"), c.get("NumberOfInstances"))
            for c in sent.findall("ParticipantObjectDescription/SOPClass")] == [(sop_class, "3")]

    alert = by[(SECURITY_ALERT, RESTRICTED_FUNCTION)]
    assert "INTRUDER" in [p[0] for p in alert.participants()]
    assert ADDR in [p[3] for p in alert.participants()], alert.participants()
    desc = alert.root.find("EventIdentification/EventOutcomeDescription").text
    assert "NOTUS" in desc, desc


# --------------------------------------------------------------------------
# 2. The repository down, then back


def test_repository_down_then_back(node_factory, receivers, spool, scu_dir):
    """Five associations, one study each, while nothing listens on the UDP
    port: they store as fast as with the repository up (the same work
    while it was up, timed beside it), the five messages wait in the spool,
    and the log says the repository is unreachable, once. Back on the same
    port, all five arrive, once each and in the order they were made, and
    the log says so."""
    port = closed_udp_port()
    rx = receivers(UdpReceiver, port)
    node = audit_node(node_factory, "udp://%s:%d" % (ADDR, port), spool)
    rx.wait_for(1, settle=0.3)  # the start message

    def five(tag):
        batches = [study(os.path.join(scu_dir, "%s%d" % (tag, i)), 4, "%s%d" % (tag, i))
                   for i in range(5)]
        t0 = time.monotonic()
        for b in batches:
            store(node, b, scu_dir)
        return time.monotonic() - t0, batches

    up_time, _ = five("up")
    rx.wait_for(6, settle=0.3)
    assert rx.count() == 6, [m.kind for m in rx.messages()]
    rx.close()

    offset = os.path.getsize(node.log_path)
    down_time, down = five("down")
    assert down_time < up_time * 2 + 1.0, "storing with the repository down took %.2f s, up %.2f s" \
        % (down_time, up_time)
    deadline = time.monotonic() + 5
    while len(spooled(spool)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(spooled(spool)) == 5, spooled(spool)
    log = log_from(node, offset)
    assert len(re.findall(r"audit repository .* unreachable", log)) == 1, log

    back = receivers(UdpReceiver, port)
    got = back.wait_for(5, timeout=20)
    studies = [m.one_object("110180").get("ParticipantObjectID") for m in got]
    assert studies == [b[0]["study_instance_uid"] for b in down], studies
    assert all(m.kind == (INSTANCES_TRANSFERRED, "C") for m in got)
    node.wait_for_log(r"audit repository .* reachable again", timeout=5)
    assert not spooled(spool)


# --------------------------------------------------------------------------
# 3. A full spool


def test_full_spool_is_logged_and_counted(node_factory, spool, scu_dir):
    """spool_max_mib = 1 and the repository down: C-FINDs with a 10 KB
    identifier (each message some 14 KB) fill it after about sixty; every
    query is still answered; the drops are logged (rate-limited) and their
    number said at stop; the spool never holds more than its limit."""
    node = audit_node(node_factory, "udp://%s:%d" % (ADDR, closed_udp_port()), spool,
                      extra={"audit": {"spool_max_mib": 1}})
    n = 90
    for i in range(n):
        ds = F.Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientID = "P%d" % i
        ds.PatientComments = "x" * 10000
        fr = F.findscu(node.port, ds, scu_dir)
        assert fr.final == 0x0000, fr.summary()
        total = sum(os.path.getsize(os.path.join(spool, f)) for f in spooled(spool))
        assert total <= 1 << 20, total
    node.wait_for_log(r"audit spool full \(1 MiB\): message dropped \(\d+ dropped since start\)")
    kept = len(spooled(spool))
    assert 40 < kept < n, kept
    assert node.stop() == 0
    m = re.search(r"audit: (\d+) messages were dropped since start", node.log_text())
    assert m, H.tail(node.log_path)
    # what was made: a start message, n queries, the stop message
    assert int(m.group(1)) == n + 2 - len(spooled(spool)), (m.group(1), kept, spooled(spool)[-3:])


# --------------------------------------------------------------------------
# 4. Over TLS (RFC 5425)


def test_session_over_tls(node_factory, receivers, spool, scu_dir, pki):
    """A TLS repository with a certificate from the node's CA gets the
    messages octet-counted over TLS 1.2 or later, the node presenting its
    own certificate; one whose certificate the CA did not sign gets
    nothing, the log says why, and the messages wait."""
    rx = receivers(TlsReceiver, pki.cert("dest"), pki.key("dest"), pki.ca)
    tls = {"port": 0, "certificate": pki.cert("node"), "private_key": pki.key("node"),
           "ca": pki.ca}
    node = audit_node(node_factory, "tls://%s:%d" % (ADDR, rx.port), spool, extra={"tls": tls})
    entries = study(os.path.join(scu_dir, "in"), 2, "overtls")
    store(node, entries, scu_dir)
    assert node.stop() == 0
    msgs = rx.wait_for(3)
    assert kinds(msgs) == sorted([(APP_ACTIVITY, APP_START), (INSTANCES_TRANSFERRED, "C"),
                                  (APP_ACTIVITY, APP_STOP)]), [m.kind for m in msgs]
    assert rx.versions and all(v in ("TLSv1.2", "TLSv1.3") for v in rx.versions), rx.versions
    assert rx.client_subjects[0] and rx.client_subjects[0].get("commonName") == "pacsnode", \
        rx.client_subjects

    bad = receivers(TlsReceiver, pki.cert("dest-untrusted"), pki.key("dest-untrusted"), pki.ca)
    spool2 = H.make_dir(os.path.join(os.path.dirname(spool), "spool2"), node.user, mode=0o700)
    node2 = audit_node(node_factory, "tls://%s:%d" % (ADDR, bad.port), spool2, extra={"tls": tls})
    node2.wait_for_log(r"audit repository .* unreachable: .*certificate", timeout=10)
    store(node2, entries, scu_dir)
    time.sleep(0.5)
    assert bad.count() == 0
    assert len(spooled(spool2)) == 2, spooled(spool2)  # start, and the store


# --------------------------------------------------------------------------
# 5. The configuration changed


def test_configuration_change_alert(node_factory, receivers, spool):
    """The first start records the configuration's SHA-256; a start on the
    same file raises nothing; a start after the file was edited raises one
    Security Alert of type Software Configuration, naming the file."""
    rx = receivers(UdpReceiver)
    node = audit_node(node_factory, "udp://%s:%d" % (ADDR, rx.port), spool)
    assert node.stop() == 0
    node.start_again()
    assert node.stop() == 0
    msgs = rx.wait_for(4)
    assert SECURITY_ALERT not in [m.event_id for m in msgs], [m.kind for m in msgs]

    with open(node.config_path, "a") as f:
        f.write("\n; edited by the operator\n")
    node.start_again()
    assert node.stop() == 0
    msgs = rx.wait_for(7)
    alerts = [m for m in msgs if m.event_id == SECURITY_ALERT]
    assert [m.kind for m in alerts] == [(SECURITY_ALERT, SOFTWARE_CONFIGURATION)], \
        [m.kind for m in msgs]
    desc = alerts[0].root.find("EventIdentification/EventOutcomeDescription").text
    assert node.config_path in desc, desc
    assert len(msgs) == 7, [m.kind for m in msgs]


def test_web_is_audited(node_factory, receivers, spool, scu_dir, testdir, it_base):
    """Over HTTP as over DIMSE: a QIDO-RS search is a Query, a WADO-RS
    retrieval an Instances Transferred (R) and a STOW-RS store an Instances
    Transferred (C), each naming the web user and the client's address; a
    failed login is a Security Alert (Use of Restricted Function)."""
    import web_util as W
    rx = receivers(UdpReceiver)
    users = W.write_users(os.path.join(testdir, "users"), [("rad", "iology", "write")], owner=it_base[1])
    node = audit_node(node_factory, "udp://%s:%d" % (ADDR, rx.port), spool, node_class=W.WebNode,
                      http={"users": users})
    entries = study(os.path.join(scu_dir, "web"), 2, "web")
    rx.wait_for(1)  # application start
    before = rx.count()
    r = W.stow(node.http_port, [entries[0]["abspath"]], auth=("rad", "iology"))
    assert r.status == 200, r
    assert W.request(node.http_port, "/dicomweb/studies?PatientID=PA-web", auth=("rad", "iology")).status == 200
    r = W.request(node.http_port, "/dicomweb/studies/%s" % entries[0]["study_instance_uid"],
                  auth=("rad", "iology"), headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                             'transfer-syntax=*'})
    assert r.status == 200
    assert W.request(node.http_port, "/dicomweb/studies", auth=("rad", "wrong")).status == 401
    msgs = rx.wait_for(before + 4)[before:]
    got = sorted(m.kind for m in msgs)
    assert got == sorted([(INSTANCES_TRANSFERRED, "C"), (QUERY, "E"), (INSTANCES_TRANSFERRED, "R"),
                          (SECURITY_ALERT, RESTRICTED_FUNCTION)]), got
    for m in msgs:
        users_seen = [p[0] for p in m.participants()]
        assert "rad" in users_seen, (m.kind, m.participants())
        assert any(p[3] == "127.0.0.1" for p in m.participants()), m.participants()
    stored = next(m for m in msgs if m.kind == (INSTANCES_TRANSFERRED, "C"))
    assert entries[0]["study_instance_uid"] in stored.xml.decode()
