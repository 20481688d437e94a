#!/usr/bin/python3
"""Generate N distinct synthetic CT instances for the store benchmark.

One patient, one study, one series; every instance has its own SOP Instance
UID, InstanceNumber, slice position and pixel data (512x512, 16 bit signed,
MONOCHROME2), written as DICOM Part 10 files in Explicit VR Little Endian.

Usage: gen_data.py OUTDIR COUNT

Files are written as OUTDIR/ct-NNNNN.dcm. A file OUTDIR/.complete is written
last, so an interrupted generation is detected and redone by run.sh.
"""

import os
import sys
import uuid
from multiprocessing import Pool

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import part10_dataset  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ROWS = COLS = 512

# Filled in by init() in every worker process.
_G = {}


def init(outdir, root):
    # A smooth "phantom" (a water disc in air) shared by all instances; each
    # instance adds its own noise so no two pixel data payloads are equal.
    y, x = np.mgrid[0:ROWS, 0:COLS]
    r2 = (x - COLS / 2) ** 2 + (y - ROWS / 2) ** 2
    phantom = np.where(r2 < (0.42 * COLS) ** 2, 1024, 0).astype(np.int16)
    _G.update(outdir=outdir, root=root, phantom=phantom)


def make(i):
    root = _G["root"]
    sop_uid = "%s.3.%d" % (root, i + 1)

    ds = part10_dataset(CT_IMAGE_STORAGE, sop_uid, "ISO_IR 100")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = "20240101"
    ds.SeriesDate = "20240101"
    ds.ContentDate = "20240101"
    ds.StudyTime = "120000"
    ds.SeriesTime = "120000"
    ds.ContentTime = "120000.%06d" % i
    ds.AccessionNumber = "BENCH0001"
    ds.Modality = "CT"
    ds.Manufacturer = "pacsnode-bench"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Store benchmark"
    ds.SeriesDescription = "Synthetic axial CT"
    ds.PatientName = "BENCH^STORE"
    ds.PatientID = "BENCH-STORE-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.StudyInstanceUID = root + ".1"
    ds.SeriesInstanceUID = root + ".2"
    ds.StudyID = "1"
    ds.SeriesNumber = "1"
    ds.InstanceNumber = str(i + 1)
    ds.ImagePositionPatient = ["-250.0", "-250.0", "%.1f" % (0 - i)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = root + ".4"
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = "%.1f" % (0 - i)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLS
    ds.PixelSpacing = ["0.9765625", "0.9765625"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"

    rng = np.random.default_rng(i)
    noise = rng.integers(-20, 21, size=(ROWS, COLS), dtype=np.int16)
    pixels = (_G["phantom"] + noise).astype("<i2")
    ds.PixelData = pixels.tobytes()

    path = os.path.join(_G["outdir"], "ct-%05d.dcm" % i)
    ds.save_as(path, write_like_original=False)
    return os.path.getsize(path)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen_data.py OUTDIR COUNT")
    outdir, count = sys.argv[1], int(sys.argv[2])
    if count < 1:
        sys.exit("COUNT must be >= 1")
    os.makedirs(outdir, exist_ok=True)
    # 2.25.<128-bit integer> is the UUID-derived UID form (PS3.5 B.2);
    # a fresh root per generated data set.
    root = "2.25.%d" % uuid.uuid4().int
    procs = max(1, min(os.cpu_count() or 1, 4))
    with Pool(procs, initializer=init, initargs=(outdir, root)) as pool:
        sizes = pool.map(make, range(count), chunksize=32)
    with open(os.path.join(outdir, ".complete"), "w") as f:
        f.write("count=%d\nbytes=%d\nstudy_uid=%s.1\n" % (count, sum(sizes), root))
    print("generated %d files, %d bytes, in %s" % (count, sum(sizes), outdir))


if __name__ == "__main__":
    main()
