"""Evaluation metrics: the RSNA Pneumonia Detection Challenge mAP and classifier reports (numpy only, no
sklearn).

Boxes are ``(N, 4)`` ``[x, y, w, h]`` in pixels (x, y = top-left corner), as in the RSNA labels file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RSNA_IOU_THRESHOLDS: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)

__all__ = [
    "RSNA_IOU_THRESHOLDS",
    "ClassMetrics",
    "ClassificationReport",
    "MapResult",
    "bootstrap_se",
    "classification_report",
    "iou_xywh",
    "roc_auc",
    "rsna_image_score",
    "rsna_map",
]


# ------------------------------------------------------------------------------------------------------------
# RSNA mAP
# ------------------------------------------------------------------------------------------------------------


def _boxes(a: Any) -> np.ndarray:
    arr = np.asarray(a if a is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) [x, y, w, h], got {arr.shape}")
    return arr


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``xywh`` boxes; 0 for disjoint boxes or boxes without area.

    Same arithmetic as the community ``map_iou`` kernel: ``x2 = x + w``, intersection
    ``(min(x2) - max(x1)) * (min(y2) - max(y1))`` when both are positive.
    """
    a = _boxes(a)
    b = _boxes(b)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None, :]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None, :]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    valid = ((a[:, 2] > 0) & (a[:, 3] > 0))[:, None] & ((b[:, 2] > 0) & (b[:, 3] > 0))[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid & (union > 0), inter / union, 0.0)


def rsna_image_score(
    gt_boxes_xywh: Any,
    pred_boxes_xywh: Any,
    pred_scores: Any = None,
    *,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
    inclusive: bool = True,
) -> float | None:
    """One image's RSNA score: the mean over IoU thresholds of ``TP / (TP + FP + FN)``.

    Predictions are taken in descending confidence (ties keep their given order). At each threshold every
    ground-truth box, in its given order, is matched to the first not-yet-matched prediction whose IoU with it
    is a hit; matched GT boxes are TPs, unmatched GT boxes FNs, unmatched predictions FPs.

    Args:
        gt_boxes_xywh: ``(G, 4)`` ground-truth boxes (empty for a negative image).
        pred_boxes_xywh: ``(P, 4)`` predicted boxes.
        pred_scores: ``(P,)`` confidences; None means all equal (given order).
        thresholds: IoU thresholds (RSNA: 0.40, 0.45 … 0.75).
        inclusive: a hit is ``IoU >= t`` when True (the community ``map_iou`` kernel, the default) and
            ``IoU > t`` when False (the Kaggle evaluation text). They differ only when an IoU equals a
            threshold.

    Returns:
        the score in ``[0, 1]``; 0 for any prediction on an image without ground truth; None (not counted)
        when the image has neither ground truth nor predictions.
    """
    gt = _boxes(gt_boxes_xywh)
    pred = _boxes(pred_boxes_xywh)
    if len(gt) == 0 and len(pred) == 0:
        return None
    if len(pred) and pred_scores is not None:
        scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(pred):
            raise ValueError(f"{len(pred)} predicted boxes but {scores.shape[0]} scores")
        pred = pred[np.argsort(-scores, kind="stable")]
    if len(gt) == 0 or len(pred) == 0:
        return 0.0
    iou = iou_xywh(gt, pred)
    total = 0.0
    for t in thresholds:
        hit = iou >= t if inclusive else iou > t
        matched = np.zeros(len(pred), dtype=bool)
        tp = 0
        for i in range(len(gt)):
            candidates = np.flatnonzero(hit[i] & ~matched)
            if len(candidates):
                matched[candidates[0]] = True
                tp += 1
        fn = len(gt) - tp
        fp = len(pred) - tp
        total += tp / (tp + fp + fn)
    return total / len(thresholds)


@dataclass(frozen=True)
class MapResult:
    """RSNA mean average precision over a set of images.

    Attributes:
        map: mean of the per-image scores that are not None; NaN when no image counts.
        per_image: every image id → its score, None for skipped images (no GT and no prediction).
        n_scored: number of images in the mean.
        n_skipped: number of skipped images.
    """

    map: float
    per_image: dict[Any, float | None]
    n_scored: int
    n_skipped: int


def rsna_map(
    gt: Mapping[Any, Any],
    preds: Mapping[Any, tuple[Any, Any]],
    *,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
    inclusive: bool = True,
) -> MapResult:
    """The RSNA challenge score over images.

    Args:
        gt: image id → ``(G, 4)`` ground-truth ``xywh`` boxes; list **every** evaluated image, negatives with
            an empty array.
        preds: image id → ``(boxes (P, 4) xywh, scores (P,))``; a missing id means no prediction for that
            image.
        thresholds, inclusive: see :func:`rsna_image_score`.

    Raises:
        ValueError: when ``preds`` names images that ``gt`` does not list (so they cannot be scored).
    """
    unknown = [k for k in preds if k not in gt]
    if unknown:
        shown = ", ".join(map(str, unknown[:5]))
        raise ValueError(f"{len(unknown)} predicted image(s) have no ground-truth entry (e.g. {shown})")
    per_image: dict[Any, float | None] = {}
    for image_id, gt_boxes in gt.items():
        boxes, scores = preds.get(image_id, (None, None))
        per_image[image_id] = rsna_image_score(
            gt_boxes, boxes, scores, thresholds=thresholds, inclusive=inclusive
        )
    scored = [v for v in per_image.values() if v is not None]
    value = float(np.mean(scored)) if scored else math.nan
    return MapResult(value, per_image, len(scored), len(per_image) - len(scored))


