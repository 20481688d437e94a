"""Deflated datasets (PS3.5 A.5) from the wire: stored as received, indexed
without holding in memory what they inflate to, and refused with 0xA700
beyond [storage] max_inflated_mib, leaving nothing behind.

A few hundred kilobytes of deflated zeros inflate to hundreds of megabytes;
dcmtk reads every value of a deflated stream into memory, so before the
node inflated into a scratch file such an instance made its worker that
big (a 1.5 MB one: 1.5 GB), and a few at once could bring in the OOM
killer."""

import os
import resource
import struct
import zlib

import findscu_util
import pacsnode_checks as C
import pacsnode_harness as H
import rawscu
from pacsnode_harness import gen_corpus

DEFLATED = "1.2.840.10008.1.2.1.99"
CT = "1.2.840.10008.5.1.4.1.1.2"
LIMIT_MIB = 128
COMMENTS = "".join("note-%04d;" % i for i in range(600))


def deflated_dataset(sop_uid, zeros_mib):
    """UIDs, a private OB value of zeros_mib MiB of zeros, then a 6,000
    character ImageComments: explicit VR little endian, raw-deflated and
    padded to even length, as a sender puts it on the wire."""
    el = rawscu.explicit_element
    head = (el(0x0008, 0x0016, "UI", CT.encode()) + el(0x0008, 0x0018, "UI", sop_uid.encode())
            + el(0x0010, 0x0010, "PN", b"Deflate^Zeros") + el(0x0010, 0x0020, "LO", b"PN-DEFLATE")
            + el(0x0019, 0x0010, "LO", b"PNTEST")
            + struct.pack("<HH2sHI", 0x0019, 0x1010, b"OB", 0, zeros_mib << 20))
    tail = (el(0x0020, 0x000D, "UI", gen_corpus.make_uid(0, "deflate-study").encode())
            + el(0x0020, 0x000E, "UI", gen_corpus.make_uid(0, "deflate-series").encode())
            + el(0x0020, 0x4000, "LT", COMMENTS.encode()))
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = [z.compress(head)]
    mib = bytes(1 << 20)
    out += [z.compress(mib) for _ in range(zeros_mib)]
    out += [z.compress(tail), z.flush()]
    data = b"".join(out)
    return data + b"\0" if len(data) % 2 else data


def worker_peaks(node):
    """{pid: VmHWM in KiB} of the node's processes."""
    out = {}
    for pid in node._group_members():
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        out[pid] = int(line.split()[1])
        except OSError:
            pass
    return out


def test_deflated_zeros_are_stored_in_bounded_memory_and_refused_beyond_the_limit(node_factory):
    node = node_factory(extra_config={"storage": {"max_inflated_mib": LIMIT_MIB}})
    below = gen_corpus.make_uid(0, "deflate-below")
    above = gen_corpus.make_uid(0, "deflate-above")
    small = gen_corpus.make_uid(0, "deflate-small")
    sent = {below: deflated_dataset(below, 96), above: deflated_dataset(above, 160),
            small: deflated_dataset(small, 0)}
    assert len(sent[above]) < 400 * 1024
    before = worker_peaks(node)
    a = rawscu.Association(node.host, node.port, timeout=60)
    try:
        a.associate("PNDEFLATE", node.aet, CT, transfer=DEFLATED)
        assert a.c_store(CT, below, sent[below], msg_id=1) == H.SUCCESS
        # the association goes on after the refusal
        assert a.c_store(CT, above, sent[above], msg_id=2) == 0xA700
        assert a.c_store(CT, small, sent[small], msg_id=3) == H.SUCCESS
        a.release()
    finally:
        a.close()
    after = worker_peaks(node)
    grown = {pid: after[pid] - before.get(pid, 0) for pid in after}
    # 96 MiB (and 160) inflated: each worker must have stayed far below
    assert max(grown.values()) < 32 * 1024, "VmHWM grew by KiB: %s" % grown

    rows = {r["sop_uid"]: r for r in node.query(
        "SELECT sop_uid, path, transfer_syntax_uid, attrs FROM instance")}
    assert set(rows) == {below, small}
    for uid in (below, small):
        r = rows[uid]
        assert r["transfer_syntax_uid"] == DEFLATED
        # stored as received: the deflated bytes, value for value
        assert rawscu.dataset_bytes(os.path.join(node.storage, r["path"])) == sent[uid]
        # the text after the zeros reached the index whole
        assert findscu_util.read_identifier(bytes(r["attrs"])).ImageComments == COMMENTS
    problems = C.storage_problems(node)
    assert not problems, problems
    assert node.wait_for_log(r"refused \(0xA700\): the deflated dataset inflates to more than "
                             r"max_inflated_mib \(%d MiB\)" % LIMIT_MIB), "no log line for the refusal"


def test_scratch_file_that_cannot_be_written_is_0xa700_not_the_limit(node_factory):
    """The scratch file hits the node's RLIMIT_FSIZE (1 MiB; the received
    file, a few KB, does not): 0xA700 saying so, not the max_inflated_mib
    message, and nothing left behind."""
    def fsize_1mib():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    node = node_factory(preexec_fn=fsize_1mib)
    uid = gen_corpus.make_uid(0, "deflate-fsize")
    a = rawscu.Association(node.host, node.port, timeout=60)
    try:
        a.associate("PNDEFLATE", node.aet, CT, transfer=DEFLATED)
        assert a.c_store(CT, uid, deflated_dataset(uid, 4), msg_id=1) == 0xA700
        a.release()
    finally:
        a.close()
    assert node.wait_for_log(r"refused \(0xA700\): could not read the dataset back: File too large"), \
        "no log line for the scratch file"
    assert "max_inflated_mib" not in node.log_text()
    assert node.count("instance") == 0
    problems = C.storage_problems(node)
    assert not problems, problems
