"""Detector training: torchvision Faster R-CNN with one "opacity" class, RSNA mAP as the validation metric.

Inputs are 3-channel ``[0, 1]`` images at the input size (the model normalises them itself; ``min_size`` and
``max_size`` equal the input size so its internal resize is the identity). Targets are the RSNA boxes as ``xyxy``
in input pixels with label 1; a negative image has **empty** boxes ``(0, 4)`` (seed 003 gave it a full-frame box
labelled as pneumonia).

Validation loss is the sum of the four Faster R-CNN losses computed with batch-norm statistics frozen; the metric
is the RSNA mAP of the boxes kept by :func:`pneumoview.postprocess.filter_detections` (score threshold, then NMS),
at the best score threshold of a sweep (recorded as ``det_score_best``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumoview.metrics import rsna_map
from pneumoview.postprocess import filter_detections, xyxy_to_xywh
from pneumoview.thresholds import Thresholds
from pneumoview.training.family import Family, model_input

SCORE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def detection_targets(boxes_xyxy: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision's target dict: ``boxes`` ``(K, 4)`` float32 xyxy, ``labels`` ``(K,)`` int64 ones."""
    b = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4))
    return {"boxes": b, "labels": torch.ones((b.shape[0],), dtype=torch.int64)}


class DetectorFamily(Family):
    name = "detector"
    metric = "rsna_map"

    def builder_args(self) -> dict[str, Any]:
        return {
            "num_classes": 2,
            **self.cfg.builder_args,
            "min_size": self.cfg.size,
            "max_size": self.cfg.size,
        }

    def manifest_builder_args(self, used_pretrained: bool) -> dict[str, Any]:
        args = super().manifest_builder_args(used_pretrained)
        if used_pretrained:
            # Trained from ImageNet: frozen batch norm and ImageNet normalisation (see inference/detector.py).
            from pneumoview.inference.detector import IMAGENET_MEAN, IMAGENET_STD

            args.setdefault("frozen_batchnorm", True)
            args.setdefault("image_mean", list(IMAGENET_MEAN))
            args.setdefault("image_std", list(IMAGENET_STD))
        return args

    def make_sample(self, row: int, image: np.ndarray, mask: Any, boxes: np.ndarray) -> tuple[Any, ...]:
        return model_input(image, self.cfg), detection_targets(boxes), row

    def collate(
        self, batch: list[Any]
    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[int]]:
        images, targets, rows = zip(*batch, strict=True)
        return list(images), list(targets), list(rows)

    @staticmethod
    def _to(images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], device: torch.device) -> Any:
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        return images, targets

    def train_loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, targets, _ = batch
        images, targets = self._to(images, targets, device)
        losses = model(images, targets)
        return sum(losses.values()), len(images)  # type: ignore[return-value]

    def eval_batch(
        self, model: nn.Module, batch: Any, device: torch.device, autocast: Any
    ) -> tuple[float, int, dict[int, Any]]:
        images, targets, rows = batch
        images, targets = self._to(images, targets, device)
        # Losses need training mode; keep batch-norm statistics untouched while computing them.
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        with autocast:
            losses = model(images, targets)
        loss = float(sum(v.float() for v in losses.values())) * len(images)
        model.eval()
        with autocast:
            dets = model(images)
        out = {}
        for r, d in zip(rows, dets, strict=True):
            out[int(r)] = (
                d["boxes"].float().cpu().numpy().astype(np.float32),
                d["scores"].float().cpu().numpy().astype(np.float32),
            )
        return loss, len(images), out

    def metrics(self, outputs: Mapping[int, Any], rows: Sequence[int]) -> dict[str, Any]:
        rows = [r for r in rows if r in outputs]
        gt = {
            r: xyxy_to_xywh(self.cache.boxes[r]) if len(self.cache.boxes[r]) else np.zeros((0, 4), np.float32)
            for r in rows
        }
        maps = {}
        for t in SCORE_THRESHOLDS:
            preds = {}
            for r in rows:
                kept = filter_detections(*outputs[r], Thresholds(det_score=t), box_format="xyxy")
                preds[r] = (kept.boxes, kept.scores)
            maps[t] = rsna_map(gt, preds).map
        best_t = max(SCORE_THRESHOLDS, key=lambda t: (np.nan_to_num(maps[t], nan=-1.0), -abs(t - 0.5)))
        return {
            "rsna_map": maps[best_t],
            "det_score_best": best_t,
            "rsna_map_at_score_50": maps[0.5],
        }
