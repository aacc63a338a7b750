"""The eager PyTorch runtime: device choice, the process-wide model cache, and the torch :class:`Backend`.

Inputs and outputs are numpy (see :mod:`pneumoview.inference.runtime`); tensors stay inside this module and
:mod:`pneumoview.inference.tta`. On CUDA the classifier and segmenters run in ``channels_last`` under fp16 autocast.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumoview.errors import ModelError
from pneumoview.inference import tta
from pneumoview.inference.manifest import ModelSpec
from pneumoview.inference.runtime import Detections
from pneumoview.inference.weights import build_and_load, find_weights, verified_weights

__all__ = ["MODEL_CACHE", "TorchBackend", "resolve_device"]


def resolve_device(requested: str | None = None) -> str:
    """The torch device string to use.

    ``requested`` (from ``--device`` or the settings) wins; else ``$PNEUMOVIEW_DEVICE``; else ``"auto"``, which
    means CUDA if available, then Apple MPS, then CPU. An unavailable explicit device raises ModelError.
    """
    choice = (requested or os.environ.get("PNEUMOVIEW_DEVICE") or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if choice == "auto":
        return "cuda:0" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {choice!r} was asked for but CUDA is not available here; use --device cpu"
            )
        return "cuda:0" if choice == "cuda" else choice
    if choice == "mps":
        if not mps_ok:
            raise ModelError(
                "device 'mps' was asked for but Apple MPS is not available here; use --device cpu"
            )
        return "mps"
    if choice == "cpu":
        return "cpu"
    raise ModelError(f"unknown device {choice!r}; use auto, cpu, cuda, cuda:N or mps")


class _ModelCache:
    """Loaded models per (model id, sha256, device, file), shared by every Engine in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str, str, str], Any] = {}

    def get(self, spec: ModelSpec, device: str, dirs: Sequence[Path] | None, random_weights: bool) -> Any:
        # The file's location is part of the key, so a model is never served from the cache after its weights
        # file disappeared or another folder took precedence; the checksum is verified on every real load.
        where = "" if random_weights else str(find_weights(spec, dirs))
        key = (spec.id, "random" if random_weights else spec.sha256, device, where)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                path = None if random_weights else verified_weights(spec, dirs)
                model = build_and_load(spec, path).to(device)
                if device.startswith("cuda") and spec.task != "detect":
                    model = model.to(memory_format=torch.channels_last)
                self._models[key] = model
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODEL_CACHE = _ModelCache()


class TorchBackend:
    """Eager PyTorch on ``device`` (a string from :func:`resolve_device`)."""

    name = "torch"

    def __init__(self, device: str) -> None:
        self.device = device

    def check(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> None:
        if not random_weights:
            verified_weights(spec, dirs)

    def load(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> Any:
        return MODEL_CACHE.get(spec, self.device, dirs, random_weights)

    @contextlib.contextmanager
    def session(self) -> Any:
        autocast: AbstractContextManager[Any] = (
            torch.autocast("cuda", dtype=torch.float16)
            if self.device.startswith("cuda")
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            yield

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self.device.startswith("cuda"):
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def classify(self, model: Any, x: np.ndarray, tta_on: bool) -> np.ndarray:
        return tta.classify(model, self._tensor(x), tta_on).cpu().numpy().astype(np.float32)

    def segment(self, model: Any, x: np.ndarray, tta_on: bool) -> np.ndarray:
        return tta.segment(model, self._tensor(x), tta_on).cpu().numpy().astype(np.float32)

    def detect(self, model: Any, x: np.ndarray, tta_on: bool) -> Detections:
        return tta.detect(model, self._tensor(x), tta_on)

    def out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)

    def to_cpu(self) -> None:
        torch.cuda.empty_cache()
        self.device = "cpu"
