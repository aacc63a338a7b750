"""The classifier gate's three rules (hard, product, low-confidence), through Thresholds and postprocess."""

from __future__ import annotations

import numpy as np
import pytest

from pneumoview.gating import gate_boxes
from pneumoview.postprocess import BoxSet, postprocess
from pneumoview.thresholds import Thresholds

BOXES = BoxSet.of([[10, 10, 50, 80], [200, 40, 60, 90], [300, 300, 40, 40]], [0.95, 0.7, 0.55], "detector")


def test_hard_gate_is_the_default_and_all_or_nothing():
    t = Thresholds()
    assert t.gate_mode == "hard" and t.gate == 0.1
    assert len(gate_boxes(BOXES, 0.09, t)) == 0
    assert len(gate_boxes(BOXES, 0.10, t)) == 3
    assert len(gate_boxes(BOXES, None, t)) == 3


def test_product_gate_scales_scores_and_drops_low_products():
    t = Thresholds(gate_mode="product", gate=0.3)
    kept = gate_boxes(BOXES, 0.5, t)
    np.testing.assert_allclose(kept.scores, [0.475, 0.35])
    np.testing.assert_array_equal(kept.boxes, BOXES.boxes[:2])
    assert len(gate_boxes(BOXES, 0.2, t)) == 0  # 0.95 × 0.2 < 0.3
    np.testing.assert_allclose(gate_boxes(BOXES, 1.0, t).scores, BOXES.scores)


def test_low_confidence_gate_keeps_sure_boxes_only_when_p_is_low():
    t = Thresholds(gate_mode="low_confidence", gate=0.4, gate_box_score=0.9)
    low = gate_boxes(BOXES, 0.1, t)
    assert len(low) == 1 and low.scores[0] == pytest.approx(0.95)
    assert len(gate_boxes(BOXES, 0.4, t)) == 3
    assert gate_boxes(BOXES, 0.1, t.replace(gate_box_score=0.0)).scores.tolist() == BOXES.scores.tolist()


def test_gate_settings_are_validated_and_old_settings_still_load():
    with pytest.raises(ValueError, match="gate_mode.*hard, product, low_confidence"):
        Thresholds(gate_mode="soft")
    with pytest.raises(ValueError, match="gate_box_score"):
        Thresholds(gate_box_score=1.5)
    old = Thresholds.from_dict({"gate": 0.4, "det_score": 0.6})  # saved before gate_mode existed
    assert old.gate_mode == "hard" and old.gate_box_score == 0.8
    assert Thresholds.from_dict(Thresholds(gate_mode="product").to_dict()).gate_mode == "product"


def test_postprocess_notes_say_what_the_gate_did():
    det = {"det_boxes": BOXES.boxes, "det_scores": BOXES.scores, "image_shape": (512, 512)}
    f = postprocess(det, Thresholds(fusion="detector", det_score=0.5, gate=0.3), p_opacity=0.2)
    assert f.gated and len(f.fused) == 0 and "P(opacity) 0.20 < 0.30" in f.notes[-1]
    f = postprocess(
        det, Thresholds(fusion="detector", det_score=0.5, gate_mode="product", gate=0.3), p_opacity=0.5
    )
    assert f.gated and len(f.fused) == 2 and "1 box(es)" in f.notes[-1]
    f = postprocess(
        det, Thresholds(fusion="detector", det_score=0.5, gate_mode="low_confidence", gate=0.3), p_opacity=0.6
    )
    assert not f.gated and len(f.fused) == 3 and not f.notes
