#!/usr/bin/python3
"""The web benchmark's study page subject: one MR study of SERIES series
(default 20), each of PER instances (default 5), 256x256 16-bit MONOCHROME2
with real pixel data (so each series' thumbnail is rendered from an image),
explicit VR little endian Part 10 files; the attributes the study page
shows are all set (series number and description, protocol, body part,
image type, slice thickness and spacing, rows and columns, samples per
pixel, photometric interpretation, window).

Usage: gen_series.py OUTDIR [SERIES [PER]]

Deterministic: the same arguments give the same UIDs and bytes. Files are
OUTDIR/se<NN>-<k>.dcm; OUTDIR/.complete (count, bytes, study_uid) last.
"""

import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import part10_dataset  # noqa: E402

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SIZE = 256
SEQUENCES = ["LOCALIZER", "T1 SAG", "T2 AX", "FLAIR AX", "DWI B1000", "ADC", "T2* GRE AX", "SWI",
             "T1 MPRAGE", "T1 POST AX", "T1 POST COR", "T2 COR", "PERFUSION", "MRA TOF", "T2 SPACE SAG",
             "DTI", "FLAIR SAG 3D", "T1 POST SAG", "MIP", "SCREEN SAVE"]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    n_series = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    h = hashlib.sha256(("pacsnode-bench-web-series-v1:%d:%d" % (n_series, per)).encode()).hexdigest()
    root = "2.25.%d" % (int(h[:30], 16) | (1 << 116))
    study_uid = root + ".1"
    os.makedirs(outdir, exist_ok=True)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    total = count = 0
    for se in range(n_series):
        desc = SEQUENCES[se % len(SEQUENCES)]
        thick = [1.0, 3.0, 5.0][se % 3]
        spacing = thick + [0.0, 0.5, -0.5][se % 3]
        for k in range(per):
            sop_uid = "%s.3.%d.%d" % (root, se + 1, k + 1)
            ds = part10_dataset(MR_IMAGE_STORAGE, sop_uid, "ISO_IR 192")
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20251230"
            ds.StudyTime = "101500"
            ds.SeriesTime = "%02d%02d00" % (10 + (15 + 3 * se) // 60, (15 + 3 * se) % 60)
            ds.AccessionNumber = "WEBBENCH20"
            ds.Modality = "MR"
            ds.Manufacturer = "pacsnode-bench"
            ds.ReferringPhysicianName = "Müller^Jürgen"
            ds.StudyDescription = "MR BRAIN W AND W/O CONTRAST (web benchmark, %d series)" % n_series
            ds.SeriesDescription = desc
            ds.ProtocolName = desc + " PROTOCOL"
            ds.BodyPartExamined = "BRAIN"
            ds.PatientName = "Benchmark^Web=ベンチ^ウェブ"
            ds.PatientID = "WEB-BENCH-1"
            ds.PatientBirthDate = "19800101"
            ds.PatientSex = "F"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = "%s.2.%d" % (root, se + 1)
            ds.StudyID = "20"
            ds.SeriesNumber = str(se + 1)
            ds.InstanceNumber = str(k + 1)
            ds.SliceThickness = "%.1f" % thick
            ds.SpacingBetweenSlices = "%.1f" % spacing
            ds.ImagePositionPatient = ["-120.0", "-120.0", "%.1f" % (k * spacing)]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.FrameOfReferenceUID = root + ".4"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ds.Columns = SIZE
            ds.PixelSpacing = ["0.9375", "0.9375"]
            ds.BitsAllocated = 16
            ds.BitsStored = 12
            ds.HighBit = 11
            ds.PixelRepresentation = 0
            ds.WindowCenter = "600"
            ds.WindowWidth = "1200"
            # a head-like ellipse whose size changes with the slice, a
            # pattern that tells the series apart
            r2 = ((x - SIZE / 2) / (0.38 * SIZE)) ** 2 + ((y - SIZE / 2) / (0.45 * SIZE)) ** 2
            img = np.where(r2 < 1.0 - 0.05 * abs(k - per // 2), 400 + 40 * se, 0)
            img = img + ((x // (8 + se)) % 2) * 100 * (r2 < 0.5)
            rng = np.random.default_rng(se * 1000 + k)
            img = img + rng.integers(0, 30, size=(SIZE, SIZE))
            ds.PixelData = np.clip(img, 0, 4095).astype("<u2").tobytes()
            path = os.path.join(outdir, "se%02d-%d.dcm" % (se + 1, k + 1))
            ds.save_as(path, write_like_original=False)
            total += os.path.getsize(path)
            count += 1
    with open(os.path.join(outdir, ".complete"), "w") as f:
        f.write("count=%d\nbytes=%d\nstudy_uid=%s\nseries=%d\n" % (count, total, study_uid, n_series))
    print("generated %d files (%d series), %d bytes, in %s" % (count, n_series, total, outdir))


if __name__ == "__main__":
    main()
