"""The systemd watchdog (issue 21; docs/operations.md): with WATCHDOG_USEC
the listener sends WATCHDOG=1 to NOTIFY_SOCKET about every half interval
while each idle pool worker answers; a worker stopped with SIGSTOP ends the
pings within the interval and gets no connection meanwhile; SIGCONT and they
resume. The socket is a datagram socket of the test's, as systemd's is."""

import os
import re
import signal
import socket
import time

import pytest

import pacsnode_harness as H
import rawscu

INTERVAL = 2.0  # seconds: WATCHDOG_USEC
VERIFICATION = "1.2.840.10008.1.1"


class Notifications:
    """An AF_UNIX datagram socket the node's sd_notify() writes to; each
    message with the monotonic time it was read."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)  # the node runs as another user
        self.got = []

    def read_for(self, seconds):
        """Every message arriving in the next `seconds`: (time, text) list."""
        end = time.monotonic() + seconds
        out = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            out.append((time.monotonic(), data.decode("utf-8", "replace")))
        self.got += out
        return out

    def close(self):
        self.sock.close()


def pings(messages):
    return [t for t, text in messages if "WATCHDOG=1" in text.split("\n")]


@pytest.fixture
def notify(testdir, monkeypatch):
    n = Notifications(os.path.join(testdir, "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", n.path)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield n
    n.close()


def pool_workers(node):
    """The listener's children but the node lock's keeper (scp/nodes.h),
    which says its pid in its first log line."""
    node.wait_for_log(r"held by the keeper", timeout=5)
    keeper = {int(p) for p in re.findall(r"pacsnode\[(\d+)\] debug: node lock of node_id \"[^\"]*\" held by "
                                         r"the keeper", node.log_text())}
    with open("/proc/%d/task/%d/children" % (node.pid, node.pid)) as f:
        return [int(p) for p in f.read().split() if int(p) not in keeper]


def test_pings_stop_while_a_worker_is_stopped(node_factory, notify, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", str(int(INTERVAL * 1e6)))
    node = node_factory(workers=2)
    first = notify.read_for(3 * INTERVAL)
    assert any("READY=1" in text for _, text in first), first
    times = pings(first)
    assert len(times) >= 4, first
    gaps = [b - a for a, b in zip(times, times[1:])]
    # about half the interval; never close to all of it
    assert max(gaps) < 0.75 * INTERVAL, gaps
    assert min(gaps) > 0.3 * INTERVAL, gaps

    workers = pool_workers(node)
    assert len(workers) == 2, workers
    victim = workers[0]
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        after = notify.read_for(2.5 * INTERVAL)
        late = [t - stopped_at for t in pings(after) if t - stopped_at > INTERVAL]
        assert not late, "WATCHDOG=1 went on %s s after the worker stopped" % late
        assert node.wait_for_log(r"watchdog: idle worker %d has not answered" % victim, timeout=2)
        # the listener hands no connection to the stopped worker: two
        # associations open at once, one would land on it otherwise
        held = []
        try:
            for _ in range(2):
                a = rawscu.Association("127.0.0.1", node.port, timeout=5)
                held.append(a)
                a.associate("PNTEST", H.NODE_AET, VERIFICATION)
        finally:
            for a in held:
                a.close()
    finally:
        os.kill(victim, signal.SIGCONT)
    resumed_at = time.monotonic()
    back = pings(notify.read_for(1.5 * INTERVAL))
    assert back and back[0] - resumed_at < INTERVAL, back
    assert node.wait_for_log(r"watchdog: worker %d answers again" % victim, timeout=2)


def test_no_pings_without_watchdog_usec(node_factory, notify, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    node_factory(workers=1)
    got = notify.read_for(2.0)
    assert any("READY=1" in text for _, text in got), got
    assert not pings(got), got
