"""Exporting the models to ONNX (needs PyTorch): into the per-user cache on first use, or into a models folder.

The classifier and the segmenters are exported with a dynamic batch axis; the detector (torchvision Faster R-CNN,
with its RPN, RoIAlign and NMS in the graph) for one fixed ``(3, h, w)`` image. Both use the TorchScript-based
exporter (``dynamo=False``) at opset :data:`~pneumoview.inference.onnx_artifacts.OPSET`, which exports every
shipped architecture cleanly; weights are exported in float32 (the weights files hold float16). Every file is
written atomically (:mod:`pneumoview.atomic`) with its JSON sidecar (:mod:`pneumoview.inference.onnx_artifacts`).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from pneumoview.atomic import atomic_write_bytes
from pneumoview.inference.manifest import ModelSpec
from pneumoview.inference.onnx_artifacts import (
    OPSET,
    OnnxArtefact,
    cache_path,
    read_artefact,
    sidecar_path,
    write_sidecar,
)
from pneumoview.inference.runtime import RuntimeMissingError, installed
from pneumoview.inference.weights import build_and_load, verified_weights

__all__ = ["export_to_cache", "export_to_file", "onnx_bytes"]


def _merge_levels_by_gather(levels: torch.Tensor, per_level: list[torch.Tensor]) -> torch.Tensor:
    """RoIs pooled level by level, put back in RoI order with one gather (exactly torchvision's result).

    torchvision's ONNX version scatters each level into a zero tensor (ScatterElements on an index expanded to
    ``N × C × 7 × 7``), which took about half the detector's time in ONNX Runtime on a CPU.
    """
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(per_level))])
    return torch.cat(per_level, dim=0)[torch.argsort(order)]


@contextlib.contextmanager
def _gather_merge() -> Iterator[None]:
    # lazy: torch takes seconds to import; only this path runs a model
    from torchvision.ops import poolers

    original = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = _merge_levels_by_gather
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original


def onnx_bytes(model: torch.nn.Module, spec: ModelSpec) -> bytes:
    """The ONNX serialisation of ``model`` (built from ``spec``, eval mode, float32, CPU)."""
    h, w = spec.input.size
    c = spec.input.channels
    buf: Any = io.BytesIO()  # torch.onnx.export writes to a file object too; its annotation says paths only
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The tracer warns about every Python-side shape check in torchvision; they are constant for a fixed size.
        warnings.simplefilter("ignore")
        if spec.task == "detect":
            with _gather_merge():
                torch.onnx.export(
                    model, ([torch.rand(c, h, w)],), buf, opset_version=OPSET, dynamo=False,
                    input_names=["image"], output_names=["boxes", "labels", "scores"],
                )  # fmt: skip
        else:
            torch.onnx.export(
                model, (torch.rand(2, c, h, w),), buf, opset_version=OPSET, dynamo=False,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )  # fmt: skip
    return buf.getvalue()


def export_to_file(spec: ModelSpec, dirs: Sequence[Path], out: Path) -> OnnxArtefact:
    """Export ``spec`` (weights verified by sha256) to ``out`` with its sidecar; returns the verified artefact.

    Raises:
        ModelError: weights missing or damaged, or the ``onnx`` package (which torch's exporter needs) missing.
    """
    if not installed("onnx"):
        raise RuntimeMissingError(
            f"exporting {spec.id} to ONNX needs the package 'onnx'; pip install 'pneumoview[onnx]' (or pip install onnx)"
        )
    model = build_and_load(spec, verified_weights(spec, dirs)).float().cpu()
    atomic_write_bytes(out, onnx_bytes(model, spec))
    write_sidecar(out, spec, opset=OPSET, torch_version=str(torch.__version__))
    return read_artefact(out, spec)


def export_to_cache(spec: ModelSpec, dirs: Sequence[Path], cache_dir: Path | None = None) -> OnnxArtefact:
    """Export ``spec`` into the per-user cache and delete its stale exports (other weights, ORT or exporter)."""
    out = cache_path(spec, cache_dir)
    artefact = export_to_file(spec, dirs, out)
    stale_name = re.compile(re.escape(spec.id) + r"-[0-9a-f]{12}-ort[^/]+-x\d+\.onnx")
    for old in out.parent.glob(f"{spec.id}-*.onnx"):
        if old != out and stale_name.fullmatch(old.name):
            for stale in (old, sidecar_path(old)):
                with contextlib.suppress(OSError):
                    stale.unlink()
    return artefact
