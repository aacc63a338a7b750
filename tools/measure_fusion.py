#!/usr/bin/env python3
"""Measure evidence fusion for P(opacity) (issue #11): does the detector's or the segmenters' evidence sharpen the
classifier's probability, as a logistic model over their outputs?

``collect`` runs one classifier, segmentation model or ensemble and detector on a list of images and keeps, per
image, what fusion and post-processing need: the classifier's raw P(opacity) (before the manifest's calibration),
the detector's raw boxes and scores, the segmentation boxes at the default thresholds and the probability map's
maximum. The list is a CSV with ``patientId`` and ``target`` (1 = Lung Opacity) and optionally ``fold``.

``report`` fits the fusion on one cache (``--choose``: the fold-0 validation images scored by fold-0 models, each
trained without them) with patient-grouped cross-fitting, so the chosen variant's AUC there is out-of-sample too,
sweeps the hard gate on it, and with ``--report`` applies the coefficients fitted on all of ``--choose`` to another
cache (the held-out split scored by the shipped models). ± is one patient-level bootstrap standard error;
"paired" compares with the classifier alone on the same resamples.

    python tools/measure_fusion.py collect --ids fold0.csv --images DIR --ext .jpg --classifier rsna3-fold0 \
        --segmenter seg-fold0 --detector det-fold0 --cache fold0.pkl
    python tools/measure_fusion.py report --choose fold0.pkl [--report heldout.pkl]
    python tools/measure_fusion.py fit --choose fold0.pkl --write models/manifest.toml --fitted-on "…"
"""

from __future__ import annotations

import argparse
import csv
import glob
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.calibration import FEATURES as CAL_FEATURES  # noqa: E402
from pneumoview.calibration import expected_calibration_error, fit_logistic  # noqa: E402
from pneumoview.metrics import roc_auc, rsna_image_score  # noqa: E402
from pneumoview.thresholds import Thresholds  # noqa: E402
from tools.measure_levers import _auc_se, _boot, _findings, _map_se  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "rsna"


def _det_max(c: dict) -> float:
    scores = c["det"][1]
    return float(scores.max()) if len(scores) else 0.0


def _logit(p: float) -> float:
    return CAL_FEATURES["logit"](p, None, {}, {})


# Each feature of one image's cache entry. "logit" and "det_score" are the product's own calibration features
# (pneumoview.calibration), so a fitted variant of them goes into the manifest as it is; the others are tried here only.
FEATURES: dict[str, Callable[[dict], float]] = {
    "logit": lambda c: _logit(c["p_raw"]),
    "det_score": lambda c: CAL_FEATURES["det_score"](c["p_raw"], None, {}, {"det_score": _det_max(c)}),
    "det_logit": lambda c: _logit(_det_max(c)),
    "seg_logit": lambda c: _logit(c["seg_max"]),
    "seg_max": lambda c: c["seg_max"],
}
VARIANTS: list[tuple[str, ...]] = [
    ("logit",),
    ("det_logit",),
    ("seg_logit",),
    ("logit", "det_logit"),
    ("logit", "det_score"),
    ("logit", "seg_logit"),
    ("logit", "seg_max"),
    ("logit", "det_logit", "seg_logit"),
    ("logit", "det_score", "seg_max"),
]
KEPT = ("logit", "det_score")
GATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def _image_path(images: Path, key: str, ext: str) -> Path:
    """``images/key + ext``; with ``ext`` "auto", the one file named ``key`` with any extension (a packed copy
    may be PNG or JPEG, the challenge's own download is DICOM)."""
    if ext != "auto":
        return images / f"{key}{ext}"
    found = sorted(images.glob(f"{glob.escape(key)}.*"))
    if not found:
        raise SystemExit(f"{images}: no image named {key}.* (the ids file lists it)")
    return found[0]


