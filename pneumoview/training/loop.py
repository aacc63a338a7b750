"""The training loop shared by the three families, and the orchestration of one complete run.

:func:`fit` trains one model: seeded shuffling and augmentation (per sample and epoch, so results do not depend on
the number of DataLoader workers, and a resumed run repeats the uninterrupted one), AMP (bf16, or fp16 with a
GradScaler) and channels_last on CUDA, gradient accumulation, warm-up + cosine/step schedules, validation each
epoch, best-checkpoint keeping, early stopping, a time budget, ``--resume``, DDP sharding, and a CSV log with
curves. :func:`train_model` wraps it: data → split → cache → fit → fp16 check → weights + manifest entry.

A family (:class:`Family`; see ``classifier.py``, ``detector.py``, ``segmenter.py``) supplies the datasets, the
loss, the per-image validation outputs and the metrics. Every validation metric here is "higher is better".
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from pneumoview import __version__
from pneumoview.errors import ModelLoadError, PneumoViewError
from pneumoview.preprocess import normalise
from pneumoview.training import distributed as ddp
from pneumoview.training.augment import AugmentConfig, augment
from pneumoview.training.checkpoint import (
    INTENDED_USE,
    LIMITATIONS,
    clean_metrics,
    export_weights,
    half_state,
    load_checkpoint,
    previous_weights,
    rng_state,
    rounded_to_half,
    save_checkpoint,
    set_rng_state,
    to_cpu_state,
    write_model_entry,
)
from pneumoview.training.curves import draw_curves, write_log
from pneumoview.training.datasets import (
    ACSE4_GATE_CLASSES,
    DataSource,
    ImageCache,
    build_cache,
    patient_strata,
)
from pneumoview.training.recipes import TrainConfig
from pneumoview.training.splits import Split, fixed_split, patient_split
from pneumoview.training.transfer import InitSource, load_init_source, split_mismatch, transfer_resnet_weights

FP16_TOLERANCE = 0.002
Log = Callable[[str], None]


class TrainingError(PneumoViewError):
    """Training cannot go on (no images, ImageNet weights required but missing, the loss diverged …)."""


# --------------------------------------------------------------------------------------------------------------
# Data: samplers and datasets over the in-memory cache
# --------------------------------------------------------------------------------------------------------------


class EpochSampler(Sampler):
    """Shuffled (or weighted) order for one epoch, sharded over DDP ranks like ``DistributedSampler``.

    The order depends only on ``seed`` and the epoch. Training samplers yield ``(position, epoch)`` so the dataset
    can draw the augmentation from ``(seed, epoch, position)``; evaluation samplers yield plain positions, each
    exactly once over all ranks (no padding).
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
        tag_epoch: bool = True,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world = rank, world
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.tag_epoch = tag_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.tag_epoch and self.world > 1 and order:
            total = math.ceil(self.n / self.world) * self.world
            order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[Any]:
        for i in self._order():
            yield (i, self.epoch) if self.tag_epoch else i

    def __len__(self) -> int:
        if self.tag_epoch:
            return math.ceil(self.n / self.world)
        return len(range(self.rank, self.n, self.world))


class CachedImages(Dataset):
    """Rows of an :class:`ImageCache`, augmented when indexed by ``(position, epoch)``.

    ``make(row, image_u8, mask_u8, boxes_xyxy)`` turns the (augmented) arrays into the family's sample.
    """

    def __init__(
        self,
        cache: ImageCache,
        rows: Sequence[int],
        make: Callable[[int, np.ndarray, np.ndarray | None, np.ndarray], Any],
        *,
        augment_cfg: AugmentConfig,
        seed: int,
        with_mask: bool = False,
    ) -> None:
        self.cache, self.rows, self.make = cache, list(rows), make
        self.augment_cfg, self.seed, self.with_mask = augment_cfg, seed, with_mask

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: Any) -> Any:
        position, epoch = item if isinstance(item, tuple) else (item, None)
        row = self.rows[position]
        image = self.cache.images[row]
        boxes = self.cache.boxes[row]
        mask = None
        if self.with_mask:
            from pneumoview.training.augment import box_mask

            mask = box_mask(boxes, image.shape)
        if epoch is not None and self.augment_cfg.enabled:
            rng = np.random.default_rng([self.seed, epoch, row])
            image, mask, boxes = augment(image, rng, self.augment_cfg, mask=mask, boxes_xyxy=boxes)
        return self.make(row, image, mask, boxes)


