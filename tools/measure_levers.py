#!/usr/bin/env python3
"""Measure the no-retraining levers of issue #11 on the shipped models: flip TTA and the classifier gate.

``collect`` runs the shipped models once on every image of ``DATA/images-512`` and once on its mirror image, and
keeps per image and per setting (``off`` = no TTA, ``on`` = flip TTA) what post-processing needs: P(opacity), the
detector's raw boxes and the segmentation boxes at the default thresholds. Flip TTA is assembled from the two passes
exactly as :mod:`pneumoview.inference.tta` does inside the engine (mean of the probabilities and maps, weighted box
fusion of the two views' boxes); ``--check N`` compares that with ``Engine(tta=True)`` on N images.

``report`` scores both settings and the gate variants: parameters are chosen on the **training** split (in-sample
for the shipped models, so the choice is biased towards whatever they memorised) and reported on the **validation**
split (seed 0, 20 % of NIH patients), with standard errors from a patient-level bootstrap.

    python tools/measure_levers.py collect --cache levers.pkl [--limit N] [--check 8]
    python tools/measure_levers.py report --cache levers.pkl
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

from pneumoview.gating import GATE_MODES, gate_boxes  # noqa: E402
from pneumoview.metrics import roc_auc, rsna_image_score  # noqa: E402
from pneumoview.postprocess import boxes_from_probability, filter_detections, fuse, shrink_boxes  # noqa: E402
from pneumoview.rsna_labels import read_labels, scale_boxes  # noqa: E402
from pneumoview.thresholds import Thresholds  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "rsna"


def _split_sides(data: Path) -> dict[str, str]:
    """patientId → "train" / "val" exactly as the shipped models' split (seed 0, 20 %)."""
    from tools.validation_split import split_ids

    train, val = split_ids(data)
    return {**dict.fromkeys(train, "train"), **dict.fromkeys(val, "val")}


def _mirror(im):
    from dataclasses import replace

    return replace(
        im, display=np.ascontiguousarray(im.display[:, ::-1]), modality=im.modality[:, ::-1].copy()
    )


def _xywh_mirror(boxes: np.ndarray, cols: int) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 0] = cols - b[:, 0] - b[:, 2]
    return b


def _tta_from_passes(res, mres, cols: int):
    """(p_opacity, det xywh, det scores, prob map) of flip TTA from a pass on the image and one on its mirror."""
    from pneumoview.inference.tta import fuse_views
    from pneumoview.postprocess import xywh_to_xyxy, xyxy_to_xywh

    p = 0.5 * (res.p_opacity + mres.p_opacity)
    prob = 0.5 * (res.prob_map + mres.prob_map[:, ::-1])
    back = _xywh_mirror(mres.det_boxes, cols)
    xyxy, scores = fuse_views(
        xywh_to_xyxy(res.det_boxes), res.det_scores, xywh_to_xyxy(back), mres.det_scores
    )
    return p, xyxy_to_xywh(xyxy), scores, prob


def _entry(p, det_boxes, det_scores, prob, t: Thresholds) -> dict:
    seg = boxes_from_probability(prob, t)
    return {"p": float(p), "det": (np.array(det_boxes), np.array(det_scores)), "seg": (seg.boxes, seg.scores)}


def collect(args: argparse.Namespace) -> int:
    import torch

    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine

    torch.set_num_threads(args.threads)
    side = _split_sides(args.data)
    labels = read_labels(args.data / "stage_2_train_labels.csv")
    # Validation images first, then the training images in a seeded random order, so that a run stopped early
    # (2 shared CPU cores) still has the whole validation split and an unbiased sample of the training split.
    train = sorted(k for k, v in side.items() if v == "train")
    np.random.default_rng(0).shuffle(train)
    keys = sorted(k for k, v in side.items() if v == "val") + train
    keys = keys[: args.limit] if args.limit else keys
    out: dict[str, dict] = {}
    if args.cache.exists():  # resume
        with open(args.cache, "rb") as f:
            out = pickle.load(f)
    files = {p.stem: p for p in (args.data / "images-512").iterdir()}
    engine = Engine(device="cpu")
    t = Thresholds()
    t0 = time.perf_counter()
    todo = [k for k in keys if k not in out]
    for n in range(0, len(todo), 4):
        chunk = todo[n : n + 4]
        ims = [load_image(files[k]) for k in chunk]
        res = engine.analyze_batch([x for im in ims for x in (im, _mirror(im))], batch_size=8)
        for j, (key, im) in enumerate(zip(chunk, ims, strict=True)):
            r, mr = res[2 * j], res[2 * j + 1]
            p, db, ds, prob = _tta_from_passes(r, mr, im.shape[1])
            out[key] = {
                "side": side[key],
                "shape": im.shape,
                "gt": scale_boxes(labels[key], im.shape),
                "off": _entry(r.p_opacity, r.det_boxes, r.det_scores, r.prob_map, t),
                "on": _entry(p, db, ds, prob, t),
            }
        done = n + len(chunk)
        if done % 40 == 0 or done == len(todo):
            el = time.perf_counter() - t0
            print(f"{done}/{len(todo)} images, {el:.0f} s", file=sys.stderr, flush=True)
            with open(args.cache, "wb") as f:
                pickle.dump(out, f)
    if args.check:
        _check(args, engine.manifest, keys[: args.check], out)
    return 0


