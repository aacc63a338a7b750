"""When a fit stops early or changes its length: early stopping (``--patience``) and the time budget
(``--max-minutes``), decided on rank 0 after each epoch."""

from __future__ import annotations

from typing import Literal

import numpy as np

from pneumoview.training.progress import FitProgress
from pneumoview.training.recipes import TrainConfig
from pneumoview.training.schedule import Plan

Decision = tuple[Literal["stop"], str] | tuple[Literal["replan"], int] | None


def decide(cfg: TrainConfig, metric: str, progress: FitProgress, plan: Plan, elapsed: float) -> Decision:
    """``("stop", reason)``, ``("replan", epochs)`` or None after an epoch; ``elapsed`` is the run's wall time in
    seconds, earlier sessions included."""
    if cfg.patience and progress.bad_epochs >= cfg.patience and progress.epoch < plan.epochs:
        return ("stop", f"early stop: no better {metric} for {cfg.patience} epochs")
    if cfg.max_minutes is None:
        return None
    budget = cfg.max_minutes * 60.0
    # Plan from the latest epochs (the first one pays for warm-up), keeping half an epoch for the fp16 check and
    # the export; never beyond the recipe's epochs, never before this epoch.
    cost = float(np.median(progress.epoch_costs[-5:]))
    fits = progress.epoch + int(max(0.0, budget - elapsed - 0.5 * cost) // max(cost, 1e-6))
    fits = min(cfg.epochs, max(progress.epoch, fits))
    if elapsed >= budget and progress.epoch < plan.epochs:
        return ("stop", f"time budget of {cfg.max_minutes:g} min used up")
    if fits < plan.epochs or fits > plan.epochs + max(1, plan.epochs // 10):
        return ("replan", fits)
    return None
