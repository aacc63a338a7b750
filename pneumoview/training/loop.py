"""The training loop shared by the three families, and the orchestration of one complete run.

:func:`fit` trains one model: seeded shuffling and augmentation (per sample and epoch, so results do not depend on
the number of DataLoader workers, and a resumed run repeats the uninterrupted one), AMP (bf16, or fp16 with a
GradScaler) and channels_last on CUDA, gradient accumulation, warm-up + cosine/step schedules, validation each
epoch, best-checkpoint keeping, early stopping, a time budget, ``--resume``, DDP sharding, and a CSV log with
curves. :func:`train_model` wraps it: data → split → cache → fit → fp16 check → weights + manifest entry.

:func:`fit` is the driver; each part has its module: :mod:`.parts` (the model, optimiser, schedule and loaders),
:mod:`.epoch` (one training epoch), :mod:`.evaluation` (validation and the fp16 check), :mod:`.progress` (history
and best model), :mod:`.budget` (early stop and time budget) and :mod:`.checkpoint` (``--resume``).
A family (:class:`~pneumoview.training.family.Family`; see ``classifier.py``, ``detector.py``, ``segmenter.py``)
supplies the datasets, the loss, the per-image validation outputs and the metrics.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumoview import __version__
from pneumoview.training import distributed as ddp
from pneumoview.training.budget import decide
from pneumoview.training.checkpoint import (
    INTENDED_USE,
    LIMITATIONS,
    clean_metrics,
    export_weights,
    fit_checkpoint,
    half_state,
    previous_weights,
    resume_fit,
    save_checkpoint,
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
from pneumoview.training.epoch import TrainedEpoch, train_epoch
from pneumoview.training.evaluation import check_fp16, validate
from pneumoview.training.family import Family, Log, TrainingError, unwrap
from pneumoview.training.parts import FitParts, build_parts
from pneumoview.training.progress import FitProgress
from pneumoview.training.recipes import TrainConfig
from pneumoview.training.schedule import resolve_device
from pneumoview.training.splits import Split, fixed_split, patient_split
from pneumoview.training.transfer import InitSource, load_init_source, split_mismatch


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
    say: Log = log if info.is_main else (lambda _msg: None)
    t_start = time.perf_counter()
    parts, used_pretrained = build_parts(
        cfg, family, train_rows, val_rows, info=info, device=device, say=say, init=init
    )
    progress = FitProgress(used_pretrained=used_pretrained)
    if resume is not None:
        resume_fit(resume, parts, progress)
        say(f"Resumed from {resume} after epoch {progress.epoch} (best {family.metric} {progress.best}).")
    bar = _progress_bar(parts, progress.epoch) if info.is_main and cfg.progress else None
    write = bar.write if bar is not None else say
    stopped = None
    try:
        while stopped is None and progress.epoch < parts.plan.epochs:
            stopped = _fit_epoch(parts, progress, run_dir, bar, write, t_start)
    finally:
        if bar is not None:
            bar.close()
    return _finish(parts, progress, stopped or "completed", t_start, keep_outputs)


def _progress_bar(parts: FitParts, start_epoch: int) -> Any:
    from tqdm import tqdm

    batches = parts.micro_per_epoch
    return tqdm(
        total=parts.plan.epochs * batches, initial=start_epoch * batches, unit="batch", desc=parts.cfg.model_id,
        dynamic_ncols=True, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )  # fmt: skip


def _fit_epoch(
    parts: FitParts, progress: FitProgress, run_dir: Path | None, bar: Any, write: Log, t_start: float
) -> str | None:
    """Train and validate one epoch, log it, apply the budget and save the checkpoint; returns why the fit stops
    after this epoch, or None to go on."""
    cfg, family, plan = parts.cfg, parts.family, parts.plan
    trained = train_epoch(parts, progress.epoch, bar)
    val_loss, metrics, _ = validate(parts)
    progress.epoch += 1
    progress.session_epochs += 1
    seconds = time.perf_counter() - trained.started
    progress.epoch_costs.append(
        trained.steady_seconds(parts.micro_per_epoch) + (time.perf_counter() - trained.train_done)
    )
    value = metrics.get(family.metric)
    progress.record(
        _log_row(parts, progress.epoch, trained, val_loss, metrics, seconds), metrics, value, parts.model
    )
    shown = "nan" if value is None else f"{float(value):.4f}"
    write(
        f"epoch {progress.epoch}/{plan.epochs}: train loss {trained.loss:.4f}, val loss {val_loss:.4f}, "
        f"{family.metric} {shown} {progress.best_text()}, {seconds:.1f} s"
    )
    elapsed = progress.elapsed_before + time.perf_counter() - t_start
    decision = ddp.broadcast_object(
        decide(cfg, family.metric, progress, plan, elapsed) if parts.info.is_main else None
    )
    if decision and decision[0] == "replan":
        _replan(parts, int(decision[1]), bar, write)
    if parts.info.is_main and run_dir is not None:
        save_checkpoint(run_dir / "checkpoint.pt", fit_checkpoint(parts, progress, elapsed))
        write_log(run_dir / "log.csv", progress.history, family.metric)
        draw_curves(run_dir / "log.csv", run_dir / "curves.png", family.metric, cfg.model_id)
    if decision and decision[0] == "stop":
        write(str(decision[1]))
        return str(decision[1])
    if (
        cfg.stop_after is not None
        and progress.session_epochs >= cfg.stop_after
        and progress.epoch < plan.epochs
    ):
        return f"stopped after {progress.session_epochs} epochs (--stop-after); resume with --resume"
    return None


def _log_row(
    parts: FitParts,
    epoch: int,
    trained: TrainedEpoch,
    val_loss: float,
    metrics: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The epoch's row of ``log.csv`` (the family's metric, then its other numeric metrics)."""
    metric = parts.family.metric
    return {
        "epoch": epoch,
        "train_loss": trained.loss,
        "val_loss": val_loss,
        metric: metrics.get(metric),
        "lr": parts.optimizer.param_groups[0]["lr"],
        "seconds": round(seconds, 2),
        **{k: v for k, v in metrics.items() if k != metric and isinstance(v, int | float)},
    }


