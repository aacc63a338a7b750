#!/usr/bin/env python3
"""``pneumoview predict`` throughput: the overlapped pipeline versus one step after the other, and flat memory.

Inputs: real 512-px RSNA JPEGs from ``../shared/data/rsna/images-512``, repeated through symbolic links in a
temporary folder (so any count can be made without copying pixels). Models: the installed ones (``models/`` or
``--models-dir``).

* Throughput: ``iter_batch(..., overlap=False)`` and ``overlap=True`` over ``--images`` inputs with annotated PNGs,
  ``--repeats`` times each, interleaved (A B, B A, …) into fresh output folders; the median wall time of each. Both
  run the models in eager PyTorch (what ``predict`` did before the graph runtimes). ``--runtime openvino`` (or
  ``onnx``) adds a third path, overlapped on that runtime, in the same rounds, and checks that its
  ``submission.csv`` is the same as the sequential eager one's (the issue's "same outputs").
* Memory: peak RSS (``ru_maxrss``) of a fresh process running the overlapped ``predict`` path (on ``--runtime``
  when given, else eager) over ``--rss-small`` and over ``--rss-large`` inputs (``--rss-large 0`` skips it,
  ``--images 0`` skips the throughput table); flat memory means the two are within 10 %.

    .venv/bin/python benchmarks/bench_predict.py [--images 200] [--repeats 3] [--rss-small 100] [--rss-large 1000]
        [--models-dir DIR | --tiny-models] [--runtime openvino|onnx]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "rsna" / "images-512"


def make_inputs(folder: Path, n: int) -> list[Path]:
    """``n`` symbolic links to the real RSNA JPEGs, cycling through them."""
    sources = sorted(DATA.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        link = folder / f"in{i:05d}.jpg"
        if not link.exists():
            link.symlink_to(sources[i % len(sources)])
        out.append(link)
    return out


def _engine(models_dir: Path | None, runtime: str = "torch"):
    from pneumoview.inference.engine import Engine

    engine = Engine(device="cpu", models_dir=models_dir, runtime=runtime)
    engine.load()
    return engine


def run_once(engine, inputs: list[Path], out: Path, overlap: bool) -> float:
    from pneumoview.batch import BatchInput, iter_batch

    batch = [BatchInput(p) for p in inputs]
    t0 = time.perf_counter()
    for _ in iter_batch(batch, out, engine, force=True, overlap=overlap):
        pass
    return time.perf_counter() - t0


def rss_child(n: int, models_dir: Path | None, runtime: str = "torch") -> None:
    """Run the overlapped path over ``n`` inputs and print the peak RSS in MiB (the --rss-child mode)."""
    with tempfile.TemporaryDirectory(prefix="bench_predict_rss_") as tmp:
        inputs = make_inputs(Path(tmp) / "in", n)
        engine = _engine(models_dir, runtime)
        run_once(engine, inputs, Path(tmp) / "out", overlap=True)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-small", type=int, default=100)
    ap.add_argument("--rss-large", type=int, default=1000)
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument(
        "--tiny-models",
        action="store_true",
        help="use the tests' tiny models (as a fast GPU would: decoding and PNG writing then dominate)",
    )
    ap.add_argument(
        "--runtime",
        choices=("openvino", "onnx"),
        default=None,
        help="also run the overlapped path on this graph runtime and compare it with sequential eager PyTorch",
    )
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny_models and args.models_dir is None and args.rss_child is None:
        from tests.model_fixtures import equivariant_models_dir

        args.models_dir = equivariant_models_dir(Path(tempfile.mkdtemp(prefix="bench_predict_models_")))
    if args.rss_child is not None:
        if args.tiny_models:
            import tests.model_fixtures  # noqa: F401 - registers the tiny models' builders

        rss_child(args.rss_child, args.models_dir, args.runtime or "torch")
        return 0
    if args.images > 0:
        throughput(args)
    if args.rss_large > 0:  # --rss-large 0: throughput only
        memory(args)
    return 0


def throughput(args: argparse.Namespace) -> None:
    """The throughput table (module doc)."""
    import torch

    engine = _engine(args.models_dir)
    graph = _engine(args.models_dir, args.runtime) if args.runtime else None
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"{args.images} inputs (real 512-px RSNA JPEGs via links), annotated PNGs on, "
        f"{'tiny test models' if args.tiny_models else 'installed models'}; "
        f"median of {args.repeats} interleaved runs"
    )
    # path name -> (engine, overlap); the first is the baseline every ratio is taken against
    paths: dict[str, tuple[object, bool]] = {
        "sequential (decode, models, PNG in turn)": (engine, False),
        "overlapped (reader, models, writer)": (engine, True),
    }
    if graph is not None:
        paths[f"overlapped, {args.runtime} models"] = (graph, True)
    names = list(paths)
    walls: dict[str, list[float]] = {name: [] for name in names}
    same: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        inputs = make_inputs(Path(tmp) / "in", args.images)
        for eng in {id(e): e for e, _ in paths.values()}.values():
            run_once(eng, inputs[:8], Path(tmp) / f"warm-{id(eng)}", overlap=False)  # first-call costs out
        for r in range(args.repeats):
            for k, name in enumerate(names if r % 2 == 0 else reversed(names)):
                eng, overlap = paths[name]
                out = Path(tmp) / f"out-{r}-{k}"
                walls[name].append(run_once(eng, inputs, out, overlap))
                if r == 0 and k > 0:  # round 0 runs the baseline first, into out-0-0
                    reference = (Path(tmp) / "out-0-0" / "submission.csv").read_bytes()
                    same[name] = (out / "submission.csv").read_bytes() == reference
    base = statistics.median(walls[names[0]])
    print()
    print(f"| {'predict path':40s} | {'wall s':>7s} | {'images/s':>8s} | {'vs sequential':>13s} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 10}|{'-' * 15}|")
    for name in names:
        wall = statistics.median(walls[name])
        print(f"| {name:40s} | {wall:7.2f} | {args.images / wall:8.2f} | {base / wall:13.2f} |")
    for name, ok in same.items():
        print(f"{name}: submission.csv {'identical to' if ok else 'DIFFERS from'} the sequential path's")


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of fresh processes over ``--rss-small`` and ``--rss-large`` inputs, on ``--runtime`` when given."""
    peaks = {}
    for n in (args.rss_small, args.rss_large):
        cmd = [sys.executable, __file__, "--rss-child", str(n)]
        if args.models_dir is not None:
            cmd += ["--models-dir", str(args.models_dir)]
        if args.tiny_models:
            cmd.append("--tiny-models")
        if args.runtime:
            cmd += ["--runtime", args.runtime]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        peaks[n] = float(done.stdout.strip().splitlines()[-1])
    print()
    print(f"| {'inputs (overlapped, ' + (args.runtime or 'torch') + ')':30s} | {'peak RSS MiB':>12s} |")
    print(f"|{'-' * 32}|{'-' * 14}|")
    for n, mib in peaks.items():
        print(f"| {n:30d} | {mib:12.0f} |")
    small, large = peaks[args.rss_small], peaks[args.rss_large]
    print(
        f"peak RSS for {args.rss_large} inputs is {100 * (large - small) / small:+.1f} % of that for {args.rss_small}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
