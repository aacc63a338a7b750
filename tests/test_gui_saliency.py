"""Grad-CAM (pneumoview.inference.saliency): a known-answer model, a real ResNet-18, and the engine path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pneumoview.imaging import load_image
from pneumoview.inference.saliency import gradcam, target_layer
from pneumoview.preprocess import InputSpec
from tests.gui_helpers import SHARED

pytest_plugins = ("tests.gui_fixtures",)
COVID = SHARED / "other-cxr" / "figure1-covid" / "images" / "COVID-00001.jpg"  # 972 × 1151, not square


class _Halves(nn.Module):
    """``layer4`` puts the left half of the image in channel 0 and the right half in channel 1 (positive values);
    logit k is the mean of channel k. Grad-CAM of class 0 must therefore light up the left half only."""

    class _Split(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = x.shape[-1]
            left = torch.zeros_like(x[:, :1])
            left[..., : w // 2] = 1.0
            s = torch.sigmoid(x[:, :1])
            return torch.cat([s * left, s * (1 - left)], dim=1)

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = self._Split()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def radiograph():
    return load_image(COVID)


def test_known_answer_halves_in_the_original_frame(radiograph):
    h, w = radiograph.shape
    spec = InputSpec(size=(64, 64))
    left = gradcam(_Halves(), radiograph, input_spec=spec, class_index=0)
    right = gradcam(_Halves(), radiograph, input_spec=spec, class_index=1)
    assert left.shape == right.shape == (h, w) and left.dtype == np.float32
    margin = int(np.ceil(w / 64 * 2))  # bilinear resampling blurs ~1 input pixel each side of the split
    assert left[:, : w // 2 - margin].min() > 0 and left[:, w // 2 + margin :].max() == 0
    assert right[:, : w // 2 - margin].max() == 0 and right[:, w // 2 + margin :].min() > 0
    assert left.max() == pytest.approx(1.0) and right.max() == pytest.approx(1.0)
    # The map follows the image: brighter (denser) pixels give larger activations in this model.
    band = left[:, : w // 2 - margin]
    disp = radiograph.display[:, : w // 2 - margin].astype(np.float32)
    assert np.corrcoef(band.ravel()[::97], disp.ravel()[::97])[0, 1] > 0.8


def test_centre_crop_leaves_zero_outside_the_crop(radiograph):
    h, w = radiograph.shape
    spec = InputSpec(size=(64, 64), resize="center_crop")
    cam = gradcam(_Halves(), radiograph, input_spec=spec, class_index=0)
    assert cam.shape == (h, w)
    # The crop is square and centred on the wider axis (columns here): the outer columns are outside it.
    assert w > h and cam[:, :5].max() == 0 and cam[:, -5:].max() == 0


def test_real_resnet18_gives_a_normalised_map(radiograph):
    from pneumoview.inference.builders import build

    torch.manual_seed(0)
    model = build("resnet18_classifier", num_classes=3, in_channels=3).eval()
    spec = InputSpec(size=(96, 96), channels=3, mean=(0.5,), std=(0.25,))
    assert target_layer(model) is model.layer4
    cam = gradcam(model, radiograph, input_spec=spec, class_index=2)
    assert cam.shape == radiograph.shape and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert cam.max() == pytest.approx(1.0) or cam.max() == 0.0
    assert not any(p.grad is not None for p in model.parameters()), "weights must not accumulate gradients"
    with pytest.raises(ValueError, match="out of range"):
        gradcam(model, radiograph, input_spec=spec, class_index=7)
    with pytest.raises(ValueError, match="input_spec"):
        gradcam(model, radiograph)


def test_engine_path_and_a_classifier_without_convolutions(radiograph, test_models: Path):
    from pneumoview.inference.engine import Engine

    engine = Engine(models_dir=test_models, device="cpu")
    # The test classifier averages the image (no convolution), so there is nothing to explain.
    with pytest.raises(ValueError, match="no convolutional layer"):
        gradcam(engine, radiograph)