def model_input(image_u8: np.ndarray, cfg: TrainConfig) -> torch.Tensor:
    """The float32 ``(C, h, w)`` tensor inference would feed for this already-fitted uint8 image."""
    return torch.from_numpy(normalise(image_u8, cfg.input_spec))


# --------------------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Device, precision, optimiser, schedule
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """The outcome of :func:`fit` (the same on every rank)."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    epochs_run: int
    planned_epochs: int
    stopped: str
    used_pretrained: bool
    seconds: float
    device: str
    fp16: bool = False
    fp16_metrics: dict[str, Any] = field(default_factory=dict)
    final_outputs: dict[int, Any] = field(default_factory=dict)
    completed: bool = True
    metric: str = ""


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


def _to_device_model(model: nn.Module, cfg: TrainConfig, device: torch.device, family: Family) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda" and cfg.channels_last and family.name != "detector":
        model = model.to(memory_format=torch.channels_last)
    return model


def _loader(
    dataset: Dataset, sampler: Sampler, batch_size: int, cfg: TrainConfig, family: Family, drop_last: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=family.collate,
        pin_memory=torch.cuda.is_available() and cfg.device != "cpu",
        drop_last=drop_last,
        persistent_workers=cfg.workers > 0,
    )


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


def _improved(value: Any, best: float | None) -> bool:
    if value is None or not math.isfinite(float(value)):
        return False
    return best is None or float(value) > best


def fit(
    cfg: TrainConfig,
    family: Family,
    train_rows: Sequence[int],
    val_rows: Sequence[int],
    run_dir: Path | None,
    *,
    resume: Path | None = None,
    log: Log = print,
    keep_outputs: bool = False,
    init: InitSource | None = None,
) -> FitResult:
    """Train ``family``'s model on ``train_rows`` of its cache, validating on ``val_rows`` after every epoch.

    Only rank 0 writes ``run_dir`` (``checkpoint.pt``, ``log.csv``, ``curves.png``). ``keep_outputs`` returns the
    best model's per-image validation outputs (the segmenter's probability maps, for ensembles).
    """
    info = ddp.env_info()
    device = resolve_device(cfg.device, info.local_rank)
    info = ddp.init_from_env(str(device))
    main = info.is_main
    say: Log = log if main else (lambda _msg: None)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model, used_pretrained = build_model(cfg, family, say, init)
    model = _to_device_model(model, cfg, device, family)
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = make_optimizer(cfg, unwrap(model))

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
    train_loader = _loader(train_set, train_sampler, cfg.batch_size, cfg, family, drop_last)
    val_loader = _loader(val_set, val_sampler, cfg.eval_batch_size or cfg.batch_size, cfg, family, False)
    micro_per_epoch = len(train_loader)
    if cfg.max_steps:
        micro_per_epoch = min(micro_per_epoch, cfg.max_steps * cfg.accumulate)
    if micro_per_epoch == 0:
        raise TrainingError("no training batches: the training split is empty")
    plan = Plan(cfg.epochs, math.ceil(micro_per_epoch / cfg.accumulate))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, plan, s))

    start_epoch, best, best_epoch, best_metrics = 0, None, 0, {}
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, elapsed_before = 0, 0.0
    if resume is not None:
        ck = load_checkpoint(resume)
        unwrap(model).load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        plan.epochs = int(ck.get("planned_epochs", cfg.epochs))
        scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start_epoch = int(ck["epoch"])
        best = ck.get("best_metric")
        best_epoch = int(ck.get("best_epoch", 0))
        best_metrics = dict(ck.get("best_metrics", {}))
        history = list(ck.get("history", []))
        best_state = ck.get("best_model") if ck.get("best_model") is not None else ck["model"]
        bad_epochs = int(ck.get("bad_epochs", 0))
        elapsed_before = float(ck.get("seconds", 0.0))
        used_pretrained = bool(ck.get("used_pretrained", used_pretrained))
        set_rng_state(ck["rng"])
        say(f"Resumed from {resume} after epoch {start_epoch} (best {family.metric} {best}).")

    bar = None
    if main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(
            total=plan.epochs * micro_per_epoch, initial=start_epoch * micro_per_epoch, unit="batch",
            desc=cfg.model_id, dynamic_ncols=True, file=sys.stderr,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )  # fmt: skip
    write = bar.write if bar is not None else say

    stopped = "completed"
    epoch = start_epoch
    session_epochs = 0
    epoch_costs: list[float] = []  # steady-state seconds per epoch, for the time budget
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    try:
        while epoch < plan.epochs:
            t0 = time.perf_counter()
            model.train()
            train_sampler.set_epoch(epoch)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(train_loader):
                if i >= micro_per_epoch:
                    break
                last = (i + 1) % cfg.accumulate == 0 or i + 1 == micro_per_epoch
                sync = model.no_sync() if info.enabled and not last else contextlib.nullcontext()
                with sync:
                    with autocast:
                        loss, n = family.train_loss(model, batch, device)
                    scaler.scale(loss / cfg.accumulate).backward()
                loss_sum += loss.detach().double() * n
                seen += n
                if last:
                    if cfg.grad_clip > 0:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(unwrap(model).parameters(), cfg.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                if i == 0:
                    t_first = time.perf_counter()
                if bar is not None:
                    bar.update(1)
                    if i % 10 == 0:
                        bar.set_postfix(epoch=f"{epoch + 1}/{plan.epochs}", loss=f"{loss.item():.4f}")
            train_loss = ddp.mean_over_ranks(float(loss_sum), seen)  # waits for the GPU
            t_train = time.perf_counter()
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"{cfg.model_id}: the training loss became {train_loss} in epoch {epoch + 1}; "
                    "lower --lr (or use --amp off / --grad-clip)"
                )
            val_loss, metrics, _ = evaluate(model, family, val_loader, device, dtype, val_rows)
            epoch += 1
            session_epochs += 1
            seconds = time.perf_counter() - t0
            # The first batch of a session pays for worker start-up and cuDNN autotuning: extrapolate the others.
            steady_train = (t_train - t_first) * micro_per_epoch / max(1, micro_per_epoch - 1)
            epoch_costs.append(steady_train + (time.perf_counter() - t_train))
            value = metrics.get(family.metric)
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                family.metric: value,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 2),
                **{k: v for k, v in metrics.items() if k != family.metric and isinstance(v, int | float)},
            }
            history.append(row)
            if _improved(value, best) or best_state is None:
                if _improved(value, best):
                    best = float(value)
                    bad_epochs = 0
                best_epoch, best_metrics = epoch, dict(metrics)
                best_state = to_cpu_state(model)
            else:
                bad_epochs += 1
            shown = "nan" if value is None else f"{float(value):.4f}"
            write(
                f"epoch {epoch}/{plan.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"{family.metric} {shown} (best {best if best is None else round(best, 4)} @ {best_epoch}), "
                f"{seconds:.1f} s"
            )
            elapsed = elapsed_before + time.perf_counter() - t_start
            decision = None
            if main:
                if cfg.patience and bad_epochs >= cfg.patience and epoch < plan.epochs:
                    decision = ("stop", f"early stop: no better {family.metric} for {cfg.patience} epochs")
                elif cfg.max_minutes is not None:
                    budget = cfg.max_minutes * 60.0
                    # Plan from the latest epoch (the first one pays for warm-up), keeping half an epoch for the
                    # fp16 check and the export; never beyond the recipe's epochs, never before this epoch.
                    cost = float(np.median(epoch_costs[-5:]))
                    # Keep half an epoch for the fp16 check and the export.
                    fits = epoch + int(max(0.0, budget - elapsed - 0.5 * cost) // max(cost, 1e-6))
                    fits = min(cfg.epochs, max(epoch, fits))
                    if elapsed >= budget and epoch < plan.epochs:
                        decision = ("stop", f"time budget of {cfg.max_minutes:g} min used up")
                    elif fits < plan.epochs or fits > plan.epochs + max(1, plan.epochs // 10):
                        decision = ("replan", fits)
            decision = ddp.broadcast_object(decision)
            if decision and decision[0] == "replan":
                write(
                    f"time budget: {cfg.max_minutes:g} min allow {decision[1]} epochs (planned {plan.epochs}); "
                    "schedule adjusted"
                )
                plan.epochs = int(decision[1])
                if bar is not None:
                    bar.total = plan.epochs * micro_per_epoch
                    bar.refresh()
            if main and run_dir is not None:
                state = {
                    "model": to_cpu_state(model),
                    # The best model is stored only when it is not this epoch's (saves a model's worth of disk).
                    "best_model": best_state if best_epoch != epoch else None,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                    "epoch": epoch,
                    "planned_epochs": plan.epochs,
                    "best_metric": best,
                    "best_epoch": best_epoch,
                    "best_metrics": clean_metrics(best_metrics),
                    "history": history,
                    "bad_epochs": bad_epochs,
                    "seconds": elapsed,
                    "used_pretrained": used_pretrained,
                    "rng": rng_state(),
                    "config": json.dumps(cfg.to_dict()),
                    "metric": family.metric,
                }
                save_checkpoint(run_dir / "checkpoint.pt", state)
                write_log(run_dir / "log.csv", history, family.metric)
                draw_curves(run_dir / "log.csv", run_dir / "curves.png", family.metric, cfg.model_id)
            if decision and decision[0] == "stop":
                stopped = decision[1]
                write(stopped)
                break
            if cfg.stop_after is not None and session_epochs >= cfg.stop_after and epoch < plan.epochs:
                stopped = f"stopped after {session_epochs} epochs (--stop-after); resume with --resume"
                break
    finally:
        if bar is not None:
            bar.close()

    assert best_state is not None
    unwrap(model).load_state_dict(best_state)
    result = FitResult(
        best_state=best_state,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        history=history,
        epochs_run=epoch,
        planned_epochs=plan.epochs,
        stopped=stopped,
        used_pretrained=used_pretrained,
        seconds=elapsed_before + time.perf_counter() - t_start,
        device=str(device),
        completed=not stopped.startswith("stopped after"),
        metric=family.metric,
    )
    if not result.completed:
        return result
    # The fp16 file must not cost accuracy: compare the metric of fp16-rounded weights with fp32.
    unwrap(model).load_state_dict(rounded_to_half(best_state))
    _, m16, outputs16 = evaluate(model, family, val_loader, device, dtype, val_rows)
    v32, v16 = best_metrics.get(family.metric), m16.get(family.metric)
    ok = (
        v32 is not None
        and v16 is not None
        and math.isfinite(v16)
        and float(v16) >= float(v32) - FP16_TOLERANCE
    )
    result.fp16, result.fp16_metrics = ok, m16
    if keep_outputs:
        if ok:
            result.final_outputs = outputs16
        else:
            unwrap(model).load_state_dict(best_state)
            _, _, result.final_outputs = evaluate(model, family, val_loader, device, dtype, val_rows)
    return result


# --------------------------------------------------------------------------------------------------------------
# One complete run: data → split → cache → fit → weights + manifest entry
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run produced (files are None on ranks other than 0 and for an interrupted run)."""

    model_id: str
    fit: FitResult
    weights: Path | None
    sha256: str | None
    manifest: Path | None
    run_dir: Path | None
    entry: dict[str, Any]
    skipped: list[tuple[Path, str]]
    split: Split
    cache: ImageCache


