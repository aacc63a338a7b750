"""One mask rule (``prob > threshold``) and one outline for the viewer, the annotated PNG and the segmentation
boxes (pneumoview.masks)."""

from __future__ import annotations

import numpy as np

from pneumoview.masks import foreground_mask, mask_outline
from pneumoview.postprocess import boxes_from_probability
from pneumoview.render import MASK_OUTLINE_COLOUR, line_width_for, render_annotated
from pneumoview.thresholds import Thresholds


def _blob() -> np.ndarray:
    prob = np.zeros((40, 50), np.float32)
    prob[10:30, 12:40] = 0.6
    prob[18:22, 20:24] = 0.5  # exactly at the threshold below: background
    return prob


def test_threshold_is_strict_everywhere():
    prob = _blob()
    mask = foreground_mask(prob, 0.5)
    assert mask.sum() == 20 * 28 - 16
    boxes = boxes_from_probability(prob, Thresholds(seg_threshold=0.5, min_area_fraction=0.0, shrink=1.0))
    assert boxes.boxes.tolist() == [[12, 10, 28, 20]]
    assert not foreground_mask(prob, 0.6).any()


def test_outline_thickness_and_edges():
    mask = np.zeros((12, 12), bool)
    mask[0:6, 2:9] = True  # touches the top edge: outlined there too
    one, two = mask_outline(mask), mask_outline(mask, 2)
    assert one[0, 5] and one[5, 5] and not one[3, 5]
    assert one.sum() == 6 * 7 - 4 * 5 and two.sum() == 6 * 7 - 2 * 3
    assert (one <= two).all() and (two <= mask).all()


def test_the_png_draws_the_same_outline():
    prob = _blob()
    grey = np.full(prob.shape, 40, np.uint8)
    png = render_annotated(grey, None, prob_map=prob, heat_opacity=0.0, seg_threshold=0.5, show_sources=())
    drawn = (png[: prob.shape[0]] == np.asarray(MASK_OUTLINE_COLOUR, np.uint8)).all(axis=2)
    lw = line_width_for(prob.shape[1])
    assert drawn.any()
    np.testing.assert_array_equal(drawn, mask_outline(foreground_mask(prob, 0.5), max(1, lw // 2)))