def collect(args: argparse.Namespace) -> int:
    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine, StageSelection
    from pneumoview.postprocess import BoxSet, boxes_from_probability
    from pneumoview.rsna_labels import read_labels, scale_boxes

    with open(args.ids, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if args.fold is None or int(r["fold"]) == args.fold]
    # The patient (the bootstrap's unit) from the ids file, else from the subset's index, else the image itself.
    patient = {r["patientId"]: r["nih_patient"] for r in rows if r.get("nih_patient")}
    if not patient and (args.data / "index.csv").is_file():
        with open(args.data / "index.csv", encoding="utf-8", newline="") as f:
            patient = {r["patientId"]: r["nih_patient"] or r["patientId"] for r in csv.DictReader(f)}
    labels = read_labels(args.labels)
    engine = Engine(
        device="cpu", runtime=args.runtime, tta=args.tta, tta_zooms=args.tta_zooms,
        selection=StageSelection(classify=args.classifier, segment=args.segmenter, detect=args.detector),
    )  # fmt: skip
    t = Thresholds()
    cache: dict[str, dict] = {}
    t0 = time.perf_counter()
    for start in range(0, len(rows), 8):
        chunk = rows[start : start + 8]
        images = [load_image(_image_path(args.images, r["patientId"], args.ext)) for r in chunk]
        for r, im, res in zip(chunk, images, engine.analyze_batch(images), strict=True):
            assert res.class_probs is not None and res.det_scores is not None
            gate = [res.class_names.index(c) for c in res.gate_classes]
            if res.prob_map is not None:
                seg, seg_max = boxes_from_probability(res.prob_map, t), float(res.prob_map.max())
            else:
                seg, seg_max = BoxSet.of(np.zeros((0, 4)), np.zeros(0), "segmentation"), float("nan")
            key = r["patientId"]
            cache[key] = {
                "patient": patient.get(key, key),
                "target": int(r["target"]),
                "shape": im.shape,
                "gt": scale_boxes(labels.get(key, np.zeros((0, 4))), im.shape),
                "p_raw": float(res.class_probs[gate].sum()),
                "p_shipped": float(res.p_opacity or 0.0),
                "det": (np.asarray(res.det_boxes), np.asarray(res.det_scores)),
                "seg": (seg.boxes, seg.scores),
                "seg_max": seg_max,
            }
        print(
            f"{len(cache)}/{len(rows)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
        )
    with open(args.cache, "wb") as f:
        pickle.dump(cache, f)
    return 0


def _design(cache: dict, keys: list[str], variant: tuple[str, ...]) -> np.ndarray:
    return np.array([[FEATURES[f](cache[k]) for f in variant] for k in keys], dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def _cross_fitted(cache: dict, keys: list[str], variant: tuple[str, ...], folds: int = 5) -> np.ndarray:
    """Each image's fused probability from a fit on the other patients' images (patient-grouped folds)."""
    patients = sorted({cache[k]["patient"] for k in keys})
    np.random.default_rng(0).shuffle(patients)
    fold_of = {p: i % folds for i, p in enumerate(patients)}
    f = np.array([fold_of[cache[k]["patient"]] for k in keys])
    x, y = _design(cache, keys, variant), np.array([cache[k]["target"] for k in keys])
    out = np.zeros(len(keys))
    for i in range(folds):
        coef, b = fit_logistic(x[f != i], y[f != i])
        out[f == i] = _sigmoid(x[f == i] @ coef + b)
    return out


def _gated_scores(cache: dict, keys: list[str], p: np.ndarray, gate: float) -> np.ndarray:
    t = Thresholds().replace(gate_mode="hard", gate=gate)
    out = []
    for k, pk in zip(keys, p, strict=True):
        c = cache[k]
        found = _findings({"p": float(pk), "det": c["det"], "seg": c["seg"]}, c["shape"], t)
        s = rsna_image_score(c["gt"], found.boxes, found.scores)
        out.append(np.nan if s is None else s)
    return np.array(out)


def _paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, boots) -> tuple[float, float]:
    """AUC(a) − AUC(b) and its bootstrap standard error."""
    d = [roc_auc(y[i], a[i]) - roc_auc(y[i], b[i]) for i in boots if 0 < y[i].sum() < len(i)]
    return roc_auc(y, a) - roc_auc(y, b), float(np.std(d, ddof=1))


