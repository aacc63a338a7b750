"""The inference engine: picks a device, loads verified models once, and analyses radiographs.

Every number the engine returns is in the original image's pixel frame (see :mod:`pneumoview.types`). Results are
frozen numpy dataclasses (:class:`~pneumoview.types.AnalysisResult`), safe to hand to another thread.

Stages run in the order classifier → segmentation ensemble → detector, so a viewer can show the case-level
probability first (:meth:`Engine.iter_stages`).

The models run on OpenVINO, ONNX Runtime or eager PyTorch (:mod:`pneumoview.inference.runtime`; ``runtime="auto"``
picks OpenVINO, else ONNX Runtime, on the CPU when installed). Importing this module imports none of them; with the
openvino or onnx runtime PyTorch is never imported unless an export has to be made
(:mod:`pneumoview.inference.onnx_runtime`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.calibration import Calibration
from pneumoview.errors import ModelError, ModelNotInstalledError
from pneumoview.inference.manifest import EnsembleSpec, Manifest, ModelSpec, load_manifest, models_dirs
from pneumoview.inference.runtime import Backend, Detections, choose_runtime, make_backend
from pneumoview.preprocess import FrameMap, black, prepare
from pneumoview.types import DEFAULT_SELECTION, STAGES, AnalysisResult, ModelRef, XrayImage

if TYPE_CHECKING:
    from pathlib import Path


def resolve_device(requested: str | None = None) -> str:
    """The torch device string to use (imports torch); see :func:`pneumoview.inference.torch_runtime.resolve_device`."""
    # lazy: torch_runtime imports torch, which a torch-free install lacks
    from pneumoview.inference.torch_runtime import resolve_device as torch_device

    return torch_device(requested)


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
            twice the model compute. Off unless asked; the app (``predict``, ``tune``, the viewer) asks for
            :data:`pneumoview.types.DEFAULT_TTA`.
        tta_zooms: extra zoom factors for the classifier and the detector (for example ``(0.9, 1.1)``): each model
            also sees the prepared input zoomed about its centre by each factor (with ``tta``, each zoom with its
            mirror); probabilities are averaged over the zooms and boxes fused (:func:`pneumoview.inference.tta.zoom`).
            Empty (the default): one scale. The segmenters never zoom.
        runtime: ``"auto"``, ``"openvino"``, ``"onnx"`` or ``"torch"`` (else ``$PNEUMOVIEW_RUNTIME``; see
            :func:`pneumoview.inference.runtime.choose_runtime`). ``random_weights`` always runs on torch.

    Attributes:
        runtime: the runtime in use, ``"openvino"``, ``"onnx"`` or ``"torch"``.
        device: where the models run (``"cpu"``, ``"cuda:0"``, ``"mps"``); always ``"cpu"`` for onnx.

    Raises:
        pneumoview.errors.RuntimeMissingError: the runtime asked for is not installed (the message names the
            install command); ModelError for an unavailable device.
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
        tta_zooms: Sequence[float] = (),
        runtime: str | None = "auto",
    ) -> None:
        self.dirs = models_dirs(models_dir)
        self.runtime, device = choose_runtime("torch" if random_weights else runtime, device)
        self.backend: Backend = make_backend(self.runtime, device)
        # Checking builder names imports every architecture, which is torch; the onnx runtime does not need them.
        self.manifest = (
            manifest
            if manifest is not None
            else load_manifest(self.dirs, check_builders=self.runtime == "torch")
        )
        self.selection = selection or StageSelection()
        self.random_weights = random_weights
        self.tta = tta
        if any(not 0.5 <= z <= 2.0 for z in tta_zooms):
            raise ValueError(f"TTA zoom factors must be within 0.5-2.0, got {list(tta_zooms)}")
        self.tta_zooms = tuple(float(z) for z in tta_zooms if z != 1.0)
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

    def stage_calibration(self, stage: str, kind: str = "calibration") -> Calibration | None:
        """The P(opacity) calibration of the model or ensemble selected for ``stage`` (classify only); with
        ``kind="fusion"`` its calibration that also reads the detector's top score."""
        ident = getattr(self.selection, stage)
        spec: ModelSpec | EnsembleSpec | None = None
        if ident in self.manifest.ensembles:
            spec = self.manifest.ensemble(ident)
        elif ident in self.manifest.models:
            spec = self.manifest.model(ident)
        return None if spec is None else getattr(spec, kind)

    @property
    def device(self) -> str:
        """Where the models run (``"cpu"``, ``"cuda:0"``, ``"mps"``); changes to ``"cpu"`` after a GPU OOM."""
        return self.backend.device

    def model_for(self, spec: ModelSpec) -> Any:
        """The loaded model of the engine's runtime (a torch module, an ONNX Runtime session or an OpenVINO compiled
        model)."""
        return self.backend.load(spec, self.dirs, self.random_weights)

    def torch_model(self, spec: ModelSpec) -> Any:
        """The eager PyTorch module of ``spec`` on the engine's device (CPU for onnx), e.g. for Grad-CAM."""
        # lazy: torch_runtime imports torch, which a torch-free install lacks
        from pneumoview.inference.torch_runtime import MODEL_CACHE

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
        """For each stage, None when it can run, else the reason it cannot (weights not installed, or no ONNX
        export and no PyTorch to make one): the same sentence the stage's skip note gives."""
        out: dict[str, str | None] = {}
        for stage in STAGES:
            try:
                specs = self.stage_specs(stage)
                if not specs:
                    out[stage] = "no model selected"
                    continue
                for spec, _ in specs:
                    self.backend.check(spec, self.dirs, self.random_weights)
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
                with self.backend.session():
                    partial = run(images, partial, models, batch_size)
            except Exception as exc:
                if not self.backend.out_of_memory(exc):
                    raise
                self.fall_back_to_cpu()
                models = [(spec, w, self.model_for(spec)) for spec, w in specs]
                with self.backend.session():
                    partial = run(images, partial, models, batch_size)
                note = "The GPU ran out of memory; this image was analysed on the CPU."
                partial = [replace(r, notes=(*r.notes, note)) for r in partial]
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
            if stage == "detect":
                partial = self._fuse(images, partial, models[0][0])
            yield partial
        if not ran_any:
            total = (time.perf_counter() - t_all) * 1000.0 / max(1, len(images))
            yield [replace(r, timings_ms={**r.timings_ms, "total": total}) for r in partial]

    def use_device(self, device: str) -> None:
        """Run on ``device`` from now on (as :func:`resolve_device` reads it, e.g. ``"cuda:1"`` for one rank of a
        distributed run); the engine is the only writer of ``device``. The openvino and onnx runtimes run on the CPU
        only."""
        if self.runtime != "torch":
            raise ModelError(
                f"the {self.runtime} runtime runs on the CPU only; use --runtime torch for {device!r}"
            )
        self.backend.device = resolve_device(device)

    def fall_back_to_cpu(self) -> None:
        """Free the GPU's cached memory and run on the CPU from now on (the GPU ran out of memory); every result
        made afterwards says so in its ``device`` and notes."""
        self.backend.to_cpu()

    @staticmethod
    def _batches(
        images: Sequence[XrayImage], spec: ModelSpec, batch_size: int
    ) -> Iterator[tuple[range, np.ndarray, list[FrameMap]]]:
        """Prepared inputs ``(B, C, h, w)`` float32 of ``batch_size`` images at a time, with their frame maps."""
        for start in range(0, len(images), batch_size):
            idx = range(start, min(len(images), start + batch_size))
            arrays, frames = zip(*(prepare(images[i].display, spec.input) for i in idx), strict=True)
            yield idx, np.stack(arrays), list(frames)

    def _classify(self, images, partial, models, batch_size):
        """Mean of the members' class probabilities (ensemble weights), then P(opacity) through the stage's
        calibration when the manifest gives one (with the image's header facts)."""
        spec = models[0][0]
        summed: list[np.ndarray | None] = [None] * len(images)
        for member, weight, model in models:  # members share their classes (the manifest checks it)
            for idx, x, _ in self._batches(images, member, batch_size):
                probs = self._classify_zooms(model, x, member)
                for j, i in enumerate(idx):
                    prev = summed[i]
                    summed[i] = weight * probs[j] if prev is None else prev + weight * probs[j]
        calibration = self.stage_calibration("classify")
        gate = spec.gate_indices
        out = list(partial)
        for i, probs_i in enumerate(summed):
            assert probs_i is not None
            p_op = min(1.0, float(probs_i[list(gate)].sum())) if gate else None
            if p_op is not None and calibration is not None:
                p_op = calibration.apply(p_op, images[i].view, images[i].metadata)
            out[i] = replace(
                out[i], class_names=spec.classes, class_probs=probs_i.astype(np.float32), p_opacity=p_op,
                gate_classes=spec.gate_names,
            )  # fmt: skip
        return out

    def _classify_zooms(self, model: Any, x: np.ndarray, spec: ModelSpec) -> np.ndarray:
        """Class probabilities ``(B, K)`` of one prepared batch, averaged over 1.0 and :attr:`tta_zooms`."""
        from pneumoview.inference import tta  # lazy: scipy; importing the engine stays light

        probs = self.backend.classify(model, x, self.tta)
        for factor in self.tta_zooms:
            probs = probs + self.backend.classify(model, tta.zoom(x, factor, black(spec.input)), self.tta)
        return np.asarray(probs / (1 + len(self.tta_zooms)), dtype=np.float32)

    def _detect_zooms(self, model: Any, x: np.ndarray, spec: ModelSpec) -> Detections:
        """Per image of one prepared batch, boxes ``xyxy`` in input pixels and scores, fused over 1.0 and
        :attr:`tta_zooms`."""
        dets = self.backend.detect(model, x, self.tta)
        if not self.tta_zooms:
            return dets
        from pneumoview.inference import tta  # lazy: scipy

        views: list[list[tuple[np.ndarray, np.ndarray]]] = [[d] for d in dets]
        shape = (int(x.shape[-2]), int(x.shape[-1]))
        for factor in self.tta_zooms:
            zoomed = self.backend.detect(model, tta.zoom(x, factor, black(spec.input)), self.tta)
            for j, (boxes, scores) in enumerate(zoomed):
                views[j].append((tta.unzoom_boxes(boxes, factor, shape), scores))
        return [tta.fuse_many(v) for v in views]

    def _fuse(
        self, images: Sequence[XrayImage], partial: list[AnalysisResult], detector: ModelSpec
    ) -> list[AnalysisResult]:
        """P(opacity) from the classifier's fusion with the detector's top score, when the classifier has one fitted
        with this detector (by sha256) and both ran; else the results unchanged."""
        fusion = self.stage_calibration("classify", "fusion")
        if fusion is None or not fusion.fits_detector(detector.sha256):
            return partial
        out = []
        for im, r in zip(images, partial, strict=True):
            p_raw = r.softmax_p_opacity
            if p_raw is None or r.det_scores is None:
                out.append(r)
                continue
            top = float(r.det_scores.max()) if len(r.det_scores) else 0.0
            p = fusion.apply(p_raw, im.view, im.metadata, {"det_score": top})
            out.append(replace(r, p_opacity=p, p_opacity_fused=True))
        return out

    def _segment(self, images, partial, models, batch_size):
        sums = [np.zeros(im.shape, dtype=np.float32) for im in images]
        members: list[dict[str, np.ndarray]] = [{} for _ in images]
        for spec, weight, model in models:
            for idx, x, frames in self._batches(images, spec, batch_size):
                probs = self.backend.segment(model, x, self.tta)
                for j, i in enumerate(idx):
                    members[i][spec.id] = probs[j]
                    sums[i] += weight * frames[j].map_to_original(probs[j])
        return [
            replace(r, prob_map=np.clip(s, 0.0, 1.0), member_maps=m)
            for r, s, m in zip(partial, sums, members, strict=True)
        ]

    def _detect(self, images, partial, models, batch_size):
        from pneumoview.postprocess import (
            xyxy_to_xywh,  # lazy: scikit-image; importing the engine stays light
        )

        spec, _, model = models[0]
        out = list(partial)
        for idx, x, frames in self._batches(images, spec, batch_size):
            dets = self._detect_zooms(model, x, spec)
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
    # lazy: torch only for the eager runtime
    import torch

    return str(torch.__version__)
