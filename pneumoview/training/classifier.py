"""Classifier training: ResNet on whole images, cross-entropy, ROC AUC of P(opacity) as the validation metric.

Label schemes: ``rsna3`` (Normal, No Lung Opacity / Not Normal, Lung Opacity; positive class Lung Opacity),
``rsna2`` (by Target) and ``acse4`` (seed 002: covid 0, lung_opacity 1, pneumonia 2, normal 3; macro AUC).
AUCs come from the softmax probabilities (seed 002 computed them from hard labels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pneumoview.metrics import classification_report
from pneumoview.training.datasets import SCHEMES, ImageCache, class_ids, sampling_weights
from pneumoview.training.family import Family, model_input
from pneumoview.training.recipes import TrainConfig


def slug(name: str) -> str:
    """A class name as a TOML-safe key part: ``"No Lung Opacity / Not Normal"`` → ``no_lung_opacity_not_normal``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class ClassifierFamily(Family):
    name = "classifier"

    def __init__(self, cfg: TrainConfig, cache: ImageCache) -> None:
        super().__init__(cfg, cache)
        self.scheme = cfg.scheme or "rsna3"
        self._classes, self._positive = SCHEMES[self.scheme]
        self.labels = class_ids(cache.records, self.scheme)
        self.metric = "auc_opacity" if self._positive else "macro_auc"

    def builder_args(self) -> dict[str, Any]:
        return {
            **self.cfg.builder_args,
            "num_classes": len(self._classes),
            "in_channels": self.cfg.channels,
            "dropout": float(self.cfg.dropout),
        }

    def classes(self) -> tuple[str, ...]:
        return self._classes

    def positive_class(self) -> str | None:
        return self._positive

    def make_sample(
        self, row: int, image: np.ndarray, mask: Any, boxes: Any
    ) -> tuple[torch.Tensor, int, int]:
        return model_input(image, self.cfg), int(self.labels[row]), row

    def sample_weights(self, rows: Sequence[int]) -> np.ndarray:
        return sampling_weights(self.labels[np.asarray(rows, dtype=np.int64)])

    def train_loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        x, y, _ = batch
        logits = self._forward(model, x, device)
        loss = F.cross_entropy(
            logits.float(), y.to(device, non_blocking=True), label_smoothing=self.cfg.label_smoothing
        )
        return loss, int(x.shape[0])

    def eval_batch(
        self, model: nn.Module, batch: Any, device: torch.device, autocast: Any
    ) -> tuple[float, int, dict[int, Any]]:
        x, y, rows = batch
        with autocast:
            logits = self._forward(model, x, device)
        logits = logits.float()
        loss = F.cross_entropy(logits, y.to(device), reduction="sum")
        probs = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float32)
        return float(loss), int(x.shape[0]), {int(r): probs[i] for i, r in enumerate(rows.tolist())}

    def metrics(self, outputs: Mapping[int, Any], rows: Sequence[int]) -> dict[str, Any]:
        rows = [r for r in rows if r in outputs]
        y = self.labels[np.asarray(rows, dtype=np.int64)]
        probs = np.stack([outputs[r] for r in rows])
        report = classification_report(y, probs, self._classes)
        out: dict[str, Any] = {"accuracy": report.accuracy, "macro_auc": report.macro_auc}
        for c in report.classes:
            out["auc_" + slug(c.name)] = c.auc
        if self._positive is not None:
            out["auc_opacity"] = report.classes[self._classes.index(self._positive)].auc
        return out
