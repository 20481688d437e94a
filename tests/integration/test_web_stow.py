"""STOW-RS (issue 20, docs/web.md): parts go through exactly the C-STORE
path. The corpus stored by STOW-RS gives the same index rows as the
manifest wants and as C-STORE gives, each file's dataset byte for byte as
sent; every bad case gets the Failure Reason C-STORE answers with its
status; 200 / 202 / 409 / 415 / 400 / 413 / 401 / 403 as PS3.18 and
docs/web.md say; a broken body leaves no half-written file."""

import os

import pytest

import pacsnode_checks as C
import pacsnode_harness as H
import web_util as W

USERS = [("reader", "r-pass", "read"), ("writer", "w-pass", "write")]


def web_node(node_factory, **http):
    return node_factory(node_class=W.WebNode, http=http)


def storage_clean(node):
    """The storage root against the index, once the node has ended the last
    connection (it flushes the folders and drops the temporary names then,
    as at an association's release)."""
    import time
    deadline = time.monotonic() + 5
    while True:
        problems = C.storage_problems(node)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not problems, "\n".join(problems)


def test_corpus_by_stow_is_the_corpus_by_c_store(node_factory, corpus, scu_dir):
    """One request with the whole corpus (and its duplicates): every
    instance the manifest has, with the manifest's column values, and the
    same rows a C-STORE node makes of the same files."""
    web = web_node(node_factory)
    r = W.stow(web.http_port, corpus.paths())
    assert r.status == 200, r
    ok, failed = W.stow_results(r)
    assert not failed, failed
    assert set(ok) == set(corpus.by_sop), "missing %s" % (set(corpus.by_sop) - set(ok))
    rows = C.joined_rows(web)
    assert set(rows) == set(corpus.by_sop)
    for sop, row in rows.items():
        e = corpus.by_sop[sop]
        assert not C.column_differences(row, e), (sop, C.column_differences(row, e))
        problems = C.compare_part10(e["abspath"], os.path.join(web.storage, row["instance.path"]),
                                    e["sop_class_uid"], sop, e["transfer_syntax_uid"])
        assert not problems, (sop, problems)
        url = ok[sop]
        assert url.endswith("/studies/%s/series/%s/instances/%s" % (
            e["study_instance_uid"], e["series_instance_uid"], sop)), url
    storage_clean(web)
    assert not C.wrong_counts(web), C.wrong_counts(web)
    # and a C-STORE node of the same files: the same rows (bar keys and times)
    dimse = node_factory()
    run = H.storescu(dimse.port, corpus.paths(), scu_dir)
    assert run.all_success(), run.summary()
    # the meta header names the sender (Source AE Title): size and checksum
    # differ by it; the datasets were compared byte for byte above
    drop = {"pk", "series_fk", "study_fk", "patient_fk", "path", "received_at", "calling_ae",
            "updated_at", "created_at", "size", "checksum"}

    def norm(rows_):
        return {sop: {k: v for k, v in r_.items() if k.split(".")[-1] not in drop}
                for sop, r_ in rows_.items()}
    assert norm(C.joined_rows(dimse)) == norm(rows)


