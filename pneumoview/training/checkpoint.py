"""Training checkpoints (for ``--resume``) and the export of shipped weights with their manifest entry.

* A **checkpoint** (``runs/<model_id>/checkpoint.pt``) holds the last epoch's model, the best model so far, the
  optimiser, scheduler and GradScaler states, the epoch count, the best metric, the history and every RNG state.
  It loads with ``torch.load(weights_only=True)``; its ``"model"`` entry also makes it loadable by
  :func:`pneumoview.inference.weights.load_state_dict_file`.
* **Shipped weights** are a bare state dict named ``<model_id>-<sha256[:8]>.pt`` (fp16 when that costs no accuracy),
  described by a ``[[model]]`` entry upserted into ``<out>/manifest.toml``.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pneumoview.inference.manifest import MANIFEST_NAME, model_entry_toml, parse_manifest, upsert_entries
from pneumoview.inference.weights import sha256_file

if TYPE_CHECKING:  # the fit's types import this module
    from pneumoview.training.parts import FitParts
    from pneumoview.training.progress import FitProgress

INTENDED_USE = (
    "Research use only — not for diagnosis. For exploring chest radiographs and for teaching and research on "
    "pneumonia detection; every output must be reviewed by a qualified reader."
)
LIMITATIONS = (
    "Trained on a small public subset of the RSNA Pneumonia Detection Challenge (NIH ChestX-ray14 radiographs, "
    "adult frontal views); not validated on other hospitals, scanners, children or lateral views. RSNA boxes "
    "are loose radiologist annotations, so box-level accuracy is limited. Not a medical device."
)


def rng_state() -> dict[str, Any]:
    """Every RNG state a run uses (torch CPU and CUDA, numpy's global, Python's), in a weights_only-safe form."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (loaded with ``weights_only=True`` onto the CPU)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or "model" not in obj or "epoch" not in obj:
        raise ValueError(f"{path} is not a PneumoView training checkpoint (no model/epoch inside)")
    return obj


def to_cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's state dict (unwrapping DDP)."""
    module = getattr(model, "module", model)
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def half_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors cast to fp16 (integer buffers such as ``num_batches_tracked`` unchanged)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def rounded_to_half(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a model sees after loading the fp16 file into fp32 parameters."""
    return {k: (v.half().to(v.dtype) if v.is_floating_point() else v) for k, v in state.items()}


def export_weights(state: Mapping[str, torch.Tensor], out_dir: Path, model_id: str) -> tuple[Path, str]:
    """Write ``state`` as ``<out_dir>/<model_id>-<sha256[:8]>.pt``; returns the path and the full sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{model_id}.pt.tmp"
    torch.save(dict(state), tmp)
    digest = sha256_file(tmp)
    final = out_dir / f"{model_id}-{digest[:8]}.pt"
    os.replace(tmp, final)
    return final, digest


def previous_weights(out_dir: Path, model_id: str) -> Path | None:
    """The weights file the existing manifest in ``out_dir`` gives for ``model_id`` (None if there is none)."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        models, _ = parse_manifest(manifest.read_text(encoding="utf-8"), manifest)
    except Exception:  # noqa: BLE001 - an unreadable old manifest is reported by upsert, not here
        return None
    for m in models:
        if m.id == model_id and re.fullmatch(rf"{re.escape(model_id)}-[0-9a-f]{{8}}\.pt", m.weights):
            return out_dir / m.weights
    return None


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics fit for TOML: finite floats rounded to 6 digits, ints and strings kept, NaN/None dropped."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            out[k] = v
        elif isinstance(v, float | np.floating):
            if np.isfinite(v):
                out[k] = round(float(v), 6)
        elif isinstance(v, str):
            out[k] = v
    return out


def write_model_entry(out_dir: Path, entry: Mapping[str, Any]) -> Path:
    """Upsert a ``[[model]]`` entry (a dict with the manifest's model keys) into ``<out_dir>/manifest.toml``."""
    path = out_dir / MANIFEST_NAME
    upsert_entries(path, {str(entry["id"]): model_entry_toml(entry)})
    return path


def fit_checkpoint(parts: FitParts, progress: FitProgress, elapsed: float) -> dict[str, Any]:
    """What :func:`resume_fit` needs to go on after ``progress.epoch`` epochs; ``elapsed`` is the run's wall time in
    seconds, earlier sessions included."""
    scaler = parts.scaler
    return {
        "model": to_cpu_state(parts.model),
        # The best model is stored only when it is not this epoch's (saves a model's worth of disk).
        "best_model": progress.best_state if progress.best_epoch != progress.epoch else None,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "epoch": progress.epoch,
        "planned_epochs": parts.plan.epochs,
        "best_metric": progress.best,
        "best_epoch": progress.best_epoch,
        "best_metrics": clean_metrics(progress.best_metrics),
        "history": progress.history,
        "bad_epochs": progress.bad_epochs,
        "seconds": elapsed,
        "used_pretrained": progress.used_pretrained,
        "rng": rng_state(),
        "config": json.dumps(parts.cfg.to_dict()),
        "metric": parts.family.metric,
    }


def resume_fit(path: Path, parts: FitParts, progress: FitProgress) -> None:
    """Load a checkpoint written from :func:`fit_checkpoint` into the fit's model, optimiser, schedule, scaler and
    plan, and into ``progress``; the RNG states too, so the run goes on as if it had never stopped."""
    ck = load_checkpoint(path)
    getattr(parts.model, "module", parts.model).load_state_dict(ck["model"])
    parts.optimizer.load_state_dict(ck["optimizer"])
    parts.plan.epochs = int(ck.get("planned_epochs", parts.cfg.epochs))
    parts.scheduler.load_state_dict(ck["scheduler"])
    if ck.get("scaler"):
        parts.scaler.load_state_dict(ck["scaler"])
    progress.epoch = int(ck["epoch"])
    progress.best = ck.get("best_metric")
    progress.best_epoch = int(ck.get("best_epoch", 0))
    progress.best_metrics = dict(ck.get("best_metrics", {}))
    progress.history = list(ck.get("history", []))
    progress.best_state = ck.get("best_model") if ck.get("best_model") is not None else ck["model"]
    progress.bad_epochs = int(ck.get("bad_epochs", 0))
    progress.elapsed_before = float(ck.get("seconds", 0.0))
    progress.used_pretrained = bool(ck.get("used_pretrained", progress.used_pretrained))
    set_rng_state(ck["rng"])
