"""The OpenVINO backend: the same verified ONNX exports as ONNX Runtime, compiled by OpenVINO for the CPU (torch-free).

OpenVINO reads the ``.onnx`` files :mod:`pneumoview.inference.onnx_artifacts` finds or makes; the model families,
flip TTA and the detector's per-image loop are :class:`pneumoview.inference.onnx_runtime.GraphBackend`'s, so both
runtimes give the same results from the same graphs. Inference runs in 32-bit float
(``INFERENCE_PRECISION_HINT = f32``): OpenVINO would otherwise pick bfloat16 on CPUs that have it, which moved the
segmentation maps by up to 0.06 and changed a detector box count on the shipped models (see the README's
Performance section). Threads: ``$PNEUMOVIEW_THREADS`` or OpenVINO's default (every core).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.errors import ModelError
from pneumoview.inference.manifest import ModelSpec
from pneumoview.inference.onnx_runtime import GraphBackend, verified_export

__all__ = ["COMPILED", "OpenVinoBackend", "cpu_config"]


def cpu_config() -> dict[str, str]:
    """The CPU plugin's settings: float32 inference, latency mode, the thread count of ``$PNEUMOVIEW_THREADS``."""
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    threads = os.environ.get("PNEUMOVIEW_THREADS", "").strip()
    if threads.isdigit():
        config["INFERENCE_NUM_THREADS"] = threads
    return config


class _Compiled:
    """One compiled model per export file (path and sha256), shared by every Engine in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._core: Any = None
        self._models: dict[tuple[str, str], Any] = {}

    def get(self, spec: ModelSpec, dirs: Sequence[Path]) -> Any:
        # lazy: optional package, only when the OpenVINO runtime is used
        import openvino as ov

        artefact = verified_export(spec, dirs)
        key = (str(artefact.path), artefact.onnx_sha256)
        with self._lock:
            compiled = self._models.get(key)
            if compiled is None:
                if self._core is None:
                    self._core = ov.Core()
                try:
                    compiled = self._core.compile_model(str(artefact.path), "CPU", cpu_config())
                except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors for a bad graph
                    raise ModelError(f"{artefact.path}: OpenVINO cannot compile it ({exc})") from None
                self._models[key] = compiled
            return compiled

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


COMPILED = _Compiled()


class OpenVinoBackend(GraphBackend):
    """OpenVINO on the CPU."""

    name = "openvino"

    def load(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> Any:
        self.check(spec, dirs, random_weights)
        return COMPILED.get(spec, dirs)

    def run(self, model: Any, x: np.ndarray) -> list[np.ndarray]:
        # One request per call: a compiled model is shared by threads (viewer and batch), a request is not.
        request = model.create_infer_request()
        results = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.asarray(results[out]) for out in model.outputs]
