"""What the viewer's widgets display, computed without Qt: window presets, box-table rows, image status,
measurements and readouts. Testable on its own; the widgets only put these values on screen.

Coordinates follow :mod:`pneumoview.types`: arrays ``[row, col]``, boxes ``[x, y, w, h]`` in original pixels,
spacing ``(row_mm, col_mm)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pneumoview.anatomy import Orientation, describe_boxes
from pneumoview.export import submission_id  # re-exported for the GUI's callers; export.py owns it
from pneumoview.findings_pipeline import (  # noqa: F401 - the statuses are read through this module too
    ERROR,
    FINDING,
    NO_FINDING,
    NON_IMAGE,
    NOT_ANALYSED,
    RUNNING,
    STATUS_LABELS,
    image_status,
)
from pneumoview.ground_truth import match_hits
from pneumoview.inference.manifest import load_manifest, models_dirs
from pneumoview.metrics import iou_xywh
from pneumoview.types import DEFAULT_SELECTION, AnalysisResult, Window, XrayImage

if TYPE_CHECKING:
    from pneumoview.postprocess import BoxSet, Findings

__all__ = [
    "BOX_SETS",
    "STATUS_LABELS",
    "WINDOW_PRESETS",
    "BoxRow",
    "box_rows",
    "data_range",
    "distance",
    "eta_text",
    "headline_text",
    "image_status",
    "pixel_readout",
    "submission_id",
    "window_preset",
]


# --------------------------------------------------------------------------------------------------------------
# Window / level presets
# --------------------------------------------------------------------------------------------------------------

WINDOW_PRESETS = ("file", "lung", "mediastinum", "bone", "full")

# Radiographs (CR/DX) are not calibrated like CT: there are no Hounsfield units, and the same tissue has different
# values from one detector, exposure and processing to the next. So the lung, mediastinum and bone presets are
# defined relative to the image's own robust range (0.5th to 99.5th percentile), as fractions ``(low, high)`` of it
# measured in the *display* direction (0 = shown black = least dense, 1 = shown white = densest), so they mean
# the same for MONOCHROME1 and MONOCHROME2:
#   lung        [0.00, 0.60]: the darker 60 %: lung fields with their vessels and opacities spread out;
#   mediastinum [0.30, 0.95]: heart, mediastinum and the soft tissue behind the diaphragm;
#   bone        [0.55, 1.00]: the brightest part: ribs, spine, clavicles.
_RELATIVE_PRESETS = {"lung": (0.0, 0.60), "mediastinum": (0.30, 0.95), "bone": (0.55, 1.0)}
PRESET_TITLES = {
    "file": "From the file",
    "lung": "Lung",
    "mediastinum": "Mediastinum",
    "bone": "Bone",
    "full": "Full range",
}


def data_range(values: np.ndarray, robust: bool = True) -> tuple[float, float]:
    """``(low, high)`` of an image's values: the 0.5th/99.5th percentiles (``robust``) or min/max.

    Percentiles are taken on at most ~250,000 evenly strided pixels, so it stays fast on large images.
    """
    arr = np.asarray(values)
    if arr.size == 0:
        return 0.0, 1.0
    step = max(1, int(math.sqrt(arr.size / 250_000)))
    sample = arr[::step, ::step] if arr.ndim == 2 else arr.reshape(-1)[:: step * step]
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    if robust:
        lo, hi = np.percentile(sample, [0.5, 99.5])
    else:
        lo, hi = float(np.min(arr)), float(np.max(arr))
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def window_preset(image: XrayImage, name: str) -> Window:
    """The window (in modality units) of a preset: ``"file"`` (the file's default), ``"full"`` (min to max),
    or ``"lung"`` / ``"mediastinum"`` / ``"bone"`` (relative to the data range, see the table above)."""
    if name not in WINDOW_PRESETS:
        raise ValueError(f"unknown window preset {name!r}; valid presets: {', '.join(WINDOW_PRESETS)}")
    if name == "file":
        return image.window
    if name == "full":
        lo, hi = data_range(image.modality, robust=False)
        return Window((lo + hi) / 2.0, hi - lo)
    lo, hi = data_range(image.modality)
    f0, f1 = _RELATIVE_PRESETS[name]
    if image.inverted:  # low modality values are shown white
        a, b = hi - f1 * (hi - lo), hi - f0 * (hi - lo)
    else:
        a, b = lo + f0 * (hi - lo), lo + f1 * (hi - lo)
    return Window((a + b) / 2.0, max(b - a, 1e-6))


def window_text(window: Window) -> str:
    """``"W 400  L 40"`` for the status bar: whole numbers from 100 up, else 3 significant digits."""

    def fmt(v: float) -> str:
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"

    return f"W {fmt(window.width)}  L {fmt(window.center)}"


def drag_window(window: Window, dx: float, dy: float, value_span: float) -> Window:
    """Window after a W/L drag of ``(dx, dy)`` screen pixels: right widens, down raises the level (as in most
    PACS viewers). ``value_span`` is the image's value range, so the speed suits any bit depth."""
    width = max(window.width * math.exp(dx * 0.005), value_span * 1e-4)
    center = window.center + dy * value_span * 0.002
    return Window(center, width)


# --------------------------------------------------------------------------------------------------------------
# Analysis results
# --------------------------------------------------------------------------------------------------------------


def gate_text(result: AnalysisResult | None, gate: float) -> str:
    """Which probability gates the boxes, its value and the gate: ``"Gate: P(Lung Opacity) = 0.23 (boxes need ≥
    0.30)"``; for acse4 ``"Gate: P(covid + lung_opacity + pneumonia) = 1 − P(normal) = 0.91 …"``. "calibrated"
    precedes the probability when it differs from the classes' softmax sum (the model's P(opacity) calibration),
    so the number beside the class bars is not mistaken for a typo; "classifier + detector" follows the classes
    when the probability also read the detector's top box score (the classifier's fusion). Empty when no classifier
    ran or it has no gate classes."""
    if result is None or result.p_opacity is None or not result.gate_classes:
        return ""
    names = " + ".join(result.gate_classes)
    rest = [c for c in result.class_names if c not in result.gate_classes]
    if len(result.gate_classes) > 1 and len(rest) == 1:
        names += f") = 1 − P({rest[0]}"
    need = f"boxes need ≥ {gate:.2f}" if gate > 0 else "gate off"
    if result.p_opacity_fused:
        return f"Gate: P({names} | classifier + detector) = {result.p_opacity:.2f} ({need})"
    raw = result.softmax_p_opacity
    calibrated = "calibrated " if raw is not None and abs(raw - result.p_opacity) > 5e-3 else ""
    return f"Gate: {calibrated}P({names}) = {result.p_opacity:.2f} ({need})"


def classifier_choices(models_dir: str | None, current: str) -> list[tuple[str, str]]:
    """``(id, label)`` for every installed classifier and classifier ensemble (label: id, classes and validation
    AUC when known); the ``current`` id is kept even when it is not installed (labelled so)."""
    try:
        manifest = load_manifest(models_dirs(models_dir), check_builders=False)
    except Exception:  # noqa: BLE001 - a broken manifest is reported elsewhere; the choice stays usable
        return [(current, f"{current} (not installed)")]
    specs = manifest.by_task("classify")
    out = []
    for s in sorted(specs, key=lambda s: (s.id != DEFAULT_SELECTION["classify"], s.id)):
        auc = s.metrics.get("macro_auc")
        label = f"{s.id} ({len(s.classes)} classes: {', '.join(s.classes)})"
        if isinstance(auc, int | float):
            label += f", validation macro AUC {auc:.2f}"
        out.append((s.id, label))
    ensembles = [e for e in manifest.ensembles.values() if e.task == "classify"]
    for e in sorted(ensembles, key=lambda e: (e.id != DEFAULT_SELECTION["classify"], e.id)):
        entry = (e.id, f"{e.id} (mean of {len(e.members)} classifiers: {', '.join(e.members)})")
        out.insert(0 if e.id == DEFAULT_SELECTION["classify"] else len(out), entry)
    if current not in {i for i, _ in out}:
        out.insert(0, (current, f"{current} (not installed)"))
    return out


def top_class(result: AnalysisResult | None) -> tuple[str, float] | None:
    """``(class name, probability)`` of the classifier's most probable class, or None when no classifier ran."""
    if result is None or result.class_probs is None or not len(result.class_names):
        return None
    k = int(np.argmax(result.class_probs))
    return str(result.class_names[k]), float(result.class_probs[k])


def headline_text(findings: Findings | None, result: AnalysisResult | None, running: bool = False) -> str:
    """The findings panel's headline: whether a box is reported (and why not), then the classifier's top class,
    so "no box" never reads as "normal" when the classifier's top class says otherwise."""
    status, text = image_status(findings, result)
    head = {FINDING: "Finding", NO_FINDING: "No box reported"}.get(status, "Not analysed")
    if status == NO_FINDING and text.startswith("no box"):
        text = text.removeprefix("no box").lstrip(", ")
    line = f"{head}: {text}" if text else head
    top = top_class(result)
    if top is not None:
        line += f" — classifier's top class: {top[0]} ({top[1] * 100:.0f} %)"
    if running:
        line += " (so far; analysing…)"
    return line


BOX_SETS = ("final", "detector", "segmentation")


@dataclass(frozen=True)
class BoxRow:
    """One row of the findings table. ``set`` is ``"final"``, ``"detector"`` or ``"segmentation"``; ``index`` the
    box's index in that set; ``source`` who found it; box in original pixels; areas in px² and mm² (None);
    ``side``/``zone`` in the patient's terms (:mod:`pneumoview.anatomy`); ``area_cm2`` (None without spacing);
    ``truth`` ``"hit"``/``"miss"`` against the radiologists' boxes (``""`` without labels); ``source_scores`` for a
    final box, each model's own confidence for it (``(("detector", 0.70), ("segmentation", None))``)."""

    set: str
    index: int
    source: str
    confidence: float
    x: float
    y: float
    w: float
    h: float
    area_px: float
    area_mm2: float | None
    side: str = ""
    zone: str = ""
    area_cm2: float | None = None
    truth: str = ""
    source_scores: tuple[tuple[str, float | None], ...] = ()


def boxset_of(findings: Findings, set_name: str) -> BoxSet | None:
    """The :class:`BoxSet` behind a table ``set`` name."""
    if set_name == "final":
        return findings.fused
    if set_name == "detector":
        return findings.detector
    if set_name == "segmentation":
        return findings.segmentation
    raise ValueError(f"unknown box set {set_name!r}; valid: {', '.join(BOX_SETS)}")


def source_scores(findings: Findings) -> list[tuple[tuple[str, float | None], ...]]:
    """Each model's own confidence for every final box, in ``findings.fused`` order: for every source that found
    the box (its ``sources`` label), the score of that source's box overlapping it most; None for a source that
    did not find it."""
    fused = findings.fused
    per_source: list[tuple[str, list[float | None]]] = []
    for name in ("detector", "segmentation"):
        bs = boxset_of(findings, name)
        if bs is None:
            continue
        scores: list[float | None] = [None] * len(fused)
        if len(bs) and len(fused):
            iou = iou_xywh(fused.boxes, bs.boxes)  # one (final × source) matrix, not one per row
            best = np.argmax(iou, axis=1)
            for i, src in enumerate(fused.sources):
                if src in ("fused", name) and iou[i, best[i]] > 0:
                    scores[i] = float(bs.scores[best[i]])
        per_source.append((name, scores))
    return [tuple((name, scores[i]) for name, scores in per_source) for i in range(len(fused))]


def box_rows(
    findings: Findings | None,
    sets: tuple[str, ...] = BOX_SETS,
    orientation: Orientation | None = None,
    truth: np.ndarray | None = None,
) -> list[BoxRow]:
    """Table rows: the final boxes first, then each source's own boxes, each set by descending confidence.

    ``orientation`` (default: the assumed standard display) gives each box its side and zone; ``truth``, the
    radiologists' ``(N, 4)`` boxes in the image's pixels, marks each box hit or miss
    (:data:`pneumoview.ground_truth.HIT_RULE`, within its own set)."""
    if findings is None:
        return []
    orientation = orientation or Orientation()
    rows: list[BoxRow] = []
    for name in sets:
        bs = boxset_of(findings, name)
        if bs is None or len(bs) == 0:
            continue
        areas = bs.areas_px()
        mm2 = bs.areas_mm2(findings.spacing_mm)
        hits = match_hits(bs.boxes, bs.scores, truth)[0] if truth is not None else None
        places = describe_boxes(bs.boxes, findings.image_shape, orientation, findings.spacing_mm)
        own = source_scores(findings) if name == "final" else None
        for i in np.argsort(-bs.scores, kind="stable"):
            x, y, w, h = (float(v) for v in bs.boxes[i])
            place = places[i]
            rows.append(
                BoxRow(
                    name, int(i), bs.sources[i], float(bs.scores[i]), x, y, w, h, float(areas[i]),
                    None if mm2 is None else float(mm2[i]), place.side, place.zone, place.area_cm2,
                    "" if hits is None else ("hit" if hits[i] else "miss"),
                    own[i] if own is not None else (),
                )
            )  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------------------------
# Canvas helpers
# --------------------------------------------------------------------------------------------------------------


def distance(
    p0: tuple[float, float], p1: tuple[float, float], spacing_mm: tuple[float, float] | None
) -> tuple[float, str]:
    """Length between two ``(x, y)`` points in pixels: ``(mm, "mm")`` when the spacing is known, else
    ``(px, "px")`` (x runs along columns, y along rows)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    if spacing_mm is None:
        return math.hypot(dx, dy), "px"
    return math.hypot(dx * spacing_mm[1], dy * spacing_mm[0]), "mm"


def pixel_readout(image: XrayImage, x: float, y: float) -> str | None:
    """Status-bar text for the pixel under ``(x, y)`` (image pixels), or None outside the image."""
    col, row = int(math.floor(x)), int(math.floor(y))
    rows, cols = image.shape
    if not (0 <= row < rows and 0 <= col < cols):
        return None
    value = float(image.modality[row, col])
    text = f"x {col}  y {row}  value {value:g}"
    if image.spacing_mm is not None:
        text += f"  ({col * image.spacing_mm[1]:.1f} mm, {row * image.spacing_mm[0]:.1f} mm)"
    return text


def eta_text(seconds: float | None) -> str:
    """``"ETA 1 min 05 s"``; ``"ETA …"`` while unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "ETA …"
    s = int(round(seconds))
    if s >= 3600:
        return f"ETA {s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"ETA {s // 60} min {s % 60:02d} s"
    return f"ETA {s} s"
