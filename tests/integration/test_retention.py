"""Keeping the disk from filling (issue 21, retention and quota): below
[retention] min_free_gib a C-STORE is refused with 0xA700 before a byte
of it is written, never after a torn write.

The storage is a small ext4 file system of its own (a loop-mounted image
in the test's folder), so that "full" is reached in seconds and the rest
of the machine is not touched.
"""

import os
import shutil
import subprocess

import pydicom
import pytest

import pacsnode_checks as C
import pacsnode_harness as H
from pacsnode_harness import gen_corpus

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
