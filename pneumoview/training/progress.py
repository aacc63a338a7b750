"""Where a fit stands after each epoch (:class:`FitProgress`): the history, the best model so far and the counters
of early stopping and the time budget; what a checkpoint stores to resume."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pneumoview.training.checkpoint import to_cpu_state


def improved(value: Any, best: float | None) -> bool:
    """True when a validation metric (higher is better) beats ``best``; never for a missing or non-finite one."""
    if value is None or not math.isfinite(float(value)):
        return False
    return best is None or float(value) > best


@dataclass
class FitProgress:
    """The state of a fit between epochs.

    ``epoch`` counts the epochs done (resumed ones included), ``session_epochs`` those of this process;
    ``best_state`` is a CPU copy of the best model's weights (the first epoch's until one improves the metric);
    ``elapsed_before`` is the wall time of earlier sessions, in seconds; ``epoch_costs`` are steady-state seconds
    per epoch of this session, for the time budget.
    """

    used_pretrained: bool = False
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_epochs: int = 0
    elapsed_before: float = 0.0
    session_epochs: int = 0
    epoch_costs: list[float] = field(default_factory=list)

    def record(self, row: dict[str, Any], metrics: dict[str, Any], value: Any, model: nn.Module) -> None:
        """Add the epoch's log ``row``; keep the model when ``value`` (its metric) is the best so far."""
        self.history.append(row)
        if improved(value, self.best) or self.best_state is None:
            if improved(value, self.best):
                self.best = float(value)
                self.bad_epochs = 0
            self.best_epoch, self.best_metrics = self.epoch, dict(metrics)
            self.best_state = to_cpu_state(model)
        else:
            self.bad_epochs += 1

    def best_text(self) -> str:
        """``"(best 0.8123 @ 4)"``, as the epoch line shows it."""
        return f"(best {self.best if self.best is None else round(self.best, 4)} @ {self.best_epoch})"