def _check(args, manifest, keys, out) -> None:
    """The two-pass assembly must match what Engine(tta=True) computes."""
    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine

    engine = Engine(manifest, device="cpu", tta=True)
    worst = {"p": 0.0, "det": 0.0}
    for key in keys:
        im = load_image(next((args.data / "images-512").glob(f"{key}.*")))
        r = engine.analyze(im)
        worst["p"] = max(worst["p"], abs(r.p_opacity - out[key]["on"]["p"]))
        b, s = out[key]["on"]["det"]
        kb = s >= 0.3
        ke = r.det_scores >= 0.3
        if kb.sum() != ke.sum():
            worst["det"] = float("inf")
        elif kb.any():
            worst["det"] = max(worst["det"], float(np.abs(b[kb] - r.det_boxes[ke]).max()))
    print(f"check on {len(keys)} images: max |ΔP(opacity)| {worst['p']:.2e}, max box Δ {worst['det']:.2f} px")


# ------------------------------------------------------------------------------------------------------------


def _findings(e: dict, shape, t: Thresholds):
    from pneumoview.postprocess import BoxSet

    det = filter_detections(*e["det"], t)
    det = det.with_boxes(shrink_boxes(det.boxes, t.shrink))
    seg = BoxSet.of(*e["seg"], "segmentation")
    return gate_boxes(fuse(det, seg, t), e["p"], t)


def _scores(cache: dict, keys: list[str], setting: str, t: Thresholds) -> np.ndarray:
    """Per image RSNA score (NaN for skipped images: no truth and no box)."""
    vals = []
    for k in keys:
        c = cache[k]
        f = _findings(c[setting], c["shape"], t)
        s = rsna_image_score(c["gt"], f.boxes, f.scores)
        vals.append(np.nan if s is None else s)
    return np.array(vals, dtype=np.float64)


def _boot(cache: dict, keys: list[str], n: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap resamples of image indices, drawn by patient (so a patient's images move together)."""
    rng = np.random.default_rng(seed)
    patients: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        patients.setdefault(cache[k]["patient"], []).append(i)
    groups = list(patients.values())
    return [np.concatenate([groups[j] for j in rng.integers(0, len(groups), len(groups))]) for _ in range(n)]


def _map_se(per_image: np.ndarray, boots) -> tuple[float, float]:
    return float(np.nanmean(per_image)), float(np.std([np.nanmean(per_image[b]) for b in boots], ddof=1))


def _paired_map(a: np.ndarray, b: np.ndarray, boots) -> tuple[float, float]:
    """mAP(a) − mAP(b) over the same images (per-image scores, NaN = skipped) and its bootstrap standard error."""
    d = [np.nanmean(a[i]) - np.nanmean(b[i]) for i in boots]
    return float(np.nanmean(a) - np.nanmean(b)), float(np.std(d, ddof=1))


def _auc_se(y: np.ndarray, p: np.ndarray, boots) -> tuple[float, float]:
    vals = [roc_auc(y[b], p[b]) for b in boots if 0 < y[b].sum() < len(b)]
    return float(roc_auc(y, p)), float(np.std(vals, ddof=1))


def _candidates() -> list[Thresholds]:
    base = Thresholds()
    out = [base.replace(gate_mode="hard", gate=g) for g in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)]
    out += [base.replace(gate_mode="product", gate=g) for g in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)]
    out += [
        base.replace(gate_mode="low_confidence", gate=g, gate_box_score=c)
        for g in (0.2, 0.3, 0.4, 0.5)
        for c in (0.6, 0.7, 0.8, 0.9)
    ]
    return out


