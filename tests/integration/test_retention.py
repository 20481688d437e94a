"""Keeping the disk from filling (issue 21, retention and quota): below
[retention] min_free_gib a C-STORE is refused with 0xA700 before a byte
of it is written, never after a torn write; past max_study_age_days,
max_storage_gib or (with delete_for_free_space) towards min_free_gib the
node's retention deletes the studies received (policy = accessed:
retrieved) longest ago, at most deletes_per_minute, each logged, one node
at a time; pacsnodectl retention --dry-run lists what would go.

The storage is a small ext4 file system of its own (a loop-mounted image
in the test's folder), so that "full" is reached in seconds and the rest
of the machine is not touched.
"""

import os
import re
import shutil
import subprocess
import time

import pydicom
import pytest

import findscu_util as F
import pacsnode_checks as C
import pacsnode_harness as H
import retrieve_util as R
from pacsnode_harness import gen_corpus
from test_ctl_delete import CTL, ctl
from test_reload import reload_and_wait

MIB = 1 << 20


@pytest.fixture
def small_fs(testdir, it_base):
    """A 24 MiB ext4 file system mounted in the test's folder, owned by the
    node's user; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop file system needs root")
    _base, user = it_base
    image = os.path.join(str(testdir), "fs.img")
    mnt = os.path.join(str(testdir), "mnt")
    os.makedirs(mnt)
    with open(image, "wb") as f:
        f.truncate(24 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
    try:
        if user:
            shutil.chown(mnt, user, user)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


def big_instances(directory, n, tag):
    """n CT instances of 512 KB (256x1024, 16 bit) in one series."""
    study = gen_corpus.make_uid(0, tag, "study")
    series = gen_corpus.make_uid(0, tag, "series")
    out = []
    for i in range(1, n + 1):
        path = os.path.join(directory, "%s-%03d.dcm" % (tag, i))
        e = gen_corpus.make_instance(path, name="%s-%d" % (tag, i), patient_id="PN-" + tag,
                                     study_uid=study, series_uid=series, instance_number=i)
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 256, 1024, 16, 16, 15
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelRepresentation = 0
        ds.PixelData = os.urandom(256 * 1024 * 2)
        ds["PixelData"].VR = "OW"
        ds.save_as(path)
        e["abspath"] = path
        out.append(e)
    return out


def free_bytes(path):
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize


def test_stores_refused_before_the_disk_is_full(node_factory, small_fs, scu_dir):
    """With 24 MiB and min_free_gib = 0.01 (10.7 MB) a series of 40 x 512 KB
    fills it to the line: the stores before it succeed, indexed and on
    disk; every one after gets 0xA700 with one log line; nothing torn or
    left in tmp/; the disk keeps at least the margin less one instance;
    the node goes on answering."""
    root = os.path.join(small_fs, "store")
    node = node_factory(extra_config={"storage": {"root": root},
                                      "retention": {"min_free_gib": "0.01"}})
    node.storage = root
    margin = int(0.01 * (1 << 30))
    entries = big_instances(str(scu_dir), 40, "fill")
    run = H.storescu(node.port, [e["abspath"] for e in entries], str(scu_dir))
    statuses = [run.results[e["abspath"]].status for e in entries]
    assert set(statuses) <= {0x0000, 0xA700}, run.summary()
    stored = statuses.count(0x0000)
    refused = statuses.count(0xA700)
    assert stored >= 5 and refused >= 5, statuses
    # once refused, refused: the disk does not empty by itself
    assert statuses == [0x0000] * stored + [0xA700] * refused, statuses
    assert node.count("instance") == stored
    problems = C.storage_problems(node)
    assert not problems, problems
    assert free_bytes(small_fs) >= margin - 600 * 1024, free_bytes(small_fs)
    lines = [ln for ln in node.log_text().splitlines()
             if "refused (0xA700)" in ln and "min_free_gib" in ln]
    assert len(lines) == refused, "\n".join(lines)
    assert H.echoscu(node.port).ok


# ---- the background deletions --------------------------------------------

GIB = 1 << 30
LOCK = (1347310164, 1)  # retention's advisory lock (db/retention.c)


def small_studies(scu_dir, tag, n, per=2):
    """n studies of `per` small CT instances, each of its own patient, in
    the order given; returns their StudyInstanceUIDs and the files."""
    uids, files = [], []
    for k in range(n):
        st = gen_corpus.make_uid(0, tag, "study", str(k))
        se = gen_corpus.make_uid(0, tag, "series", str(k))
        for i in range(1, per + 1):
            name = "%s-%d-%d" % (tag, k, i)
            e = gen_corpus.make_instance(os.path.join(scu_dir, name + ".dcm"), name=name,
                                         patient_id="RT-%s-%d" % (tag, k), study_uid=st, series_uid=se,
                                         sop_uid=gen_corpus.make_uid(0, tag, "sop", str(k), str(i)),
                                         instance_number=i)
            files.append(e["path"])
        uids.append(st)
    return uids, files


def store_all(node, files, scu_dir):
    run = H.storescu(node.port, files, scu_dir)
    assert run.all_success(), run.summary()


def age(node, study_uid, days):
    node.query("UPDATE study SET created_at = now() - %s * interval '1 day' WHERE study_uid = %s",
               (days, study_uid))


def study_uids(node):
    return {r["study_uid"] for r in node.query("SELECT study_uid FROM study")}


def study_files(node, study_uid):
    return [os.path.join(node.storage, r["path"]) for r in node.query(
        "SELECT i.path FROM instance i JOIN series s ON s.pk = i.series_fk JOIN study t ON t.pk = s.study_fk"
        " WHERE t.study_uid = %s", (study_uid,))]


def wait_for(cond, timeout=15.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def deleted_lines(node):
    return re.findall(r"retention: deleted study ([0-9.]+) of patient .*", node.log_text())


def would_delete(out):
    return re.findall(r"would delete study ([0-9.]+) ", out)


def test_retention_is_off_by_default(node_factory, scu_dir):
    """No [retention] deletion key: no retention process, nothing deleted
    however old; the dry run says it is off."""
    node = node_factory()
    uids, files = small_studies(str(scu_dir), "off", 1)
    store_all(node, files, str(scu_dir))
    age(node, uids[0], 10000)
    r = ctl(node, "retention", "--dry-run")
    assert r.returncode == 0 and "retention is off" in r.stdout, r.stdout + r.stderr
    time.sleep(1.5)
    assert study_uids(node) == set(uids)
    assert "retention:" not in node.log_text()


def test_age_limit_deletes_the_oldest_first_at_the_rate_bound(node_factory, scu_dir):
    """max_study_age_days = 30 and 2 deletions a minute: of studies 60, 50
    and 40 days old and one of today, the dry run lists the three old ones
    oldest first; the node deletes the two oldest, rows and files, in that
    order, each with a log line saying why, and stops at the bound; C-FIND
    no longer finds them; a reload raising the bound lets the third go,
    and today's study stays."""
    node = node_factory(extra_config={"retention": {"max_study_age_days": 30, "deletes_per_minute": 2,
                                                    "interval": 1}})
    uids, files = small_studies(str(scu_dir), "age", 4)
    store_all(node, files, str(scu_dir))
    files_of = {u: study_files(node, u) for u in uids}
    for u, days in zip(uids, (60, 50, 40)):
        age(node, u, days)
    dry = ctl(node, "retention", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert would_delete(dry.stdout) == uids[:3], dry.stdout
    assert "longer ago than 30 days" in dry.stdout and "about 2 minutes" in dry.stdout, dry.stdout

    wait_for(lambda: len(study_uids(node)) == 2, what="two deletions")
    time.sleep(2.5)  # two more rounds: the bound holds
    assert study_uids(node) == set(uids[2:])
    assert deleted_lines(node) == uids[:2], node.log_text()
    assert "received longer ago than 30 days" in node.log_text()
    assert "deletes_per_minute" in node.log_text()
    for u in uids[:2]:
        assert files_of[u] and not any(os.path.exists(f) for f in files_of[u]), files_of[u]
        run = F.findscu(node.port, F.query_dataset("STUDY", {"StudyInstanceUID": u}), str(scu_dir))
        assert run.final == 0 and not run.responses, run.summary()
    assert all(os.path.exists(f) for u in uids[2:] for f in files_of[u])
    assert node.query("SELECT count(*) AS n FROM storage_garbage")[0]["n"] == 0

    node.extra_config["retention"]["deletes_per_minute"] = 100
    node.write_config()
    reload_and_wait(node)
    wait_for(lambda: len(study_uids(node)) == 1, what="the third deletion")
    time.sleep(1.5)
    assert study_uids(node) == {uids[3]}
    assert deleted_lines(node) == uids[:3]
    assert "stopped for the reloaded configuration" in node.log_text()
    assert not C.storage_problems(node)


def test_quota_with_policy_accessed_spares_what_was_retrieved(node_factory, scu_dir):
    """Three studies received 3, 2 and 1 days ago; the oldest is then
    retrieved (C-GET). Over max_storage_gib by less than one study, the
    dry run lists the oldest received under policy = received, but the one
    received second under policy = accessed; reloaded with the latter, the
    node deletes just that one and the storage is under the quota."""
    node = node_factory(peers={"mover": {"ae_title": "MOVER", "allow": "get"}})
    uids, files = small_studies(str(scu_dir), "quota", 3)
    store_all(node, files, str(scu_dir))
    for u, days in zip(uids, (3, 2, 1)):
        age(node, u, days)
    run = R.getscu(node.port, "study", "STUDY", {"StudyInstanceUID": uids[0]}, str(scu_dir))
    assert len(run.files) == 2, run.output
    accessed = {r["study_uid"]: r["accessed_at"] for r in node.query("SELECT study_uid, accessed_at FROM study")}
    assert accessed[uids[0]] is not None and accessed[uids[1]] is None, accessed

    total = int(node.query("SELECT sum(size) AS b FROM instance")[0]["b"])
    one = sum(os.path.getsize(f) for f in study_files(node, uids[1]))
    quota = "%.12f" % ((total - one / 2) / GIB)
    node.extra_config["retention"] = {"max_storage_gib": quota, "policy": "received", "interval": 1}
    node.write_config()
    dry = ctl(node, "retention", "--dry-run")
    assert would_delete(dry.stdout) == [uids[0]], dry.stdout
    node.extra_config["retention"]["policy"] = "accessed"
    node.write_config()
    dry = ctl(node, "retention", "--dry-run")
    assert would_delete(dry.stdout) == [uids[1]], dry.stdout
    assert "the storage above max_storage_gib" in dry.stdout, dry.stdout

    reload_and_wait(node)
    wait_for(lambda: len(study_uids(node)) == 2, what="the quota's deletion")
    time.sleep(1.5)
    assert study_uids(node) == {uids[0], uids[2]}
    assert node.query("SELECT sum(size) AS b FROM instance")[0]["b"] <= float(quota) * GIB


def test_one_node_at_a_time_deletes(node_factory, scu_dir):
    """While another session holds retention's lock (another node's
    retention), the node deletes nothing; once it is released, it does."""
    node = node_factory()
    uids, files = small_studies(str(scu_dir), "lock", 2)
    store_all(node, files, str(scu_dir))
    age(node, uids[0], 100)
    conn = node.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", LOCK)
        node.extra_config["retention"] = {"max_study_age_days": 30, "interval": 1}
        node.write_config()
        reload_and_wait(node)
        time.sleep(3)
        assert study_uids(node) == set(uids)
    finally:
        conn.close()
    wait_for(lambda: study_uids(node) == {uids[1]}, what="the deletion once the lock is free")


def test_free_space_deletions_before_stores_are_refused(node_factory, small_fs, scu_dir):
    """On a 24 MiB file system with min_free_gib = 0.008: filled with one
    512 KB study after another until free space is under 110 % of the
    minimum, then reloaded with delete_for_free_space = yes, the node
    deletes the oldest studies (a prefix of the order they came in) until
    120 % of the minimum is free, no more than one study beyond, and
    stores are accepted again."""
    root = os.path.join(small_fs, "store")
    node = node_factory(extra_config={"storage": {"root": root},
                                      "retention": {"min_free_gib": "0.008", "interval": 1}})
    node.storage = root
    low = 0.008 * GIB
    order = []
    for k in range(60):
        e = big_instances(str(scu_dir), 1, "free%02d" % k)[0]
        run = H.storescu(node.port, [e["abspath"]], str(scu_dir))
        assert run.all_success(), run.summary()
        order.append(e["study_instance_uid"])
        if free_bytes(small_fs) < 1.1 * low:
            break
    assert free_bytes(small_fs) < 1.1 * low and len(order) >= 5, (len(order), free_bytes(small_fs))
    time.sleep(1.5)
    assert len(study_uids(node)) == len(order)  # off until told

    node.extra_config["retention"]["delete_for_free_space"] = "yes"
    node.extra_config["retention"]["deletes_per_minute"] = 100
    node.write_config()
    reload_and_wait(node)
    wait_for(lambda: free_bytes(small_fs) >= 1.2 * low, what="free space back at 120 %")
    time.sleep(1.5)
    left = study_uids(node)
    gone = [u for u in order if u not in left]
    assert gone == order[:len(gone)], (gone, order)
    size = 540 * 1024
    assert len(gone) <= (1.2 * low - 1.1 * low) / (512 * 1024) + 3, gone
    assert free_bytes(small_fs) < 1.2 * low + 2 * size
    assert "free space below 110 % of min_free_gib" in node.log_text()
    e = big_instances(str(scu_dir), 1, "after")[0]
    assert H.storescu(node.port, [e["abspath"]], str(scu_dir)).all_success()
    assert not C.storage_problems(node)