def test_retrieved_back_identical(node_factory, corpus):
    web = web_node(node_factory)
    e = corpus.entries[0]
    r = W.stow(web.http_port, [e["abspath"]], study=e["study_instance_uid"])
    assert r.status == 200, r
    ok, _ = W.stow_results(r)
    got = W.request(web.http_port, ok[e["sop_instance_uid"]].split("127.0.0.1:%d" % web.http_port)[1],
                    headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert got.status == 200
    [(_h, data)] = W.multipart(got)
    [row] = C.instance_rows(web)
    with open(os.path.join(web.storage, row["path"]), "rb") as f:
        assert f.read() == data


REFUSED = ["missing_study_uid", "conflict_series", "conflict_study"]


@pytest.mark.parametrize("case", REFUSED)
def test_failure_reasons_are_c_store_statuses(node_factory, bad_cases, scu_dir, case):
    """What C-STORE refuses with a status, STOW-RS refuses with that status
    as Failure Reason, and the index and the disk are left as they were."""
    files = bad_cases[case]["files"]
    dimse = node_factory()
    run = H.storescu(dimse.port, [f["abspath"] for f in files], scu_dir)
    want = [run.status(f["abspath"]) for f in files]
    web = web_node(node_factory)
    got = []
    for f in files:
        before = C.db_snapshot(web)
        r = W.stow(web.http_port, [f["abspath"]])
        ok, failed = W.stow_results(r)
        if ok:
            assert r.status == 200
            got.append(0)
        else:
            assert r.status == 409, r
            [(uid, reason)] = failed
            got.append(reason)
            assert C.db_snapshot(web) == before
    assert got == want, (got, want)
    storage_clean(web)


def test_bad_uids_refused(node_factory, bad_cases):
    from pacsnode_harness import gen_corpus
    web = web_node(node_factory)
    for name, _attr, _value, _why in gen_corpus.BAD_UIDS:
        [f] = bad_cases[name]["files"]
        r = W.stow(web.http_port, [f["abspath"]])
        assert r.status == 409, (name, r)
        [(uid, reason)] = W.stow_results(r)[1]
        assert 0xC000 <= reason <= 0xCFFF, (name, hex(reason))
    assert web.count("instance") == 0
    storage_clean(web)


def test_meta_header_is_the_command(node_factory, bad_cases):
    """Over STOW-RS the file's meta header is the only 'command': one whose
    Media Storage SOP Instance UID is not the dataset's is refused (0xC002),
    where C-STORE, which never carries the meta header, stores it."""
    [f] = bad_cases["meta_mismatch"]["files"]
    web = web_node(node_factory)
    r = W.stow(web.http_port, [f["abspath"]])
    assert r.status == 409, r
    [(_uid, reason)] = W.stow_results(r)[1]
    assert reason == 0xC002
    assert web.count("instance") == 0


def test_mixed_request_is_202(node_factory, corpus):
    web = web_node(node_factory)
    good = corpus.entries[0]["abspath"]
    r = W.stow(web.http_port, [good, b"not a dicom file", b"\0" * 200 + b"DICM"])
    assert r.status == 202, r
    ok, failed = W.stow_results(r)
    assert list(ok) == [corpus.entries[0]["sop_instance_uid"]]
    assert [reason for _u, reason in failed] == [0xC000, 0xC000]
    storage_clean(web)


def test_study_in_url_must_match(node_factory, corpus):
    web = web_node(node_factory)
    a = corpus.entries[0]
    other = next(e for e in corpus.entries if e["study_instance_uid"] != a["study_instance_uid"])
    r = W.stow(web.http_port, [a["abspath"], other["abspath"]], study=a["study_instance_uid"])
    assert r.status == 202, r
    ok, failed = W.stow_results(r)
    assert list(ok) == [a["sop_instance_uid"]]
    assert failed == [(other["sop_instance_uid"], 0xC004)]
    assert r.json()["00081190"]["Value"][0].endswith("/studies/" + a["study_instance_uid"])


def test_chunked_body(node_factory, corpus):
    web = web_node(node_factory)
    paths = corpus.paths()[:10]
    r = W.stow(web.http_port, paths, chunked=True)
    assert r.status == 200, r
    assert web.count("instance") == len({corpus.entries[i]["sop_instance_uid"] for i in range(10)})


def raw_post(port, body, boundary, auth, chunked=False):
    """Sends a STOW-RS request and reads the status line while the body is
    still going out (the node answers a refusal early and closes)."""
    import base64
    import socket
    head = ("POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/related; type=\"application/dicom\"; boundary=%s\r\n"
            "Authorization: Basic %s\r\n" % (boundary, base64.b64encode(("%s:%s" % auth).encode()).decode()))
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: %d\r\n\r\n" % len(body)
    if chunked:
        body = b"".join(b"%x\r\n" % len(body[i:i + 65536]) + body[i:i + 65536] + b"\r\n"
                        for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        try:
            s.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 "), data[:100]
    return int(data[9:12])


def test_refusals(node_factory, corpus, testdir, it_base):
    users = W.write_users(os.path.join(testdir, "users"), USERS, owner=it_base[1])
    web = web_node(node_factory, users=users, max_body_mib=1)
    port = web.http_port
    f = corpus.entries[0]["abspath"]
    assert W.stow(port, [f]).status == 401
    r = W.stow(port, [f], auth=("reader", "r-pass"))
    assert r.status == 403 and "read" in r.body.decode(), r
    assert W.stow(port, [f], auth=("writer", "w-pass")).status == 200
    # not multipart/related application/dicom
    r = W.request(port, "/dicomweb/studies", method="POST", body=b"{}", auth=("writer", "w-pass"),
                  headers={"Content-Type": "application/dicom+json"})
    assert r.status == 415, r
    r = W.request(port, "/dicomweb/studies", method="POST", body=b"x", auth=("writer", "w-pass"),
                  headers={"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=a'})
    assert r.status == 415, r
    # a body larger than max_body_mib: announced, and chunked
    big = [open(f, "rb").read(), b"\0" * (1 << 20)]
    body, boundary = W.stow_body(big)
    for te in ("length", "chunked"):
        status = raw_post(port, body, boundary, ("writer", "w-pass"), chunked=te == "chunked")
        assert status == 413, (te, status)
    # broken multipart: no closing delimiter, no boundary, garbage
    ct = 'multipart/related; type="application/dicom"; boundary=zz'
    for body in (b"--zz\r\nContent-Type: application/dicom\r\n\r\n" + open(f, "rb").read(),
                 b"garbage without any delimiter", b"--zz\r\nno blank line"):
        before = web.count("instance")
        r = W.request(port, "/dicomweb/studies", method="POST", body=body, auth=("writer", "w-pass"),
                      headers={"Content-Type": ct})
        assert r.status == 400, (body[:40], r)
        assert web.count("instance") == before
    r = W.request(port, "/dicomweb/studies", method="POST", body=b"x", auth=("writer", "w-pass"),
                  headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    assert r.status == 400, r
    # other paths and methods
    assert W.request(port, "/dicomweb/series", method="POST", body=b"x",
                     auth=("writer", "w-pass")).status == 405
    assert W.request(port, "/dicomweb/studies", method="DELETE", auth=("writer", "w-pass")).status == 405
    storage_clean(web)
    assert H.echoscu(web.port).ok


def test_slow_body_leaves_nothing(node_factory, corpus):
    """A STOW-RS body that stops half-way (a client gone, or one trickling):
    the idle timeout ends it, the half-written instance is not stored and
    its temporary file is removed, and the node serves the next client."""
    import socket
    import time
    web = web_node(node_factory, idle_timeout=2)
    f = next(e for e in corpus.entries if e["size"] > 10000)
    body, boundary = W.stow_body([f["abspath"]])
    head = ("POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/related; "
            "type=\"application/dicom\"; boundary=%s\r\nContent-Length: %d\r\n\r\n" % (boundary, len(body)))
    s = socket.create_connection(("127.0.0.1", web.http_port), timeout=15)
    s.sendall(head.encode() + body[:len(body) // 2])
    t0 = time.monotonic()
    # meanwhile another client is served at once
    assert W.request(web.http_port, "/health").status == 200
    assert time.monotonic() - t0 < 1
    assert s.recv(100) == b""  # closed by the node after idle_timeout
    assert time.monotonic() - t0 < 8
    s.close()
    time.sleep(0.2)
    assert web.count("instance") == 0
    storage_clean(web)
    assert W.stow(web.http_port, [f["abspath"]]).status == 200
