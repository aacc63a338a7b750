"""The viewer's state without Qt: the current image and result, per-image status, a small result cache, and the
generation counter that tells stale background work from current work.

Post-processing is re-run here on every threshold change (``postprocess`` only: the models never re-run for a
threshold change).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pneumoview.gui import viewmodel as vm
from pneumoview.thresholds import Thresholds
from pneumoview.types import AnalysisResult, XrayImage

__all__ = ["ImageRecord", "Session"]


@dataclass
class ImageRecord:
    """Browser status of one image file."""

    status: str = vm.NOT_ANALYSED
    reason: str = ""


class Session:
    """State shared by the main window's widgets.

    Args:
        thresholds: the post-processing settings in use.
        cache_size: how many analysed images (pixels and model outputs) stay in memory, most recent first.
    """

    def __init__(self, thresholds: Thresholds | None = None, cache_size: int = 12) -> None:
        self.thresholds = thresholds or Thresholds()
        self.cache_size = cache_size
        self.records: dict[Path, ImageRecord] = {}
        self._cache: OrderedDict[Path, tuple[XrayImage, AnalysisResult]] = OrderedDict()
        self.generation = 0
        self.path: Path | None = None
        self.image: XrayImage | None = None
        self.result: AnalysisResult | None = None
        self.findings = None  # pneumoview.postprocess.Findings | None
        self.saliency = None  # float32 (H, W) Grad-CAM map of the current image, or None

    # -- current image ----------------------------------------------------------------------------------------

    def select(self, path: Path) -> int:
        """Make ``path`` current (its image is not loaded yet); returns the new generation number."""
        self.generation += 1
        self.path = Path(path)
        self.image = self.result = self.findings = self.saliency = None
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
        self.result = self.findings = self.saliency = None
        self.generation += 1

    def set_image(self, image: XrayImage) -> None:
        self.image = image
        cached = self.cached(self.path) if self.path is not None else None
        if cached is not None and cached[0].image_id == image.image_id:
            self.set_result(cached[1])

    def set_result(self, result: AnalysisResult, complete: bool = True) -> None:
        """Store the current image's result (``complete=False`` while stages are still running), recompute its
        findings and status, and cache it once complete."""
        self.result = result
        self.refresh()
        if complete and self.path is not None and self.image is not None:
            self.remember(self.path, self.image, result)

    def refresh(self):  # -> Findings | None
        """Re-run post-processing of the current result with the current thresholds; update the status."""
        if self.result is None or self.image is None:
            self.findings = None
            return None
        from pneumoview.postprocess import postprocess

        self.findings = postprocess(self.result, self.thresholds, spacing_mm=self.image.spacing_mm)
        if self.path is not None and self.result.stages_done:
            self.set_status(self.path, *vm.image_status(self.findings, self.result))
        return self.findings

    def set_thresholds(self, thresholds: Thresholds):  # -> Findings | None
        self.thresholds = thresholds
        return self.refresh()

    # -- other images -------------------------------------------------------------------------------------------

    def set_status(self, path: Path, status: str, reason: str = "") -> None:
        rec = self.records.setdefault(Path(path), ImageRecord())
        rec.status, rec.reason = status, reason

    def status(self, path: Path) -> ImageRecord:
        return self.records.get(Path(path), ImageRecord())

    def remember(self, path: Path, image: XrayImage, result: AnalysisResult) -> None:
        """Keep a complete result in the cache (least recently used entries leave first)."""
        self._cache[Path(path)] = (image, result)
        self._cache.move_to_end(Path(path))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def record(self, path: Path, image: XrayImage, result: AnalysisResult) -> tuple[str, str]:
        """Cache a complete result of any image and set its status from the current thresholds."""
        from pneumoview.postprocess import postprocess

        self.remember(path, image, result)
        status = vm.image_status(postprocess(result, self.thresholds, spacing_mm=image.spacing_mm), result)
        self.set_status(path, *status)
        return status

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
        from pneumoview.postprocess import postprocess

        changed = []
        for path, (image, result) in self._cache.items():
            if not result.stages_done:
                continue
            f = postprocess(result, self.thresholds, spacing_mm=image.spacing_mm)
            status, reason = vm.image_status(f, result)
            rec = self.status(path)
            if (rec.status, rec.reason) != (status, reason):
                self.set_status(path, status, reason)
                changed.append(path)
        return changed