# ------------------------------------------------------------------------------------------------------------
# Classifier metrics
# ------------------------------------------------------------------------------------------------------------


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 … end
    ranks_sorted = np.repeat(avg, ends - starts)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def roc_auc(y_true_binary: Any, scores: Any) -> float:
    """Area under the ROC curve by the Mann–Whitney U statistic (ties count one half).

    ``AUC = (sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos * n_neg)``.

    Returns:
        NaN when there are no positives or no negatives.
    """
    y = np.asarray(y_true_binary).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.shape[0]} labels but {s.shape[0]} scores")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _midranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bootstrap_se(
    statistic: Callable[[np.ndarray], float], n: int, *, resamples: int = 1000, seed: int = 0
) -> float:
    """Standard error of ``statistic(indices)`` by the bootstrap: ``resamples`` draws of ``n`` item indices with
    replacement (seeded, so a report is reproducible); resamples where the statistic is undefined (NaN, e.g. an AUC
    without a positive) are left out."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


@dataclass(frozen=True)
class ClassMetrics:
    """One class, one-vs-rest. Undefined ratios (0/0) are NaN.

    Attributes:
        support: number of samples whose true class is this one.
        tp, fp, fn, tn: one-vs-rest counts.
        precision: TP / (TP + FP).
        recall: TP / (TP + FN) (sensitivity).
        fpr: FP / (FP + TN).
        fnr: FN / (TP + FN).
        auc: one-vs-rest ROC AUC from the class probability; NaN when the class has no positives or no
            negatives.
    """

    name: str
    support: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    fpr: float
    fnr: float
    auc: float


@dataclass(frozen=True)
class ClassificationReport:
    """Classifier evaluation.

    Attributes:
        accuracy: fraction of samples whose argmax prediction equals the label.
        classes: per-class one-vs-rest metrics, in class-index order.
        confusion: ``(C, C)`` int64 counts, rows = true class, columns = predicted class.
        macro_auc: mean of the defined per-class AUCs; NaN when none is defined.
        notes: why a number is NaN, in words.
    """

    accuracy: float
    classes: tuple[ClassMetrics, ...]
    confusion: np.ndarray
    macro_auc: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as None)."""

        def clean(v: float) -> float | None:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "accuracy": clean(self.accuracy),
            "macro_auc": clean(self.macro_auc),
            "confusion": self.confusion.tolist(),
            "classes": [{k: clean(v) for k, v in vars(c).items()} for c in self.classes],
            "notes": list(self.notes),
        }


def classification_report(y_true: Any, probs: Any, class_names: Sequence[str]) -> ClassificationReport:
    """Accuracy, confusion matrix, per-class precision/recall/FPR/FNR and one-vs-rest ROC AUC.

    Args:
        y_true: ``(N,)`` integer class indices in ``[0, C)``.
        probs: ``(N, C)`` class probabilities (or any scores); predictions are the argmax. A ``(N,)`` array is
            read as P(class 1) of a binary classifier.
        class_names: ``C`` names, in class-index order.

    AUCs come from the probabilities (Mann–Whitney, ties = ½), not from hard labels (seed 002's bug).
    """
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    names = tuple(str(n) for n in class_names)
    if p.ndim != 2 or p.shape[0] != len(y):
        raise ValueError(f"probs must be (N, C) with N = {len(y)} labels, got shape {p.shape}")
    n_classes = p.shape[1]
    if len(names) != n_classes:
        raise ValueError(f"{n_classes} probability columns but {len(names)} class names")
    if len(y) == 0:
        raise ValueError("no samples to evaluate")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true holds class indices outside [0, {n_classes})")
    pred = np.argmax(p, axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    notes: list[str] = []
    classes: list[ClassMetrics] = []
    total = len(y)
    for c, name in enumerate(names):
        tp = int(confusion[c, c])
        fn = int(confusion[c].sum() - tp)
        fp = int(confusion[:, c].sum() - tp)
        tn = total - tp - fn - fp
        auc = roc_auc(y == c, p[:, c])
        if math.isnan(auc):
            which = "positives" if tp + fn == 0 else "negatives"
            notes.append(f"AUC of '{name}' is undefined: the labels hold no {which} for it.")
        if tp + fp == 0:
            notes.append(f"precision of '{name}' is undefined: the classifier never predicted it.")
        classes.append(
            ClassMetrics(
                name=name,
                support=tp + fn,
                tp=tp,
                fp=fp,
                fn=fn,
                tn=tn,
                precision=_ratio(tp, tp + fp),
                recall=_ratio(tp, tp + fn),
                fpr=_ratio(fp, fp + tn),
                fnr=_ratio(fn, tp + fn),
                auc=auc,
            )
        )
    aucs = [c.auc for c in classes if not math.isnan(c.auc)]
    macro = float(np.mean(aucs)) if aucs else math.nan
    confusion.setflags(write=False)
    return ClassificationReport(
        accuracy=float(np.trace(confusion) / total),
        classes=tuple(classes),
        confusion=confusion,
        macro_auc=macro,
        notes=tuple(notes),
    )
