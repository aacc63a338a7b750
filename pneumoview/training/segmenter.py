"""Segmenter training (U-Net, scSE U-Net, DeepLabV3+) on box masks, and segmentation ensembles.

Targets are the RSNA boxes filled in as masks at the input size (seed 001's targets); the model predicts one
opacity logit per pixel. Loss: ``w·BCE + (1 − w)·(1 − soft IoU)`` with ``w = 0.5`` and the soft IoU
``(Σ p·y + 1) / (Σ p + Σ y − Σ p·y + 1)`` over the whole batch, on the opacity channel only (seed 001 also counted
its background channel, which inflates IoU).

Validation turns each probability map into boxes with :func:`pneumoview.postprocess.boxes_from_probability` (the
app's own post-processing, default :class:`~pneumoview.thresholds.Thresholds`) and scores them with the RSNA mAP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pneumoview.inference.manifest import ensemble_entry_toml, upsert_entries
from pneumoview.metrics import rsna_map
from pneumoview.postprocess import boxes_from_probability, xyxy_to_xywh
from pneumoview.thresholds import Thresholds
from pneumoview.training.checkpoint import INTENDED_USE, LIMITATIONS, clean_metrics
from pneumoview.training.datasets import DataSource, ImageCache
from pneumoview.training.family import Family, Log, model_input
from pneumoview.training.loop import TrainResult, train_model
from pneumoview.training.recipes import TrainConfig, default_model_id, member_builder, recipe

SEG_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def soft_iou_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 − (Σ p·y + smooth) / (Σ p + Σ y − Σ p·y + smooth)`` over every pixel of the batch."""
    inter = (prob * target).sum()
    union = prob.sum() + target.sum() - inter
    return 1.0 - (inter + smooth) / (union + smooth)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5) -> torch.Tensor:
    """Seed 001's ``0.5·BCE + 0.5·soft IoU`` on the opacity channel; ``logits`` and ``target`` are ``(B, 1, H, W)``."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce_weight * bce + (1.0 - bce_weight) * soft_iou_loss(torch.sigmoid(logits), target)


def gt_boxes_xywh(cache: ImageCache, row: int) -> np.ndarray:
    return xyxy_to_xywh(cache.boxes[row]) if len(cache.boxes[row]) else np.zeros((0, 4), np.float32)


def prob_map_metrics(
    cache: ImageCache, prob_maps: Mapping[int, np.ndarray], rows: Sequence[int]
) -> dict[str, Any]:
    """RSNA mAP of the boxes post-processing finds in each map (default thresholds, and the best of a sweep of
    ``seg_threshold``), and the mean Dice of ``prob > 0.5`` against the box masks of positive images."""
    from pneumoview.training.augment import box_mask

    rows = [r for r in rows if r in prob_maps]
    gt = {r: gt_boxes_xywh(cache, r) for r in rows}
    per_t: dict[float, dict[int, tuple[np.ndarray, np.ndarray]]] = {t: {} for t in SEG_THRESHOLDS}
    dice = []
    for r in rows:
        prob = np.asarray(prob_maps[r], dtype=np.float32)
        for t in SEG_THRESHOLDS:
            boxes = boxes_from_probability(prob, Thresholds(seg_threshold=t))
            per_t[t][r] = (boxes.boxes, boxes.scores)
        if len(gt[r]):
            g = box_mask(cache.boxes[r], prob.shape).astype(bool)
            p = prob > 0.5
            dice.append(2.0 * (p & g).sum() / max(1, p.sum() + g.sum()))
    maps = {t: rsna_map(gt, preds).map for t, preds in per_t.items()}
    best_t = max(SEG_THRESHOLDS, key=lambda t: (np.nan_to_num(maps[t], nan=-1.0), -abs(t - 0.5)))
    return {
        "rsna_map": maps[0.5],
        "rsna_map_best": maps[best_t],
        "seg_threshold_best": best_t,
        "dice_pos": float(np.mean(dice)) if dice else float("nan"),
    }


class SegmenterFamily(Family):
    name = "segmenter"
    metric = "rsna_map"
    with_mask = True

    def builder_args(self) -> dict[str, Any]:
        return {**self.cfg.builder_args, "in_channels": self.cfg.channels}

    def make_sample(
        self, row: int, image: np.ndarray, mask: np.ndarray | None, boxes: Any
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        assert mask is not None
        return model_input(image, self.cfg), torch.from_numpy(mask[None].astype(np.float32)), row

    def train_loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        x, y, _ = batch
        logits = self._forward(model, x, device)
        return segmentation_loss(logits, y.to(device, non_blocking=True), self.cfg.seg_bce_weight), int(
            x.shape[0]
        )

    def eval_batch(
        self, model: nn.Module, batch: Any, device: torch.device, autocast: Any
    ) -> tuple[float, int, dict[int, Any]]:
        x, y, rows = batch
        with autocast:
            logits = self._forward(model, x, device)
        logits = logits.float()
        y = y.to(device)
        # The batch-level soft IoU is not a per-sample quantity; weight each batch's loss by its size.
        loss = float(segmentation_loss(logits, y, self.cfg.seg_bce_weight)) * int(x.shape[0])
        probs = torch.sigmoid(logits)[:, 0].cpu().numpy().astype(np.float16)
        return loss, int(x.shape[0]), {int(r): probs[i] for i, r in enumerate(rows.tolist())}

    def metrics(self, outputs: Mapping[int, Any], rows: Sequence[int]) -> dict[str, Any]:
        return prob_map_metrics(self.cache, outputs, rows)


def resize_map(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float ``(h, w)`` map to ``size=(h, w)``."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape == tuple(size):
        return prob
    return np.asarray(Image.fromarray(prob, mode="F").resize((size[1], size[0]), Image.BILINEAR))


def ensemble_metrics(members: Sequence[TrainResult]) -> dict[str, Any]:
    """Validation metrics of the equal-weight mean of the members' probability maps, at the largest member size.

    The members share the split (same seed, same records), so validation images are matched by record key.
    """
    ref = max(members, key=lambda m: m.cache.spec.size[0]).cache
    size = ref.spec.size
    key_to_row = {r.key: i for i, r in enumerate(ref.records)}
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for m in members:
        for row, prob in m.fit.final_outputs.items():
            target_row = key_to_row.get(m.cache.records[row].key)
            if target_row is None:
                continue
            sums[target_row] = sums.get(target_row, 0) + resize_map(prob, size)
            counts[target_row] = counts.get(target_row, 0) + 1
    n = len(members)
    maps = {r: s / n for r, s in sums.items() if counts[r] == n}
    return prob_map_metrics(ref, maps, sorted(maps))


def train_ensemble(
    members: Sequence[str],
    base: Mapping[str, Any],
    source: DataSource,
    out_dir: Path,
    *,
    ensemble_id: str = "seg-ensemble",
    recipe_name: str = "default",
    version: str = "1.0.0",
    command: str = "",
    log: Log = print,
) -> tuple[list[TrainResult], dict[str, Any]]:
    """Train each member (``"unet:resnet34"`` style) in turn with the same split and write an ``[[ensemble]]``
    entry with equal weights and its own validation metrics.

    ``base`` holds the :class:`TrainConfig` overrides shared by every member (epochs, size, seed …).
    """
    from pneumoview.training import distributed as ddp

    results: list[TrainResult] = []
    caches: dict[int, ImageCache] = {}
    ids = []
    for member in members:
        builder, args = member_builder(member)
        overrides = dict(base)
        overrides.pop("model_id", None)
        cfg: TrainConfig = recipe("segmenter", recipe_name, model=member, **overrides)
        cfg = cfg.replace(model_id=default_model_id("segmenter", builder, args, None))
        log(f"--- ensemble member {len(results) + 1}/{len(members)}: {cfg.model_id} ---")
        res = train_model(
            cfg, source, out_dir, cache=caches.get(cfg.size), command=command, log=log, keep_outputs=True
        )
        caches.setdefault(cfg.size, res.cache)
        results.append(res)
        ids.append(cfg.model_id)
    entry: dict[str, Any] = {}
    if ddp.env_info().is_main and all(r.fit.completed for r in results):
        metrics = clean_metrics(ensemble_metrics(results))
        metrics["metric"] = "rsna_map"
        entry = {
            "id": ensemble_id,
            "task": "segment",
            "members": ids,
            "weights": [1.0] * len(ids),
            "version": version,
            "description": f"equal-weight mean of {len(ids)} segmenters ({', '.join(members)})",
            "intended_use": INTENDED_USE,
            "limitations": LIMITATIONS,
            "metrics": metrics,
        }
        upsert_entries(out_dir / "manifest.toml", {ensemble_id: ensemble_entry_toml(entry)})
    return results, entry
