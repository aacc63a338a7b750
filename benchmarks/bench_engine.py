#!/usr/bin/env python3
"""Inference latency: per model and whole pipeline, first call vs steady state, with and without flip test-time
augmentation, batch throughput, peak RSS; and, in the same run, eager PyTorch against ONNX Runtime.

Uses the installed models (``models/`` or ``--models-dir``) when they are there, else the default architectures
with random weights (timings only). Baseline in the same run: a naive seed-style loop (one image at a time, autograd
on — no ``inference_mode``/``no_grad`` —, no batching, preprocessing per call).

    .venv/bin/python benchmarks/bench_engine.py [--device cpu|cuda] [--images 16] [--models-dir DIR]
        [--runtime torch|onnx|openvino] [--compare/--no-compare] [--against onnx|openvino] [--rounds 3]
        [--compare-only]

``--runtime`` is the runtime of the first two tables (default torch, the seed-style baseline's own runtime). With
``--compare`` (the default when onnxruntime is installed and the device is the CPU) a third table times eager PyTorch
and ONNX Runtime (or OpenVINO, ``--against openvino``) on the same images, interleaved image by image and batch by batch (medians over ``--rounds``), so a
busy machine slows both alike: per stage, total, ``analyze`` one image at a time and ``analyze_batch``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "rsna"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _random_models_dir(tmp: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.model_fixtures import add_ensemble, add_model

    add_model(tmp, "rsna3-classifier", task="classify", builder="resnet18_classifier", size=128,
              builder_args={"num_classes": 3, "in_channels": 1},
              classes=["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"], positive_class="Lung Opacity")  # fmt: skip
    add_model(tmp, "seg-unet", task="segment", builder="unet", size=128,
              builder_args={"encoder": "resnet18", "in_channels": 1})  # fmt: skip
    add_model(tmp, "seg-dl", task="segment", builder="deeplabv3plus", size=128,
              builder_args={"encoder": "resnet18", "in_channels": 1})  # fmt: skip
    add_ensemble(tmp, "seg-ensemble", ["seg-unet", "seg-dl"])
    add_model(tmp, "detector", task="detect", builder="fasterrcnn_mobilenet_v3_fpn", size=256, channels=3,
              mean=0.0, std=1.0, builder_args={"num_classes": 2, "min_size": 256, "max_size": 256})  # fmt: skip
    return tmp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument(
        "--random", action="store_true", help="time the default architectures with random weights"
    )
    ap.add_argument(
        "--runtime",
        choices=("torch", "onnx", "openvino"),
        default="torch",
        help="runtime of the first tables",
    )
    ap.add_argument(
        "--against",
        choices=("onnx", "openvino"),
        default="onnx",
        help="the runtime compared with eager PyTorch",
    )
    ap.add_argument(
        "--compare", action=argparse.BooleanOptionalAction, default=None, help="eager vs ONNX Runtime"
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved comparison")
    ap.add_argument("--compare-only", action="store_true", help="only the eager-vs-ONNX table")
    args = ap.parse_args()

    import torch

    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine, StageSelection
    from pneumoview.inference.manifest import load_manifest, models_dirs
    from pneumoview.inference.runtime import onnxruntime_available
    from pneumoview.inference.torch_runtime import MODEL_CACHE
    from pneumoview.preprocess import prepare

    paths = sorted((DATA / "images-1024").glob("*.png"))[: args.images]
    images = [load_image(p) for p in paths]
    dirs = models_dirs(args.models_dir)
    manifest = load_manifest(dirs)
    source = "installed models"
    selection = StageSelection()
    if args.random or "rsna3-classifier" not in manifest.models or "seg-ensemble" not in manifest.ensembles:
        tmp = Path(tempfile.mkdtemp())
        dirs = [_random_models_dir(tmp)]
        manifest = load_manifest(dirs)
        source = "default architectures with random weights"
    elif "detector" not in manifest.models:
        selection = StageSelection(detect=None)
        source = "installed models (no detector installed: detection not timed)"
    if args.random and args.runtime != "torch":
        ap.error("--random runs on torch only")
    engine = Engine(
        manifest, device=args.device, models_dir=dirs[0], selection=selection, runtime=args.runtime
    )
    print(f"runtime {engine.runtime}, device {engine.device}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {len(images)} real 1024-px RSNA images, {source}")  # fmt: skip

    if args.compare_only:
        _compare(images, manifest, dirs[0], selection, args.rounds, args.against)
        return 0
    rows = []
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    first = engine.analyze(images[0])
    rows.append(("first call (after model load)", first.timings_ms["total"], None))
    steady = [engine.analyze(im) for im in images[1:]]
    for stage in ("classify", "segment", "detect", "total"):
        vals = [r.timings_ms[stage] for r in steady if stage in r.timings_ms]
        if not vals:
            continue
        rows.append((f"steady {stage}", statistics.median(vals), max(vals)))
    # Flip test-time augmentation (Engine(tta=True)): same models from the cache, each stage runs twice.
    tta_engine = Engine(
        manifest, device=args.device, models_dir=dirs[0], selection=selection, tta=True, runtime=args.runtime
    )
    tta_steady = [tta_engine.analyze(im) for im in images[1:]]
    for stage in ("classify", "segment", "detect", "total"):
        vals = [r.timings_ms[stage] for r in tta_steady if stage in r.timings_ms]
        if vals:
            rows.append((f"steady {stage}, flip TTA", statistics.median(vals), max(vals)))
    t0 = time.perf_counter()
    engine.analyze_batch(images, batch_size=8)
    batch_s = time.perf_counter() - t0

    # Naive seed-style loop: same models, one image at a time, autograd on, no batching.
    specs = [engine.stage_specs(s) for s in ("classify", "segment", "detect")]
    models = [[(spec, MODEL_CACHE.get(spec, engine.device, dirs, False)) for spec, _ in st] for st in specs]
    t0 = time.perf_counter()
    for im in images:
        for st in models:
            for spec, model in st:
                x, _ = prepare(im.display, spec.input)
                xt = torch.from_numpy(x)[None].to(engine.device)
                if spec.task == "detect":
                    model([xt[0]])
                else:
                    model(xt)
    naive_s = time.perf_counter() - t0
    steady_total = sum(r.timings_ms["total"] for r in steady) / 1000

    print()
    print(f"| {'measure':34s} | {'ms (median)':>11s} | {'ms (max)':>9s} |")
    print(f"|{'-' * 36}|{'-' * 13}|{'-' * 11}|")
    for name, med, mx in rows:
        print(f"| {name:34s} | {med:11.1f} | {'' if mx is None else f'{mx:9.1f}':>9s} |")
    n = len(images)
    print()
    print(f"| {'path':42s} | {'images/s':>8s} | {'vs naive':>8s} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 10}|")
    print(f"| {'naive seed-style loop (autograd, 1 by 1)':42s} | {n / naive_s:8.2f} | {1.0:8.2f} |")
    print(f"| {'engine.analyze, one image at a time':42s} | {(n - 1) / steady_total:8.2f} | "
          f"{((n - 1) / steady_total) / (n / naive_s):8.2f} |")  # fmt: skip
    print(
        f"| {'engine.analyze_batch (batch 8)':42s} | {n / batch_s:8.2f} | {(n / batch_s) / (n / naive_s):8.2f} |"
    )
    print()
    print(f"model load {load_s:.2f} s; peak RSS {_rss_mb():.0f} MB")
    if engine.device.startswith("cuda"):
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    compare = args.compare if args.compare is not None else onnxruntime_available() and engine.device == "cpu"
    if compare and not args.random:
        _compare(images, manifest, dirs[0], selection, args.rounds, args.against)
    return 0


def _compare(images, manifest, models_dir, selection, rounds: int, other: str = "onnx") -> None:
    """Eager PyTorch vs ``other`` (ONNX Runtime or OpenVINO), interleaved: per stage and total (one image at a
    time), and batches of 8."""
    import importlib

    from pneumoview.inference.engine import Engine

    package = {"onnx": "onnxruntime", "openvino": "openvino"}[other]
    label = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}[other]
    version = importlib.import_module(package).__version__
    engines = {
        rt: Engine(manifest, device="cpu", models_dir=models_dir, selection=selection, runtime=rt)
        for rt in ("torch", other)
    }
    for e in engines.values():  # load (and, for onnx, export into the cache when needed) before timing
        e.analyze(images[0])
    stages = ("classify", "segment", "detect", "total")
    med, batch = interleaved(engines, images, rounds, stages)
    print()
    print(f"eager PyTorch vs {label} {version} (CPU, {len(images)} images × {rounds} rounds, "
          "interleaved; medians)")  # fmt: skip
    print(f"| {'measure':34s} | {'eager':>9s} | {other:>9s} | {'speed-up':>8s} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 11}|{'-' * 10}|")
    for s in stages:
        if s in med["torch"]:
            a, b = med["torch"][s], med[other][s]
            print(f"| {'ms per image, ' + s:34s} | {a:9.1f} | {b:9.1f} | {a / b:7.2f}× |")
    one = {rt: 1000.0 / med[rt]["total"] for rt in engines}
    print(f"| {'analyze one at a time, images/s':34s} | {one['torch']:9.2f} | {one[other]:9.2f} | "
          f"{one[other] / one['torch']:7.2f}× |")  # fmt: skip
    bt, bo = statistics.median(batch["torch"]), statistics.median(batch[other])
    print(f"| {'analyze_batch (batch 8), images/s':34s} | {bt:9.2f} | {bo:9.2f} | {bo / bt:7.2f}× |")


def interleaved(engines: dict, images: list, rounds: int, stages: tuple[str, ...]) -> tuple[dict, dict]:
    """Time ``engines`` image by image and batch by batch, alternating their order each round so a busy machine
    slows them alike: ``(median ms per stage by engine, batch-8 images/s per round by engine)``."""
    per: dict[str, dict[str, list[float]]] = {name: {s: [] for s in stages} for name in engines}
    batch: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(rounds):
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for im in images:
            for name in order:
                t = engines[name].analyze(im).timings_ms
                for s in stages:
                    if s in t:
                        per[name][s].append(t[s])
        for name in order:
            t0 = time.perf_counter()
            engines[name].analyze_batch(images, batch_size=8)
            batch[name].append(len(images) / (time.perf_counter() - t0))
    med = {name: {s: statistics.median(v) for s, v in d.items() if v} for name, d in per.items()}
    return med, batch


if __name__ == "__main__":
    raise SystemExit(main())
