#!/usr/bin/env python3
"""Held-out P(opacity) AUC of classifier models and of means of them (the lever, learning-curve and ensemble rows of
the README and the classifier's model card).

Each model (an id in ``--models`` or the usual models folders) scores the DICOMs of ``tools/make_heldout_dicoms.py``
with its raw softmax P(Lung Opacity); ``A+B+C`` scores the mean of those models' probabilities, with the paired
difference against the first member (both on the same bootstrap resamples). ± is one bootstrap standard error.

    python tools/heldout_classifier_auc.py HELDOUT_DIR rsna3-classifier,rsna3-fold0 [--models DIR] [A+B ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.calibration import expected_calibration_error  # noqa: E402
from pneumoview.imaging import load_image  # noqa: E402
from pneumoview.inference.engine import Engine, StageSelection  # noqa: E402
from pneumoview.metrics import bootstrap_se, roc_auc  # noqa: E402
from pneumoview.rsna_labels import read_classes  # noqa: E402

CLASSES = ROOT.parent / "shared" / "data" / "rsna" / "stage_2_detailed_class_info.csv"


def raw_p_opacity(ident: str, images: list, models: Path | None) -> np.ndarray:
    """The model's softmax P(Lung Opacity) per image (no calibration: means are taken of these)."""
    sel = StageSelection(classify=ident, segment=None, detect=None)
    engine = Engine(device="cpu", models_dir=models, runtime="torch", selection=sel)
    spec = engine.stage_specs("classify")[0][0]
    results = engine.analyze_batch(images, stages=("classify",), batch_size=16)
    return np.array([r.class_probs[spec.positive_index] for r in results])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("heldout", type=Path)
    ap.add_argument("ids", help="comma-separated model ids")
    ap.add_argument("means", nargs="*", help="A+B+C: the mean of these models")
    ap.add_argument("--models", type=Path, default=None)
    ap.add_argument("--classes", type=Path, default=CLASSES)
    args = ap.parse_intermixed_args(argv)
    files = sorted(args.heldout.glob("*.dcm"))
    truth = read_classes(args.classes)
    y = np.array([truth[f.stem] == "Lung Opacity" for f in files], dtype=float)
    images = [load_image(f) for f in files]
    probs = {ident: raw_p_opacity(ident, images, args.models) for ident in args.ids.split(",")}

    def row(name: str, p: np.ndarray) -> None:
        se = bootstrap_se(lambda i: roc_auc(y[i], p[i]), len(y))
        print(f"{name:48s} AUC {roc_auc(y, p):.3f} ± {se:.3f}  ECE {expected_calibration_error(p, y):.3f}")

    for ident, p in probs.items():
        row(ident, p)
    for combo in args.means:
        members = combo.split("+")
        mean = np.mean([probs[m] for m in members], axis=0)
        base = probs[members[0]]
        row(f"mean of {combo}", mean)
        diff = bootstrap_se(lambda i, m=mean, b=base: roc_auc(y[i], m[i]) - roc_auc(y[i], b[i]), len(y))
        print(f"    paired vs {members[0]}: {roc_auc(y, mean) - roc_auc(y, base):+.3f} ± {diff:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