def make_split(cfg: TrainConfig, cache: ImageCache, source: DataSource | None = None) -> Split:
    records = cache.records
    if source is not None and source.fixed_val is not None:
        return fixed_split(
            [r.patient for r in records], [r.key in source.fixed_val for r in records], "--val-images",
            seed=cfg.split_seed,
        )  # fmt: skip
    return patient_split(
        [r.patient for r in records],
        patient_strata(records),
        val_fraction=cfg.val_fraction,
        seed=cfg.split_seed,
        folds=cfg.folds,
        fold=cfg.fold,
    )


def load_cache(source: DataSource, cfg: TrainConfig, log: Log) -> ImageCache:
    """Decode the source's images at the model-input size (a thread per worker), reporting unreadable files."""
    records = source.records
    if cfg.limit:
        records = subsample(records, cfg.limit, cfg.split_seed)
    if not records:
        raise TrainingError("no training images: check --images (and --labels/--index)")
    t0 = time.perf_counter()
    cache = build_cache(records, cfg.input_spec, threads=max(2, cfg.workers))
    log(
        f"Decoded {len(cache)} images at {cfg.size} px in {time.perf_counter() - t0:.1f} s "
        f"({cache.images.nbytes / 2**20:.0f} MiB in memory)"
        + (f"; {len(cache.failed)} unreadable files skipped" if cache.failed else "")
    )
    for path, message in cache.failed:
        log(f"  skipped {path}: {message}")
    return cache


