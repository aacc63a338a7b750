"""From model outputs to the boxes PneumoView reports: thresholding, box extraction, NMS, fusion and gating.

Pure numpy + scikit-image (no torch), so the GUI can re-run it on every threshold change.

Conventions (see :mod:`pneumoview.types`): every box is in the **original image's pixel frame**; box arrays
are ``(N, 4)`` float32 ``[x, y, w, h]`` (x, y = top-left corner in pixels, w, h = size in pixels) unless a
name says ``xyxy`` (``[x1, y1, x2, y2]`` with ``x2 = x + w``). Probability maps are float ``(H, W)`` in
``[0, 1]`` on the same pixel grid as the original image. Areas are in px², or mm² when the spacing is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from pneumoview.boxes import (
    SOURCES,
    BoxSet,
    _as_boxes,
    _as_scores,
    iou_matrix,
    nms,
    shrink_boxes,
    wbf_clusters,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from pneumoview.masks import foreground_mask
from pneumoview.thresholds import (
    SEED001_IMAGE_SIZE,
    SEED001_MIN_BBOX_AREA_PX,
    Thresholds,
    min_area_mm2,
    min_area_px,
)

__all__ = [
    "SOURCES",
    "BoxSet",
    "Findings",
    "ResultLike",
    "Thresholds",
    "apply_gate",
    "check_p_opacity",
    "boxes_from_probability",
    "boxes_to_prediction_string",
    "filter_detections",
    "fuse",
    "iou_matrix",
    "min_area_mm2",
    "nms",
    "parse_prediction_string",
    "postprocess",
    "seed001_boxes",
    "shrink_boxes",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]


def _check_prob_map(prob_map: Any) -> np.ndarray:
    prob = np.asarray(prob_map)
    if prob.ndim != 2 or prob.shape[0] == 0 or prob.shape[1] == 0:
        raise ValueError(f"the probability map must be a non-empty 2-D (H, W) array, got shape {prob.shape}")
    if prob.dtype != np.float32:
        prob = prob.astype(np.float32)
    return prob


def boxes_from_probability(prob_map: np.ndarray, thresholds: Thresholds | None = None) -> BoxSet:
    """Boxes around the connected regions of a thresholded probability map.

    Steps: foreground = ``prob > seg_threshold`` → 8-connected components (``skimage.measure.label``,
    connectivity 2) → bounding box of each → keep it when ``bbox_area / image_area > min_area_fraction`` →
    confidence (``mean_prob``: mean probability over the region's own pixels; ``foreground_fraction``: seed
    001's fraction of foreground pixels inside the bounding box) → shrink by ``shrink`` around the centre.
    With ``thresholds.mode == "seed001"`` the seed's integer arithmetic is used instead
    (:func:`seed001_boxes`).

    Args:
        prob_map: ``(H, W)`` probabilities in ``[0, 1]`` on the original image's pixel grid.
        thresholds: the settings; defaults when None.

    Returns:
        boxes in pixels of ``prob_map``, highest confidence first, all labelled ``"segmentation"``.
    """
    t = thresholds or Thresholds()
    prob = _check_prob_map(prob_map)
    if t.mode == "seed001":
        # round() so that shrink=0.9 gives exactly seed 001's 0.05 (1 - 0.9 is 0.0999…98 in binary).
        return seed001_boxes(
            prob,
            out_shape=prob.shape,
            threshold=t.seg_threshold,
            min_bbox_area=min_area_px(t, prob.shape),
            reduction=round((1.0 - t.shrink) / 2.0, 12),
        )
    mask = foreground_mask(prob, t.seg_threshold)
    if not mask.any():
        return BoxSet.empty()
    labels = sk_label(mask, connectivity=2)
    # find_objects gives the same bounding boxes as regionprops without building a Python object per region,
    # which matters on noisy maps with thousands of specks (60 ms → 3 ms at 1024²).
    slices = ndi.find_objects(labels)
    min_area = min_area_px(t, prob.shape)
    rows: list[tuple[float, float, float, float]] = []
    confs: list[float] = []
    for k, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        h = sl[0].stop - sl[0].start
        w = sl[1].stop - sl[1].start
        if h * w <= min_area:
            continue
        if t.confidence == "mean_prob":
            conf = float(prob[sl][labels[sl] == k].mean(dtype=np.float64))
        else:
            conf = float(mask[sl].mean(dtype=np.float64))
        rows.append((sl[1].start, sl[0].start, w, h))
        confs.append(conf)
    if not rows:
        return BoxSet.empty()
    boxes = shrink_boxes(np.asarray(rows, dtype=np.float64), t.shrink)
    return BoxSet.of(boxes, confs, "segmentation").sorted_by_score()


def _nearest_resize(mask: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 0/1 mask, identical to ``skimage.transform.resize(order=0)``."""
    h, w = mask.shape
    oh, ow = out_shape
    if (oh, ow) == (h, w):
        return mask
    if oh % h == 0 and ow % w == 0:
        # For an integer factor f, resize(order=0) samples input index round((i + 0.5) / f - 0.5) = i // f.
        return np.repeat(np.repeat(mask, oh // h, axis=0), ow // w, axis=1)
    # lazy: skimage is heavy and this path is rarely taken
    from skimage.transform import resize

    out = resize(mask.astype(np.uint8), out_shape, order=0, anti_aliasing=False, preserve_range=True)
    return out.astype(mask.dtype)


def seed001_boxes(
    prob_map: np.ndarray,
    *,
    out_shape: tuple[int, int] = (SEED001_IMAGE_SIZE, SEED001_IMAGE_SIZE),
    threshold: float = 0.5,
    min_bbox_area: float = SEED001_MIN_BBOX_AREA_PX,
    reduction: float = 0.05,
) -> BoxSet:
    """Seed 001's post-processing, exactly (``inference.py::pixelwise_to_rectangle_mask``).

    ``prob_map > threshold`` (seed 001 takes the argmax of two channels, i.e. P(opacity) > 0.5) →
    nearest-neighbour resize to ``out_shape`` (128 → 1024 is ×8) → ``skimage.measure.label`` (connectivity 2)
    → for each region in label order: bbox ``(y, x, y2, x2)``; skip when ``(y2 - y) * (x2 - x) <=
    min_bbox_area``; confidence = mean of the binary mask inside that bbox (a foreground fraction, not a
    probability); then ``rw = int(w * reduction)``, ``rh = int(h * reduction)``, ``x += rw, y += rh, w -= 2
    rw, h -= 2 rh``.

    Args:
        prob_map: probability of opacity on any grid (seed 001: 128×128).
        out_shape: ``(rows, cols)`` of the frame in which boxes are reported (seed 001: 1024×1024).
        threshold: foreground threshold (strict ``>``).
        min_bbox_area: bounding-box area in px² of ``out_shape`` that a region must exceed.
        reduction: fraction of width/height removed from **each** side (seed 001: 0.05).

    Returns:
        integer-valued boxes (stored as float32) in label order, labelled ``"segmentation"``.
    """
    mask = _nearest_resize(
        foreground_mask(_check_prob_map(prob_map), threshold).astype(np.uint8),
        (int(out_shape[0]), int(out_shape[1])),
    )
    mask = mask > 0.5
    labels = sk_label(mask, connectivity=2)
    rows: list[tuple[int, int, int, int]] = []
    confs: list[float] = []
    for region in regionprops(labels):
        y, x, y2, x2 = region.bbox
        height = y2 - y
        width = x2 - x
        if height * width <= min_bbox_area:
            continue
        conf = float(np.mean(mask[y:y2, x:x2]))
        rw = int(width * reduction)
        rh = int(height * reduction)
        rows.append((x + rw, y + rh, width - 2 * rw, height - 2 * rh))
        confs.append(conf)
    if not rows:
        return BoxSet.empty()
    return BoxSet.of(np.asarray(rows, dtype=np.float32), confs, "segmentation")


# ------------------------------------------------------------------------------------------------------------
# Detector boxes, fusion, gating
# ------------------------------------------------------------------------------------------------------------


def filter_detections(
    boxes: Any, scores: Any, thresholds: Thresholds | None = None, *, box_format: str = "xywh"
) -> BoxSet:
    """Keep detector boxes with ``score >= det_score``, then NMS at ``nms_iou``.

    Args:
        boxes: ``(N, 4)`` boxes in the original image's pixel frame, ``box_format`` ``"xywh"`` or ``"xyxy"``
            (torchvision detectors give ``xyxy``).
        scores: ``(N,)`` detector scores.
        thresholds: the settings; defaults when None.

    Returns:
        ``xywh`` boxes labelled ``"detector"``, highest score first (no shrinking here; :func:`postprocess`
        does it).
    """
    t = thresholds or Thresholds()
    if box_format not in ("xywh", "xyxy"):
        raise ValueError(f"box_format must be 'xywh' or 'xyxy', got {box_format!r}")
    b = _as_boxes(boxes, "detector boxes")
    s = _as_scores(scores, len(b), "detector scores")
    # Each format is derived once from the given one (no round trip), so the returned boxes are the input's.
    xywh, xyxy = (b, xywh_to_xyxy(b)) if box_format == "xywh" else (xyxy_to_xywh(b), b)
    ok = (s >= t.det_score) & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    keep = nms(xyxy[ok], s[ok], t.nms_iou)
    return BoxSet.of(xywh[ok][keep], s[ok][keep], "detector")


def _wbf(det: BoxSet, seg: BoxSet, iou_threshold: float) -> BoxSet:
    """Weighted box fusion of two sources (:func:`pneumoview.boxes.wbf_clusters` with the two as its views).

    A cluster's confidence is the mean over the two sources of each source's best score in it, so a box that only
    one source found keeps half its score; a cluster both support is labelled ``"fused"``."""
    fused, scores, present = wbf_clusters(
        [(xywh_to_xyxy(det.boxes), det.scores), (xywh_to_xyxy(seg.boxes), seg.scores)], iou_threshold
    )
    names = (det.sources[0] if len(det) else "detector", seg.sources[0] if len(seg) else "segmentation")
    sources = tuple("fused" if len(p) == 2 else names[next(iter(p))] for p in present)
    return BoxSet(xyxy_to_xywh(fused), scores, sources).sorted_by_score()


def fuse(det: BoxSet | None, seg: BoxSet | None, thresholds: Thresholds | None = None) -> BoxSet:
    """Combine detector and segmentation boxes into the final set, as ``thresholds.fusion`` says.

    ``None`` means that source was not run. With only one source run, ``"wbf"``, ``"nms"`` and ``"union"``
    return that source's boxes unchanged; ``"detector"``/``"segmentation"`` return an empty set when their
    source was not run. ``"wbf"``: see :func:`_wbf` (single-source boxes keep half their score); ``"nms"``:
    NMS over both sources at ``fusion_iou``, survivors keep their score and source; ``"union"``: all boxes of
    both.

    Returns:
        final boxes, highest score first.
    """
    t = thresholds or Thresholds()
    if t.fusion == "detector":
        return det.sorted_by_score() if det is not None else BoxSet.empty()
    if t.fusion == "segmentation":
        return seg.sorted_by_score() if seg is not None else BoxSet.empty()
    if det is None or seg is None:
        only = det if det is not None else seg
        return only.sorted_by_score() if only is not None else BoxSet.empty()
    both = BoxSet(
        np.concatenate([det.boxes, seg.boxes]),
        np.concatenate([det.scores, seg.scores]),
        det.sources + seg.sources,
    )
    if t.fusion == "union":
        return both.sorted_by_score()
    if t.fusion == "nms":
        return both.take(nms(both.xyxy(), both.scores, t.fusion_iou))
    return _wbf(det, seg, t.fusion_iou)


def check_p_opacity(p_opacity: float | None) -> float | None:
    """``p_opacity`` as a float, None kept; a ValueError naming it when it is not a probability in [0, 1]."""
    if p_opacity is None:
        return None
    p = float(p_opacity)
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"P(opacity) must be a probability in [0, 1], got {p_opacity!r}")
    return p


def apply_gate(boxes: BoxSet, p_opacity: float | None, thresholds: Thresholds | None = None) -> BoxSet:
    """The classifier gate: no boxes when ``P(opacity) < gate``; unchanged when ``p_opacity`` is None."""
    t = thresholds or Thresholds()
    p = check_p_opacity(p_opacity)
    if p is not None and p < t.gate:
        return BoxSet.empty()
    return boxes


# ------------------------------------------------------------------------------------------------------------
# The one call the CLI and GUI use
# ------------------------------------------------------------------------------------------------------------


class ResultLike(Protocol):
    """What :func:`postprocess` reads from a model result (any attribute may be None).

    ``prob_map``: ``(H, W)`` ensemble probability in the original frame; ``det_boxes``: ``(N, 4)`` ``xywh``
    (or ``xyxy`` with ``det_box_format="xyxy"``) in the original frame; ``det_scores``: ``(N,)``;
    ``p_opacity``: the classifier's P(opacity)."""

    @property
    def prob_map(self) -> np.ndarray | None: ...
    @property
    def det_boxes(self) -> np.ndarray | None: ...
    @property
    def det_scores(self) -> np.ndarray | None: ...
    @property
    def p_opacity(self) -> float | None: ...


@dataclass(frozen=True, eq=False)
class Findings:
    """The post-processed result for one image.

    Attributes:
        fused: the final boxes (after fusion and the classifier gate); ``sources`` says which model(s) found
            each.
        detector: the detector's boxes after score threshold, NMS and shrink (before the gate); None when no
            detector ran.
        segmentation: the segmentation ensemble's boxes (before the gate); None when no segmentation ran.
        thresholds: the settings used.
        image_shape: ``(rows, cols)`` of the original image.
        spacing_mm: ``(row_mm, col_mm)`` or None.
        p_opacity: the classifier's P(opacity), or None when no classifier ran.
        gated: True when the classifier gate closed (hard gate: ``p_opacity < thresholds.gate``) or, for the soft
            gates, removed at least one box (see :mod:`pneumoview.gating`).
        notes: sentences for the user about how the result was obtained.
    """

    fused: BoxSet
    detector: BoxSet | None
    segmentation: BoxSet | None
    thresholds: Thresholds
    image_shape: tuple[int, int]
    spacing_mm: tuple[float, float] | None = None
    p_opacity: float | None = None
    gated: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def areas_px(self) -> np.ndarray:
        """Final box areas in px²."""
        return self.fused.areas_px()

    @property
    def areas_mm2(self) -> np.ndarray | None:
        """Final box areas in mm², None when the spacing is unknown."""
        return self.fused.areas_mm2(self.spacing_mm)

    @property
    def positive(self) -> bool:
        """True when at least one final box is reported."""
        return len(self.fused) > 0

    def prediction_string(self) -> str:
        """The final boxes as an RSNA ``PredictionString``."""
        return boxes_to_prediction_string(self.fused.boxes, self.fused.scores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (boxes as lists of dicts, thresholds included)."""

        def box_list(bs: BoxSet | None) -> list[dict[str, Any]] | None:
            if bs is None:
                return None
            mm2 = bs.areas_mm2(self.spacing_mm)
            return [
                {
                    "x": float(b[0]),
                    "y": float(b[1]),
                    "w": float(b[2]),
                    "h": float(b[3]),
                    "score": float(s),
                    "source": src,
                    "area_px2": float(a),
                    "area_mm2": None if mm2 is None else float(mm2[i]),
                }
                for i, (b, s, src, a) in enumerate(
                    zip(bs.boxes, bs.scores, bs.sources, bs.areas_px(), strict=True)
                )
            ]

        return {
            "image_shape": list(self.image_shape),
            "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
            "p_opacity": self.p_opacity,
            "gated": self.gated,
            "boxes": box_list(self.fused),
            "detector": box_list(self.detector),
            "segmentation": box_list(self.segmentation),
            "prediction_string": self.prediction_string(),
            "min_area_mm2": min_area_mm2(self.thresholds, self.image_shape, self.spacing_mm),
            "thresholds": self.thresholds.to_dict(),
            "notes": list(self.notes),
        }


def _get(result: Any, name: str) -> Any:
    if result is None:
        return None
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)


def postprocess(
    result: ResultLike | Mapping[str, Any] | None = None,
    thresholds: Thresholds | None = None,
    *,
    prob_map: np.ndarray | None = None,
    det_boxes: np.ndarray | None = None,
    det_scores: np.ndarray | None = None,
    det_box_format: str = "xywh",
    p_opacity: float | None = None,
    image_shape: tuple[int, int] | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> Findings:
    """Boxes for one image from whatever models ran: the one call the CLI and the GUI use.

    Inputs come from ``result`` (attributes or keys ``prob_map``, ``det_boxes``, ``det_scores``,
    ``p_opacity``, ``image_shape``, ``spacing_mm``) and/or the keyword arguments, which win when not None.

    Pipeline: segmentation boxes (:func:`boxes_from_probability`, shrunk there); detector boxes
    (:func:`filter_detections`, then shrunk by ``shrink``); :func:`fuse`; :func:`apply_gate` on the final set
    only, so the per-source sets still show what each model found.

    Args:
        image_shape: ``(rows, cols)`` of the original image; taken from ``prob_map`` when omitted (required
            when there is no probability map).
        spacing_mm: ``(row_mm, col_mm)``, for areas in mm².

    Raises:
        ValueError: for inconsistent shapes, scores without boxes, or a P(opacity) outside ``[0, 1]``.
    """
    t = thresholds or Thresholds()
    prob_map = prob_map if prob_map is not None else _get(result, "prob_map")
    det_boxes = det_boxes if det_boxes is not None else _get(result, "det_boxes")
    det_scores = det_scores if det_scores is not None else _get(result, "det_scores")
    p = check_p_opacity(p_opacity if p_opacity is not None else _get(result, "p_opacity"))
    image_shape = image_shape if image_shape is not None else _get(result, "image_shape")
    spacing_mm = spacing_mm if spacing_mm is not None else _get(result, "spacing_mm")

    prob = _check_prob_map(prob_map) if prob_map is not None else None
    if image_shape is None:
        if prob is None:
            raise ValueError("image_shape is required when there is no probability map")
        image_shape = prob.shape
    shape = (int(image_shape[0]), int(image_shape[1]))
    if prob is not None and prob.shape != shape:
        raise ValueError(
            f"the probability map is {prob.shape[0]}×{prob.shape[1]} but the image is {shape[0]}×{shape[1]}; "
            "resize the map to the original image first"
        )
    if (det_boxes is None) != (det_scores is None):
        raise ValueError("detector boxes and scores must be given together")
    spacing = None if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))

    notes: list[str] = []
    seg = boxes_from_probability(prob, t) if prob is not None else None
    det = None
    if det_boxes is not None:
        det = filter_detections(det_boxes, det_scores, t, box_format=det_box_format)
        det = det.with_boxes(shrink_boxes(det.boxes, t.shrink))
    if t.fusion in ("detector", "segmentation") and (det if t.fusion == "detector" else seg) is None:
        notes.append(f"fusion '{t.fusion}' was chosen but that model did not run, so no boxes are reported.")
    fused = fuse(det, seg, t)
    from pneumoview.gating import gate_boxes, gate_note  # gating builds on BoxSet, defined here

    kept = gate_boxes(fused, p, t)
    note = gate_note(len(fused), len(kept), p, t)
    gated = note is not None
    if note:
        notes.append(note)
    fused = kept
    return Findings(
        fused=fused,
        detector=det,
        segmentation=seg,
        thresholds=t,
        image_shape=shape,
        spacing_mm=spacing,
        p_opacity=p,
        gated=gated,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------------------------------------------
# RSNA PredictionString
# ------------------------------------------------------------------------------------------------------------


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


def boxes_to_prediction_string(boxes: Any, scores: Any) -> str:
    """RSNA ``PredictionString``: ``"conf x y w h conf x y w h …"``; empty string when there are no boxes.

    Confidence with 4 decimals; ``x y w h`` (pixels, top-left corner) rounded half up to integers.
    """
    b = _as_boxes(boxes)
    s = _as_scores(scores, len(b))
    parts = [
        f"{float(c):.4f} {_round_half_up(x)} {_round_half_up(y)} {_round_half_up(w)} {_round_half_up(h)}"
        for c, (x, y, w, h) in zip(s, b.tolist(), strict=True)
    ]
    return " ".join(parts)


def parse_prediction_string(s: str | float | None) -> tuple[np.ndarray, np.ndarray]:
    """Parse an RSNA ``PredictionString`` into ``(boxes (N, 4) float32 xywh, scores (N,) float32)``.

    Empty, whitespace-only, None or NaN (an empty CSV cell read by pandas) give no boxes.

    Raises:
        ValueError: when the number of values is not a multiple of 5 or a value is not a number.
    """
    if s is None or (isinstance(s, float) and math.isnan(s)):
        tokens: Sequence[str] = []
    else:
        tokens = str(s).split()
    if len(tokens) % 5:
        raise ValueError(
            f"a PredictionString holds groups of 5 numbers (conf x y w h); got {len(tokens)} values: "
            f"{str(s)[:80]!r}"
        )
    try:
        values = np.asarray([float(v) for v in tokens], dtype=np.float64).reshape(-1, 5)
    except ValueError as exc:
        raise ValueError(f"a PredictionString must hold numbers only: {str(s)[:80]!r}") from exc
    return values[:, 1:].astype(np.float32).reshape(-1, 4), values[:, 0].astype(np.float32)
