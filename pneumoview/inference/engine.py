"""The inference engine: picks a device, loads verified models once, and analyses radiographs.

Every number the engine returns is in the original image's pixel frame (see :mod:`pneumoview.types`). Results are
frozen numpy dataclasses (:class:`~pneumoview.types.AnalysisResult`), safe to hand to another thread.

Stages run in the order classifier → segmentation ensemble → detector, so a viewer can show the case-level
probability first (:meth:`Engine.iter_stages`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.errors import ModelError, ModelNotInstalledError
from pneumoview.inference.manifest import Manifest, ModelSpec, load_manifest, models_dirs
from pneumoview.inference.weights import build_and_load, find_weights, verified_weights
from pneumoview.preprocess import FrameMap, prepare
from pneumoview.types import DEFAULT_SELECTION, STAGES, AnalysisResult, ModelRef, XrayImage

if TYPE_CHECKING:
    import contextlib
    from pathlib import Path

    import torch
    from torch import nn

    #: The models of one stage as the engine runs them: (spec, ensemble weight, loaded model).
    Loaded = list[tuple[ModelSpec, float, nn.Module]]


def resolve_device(requested: str | None = None) -> str:
    """The torch device string to use.

    ``requested`` (from ``--device`` or the settings) wins; else ``$PNEUMOVIEW_DEVICE``; else ``"auto"``, which
    means CUDA if available, then Apple MPS, then CPU. An unavailable explicit device raises ModelError.
    """
    import torch

    choice = (requested or os.environ.get("PNEUMOVIEW_DEVICE") or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {choice!r} was asked for but CUDA is not available here; use --device cpu"
            )
        return "cuda:0" if choice == "cuda" else choice
    if choice == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelError(
                "device 'mps' was asked for but Apple MPS is not available here; use --device cpu"
            )
        return "mps"
    if choice == "cpu":
        return "cpu"
    raise ModelError(f"unknown device {choice!r}; use auto, cpu, cuda, cuda:N or mps")


class _ModelCache:
    """Loaded models per (model id, sha256, device), shared by every Engine in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str, str, str], nn.Module] = {}

    def get(
        self, spec: ModelSpec, device: str, dirs: Sequence[Path] | None, random_weights: bool
    ) -> nn.Module:
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
                    import torch

                    model = model.to(memory_format=torch.channels_last)
                self._models[key] = model
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODEL_CACHE = _ModelCache()


@dataclass(frozen=True)
class StageSelection:
    """Which model (or ensemble) runs each stage; ``None`` skips the stage."""

    classify: str | None = DEFAULT_SELECTION["classify"]
    segment: str | None = DEFAULT_SELECTION["segment"]
    detect: str | None = DEFAULT_SELECTION["detect"]


