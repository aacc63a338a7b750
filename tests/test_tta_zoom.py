"""Zoom test-time augmentation (the engine's ``tta_zooms``): the geometry of :func:`zoom` and :func:`unzoom_boxes`,
and, with the shipped models on real radiographs, that the classifier averages and the detector fuses the zoomed
views as documented while the segmenters are left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoview.imaging import load_image
from pneumoview.inference import tta
from pneumoview.inference.engine import Engine
from pneumoview.inference.manifest import load_manifest
from pneumoview.postprocess import xywh_to_xyxy
from pneumoview.preprocess import black, prepare

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
RSNA = ROOT.parent / "shared" / "data" / "rsna"
# Validation-split radiographs with a labelled opacity (as in test_tta.py).
IMAGES = ("05b2d676-777a-4a4d-82ab-bf3f5f9b4d60", "06893030-14ab-456d-a22d-05070773e370")
ZOOMS = (0.9, 1.1)


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.25])
def test_zoom_moves_a_patch_where_unzoom_boxes_says(factor):
    x = np.full((1, 2, 256, 192), -2.0, dtype=np.float32)
    x[0, :, 100:140, 60:100] = 1.0  # xyxy 60, 100, 100, 140 in continuous pixel coordinates
    z = tta.zoom(x, factor, fill=(-2.0, -3.0))
    ys, xs = np.nonzero(z[0, 0] > -0.5)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32)
    np.testing.assert_allclose(tta.unzoom_boxes(found, factor, (256, 192)), [[60, 100, 100, 140]], atol=1.5)
    np.testing.assert_array_equal(z[0, 1] > -0.5, z[0, 0] > -0.5)  # channels move together
    if factor < 1:  # the uncovered border takes each channel's fill value
        assert z[0, 0, 0, 0] == -2.0 and z[0, 1, -1, -1] == -3.0


def test_unzoom_boxes_clips_to_the_input_and_zoom_one_is_the_identity():
    x = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(tta.zoom(x, 1.0, fill=(0.0,)), x)
    back = tta.unzoom_boxes(np.array([[0, 0, 64, 64]], dtype=np.float32), 0.5, (64, 64))
    np.testing.assert_array_equal(back, [[0, 0, 64, 64]])


def test_fuse_many_keeps_a_kth_of_a_box_that_one_view_of_k_found():
    one = (np.array([[10, 10, 50, 50]], dtype=np.float32), np.array([0.9], dtype=np.float32))
    none = (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
    moved = (np.array([[12, 10, 52, 50]], dtype=np.float32), np.array([0.6], dtype=np.float32))
    boxes, scores = tta.fuse_many([one, none, none])
    np.testing.assert_allclose(scores, [0.3], rtol=1e-6)
    boxes, scores = tta.fuse_many([one, moved, none])
    np.testing.assert_allclose(scores, [0.5], rtol=1e-6)
    np.testing.assert_allclose(boxes, [[10 + 2 * 0.6 / 1.5, 10, 50 + 2 * 0.6 / 1.5, 50]], rtol=1e-5)


def test_engine_rejects_implausible_zoom_factors():
    with pytest.raises(ValueError, match="zoom"):
        Engine(load_manifest([MODELS]), device="cpu", models_dir=MODELS, tta_zooms=(3.0,))


@pytest.fixture(scope="module")
def runs():
    manifest = load_manifest([MODELS])
    flip = Engine(manifest, device="cpu", models_dir=MODELS, tta=True)
    zoom = Engine(manifest, device="cpu", models_dir=MODELS, tta=True, tta_zooms=(1.0, *ZOOMS))
    images = [load_image(next((RSNA / "images-512").glob(f"{k}.*"))) for k in IMAGES]
    return {"images": images, "flip": flip, "zoom": zoom, "flip_r": flip.analyze_batch(images),
            "zoom_r": zoom.analyze_batch(images)}  # fmt: skip


def _loaded(engine: Engine, stage: str):
    spec, _ = engine.stage_specs(stage)[0]
    return spec, engine.backend.load(spec, engine.dirs, False)


def test_zoom_factor_one_is_dropped(runs):
    assert runs["zoom"].tta_zooms == ZOOMS


def test_classifier_averages_the_zoomed_views(runs):
    engine = runs["flip"]
    spec, model = _loaded(engine, "classify")
    with engine.backend.session():
        for im, r in zip(runs["images"], runs["zoom_r"], strict=True):
            x = prepare(im.display, spec.input)[0][None]
            views = [
                engine.backend.classify(model, tta.zoom(x, f, black(spec.input)), True) for f in (1.0, *ZOOMS)
            ]
            np.testing.assert_allclose(r.class_probs, np.mean(views, axis=0)[0], atol=1e-5)


def test_detector_fuses_the_zoomed_views_in_the_original_frame(runs):
    engine = runs["flip"]
    spec, model = _loaded(engine, "detect")
    n = 0
    with engine.backend.session():
        for im, r in zip(runs["images"], runs["zoom_r"], strict=True):
            x, frame = prepare(im.display, spec.input)
            views = []
            for f in (1.0, *ZOOMS):
                boxes, scores = engine.backend.detect(model, tta.zoom(x[None], f, black(spec.input)), True)[0]
                views.append((tta.unzoom_boxes(boxes, f, x.shape[-2:]), scores))
            xyxy, scores = tta.fuse_many(views)
            keep = scores >= 0.3
            sel = r.det_scores >= 0.3
            assert sel.sum() == keep.sum()
            np.testing.assert_allclose(
                xywh_to_xyxy(r.det_boxes)[sel], frame.boxes_to_original(xyxy[keep]), atol=0.05
            )
            np.testing.assert_allclose(r.det_scores[sel], scores[keep], atol=1e-5)
            h, w = im.shape
            assert (xywh_to_xyxy(r.det_boxes)[:, [0, 2]] <= w).all() and (
                xywh_to_xyxy(r.det_boxes) >= 0
            ).all()
            n += int(keep.sum())
    assert n > 0, "the shipped detector finds boxes on these labelled radiographs"


def test_segmenters_do_not_zoom(runs):
    for a, b in zip(runs["flip_r"], runs["zoom_r"], strict=True):
        np.testing.assert_array_equal(a.prob_map, b.prob_map)
        assert a.p_opacity != pytest.approx(b.p_opacity, abs=1e-6)  # the classifier did zoom
