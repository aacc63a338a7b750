"""Post-processing settings: one frozen, validated value saved next to every output.

All probabilities and fractions are plain floats in ``[0, 1]``. Areas are stored as a fraction of the image
area so that a setting means the same physical size at any resolution of the same radiograph; ``min_area_mm2``
converts it to mm² when the pixel spacing is known."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from dataclasses import replace as dc_replace
from typing import Any

# Seed 001 keeps a region when its bounding box covers more than 25,000 px² of the 1024×1024 image (≈ 2.38 %).
SEED001_MIN_BBOX_AREA_PX = 25_000
SEED001_IMAGE_SIZE = 1024
SEED001_MIN_AREA_FRACTION = SEED001_MIN_BBOX_AREA_PX / SEED001_IMAGE_SIZE**2

FUSION_MODES = ("wbf", "nms", "detector", "segmentation", "union")
CONFIDENCE_MODES = ("mean_prob", "foreground_fraction")
MODES = ("default", "seed001")
GATE_MODES = ("hard", "product", "low_confidence")

_CHOICES: dict[str, tuple[str, ...]] = {
    "fusion": FUSION_MODES,
    "confidence": CONFIDENCE_MODES,
    "mode": MODES,
    "gate_mode": GATE_MODES,
}
# (low, high, low_inclusive): every numeric field is a fraction; the bounds say which ends make sense.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "seg_threshold": (0.0, 1.0, True),
    "min_area_fraction": (0.0, 1.0, True),
    "shrink": (0.0, 1.0, False),
    "det_score": (0.0, 1.0, True),
    "nms_iou": (0.0, 1.0, False),
    "fusion_iou": (0.0, 1.0, False),
    "gate": (0.0, 1.0, True),
    "gate_box_score": (0.0, 1.0, True),
}
_DESCRIPTIONS = {
    "seg_threshold": "a probability",
    "min_area_fraction": "a fraction of the image area",
    "shrink": "the fraction of width and height kept",
    "det_score": "a detector score",
    "nms_iou": "an IoU",
    "fusion_iou": "an IoU",
    "gate": "a probability",
    "gate_box_score": "a box score",
}


@dataclass(frozen=True)
class Thresholds:
    """Every knob of box extraction, fusion and gating.

    The defaults of ``shrink``, ``det_score``, ``fusion`` and ``gate`` were chosen by ``pneumoview tune`` on
    out-of-fold predictions: models trained on four fifths of the shipped models' training split, scoring the
    other fifth (README, "Levers tried"). The shipped segmenters' boxes added more false positives than hits
    there, so by default the final boxes are the detector's and the segmentation ensemble gives the map.

    Attributes:
        seg_threshold: a pixel is foreground when its ensemble probability is **greater than** this (seed 001
            uses argmax of two channels, i.e. ``> 0.5``).
        min_area_fraction: a segmentation region is kept when its bounding-box area divided by the image area
            is **greater than** this. The default is seed 001's 25,000 px² on a 1024×1024 image (≈ 2.38 %).
        shrink: fraction of a box's width and height kept after shrinking it around its centre; applied to the
            boxes of both sources before fusion. 0.875 is the public RSNA solution's value; seed 001's "5 %
            off each side" is 0.9 in this convention; 1.0 turns shrinking off.
        det_score: detector boxes with a score below this are dropped (``score >= det_score`` is kept).
        nms_iou: non-maximum suppression of detector boxes; a box is suppressed when its IoU with a
            higher-scored box is greater than this (torchvision's rule).
        fusion: how the final boxes combine the two sources: ``"wbf"`` (weighted box fusion), ``"nms"`` (NMS
            across sources at ``fusion_iou``), ``"detector"`` or ``"segmentation"`` (one source only),
            ``"union"`` (all boxes of both sources, unmerged).
        fusion_iou: boxes of the two sources are merged (WBF) or suppressed (NMS) at this IoU.
        gate: the classifier gate's threshold; its meaning depends on ``gate_mode`` (see :mod:`pneumoview.gating`).
            With the default ``"hard"`` mode no final box is reported when P(opacity) is below this; 0 disables it.
        confidence: a segmentation box's score: ``"mean_prob"`` (mean probability over the region's pixels) or
            ``"foreground_fraction"`` (seed 001: fraction of the bounding box that is foreground).
        mode: ``"default"`` or ``"seed001"`` (segmentation boxes exactly as seed 001 computes them; see
            :meth:`seed001` for the full seed-001 preset).
        gate_mode: ``"hard"`` (above), ``"product"`` (a box's score becomes score × P(opacity) and boxes below
            ``gate`` are dropped) or ``"low_confidence"`` (when P(opacity) < ``gate``, only boxes scoring below
            ``gate_box_score`` are dropped).
        gate_box_score: the box score a box needs to survive a closed ``"low_confidence"`` gate.
    """

    seg_threshold: float = 0.5
    min_area_fraction: float = SEED001_MIN_AREA_FRACTION
    shrink: float = 0.95
    det_score: float = 0.6
    nms_iou: float = 0.3
    fusion: str = "detector"
    fusion_iou: float = 0.4
    gate: float = 0.1
    confidence: str = "mean_prob"
    mode: str = "default"
    gate_mode: str = "hard"
    gate_box_score: float = 0.8

    def __post_init__(self) -> None:
        for name, (low, high, low_inclusive) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"threshold '{name}' must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"threshold '{name}' must be a finite number, got {value!r}")
            too_low = value < low if low_inclusive else value <= low
            if too_low or value > high:
                bracket = "[" if low_inclusive else "("
                raise ValueError(
                    f"threshold '{name}' is {_DESCRIPTIONS[name]} and must lie in "
                    f"{bracket}{low:g}, {high:g}], got {value:g}"
                )
            object.__setattr__(self, name, value)
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"threshold '{name}' must be one of {', '.join(choices)}; got {value!r}")

    @classmethod
    def seed001(cls) -> Thresholds:
        """Seed 001's complete post-processing: segmentation only, no classifier gate, seed-001 box rules."""
        return cls(
            seg_threshold=0.5,
            min_area_fraction=SEED001_MIN_AREA_FRACTION,
            shrink=0.9,
            fusion="segmentation",
            gate=0.0,
            confidence="foreground_fraction",
            mode="seed001",
        )

    def replace(self, **changes: Any) -> Thresholds:
        """A copy with some fields changed (validated like the constructor)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ValueError(_unknown_keys_message(unknown))
        return dc_replace(self, **changes)

    def to_dict(self) -> dict[str, float | str]:
        """Plain JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """Build from a (possibly partial) mapping; missing keys take their defaults.

        Raises:
            ValueError: for unknown keys (the message lists the valid ones) or out-of-range values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"thresholds must be a mapping of name → value, got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in field_names())
        if unknown:
            raise ValueError(_unknown_keys_message(unknown))
        return cls(**dict(data))


def field_names() -> tuple[str, ...]:
    """Names of the :class:`Thresholds` fields, in declaration order."""
    return tuple(f.name for f in fields(Thresholds))


def _unknown_keys_message(unknown: list[str]) -> str:
    return f"unknown threshold key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(field_names())}"


def min_area_mm2(
    thresholds: Thresholds, image_shape: tuple[int, int], spacing_mm: tuple[float, float] | None
) -> float | None:
    """The minimum bounding-box area of a segmentation region in mm², or None when the spacing is unknown.

    Args:
        thresholds: the settings (uses ``min_area_fraction``).
        image_shape: ``(rows, cols)`` of the original image in pixels.
        spacing_mm: ``(row_mm, col_mm)`` pixel spacing.
    """
    if spacing_mm is None:
        return None
    rows, cols = image_shape
    return float(thresholds.min_area_fraction * rows * cols * spacing_mm[0] * spacing_mm[1])


def min_area_px(thresholds: Thresholds, image_shape: tuple[int, int]) -> float:
    """The minimum bounding-box area in px² for a ``(rows, cols)`` image (default: 25,000 px² at 1024²)."""
    return float(thresholds.min_area_fraction * image_shape[0] * image_shape[1])
