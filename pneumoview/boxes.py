"""Boxes and their geometry: the frozen :class:`BoxSet`, ``xywh``/``xyxy`` conversion, IoU, NMS, weighted box fusion
and shrinking.

Conventions (see :mod:`pneumoview.types`): every box is in the **original image's pixel frame**; box arrays are
``(N, 4)`` float32 ``[x, y, w, h]`` (x, y = top-left corner in pixels, w, h = size in pixels) unless a name says
``xyxy`` (``[x1, y1, x2, y2]`` with ``x2 = x + w``). Numpy only; :mod:`pneumoview.postprocess` builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SOURCES", "BoxSet", "iou_matrix", "nms", "shrink_boxes", "wbf_clusters", "xywh_to_xyxy", "xyxy_to_xywh",
]  # fmt: skip

SOURCES = ("detector", "segmentation", "fused")


# ------------------------------------------------------------------------------------------------------------
# Box sets and geometry
# ------------------------------------------------------------------------------------------------------------


def _as_boxes(boxes: Any, what: str = "boxes") -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite coordinates")
    return arr


def _as_scores(scores: Any, n: int, what: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float32).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{what} must have one value per box: {n} boxes but {arr.shape[0]} {what}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class BoxSet:
    """Boxes from one source (or the fused result), in the original image's pixel frame.

    Attributes:
        boxes: ``(N, 4)`` float32 ``[x, y, w, h]`` in pixels (read-only).
        scores: ``(N,)`` float32 confidences in ``[0, 1]`` (read-only).
        sources: one label per box: ``"detector"``, ``"segmentation"`` or ``"fused"`` (a final box that both
            sources support).
    """

    boxes: np.ndarray
    scores: np.ndarray
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        boxes = _as_boxes(self.boxes)
        scores = _as_scores(self.scores, len(boxes))
        sources = tuple(self.sources)
        if len(sources) != len(boxes):
            raise ValueError(
                f"sources must have one label per box: {len(boxes)} boxes but {len(sources)} labels"
            )
        bad = sorted(set(sources) - set(SOURCES))
        if bad:
            raise ValueError(f"unknown box source(s) {bad}; valid sources: {', '.join(SOURCES)}")
        object.__setattr__(self, "boxes", _readonly(boxes))
        object.__setattr__(self, "scores", _readonly(scores))
        object.__setattr__(self, "sources", sources)

    @classmethod
    def empty(cls) -> BoxSet:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), ())

    @classmethod
    def of(cls, boxes: Any, scores: Any, source: str) -> BoxSet:
        """All boxes from one source."""
        boxes = _as_boxes(boxes)
        return cls(boxes, scores, (source,) * len(boxes))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def xyxy(self) -> np.ndarray:
        """``(N, 4)`` float32 ``[x1, y1, x2, y2]`` in pixels."""
        return xywh_to_xyxy(self.boxes)

    def areas_px(self) -> np.ndarray:
        """``(N,)`` float64 box areas in px²."""
        return self.boxes[:, 2].astype(np.float64) * self.boxes[:, 3].astype(np.float64)

    def areas_mm2(self, spacing_mm: tuple[float, float] | None) -> np.ndarray | None:
        """``(N,)`` float64 box areas in mm² (w along columns, h along rows); None without a spacing."""
        if spacing_mm is None:
            return None
        return self.areas_px() * float(spacing_mm[0]) * float(spacing_mm[1])

    def take(self, index: Any) -> BoxSet:
        """A subset (index array or boolean mask), in the given order."""
        idx = np.arange(len(self))[index]
        return BoxSet(self.boxes[idx], self.scores[idx], tuple(self.sources[i] for i in idx))

    def sorted_by_score(self) -> BoxSet:
        """Highest score first; ties keep their order."""
        return self.take(np.argsort(-self.scores, kind="stable"))

    def with_boxes(self, boxes: np.ndarray) -> BoxSet:
        return BoxSet(boxes, self.scores, self.sources)


def _as_boxes64(boxes: Any) -> np.ndarray:
    """Checked like :func:`_as_boxes`, but kept in float64 so that a conversion rounds once, at the end."""
    _as_boxes(boxes)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()


def xywh_to_xyxy(boxes: Any) -> np.ndarray:
    """``[x, y, w, h]`` → ``[x1, y1, x2, y2]`` with ``x2 = x + w`` (float32, computed in float64)."""
    b = _as_boxes64(boxes)
    b[:, 2:] += b[:, :2]
    return b.astype(np.float32)


def xyxy_to_xywh(boxes: Any) -> np.ndarray:
    """``[x1, y1, x2, y2]`` → ``[x, y, w, h]`` (float32, computed in float64)."""
    b = _as_boxes64(boxes)
    b[:, 2:] -= b[:, :2]
    return b.astype(np.float32)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` float64 IoU of two sets of ``xyxy`` boxes; 0 where a box has no area."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, same rule as ``torchvision.ops.nms``.

    A box is dropped when its IoU with an already kept, higher-scored box is **greater than**
    ``iou_threshold``.

    Returns:
        int64 indices of the kept boxes, highest score first.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return np.zeros((0,), dtype=np.int64)
    iou = iou_matrix(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def wbf_clusters(
    views: Sequence[tuple[np.ndarray, np.ndarray]], iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, list[frozenset[int]]]:
    """Weighted box fusion of several views' ``xyxy`` boxes (same pixel frame), each ``(boxes (N, 4), scores (N,))``.

    Boxes of every view, highest score first (ties in view order), join the cluster whose current fused box they
    overlap most with ``IoU >= iou_threshold``, else start a new cluster. A cluster's box is the score-weighted mean of
    its members' corners; its confidence is the mean over **all** views of each view's best score in the cluster, so a
    box that only one of ``k`` views found keeps ``1/k`` of its score (an absent view counts as 0).

    Returns:
        ``(xyxy (M, 4) float64, scores (M,) float32, views present per cluster)``, in cluster-creation order.
    """
    xyxy = np.zeros((0, 4), dtype=np.float64)
    scores = np.zeros((0,), dtype=np.float32)
    view_of = np.zeros((0,), dtype=np.int64)
    for k, (b, sc) in enumerate(views):
        sc = np.asarray(sc, dtype=np.float32).reshape(-1)
        xyxy = np.concatenate([xyxy, np.asarray(b, dtype=np.float64).reshape(-1, 4)])
        scores = np.concatenate([scores, sc])
        view_of = np.concatenate([view_of, np.full(len(sc), k, dtype=np.int64)])
    order = np.argsort(-scores, kind="stable")
    members: list[list[int]] = []
    fused = np.zeros((0, 4), dtype=np.float64)
    for i in order:
        if len(members):
            iou = iou_matrix(xyxy[i : i + 1], fused)[0]
            j = int(np.argmax(iou))
            if iou[j] >= iou_threshold:
                members[j].append(int(i))
                idx = members[j]
                w = scores[idx].astype(np.float64)
                w = w if w.sum() > 0 else np.ones_like(w)
                fused[j] = (xyxy[idx] * w[:, None]).sum(axis=0) / w.sum()
                continue
        members.append([int(i)])
        fused = np.vstack([fused, xyxy[i]])
    out_scores: list[float] = []
    present: list[frozenset[int]] = []
    for idx in members:
        best: dict[int, float] = {}
        for i in idx:
            k = int(view_of[i])
            best[k] = max(best.get(k, 0.0), float(scores[i]))
        out_scores.append(sum(best.values()) / max(1, len(views)))
        present.append(frozenset(best))
    return fused, np.asarray(out_scores, dtype=np.float32), present


def shrink_boxes(boxes_xywh: Any, shrink: float) -> np.ndarray:
    """Scale each box's width and height by ``shrink`` around its centre (float32 ``xywh``)."""
    b = _as_boxes(boxes_xywh).astype(np.float64)
    if shrink == 1.0 or len(b) == 0:
        return b.astype(np.float32)
    cx = b[:, 0] + b[:, 2] / 2.0
    cy = b[:, 1] + b[:, 3] / 2.0
    w = b[:, 2] * shrink
    h = b[:, 3] * shrink
    return np.stack([cx - w / 2.0, cy - h / 2.0, w, h], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
# Segmentation → boxes
# ------------------------------------------------------------------------------------------------------------
