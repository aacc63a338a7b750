"""The viewer's live state, with one owner and no Qt: :class:`ViewerState`.

It owns the current image and its result, findings and Grad-CAM map; the generation counter that tells stale
background work from current work; the cache of analysed images; the thresholds; the overlay layers' visibility
and opacity; each image's status; and the device the engine runs on. It announces every change with a psygnal
signal (as napari's models do); the widgets subscribe and render, and read the values from here instead of
keeping copies.

:class:`~pneumoview.settings.Settings` stays the persistence owner: this class writes thresholds and overlay
state back into it in one place (:meth:`ViewerState._write_back`) and emits ``settings_changed`` so the viewer
saves the file. Findings come from :func:`pneumoview.findings_pipeline.findings_for` (memoised), so a threshold
change re-runs post-processing only, never the models.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from pneumoview.findings_pipeline import (
    NOT_ANALYSED,
    RUNNING,
    Analysed,
    findings_for,
    image_status,
)
from pneumoview.settings import OVERLAY_LAYERS, Settings
from pneumoview.thresholds import Thresholds
from pneumoview.types import AnalysisResult, XrayImage

if TYPE_CHECKING:
    import numpy as np

    from pneumoview.postprocess import Findings

__all__ = ["ViewerState"]

Status = tuple[str, str]
_UNKNOWN: Status = (NOT_ANALYSED, "")


class ViewerState:
    """The one live owner of the viewer's state (see the module docstring).

    Signals (each fires once per actual change, never for a value set again):
        current_changed(path): another image became current (its pixels are not loaded yet).
        findings_changed(findings): the current image's findings (None: no result) changed, after a new result
            (partial or complete) or a threshold change.
        thresholds_changed(thresholds): the post-processing thresholds changed.
        status_changed(path, status, reason): an image's status in the browser changed.
        layer_changed(layer): a layer's visibility or opacity changed; ``""`` for the hide-all switch.
        saliency_changed(map): the current image's Grad-CAM map (float32 ``(H, W)`` in ``[0, 1]``, or None).
        device_changed(device): the engine now runs on another device (loaded, or fell back to the CPU).
        settings_changed(): thresholds or overlay state were written back to the settings; save them.

    Args:
        settings: the persisted settings the live state starts from and is written back to (default: fresh ones,
            written nowhere).
        cache_size: how many analysed images (pixels and model outputs) stay in memory, most recent first.
        device: the device asked for (``"auto"``, ``"cpu"``, ``"cuda"``); default ``settings.device``.
    """

    current_changed = Signal(object)
    findings_changed = Signal(object)
    thresholds_changed = Signal(object)
    status_changed = Signal(object, str, str)
    layer_changed = Signal(str)
    saliency_changed = Signal(object)
    device_changed = Signal(str)
    settings_changed = Signal()

    def __init__(
        self, settings: Settings | None = None, cache_size: int = 12, device: str | None = None
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.cache_size = cache_size
        self.thresholds = self.settings.get_thresholds()
        self.overlay_visible = {n: bool(self.settings.overlay_visible.get(n, True)) for n in OVERLAY_LAYERS}
        self.overlay_opacity = {n: float(self.settings.overlay_opacity.get(n, 1.0)) for n in OVERLAY_LAYERS}
        self.all_hidden = False
        self.device_request = device or self.settings.device
        self.engine: Any = None  # pneumoview.inference.engine.Engine once loaded; it owns its device
        self._announced_device: str | None = None
        self.generation = 0
        self.path: Path | None = None
        self.image: XrayImage | None = None
        self.result: AnalysisResult | None = None
        self.complete = False  # every stage of the current result has run
        self.findings: Findings | None = None
        self.saliency: np.ndarray | None = None
        self._statuses: dict[Path, Status] = {}
        self._cache: OrderedDict[Path, tuple[XrayImage, AnalysisResult]] = OrderedDict()

    # -- current image and generations --------------------------------------------------------------------------

    def select(self, path: Path) -> int:
        """Make ``path`` current (its image is not loaded yet); returns the new generation number."""
        self.generation += 1
        self.path = Path(path)
        self.image = self.result = self.findings = self.saliency = None
        self.complete = False
        self.current_changed.emit(self.path)
        return self.generation

    def is_current(self, generation: int) -> bool:
        """True while no newer selection or analysis has started since ``generation`` was handed out."""
        return generation == self.generation

    def bump(self) -> int:
        """Start new work on the current image (e.g. a re-analysis) so older work becomes stale."""
        self.generation += 1
        return self.generation

    def forget_results(self) -> None:
        """Drop every cached result and the current one (the models changed); images are analysed again."""
        self._cache.clear()
        self.generation += 1
        self.result = self.saliency = None
        self._set_findings(None)

    def set_image(self, image: XrayImage) -> None:
        """The current image's pixels arrived; a cached result of the same image is shown at once."""
        self.image = image
        cached = self.cached(self.path) if self.path is not None else None
        if cached is not None and cached[0].image_id == image.image_id:
            self.set_result(cached[1])

    def set_result(
        self, result: AnalysisResult, complete: bool = True, generation: int | None = None
    ) -> bool:
        """Store the current image's result (``complete=False`` while stages are still running): its findings and
        status are recomputed, and a complete result is cached. With ``generation``, a result of stale work is
        dropped; returns whether it was taken."""
        if generation is not None and not self.is_current(generation):
            return False
        self.result, self.complete = result, complete
        self._announce_device()
        self._refresh(new_result=True)
        if complete and self.path is not None and self.image is not None:
            self.remember(self.path, self.image, result)
        return True

    def set_saliency(self, saliency: np.ndarray | None, generation: int | None = None) -> bool:
        """The current image's Grad-CAM map; with ``generation``, a stale one is dropped."""
        if generation is not None and not self.is_current(generation):
            return False
        self.saliency = saliency
        self.saliency_changed.emit(saliency)
        return True

    @property
    def running(self) -> bool:
        """The current image has a partial result: its analysis is still going."""
        return self.result is not None and not self.complete

    def _refresh(self, new_result: bool = False) -> None:
        """Post-process the current result with the current thresholds (memoised) and update its status.
        ``new_result``: announce the findings even when they are the same object (the last stage's result is
        sent again, complete; the memo gives the same findings, but "analysing…" must go)."""
        if self.result is None or self.image is None:
            self._set_findings(None)
            return
        self._set_findings(findings_for(self.result, self.thresholds, self.image.spacing_mm), new_result)
        if self.path is None:
            return
        if self.running:
            self.set_status(self.path, RUNNING, "analysing")
        elif self.result.stages_done:
            self.set_status(self.path, *image_status(self.findings, self.result))

    def _set_findings(self, findings: Findings | None, force: bool = False) -> None:
        if findings is self.findings and not force:
            return
        self.findings = findings
        self.findings_changed.emit(findings)

    # -- thresholds ---------------------------------------------------------------------------------------------

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """Use ``thresholds`` from now on: the current findings and status follow at once (post-processing only;
        the cached images' statuses follow :meth:`restatus_cached`)."""
        if thresholds == self.thresholds:
            return
        self.thresholds = thresholds
        self._write_back()
        self.thresholds_changed.emit(thresholds)
        self._refresh()

    # -- overlay layers -----------------------------------------------------------------------------------------

    def set_layer_visible(self, layer: str, visible: bool) -> None:
        self._check_layer(layer)
        if self.overlay_visible[layer] == bool(visible):
            return
        self.overlay_visible[layer] = bool(visible)
        self._write_back()
        self.layer_changed.emit(layer)

    def set_layer_opacity(self, layer: str, opacity: float) -> None:
        """``opacity`` in ``[0, 1]`` (clipped)."""
        self._check_layer(layer)
        value = float(min(max(opacity, 0.0), 1.0))
        if self.overlay_opacity[layer] == value:
            return
        self.overlay_opacity[layer] = value
        self._write_back()
        self.layer_changed.emit(layer)

    def set_all_hidden(self, hidden: bool) -> None:
        """The one-key switch that hides every layer (each layer's own flag is kept; not saved)."""
        if self.all_hidden == bool(hidden):
            return
        self.all_hidden = bool(hidden)
        self.layer_changed.emit("")

    def is_shown(self, layer: str) -> bool:
        """True when ``layer`` is drawn: its flag is on and the layers are not all hidden."""
        return self.overlay_visible.get(layer, True) and not self.all_hidden

    @staticmethod
    def _check_layer(layer: str) -> None:
        if layer not in OVERLAY_LAYERS:
            raise ValueError(f"unknown overlay layer {layer!r}; valid layers: {', '.join(OVERLAY_LAYERS)}")

    def _write_back(self) -> None:
        """The one place the live state goes back into the persisted settings."""
        self.settings.set_thresholds(self.thresholds)
        self.settings.overlay_visible = dict(self.overlay_visible)
        self.settings.overlay_opacity = dict(self.overlay_opacity)
        self.settings_changed.emit()

    # -- device -------------------------------------------------------------------------------------------------

    @property
    def device(self) -> str | None:
        """Where the engine runs now (``"cpu"``, ``"cuda:0"`` …), read from the engine; None without one."""
        return None if self.engine is None else str(self.engine.device)

    def set_engine(self, engine: Any) -> None:
        """The loaded engine (None: none could be made); ``device_changed`` tells where it runs."""
        self.engine = engine
        self._announce_device()

    def request_device(self, device: str) -> None:
        """The device the user asked for in the settings (the engine is made again with it)."""
        self.device_request = device

    def _announce_device(self) -> None:
        # The engine may move itself to the CPU when the GPU runs out of memory; the next result tells.
        device = self.device
        if device != self._announced_device:
            self._announced_device = device
            self.device_changed.emit(device or "none")

    # -- every image's status and the cache ---------------------------------------------------------------------

    def set_status(self, path: Path, status: str, reason: str = "") -> None:
        key = Path(path)
        if self._statuses.get(key) == (status, reason):
            return
        self._statuses[key] = (status, reason)
        self.status_changed.emit(key, status, reason)

    def status(self, path: Path) -> Status:
        """``(status, reason)`` of an image; ``("not analysed", "")`` for one never seen."""
        return self._statuses.get(Path(path), _UNKNOWN)

    def forget_statuses(self) -> None:
        """Another folder was opened: no image has a status yet (no event; the browser is cleared too)."""
        self._statuses.clear()

    def record(self, path: Path, analysed: Analysed) -> Status:
        """Cache a complete result of any image and set its status from the current thresholds."""
        image, result = analysed.image, analysed.result
        self.remember(path, image, result)
        status = image_status(findings_for(result, self.thresholds, image.spacing_mm), result)
        self.set_status(path, *status)
        return status

    def remember(self, path: Path, image: XrayImage, result: AnalysisResult) -> None:
        """Keep a complete result in the cache (least recently used entries leave first)."""
        key = Path(path)
        self._cache[key] = (image, result)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def cached(self, path: Path) -> tuple[XrayImage, AnalysisResult] | None:
        hit = self._cache.get(Path(path))
        if hit is not None:
            self._cache.move_to_end(Path(path))
        return hit

    def cache_snapshot(self) -> dict[Path, tuple[XrayImage, AnalysisResult]]:
        """A copy of the cache, safe to hand to a worker thread (the values are frozen)."""
        return dict(self._cache)

    def restatus_cached(self) -> list[Path]:
        """Recompute the status of every cached image with the current thresholds; returns the paths changed."""
        changed = []
        for path, (image, result) in list(self._cache.items()):
            if not result.stages_done or (path == self.path and self.running):
                continue
            status = image_status(findings_for(result, self.thresholds, image.spacing_mm), result)
            if self.status(path) != status:
                self.set_status(path, *status)
                changed.append(path)
        return changed

    def snapshot(self) -> dict[str, Any]:
        """The live state in plain values (for tests and debugging)."""
        return {
            "path": self.path,
            "generation": self.generation,
            "thresholds": self.thresholds.to_dict(),
            "overlay_visible": dict(self.overlay_visible),
            "overlay_opacity": dict(self.overlay_opacity),
            "all_hidden": self.all_hidden,
            "device": self.device,
            "device_request": self.device_request,
            "statuses": {str(p): s for p, s in self._statuses.items()},
            "cached": [str(p) for p in self._cache],
        }
