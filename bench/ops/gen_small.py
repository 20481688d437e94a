#!/usr/bin/python3
"""Small instances for the operations benchmark: N Part-10 files of ~9 KB.

The patients, studies, series and their attributes are bench/find's model
for N (gen.py: N*3/100 patients, N/10 studies, ~3 series a study, a long
tail of large series; CR, CT, MR, US, NM and PT), each instance with a
64x64 16-bit MONOCHROME2 image of its own (a shared noise pattern, the
instance's number in its first pixels): what a node holds many of besides
CT slices (thumbnails, NM and US frames, secondary captures).

Usage: gen_small.py OUTDIR N

Files are written as OUTDIR/s<k>/<study>/<i>.dcm (as gen.py files), in
parallel processes, one shard each. OUTDIR/.complete is written last, with
the number of files and their bytes, so that an interrupted generation is
detected and redone by run.sh.
"""

import os
import random
import struct
import sys
from multiprocessing import Pool

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "find"))
import dicomenc as enc  # noqa: E402
import gen  # noqa: E402

ROWS = COLS = 64
SHARDS = 4

_M = {}


def image_module(i, noise):
    """The Image Pixel module (group 0028, then Pixel Data): after every
    tag the model writes, so it is appended to the sorted dataset."""
    px = struct.pack("<Q", i) + noise[8:]
    return (enc.element(0x00280002, struct.pack("<H", 1), "US")
            + enc.element(0x00280004, "MONOCHROME2", "CS")
            + enc.element(0x00280010, struct.pack("<H", ROWS), "US")
            + enc.element(0x00280011, struct.pack("<H", COLS), "US")
            + enc.element(0x00280100, struct.pack("<H", 16), "US")
            + enc.element(0x00280101, struct.pack("<H", 16), "US")
            + enc.element(0x00280102, struct.pack("<H", 15), "US")
            + enc.element(0x00280103, struct.pack("<H", 0), "US")
            + enc.element(0x7FE00010, px, "OW"))


def shard(k):
    m, outdir, noise = _M["m"], _M["outdir"], _M["noise"]
    files = size = 0
    for s in range(k, len(m.st_pat), SHARDS):
        p = m.st_pat[s]
        d = os.path.join(outdir, "s%d" % k, "%06d" % s)
        os.makedirs(d, exist_ok=True)
        upper = [gen.CS_ITEM] + m.patient_items(p) + m.study_items(s)
        for se in m.st_series[s]:
            ser = upper + m.series_items(se)
            for j in range(m.se_count[se]):
                i = m.se_first[se] + j
                ds = enc.dataset(ser + m.instance_items(se, j)) + image_module(i, noise)
                data = enc.part10(ds, gen.SOP_CLASS[m.se_mod[se]], m.sop_uid(i))
                with open(os.path.join(d, "%07d.dcm" % i), "wb") as f:
                    f.write(data)
                files += 1
                size += len(data)
    return files, size


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    outdir, n = sys.argv[1], int(sys.argv[2])
    _M["m"] = gen.Model(n)
    _M["outdir"] = outdir
    _M["noise"] = random.Random("pacsnode-bench-ops-small").randbytes(ROWS * COLS * 2)
    os.makedirs(outdir, exist_ok=True)
    with Pool(min(SHARDS, os.cpu_count() or 1)) as pool:   # forked: the model is shared
        got = pool.map(shard, range(SHARDS))
    files, size = sum(g[0] for g in got), sum(g[1] for g in got)
    with open(os.path.join(outdir, ".complete"), "w") as f:
        f.write("files=%d\nbytes=%d\n" % (files, size))
    print("%d files, %d bytes" % (files, size))


if __name__ == "__main__":
    main()