def _collected(cache: dict, keys: list[str], variants: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The variants the cache can score: without a segmenter it has no map maximum, so none reading it."""
    has_map = all(np.isfinite(cache[k]["seg_max"]) for k in keys)
    return [v for v in variants if has_map or not any(f.startswith("seg") for f in v)]


def report(args: argparse.Namespace) -> int:
    with open(args.choose, "rb") as f:
        ch = pickle.load(f)
    keys = sorted(ch)
    y = np.array([ch[k]["target"] for k in keys])
    boots = _boot(ch, keys, args.boot)
    print(
        f"choose on {args.choose}: {len(keys)} images, {y.sum()} with opacity (cross-fitted, out-of-sample)"
    )
    print(
        "| variant | AUC ± SE | paired vs logit (Platt) | ECE | "
        + " | ".join(f"mAP gate {g:g}" for g in GATES)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(GATES))
    base = _cross_fitted(ch, keys, ("logit",))
    for variant in _collected(ch, keys, VARIANTS):
        p = _cross_fitted(ch, keys, variant)
        auc, se = _auc_se(y, p, boots)
        d, dse = _paired(y, p, base, boots)
        maps = [_map_se(_gated_scores(ch, keys, p, g), boots) for g in GATES]
        cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in maps)
        ece = expected_calibration_error(p, y)
        print(f"| {'+'.join(variant)} | {auc:.3f} ± {se:.3f} | {d:+.3f} ± {dse:.3f} | {ece:.3f} | {cells} |")
    if args.report is None:
        return 0
    with open(args.report, "rb") as f:
        te = pickle.load(f)
    tk = sorted(te)
    ty = np.array([te[k]["target"] for k in tk])
    tb = _boot(te, tk, args.boot)
    shipped = np.array([te[k]["p_shipped"] for k in tk])
    base_s = _gated_scores(te, tk, shipped, args.gate)
    print(
        f"\nreport on {args.report}: {len(tk)} images; coefficients fitted on all of {args.choose}; gate {args.gate:g}"
    )
    print(f"shipped P(opacity): AUC {_auc_se(ty, shipped, tb)[0]:.3f} ± {_auc_se(ty, shipped, tb)[1]:.3f}, "
          f"ECE {expected_calibration_error(shipped, ty):.3f}, mAP {_map_se(base_s, tb)[0]:.3f} ± {_map_se(base_s, tb)[1]:.3f}")  # fmt: skip
    for variant in _collected(ch, keys, VARIANTS[3:]):
        coef, b = fit_logistic(_design(ch, keys, variant), y)
        p = _sigmoid(_design(te, tk, variant) @ coef + b)
        auc, se = _auc_se(ty, p, tb)
        d, dse = _paired(ty, p, shipped, tb)
        s = _gated_scores(te, tk, p, args.gate)
        dm = [np.nanmean(s[i]) - np.nanmean(base_s[i]) for i in tb]
        m, mse = _map_se(s, tb)
        print(
            f"{'+'.join(variant):24s} AUC {auc:.3f} ± {se:.3f} (paired {d:+.3f} ± {dse:.3f}), "
            f"ECE {expected_calibration_error(p, ty):.3f}, mAP {m:.3f} ± {mse:.3f} "
            f"(paired {np.nanmean(s) - np.nanmean(base_s):+.3f} ± {np.std(dm, ddof=1):.3f}); "
            f"coef {np.round(coef, 3).tolist()} intercept {b:.3f}"
        )
    return 0


def fit(args: argparse.Namespace) -> int:
    """Fit the kept variant (classifier logit + detector top score) on all of ``--choose`` and store it as the
    classifier's ``fusion`` in a manifest, tied to the detector whose scores it reads."""
    from pneumoview.calibration import Calibration
    from pneumoview.inference.manifest import load_manifest
    from tools.fit_calibration import write_table

    with open(args.choose, "rb") as f:
        ch = pickle.load(f)
    keys = sorted(ch)
    y = np.array([ch[k]["target"] for k in keys])
    coef, b = fit_logistic(_design(ch, keys, KEPT), y)
    detector = load_manifest([args.write.parent], check_builders=False).model(args.detector)
    cal = Calibration(KEPT, tuple(float(c) for c in coef), b, args.fitted_on, detector.sha256[:16])
    write_table(args.write, args.id, cal, "fusion")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument(
        "--ids", type=Path, required=True, help="CSV: patientId, target (1 = Lung Opacity)[, fold]"
    )
    c.add_argument("--fold", type=int, default=None, help="only the rows of this fold")
    c.add_argument("--images", type=Path, required=True)
    c.add_argument("--ext", default=".jpg", help='file extension of the images, or "auto"')
    c.add_argument("--labels", type=Path, required=True, help="RSNA box labels (stage_2_train_labels.csv)")
    c.add_argument(
        "--data", type=Path, default=DATA, help="folder with index.csv (NIH patient of each image)"
    )
    c.add_argument("--classifier", required=True)
    c.add_argument("--segmenter", default=None, help="segmentation model or ensemble (default: none)")
    c.add_argument("--detector", required=True)
    c.add_argument("--runtime", default="auto")
    c.add_argument("--tta", action="store_true", help="flip test-time augmentation, as predict --tta")
    c.add_argument(
        "--tta-zooms", type=lambda v: tuple(float(z) for z in v.split(",")), default=(),
        help="extra zoom factors for the classifier and detector, e.g. 0.9,1.1 (Engine(tta_zooms=...))",
    )  # fmt: skip
    c.add_argument("--cache", type=Path, required=True)
    c.set_defaults(run=collect)
    r = sub.add_parser("report")
    r.add_argument("--choose", type=Path, required=True)
    r.add_argument("--report", type=Path, default=None)
    r.add_argument("--gate", type=float, default=0.3, help="hard gate for the reported mAP")
    r.add_argument("--boot", type=int, default=1000)
    r.set_defaults(run=report)
    w = sub.add_parser("fit")
    w.add_argument("--choose", type=Path, required=True)
    w.add_argument("--write", type=Path, required=True, help="manifest.toml to store the fusion in")
    w.add_argument("--id", default="rsna3-classifier", help="the classifier whose fusion it is")
    w.add_argument("--detector", default="detector", help="the detector (in the same manifest) it applies to")
    w.add_argument("--fitted-on", required=True, help="what the fit saw, for the model card")
    w.set_defaults(run=fit)
    args = ap.parse_args()
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
