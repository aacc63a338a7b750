"""Test-time augmentation (TTA) by horizontal flip, for each model family, and the numpy parts of zoom TTA.

Each function runs a model on a prepared batch ``x`` (``(B, C, H, W)`` in the model's input frame) and, when ``tta``
is on, also on the batch mirrored left–right, then combines the two in the same input frame:

- classifier: softmax probabilities averaged;
- segmenter: sigmoid probability maps averaged (the mirrored map is mirrored back first);
- detector: the mirrored image's boxes are mirrored back (``x1' = W - x2``) and merged with the original's by
  weighted box fusion (:func:`pneumoview.boxes.wbf_clusters`): a box both views found gets the mean of their scores
  and the score-weighted mean of their corners; a box only one view found keeps half its score.

Zoom TTA (:func:`zoom`, :func:`unzoom_boxes`, :func:`fuse_many`) is run by the engine around any runtime: each zoom
factor's batch goes through the flip TTA above, and the zooms' results are averaged (classifier) or fused again
(detector).

The torch functions import torch when called; the others are numpy only, so the
ONNX runtime (:mod:`pneumoview.inference.onnx_runtime`) shares them without importing torch.

A mirrored chest radiograph is anatomically implausible (the heart on the right), but the models see lung fields that
are nearly symmetric, and the RSNA boxes are in both lungs, which is why flip TTA was a common RSNA-challenge lever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from pneumoview.boxes import wbf_clusters

if TYPE_CHECKING:
    import torch

# Boxes of the two views are merged when their IoU is at least this (the usual WBF setting for flip TTA).
TTA_FUSION_IOU = 0.55


def classify(model: Any, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Class probabilities ``(B, K)`` float32 (softmax; mean over the original and mirrored image with ``tta``)."""
    # lazy: torch only for the eager runtime; the numpy helpers here serve ONNX Runtime without it
    import torch

    probs = torch.softmax(model(x).float(), dim=1)
    if tta:
        probs = 0.5 * (probs + torch.softmax(model(torch.flip(x, dims=[-1])).float(), dim=1))
    return probs


def segment(model: Any, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Opacity probability maps ``(B, H, W)`` float32 in the input frame (mean over both views with ``tta``)."""
    # lazy: torch only for the eager runtime
    import torch

    probs = torch.sigmoid(model(x).float())[:, 0]
    if tta:
        flipped = torch.sigmoid(model(torch.flip(x, dims=[-1])).float())[:, 0]
        probs = 0.5 * (probs + torch.flip(flipped, dims=[-1]))
    return probs


def _boxes_scores(d: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    keep = (d["labels"] == 1).cpu().numpy()
    return d["boxes"].float().cpu().numpy()[keep], d["scores"].float().cpu().numpy()[keep].astype(np.float32)


def fuse_views(
    boxes_a: np.ndarray, scores_a: np.ndarray, boxes_b: np.ndarray, scores_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted box fusion of two views' ``xyxy`` boxes (same pixel frame); returns ``(xyxy, scores)``, best first."""
    return fuse_many([(boxes_a, scores_a), (boxes_b, scores_b)])


def fuse_many(views: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted box fusion (:func:`pneumoview.boxes.wbf_clusters`, IoU :data:`TTA_FUSION_IOU`) of several views'
    ``xyxy`` boxes in one pixel frame; returns float32 ``(xyxy (M, 4), scores (M,))``, best first. A box only one of
    ``k`` views found keeps ``1/k`` of its score."""
    fused, scores, _ = wbf_clusters(views, TTA_FUSION_IOU)
    order = np.argsort(-scores, kind="stable")
    return fused[order].astype(np.float32).reshape(-1, 4), scores[order]


def zoom(x: np.ndarray, factor: float, fill: Sequence[float]) -> np.ndarray:
    """A prepared batch ``(B, C, H, W)`` float32 zoomed by ``factor`` about the image centre (bilinear).

    ``factor > 1`` magnifies (the border is cropped); ``factor < 1`` shrinks, and the uncovered border of channel
    ``c`` is ``fill[c]`` (the normalised value of black). A point at input pixel ``u`` (continuous coordinates, pixel
    edges at integers) moves to ``(u - W/2) * factor + W/2``; :func:`unzoom_boxes` maps boxes back.
    """
    x = np.asarray(x, dtype=np.float32)
    if factor == 1.0:
        return x
    _, _, h, w = x.shape
    # scipy's affine_transform maps output index i to input index i / f + offset (pixel centres at integers).
    offset = [0.0] + [(0.5 - n / 2.0) / factor + n / 2.0 - 0.5 for n in (h, w)]
    matrix = [1.0, 1.0 / factor, 1.0 / factor]
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        out[:, c] = ndi.affine_transform(
            x[:, c], matrix, offset=offset, order=1, mode="constant", cval=float(fill[c]), prefilter=False
        )
    return out


def unzoom_boxes(boxes: np.ndarray, factor: float, shape: tuple[int, int]) -> np.ndarray:
    """``xyxy`` boxes found on :func:`zoom`'s output, mapped back to the unzoomed input frame ``shape = (H, W)`` and
    clipped to it."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    h, w = shape
    b[:, [0, 2]] = ((b[:, [0, 2]] - w / 2.0) / factor + w / 2.0).clip(0, w)
    b[:, [1, 3]] = ((b[:, [1, 3]] - h / 2.0) / factor + h / 2.0).clip(0, h)
    return b.astype(np.float32)


def mirror_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """``xyxy`` boxes found on the left–right mirrored input, mapped back to the input frame (``x1' = W - x2``)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def detect(model: Any, x: torch.Tensor, tta: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, the opacity boxes ``(N, 4)`` ``xyxy`` in the input frame's pixels and their scores ``(N,)``."""
    # lazy: torch only for the eager runtime
    import torch

    batch = list(x.float())
    out = [_boxes_scores(d) for d in model(batch)]
    if not tta:
        return out
    width = float(x.shape[-1])
    mirrored = model([torch.flip(im, dims=[-1]) for im in batch])
    fused = []
    for (boxes, scores), d in zip(out, mirrored, strict=True):
        fb, fs = _boxes_scores(d)
        fused.append(fuse_views(boxes, scores, mirror_boxes(fb, width), fs))
    return fused
