"""The web's doors (issue 20, docs/web.md): logins from the users file
(yescrypt hashes made with mkpasswd, read again when the file changes),
roles, HTTPS with the [tls] profile (TLS 1.3/1.2, ECDHE + AEAD only),
the configuration rules (no open web and no clear-text passwords beyond
the loopback), the connection limit, and hostile clients (huge headers,
slow clients, bytes that are not HTTP) that get a 4xx and leave the node
serving."""

import os
import socket
import ssl
import subprocess
import time

import pytest

import pacsnode_harness as H
import web_util as W

USERS = [("alice", "wonder land", "read"), ("bob", "b0b-Writes", "write")]


@pytest.fixture
def users_file(testdir, it_base):
    _base, user = it_base
    return W.write_users(os.path.join(testdir, "users"), USERS, owner=user)


def web_node(node_factory, **http):
    return node_factory(node_class=W.WebNode, http=http)


def wait_log(node, offset, needle, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        with open(node.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        if needle in text:
            return text
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def test_login_required(node_factory, users_file):
    node = web_node(node_factory, users=users_file)
    r = W.request(node.http_port, "/dicomweb/studies")
    assert r.status == 401, r
    assert r.header("WWW-Authenticate").startswith("Basic realm=\"pacsnode\""), r
    off = os.path.getsize(node.log_path)
    r = W.request(node.http_port, "/dicomweb/studies", auth=("alice", "wrong"))
    assert r.status == 401, r
    assert wait_log(node, off, 'login failed for user "alice"'), H.tail(node.log_path)
    assert W.request(node.http_port, "/dicomweb/studies", auth=("mallory", "x")).status == 401
    # the right password, twice (the second from the worker's cache)
    for _ in range(2):
        r = W.request(node.http_port, "/dicomweb/studies", auth=("alice", "wonder land"))
        assert r.status == 200, r
        assert r.json() == []
    assert W.request(node.http_port, "/dicomweb/studies", auth=("bob", "b0b-Writes")).status == 200
    # a right password for another user is still wrong
    assert W.request(node.http_port, "/dicomweb/studies", auth=("alice", "b0b-Writes")).status == 401
    # /health needs none (a load balancer has no password)
    assert W.request(node.http_port, "/health").status == 200
    assert "logins from the users file" in node.log_text()


def test_users_file_read_again(node_factory, users_file, it_base):
    node = web_node(node_factory, users=users_file)
    assert W.request(node.http_port, "/dicomweb/studies", auth=("carol", "c")).status == 401
    time.sleep(0.02)
    W.write_users(users_file, USERS + [("carol", "c", "read")], owner=it_base[1])
    assert W.request(node.http_port, "/dicomweb/studies", auth=("carol", "c")).status == 200
    time.sleep(0.02)
    W.write_users(users_file, USERS[1:], owner=it_base[1])
    assert W.request(node.http_port, "/dicomweb/studies", auth=("carol", "c")).status == 401
    assert W.request(node.http_port, "/dicomweb/studies", auth=("alice", "wonder land")).status == 401
    assert W.request(node.http_port, "/dicomweb/studies", auth=("bob", "b0b-Writes")).status == 200
    # a broken file keeps the users read before, and says so once
    off = os.path.getsize(node.log_path)
    with open(users_file, "a") as f:
        f.write("dave:nohash:read\n")
    assert W.request(node.http_port, "/dicomweb/studies", auth=("bob", "b0b-Writes")).status == 200
    assert W.request(node.http_port, "/dicomweb/studies", auth=("bob", "b0b-Writes")).status == 200
    text = wait_log(node, off, "keeping the users read before")
    assert text and text.count("keeping the users read before") <= 2, text  # once per worker


def run_check(cfg_path):
    return subprocess.run([H.NODE_BIN, "-t", "-c", cfg_path], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=20)


def write_conf(testdir, name, http, tls=None):
    path = os.path.join(testdir, name)
    with open(path, "w") as f:
        f.write("[node]\nport = %d\n[database]\nconninfo = dbname=none\n" % H.free_port())
        f.write("[http]\n" + "".join("%s = %s\n" % kv for kv in http.items()))
        if tls:
            f.write("[tls]\n" + "".join("%s = %s\n" % kv for kv in tls.items()))
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("http,words", [
    ({"bind": "0.0.0.0"}, ["users", "beyond this machine"]),
    ({"bind": "not-an-address"}, ["bind", "IPv4"]),
    ({"certificate": "/x.pem"}, ["certificate and private_key"]),
    ({"users": "/nonexistent/users"}, ["/nonexistent/users"]),
])
def test_configuration_refused(testdir, http, words):
    r = run_check(write_conf(testdir, "bad.conf", http))
    assert r.returncode != 0, r.stdout + r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_configuration_clear_passwords_refused(testdir, users_file):
    r = run_check(write_conf(testdir, "clear.conf", {"bind": "0.0.0.0", "users": users_file}))
    assert r.returncode != 0
    assert "in clear" in r.stderr and "HTTPS" in r.stderr, r.stderr


def test_configuration_bad_users_line(testdir):
    bad = os.path.join(testdir, "users")
    with open(bad, "w") as f:
        f.write("# ok\nalice:%s:read\nbob:$1$abc$defghijk:read\n" % W.mkpasswd("x"))
    r = run_check(write_conf(testdir, "u.conf", {"users": bad}))
    assert r.returncode != 0
    assert "%s:3:" % bad in r.stderr and "mkpasswd" in r.stderr, r.stderr


def test_configuration_https_beyond_loopback_valid(testdir, pki, users_file):
    r = run_check(write_conf(testdir, "ok.conf", {"bind": "0.0.0.0", "users": users_file},
                             tls={"certificate": pki.cert("node"), "private_key": pki.key("node"),
                                  "port": 0}))
    assert r.returncode == 0, r.stderr


def https_context(pki, **kw):
    ctx = ssl.create_default_context(cafile=pki.ca)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def test_https(node_factory, pki, users_file):
    node = web_node(node_factory, users=users_file, certificate=pki.cert("node"),
                    private_key=pki.key("node"))
    r = W.request(node.http_port, "/dicomweb/studies", https=True, context=https_context(pki),
                  auth=("alice", "wonder land"))
    assert r.status == 200, r
    # TLS 1.3 preferred
    with socket.create_connection(("127.0.0.1", node.http_port)) as s:
        with https_context(pki).wrap_socket(s, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.3", t.version()
    # TLS 1.2: ECDHE with AES-GCM
    ctx = https_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", node.http_port)) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            name, proto, _bits = t.cipher()
            assert proto == "TLSv1.2" and name.startswith("ECDHE-") and "GCM" in name, t.cipher()
    # refused: DHE, CBC, RSA key exchange, TLS 1.1
    for ciphers in ("DHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256"):
        ctx = https_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers(ciphers)
        with socket.create_connection(("127.0.0.1", node.http_port)) as s:
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(s, server_hostname="127.0.0.1")
    ctx = https_context(pki, minimum_version=ssl.TLSVersion.TLSv1_1,
                        maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", node.http_port)) as s:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(s, server_hostname="127.0.0.1")
    # plain HTTP on the HTTPS port gets nothing served
    with pytest.raises(Exception):
        r = W.request(node.http_port, "/health", timeout=5)
        assert r.status != 200
    assert W.request(node.http_port, "/health", https=True, context=https_context(pki)).status == 200


def test_connection_limit(node_factory):
    import http.client
    node = node_factory(node_class=W.WebNode, http={"max_connections": 1, "idle_timeout": 30},
                        workers=2)
    held = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=10)
    try:
        assert W.request(node.http_port, "/health", conn=held).status == 200
        r = W.request(node.http_port, "/health")
        assert r.status == 503, r
        assert r.header("Retry-After") == "1"
        assert "busy" in r.body.decode()
        # DICOM is not affected by the web's limit
        assert H.echoscu(node.port).ok
        assert W.request(node.http_port, "/health", conn=held).status == 200
    finally:
        held.close()
    deadline = time.monotonic() + 5
    while W.request(node.http_port, "/health").status != 200:
        assert time.monotonic() < deadline, "the held connection's worker never came back"
        time.sleep(0.05)


def raw_exchange(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
    return out


def test_hostile_requests(node_factory):
    node = node_factory(node_class=W.WebNode, http={"idle_timeout": 2})
    port = node.http_port
    # a header far beyond the limit
    out = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000
                       + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431"), out[:200]
    # a request line far beyond the limit
    out = raw_exchange(port, b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414"), out[:200]
    # bytes that are not HTTP at all
    out = raw_exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(300))
    assert out == b"" or out.startswith(b"HTTP/1.1 400"), out[:200]
    # a traversal attempt in every encoding
    for path in ("/dicomweb/studies/..%2f..%2fetc%2fpasswd/series",
                 "/dicomweb/studies/%2e%2e/series", "/dicomweb/studies/1.2.3%00/series"):
        r = W.request(port, path)
        assert r.status in (400, 404), (path, r)
    # a slow client: half a request line, then nothing; the idle timeout
    # closes it while another client is served at once
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET /heal")
    t0 = time.monotonic()
    assert W.request(port, "/health").status == 200
    assert time.monotonic() - t0 < 1
    slow.settimeout(10)
    t0 = time.monotonic()
    assert slow.recv(100) == b""  # closed by the node
    assert time.monotonic() - t0 < 6
    slow.close()
    # a body on a GET, announced huge and never sent
    out = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") or out.startswith(b"HTTP/1.1 4") or out == b"", out[:200]
    assert W.request(port, "/health").status == 200
    assert H.echoscu(node.port).ok


def test_web_off(node_factory):
    """[http] port = 0 (what the other tests run with): nothing listens."""
    node = node_factory()
    assert "web (pages and DICOMweb)" not in node.log_text()
