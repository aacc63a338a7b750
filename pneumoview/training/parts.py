"""What one :func:`~pneumoview.training.loop.fit` trains with (:class:`FitParts`): the model on its device, its
precision, the optimiser, GradScaler and schedule, and the loaders; built once by :func:`build_parts`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumoview.errors import ModelLoadError
from pneumoview.training import distributed as ddp
from pneumoview.training.augment import AugmentConfig
from pneumoview.training.family import Family, Log, TrainingError, unwrap
from pneumoview.training.recipes import TrainConfig
from pneumoview.training.sampling import CachedImages, EpochSampler, make_loader
from pneumoview.training.schedule import Plan, amp_dtype, lr_factor, make_optimizer
from pneumoview.training.transfer import InitSource, transfer_resnet_weights


@dataclass
class FitParts:
    """The objects of one fit. ``micro_per_epoch`` is the number of batches per epoch (``--max-steps`` included);
    ``plan.steps_per_epoch`` the optimiser steps (after gradient accumulation)."""

    cfg: TrainConfig
    family: Family
    info: ddp.DistInfo
    device: torch.device
    dtype: torch.dtype | None
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LambdaLR
    plan: Plan
    train_sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    val_rows: Sequence[int]
    micro_per_epoch: int


def build_model(
    cfg: TrainConfig, family: Family, log: Log, init: InitSource | None = None
) -> tuple[nn.Module, bool]:
    """Build the architecture via :func:`pneumoview.inference.builders.build`; ``--imagenet`` first tries the
    ImageNet weights and, offline, says so and trains from scratch (or stops with ``--require-imagenet``).
    ``init`` (``--init-from``) then overwrites the ResNet backbone with a trained PneumoView model's."""
    from pneumoview.inference.builders import build

    args = family.builder_args()
    model, pretrained = None, False
    if cfg.imagenet:
        try:
            model, pretrained = build(cfg.builder, **args, pretrained=True), True
        except ModelLoadError as exc:
            if cfg.require_imagenet:
                raise TrainingError(f"--require-imagenet: {exc}") from None
            log(f"ImageNet weights are not available ({exc}). Training {cfg.model_id} from scratch instead.")
    if model is None:
        model = build(cfg.builder, **args)
    if init is not None:
        report = transfer_resnet_weights(model, init.state)
        log(f"{cfg.model_id}: backbone initialised from {init.description}: {report.describe()}")
    return model, pretrained


def build_parts(
    cfg: TrainConfig,
    family: Family,
    train_rows: Sequence[int],
    val_rows: Sequence[int],
    *,
    info: ddp.DistInfo,
    device: torch.device,
    say: Log,
    init: InitSource | None,
) -> tuple[FitParts, bool]:
    """Seed the run, build the model on ``device`` (DDP-wrapped under torchrun), its optimiser and schedule, and
    the loaders; also returns whether pretrained weights were used."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model, used_pretrained = build_model(cfg, family, say, init)
    model = _to_device(model, cfg, device, family)
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = make_optimizer(cfg, unwrap(model))
    train_sampler, train_loader, val_loader = _loaders(cfg, family, train_rows, val_rows, info, say)
    micro_per_epoch = len(train_loader)
    if cfg.max_steps:
        micro_per_epoch = min(micro_per_epoch, cfg.max_steps * cfg.accumulate)
    if micro_per_epoch == 0:
        raise TrainingError("no training batches: the training split is empty")
    plan = Plan(cfg.epochs, math.ceil(micro_per_epoch / cfg.accumulate))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, plan, s))
    parts = FitParts(
        cfg, family, info, device, dtype, model, optimizer, scaler, scheduler, plan, train_sampler, train_loader,
        val_loader, val_rows, micro_per_epoch,
    )  # fmt: skip
    return parts, used_pretrained


def _to_device(model: nn.Module, cfg: TrainConfig, device: torch.device, family: Family) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda" and cfg.channels_last and family.name != "detector":
        model = model.to(memory_format=torch.channels_last)
    return model


def _loaders(
    cfg: TrainConfig,
    family: Family,
    train_rows: Sequence[int],
    val_rows: Sequence[int],
    info: ddp.DistInfo,
    say: Log,
) -> tuple[EpochSampler, DataLoader, DataLoader]:
    """The training sampler and loader (seeded augmentation, ``--balanced`` weights) and the validation loader."""
    augment_cfg = AugmentConfig.named(cfg.augment)
    train_set = CachedImages(
        family.cache, train_rows, family.make_sample, augment_cfg=augment_cfg, seed=cfg.seed,
        with_mask=family.with_mask,
    )  # fmt: skip
    val_set = CachedImages(
        family.cache, val_rows, family.make_sample, augment_cfg=AugmentConfig.off(), seed=cfg.seed,
        with_mask=family.with_mask,
    )  # fmt: skip
    weights = family.sample_weights(train_rows) if cfg.balanced else None
    if cfg.balanced and weights is None:
        say("--balanced applies to classifiers only; sampling uniformly.")
    train_sampler = EpochSampler(
        len(train_set), shuffle=True, seed=cfg.seed, rank=info.rank, world=info.world_size, weights=weights
    )
    val_sampler = EpochSampler(
        len(val_set), shuffle=False, seed=cfg.seed, rank=info.rank, world=info.world_size, tag_epoch=False
    )
    drop_last = len(train_sampler) > cfg.batch_size
    train_loader = make_loader(train_set, train_sampler, cfg.batch_size, cfg, family, drop_last)
    val_loader = make_loader(val_set, val_sampler, cfg.eval_batch_size or cfg.batch_size, cfg, family, False)
    return train_sampler, train_loader, val_loader