class Engine:
    """Runs the classifier, segmentation ensemble and detector on radiographs.

    Args:
        manifest: the model registry (default: every manifest in :func:`models_dirs`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (see :func:`resolve_device`).
        selection: model/ensemble id per stage.
        models_dir: the user's models-folder setting (searched first).
        random_weights: build the architectures with random weights instead of loading files — for tests and
            benchmarks only; results are meaningless.
        tta: test-time augmentation by horizontal flip for every stage (:mod:`pneumoview.inference.tta`); about
            twice the compute. Off by default: on the validation split it did not pay for itself (README, "Levers
            tried").
    """

    def __init__(
        self,
        manifest: Manifest | None = None,
        *,
        device: str | None = None,
        selection: StageSelection | None = None,
        models_dir: str | Path | None = None,
        random_weights: bool = False,
        tta: bool = False,
    ) -> None:
        self.dirs = models_dirs(models_dir)
        self.manifest = manifest if manifest is not None else load_manifest(self.dirs)
        self.device = resolve_device(device)
        self.selection = selection or StageSelection()
        self.random_weights = random_weights
        self.tta = tta
        self._notes: list[str] = []

    # -- models -------------------------------------------------------------------------------------------------

    def stage_specs(self, stage: str) -> list[tuple[ModelSpec, float]]:
        """The models that run ``stage`` with their ensemble weights (normalised to sum 1)."""
        ident = getattr(self.selection, stage)
        if ident is None:
            return []
        if ident in self.manifest.ensembles:
            ens = self.manifest.ensemble(ident)
            total = sum(ens.weights)
            return [
                (self.manifest.model(m), w / total) for m, w in zip(ens.members, ens.weights, strict=True)
            ]
        if ident not in self.manifest.models:
            task = stage
            known = [m.id for m in self.manifest.by_task(task)] + [
                e.id for e in self.manifest.ensembles.values() if e.task == task
            ]
            raise ModelNotInstalledError(
                f"no model {ident!r} is installed in the models folders "
                f"({', '.join(str(d) for d in self.dirs)}); "
                + (f"installed {task} models: {', '.join(known)}. " if known else "")
                + "train one with `pneumoview train` (see the README) or copy a models folder in."
            )
        return [(self.manifest.model(ident), 1.0)]

    def model_for(self, spec: ModelSpec) -> nn.Module:
        """The loaded model of ``spec`` on this engine's device, in eval mode (from the process-wide cache: each
        model is loaded once, whoever asks first). For callers that run a model themselves (Grad-CAM)."""
        return MODEL_CACHE.get(spec, self.device, self.dirs, self.random_weights)

    def load(self) -> list[str]:
        """Load every selected model now (e.g. in a background thread at start-up); returns problems as sentences."""
        problems = []
        for stage in STAGES:
            try:
                for spec, _ in self.stage_specs(stage):
                    self.model_for(spec)
            except ModelError as exc:
                problems.append(f"{stage}: {exc}")
        return problems

    def available_stages(self) -> dict[str, str | None]:
        """For each stage, None when it can run, else the reason it cannot (e.g. weights not installed)."""
        out: dict[str, str | None] = {}
        for stage in STAGES:
            try:
                specs = self.stage_specs(stage)
                if not specs:
                    out[stage] = "no model selected"
                    continue
                if not self.random_weights:
                    for spec, _ in specs:
                        verified_weights(spec, self.dirs)
                out[stage] = None
            except ModelError as exc:
                out[stage] = str(exc)
        return out

    # -- analysis -----------------------------------------------------------------------------------------------

    def analyze(self, image: XrayImage, stages: Sequence[str] = STAGES) -> AnalysisResult:
        """Run the stages on one image and return the complete result."""
        return self.analyze_batch([image], stages=stages)[0]

    def iter_stages(
        self, image: XrayImage, stages: Sequence[str] = STAGES, cancelled: Callable[[], bool] | None = None
    ) -> Iterator[AnalysisResult]:
        """Yield a growing result as soon as each stage has run (classifier first), so a viewer can show results
        early. Stages whose models are not installed are skipped with a note. ``cancelled()`` is checked between
        stages; each item's ``timings_ms["total"]`` is the time so far."""
        for partial in self._run_stages([image], stages, batch_size=1, cancelled=cancelled):
            yield partial[0]

    def analyze_batch(
        self, images: Sequence[XrayImage], stages: Sequence[str] = STAGES, *, batch_size: int = 8
    ) -> list[AnalysisResult]:
        """Analyse many images with batched forward passes (``batch_size`` images per forward)."""
        *_, final = self._run_stages(images, stages, batch_size=batch_size)
        return final

    def _run_stages(
        self,
        images: Sequence[XrayImage],
        stages: Sequence[str],
        *,
        batch_size: int,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[list[AnalysisResult]]:
        """Run the stages in order, yielding the results so far (with the time so far as ``"total"``) right after each
        stage; once at the end when no stage ran."""
        import torch

        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; valid stages: {', '.join(STAGES)}")
        partial = [
            AnalysisResult(image_id=im.image_id, image_shape=im.shape, device=self.device) for im in images
        ]
        t_all = time.perf_counter()
        ran_any = False
        for stage in [s for s in STAGES if s in stages]:
            if cancelled is not None and cancelled():
                break
            t0 = time.perf_counter()
            try:
                specs = self.stage_specs(stage)
                models = [(spec, w, self.model_for(spec)) for spec, w in specs]
            except ModelError as exc:  # not installed, unknown id, damaged file: skip the stage, say why
                partial = [replace(r, notes=(*r.notes, f"{stage} skipped: {exc}")) for r in partial]
                if ran_any:  # the note must reach the caller even when this was the last stage
                    yield partial
                continue
            if not specs:
                continue
            run = {"classify": self._classify, "segment": self._segment, "detect": self._detect}[stage]
            try:
                with torch.inference_mode():
                    partial = run(images, partial, models, batch_size)
            except torch.OutOfMemoryError:
                self.fall_back_to_cpu()
                models = [(spec, w, self.model_for(spec)) for spec, w in specs]
                with torch.inference_mode():
                    partial = run(images, partial, models, batch_size)
                partial = [
                    replace(
                        r, notes=(*r.notes, "The GPU ran out of memory; this image was analysed on the CPU.")
                    )
                    for r in partial
                ]
            ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(images))
            refs = tuple(ModelRef(s.id, s.task, s.version, s.sha256[:12]) for s, _, _ in models)
            total = (time.perf_counter() - t_all) * 1000.0 / max(1, len(images))
            partial = [
                replace(
                    r,
                    models=r.models + refs,
                    timings_ms={**r.timings_ms, stage: ms, "total": total},
                    stages_done=(*r.stages_done, stage),
                    device=self.device,
                )
                for r in partial
            ]
            ran_any = True
            yield partial
        if not ran_any:
            total = (time.perf_counter() - t_all) * 1000.0 / max(1, len(images))
            yield [replace(r, timings_ms={**r.timings_ms, "total": total}) for r in partial]

    def use_device(self, device: str) -> None:
        """Run on ``device`` from now on (as :func:`resolve_device` reads it, e.g. ``"cuda:1"`` for one rank of a
        distributed run); the engine is the only writer of ``device``."""
        self.device = resolve_device(device)

    def fall_back_to_cpu(self) -> None:
        """Free the GPU's cached memory and run on the CPU from now on (the GPU ran out of memory); every result
        made afterwards says so in its ``device`` and notes."""
        import torch

        torch.cuda.empty_cache()
        self.device = "cpu"

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import contextlib

        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _batches(
        self, images: Sequence[XrayImage], spec: ModelSpec, batch_size: int
    ) -> Iterator[tuple[range, torch.Tensor, list[FrameMap]]]:
        import torch

        for start in range(0, len(images), batch_size):
            idx = range(start, min(len(images), start + batch_size))
            arrays, frames = zip(*(prepare(images[i].display, spec.input) for i in idx), strict=True)
            x = torch.from_numpy(np.stack(arrays)).to(self.device)
            if self.device.startswith("cuda"):
                x = x.contiguous(memory_format=torch.channels_last)
            yield idx, x, list(frames)

    def _classify(
        self, images: Sequence[XrayImage], partial: list[AnalysisResult], models: Loaded, batch_size: int
    ) -> list[AnalysisResult]:
        from pneumoview.inference import tta

        spec, _, model = models[0]
        out = list(partial)
        for idx, x, _ in self._batches(images, spec, batch_size):
            with self._autocast():
                probs = tta.classify(model, x, self.tta).cpu().numpy().astype(np.float32)
            for j, i in enumerate(idx):
                gate = spec.gate_indices
                p_op = min(1.0, float(probs[j, list(gate)].sum())) if gate else None
                out[i] = replace(
                    out[i], class_names=spec.classes, class_probs=probs[j], p_opacity=p_op,
                    gate_classes=spec.gate_names,
                )  # fmt: skip
        return out

    def _segment(
        self, images: Sequence[XrayImage], partial: list[AnalysisResult], models: Loaded, batch_size: int
    ) -> list[AnalysisResult]:
        from pneumoview.inference import tta

        sums = [np.zeros(im.shape, dtype=np.float32) for im in images]
        members: list[dict[str, np.ndarray]] = [{} for _ in images]
        for spec, weight, model in models:
            for idx, x, frames in self._batches(images, spec, batch_size):
                with self._autocast():
                    probs = tta.segment(model, x, self.tta).cpu().numpy()
                for j, i in enumerate(idx):
                    members[i][spec.id] = probs[j]
                    sums[i] += weight * frames[j].map_to_original(probs[j])
        return [
            replace(r, prob_map=np.clip(s, 0.0, 1.0), member_maps=m)
            for r, s, m in zip(partial, sums, members, strict=True)
        ]

    def _detect(
        self, images: Sequence[XrayImage], partial: list[AnalysisResult], models: Loaded, batch_size: int
    ) -> list[AnalysisResult]:
        from pneumoview.inference import tta
        from pneumoview.postprocess import (
            xyxy_to_xywh,  # lazy: scikit-image; importing the engine stays light
        )

        spec, _, model = models[0]
        out = list(partial)
        for idx, x, frames in self._batches(images, spec, batch_size):
            with self._autocast():
                dets = tta.detect(model, x, self.tta)
            for j, i in enumerate(idx):
                boxes, scores = dets[j]
                xyxy = frames[j].boxes_to_original(boxes)
                order = np.argsort(-scores, kind="stable")
                xyxy, scores = xyxy[order], scores[order]
                out[i] = replace(out[i], det_boxes=xyxy_to_xywh(xyxy), det_scores=scores)
        return out


def model_refs(result: AnalysisResult) -> list[dict[str, str]]:
    """The provenance of a result as plain dicts (for JSON/CSV outputs)."""
    return [
        {"id": m.id, "task": m.task, "version": m.version, "sha256_prefix": m.sha256_prefix}
        for m in result.models
    ]


def torch_version() -> str:
    """Version string of the installed torch (imports torch)."""
    import torch

    return str(torch.__version__)
