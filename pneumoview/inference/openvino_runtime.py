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
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.errors import ModelError
from pneumoview.inference.onnx_runtime import GraphBackend, GraphCache

__all__ = ["COMPILED", "OpenVinoBackend", "cpu_config"]


def cpu_config() -> dict[str, str]:
    """The CPU plugin's settings: float32 inference, latency mode, the thread count of ``$PNEUMOVIEW_THREADS``."""
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    threads = os.environ.get("PNEUMOVIEW_THREADS", "").strip()
    if threads.isdigit():
        config["INFERENCE_NUM_THREADS"] = threads
    return config


_CORE: list[Any] = []  # the process's one openvino.Core, made on first use (under COMPILED's lock)


def _compile(path: Path) -> Any:
    # lazy: optional package, only when the OpenVINO runtime is used
    import openvino as ov

    if not _CORE:
        _CORE.append(ov.Core())
    try:
        return _CORE[0].compile_model(str(path), "CPU", cpu_config())
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors for a bad graph
        raise ModelError(f"{path}: OpenVINO cannot compile it ({exc})") from None


COMPILED = GraphCache(_compile)


class OpenVinoBackend(GraphBackend):
    """OpenVINO on the CPU."""

    name = "openvino"
    graphs = COMPILED

    def run(self, model: Any, x: np.ndarray) -> list[np.ndarray]:
        # One request per call: a compiled model is shared by threads (viewer and batch), a request is not.
        request = model.create_infer_request()
        results = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.asarray(results[out]) for out in model.outputs]