def _label(t: Thresholds) -> str:
    if t.gate_mode == "low_confidence":
        return f"low_confidence gate {t.gate:g}, box ≥ {t.gate_box_score:g}"
    return f"{t.gate_mode} gate {t.gate:g}"


def report(args: argparse.Namespace) -> int:
    with open(args.cache, "rb") as f:
        cache = pickle.load(f)
    with open(args.data / "index.csv", encoding="utf-8", newline="") as f:
        index = {r["patientId"]: r for r in csv.DictReader(f)}
    for k, c in cache.items():
        c["patient"] = index[k]["nih_patient"] or k
        c["y"] = int(index[k]["rsna_class"] == "Lung Opacity")
    train = [k for k, c in cache.items() if c["side"] == "train"]
    val = [k for k, c in cache.items() if c["side"] == "val"]
    bt, bv = _boot(cache, train, args.boot), _boot(cache, val, args.boot)
    print(f"{len(train)} training images (in-sample for the shipped models), {len(val)} validation images")
    print(f"standard errors: patient-level bootstrap, {args.boot} resamples\n")

    rows = []
    best: dict[str, tuple[float, Thresholds]] = {}
    for setting in ("off", "on"):
        for t in _candidates():
            tr = _map_se(_scores(cache, train, setting, t), bt)[0]
            rows.append((setting, _label(t), tr, t))
            if tr > best.get((setting, t.gate_mode), (-1.0, t))[0]:
                best[(setting, t.gate_mode)] = (tr, t)
    print("| TTA | gate (chosen on training) | training mAP | validation mAP ± SE |")
    print("|---|---|---|---|")
    for setting in ("off", "on"):
        for mode in GATE_MODES:
            tr, t = best[(setting, mode)]
            va = _map_se(_scores(cache, val, setting, t), bv)
            print(f"| {setting} | {_label(t)} | {tr:.4f} | {va[0]:.4f} ± {va[1]:.4f} |")
    print()
    print("| TTA | default thresholds: validation mAP ± SE | P(opacity) ROC AUC ± SE (validation) |")
    print("|---|---|---|")
    yv = np.array([cache[k]["y"] for k in val])
    for setting in ("off", "on"):
        va = _map_se(_scores(cache, val, setting, Thresholds()), bv)
        pv = np.array([cache[k][setting]["p"] for k in val])
        au = _auc_se(yv, pv, bv)
        print(f"| {setting} | {va[0]:.4f} ± {va[1]:.4f} | {au[0]:.4f} ± {au[1]:.4f} |")
    diff = _scores(cache, val, "on", Thresholds()) - _scores(cache, val, "off", Thresholds())
    d = [np.nanmean(diff[b]) for b in bv]
    print(
        f"\npaired difference on − off (validation, default thresholds): mAP {np.nanmean(diff):+.4f} ± {np.std(d):.4f}",
        end="",
    )
    p_on = np.array([cache[k]["on"]["p"] for k in val])
    p_off = np.array([cache[k]["off"]["p"] for k in val])
    da = [roc_auc(yv[b], p_on[b]) - roc_auc(yv[b], p_off[b]) for b in bv if 0 < yv[b].sum() < len(b)]
    print(f", AUC {roc_auc(yv, p_on) - roc_auc(yv, p_off):+.4f} ± {np.std(da, ddof=1):.4f}")
    if args.sweep:
        print("\nfull sweep on the training split:")
        for setting, label, tr, _ in rows:
            print(f"  {setting:3s} {label:40s} {tr:.4f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--data", type=Path, default=DATA)
    c.add_argument("--cache", type=Path, required=True)
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--check", type=int, default=0, help="compare with Engine(tta=True) on N images")
    c.set_defaults(run=collect)
    r = sub.add_parser("report")
    r.add_argument("--data", type=Path, default=DATA)
    r.add_argument("--cache", type=Path, required=True)
    r.add_argument("--boot", type=int, default=1000)
    r.add_argument("--sweep", action="store_true")
    r.set_defaults(run=report)
    args = ap.parse_args()
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
