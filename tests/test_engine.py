"""The inference engine on real radiographs: coordinates come back in the original frame."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pneumoview.errors import ModelError
from pneumoview.imaging import load_image
from pneumoview.inference.engine import Engine, StageSelection, resolve_device
from pneumoview.inference.manifest import load_manifest
from tests.model_fixtures import add_ensemble, add_model, equivariant_models_dir

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PNG_1024 = sorted((DATA / "rsna" / "images-1024").glob("*.png"))[0]
JPG_512 = sorted((DATA / "rsna" / "images-512").glob("*.jpg"))[0]


def _non_square() -> Path:
    for p in sorted((DATA / "other-cxr" / "figure1-covid" / "images").iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            im = load_image(p)
            if abs(im.shape[0] - im.shape[1]) > 20:
                return p
    raise AssertionError("no non-square image found in other-cxr")


@pytest.fixture(scope="module")
def equivariant_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    d = equivariant_models_dir(tmp_path_factory.mktemp("models"))
    return Engine(load_manifest([d]), device="cpu", models_dir=d)


def _flipped(image):
    return replace(image, display=np.ascontiguousarray(image.display[:, ::-1]))


@pytest.mark.parametrize("path", [PNG_1024, JPG_512, "non-square"])
def test_flip_gives_mirrored_boxes_and_maps(equivariant_engine: Engine, path):
    image = load_image(_non_square() if path == "non-square" else path)
    H, W = image.shape
    a = equivariant_engine.analyze(image)
    b = equivariant_engine.analyze(_flipped(image))
    assert a.stages_done == ("classify", "segment", "detect")
    assert a.prob_map.shape == (H, W) and a.prob_map.dtype == np.float32
    np.testing.assert_allclose(b.prob_map, a.prob_map[:, ::-1], atol=1e-3)
    assert a.p_opacity == pytest.approx(b.p_opacity, abs=1e-5)
    assert len(a.det_boxes) == 1 and len(b.det_boxes) == 1
    x, y, w, h = a.det_boxes[0]
    assert x >= 0 and x + w <= W + 1e-3 and y >= 0 and y + h <= H + 1e-3
    mirrored = np.array([W - (x + w), y, w, h])
    scale = max(H, W) / 96  # one model-input pixel, in original pixels
    np.testing.assert_allclose(b.det_boxes[0], mirrored, atol=scale + 1e-3)


def test_detector_box_matches_bright_region_in_original_frame(equivariant_engine: Engine):
    image = load_image(PNG_1024)
    display = np.full(image.shape, 40, np.uint8)
    display[300:500, 600:900] = 250  # a bright rectangle, in original pixels
    res = equivariant_engine.analyze(replace(image, display=display))
    np.testing.assert_allclose(res.det_boxes[0], [600, 300, 300, 200], atol=1024 / 96 + 1)
    assert res.prob_map[400, 750] > 0.9 and res.prob_map[100, 100] < 0.1


def test_stages_are_delivered_in_order(equivariant_engine: Engine):
    image = load_image(JPG_512)
    snaps = list(equivariant_engine.iter_stages(image))
    assert len(snaps) == 3
    assert [s.stages_done for s in snaps[:3]] == [
        ("classify",),
        ("classify", "segment"),
        ("classify", "segment", "detect"),
    ]
    assert snaps[0].prob_map is None and snaps[0].class_probs is not None
    assert {m.id for m in snaps[-1].models} == {"rsna3-classifier", "seg-a", "seg-b", "detector"}
    assert all(len(m.sha256_prefix) == 12 for m in snaps[-1].models)
    assert set(snaps[-1].timings_ms) >= {"classify", "segment", "detect", "total"}
    assert set(snaps[-1].member_maps) == {"seg-a", "seg-b"} and snaps[-1].member_maps["seg-b"].shape == (
        48,
        48,
    )


def test_batch_equals_single(equivariant_engine: Engine):
    images = [load_image(PNG_1024), load_image(JPG_512), load_image(_non_square())]
    batch = equivariant_engine.analyze_batch(images, batch_size=2)
    for im, r in zip(images, batch, strict=True):
        single = equivariant_engine.analyze(im)
        np.testing.assert_allclose(r.prob_map, single.prob_map, atol=1e-5)
        np.testing.assert_allclose(r.det_boxes, single.det_boxes, atol=1e-3)
        assert r.image_id == im.image_id


@pytest.fixture(scope="module")
def real_arch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("real")
    add_model(
        d,
        "rsna3-classifier",
        task="classify",
        builder="resnet18_classifier",
        builder_args={"num_classes": 3, "in_channels": 1},
        classes=["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"],
        positive_class="Lung Opacity",
    )
    add_model(
        d, "unet18", task="segment", builder="unet", builder_args={"encoder": "resnet18", "in_channels": 1}
    )
    add_model(
        d,
        "dl18",
        task="segment",
        builder="deeplabv3plus",
        builder_args={"encoder": "resnet18", "in_channels": 1},
    )
    add_ensemble(d, "seg-ensemble", ["unet18", "dl18"], [2.0, 1.0])
    add_model(
        d,
        "detector",
        task="detect",
        builder="fasterrcnn_mobilenet_v3_fpn",
        builder_args={"num_classes": 2, "min_size": 128, "max_size": 160},
        size=128,
        channels=3,
        mean=0.0,
        std=1.0,
    )
    return d


@pytest.mark.parametrize("path", [PNG_1024, JPG_512, "non-square"])
def test_real_architectures_random_weights(real_arch_dir: Path, path):
    engine = Engine(load_manifest([real_arch_dir]), device="cpu", models_dir=real_arch_dir)
    image = load_image(_non_square() if path == "non-square" else path)
    r = engine.analyze(image)
    H, W = image.shape
    assert r.class_probs.shape == (3,) and r.class_probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= r.p_opacity <= 1.0
    assert r.prob_map.shape == (H, W) and r.prob_map.min() >= 0.0 and r.prob_map.max() <= 1.0
    # The ensemble is the weighted mean of its members (2:1), resampled to the original frame.
    assert set(r.member_maps) == {"unet18", "dl18"}
    if len(r.det_boxes):
        b = r.det_boxes
        assert (b[:, 0] >= 0).all() and (b[:, 0] + b[:, 2] <= W + 1e-3).all()
        assert (b[:, 1] >= 0).all() and (b[:, 1] + b[:, 3] <= H + 1e-3).all()
        assert (np.diff(r.det_scores) <= 0).all()


def test_missing_weights_skip_stage_with_note(tmp_path: Path):
    d = equivariant_models_dir(tmp_path)
    (d / "detector.pt").unlink()
    engine = Engine(load_manifest([d]), device="cpu", models_dir=d)
    assert engine.available_stages()["detect"] is not None
    r = engine.analyze(load_image(JPG_512))
    assert r.stages_done == ("classify", "segment") and r.det_boxes is None
    assert any("detect skipped" in n and "not installed" in n for n in r.notes)


def test_selection_can_skip_stages(tmp_path: Path):
    d = equivariant_models_dir(tmp_path)
    engine = Engine(load_manifest([d]), device="cpu", models_dir=d, selection=StageSelection(detect=None))
    assert engine.analyze(load_image(JPG_512)).stages_done == ("classify", "segment")


def test_device_resolution(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PNEUMOVIEW_DEVICE", raising=False)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) in ("cpu", "cuda:0", "mps")
    monkeypatch.setenv("PNEUMOVIEW_DEVICE", "cpu")
    assert resolve_device(None) == "cpu"
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda")


def test_unknown_selected_model_skips_stage_with_note(tmp_path: Path):
    d = equivariant_models_dir(tmp_path)
    engine = Engine(
        load_manifest([d]), device="cpu", models_dir=d, selection=StageSelection(detect="no-such-detector")
    )
    assert "no model 'no-such-detector' is installed" in engine.available_stages()["detect"]
    assert "installed detect models: detector" in engine.available_stages()["detect"]
    r = engine.analyze(load_image(JPG_512))
    assert r.stages_done == ("classify", "segment")
    assert any("detect skipped" in n and "no-such-detector" in n for n in r.notes)


def test_iter_stages_yields_before_running_the_next_stage(equivariant_engine: Engine, monkeypatch):
    calls = []
    real_segment = equivariant_engine._segment
    monkeypatch.setattr(equivariant_engine, "_segment", lambda *a: calls.append(1) or real_segment(*a))
    stages = equivariant_engine.iter_stages(load_image(JPG_512))
    first = next(stages)
    assert (
        first.stages_done == ("classify",) and calls == []
    )  # the classifier's result arrives before segmentation
    assert next(stages).stages_done == ("classify", "segment") and calls == [1]
