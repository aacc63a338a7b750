"""Validation: the loss, metrics and per-image outputs over the whole validation set (sharded over DDP ranks, then
gathered), and the check that fp16-rounded weights cost no accuracy. Every validation metric is "higher is better"."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumoview.training import distributed as ddp
from pneumoview.training.checkpoint import rounded_to_half
from pneumoview.training.family import Family, unwrap
from pneumoview.training.parts import FitParts

FP16_TOLERANCE = 0.002


def evaluate(
    model: nn.Module,
    family: Family,
    loader: DataLoader,
    device: torch.device,
    dtype: torch.dtype | None,
    rows: Sequence[int],
) -> tuple[float, dict[str, Any], dict[int, Any]]:
    """Validation loss, metrics and per-image outputs over the whole validation set (sharded, then gathered).

    Runs under a forked RNG so that validating never changes the training run's random stream.
    """
    module = unwrap(model)
    module.eval()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    loss_sum, count, outputs = 0.0, 0, {}
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for batch in loader:
            s, n, out = family.eval_batch(module, batch, device, autocast)
            loss_sum += s
            count += n
            outputs.update(out)
    gathered = ddp.all_gather_objects((loss_sum, count, outputs))
    total_loss = sum(g[0] for g in gathered)
    total_n = sum(g[1] for g in gathered)
    merged: dict[int, Any] = {}
    for g in gathered:
        merged.update(g[2])
    metrics = family.metrics(merged, rows) if merged else {}
    return (total_loss / total_n if total_n else float("nan")), metrics, merged


def validate(parts: FitParts) -> tuple[float, dict[str, Any], dict[int, Any]]:
    """:func:`evaluate` of the fit's model on its validation loader."""
    return evaluate(parts.model, parts.family, parts.val_loader, parts.device, parts.dtype, parts.val_rows)


def check_fp16(
    parts: FitParts,
    best_state: Mapping[str, torch.Tensor],
    best_metrics: Mapping[str, Any],
    *,
    keep_outputs: bool,
) -> tuple[bool, dict[str, Any], dict[int, Any]]:
    """Whether the fp16 file costs no accuracy: the metric of fp16-rounded weights within :data:`FP16_TOLERANCE`
    of fp32's. Returns ``(ok, fp16 metrics, outputs)``; the outputs (empty unless ``keep_outputs``) are those of
    the weights that will be shipped (fp16 when ok, else fp32)."""
    model, metric = parts.model, parts.family.metric
    unwrap(model).load_state_dict(rounded_to_half(best_state))
    _, m16, outputs16 = validate(parts)
    v32, v16 = best_metrics.get(metric), m16.get(metric)
    ok = (
        v32 is not None
        and v16 is not None
        and math.isfinite(v16)
        and float(v16) >= float(v32) - FP16_TOLERANCE
    )
    outputs: dict[int, Any] = {}
    if keep_outputs:
        if ok:
            outputs = outputs16
        else:
            unwrap(model).load_state_dict(best_state)
            _, _, outputs = validate(parts)
    return ok, m16, outputs
