"""What differs between classifier, detector and segmenter training (:class:`Family`), and what every family
shares: the training error, the log callback, the model-input tensor and DDP unwrapping."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumoview.errors import PneumoViewError
from pneumoview.preprocess import normalise
from pneumoview.training.datasets import ImageCache
from pneumoview.training.recipes import TrainConfig

Log = Callable[[str], None]


class TrainingError(PneumoViewError):
    """Training cannot go on (no images, ImageNet weights required but missing, the loss diverged …)."""


def model_input(image_u8: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    """The float32 ``(C, h, w)`` tensor inference would feed for this already-fitted uint8 image."""
    return torch.from_numpy(normalise(image_u8, cfg.input_spec))


class Family:
    """What differs between classifier, detector and segmenter training. Subclasses override the hooks."""

    name = ""
    metric = ""
    with_mask = False

    def __init__(self, cfg: TrainConfig, cache: ImageCache) -> None:
        self.cfg = cfg
        self.cache = cache

    def _forward(self, model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch tensor through ``model`` on ``device`` (channels_last on CUDA when the recipe asks)."""
        x = x.to(device, non_blocking=True)
        if device.type == "cuda" and self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x)

    # model ---------------------------------------------------------------------------------------------------
    def builder_args(self) -> dict[str, Any]:
        return dict(self.cfg.builder_args)

    def manifest_builder_args(self, used_pretrained: bool) -> dict[str, Any]:
        args = self.builder_args()
        args.pop("trainable_backbone_layers", None)
        return args

    def classes(self) -> tuple[str, ...]:
        return ("Lung Opacity",)

    def positive_class(self) -> str | None:
        return None

    # data ----------------------------------------------------------------------------------------------------
    def make_sample(self, row: int, image: np.ndarray, mask: np.ndarray | None, boxes: np.ndarray) -> Any:
        raise NotImplementedError

    def collate(self, batch: list[Any]) -> Any:
        return torch.utils.data.default_collate(batch)

    def sample_weights(self, rows: Sequence[int]) -> np.ndarray | None:
        """Per-sample weights for ``--balanced`` (None: balancing does not apply)."""
        return None

    # steps ---------------------------------------------------------------------------------------------------
    def train_loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def eval_batch(
        self, model: nn.Module, batch: Any, device: torch.device, autocast: Any
    ) -> tuple[float, int, dict[int, Any]]:
        """``(sum of per-sample validation losses, samples, {cache row: compact per-image output})``."""
        raise NotImplementedError

    def metrics(self, outputs: Mapping[int, Any], rows: Sequence[int]) -> dict[str, Any]:
        raise NotImplementedError


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
