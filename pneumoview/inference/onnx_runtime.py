"""The ONNX Runtime backend: sessions per verified export; and :class:`GraphBackend`, the three model families run on
numpy from an ONNX graph, which the OpenVINO backend (:mod:`pneumoview.inference.openvino_runtime`) shares
(torch-free).

Sessions run on ONNX Runtime's CPU provider with every graph optimisation on and ``intra_op_num_threads`` =
``$PNEUMOVIEW_THREADS`` or the number of CPUs. The classifier and segmenters take a batch ``(B, C, h, w)``; the
detector's graph (torchvision Faster R-CNN with its RPN, RoIAlign and NMS) takes one ``(3, 256, 256)`` image per
run, so a batch is a loop. Flip TTA runs the mirrored input and combines the views exactly as
:mod:`pneumoview.inference.tta` does for PyTorch.

When a model has no usable export (:mod:`pneumoview.inference.onnx_artifacts`) and PyTorch is installed, the export
is made into the per-user cache first (:func:`pneumoview.inference.onnx_export.export_to_cache`); without PyTorch
the stage is skipped with a note saying how to get one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.errors import ModelError
from pneumoview.inference.manifest import ModelSpec
from pneumoview.inference.onnx_artifacts import (
    OnnxArtefact,
    OnnxExportMissingError,
    find_artefact,
    missing_message,
)
from pneumoview.inference.runtime import Detections, RuntimeMissingError, installed, torch_installed
from pneumoview.inference.tta import fuse_views, mirror_boxes

__all__ = ["SESSIONS", "GraphBackend", "GraphCache", "OnnxBackend", "session_options", "verified_export"]

DETECTOR_LABEL = 1  # torchvision's class index of "Lung Opacity" (0 is background)


def session_options() -> Any:
    """ORT session options: all graph optimisations, one intra-op thread per CPU (or ``$PNEUMOVIEW_THREADS``), no
    spinning while idle."""
    # lazy: optional package, only when the ONNX runtime is used
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = os.environ.get("PNEUMOVIEW_THREADS", "").strip()
    opts.intra_op_num_threads = int(threads) if threads.isdigit() else (os.cpu_count() or 1)
    # Idle intra-op threads must not spin: the pipeline alternates four sessions (each with its own pool) and runs
    # decode/PNG threads beside them, so spinning pools took the 2 CPUs from each other (the segmenters ran 2x slower).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
    return opts


class GraphCache:
    """One loaded graph per export file (path and sha256), shared by every Engine in the process. ``make(path)``
    loads one for a runtime and raises ModelError when it cannot."""

    def __init__(self, make: Callable[[Path], Any]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._graphs: dict[tuple[str, str], Any] = {}

    def get(self, spec: ModelSpec, dirs: Sequence[Path]) -> Any:
        artefact = verified_export(spec, dirs)
        key = (str(artefact.path), artefact.onnx_sha256)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._graphs[key] = self._make(artefact.path)
            return graph

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()


def _ort_session(path: Path) -> Any:
    # lazy: optional package, only when the ONNX runtime is used
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for a bad graph
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from None


SESSIONS = GraphCache(_ort_session)


_EXPORT_LOCK = threading.Lock()


def verified_export(spec: ModelSpec, dirs: Sequence[Path]) -> OnnxArtefact:
    """The verified ONNX export of ``spec`` (shipped or cached), made into the per-user cache first when there is
    none and PyTorch is installed (every graph runtime runs these files). Raises ModelError why not."""
    with _EXPORT_LOCK:
        artefact = find_or_check_export(spec, dirs)
        if artefact is None:
            # lazy: onnx_export imports torch; only reached where torch is installed
            from pneumoview.inference.onnx_export import export_to_cache

            artefact = export_to_cache(spec, dirs)
        return artefact


def find_or_check_export(spec: ModelSpec, dirs: Sequence[Path]) -> OnnxArtefact | None:
    """The verified export of ``spec``; None when there is none but one can be made here (else ModelError why)."""
    artefact, problems = find_artefact(spec, dirs)
    if artefact is not None:
        return artefact
    if not torch_installed():
        raise OnnxExportMissingError(missing_message(spec, problems))
    if not installed("onnx"):
        raise RuntimeMissingError(
            f"no ONNX export of {spec.id}, and making one needs the package 'onnx'; pip install 'pneumoview[onnx]'"
        )
    # lazy: weights imports torch; only reached where torch is installed
    from pneumoview.inference.weights import verified_weights

    verified_weights(spec, dirs)  # the export needs the weights file
    return None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _run_session(session: Any, x: np.ndarray) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})


class GraphBackend:
    """The three model families on a runtime that runs the ONNX exports on numpy arrays; a subclass says how to
    load an export (:meth:`load`) and run it (:meth:`run`: one float32 input, the graph's outputs in order)."""

    name = "graph"
    device = "cpu"
    graphs: GraphCache  # the subclass's loaded graphs

    def check(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> None:
        if random_weights:
            raise ModelError("random weights are only available with the torch runtime (--runtime torch)")
        find_or_check_export(spec, dirs)

    def load(self, spec: ModelSpec, dirs: Sequence[Path], random_weights: bool) -> Any:
        self.check(spec, dirs, random_weights)
        return self.graphs.get(spec, dirs)

    def run(self, model: Any, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield

    def classify(self, model: Any, x: np.ndarray, tta: bool) -> np.ndarray:
        probs = _softmax(self.run(model, x)[0])
        if tta:
            probs = 0.5 * (probs + _softmax(self.run(model, x[..., ::-1])[0]))
        return probs.astype(np.float32)

    def segment(self, model: Any, x: np.ndarray, tta: bool) -> np.ndarray:
        probs = _sigmoid(self.run(model, x)[0])[:, 0]
        if tta:
            flipped = _sigmoid(self.run(model, x[..., ::-1])[0])[:, 0]
            probs = 0.5 * (probs + flipped[..., ::-1])
        return np.ascontiguousarray(probs, dtype=np.float32)

    def _detect_one(self, model: Any, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, labels, scores = self.run(model, image)[:3]
        keep = labels == DETECTOR_LABEL
        return boxes[keep].astype(np.float32).reshape(-1, 4), scores[keep].astype(np.float32)

    def detect(self, model: Any, x: np.ndarray, tta: bool) -> Detections:
        out = [self._detect_one(model, im) for im in x]
        if not tta:
            return out
        width = float(x.shape[-1])
        fused = []
        for (boxes, scores), im in zip(out, x, strict=True):
            fb, fs = self._detect_one(model, im[..., ::-1])
            fused.append(fuse_views(boxes, scores, mirror_boxes(fb, width), fs))
        return fused

    def out_of_memory(self, exc: BaseException) -> bool:
        return False

    def to_cpu(self) -> None:
        return None


class OnnxBackend(GraphBackend):
    """ONNX Runtime on the CPU."""

    name = "onnx"
    graphs = SESSIONS

    def run(self, model: Any, x: np.ndarray) -> list[np.ndarray]:
        return _run_session(model, x)
