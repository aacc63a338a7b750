"""``pneumoview evaluate``: RSNA mAP of a submission, per-image scores, and classifier metrics; or, with
``--class-folders ROOT``, a classifier's per-class ROC AUC and confusion matrix on a class-folder layout."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.calibration import expected_calibration_error
from pneumoview.errors import PneumoViewError
from pneumoview.metrics import bootstrap_se, classification_report, roc_auc, rsna_map
from pneumoview.rsna_labels import RSNA_CLASSES, read_classes, read_labels, scale_boxes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a submission.csv against RSNA labels (mAP@[.40:.75]) and classifier metrics",
        description="Score predictions exactly as the RSNA Pneumonia Detection Challenge did: per image, precision "
        "TP/(TP+FP+FN) averaged over IoU thresholds 0.40…0.75, then the mean over images; images with no truth and "
        "no prediction are skipped, images with no truth and any prediction score 0. Only the images in "
        "PREDICTIONS are evaluated. With --class-folders ROOT (seed 002's layout ROOT/<class>/<image>) it runs the "
        "classifier (--classifier ID) on every image instead and reports one-vs-rest ROC AUC per class from the "
        "probabilities and the confusion matrix. Exit status: 0 ok, 1 some images could not be read, 2 usage errors.",
    )
    p.add_argument(
        "predictions", type=Path, nargs="?", metavar="PREDICTIONS.csv", help="patientId,PredictionString"
    )
    p.add_argument("--labels", type=Path, help="stage_2_train_labels.csv (boxes in the 1024-px frame)")
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.commands.evaluate_classes import add_options

    add_options(p)
    p.add_argument(
        "--findings",
        type=Path,
        default=None,
        help="findings.csv of the same run: gives each image's size (boxes are scaled from the 1024-px label "
        "frame) and the class probabilities for classifier metrics (default: the findings.csv beside "
        "PREDICTIONS.csv, as pneumoview predict writes it)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="the images' size in pixels (N x N) when there is no findings.csv, e.g. 1024 for the RSNA "
        "challenge's own files; without it or a findings.csv the boxes' frame is unknown and nothing is scored",
    )
    p.add_argument(
        "--classes", type=Path, default=None, help="stage_2_detailed_class_info.csv → classifier metrics"
    )
    p.add_argument("--per-image", type=Path, default=None, metavar="CSV", help="write per-image scores here")
    p.set_defaults(run=run)


def read_submission(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.postprocess import parse_prediction_string

    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"patientId", "PredictionString"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: expected the header patientId,PredictionString")
        repeated = []
        for row in reader:
            pid = row["patientId"].strip()
            if pid in out:
                repeated.append(pid)
            out[pid] = parse_prediction_string(row["PredictionString"])
    if repeated:
        raise ValueError(
            f"{path}: {len(repeated)} patientId(s) appear more than once (e.g. {repeated[0]}), so some images "
            "would not be scored; give every image its own id (pneumoview predict does)"
        )
    return out


def read_findings(path: Path) -> dict[str, dict[str, str]]:
    """image_id → the first findings row of that image (size and probabilities are per image)."""
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["image_id"], row)
    return out


def run(args: argparse.Namespace) -> int:
    if args.class_folders is not None:
        # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
        from pneumoview.commands.evaluate_classes import run_class_folders

        return run_class_folders(args)
    if args.predictions is None or args.labels is None:
        print(
            "pneumoview evaluate: give PREDICTIONS.csv and --labels (RSNA), or --class-folders ROOT (classifier)",
            file=sys.stderr,
        )
        return 2
    findings_path = args.findings
    beside = Path(args.predictions).with_name("findings.csv")
    if findings_path is None and args.image_size is None and beside.is_file():
        findings_path = beside
        print(f"image sizes from {beside} (beside the predictions)")
    try:
        preds = read_submission(args.predictions)
        labels = read_labels(args.labels)
        findings = read_findings(findings_path) if findings_path else {}
        classes = read_classes(args.classes) if args.classes else {}
    except (OSError, ValueError, KeyError) as exc:
        print(f"pneumoview evaluate: {exc}", file=sys.stderr)
        return 2
    problem = _unscorable(preds, labels, findings, findings_path, args)
    if problem:
        print(f"pneumoview evaluate: {problem}", file=sys.stderr)
        return 2
    gt = {}
    for pid in preds:
        row = findings.get(pid)
        shape = (int(row["rows"]), int(row["cols"])) if row else (args.image_size, args.image_size)
        gt[pid] = scale_boxes(labels[pid], shape)
    _warn_trained_on(list(preds), args)
    result = rsna_map(gt, preds)
    _print_map(result, gt, len(preds))
    if args.per_image:
        _write_per_image(args.per_image, result, gt, preds)
    if classes:
        _print_classifier_metrics(preds, findings, classes)
    return 0


def _unscorable(
    preds: dict[str, Any],
    labels: dict[str, Any],
    findings: dict[str, dict[str, str]],
    findings_path: Path | None,
    args: argparse.Namespace,
) -> str | None:
    """Why the predictions cannot be scored (boxes without a frame, images without labels), or None."""
    frameless = [k for k in preds if k not in findings]
    if frameless and args.image_size is None:
        where = f"{findings_path} has no row for" if findings_path else "no findings.csv gives the size of"
        return (
            f"{where} {len(frameless)} predicted image(s) (e.g. {frameless[0]}), so the "
            "frame of their boxes is unknown; give --findings FINDINGS.csv (predict writes it beside "
            "submission.csv) or --image-size N (1024 for the RSNA challenge's files)"
        )
    unknown = [k for k in preds if k not in labels]
    if unknown:
        return (
            f"{len(unknown)} predicted image(s) are not in {args.labels} (e.g. {unknown[0]}); "
            "the labels file must list every evaluated image"
        )
    return None


def _print_map(result: Any, gt: dict[str, np.ndarray], n_images: int) -> None:
    print(
        f"images evaluated: {n_images} ({result.n_scored} scored, {result.n_skipped} skipped: no truth, no box)"
    )
    values = np.array([np.nan if v is None else v for v in result.per_image.values()], dtype=np.float64)
    se = bootstrap_se(
        lambda i: float(np.nanmean(values[i])) if np.isfinite(values[i]).any() else math.nan, len(values)
    )
    print(f"RSNA mAP@[.40:.75]: {result.map:.4f} ± {se:.4f} (bootstrap standard error over images)")
    positives = [k for k, v in gt.items() if len(v)]
    if positives:
        pos = [v for k in positives if (v := result.per_image[k]) is not None]  # a positive is always scored
        print(f"  on the {len(positives)} images with opacity: {np.mean(pos):.4f}")
    neg_scored = [k for k, v in gt.items() if not len(v) and result.per_image[k] is not None]
    print(f"  false-positive images (no truth, some box): {len(neg_scored)}")


def _write_per_image(
    path: Path, result: Any, gt: dict[str, np.ndarray], preds: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patientId", "n_truth", "n_pred", "score"])
        for k, v in result.per_image.items():
            w.writerow([k, len(gt[k]), len(preds[k][0]), "" if v is None else f"{v:.4f}"])
    print(f"per-image scores: {path}")


def _print_classifier_metrics(
    preds: dict[str, Any], findings: dict[str, dict[str, str]], classes: dict[str, str]
) -> None:
    ids = [k for k in preds if k in classes and k in findings and _has_rsna3(findings[k])]
    if not ids:
        print(
            "classifier metrics: no image has both a class label and rsna3 classifier probabilities (--findings)"
        )
        return
    y = np.array([RSNA_CLASSES.index(classes[k]) for k in ids])
    probs = np.array([[float(_first(findings[k], *names)) for names in _RSNA3_COLUMNS] for k in ids])
    rep = classification_report(y, probs, RSNA_CLASSES)
    _print_report(rep, len(ids))
    _print_p_opacity(ids, findings, classes)


def _print_p_opacity(ids: list[str], findings: dict[str, dict[str, str]], classes: dict[str, str]) -> None:
    """The P(opacity) the user saw (calibrated, with header facts when the model has them): AUC and ECE."""
    ids = [k for k in ids if findings[k].get("p_opacity", "") != ""]
    if not ids:
        return
    y = np.array([classes[k] == RSNA_CLASSES[2] for k in ids], dtype=float)
    p = np.array([float(findings[k]["p_opacity"]) for k in ids])
    se = bootstrap_se(lambda i: roc_auc(y[i], p[i]), len(ids))
    print(
        f"P(opacity) as reported (opacity vs rest, {len(ids)} images): ROC AUC {roc_auc(y, p):.3f} ± {se:.3f}, "
        f"expected calibration error {expected_calibration_error(p, y):.3f} (10 bins), "
        f"mean {p.mean():.3f} vs prevalence {y.mean():.3f}"
    )


# findings.csv columns of the rsna3 classes: p_<class> since per-class columns, the older names after them.
_RSNA3_COLUMNS = (
    ("p_normal",),
    ("p_no_lung_opacity_not_normal", "p_not_normal_no_opacity"),
    ("p_lung_opacity", "p_opacity"),
)


def _has_rsna3(row: dict[str, str]) -> bool:
    return all(any(row.get(n, "") != "" for n in names) for names in _RSNA3_COLUMNS)


def _first(row: dict[str, str], *names: str) -> str:
    return next(row[n] for n in names if row.get(n, "") != "")


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
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.manifest import load_manifest, models_dirs

    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
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
