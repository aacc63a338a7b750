"""Folder-scan speed: ``pneumoview.study_index.scan`` versus reading every file in full.

Run: ``.venv/bin/python benchmarks/bench_scan.py [--files 2000] [--radiographs 200] [--repeats 7] [--keep DIR]``

Builds a folder of ``--files`` files in a temporary directory: plain copies (no links) of real DICOMs from
``../shared/data/dicom/chest`` and ``../shared/data/dicom/robustness`` — JPEG-baseline, JPEG 2000,
uncompressed and no-preamble chest radiographs, small CT/MR/RLE/deflated/big-endian images, an RT dose, RT
plans, an ECG waveform and truncated files — shuffled (fixed seed) into 20 sub-folders, half of the names
without ``.dcm``. Then, in the same run and on the same (page-cached) files, it times:

* ``scan()``: PneumoView's header-only scan (what the browser and ``pneumoview scan`` use);
* ``dcmread(stop_before_pixels)``: a plain pydicom header read of every file, for reference;
* naive: ``pydicom.dcmread(p, force=True)`` and ``.pixel_array`` (where it decodes) for every file.

A second folder holds ``--radiographs`` full-size chest radiographs only (JPEG baseline and raw 1024², raw
440², JPEG 2000 and JPEG-LS 1955x1841), as a real chest X-ray folder would.

Reported: wall time (median of ``--repeats`` runs of scan() and dcmread, interleaved so that a loaded machine
slows both alike; one run of the naive read), files/s, time to the first result, peak Python memory
(tracemalloc, measured in a separate pass so it does not slow the timed one), and the speed ratios.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pydicom  # noqa: E402

from pneumoview.study_index import ScanError, scan  # noqa: E402

DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"

# (file under ../shared/data/dicom, relative weight): mostly small files, a realistic share of radiographs.
SOURCES: tuple[tuple[str, int], ...] = (
    ("chest/siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", 60),  # JPEG baseline 1024²
    ("chest/Fake_MONOHR1.dcm", 40),
    ("chest/fo-dicom_CR-MONO1-10-chest.dcm", 30),  # no preamble, no file meta
    ("chest/WG04_RG3_J2KI_nonchest.dcm", 20),  # JPEG 2000 1760²
    ("chest/nih-cxr14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm", 20),  # 1 MB raw
    ("robustness/pydicom/CT_small.dcm", 250),
    ("robustness/pydicom/MR_small_RLE.dcm", 200),
    ("robustness/pydicom/MR_small_bigendian.dcm", 200),
    ("robustness/pydicom/JPEG2000.dcm", 150),
    ("robustness/pydicom/JPEG-lossy.dcm", 100),
    ("robustness/pydicom/SC_rgb_small_odd.dcm", 150),
    ("robustness/pydicom/image_dfl.dcm", 150),  # deflated
    ("robustness/pydicom/rtdose.dcm", 100),  # 15 frames
    ("robustness/pydicom/waveform_ecg.dcm", 30),  # non-image
    ("robustness/pydicom/rtplan_truncated.dcm", 100),  # non-image
    ("robustness/fo-dicom/GH195.dcm", 50),  # JPEG extended RGB
    ("robustness/fo-dicom/1403-OB.dcm", 50),
    ("robustness/pydicom/dicomdirtests/77654033/CT2/17106", 250),
    ("robustness/pydicom/MR_truncated.dcm", 50),  # broken: pixel data short
)


# A second, smaller folder of full-size radiographs only: what a real chest X-ray folder looks like.
RADIOGRAPHS: tuple[tuple[str, int], ...] = (
    ("chest/siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", 40),  # JPEG baseline 1024²
    ("chest/nih-cxr14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm", 20),  # raw 1024²
    ("chest/fo-dicom_CR-MONO1-10-chest.dcm", 20),  # raw 440², no preamble
    ("chest/WG04_RG1_J2KI.dcm", 10),  # JPEG 2000 1955x1841
    ("chest/WG04_RG1_JLSN.dcm", 10),  # JPEG-LS 1955x1841
)


def build_folder(root: Path, n_files: int, sources: tuple[tuple[str, int], ...], seed: int = 0) -> list[Path]:
    total = sum(w for _, w in sources)
    plan: list[Path] = []
    for name, weight in sources:
        plan += [DICOM / name] * max(1, round(n_files * weight / total))
    plan = (plan * (n_files // len(plan) + 1))[:n_files]
    random.Random(seed).shuffle(plan)
    out = []
    for i, source in enumerate(plan):
        folder = root / f"series_{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (f"IM{i:05d}.dcm" if i % 2 else f"IM{i:05d}")
        shutil.copyfile(source, target)
        out.append(target)
    return sorted(out)


def run_scan(folder: Path, files: list[Path]) -> Iterator[bool]:
    for item in scan(folder):
        yield not isinstance(item, ScanError)


def run_headers(folder: Path, files: list[Path]) -> Iterator[bool]:
    for path in files:
        try:
            pydicom.dcmread(path, stop_before_pixels=True, force=True)
            yield True
        except Exception:
            yield False


def run_naive(folder: Path, files: list[Path]) -> Iterator[bool]:
    for path in files:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:
            yield False
            continue
        try:
            ds.pixel_array  # noqa: B018 - decoding is the point
            yield True
        except Exception:
            yield False


def timed(fn: Callable[[Path, list[Path]], Iterator[bool]], folder: Path, files: list[Path]) -> dict:
    """One timed run: files, successes, wall time and time to the first result."""
    start = time.perf_counter()
    results = fn(folder, files)
    first_ok = next(results)
    first = time.perf_counter() - start
    oks = [first_ok, *results]
    return {"n": len(oks), "ok": sum(oks), "wall": time.perf_counter() - start, "first": first}


def peak(fn: Callable[[Path, list[Path]], Iterator[bool]], folder: Path, files: list[Path]) -> int:
    """Peak Python memory of one run (tracemalloc, in a separate untimed pass)."""
    tracemalloc.start()
    for _ in fn(folder, files):
        pass
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def measure_interleaved(
    fns: list[Callable[[Path, list[Path]], Iterator[bool]]], folder: Path, files: list[Path], repeats: int
) -> list[dict]:
    """Median of ``repeats`` runs of each function, interleaved (A B, B A, …) so that a loaded machine slows them
    alike; the first-result time is the median too."""
    runs: list[list[dict]] = [[] for _ in fns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(repeats):
            order = list(range(len(fns))) if r % 2 == 0 else list(reversed(range(len(fns))))
            for i in order:
                runs[i].append(timed(fns[i], folder, files))
        out = []
        for fn, fn_runs in zip(fns, runs, strict=True):
            m = dict(fn_runs[0])
            m["wall"] = statistics.median(x["wall"] for x in fn_runs)
            m["first"] = statistics.median(x["first"] for x in fn_runs)
            m["peak"] = peak(fn, folder, files)
            out.append(m)
    return out


def report(title: str, root: Path, files: list[Path], repeats: int) -> None:
    size = sum(p.stat().st_size for p in files)
    print(f"\n{title}: {len(files)} files, {size / 2**20:.1f} MiB")
    scanned, headers = measure_interleaved([run_scan, run_headers], root, files, repeats)
    naive = measure_interleaved([run_naive], root, files, 1)[0]
    rows = [
        ("scan() (PneumoView)", scanned, "entries"),
        ("dcmread(stop_before_pixels)", headers, "read"),
        ("naive dcmread + pixel_array", naive, "decoded"),
    ]
    print(f"| {'method':<28} | {'wall s':>7} | {'files/s':>8} | {'first ms':>8} | {'peak MiB':>8} | result |")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for name, m, what in rows:
        print(
            f"| {name:<28} | {m['wall']:7.2f} | {m['n'] / m['wall']:8.0f} | {m['first'] * 1000:8.1f} | "
            f"{m['peak'] / 2**20:8.2f} | {m['ok']} {what} of {m['n']} |"
        )
    print(
        f"scan() runs at {headers['wall'] / scanned['wall']:.2f}x the speed of dcmread(stop_before_pixels) "
        f"(median of {repeats} interleaved runs) and {naive['wall'] / scanned['wall']:.1f}x the naive full read "
        "and decode (one run)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=2000, help="number of files in the test folder")
    parser.add_argument("--radiographs", type=int, default=200, help="files in the radiograph-only folder")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed runs of scan() and dcmread")
    parser.add_argument("--keep", type=Path, default=None, help="build the folder here and keep it")
    args = parser.parse_args()

    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_scan_")
        root = Path(tmp.name)
    else:
        root = args.keep
    try:
        print(
            f"python {platform.python_version()}, pydicom {pydicom.__version__}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, 1 thread; wall = median of interleaved runs"
        )
        mixed = build_folder(root / "mixed", args.files, SOURCES)
        report(f"mixed folder ({len(SOURCES)} real sources)", root / "mixed", mixed, args.repeats)
        radiographs = build_folder(root / "radiographs", args.radiographs, RADIOGRAPHS)
        report(
            "radiographs only (1024², 440², 1955x1841 J2K/JPEG-LS)",
            root / "radiographs",
            radiographs,
            args.repeats,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
