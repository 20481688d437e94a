"""pacsnodectl (issue 21, in part): passwd writes the web users file the
node reads again (a login works, a role change holds, a removal locks out,
comments stay); status tells a running node from a stopped one and counts
what the index holds."""

import os
import re
import subprocess

import pytest

import pacsnode_harness as H
import web_util as W

CTL = os.environ.get("PACSNODECTL_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(H.NODE_BIN)), "ctl", "pacsnodectl")
pytestmark = pytest.mark.skipif(not os.access(CTL, os.X_OK), reason="pacsnodectl not built: " + CTL)


def ctl(node, *args, stdin=None):
    return subprocess.run([CTL, "-c", node.config_path] + list(args), input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_passwd_users_the_node_reads(node_factory, testdir, it_base, corpus):
    users = os.path.join(testdir, "users")
    with open(users, "w") as f:
        f.write("# the web's users\n")
    H.chown_to(users, it_base[1])
    os.chmod(users, 0o640)
    node = node_factory(node_class=W.WebNode, http={"users": users})
    r = ctl(node, "passwd", "--role", "write", "ana", stdin="long enough pass\n")
    assert r.returncode == 0, r.stderr
    text = open(users).read()
    assert text.startswith("# the web's users\n") and re.search(r"^ana:\$y\$[^:]+:write$", text, re.M), text
    assert oct(os.stat(users).st_mode & 0o777) == "0o640"
    assert W.request(node.http_port, "/dicomweb/studies", auth=("ana", "long enough pass")).status == 200
    assert W.stow(node.http_port, [corpus.entries[0]["abspath"]], auth=("ana", "long enough pass")).status == 200
    # a new password and the read role
    assert ctl(node, "passwd", "ana", stdin="another long one\n").returncode == 0
    assert W.request(node.http_port, "/dicomweb/studies", auth=("ana", "long enough pass")).status == 401
    assert W.stow(node.http_port, [corpus.entries[1]["abspath"]], auth=("ana", "another long one")).status == 403
    # too short, and a user that is not there
    r = ctl(node, "passwd", "bo", stdin="short\n")
    assert r.returncode == 1 and "8 characters" in r.stderr
    r = ctl(node, "passwd", "--delete", "nobody")
    assert r.returncode == 1 and "nobody" in r.stderr
    assert ctl(node, "passwd", "--delete", "ana").returncode == 0
    assert W.request(node.http_port, "/dicomweb/studies", auth=("ana", "another long one")).status == 401
    assert open(users).read() == "# the web's users\n"
    assert ctl(node, "passwd", "--help").returncode == 0


def test_status(node_factory, corpus, scu_dir):
    node = node_factory()
    run = H.storescu(node.port, corpus.paths()[:10], scu_dir)
    assert run.all_success(), run.summary()
    r = ctl(node, "status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "node:      running" in r.stdout, r.stdout
    n = node.count("instance")
    assert re.search(r"index: +\d+ patients, \d+ studies, \d+ series, %d instances" % n, r.stdout), r.stdout
    assert "schema version" in r.stdout and "free of" in r.stdout
    node.stop()
    r = ctl(node, "status")
    assert r.returncode == 3, r.stdout
    assert "not running" in r.stdout
    assert ctl(node, "nosuch").returncode == 2