def _replan(parts: FitParts, epochs: int, bar: Any, write: Log) -> None:
    """Shorten (or lengthen) the schedule to the ``epochs`` the time budget allows."""
    write(
        f"time budget: {parts.cfg.max_minutes:g} min allow {epochs} epochs (planned {parts.plan.epochs}); "
        "schedule adjusted"
    )
    parts.plan.epochs = epochs
    if bar is not None:
        bar.total = parts.plan.epochs * parts.micro_per_epoch
        bar.refresh()


def _finish(
    parts: FitParts, progress: FitProgress, stopped: str, t_start: float, keep_outputs: bool
) -> FitResult:
    """Load the best model and describe the fit; a completed fit also gets the fp16 check (and outputs)."""
    best_state = progress.best_state
    assert best_state is not None
    unwrap(parts.model).load_state_dict(best_state)
    result = FitResult(
        best_state=best_state,
        best_epoch=progress.best_epoch,
        best_metrics=progress.best_metrics,
        history=progress.history,
        epochs_run=progress.epoch,
        planned_epochs=parts.plan.epochs,
        stopped=stopped,
        used_pretrained=progress.used_pretrained,
        seconds=progress.elapsed_before + time.perf_counter() - t_start,
        device=str(parts.device),
        completed=not stopped.startswith("stopped after"),
        metric=parts.family.metric,
    )
    if result.completed:
        result.fp16, result.fp16_metrics, result.final_outputs = check_fp16(
            parts, best_state, progress.best_metrics, keep_outputs=keep_outputs
        )
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
