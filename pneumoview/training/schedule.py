"""The device, precision, optimiser and learning-rate schedule of a run."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pneumoview.training.family import TrainingError
from pneumoview.training.recipes import TrainConfig


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """The inference engine's device rule (auto → CUDA, MPS, CPU; explicit cpu/cuda/cuda:N/mps), with a plain or
    automatic ``cuda`` meaning this rank's GPU under torchrun."""
    from pneumoview.errors import ModelError
    from pneumoview.inference.engine import resolve_device as engine_device

    try:
        device = engine_device(choice or "auto")
    except ModelError as exc:
        raise TrainingError(f"--device: {exc}") from None
    if device == "cuda:0" and (choice or "auto").lower() in ("auto", "cuda"):
        device = f"cuda:{local_rank}"
    return torch.device(device)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None (fp32) off CUDA or with ``--amp off``; bf16 where supported, else fp16."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on weights only (not on biases and normalisation parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@dataclass
class Plan:
    """The schedule's length; ``epochs`` can shrink when a time budget runs short."""

    epochs: int
    steps_per_epoch: int


def lr_factor(cfg: TrainConfig, plan: Plan, step: int) -> float:
    """Learning-rate multiplier after ``step`` optimiser steps: linear warm-up, then cosine (to 1 %), step or
    constant."""
    warm = round(cfg.warmup_epochs * plan.steps_per_epoch)
    if cfg.warmup_steps is not None:
        warm = min(
            cfg.warmup_steps, max(0, plan.steps_per_epoch - 1)
        )  # torchvision's engine warm-up in epoch 0
    factor = 1.0
    if warm > 0 and step < warm:
        factor = cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / warm
    total = plan.epochs * plan.steps_per_epoch
    if cfg.scheduler == "cosine":
        progress = min(1.0, max(0.0, (step - warm) / max(1, total - warm)))
        factor *= 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif cfg.scheduler == "step":
        factor *= cfg.gamma ** ((step // plan.steps_per_epoch) // max(1, cfg.step_size))
    return factor