def subsample(records: Sequence[Any], n: int, seed: int) -> list[Any]:
    """``n`` records drawn evenly from each label (seeded), for smoke runs (``--limit``)."""
    if n >= len(records):
        return list(records)
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Any]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    pools = [list(np.asarray(v, dtype=object)[rng.permutation(len(v))]) for _, v in sorted(by_label.items())]
    out: list[Any] = []
    while len(out) < n:
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return sorted(out, key=lambda r: r.key)


def make_family(cfg: TrainConfig, cache: ImageCache) -> Family:
    if cfg.family == "classifier":
        from pneumoview.training.classifier import ClassifierFamily

        return ClassifierFamily(cfg, cache)
    if cfg.family == "detector":
        from pneumoview.training.detector import DetectorFamily

        return DetectorFamily(cfg, cache)
    from pneumoview.training.segmenter import SegmenterFamily

    return SegmenterFamily(cfg, cache)


def manifest_entry(
    cfg: TrainConfig,
    family: Family,
    result: FitResult,
    split: Split,
    source: DataSource,
    weights_name: str,
    sha256: str,
    command: str,
) -> dict[str, Any]:
    """The ``[[model]]`` table for the manifest (a model card: data, split, recipe, metrics, intended use)."""
    records = family.cache.records
    train_patients = {records[i].patient for i in split.train}
    val_patients = {records[i].patient for i in split.val}
    metrics = clean_metrics(result.fp16_metrics if result.fp16 else result.best_metrics)
    metrics["metric"] = family.metric
    training = {
        "data": source.description,
        "layout": source.layout,
        "train_images": len(split.train),
        "val_images": len(split.val),
        "train_patients": len(train_patients),
        "val_patients": len(val_patients),
        "split": split.describe(),
        "split_seed": split.seed,
        "recipe": cfg.recipe,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "lr": cfg.lr,
        "imagenet_init": result.used_pretrained,
        "weights_dtype": "float16" if result.fp16 else "float32",
        "command": command,
        "wall_time_s": round(result.seconds, 1),
        "device": result.device,
        "torch": torch.__version__,
        "pneumoview": __version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    if split.folds:
        training.update(folds=split.folds, fold=split.fold)
    if family.cache.failed:
        training["skipped_images"] = len(family.cache.failed)
    return {
        "id": cfg.model_id,
        "task": cfg.task,
        "builder": cfg.builder,
        "builder_args": family.manifest_builder_args(result.used_pretrained),
        "classes": list(family.classes()),
        "positive_class": family.positive_class(),
        "gate_classes": list(ACSE4_GATE_CLASSES) if cfg.scheme == "acse4" else None,
        "input": cfg.input_spec.to_dict(),
        "weights": weights_name,
        "sha256": sha256,
        "version": cfg.version,
        "description": f"{cfg.family} {cfg.builder} trained with pneumoview train ({cfg.recipe} recipe)",
        "training": training,
        "metrics": metrics,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
    }


def train_model(
    cfg: TrainConfig,
    source: DataSource,
    out_dir: Path,
    *,
    cache: ImageCache | None = None,
    resume: Path | None = None,
    command: str = "",
    log: Log = print,
    keep_outputs: bool = False,
) -> TrainResult:
    """Train one model end to end and (on rank 0) write its weights, manifest entry, checkpoint, log and curves.

    ``cache`` may be shared between runs of the same input size (the members of an ensemble).
    """
    info = ddp.env_info()
    say: Log = log if info.is_main else (lambda _m: None)
    if cache is None or cache.spec.size != cfg.input_spec.size or cache.spec.resize != cfg.resize:
        cache = load_cache(source, cfg, say)
    split = make_split(cfg, cache, source)
    if len(split.train) == 0 or len(split.val) == 0:
        raise TrainingError(
            f"the split left {len(split.train)} training and {len(split.val)} validation images; "
            "use more images or another --val-fraction"
        )
    say(
        f"{cfg.model_id}: {len(split.train)} training / {len(split.val)} validation images "
        f"({split.describe()}); recipe {cfg.recipe}, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}"
    )
    family = make_family(cfg, cache)
    init = None
    if cfg.init_from and resume is None:
        from pneumoview.inference.manifest import models_dirs

        init = load_init_source(cfg.init_from, [out_dir, *models_dirs()])
        warning = split_mismatch(
            init.training, data=source.description, split_seed=split.seed, folds=split.folds, fold=split.fold,
            val_images=len(split.val),
        )  # fmt: skip
        if warning:
            say(f"warning: --init-from {cfg.init_from}: {warning}")
    run_dir = out_dir / "runs" / cfg.model_id
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
    result = fit(
        cfg, family, split.train.tolist(), split.val.tolist(), run_dir, resume=resume, log=say,
        keep_outputs=keep_outputs, init=init,
    )  # fmt: skip
    weights = sha = manifest = None
    entry: dict[str, Any] = {}
    if info.is_main and result.completed:
        state = half_state(result.best_state) if result.fp16 else result.best_state
        old = previous_weights(out_dir, cfg.model_id)
        weights, sha = export_weights(state, out_dir, cfg.model_id)
        entry = manifest_entry(cfg, family, result, split, source, weights.name, sha, command)
        if cfg.init_from:
            entry["training"]["init_from"] = init.description if init is not None else cfg.init_from
        manifest = write_model_entry(out_dir, entry)
        if old is not None and old != weights and old.is_file():
            old.unlink()
            say(f"Removed the previous weights of {cfg.model_id}: {old.name}")
        (run_dir / "summary.json").write_text(
            json.dumps(
                {"entry": entry, "stopped": result.stopped, "skipped": [str(p) for p, _ in cache.failed]},
                indent=2,
                default=str,
            ),
            encoding="utf-8",
        )
    ddp.barrier()
    return TrainResult(
        cfg.model_id, result, weights, sha, manifest, run_dir, entry, cache.failed, split, cache
    )


def summary_text(res: TrainResult) -> str:
    """The end-of-run summary: best epoch and metric, time, files written, skipped images."""
    f = res.fit
    family_metric = f.metric
    value = f.best_metrics.get(family_metric)
    lines = [
        f"== {res.model_id}: {f.stopped} ==",
        f"best epoch {f.best_epoch} of {f.epochs_run}: {family_metric} = "
        + ("n/a" if value is None else f"{float(value):.4f}"),
        f"time {f.seconds / 60:.1f} min on {f.device} ({platform.node() or 'this machine'})",
    ]
    if res.weights is not None:
        lines.append(
            f"weights  {res.weights} ({'fp16' if f.fp16 else 'fp32'}, {res.weights.stat().st_size / 2**20:.1f} MiB)"
        )
        lines.append(f"manifest {res.manifest}")
    if res.run_dir is not None:
        lines.append(f"run      {res.run_dir} (checkpoint.pt, log.csv, curves.png)")
    if res.skipped:
        lines.append(f"skipped {len(res.skipped)} unreadable images:")
        lines.extend(f"  {p}: {m}" for p, m in res.skipped)
    return "\n".join(lines)
