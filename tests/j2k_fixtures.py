"""A 2048 × 2048 JPEG 2000 chest radiograph, derived from the real WG04 RG1 CR in ../shared/data (for tests and
``benchmarks/bench_gui.py``; made in a temporary folder, never committed).

The source is a Philips CR chest PA, 1955 × 1841, 15-bit MONOCHROME1, JPEG 2000 lossy. It is resized to
2048 × 2048 (bilinear) and encoded lossless (JPEG 2000 Lossless, pylibjpeg-openjpeg: 5/3 wavelet, 5 decomposition
levels) — a typical size and encoding for a CR/DX image from a PACS. The source has no pixel spacing; the copy
gets a Pixel Spacing of 0.175 mm (made up, in the usual range for CR) so that lengths can be checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import uid as dcm_uid
from pydicom.uid import generate_uid

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RG1_J2K = SHARED / "dicom" / "chest" / "WG04_RG1_J2KI.dcm"
SIDE = 2048


def make_2k_j2k(dest: Path, copies: int = 1) -> list[Path]:
    """Write ``copies`` 2048² JPEG 2000 Lossless DICOM files into ``dest`` (same pixels, distinct SOP Instance
    UIDs) and return their paths. Takes about 1.5 s (one encode)."""
    dest.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(RG1_J2K)
    src = ds.pixel_array.astype(np.int32)
    big = np.asarray(Image.fromarray(src, mode="I").resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    ds.Rows, ds.Columns = SIDE, SIDE
    ds.PixelSpacing = [0.175, 0.175]
    ds.compress(dcm_uid.JPEG2000Lossless, big.astype(np.uint16), encoding_plugin="pylibjpeg")
    out = []
    for i in range(copies):
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = dest / f"cr-2k-j2k-{i + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out
