"""QIDO-RS streams (issue 20): 100,000 matches written as the client
reads, the worker's memory flat (as C-FIND's); /health follows the
database: 503 while it is gone, 200 once it is back."""

import http.client
import json
import time

import findscu_util as F
import pacsnode_harness as H
import web_util as W


def sanitized(node):
    with open("/proc/%d/maps" % node.pid) as f:
        return "libasan" in f.read()


def test_100k_matches_in_flat_memory(node_factory):
    node = node_factory(node_class=W.WebNode)
    n = 100000
    bulk = F.load_instances(node, n, tag="webflat")
    path = ("/dicomweb/studies/%s/series/%s/instances?includefield=ImageComments"
            % (bulk["study_uid"], bulk["series_uid"]))
    # warm up the worker that will serve the connection
    assert W.request(node.http_port, path + "&limit=10").status == 200
    base = {w: F.rss_kb(w) for w in F.children_of(node.pid)}
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=120)
    with F.RssSampler(node.pid, 0.05) as sampler:
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 200
        body = bytearray()
        while True:
            chunk = r.read(256 * 1024)
            if not chunk:
                break
            body += chunk
            time.sleep(0.001)  # a client slower than the node
    conn.close()
    matches = json.loads(bytes(body))
    assert len(matches) == n
    assert all(m["00204000"]["Value"][0] == bulk["comment"] for m in matches[:5])
    if sanitized(node):
        return  # ASan quarantines freed memory: the bound does not apply
    growth = {w: sampler.peak.get(w, 0) - (base.get(w) or sampler.first.get(w, 0)) for w in sampler.peak}
    assert sampler.samples >= 5
    assert max(growth.values()) < 20 * 1024, (base, sampler.peak)


def rename_db(pg_cluster, old, new):
    """Renames a database its node is connected to: its sessions ended
    first (the node may connect again in between: retried)."""
    import psycopg2
    for _ in range(50):
        with pg_cluster.connect() as c:
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (old,))
                try:
                    cur.execute('ALTER DATABASE "%s" RENAME TO "%s"' % (old, new))
                    return
                except psycopg2.errors.ObjectInUse:
                    pass
        time.sleep(0.05)
    raise AssertionError("could not rename %s" % old)


def test_health_follows_the_database(node_factory, pg_cluster):
    node = node_factory(node_class=W.WebNode)
    assert W.request(node.http_port, "/health").status == 200
    rename_db(pg_cluster, node.dbname, node.dbname + "_gone")
    try:
        r = W.request(node.http_port, "/health", timeout=30)
        assert r.status == 503, r
        assert "database" in r.body.decode()
        assert W.request(node.http_port, "/dicomweb/studies", timeout=30).status == 503
    finally:
        rename_db(pg_cluster, node.dbname + "_gone", node.dbname)
    deadline = time.monotonic() + 20
    while W.request(node.http_port, "/health", timeout=30).status != 200:
        assert time.monotonic() < deadline, "the node did not find its database again"
        time.sleep(0.2)
    assert H.echoscu(node.port).ok
