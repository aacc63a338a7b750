"""``pneumoview evaluate``: RSNA mAP of a submission, per-image scores, and classifier metrics."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a submission.csv against RSNA labels (mAP@[.40:.75]) and classifier metrics",
        description="Score predictions exactly as the RSNA Pneumonia Detection Challenge did: per image, precision "
        "TP/(TP+FP+FN) averaged over IoU thresholds 0.40…0.75, then the mean over images; images with no truth and "
        "no prediction are skipped, images with no truth and any prediction score 0. Only the images in "
        "PREDICTIONS are evaluated.",
    )
    p.add_argument("predictions", type=Path, metavar="PREDICTIONS.csv", help="patientId,PredictionString")
    p.add_argument(
        "--labels", type=Path, required=True, help="stage_2_train_labels.csv (boxes in the 1024-px frame)"
    )
    p.add_argument(
        "--findings",
        type=Path,
        default=None,
        help="findings.csv of the same run: gives each image's size (boxes are scaled from the 1024-px label "
        "frame) and the class probabilities for classifier metrics",
    )
    p.add_argument(
        "--image-size", type=int, default=1024, help="image size when --findings is not given (default 1024)"
    )
    p.add_argument(
        "--classes", type=Path, default=None, help="stage_2_detailed_class_info.csv → classifier metrics"
    )
    p.add_argument("--per-image", type=Path, default=None, metavar="CSV", help="write per-image scores here")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="extra models folder whose training splits are checked too",
    )
    p.set_defaults(run=run)


def read_submission(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from pneumoview.postprocess import parse_prediction_string

    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"patientId", "PredictionString"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected the header patientId,PredictionString")
        for row in reader:
            out[row["patientId"].strip()] = parse_prediction_string(row["PredictionString"])
    return out


def read_findings(path: Path) -> dict[str, dict[str, str]]:
    """image_id → the first findings row of that image (size and probabilities are per image)."""
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["image_id"], row)
    return out


def run(args: argparse.Namespace) -> int:
    from pneumoview.metrics import classification_report, rsna_map
    from pneumoview.rsna_labels import RSNA_CLASSES, read_classes, read_labels, scale_boxes

    try:
        preds = read_submission(args.predictions)
        labels = read_labels(args.labels)
        findings = read_findings(args.findings) if args.findings else {}
        classes = read_classes(args.classes) if args.classes else {}
    except (OSError, ValueError, KeyError) as exc:
        print(f"pneumoview evaluate: {exc}", file=sys.stderr)
        return 2
    unknown = [k for k in preds if k not in labels]
    if unknown:
        print(
            f"pneumoview evaluate: {len(unknown)} predicted image(s) are not in {args.labels} (e.g. {unknown[0]}); "
            "the labels file must list every evaluated image",
            file=sys.stderr,
        )
        return 2
    gt = {}
    for pid in preds:
        row = findings.get(pid)
        shape = (int(row["rows"]), int(row["cols"])) if row else (args.image_size, args.image_size)
        gt[pid] = scale_boxes(labels[pid], shape)
    _warn_trained_on(list(preds), args)
    result = rsna_map(gt, preds)
    print(
        f"images evaluated: {len(preds)} ({result.n_scored} scored, {result.n_skipped} skipped: no truth, no box)"
    )
    print(f"RSNA mAP@[.40:.75]: {result.map:.4f}")
    positives = [k for k, v in gt.items() if len(v)]
    if positives:
        pos = [result.per_image[k] for k in positives]
        print(f"  on the {len(positives)} images with opacity: {np.mean(pos):.4f}")
    neg_scored = [k for k, v in gt.items() if not len(v) and result.per_image[k] is not None]
    print(f"  false-positive images (no truth, some box): {len(neg_scored)}")
    if args.per_image:
        with open(args.per_image, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["patientId", "n_truth", "n_pred", "score"])
            for k, v in result.per_image.items():
                w.writerow([k, len(gt[k]), len(preds[k][0]), "" if v is None else f"{v:.4f}"])
        print(f"per-image scores: {args.per_image}")
    if classes:
        ids = [k for k in preds if k in classes and k in findings and findings[k]["p_normal"] != ""]
        if not ids:
            print(
                "classifier metrics: no image has both a class label and classifier probabilities (--findings)"
            )
        else:
            y = np.array([RSNA_CLASSES.index(classes[k]) for k in ids])
            probs = np.array(
                [
                    [float(findings[k][c]) for c in ("p_normal", "p_not_normal_no_opacity", "p_opacity")]
                    for k in ids
                ]
            )
            rep = classification_report(y, probs, RSNA_CLASSES)
            _print_report(rep, len(ids))
    return 0


def _print_report(rep, n: int) -> None:
    d = rep.to_dict()
    print(f"classifier ({n} images): accuracy {d['accuracy']:.4f}, macro ROC AUC {_f(d.get('macro_auc'))}")
    print(f"  {'class':32s} {'precision':>9s} {'recall':>7s} {'FPR':>6s} {'FNR':>6s} {'AUC':>6s}")
    for c in d["classes"]:
        print(
            f"  {c['name']:32s} {_f(c['precision']):>9s} {_f(c['recall']):>7s} {_f(c['fpr']):>6s} "
            f"{_f(c['fnr']):>6s} {_f(c['auc']):>6s}"
        )
    print("  confusion matrix (rows = truth, columns = predicted):")
    for row in d["confusion"]:
        print("   " + " ".join(f"{v:6d}" for v in row))


def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _warn_trained_on(image_ids: list[str], args: argparse.Namespace) -> None:
    """Warn (stderr) when evaluated images were in an installed model's training split: their scores are
    optimistic. The split is rebuilt from the data next to ``--labels`` (see :mod:`pneumoview.training.overlap`)."""
    from pneumoview.errors import PneumoViewError
    from pneumoview.inference.manifest import load_manifest, models_dirs
    from pneumoview.training.overlap import training_overlap

    try:
        manifest = load_manifest(models_dirs(args.models_dir), check_builders=False)
    except (PneumoViewError, OSError):
        return
    for o in training_overlap(image_ids, manifest.models.values(), args.labels.parent):
        if o.problem:
            print(
                f"note: cannot check for training images of {', '.join(o.models)}: {o.problem}",
                file=sys.stderr,
            )
        elif o.image_ids:
            shown = ", ".join(o.image_ids[:3]) + (" …" if len(o.image_ids) > 3 else "")
            print(
                f"warning: {len(o.image_ids)} of {len(image_ids)} evaluated images (or their patients) were in the "
                f"training split of {', '.join(o.models)} (e.g. {shown}), so these scores are optimistic; "
                "evaluate the validation split (tools/validation_split.py) for honest numbers",
                file=sys.stderr,
            )
