"""Decode benchmark: ``load_image`` against a plain ``pydicom.dcmread(p).pixel_array`` on real files.

Usage::

    python benchmarks/bench_decode.py [--repeat N] [--data DIR]

Prints a Markdown table with, per file: transfer syntax, image size, file size, the median ``load_image`` time
over N runs (everything: header, decode, Modality LUT, VOI, inversion), the decoder plugin it used, the peak
Python/numpy memory of one load (tracemalloc; memory a C decoder allocates internally is not counted), and the
"naive" median of ``dcmread(p).pixel_array`` (pydicom's default plugin order, no LUTs), or why that fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

from pneumoview.errors import ImageReadError  # noqa: E402
from pneumoview.imaging import load_image  # noqa: E402

ROBUSTNESS = (
    "pydicom/CT_small.dcm",
    "pydicom/MR_small_bigendian.dcm",
    "pydicom/MR_small_RLE.dcm",
    "pydicom/image_dfl.dcm",
    "pydicom/JPEG2000.dcm",
    "pydicom/SC_rgb_jpeg.dcm",
    "pydicom/rtdose.dcm",
    "pydicom/JPEG-lossy.dcm",
    "pydicom-data/bad_sequence.dcm",
    "fo-dicom/GH364.dcm",
    "fo-dicom/GH195.dcm",
)


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: imports, plugin discovery, file cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def _naive(path: Path) -> Callable[[], object]:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):

        def read_raster() -> object:
            with Image.open(path) as im:
                return np.asarray(im)

        return read_raster
    return lambda: pydicom.dcmread(path).pixel_array


def _syntax(path: Path) -> str:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return path.suffix.lstrip(".").upper() + " (Pillow)"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        ts = ds.file_meta.get("TransferSyntaxUID")
        return ts.name if ts else "(no file meta)"
    except Exception as exc:
        return f"unreadable: {type(exc).__name__}"


def bench(path: Path, repeat: int) -> dict[str, str]:
    row = {"file": path.name if len(path.name) <= 34 else path.name[:31] + "…", "syntax": _syntax(path)}
    row["file KB"] = f"{path.stat().st_size / 1024:.0f}"
    try:
        image = load_image(path)
    except ImageReadError as exc:
        row.update(size="–", ms="–", decoder="–", peak="–", result=f"{type(exc).__name__}")
    else:
        tracemalloc.start()
        load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        row.update(
            size=f"{image.shape[1]}×{image.shape[0]}",
            ms=f"{_median_ms(lambda: load_image(path), repeat):.1f}",
            decoder=image.metadata.get("Decoder", "pillow"),
            peak=f"{peak / 1e6:.1f}",
            result="ok",
        )
    try:
        row["naive ms"] = f"{_median_ms(_naive(path), repeat):.1f}"
    except Exception as exc:
        row["naive ms"] = f"fails ({type(exc).__name__})"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per file (median is reported)")
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # pydicom warns about the odd files on purpose

    files = sorted((args.data / "dicom" / "chest").glob("*.dcm"))
    files += [args.data / "dicom" / "robustness" / rel for rel in ROBUSTNESS]
    files += sorted((args.data / "rsna" / "images-1024").glob("*.png"))[:1]
    files += sorted((args.data / "rsna" / "images-512").glob("*.jpg"))[:1]
    columns = ["file", "syntax", "size", "file KB", "ms", "decoder", "peak", "naive ms", "result"]
    headers = {"ms": "load_image ms", "peak": "peak MB", "naive ms": "naive ms"}
    print("| " + " | ".join(headers.get(c, c) for c in columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for path in files:
        row = bench(path, args.repeat)
        print("| " + " | ".join(row.get(c, "") for c in columns) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
