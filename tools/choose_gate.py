#!/usr/bin/env python3
"""Choose the classifier gate on the **training** split, with out-of-fold calibrated P(opacity).

``collect`` runs the shipped detector and segmentation ensemble (no TTA) on the training images of the shipped
split and keeps what post-processing needs. ``choose`` combines them with each image's out-of-fold P(opacity)
(``tools/fit_calibration.py oof``) put through the calibration stored in the manifest, sweeps the gate rules of
``tools/measure_levers.py`` and prints the training mAP of each; the best is the default to ship. The detector and
segmenters trained on these images, so their boxes here are better than on new images (in-sample): the choice is
biased towards trusting them, which is said wherever the gate is reported. The validation split is not read.

    python tools/choose_gate.py collect --cache gate.pkl
    python tools/choose_gate.py choose --cache gate.pkl --oof oof.csv [--classifier rsna3-classifier]
"""

from __future__ import annotations

import argparse
import csv
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.rsna_labels import read_labels, scale_boxes  # noqa: E402
from pneumoview.thresholds import Thresholds  # noqa: E402
from tools.measure_levers import _boot, _candidates, _entry, _label, _map_se, _scores  # noqa: E402
from tools.validation_split import split_ids  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "rsna"


def collect(args: argparse.Namespace) -> int:
    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine, StageSelection

    train, _ = split_ids(args.data)
    labels = read_labels(args.data / "stage_2_train_labels.csv")
    files = {p.stem: p for p in (args.data / "images-512").iterdir()}
    out: dict[str, dict] = {}
    if args.cache.exists():
        with open(args.cache, "rb") as f:
            out = pickle.load(f)
    engine = Engine(device="cpu", selection=StageSelection(classify=None))
    t, t0 = Thresholds(), time.perf_counter()
    todo = [k for k in train if k not in out]
    for n in range(0, len(todo), 8):
        chunk = todo[n : n + 8]
        ims = [load_image(files[k]) for k in chunk]
        for key, im, r in zip(
            chunk, ims, engine.analyze_batch(ims, stages=("segment", "detect")), strict=True
        ):
            out[key] = {
                "side": "train", "shape": im.shape, "gt": scale_boxes(labels[key], im.shape),
                "off": _entry(0.0, r.det_boxes, r.det_scores, r.prob_map, t),
            }  # fmt: skip
        if (n // 8) % 10 == 9 or n + 8 >= len(todo):
            print(f"{n + len(chunk)}/{len(todo)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            with open(args.cache, "wb") as f:
                pickle.dump(out, f)
    return 0


def choose(args: argparse.Namespace) -> int:
    from pneumoview.inference.manifest import load_manifest, models_dirs

    manifest = load_manifest(models_dirs(None), check_builders=False)
    ident = args.classifier
    spec = manifest.ensembles[ident] if ident in manifest.ensembles else manifest.model(ident)
    cal = spec.calibration
    with open(args.cache, "rb") as f:
        cache = pickle.load(f)
    with open(args.oof, newline="") as f:
        oof = {r["patientId"]: r for r in csv.DictReader(f)}
    keys = sorted(k for k in cache if k in oof)
    for k in keys:
        r = oof[k]
        p = float(r["p_raw"])
        if cal is not None:
            p = cal.apply(p, r["view"], {"PatientAge": r["age"], "PatientSex": r["sex"]})
        cache[k]["off"]["p"] = p
        cache[k]["patient"] = r["nih_patient"]
    boots = _boot(cache, keys, args.boot)
    print(
        f"{len(keys)} training images; P(opacity) out-of-fold through {ident}'s calibration ({cal is not None})"
    )
    rows = sorted(
        ((_map_se(_scores(cache, keys, "off", t), boots), t) for t in _candidates()),
        key=lambda row: -row[0][0],
    )
    print("| gate (training split) | training mAP ± SE |\n|---|---|")
    for (m, se), t in rows:
        print(f"| {_label(t)} | {m:.4f} ± {se:.4f} |")
    default = _map_se(_scores(cache, keys, "off", Thresholds()), boots)
    print(f"\ncurrent default ({_label(Thresholds())}): {default[0]:.4f} ± {default[1]:.4f}")
    print(f"best: {_label(rows[0][1])}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--data", type=Path, default=DATA)
    c.add_argument("--cache", type=Path, required=True)
    c.set_defaults(run=collect)
    h = sub.add_parser("choose")
    h.add_argument("--cache", type=Path, required=True)
    h.add_argument("--oof", type=Path, required=True)
    h.add_argument("--classifier", default="rsna3-classifier")
    h.add_argument("--boot", type=int, default=300)
    h.set_defaults(run=choose)
    args = ap.parse_args()
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
