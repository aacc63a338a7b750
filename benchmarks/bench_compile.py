#!/usr/bin/env python3
"""``torch.compile`` (inductor) against eager PyTorch on the CPU: the shipped pipeline, interleaved in one run.

Issue #15 asks for the CPU runtime to be chosen by measuring; OpenVINO and ONNX Runtime are timed by
``bench_engine.py``. This times the same engine with its torch modules wrapped in ``torch.compile`` (one compiled
wrapper per model, static shapes), against the same engine in eager mode: the compile time (first call), per stage
and total ms per image one image at a time, ``analyze_batch`` throughput, and how far the outputs moved (class
probabilities, probability maps, detector boxes matched by IoU). Not a runtime PneumoView offers: the table says
whether it should be.

    .venv/bin/python benchmarks/bench_compile.py [--images 8] [--rounds 2] [--mode default|max-autotune-no-cudagraphs]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine import interleaved  # noqa: E402 - the same interleaving as bench_engine's comparison

DATA = ROOT.parent / "shared" / "data" / "rsna"
STAGES = ("classify", "segment", "detect", "total")


def _compiled_backend(device: str, mode: str) -> Any:
    import torch

    from pneumoview.inference.torch_runtime import TorchBackend

    class CompiledBackend(TorchBackend):
        """Eager PyTorch's backend, handing out one ``torch.compile`` wrapper per loaded module."""

        def __init__(self) -> None:
            super().__init__(device)
            self._wrapped: dict[int, Any] = {}

        def load(self, spec, dirs, random_weights):  # type: ignore[no-untyped-def]
            module = super().load(spec, dirs, random_weights)
            if id(module) not in self._wrapped:
                self._wrapped[id(module)] = torch.compile(module, mode=mode, dynamic=False)
            return self._wrapped[id(module)]

    return CompiledBackend()


def _box_iou_matched(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest best-match IoU of every box of ``a`` (xywh) against ``b``; 1.0 when both are empty."""
    from pneumoview.boxes import iou_matrix, xywh_to_xyxy

    if len(a) == 0 and len(b) == 0:
        return 1.0
    if len(a) == 0 or len(b) == 0:
        return 0.0
    return float(iou_matrix(xywh_to_xyxy(a), xywh_to_xyxy(b)).max(axis=1).min())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mode", default="default", help="torch.compile mode")
    ap.add_argument("--models-dir", type=Path, default=None)
    args = ap.parse_args()

    import warnings

    import torch

    # torchvision's fake-tensor rules for nms use a name torch deprecated; one warning per traced call
    warnings.filterwarnings("ignore", category=FutureWarning, module="torchvision")
    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine
    from pneumoview.inference.manifest import load_manifest, models_dirs

    paths = sorted((DATA / "images-1024").glob("*.png"))[: args.images]
    images = [load_image(p) for p in paths]
    dirs = models_dirs(args.models_dir)
    manifest = load_manifest(dirs)
    engines = {
        name: Engine(manifest, device="cpu", models_dir=dirs[0], runtime="torch")
        for name in ("eager", "compile")
    }
    engines["compile"].backend = _compiled_backend("cpu", args.mode)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, mode {args.mode!r}, "
          f"{len(images)} real 1024-px RSNA images, installed models")  # fmt: skip

    first: dict[str, float] = {}
    reference: dict[str, list[Any]] = {}
    for name, engine in engines.items():
        engine.load()
        t0 = time.perf_counter()
        engine.analyze(images[0])
        first[name] = time.perf_counter() - t0
        reference[name] = [engine.analyze(im) for im in images]  # warm-up pass; also the outputs compared
        t0 = time.perf_counter()
        engine.analyze_batch(images, batch_size=8)  # batch shapes compile once more
        first[name] += time.perf_counter() - t0

    med, batch = interleaved(engines, images, args.rounds, STAGES)
    print()
    print(
        f"eager PyTorch vs torch.compile (CPU, {len(images)} images × {args.rounds} rounds, interleaved; medians)"
    )
    print(f"| {'measure':34s} | {'eager':>9s} | {'compile':>9s} | {'speed-up':>8s} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 11}|{'-' * 10}|")
    print(
        f"| {'first image + first batch 8, s':34s} | {first['eager']:9.2f} | {first['compile']:9.2f} | {'':>8s} |"
    )
    for s in STAGES:
        if s in med["eager"]:
            a, b = med["eager"][s], med["compile"][s]
            print(f"| {'ms per image, ' + s:34s} | {a:9.1f} | {b:9.1f} | {a / b:7.2f}× |")
    one = {n: 1000.0 / med[n]["total"] for n in engines}
    print(f"| {'analyze one at a time, images/s':34s} | {one['eager']:9.2f} | {one['compile']:9.2f} | "
          f"{one['compile'] / one['eager']:7.2f}× |")  # fmt: skip
    be, bc = statistics.median(batch["eager"]), statistics.median(batch["compile"])
    print(f"| {'analyze_batch (batch 8), images/s':34s} | {be:9.2f} | {bc:9.2f} | {bc / be:7.2f}× |")

    dp = dm = 0.0
    iou = 1.0
    for a, b in zip(reference["eager"], reference["compile"], strict=True):
        if a.class_probs is not None:
            dp = max(dp, float(np.abs(a.class_probs - b.class_probs).max()))
        if a.prob_map is not None:
            dm = max(dm, float(np.abs(a.prob_map - b.prob_map).max()))
        if a.det_boxes is not None:
            keep_a, keep_b = a.det_scores >= 0.5, b.det_scores >= 0.5
            iou = min(iou, _box_iou_matched(a.det_boxes[keep_a], b.det_boxes[keep_b]))
    print()
    print(f"outputs vs eager: class probabilities max |Δ| {dp:.2e} (tolerance 0.01), maps max |Δ| {dm:.2e} "
          f"(0.02), detector boxes (score ≥ 0.5) worst matched IoU {iou:.3f} (0.98)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
