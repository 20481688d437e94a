#!/usr/bin/python3
"""The web benchmark's HTTP client: Python's http.client on one kept-alive
connection, each request timed from its first byte sent to the last byte
of its body read (response parsing and checks come after the clock stops).

    webclient.py qido --port P --prefix /dicomweb --plan PLAN.json --out OUT.json
                      [--label L] [--max-seconds S] [--ping N --ping-path PATH]
        the shapes of bench/find's plan (bench/web/plan.py adds one) as
        QIDO-RS requests; every answer's number of matches checked against
        the model
    webclient.py get --port P --path PATH --count N --warmup W --out OUT.json
                     [--expect-sections K] [--thumbnails]
        one page N times (p50/p99); --expect-sections: the study page must
        have K series sections; --thumbnails: also the page followed by
        every thumbnail it links, on the same connection
    webclient.py wado --port P --prefix /dicomweb --study UID --expect N --out OUT.json
        one WADO-RS retrieve of the study (multipart/related,
        application/dicom, as stored), the whole body read; its parts counted
    webclient.py stow --port P --prefix /dicomweb --files LIST --connections K
                      --batch B --out OUT.json
        STOW-RS of the files in LIST over K connections at once (K processes,
        each the K-th contiguous part of the list, as bench/store splits it),
        B instances per request; the time runs from the start signal to the
        last answer

Exit status: 0 when every request was answered as expected, 1 otherwise
(the JSON says what), 2 on a usage error.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import pct as percentile  # noqa: E402

BUF = 1 << 20


class Conn(http.client.HTTPConnection):
    """Counts its TCP connections: the benchmark means one kept alive."""

    def __init__(self, port, timeout=600):
        super().__init__("127.0.0.1", port, timeout=timeout)
        self.opened = 0

    def connect(self):
        super().connect()
        self.opened += 1


def request(conn, method, path, headers=None, body=None):
    """One request; returns (status, headers dict (lower-case), body bytes,
    ms to the headers, ms to the end)."""
    t0 = time.perf_counter()
    for attempt in (0, 1):
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            break
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # the server closed the kept-alive connection while idle: once
            # more on a new one (counted in conn.opened)
            conn.close()
            if attempt:
                raise
            t0 = time.perf_counter()
    t_head = time.perf_counter()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    data = resp.read()
    t1 = time.perf_counter()
    if resp.will_close:
        conn.close()
    return resp.status, hdrs, data, (t_head - t0) * 1000, (t1 - t0) * 1000


# ---------------------------------------------------------------------------
# QIDO-RS
# ---------------------------------------------------------------------------
def qido_path(prefix, shape, keys):
    """bench/find's C-FIND identifier keys as a QIDO-RS URL: the unique keys
    of the levels above become the path, the others query parameters."""
    keys = dict(keys)
    level = shape["level"]
    if level == "STUDY":
        path = "%s/studies" % prefix
    elif level == "SERIES":
        path = "%s/studies/%s/series" % (prefix, keys.pop("StudyInstanceUID"))
    elif level == "IMAGE":
        path = "%s/studies/%s/series/%s/instances" % (prefix, keys.pop("StudyInstanceUID"),
                                                      keys.pop("SeriesInstanceUID"))
    else:
        raise SystemExit("webclient.py: unknown level %s" % level)
    if keys:
        path += "?" + urllib.parse.urlencode(keys, safe="*-")
    return path


def cmd_qido(a):
    with open(a.plan) as f:
        plan = json.load(f)
    only = set(a.shapes.split(",")) if a.shapes else None
    conn = Conn(a.port)
    result = {"target": a.label, "port": a.port, "prefix": a.prefix, "n_instances": plan["n_instances"],
              "shapes": [], "error": None}
    hdr = {"Accept": "application/dicom+json"}
    rc = 0

    def save():
        result["connections"] = conn.opened
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)

    try:
        if a.ping:
            # the smallest request each server answers, for reference
            lat = []
            for i in range(a.ping + 5):
                st, h, data, t_head, t_end = request(conn, "GET", a.ping_path)
                if st != 200:
                    raise http.client.HTTPException("GET %s: status %d" % (a.ping_path, st))
                if i >= 5:
                    lat.append(t_end)
            result["ping"] = {"path": a.ping_path, "n": len(lat), "p50": percentile(lat, 50),
                              "p99": percentile(lat, 99)}
        for shape in plan["shapes"]:
            if only and shape["name"] not in only:
                continue
            r = {"name": shape["name"], "label": shape["label"], "level": shape["level"], "ms": [],
                 "first_ms": [], "bytes": [], "responses": [], "expected": [], "bad": [], "truncated": False,
                 "example": None}
            result["shapes"].append(r)

            def one(q, timed):
                path = qido_path(a.prefix, shape, q["keys"])
                st, h, data, t_head, t_end = request(conn, "GET", path, hdr)
                n = None
                if st == 200:
                    try:
                        doc = json.loads(data) if data else []
                        n = len(doc)
                        if timed and r["example"] is None:
                            r["example"] = {"path": path, "first": doc[0] if doc else None}
                    except ValueError:
                        n = None
                elif st == 204:
                    n = 0
                if st not in (200, 204) or n != q["expected"]:
                    r["bad"].append({"path": path, "status": st, "responses": n, "expected": q["expected"],
                                     "body": (data or b"")[:200].decode("utf-8", "replace") if n is None else None})
                if timed:
                    r["ms"].append(t_end)
                    r["first_ms"].append(t_head)
                    r["bytes"].append(len(data or b""))
                    r["responses"].append(n)
                    r["expected"].append(q["expected"])

            for q in shape["warmup"]:
                one(q, False)
            t_start = time.perf_counter()
            for q in shape["queries"]:
                one(q, True)
                if a.max_seconds and time.perf_counter() - t_start > a.max_seconds:
                    r["truncated"] = len(r["ms"]) < len(shape["queries"])
                    break
            r["planned"] = len(shape["queries"])
            if r["bad"]:
                rc = 1
            save()
    except (OSError, http.client.HTTPException) as e:
        result["error"] = "%s: %s (after %d shapes)" % (type(e).__name__, e, len(result["shapes"]))
        rc = 1
    finally:
        conn.close()
    save()
    return rc


# ---------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------
def cmd_get(a):
    conn = Conn(a.port)
    result = {"path": a.path, "ms": [], "bad": [], "error": None}
    rc = 0
    try:
        size = None
        page = b""
        for i in range(a.warmup + a.count):
            st, h, data, t_head, t_end = request(conn, "GET", a.path, {"Accept": "text/html"})
            ok = st == 200 and h.get("content-type", "").startswith("text/html")
            if ok and a.expect_sections is not None:
                n = data.count(b'<section class="series"')
                ok = n == a.expect_sections
                result["sections"] = n
            if not ok:
                result["bad"].append({"status": st, "type": h.get("content-type"), "len": len(data)})
            if i >= a.warmup:
                result["ms"].append(t_end)
            size = len(data)
            page = data
        result["bytes"] = size
        result["rows"] = page.count(b"<tr") - 1 if b"<tr" in page else 0
        if a.thumbnails:
            srcs = re.findall(rb'<img[^>]* src="([^"]+/thumbnail)"', page)
            result["thumbnails"] = len(srcs)
            result["with_thumbnails_ms"] = []
            result["thumbnail_ms"] = []
            for i in range(a.warmup + a.count):
                t0 = time.perf_counter()
                st, h, data, _, _ = request(conn, "GET", a.path, {"Accept": "text/html"})
                ok = st == 200
                for src in srcs:
                    st, h, img, _, t_img = request(conn, "GET", src.decode().replace("&amp;", "&"),
                                                   {"Accept": "image/png,image/jpeg"})
                    if i >= a.warmup:
                        result["thumbnail_ms"].append(t_img)
                    ok = ok and st == 200 and h.get("content-type", "").startswith("image/") and len(img) > 0
                if not ok:
                    result["bad"].append({"thumbnails": "status %s" % st})
                if i >= a.warmup:
                    result["with_thumbnails_ms"].append((time.perf_counter() - t0) * 1000)
    except (OSError, http.client.HTTPException) as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    result["connections"] = conn.opened
    if result["bad"] or result["error"]:
        rc = 1
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    return rc


# ---------------------------------------------------------------------------
# WADO-RS
# ---------------------------------------------------------------------------
def cmd_wado(a):
    conn = Conn(a.port)
    path = "%s/studies/%s" % (a.prefix, a.study)
    hdr = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    result = {"path": path, "error": None}
    state = {"bytes": 0, "marks": 0, "tail": b""}
    delim = [b""]

    def sink(buf, n):
        # the boundary delimiters, counted in place (no copy of the body),
        # also one cut between two reads
        state["bytes"] += n
        d = delim[0]
        if d and n:
            state["marks"] += buf.count(d, 0, n)
            k = len(d) - 1
            state["marks"] += (state["tail"] + bytes(buf[:min(k, n)])).count(d)
            state["tail"] = bytes(buf[max(0, n - k):n])

    rc = 0
    try:
        # the boundary comes with the headers, inside the timed part
        c0 = time.process_time()
        t0 = time.perf_counter()
        conn.request("GET", path, headers=hdr)
        resp = conn.getresponse()
        t_head = time.perf_counter()
        ctype = resp.getheader("Content-Type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        delim[0] = (b"--" + m.group(1).encode()) if m else b""
        buf = bytearray(BUF)
        mv = memoryview(buf)
        while True:
            n = resp.readinto(mv)
            if not n:
                break
            sink(buf, n)
        t1 = time.perf_counter()
        result.update(status=resp.status, content_type=ctype, seconds=t1 - t0, head_ms=(t_head - t0) * 1000,
                      client_cpu_s=time.process_time() - c0,
                      bytes=state["bytes"], parts=max(0, state["marks"] - 1) if delim[0] else None,
                      chunked=resp.chunked if hasattr(resp, "chunked") else None)
        if resp.status != 200 or result["parts"] != a.expect:
            rc = 1
    except (OSError, http.client.HTTPException) as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
        rc = 1
    finally:
        conn.close()
    result["connections"] = conn.opened
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    return rc


# ---------------------------------------------------------------------------
# STOW-RS
# ---------------------------------------------------------------------------
def stow_worker(port, prefix, files, batch, go, out_q, idx):
    conn = Conn(port)
    res = {"idx": idx, "requests": 0, "stored": 0, "failed": 0, "bad": [], "error": None, "ms": []}
    boundary = "pacsnode-bench-%d-%d" % (os.getpid(), idx)
    bb = boundary.encode()
    ctype = 'multipart/related; type="application/dicom"; boundary=%s' % boundary
    part_head = b"--" + bb + b"\r\nContent-Type: application/dicom\r\n\r\n"
    closing = b"\r\n--" + bb + b"--\r\n"
    sizes = [os.path.getsize(p) for p in files]
    try:
        conn.connect()
        go.wait()
        for i in range(0, len(files), batch):
            group = list(range(i, min(i + batch, len(files))))
            length = sum(len(part_head) + sizes[j] for j in group) + 2 * (len(group) - 1) + len(closing)
            t0 = time.perf_counter()
            conn.putrequest("POST", "%s/studies" % prefix, skip_accept_encoding=True)
            conn.putheader("Content-Type", ctype)
            conn.putheader("Accept", "application/dicom+json")
            conn.putheader("Content-Length", str(length))
            conn.endheaders()
            for k, j in enumerate(group):
                conn.send((b"\r\n" if k else b"") + part_head)
                with open(files[j], "rb") as f:
                    conn.sock.sendfile(f)
            conn.send(closing)
            resp = conn.getresponse()
            data = resp.read()
            res["ms"].append((time.perf_counter() - t0) * 1000)
            if resp.will_close:
                conn.close()
            res["requests"] += 1
            ok_n = bad_n = None
            try:
                doc = json.loads(data) if data else {}
                if isinstance(doc, list):          # a list of one dataset
                    doc = doc[0] if doc else {}
                ok_n = len(doc.get("00081199", {}).get("Value", []))
                bad_n = len(doc.get("00081198", {}).get("Value", []))
            except (ValueError, AttributeError, IndexError):
                pass
            if resp.status != 200 or ok_n != len(group) or bad_n:
                res["bad"].append({"status": resp.status, "referenced": ok_n, "failed": bad_n,
                                   "body": data[:300].decode("utf-8", "replace")})
            res["stored"] += ok_n or 0
            res["failed"] += bad_n or 0
    except (OSError, http.client.HTTPException) as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    res["connections"] = conn.opened
    res["t_end"] = time.perf_counter()
    res["cpu_s"] = time.process_time()
    out_q.put(res)


def cmd_stow(a):
    with open(a.files) as f:
        files = [x.strip() for x in f if x.strip()]
    k = a.connections
    # contiguous parts, as split -n l/K does for bench/store
    parts = []
    per, extra = divmod(len(files), k)
    pos = 0
    for i in range(k):
        n = per + (1 if i < extra else 0)
        parts.append(files[pos:pos + n])
        pos += n
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    q = ctx.Queue()
    procs = [ctx.Process(target=stow_worker, args=(a.port, a.prefix, parts[i], a.batch, go, q, i))
             for i in range(k)]
    for p in procs:
        p.start()
    time.sleep(0.5)                    # every worker connected and waiting
    t0 = time.perf_counter()
    go.set()
    results = [q.get() for _ in procs]
    t1 = max(r["t_end"] for r in results)
    for p in procs:
        p.join()
    ms = [x for r in results for x in r["ms"]]
    out = {"connections": k, "batch": a.batch, "files": len(files), "seconds": t1 - t0,
           "stored": sum(r["stored"] for r in results), "failed": sum(r["failed"] for r in results),
           "requests": sum(r["requests"] for r in results),
           "tcp_connections": sum(r["connections"] for r in results),
           "client_cpu_s": sum(r["cpu_s"] for r in results),
           "request_ms_p50": percentile(ms, 50), "request_ms_p99": percentile(ms, 99),
           "errors": [r["error"] for r in results if r["error"]],
           "bad": [b for r in results for b in r["bad"]][:5],
           "n_bad": sum(len(r["bad"]) for r in results)}
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    ok = not out["errors"] and not out["n_bad"] and out["stored"] == len(files)
    print("%.3f" % out["seconds"])
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("qido")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--prefix", default="/dicomweb")
    q.add_argument("--plan", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--label", default="")
    q.add_argument("--shapes", default="")
    q.add_argument("--max-seconds", type=float, default=0)
    q.add_argument("--ping", type=int, default=0, help="first, this many GET PING_PATH (reference)")
    q.add_argument("--ping-path", default="/health")
    g = sub.add_parser("get")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--path", required=True)
    g.add_argument("--count", type=int, default=100)
    g.add_argument("--warmup", type=int, default=5)
    g.add_argument("--expect-sections", type=int)
    g.add_argument("--thumbnails", action="store_true")
    g.add_argument("--out", required=True)
    w = sub.add_parser("wado")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--prefix", default="/dicomweb")
    w.add_argument("--study", required=True)
    w.add_argument("--expect", type=int, required=True)
    w.add_argument("--out", required=True)
    s = sub.add_parser("stow")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--prefix", default="/dicomweb")
    s.add_argument("--files", required=True)
    s.add_argument("--connections", type=int, default=1)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--out", required=True)
    a = ap.parse_args()
    return {"qido": cmd_qido, "get": cmd_get, "wado": cmd_wado, "stow": cmd_stow}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
