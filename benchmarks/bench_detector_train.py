#!/usr/bin/env python3
"""Detector training cost per image on this machine: the `light` recipe's architecture vs torchvision's layout.

Times one optimiser step (forward, backward, AdamW) on a batch of real RSNA images with their boxes, at the light
recipe's 256 px. Baseline in the same run: ``fasterrcnn_resnet18_fpn`` with torchvision's FPN (stages 1-4, width
256) and sampling (512 RoIs, 2000 proposals per image), then that layout with the light sampling only.

    .venv/bin/python benchmarks/bench_detector_train.py [--batch 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RSNA = ROOT.parent / "shared" / "data" / "rsna"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    args = ap.parse_args()

    import numpy as np
    import torch

    from pneumoview.inference.builders import build
    from pneumoview.preprocess import InputSpec
    from pneumoview.training.datasets import build_cache, load_rsna
    from pneumoview.training.detector import detection_targets
    from pneumoview.training.recipes import LIGHT_DETECTOR

    size = 256
    source = load_rsna(RSNA / "stage_2_train_labels.csv", RSNA / "images-512", index_csv=RSNA / "index.csv")
    records = [r for r in source.records if r.target][: args.batch // 2]
    records += [r for r in source.records if not r.target][: args.batch - len(records)]
    cache = build_cache(records, InputSpec(size=(size, size), channels=3, mean=(0.0,), std=(1.0,)), threads=2)
    images = [torch.from_numpy(np.repeat(im[None], 3, 0).astype(np.float32) / 255) for im in cache.images]
    targets = [detection_targets(b) for b in cache.boxes]

    light_sampling = {k: LIGHT_DETECTOR[k] for k in ("box_batch_size_per_image", "rpn_pre_nms_top_n_train",
                                                       "rpn_post_nms_top_n_train")}  # fmt: skip
    variants = [
        ("torchvision layout and sampling (naive)", {}),
        ("torchvision layout, light sampling", light_sampling),
        ("light recipe (shipped detector)", dict(LIGHT_DETECTOR)),
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(images)} real RSNA images at {size} px"
    )
    print(f"| {'architecture':42s} | s / image | vs naive |\n|{'-' * 44}|-----------|----------|")
    base = None
    for name, extra in variants:
        torch.manual_seed(0)
        model = build("fasterrcnn_resnet18_fpn", min_size=size, max_size=size, **extra).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        times = []
        for _ in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        per_image = min(times[1:]) / len(images)
        base = base or per_image
        print(f"| {name:42s} | {per_image:9.3f} | {base / per_image:7.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
