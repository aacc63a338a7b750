"""The classifier gate: how P(opacity) from the classifier prunes the final boxes.

The RSNA metric gives 0 to any box on an image without opacity, so a case-level probability that an image has an
opacity is used to drop boxes. Three rules (``Thresholds.gate_mode``), every probability and score in ``[0, 1]``:

- ``"hard"``: no box at all when ``P(opacity) < gate`` (the original rule; ``gate = 0`` turns it off);
- ``"product"``: each box's confidence becomes ``score × P(opacity)``; boxes whose product is below ``gate`` are
  dropped (a confident box survives a moderate P(opacity));
- ``"low_confidence"``: when ``P(opacity) < gate``, only boxes scoring below ``gate_box_score`` are dropped, so a
  box the detector is sure of is still shown.
"""

from __future__ import annotations

import numpy as np

from pneumoview.postprocess import BoxSet, apply_gate, check_p_opacity
from pneumoview.thresholds import GATE_MODES, Thresholds

__all__ = ["GATE_MODES", "gate_boxes", "gate_note"]


def gate_boxes(boxes: BoxSet, p_opacity: float | None, thresholds: Thresholds | None = None) -> BoxSet:
    """The final boxes after the gate in ``thresholds.gate_mode``; unchanged when ``p_opacity`` is None.

    Returns:
        the kept boxes, highest score first (with ``"product"``, their scores are ``score × P(opacity)``).
    """
    t = thresholds or Thresholds()
    p = check_p_opacity(p_opacity)
    if p is None or not len(boxes):
        return boxes
    if t.gate_mode == "hard":
        return apply_gate(boxes, p, t)
    if t.gate_mode == "product":
        scaled = BoxSet(boxes.boxes, boxes.scores * np.float32(p), boxes.sources)
        return scaled.take(scaled.scores >= t.gate).sorted_by_score()
    if p >= t.gate:
        return boxes
    return boxes.take(boxes.scores >= t.gate_box_score)


def gate_note(before: int, after: int, p_opacity: float | None, thresholds: Thresholds) -> str | None:
    """A sentence for the user when the gate removed boxes (or, for the hard gate, whenever it is closed)."""
    t = thresholds
    if p_opacity is None:
        return None
    if t.gate_mode == "hard":
        if p_opacity < t.gate:
            return f"P(opacity) gate: P(opacity) {p_opacity:.2f} < {t.gate:.2f}, so no boxes are reported."
        return None
    if after >= before:
        return None
    if t.gate_mode == "product":
        return (
            f"P(opacity) gate (product): {before - after} box(es) with score × P(opacity {p_opacity:.2f}) "
            f"< {t.gate:.2f} dropped."
        )
    return (
        f"P(opacity) gate (low confidence): P(opacity) {p_opacity:.2f} < {t.gate:.2f}, so {before - after} "
        f"box(es) scoring below {t.gate_box_score:.2f} dropped."
    )
