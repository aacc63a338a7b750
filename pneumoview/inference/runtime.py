"""Which runtime runs the models — OpenVINO, ONNX Runtime or eager PyTorch — and the interface they implement.

This module imports none of torch, onnxruntime and openvino at import time, so a viewer-only install (or the desktop bundle)
without PyTorch can import it and the engine.

Choosing (:func:`choose_runtime`): the ``runtime`` argument (``--runtime``, the settings) wins, else
``$PNEUMOVIEW_RUNTIME``, else ``"auto"`` (an explicit ``"auto"`` also defers to ``$PNEUMOVIEW_RUNTIME``):

- ``"onnx"``: ONNX Runtime on the CPU; an error naming the package when ``onnxruntime`` is not installed;
- ``"openvino"``: OpenVINO on the CPU, running the same ONNX exports; an error naming the package when ``openvino``
  is not installed;
- ``"torch"``: eager PyTorch on the device :func:`pneumoview.inference.torch_runtime.resolve_device` picks;
- ``"auto"``: when the models would run on the CPU anyway (an explicit ``cpu`` device, no PyTorch installed, or
  PyTorch finds no GPU), OpenVINO if ``openvino`` is importable, else ONNX Runtime if ``onnxruntime`` is; else
  eager PyTorch. (OpenVINO ran the shipped pipeline fastest on the CPU, with the same outputs: README, Performance.)

Backends (:class:`Backend`) take and return numpy arrays in the model-input frame: ``x`` is float32
``(B, C, h, w)`` as :func:`pneumoview.preprocess.prepare` makes it (stacked), probabilities are float32, boxes are
``xyxy`` in model-input pixels.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pneumoview.errors import ModelError

if TYPE_CHECKING:
    from pathlib import Path

    from pneumoview.inference.manifest import ModelSpec

__all__ = [
    "RUNTIMES",
    "RUNTIME_ENV",
    "Backend",
    "Detections",
    "RuntimeMissingError",
    "choose_runtime",
    "make_backend",
    "needs_torch",
    "onnxruntime_available",
    "openvino_available",
    "torch_installed",
]

RUNTIMES = ("auto", "onnx", "openvino", "torch")
RUNTIME_ENV = "PNEUMOVIEW_RUNTIME"
DEVICE_ENV = "PNEUMOVIEW_DEVICE"

ONNX_INSTALL_HINT = "pip install 'pneumoview[onnx]' (or pip install onnxruntime)"
OPENVINO_INSTALL_HINT = "pip install 'pneumoview[openvino]' (or pip install openvino)"
TORCH_INSTALL_HINT = "pip install torch torchvision (see the README's Quick start)"

#: Per image: ``(boxes (N, 4) xyxy in model-input pixels, scores (N,))``, float32.
Detections = list[tuple[np.ndarray, np.ndarray]]


class RuntimeMissingError(ModelError):
    """The runtime asked for (or any runtime at all) is not installed."""


def installed(name: str) -> bool:
    """Whether package ``name`` can be imported (checked without importing it)."""
    # find_spec does not import the package; a finder that refuses it (a test blocking torch) counts as absent.
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported (checked without importing it)."""
    return installed("onnxruntime")


def openvino_available() -> bool:
    """Whether ``openvino`` can be imported (checked without importing it)."""
    return installed("openvino")


def torch_installed() -> bool:
    """Whether ``torch`` can be imported (checked without importing it)."""
    return installed("torch")


def needs_torch(feature: str) -> str | None:
    """The sentence to show when ``feature`` (training, Grad-CAM) needs PyTorch and it is not installed (the
    desktop app never has it), else None."""
    return None if torch_installed() else f"{feature} needs PyTorch: {TORCH_INSTALL_HINT}"


def _requested(value: str | None, env: str, valid: Sequence[str] | None = None) -> str:
    if valid is not None and (value or "").strip().lower() == "auto":
        value = None  # an explicit "auto" runtime still defers to the environment variable
    choice = (value or os.environ.get(env) or "auto").strip().lower()
    if valid is not None and choice not in valid:
        raise ModelError(f"unknown runtime {choice!r}; use one of {', '.join(valid)} (--runtime or ${env})")
    return choice


def _torch_device(device: str) -> str:
    if not torch_installed():
        raise RuntimeMissingError(
            f"the torch runtime needs PyTorch, which is not installed here; {TORCH_INSTALL_HINT}, or use "
            f"--runtime onnx ({ONNX_INSTALL_HINT})"
        )
    # lazy: torch_runtime imports torch, which a torch-free install lacks
    from pneumoview.inference.torch_runtime import resolve_device

    return resolve_device(device)


