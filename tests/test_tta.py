"""Flip test-time augmentation with the shipped models on real radiographs: each stage combines the image and its
mirror exactly as documented, and the combination is itself flip-invariant."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pneumoview.imaging import load_image
from pneumoview.inference.engine import Engine
from pneumoview.inference.manifest import load_manifest
from pneumoview.inference.tta import fuse_views
from pneumoview.postprocess import xywh_to_xyxy

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
RSNA = ROOT.parent / "shared" / "data" / "rsna"
# Two validation-split radiographs with a labelled opacity (so the detector has something to find).
IMAGES = ("05b2d676-777a-4a4d-82ab-bf3f5f9b4d60", "06893030-14ab-456d-a22d-05070773e370")


def _mirror(im):
    return replace(
        im, display=np.ascontiguousarray(im.display[:, ::-1]), modality=im.modality[:, ::-1].copy()
    )


@pytest.fixture(scope="module")
def runs():
    manifest = load_manifest([MODELS])
    off = Engine(manifest, device="cpu", models_dir=MODELS)
    on = Engine(manifest, device="cpu", models_dir=MODELS, tta=True)
    images = [load_image(next((RSNA / "images-512").glob(f"{k}.*"))) for k in IMAGES]
    mirrored = [_mirror(im) for im in images]
    return {
        "images": images,
        "off": off.analyze_batch(images),
        "off_mirror": off.analyze_batch(mirrored),
        "on": on.analyze_batch(images),
        "on_mirror": on.analyze_batch(mirrored),
    }


def test_tta_is_off_by_default_and_changes_the_result(runs):
    assert Engine(load_manifest([MODELS]), device="cpu", models_dir=MODELS).tta is False
    for a, b in zip(runs["off"], runs["on"], strict=True):
        assert a.p_opacity != pytest.approx(b.p_opacity, abs=1e-6)
        assert not np.allclose(a.prob_map, b.prob_map, atol=1e-4)


def test_the_app_runs_tta_unless_told_not_to():
    from pneumoview.cli import build_parser
    from pneumoview.commands.common import engine_from_args
    from pneumoview.types import DEFAULT_TTA

    assert DEFAULT_TTA is True  # chosen by rule 5 of docs/evidence/README.md
    parser = build_parser()
    for command, extra in (("predict", ["--out", "o"]), ("tune", ["--labels", "l.csv"])):
        assert parser.parse_args([command, "x.dcm", *extra]).tta is True
        assert parser.parse_args([command, "x.dcm", *extra, "--no-tta"]).tta is False
    args = parser.parse_args(
        ["predict", "x.dcm", "--out", "o", "--models-dir", str(MODELS), "--device", "cpu"]
    )
    assert engine_from_args(args).tta is True


def test_classifier_and_segmentation_average_the_two_views(runs):
    for r, m, t in zip(runs["off"], runs["off_mirror"], runs["on"], strict=True):
        np.testing.assert_allclose(t.class_probs, 0.5 * (r.class_probs + m.class_probs), atol=1e-5)
        np.testing.assert_allclose(t.prob_map, 0.5 * (r.prob_map + m.prob_map[:, ::-1]), atol=1e-4)


def test_detector_boxes_are_unflipped_and_fused(runs):
    n_boxes = 0
    for im, r, m, t in zip(runs["images"], runs["off"], runs["off_mirror"], runs["on"], strict=True):
        back = np.array(m.det_boxes, dtype=np.float32).copy()
        back[:, 0] = im.shape[1] - back[:, 0] - back[:, 2]
        xyxy, scores = fuse_views(xywh_to_xyxy(r.det_boxes), r.det_scores, xywh_to_xyxy(back), m.det_scores)
        keep = scores >= 0.3  # the confident ones; tiny score ties below may order differently
        assert (t.det_scores >= 0.3).sum() == keep.sum()
        np.testing.assert_allclose(xywh_to_xyxy(t.det_boxes)[t.det_scores >= 0.3], xyxy[keep], atol=0.05)
        np.testing.assert_allclose(t.det_scores[t.det_scores >= 0.3], scores[keep], atol=1e-5)
        n_boxes += int(keep.sum())
    assert n_boxes > 0, "the shipped detector finds boxes on these labelled radiographs"


def test_tta_result_is_flip_invariant(runs):
    for t, tm in zip(runs["on"], runs["on_mirror"], strict=True):
        assert t.p_opacity == pytest.approx(tm.p_opacity, abs=1e-5)
        np.testing.assert_allclose(t.prob_map, tm.prob_map[:, ::-1], atol=1e-4)
