"""Helpers that make small, real model folders (manifest + weights) for tests.

Besides the real architectures (with random weights), they register three tiny *flip-equivariant* test builders,
so that a test can check that the engine returns boxes and maps in the original frame: a horizontally flipped
image must then give exactly mirrored outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pneumoview.inference import _registry
from pneumoview.inference.manifest import ensemble_entry_toml, model_entry_toml, upsert_entries
from pneumoview.inference.weights import sha256_file


class _PixelSegmenter(nn.Module):
    """Logit per pixel = a·x + b: bright pixels become 'opacity'. Commutes with any flip."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(8.0 / in_channels)
            self.conv.bias.fill_(-4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _MeanClassifier(nn.Module):
    """Logits from the global mean: invariant to flips."""

    def __init__(self, num_classes: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class _BrightBoxDetector(nn.Module):
    """Faster R-CNN's interface: one box around the pixels brighter than a threshold, in input pixels."""

    def __init__(self, threshold: float = 0.7) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(threshold))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for im in images:
            mask = im[0] > self.threshold
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:
                boxes = torch.zeros((0, 4))
            else:
                boxes = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            n = len(boxes)
            out.append(
                {"boxes": boxes, "scores": torch.full((n,), 0.9), "labels": torch.ones(n, dtype=torch.int64)}
            )
        return out


for _name, _task, _cls in (
    ("test_pixel_segmenter", "segment", _PixelSegmenter),
    ("test_mean_classifier", "classify", _MeanClassifier),
    ("test_bright_box_detector", "detect", _BrightBoxDetector),
):
    if _name not in _registry.REGISTRY:
        _registry.register(_name, task=_task)(_cls)


def add_model(
    models_dir: Path,
    model_id: str,
    *,
    task: str,
    builder: str,
    builder_args: dict[str, Any] | None = None,
    size: int = 64,
    channels: int = 1,
    mean: float = 0.5,
    std: float = 0.25,
    classes: list[str] | None = None,
    positive_class: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Build ``builder`` with random weights, save them into ``models_dir`` and add a manifest entry."""
    from pneumoview.inference.builders import build

    torch.manual_seed(seed)
    model = build(builder, **(builder_args or {}))
    models_dir.mkdir(parents=True, exist_ok=True)
    weights = models_dir / f"{model_id}.pt"
    torch.save(model.state_dict(), weights)
    entry: dict[str, Any] = {
        "id": model_id,
        "task": task,
        "builder": builder,
        "builder_args": builder_args or {},
        "classes": classes or [],
        "positive_class": positive_class,
        "input": {
            "size": [size, size],
            "channels": channels,
            "mean": [mean],
            "std": [std],
            "resize": "stretch",
        },
        "weights": weights.name,
        "sha256": sha256_file(weights),
        "version": "0.0.1-test",
        "intended_use": "tests only",
    }
    upsert_entries(models_dir / "manifest.toml", {model_id: model_entry_toml(entry)})
    return entry


def add_ensemble(
    models_dir: Path, ensemble_id: str, members: list[str], weights: list[float] | None = None
) -> None:
    entry = {
        "id": ensemble_id,
        "task": "segment",
        "members": members,
        "weights": weights or [1.0] * len(members),
        "version": "0.0.1-test",
    }
    upsert_entries(models_dir / "manifest.toml", {ensemble_id: ensemble_entry_toml(entry)})


def equivariant_models_dir(models_dir: Path, size: int = 96) -> Path:
    """A models folder whose three stages are the flip-equivariant test models."""
    add_model(
        models_dir,
        "rsna3-classifier",
        task="classify",
        builder="test_mean_classifier",
        size=size,
        classes=["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"],
        positive_class="Lung Opacity",
    )
    add_model(models_dir, "seg-a", task="segment", builder="test_pixel_segmenter", size=size)
    add_model(models_dir, "seg-b", task="segment", builder="test_pixel_segmenter", size=size // 2)
    add_ensemble(models_dir, "seg-ensemble", ["seg-a", "seg-b"])
    add_model(
        models_dir,
        "detector",
        task="detect",
        builder="test_bright_box_detector",
        size=size,
        channels=3,
        mean=0.0,
        std=1.0,
    )
    return models_dir
