#!/usr/bin/env python3
"""RSNA mAP of the shipped pipeline on the held-out validation split, eager PyTorch vs ONNX Runtime (one-off).

Runs both runtimes on the 335 validation images of the shipped models' split (seed 0, 20 % of NIH patients; see
``tools/measure_levers.py``), scores each image with the RSNA metric at the default thresholds (classifier gate on)
and prints mAP ± patient-level bootstrap SE for each runtime, the paired difference and the worst per-image
differences of P(opacity), the probability map and the detector scores. Results are kept in ``--cache`` (a pickle per
runtime), so a stopped run resumes.

    python tools/measure_onnx_map.py --cache /tmp/onnx-map [--models-dir DIR_WITH_ONNX_EXPORTS] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.thresholds import Thresholds  # noqa: E402
from tools.measure_levers import DATA, _boot, _entry, _map_se, _scores, _split_sides  # noqa: E402


def _collect(runtime: str, keys: list[str], args: argparse.Namespace) -> dict[str, dict]:
    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine
    from pneumoview.rsna_labels import read_labels, scale_boxes

    path = args.cache / f"{runtime}.pkl"
    out: dict[str, dict] = pickle.loads(path.read_bytes()) if path.exists() else {}
    labels = read_labels(args.data / "stage_2_train_labels.csv")
    files = {p.stem: p for p in (args.data / "images-512").iterdir()}
    engine = Engine(device="cpu", runtime=runtime, models_dir=args.models_dir)
    todo = [k for k in keys if k not in out]
    t0 = time.perf_counter()
    for n in range(0, len(todo), 8):
        chunk = todo[n : n + 8]
        ims = [load_image(files[k]) for k in chunk]
        for key, im, r in zip(chunk, ims, engine.analyze_batch(ims, batch_size=8), strict=True):
            out[key] = {
                "side": "val", "shape": im.shape, "gt": scale_boxes(labels[key], im.shape),
                "off": _entry(r.p_opacity, r.det_boxes, r.det_scores, r.prob_map, Thresholds()),
                "raw": (r.p_opacity, r.prob_map, r.det_boxes, r.det_scores),
            }  # fmt: skip
        path.write_bytes(pickle.dumps(out))
        print(
            f"{runtime}: {n + len(chunk)}/{len(todo)} images, {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, required=True, help="folder for the per-runtime result pickles")
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    keys = sorted(k for k, v in _split_sides(args.data).items() if v == "val")[: args.limit]
    runs = {rt: _collect(rt, keys, args) for rt in ("torch", "onnx")}
    with open(args.data / "index.csv", encoding="utf-8", newline="") as f:
        index = {r["patientId"]: r for r in csv.DictReader(f)}
    for run in runs.values():
        for k, c in run.items():
            c["patient"] = index[k]["nih_patient"] or k
    boots = _boot(runs["torch"], keys, args.boot)
    per = {rt: _scores(run, keys, "off", Thresholds()) for rt, run in runs.items()}
    print(f"{len(keys)} validation images; SE: patient-level bootstrap, {args.boot} resamples")
    for rt in ("torch", "onnx"):
        m, se = _map_se(per[rt], boots)
        print(f"{rt:6s} RSNA mAP {m:.4f} ± {se:.4f}")
    diff = per["onnx"] - per["torch"]
    d = [np.nanmean(diff[b]) for b in boots]
    print(f"paired difference onnx − torch: {np.nanmean(diff):+.5f} ± {np.std(d, ddof=1):.5f}")
    dp = max(abs(runs["torch"][k]["raw"][0] - runs["onnx"][k]["raw"][0]) for k in keys)
    dm = max(
        float(np.abs(runs["torch"][k]["raw"][1].astype(np.float32) - runs["onnx"][k]["raw"][1]).max())
        for k in keys
    )
    same_n = sum(len(runs["torch"][k]["raw"][3]) == len(runs["onnx"][k]["raw"][3]) for k in keys)
    print(
        f"max |ΔP(opacity)| {dp:.2e}; max |Δmap| {dm:.2e}; same number of detector boxes on {same_n}/{len(keys)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