def _cpu_graph_runtime(choice: str, dev: str) -> tuple[str, str]:
    """``"onnx"`` or ``"openvino"`` asked for by name: installed, and on the CPU."""
    available, package, hint = {
        "onnx": (onnxruntime_available, "onnxruntime", ONNX_INSTALL_HINT),
        "openvino": (openvino_available, "openvino", OPENVINO_INSTALL_HINT),
    }[choice]
    if not available():
        raise RuntimeMissingError(
            f"the {choice} runtime was asked for but the package '{package}' is not installed; {hint}, or use "
            "--runtime torch"
        )
    if dev not in ("auto", "cpu"):
        raise ModelError(
            f"the {choice} runtime runs on the CPU only, but device {dev!r} was asked for; use --device cpu, or "
            "--runtime torch for the GPU"
        )
    return choice, "cpu"


def _best_cpu_runtime() -> str | None:
    if openvino_available():
        return "openvino"
    return "onnx" if onnxruntime_available() else None


def choose_runtime(runtime: str | None = None, device: str | None = None) -> tuple[str, str]:
    """The ``(runtime, device)`` to use: runtime ``"openvino"``, ``"onnx"`` or ``"torch"``, and a device string.

    ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (else ``$PNEUMOVIEW_DEVICE``); the
    openvino and onnx runtimes always run on ``"cpu"``. PyTorch is imported only when it is needed to answer (a GPU
    check).

    Raises:
        RuntimeMissingError: the runtime asked for is not installed (the message names the install command).
        ModelError: an unknown runtime or an unavailable device.
    """
    choice = _requested(runtime, RUNTIME_ENV, RUNTIMES)
    dev = _requested(device, DEVICE_ENV)
    if choice == "torch":
        return "torch", _torch_device(dev)
    if choice in ("onnx", "openvino"):
        return _cpu_graph_runtime(choice, dev)
    cpu_runtime = _best_cpu_runtime()
    if cpu_runtime is not None and (dev == "cpu" or (dev == "auto" and not torch_installed())):
        return cpu_runtime, "cpu"
    if not torch_installed() and cpu_runtime is None:
        raise RuntimeMissingError(
            f"no model runtime is installed: install ONNX Runtime ({ONNX_INSTALL_HINT}) or PyTorch "
            f"({TORCH_INSTALL_HINT})"
        )
    if not torch_installed():
        return "torch", _torch_device(dev)  # raises, naming both packages
    resolved = _torch_device(dev)
    if resolved == "cpu" and cpu_runtime is not None:
        return cpu_runtime, "cpu"
    return "torch", resolved


class Backend(Protocol):
    """One runtime's way to load and run the shipped model families (numpy in, numpy out)."""

    name: str
    device: str

    def check(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> None:
        """Raise :class:`~pneumoview.errors.ModelError` saying why ``spec`` cannot run here; cheap, no loading."""

    def load(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> Any:
        """The loaded model (cached per process); raises ModelError."""

    def session(self) -> AbstractContextManager[Any]:
        """Context in which a stage runs (no-grad mode, mixed precision on a GPU …)."""

    def classify(self, model: Any, x: np.ndarray, tta: bool) -> np.ndarray:
        """Softmax probabilities ``(B, K)`` float32."""

    def segment(self, model: Any, x: np.ndarray, tta: bool) -> np.ndarray:
        """Sigmoid probability maps ``(B, h, w)`` float32 in the input frame."""

    def detect(self, model: Any, x: np.ndarray, tta: bool) -> Detections:
        """Per image, the opacity boxes (label 1) ``xyxy`` in input pixels and their scores."""

    def out_of_memory(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the device running out of memory (the engine then retries on the CPU)."""

    def to_cpu(self) -> None:
        """Move to the CPU after running out of device memory."""


def make_backend(runtime: str, device: str) -> Backend:
    """The backend object for a runtime chosen by :func:`choose_runtime` (imports that runtime's module)."""
    if runtime == "onnx":
        # lazy: onnxruntime is optional
        from pneumoview.inference.onnx_runtime import OnnxBackend

        return OnnxBackend()
    if runtime == "openvino":
        # lazy: openvino is optional
        from pneumoview.inference.openvino_runtime import OpenVinoBackend

        return OpenVinoBackend()
    # lazy: torch_runtime imports torch, which a torch-free install lacks
    from pneumoview.inference.torch_runtime import TorchBackend

    return TorchBackend(device)
