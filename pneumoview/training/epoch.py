"""One training epoch: the batches of the training loader through the model, with AMP, gradient accumulation, DDP
synchronisation on the last micro-batch only, gradient clipping and one scheduler step per optimiser step."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pneumoview.training import distributed as ddp
from pneumoview.training.family import TrainingError, unwrap
from pneumoview.training.parts import FitParts


@dataclass(frozen=True)
class TrainedEpoch:
    """The epoch's mean training loss (over every rank) and its ``time.perf_counter`` marks, in seconds: when it
    started, when its first batch was done and when its last one was."""

    loss: float
    started: float
    first_batch_done: float
    train_done: float

    def steady_seconds(self, batches: int) -> float:
        """Training time of the epoch without its first batch, which pays for worker start-up and cuDNN
        autotuning: the other batches' pace extrapolated to all ``batches``."""
        return (self.train_done - self.first_batch_done) * batches / max(1, batches - 1)


def train_epoch(parts: FitParts, epoch: int, bar: Any = None) -> TrainedEpoch:
    """Train ``parts.model`` for epoch ``epoch`` (0-based); ``bar`` is a tqdm bar or None.

    Raises :class:`TrainingError` when the mean loss is not finite.
    """
    cfg, model, optimizer = parts.cfg, parts.model, parts.optimizer
    started = time.perf_counter()
    model.train()
    parts.train_sampler.set_epoch(epoch)
    autocast = (
        torch.autocast(parts.device.type, dtype=parts.dtype)
        if parts.dtype is not None
        else contextlib.nullcontext()
    )
    loss_sum = torch.zeros((), dtype=torch.float64, device=parts.device)
    seen = 0
    first_batch_done = started
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(parts.train_loader):
        if i >= parts.micro_per_epoch:
            break
        last = (i + 1) % cfg.accumulate == 0 or i + 1 == parts.micro_per_epoch
        sync = model.no_sync() if parts.info.enabled and not last else contextlib.nullcontext()
        with sync:
            with autocast:
                loss, n = parts.family.train_loss(model, batch, parts.device)
            parts.scaler.scale(loss / cfg.accumulate).backward()
        loss_sum += loss.detach().double() * n
        seen += n
        if last:
            _optimizer_step(parts)
        if i == 0:
            first_batch_done = time.perf_counter()
        if bar is not None:
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(epoch=f"{epoch + 1}/{parts.plan.epochs}", loss=f"{loss.item():.4f}")
    train_loss = ddp.mean_over_ranks(float(loss_sum), seen)  # waits for the GPU
    train_done = time.perf_counter()
    if not math.isfinite(train_loss):
        raise TrainingError(
            f"{cfg.model_id}: the training loss became {train_loss} in epoch {epoch + 1}; "
            "lower --lr (or use --amp off / --grad-clip)"
        )
    return TrainedEpoch(train_loss, started, first_batch_done, train_done)


def _optimizer_step(parts: FitParts) -> None:
    """Clip (``--grad-clip``), step the optimiser through the GradScaler, then the schedule."""
    if parts.cfg.grad_clip > 0:
        parts.scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(unwrap(parts.model).parameters(), parts.cfg.grad_clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scheduler.step()
