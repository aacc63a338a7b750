"""The viewer's Qt-free logic: window presets, result merging, statuses, table rows, (the viewer state is tested in test_controller.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from pneumoview.gui import viewmodel as vm
from pneumoview.imaging import load_image
from pneumoview.masks import mask_outline
from pneumoview.postprocess import postprocess
from pneumoview.thresholds import Thresholds
from pneumoview.types import AnalysisResult, Window
from tests.gui_helpers import SHARED

CHEST = SHARED / "dicom" / "chest"
SIIM = CHEST / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


@pytest.fixture(scope="module")
def mono2():
    return load_image(SIIM)


@pytest.fixture(scope="module")
def mono1():
    return load_image(CHEST / "Fake_MONOHR1.dcm")  # the same stored values labelled MONOCHROME1


def test_presets_follow_the_display_direction(mono2, mono1):
    assert not mono2.inverted and mono1.inverted
    for image in (mono2, mono1):
        assert vm.window_preset(image, "file") == image.window
        full = vm.window_preset(image, "full")
        assert full.low == pytest.approx(float(image.modality.min()))
        assert full.high == pytest.approx(float(image.modality.max()))
    # Lung (dark on screen) sits low in MONOCHROME2 values and high in MONOCHROME1 values; bone the opposite.
    lung2, bone2 = vm.window_preset(mono2, "lung"), vm.window_preset(mono2, "bone")
    lung1, bone1 = vm.window_preset(mono1, "lung"), vm.window_preset(mono1, "bone")
    assert lung2.center < bone2.center
    assert lung1.center > bone1.center
    lo, hi = vm.data_range(mono2.modality)
    assert lung2.low == pytest.approx(lo) and bone2.high == pytest.approx(hi)
    with pytest.raises(ValueError, match="valid presets"):
        vm.window_preset(mono2, "brain")


def test_window_text():
    assert vm.window_text(Window(15000.0, 30000.0)) == "W 30000  L 15000"
    assert vm.window_text(Window(0.5, 1.25)) == "W 1.25  L 0.5"


def test_drag_window_directions():
    w = Window(100.0, 50.0)
    assert vm.drag_window(w, 20, 0, 255).width > 50 > vm.drag_window(w, -20, 0, 255).width
    assert vm.drag_window(w, 0, 10, 255).center > 100 > vm.drag_window(w, 0, -10, 255).center
    assert vm.drag_window(w, -1e6, 0, 255).width > 0


def _result(**kw) -> AnalysisResult:
    return AnalysisResult(**{"image_id": "a", "image_shape": (64, 64), **kw})


def test_status_rows_and_areas():
    prob = np.zeros((200, 200), np.float32)
    prob[40:120, 30:110] = 0.9
    result = _result(
        image_shape=(200, 200), prob_map=prob, det_boxes=np.array([[35, 45, 70, 70]], np.float32),
        det_scores=np.array([0.8], np.float32), p_opacity=0.7, stages_done=("classify", "segment", "detect"),
    )  # fmt: skip
    f = postprocess(result, Thresholds(), spacing_mm=(0.5, 0.5))
    status, text = vm.image_status(f, result)
    assert status == vm.FINDING and "P(opacity) 0.70" in text
    rows = vm.box_rows(f)
    assert [r.set for r in rows][0] == "final" and {r.set for r in rows} == {
        "final",
        "detector",
        "segmentation",
    }
    for r in rows:
        assert r.area_px == pytest.approx(r.w * r.h)
        assert r.area_mm2 == pytest.approx(r.area_px * 0.25)
        box = vm.boxset_of(f, r.set).boxes[r.index]
        assert (r.x, r.y, r.w, r.h) == pytest.approx(tuple(float(v) for v in box))
    gated = postprocess(result, Thresholds(gate=0.9))
    assert vm.image_status(gated, result) == (vm.NO_FINDING, "no box, P(opacity) gate, P(opacity) 0.70")
    assert vm.image_status(None, None)[0] == vm.NOT_ANALYSED
    only_cls = _result(image_shape=(200, 200), p_opacity=0.7, stages_done=("classify",))
    f_cls = postprocess(only_cls, Thresholds(gate=0.3))
    assert vm.image_status(f_cls, only_cls) == (
        vm.FINDING,
        "P(opacity) 0.70, classifier only (no box model installed)",
    )
    assert vm.image_status(postprocess(only_cls, Thresholds(gate=0.8)), only_cls)[0] == vm.NO_FINDING
    assert (
        vm.image_status(postprocess(only_cls, Thresholds(gate=0.0)), only_cls)[0] == vm.FINDING
    )  # 0.7 ≥ 0.5


def test_outline_distance_readout_eta(mono2):
    m = np.zeros((10, 10), bool)
    m[2:7, 3:8] = True
    out = mask_outline(m)
    assert out.sum() == 16 and not out[4, 5] and out[2, 3]  # 5×5 square: 25 − 9 inner pixels
    assert vm.distance((0, 0), (30, 40), None) == (50.0, "px")
    assert vm.distance((0, 0), (10, 0), (0.2, 0.5)) == (pytest.approx(5.0), "mm")
    assert vm.pixel_readout(mono2, -1, 3) is None
    text = vm.pixel_readout(mono2, 10.2, 20.9)
    assert text.startswith(f"x 10  y 20  value {float(mono2.modality[20, 10]):g}")
    assert (
        vm.eta_text(None) == "ETA …" and vm.eta_text(65) == "ETA 1 min 05 s" and vm.eta_text(7) == "ETA 7 s"
    )


def test_viewmodel_and_viewer_state_are_qt_free():
    code = (
        "import sys; import pneumoview.gui.viewmodel, pneumoview.viewer_state; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt', 'torch')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gate_text_says_when_p_opacity_is_calibrated():
    classes = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
    base = AnalysisResult(
        image_id="x", image_shape=(8, 8), class_names=classes, class_probs=np.array([0.25, 0.52, 0.23]),
        p_opacity=0.23, gate_classes=("Lung Opacity",),
    )  # fmt: skip
    assert vm.gate_text(base, 0.3) == "Gate: P(Lung Opacity) = 0.23 (boxes need ≥ 0.30)"
    calibrated = replace(base, p_opacity=0.24)
    assert vm.gate_text(calibrated, 0.3) == "Gate: calibrated P(Lung Opacity) = 0.24 (boxes need ≥ 0.30)"
    assert vm.gate_text(replace(base, p_opacity=None), 0.3) == ""
    fused = replace(
        base, p_opacity=0.41, p_opacity_fused=True
    )  # the classifier read with the detector's top box
    assert (
        vm.gate_text(fused, 0.1) == "Gate: P(Lung Opacity | classifier + detector) = 0.41 (boxes need ≥ 0.10)"
    )
