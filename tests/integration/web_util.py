"""HTTP helpers for the web tests: a node with its web port on, plain
requests with http.client (no library between the test and the bytes),
and QIDO-RS JSON turned into pydicom datasets."""

import base64
import http.client
import json
import os
import ssl
import subprocess
import tempfile

import pydicom
import pytest

import pacsnode_harness as H


class WebNode(H.Node):
    """A node with [http] on a free port (and whatever `http` adds)."""

    def __init__(self, *a, http=None, **kw):
        self.http_port = H.free_port()
        self.http_extra = dict(http or {})
        super().__init__(*a, **kw)

    def write_config(self):
        self.extra_config.setdefault("http", {})
        self.extra_config["http"].update({"port": self.http_port})
        self.extra_config["http"].update(self.http_extra)
        super().write_config()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:300])


def request(port, path, *, method="GET", headers=None, body=None, auth=None, host="127.0.0.1",
            https=False, context=None, timeout=30, conn=None):
    """One request; returns Response. auth: (user, password)."""
    h = dict(headers or {})
    if auth is not None:
        h["Authorization"] = "Basic " + base64.b64encode(
            ("%s:%s" % auth).encode("utf-8")).decode("ascii")
    own = conn is None
    if own:
        if https:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=h,
                     encode_chunked=h.get("Transfer-Encoding") == "chunked")
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.getheaders(), data)
    finally:
        if own:
            conn.close()


def qido(port, path, **kw):
    r = request(port, path, headers={"Accept": "application/dicom+json"}, **kw)
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("application/dicom+json"), r
    return [pydicom.Dataset.from_json(o) for o in r.json()], r.json()


def mkpasswd(password):
    """A yescrypt hash, as an operator makes one (Debian's whois package)."""
    return subprocess.run(["mkpasswd", "-m", "yescrypt", "--stdin"], input=password.encode(),
                          capture_output=True, check=True).stdout.decode().strip()


def write_users(path, users, owner=None):
    """users: [(name, password, role)]."""
    with open(path, "w") as f:
        f.write("# pacsnode web users: name:crypt-hash:role\n")
        for name, pw, role in users:
            f.write("%s:%s:%s\n" % (name, mkpasswd(pw), role))
    os.chmod(path, 0o640)
    if owner:
        H.chown_to(path, owner)
    return path


@pytest.fixture(scope="module")
def wnode(request, pg_cluster, it_base, corpus):
    """One web node per xdist worker and test module with the whole corpus
    stored with storescu, shared by the module's read-only tests."""
    base, user = it_base
    d = tempfile.mkdtemp(prefix="web-corpus-", dir=H.make_dir(os.path.join(base, "tests")))
    os.chmod(d, 0o755)
    dbname = "t_%s_%d" % (request.module.__name__.lower(), os.getpid())
    pg_cluster.create_db(dbname)
    node = WebNode(pg_cluster, d, dbname, user, workers=2)
    try:
        node.start()
        run = H.storescu(node.port, corpus.paths(), H.make_dir(os.path.join(d, "scu")),
                         aet="PNCORPUS")
        assert run.all_success(), run.summary()
    except BaseException:
        node.stop()
        raise
    yield node
    rc = node.stop()
    found = node.sanitizer_reports()
    assert not found, "%s in %s" % (found, node.log_path)
    assert rc in (0, -15), "node exited with %r; log %s" % (rc, node.log_path)
    pg_cluster.drop_db(dbname)


def multipart(resp):
    """The parts of a multipart/related answer: [(headers dict, bytes)],
    each part's Content-Length checked against its bytes."""
    ctype = resp.header("Content-Type")
    assert ctype.startswith("multipart/related"), ctype
    params = dict(p.strip().split("=", 1) for p in ctype.split(";")[1:])
    boundary = params["boundary"].strip('"').encode()
    body = resp.body
    assert body.endswith(b"--" + boundary + b"--\r\n"), body[-100:]
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n"), chunk[:100]
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            assert int(headers["content-length"]) == len(data), headers
        parts.append((headers, data))
    return parts


def stow_body(parts, boundary=None):
    """A multipart/related body of Part 10 files (paths or bytes)."""
    boundary = boundary or ("pnb" + os.urandom(12).hex())
    out = []
    for p in parts:
        data = p if isinstance(p, bytes) else open(p, "rb").read()
        out.append(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                   + data + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out), boundary


def stow(port, parts, *, study=None, auth=None, chunked=False, **kw):
    """STOW-RS of `parts`; returns Response (JSON in .json())."""
    body, boundary = stow_body(parts)
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=%s' % boundary,
               "Accept": "application/dicom+json"}
    path = "/dicomweb/studies" + ("/" + study if study else "")
    if chunked:
        def gen(b=body):
            for i in range(0, len(b), 100000):
                yield b[i:i + 100000]
        headers["Transfer-Encoding"] = "chunked"
        return request(port, path, method="POST", headers=headers, body=gen(), auth=auth, **kw)
    return request(port, path, method="POST", headers=headers, body=body, auth=auth, **kw)


def stow_results(resp):
    """({sop_uid: retrieve_url}, [(sop_uid, failure_reason)]) of a STOW-RS answer."""
    obj = resp.json()
    ok = {}
    for item in obj.get("00081199", {}).get("Value", []):
        ok[item["00081155"]["Value"][0]] = item.get("00081190", {}).get("Value", [None])[0]
    failed = []
    for item in obj.get("00081198", {}).get("Value", []):
        uid = item.get("00081155", {}).get("Value", [""])[0]
        failed.append((uid, item["00081197"]["Value"][0]))
    return ok, failed
