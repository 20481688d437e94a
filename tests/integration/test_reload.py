"""Reload without restart (issue 21, SIGHUP): a peer added can then store,
one removed cannot; an association open across the reload goes on under
the configuration it began with; a bad file keeps the running
configuration and says what is wrong; keys that need a restart are named
and kept; idle workers are replaced, the listener's PID stays."""

import os
import re
import signal
import time

import pytest

import pacsnode_harness as H
import rawscu
from pacsnode_harness import gen_corpus

STORE = {"allow": "store"}


def reload_and_wait(node, pattern="configuration reloaded|reload refused", timeout=10):
    off = os.path.getsize(node.log_path)
    os.kill(node.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(node.log_path, "rb") as f:
            f.seek(off)
            text = f.read().decode("utf-8", "replace")
        if re.search(pattern, text):
            time.sleep(0.3)  # the idle workers' replacements start
            return text
        time.sleep(0.05)
    raise AssertionError("no reload line in the log:\n" + H.tail(node.log_path))


def instance(scu_dir, name):
    return gen_corpus.make_instance(os.path.join(scu_dir, name + ".dcm"), name=name, patient_id="PR-" + name)


def stores(node, scu_dir, aet, name):
    f = instance(scu_dir, name)
    run = H.storescu(node.port, [f["path"]], scu_dir, aet=aet)
    return run.all_success()


@pytest.fixture
def strict_node(node_factory):
    # PNTEST: the harness's own C-ECHO
    return node_factory(peers={"a": dict(STORE, ae_title="MOD_A"), "harness": {"ae_title": "PNTEST"}},
                        extra_config={"node": {"accept_unknown_calling_ae": "no"}})


def test_peer_added_and_removed(strict_node, scu_dir):
    node = strict_node
    assert stores(node, scu_dir, "MOD_A", "a1")
    assert not stores(node, scu_dir, "MOD_B", "b1")
    node.peers["b"] = dict(STORE, ae_title="MOD_B")
    del node.peers["a"]
    node.write_config()
    text = reload_and_wait(node)
    assert "configuration reloaded" in text and "2 peers" in text, text
    assert stores(node, scu_dir, "MOD_B", "b2")
    assert not stores(node, scu_dir, "MOD_A", "a2")
    assert node.proc.poll() is None


def test_association_across_reload_keeps_its_configuration(strict_node, scu_dir):
    node = strict_node
    f = instance(scu_dir, "across")
    ds = rawscu.dataset_bytes(f["path"])
    assoc = rawscu.Association("127.0.0.1", node.port)
    try:
        assoc.associate("MOD_A", H.NODE_AET, f["sop_class_uid"])
        # MOD_A goes away while its association is open
        del node.peers["a"]
        node.write_config()
        reload_and_wait(node)
        status = assoc.c_store(f["sop_class_uid"], f["sop_instance_uid"], ds)
        assert status == 0x0000, hex(status)
        assoc.release()
    finally:
        assoc.close()
    assert node.count("instance") == 1
    assert not stores(node, scu_dir, "MOD_A", "after")


def test_bad_file_keeps_running_configuration(strict_node, scu_dir):
    node = strict_node
    with open(node.config_path, "a") as f:
        f.write("\n[limits]\nworkers = many\n")
    text = reload_and_wait(node)
    assert "reload refused" in text and "workers" in text and node.config_path in text, text
    assert len([l for l in text.splitlines() if "reload refused" in l]) == 1
    assert stores(node, scu_dir, "MOD_A", "still")


def test_restart_keys_named_and_kept(strict_node, scu_dir):
    node = strict_node
    old_port = node.port
    node.port = H.free_port()
    node.write_config()
    text = reload_and_wait(node)
    assert "[node] port" in text and "need a restart" in text, text
    node.port = old_port
    assert H.echoscu(old_port).ok
    assert stores(node, scu_dir, "MOD_A", "same-port")


def test_idle_workers_replaced(node_factory):
    node = node_factory(workers=2)
    before = set(H.Node._group_members(node)) if hasattr(H.Node, "_group_members") else None
    reload_and_wait(node)
    deadline = time.monotonic() + 5
    while True:
        after = set(H.Node._group_members(node))
        if before is None or (len(after - before) >= 2):
            break
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.1)
    assert H.echoscu(node.port).ok
    assert node.proc.poll() is None


def test_stop_timeout_ends_what_is_left(node_factory):
    """SIGTERM with an association open and idle: the node waits up to
    [limits] stop_timeout, says it ends what is left, and exits in time."""
    node = node_factory(extra_config={"limits": {"stop_timeout": 2}})
    assoc = rawscu.Association("127.0.0.1", node.port)
    try:
        assoc.associate("PNIDLE", H.NODE_AET, gen_corpus.SOP_CLASS["CT"])
        t0 = time.monotonic()
        os.kill(node.pid, signal.SIGTERM)
        node.proc.wait(timeout=10)
        took = time.monotonic() - t0
    finally:
        assoc.close()
    assert 1.5 <= took < 5, took
    log = node.log_text()
    assert "stop_timeout (2 s) reached" in log, H.tail(node.log_path)
