"""/metrics (issue 20, docs/web.md): Prometheus text format, read with the
prometheus_client library's own parser; its counters move as the tests
store (C-STORE and STOW-RS), query (C-FIND and QIDO-RS), retrieve and
fail, summed over all worker processes."""

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import findscu_util as F
import pacsnode_harness as H
import web_util as W
from pacsnode_harness import gen_corpus


def scrape(node):
    r = W.request(node.http_port, "/metrics")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move(node_factory, scu_dir):
    node = node_factory(node_class=W.WebNode, workers=2)
    before = scrape(node)
    files = [gen_corpus.make_instance(os.path.join(scu_dir, "m%d.dcm" % i), name="metrics%d" % i,
                                      patient_id="PM-1", study_uid=gen_corpus.make_uid(0, "ms", "1"),
                                      series_uid=gen_corpus.make_uid(0, "mse", "1"),
                                      instance_number=str(i + 1)) for i in range(3)]
    run = H.storescu(node.port, [f["path"] for f in files], scu_dir)
    assert run.all_success(), run.summary()
    run = F.findscu(node.port, F.query_dataset("STUDY", {"PatientID": "PM-1", "StudyInstanceUID": ""}),
                    scu_dir, model=F.STUDY_ROOT)
    assert run.final == F.SUCCESS
    assert W.request(node.http_port, "/dicomweb/studies?PatientID=PM-1").status == 200
    assert W.request(node.http_port, "/dicomweb/studies/1.2.3/metadata").status == 404
    r = W.stow(node.http_port, [b"not dicom"])
    assert r.status == 409
    # a request is counted when its answer is complete (its duration is
    # known then), a moment after the client has read it: scrape again
    # until the last one shows, briefly
    deadline = time.monotonic() + 5
    while True:
        after = scrape(node)
        if get(after, "pacsnode_http_responses_total", status="409") >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    size = sum(os.path.getsize(os.path.join(node.storage, row["path"])) for row in
               node.query("SELECT path FROM instance"))
    assert get(after, "pacsnode_instances_total", status="0x0000") - \
        get(before, "pacsnode_instances_total", status="0x0000") == 3
    assert get(after, "pacsnode_instances_total", status="0xC000") - \
        get(before, "pacsnode_instances_total", status="0xC000") == 1
    assert get(after, "pacsnode_stored_bytes_total") - get(before, "pacsnode_stored_bytes_total") == size
    # the C-ECHO of the start-up check, storescu and findscu
    assert get(after, "pacsnode_associations_total", outcome="released") - \
        get(before, "pacsnode_associations_total", outcome="released") == 2
    for op in ("c_store", "c_find", "qido"):
        d = get(after, "pacsnode_operation_seconds_count", op=op) - \
            get(before, "pacsnode_operation_seconds_count", op=op)
        assert d == {"c_store": 3, "c_find": 1, "qido": 1}[op], (op, d)
        # cumulative buckets, +Inf equal to the count
        assert get(after, "pacsnode_operation_seconds_bucket", op=op, le="+Inf") == \
            get(after, "pacsnode_operation_seconds_count", op=op)
    for phase in ("receive", "parse", "index", "fsync", "commit"):
        assert get(after, "pacsnode_store_phase_seconds_count", phase=phase) == 3
    assert get(after, "pacsnode_http_responses_total", status="404") >= 1
    assert get(after, "pacsnode_http_responses_total", status="409") >= 1
    assert get(after, "pacsnode_storage_free_bytes") > 0
    assert get(after, "pacsnode_workers", state="configured") == 2
    # this scrape's own connection is open while it is counted
    assert get(after, "pacsnode_http_connections_open") >= 1
    assert get(after, "pacsnode_associations_open") == 0


def test_metrics_need_a_login(node_factory, testdir, it_base):
    users = W.write_users(os.path.join(testdir, "users"), [("mon", "itor", "read")], owner=it_base[1])
    node = node_factory(node_class=W.WebNode, http={"users": users})
    assert W.request(node.http_port, "/metrics").status == 401
    assert W.request(node.http_port, "/metrics", auth=("mon", "itor")).status == 200
