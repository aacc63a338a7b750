"""analyse → postprocess → findings, in one place, for the command line, the batch, the viewer and its workers.

:func:`findings_for` turns a model result and the thresholds into :class:`~pneumoview.postprocess.Findings`,
memoised per (result identity, thresholds, pixel spacing): moving a threshold back, re-showing an image or
re-statusing the cached images costs nothing the second time. :func:`analyse` runs the models and then that.
:func:`image_status` is an analysed image's status as the viewer's browser shows it.

Qt-free and torch-free: the engine is passed in (torch is imported by the engine, not here).
Coordinates follow :mod:`pneumoview.types`: boxes ``[x, y, w, h]`` in original pixels, spacing
``(row_mm, col_mm)``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from pneumoview.thresholds import Thresholds
from pneumoview.types import STAGES, AnalysisResult, XrayImage

if TYPE_CHECKING:
    from pneumoview.inference.engine import Engine
    from pneumoview.postprocess import Findings

__all__ = [
    "ERROR",
    "FINDING",
    "NON_IMAGE",
    "NOT_ANALYSED",
    "NO_FINDING",
    "RUNNING",
    "STATUS_LABELS",
    "Analysed",
    "analyse",
    "findings_for",
    "image_status",
    "memo_stats",
]

# Image status in the study browser.
NOT_ANALYSED, RUNNING, NO_FINDING, FINDING, ERROR, NON_IMAGE = (
    "not analysed",
    "running",
    "no finding",
    "finding",
    "error",
    "non-image",
)
STATUS_LABELS = (NOT_ANALYSED, RUNNING, NO_FINDING, FINDING, ERROR, NON_IMAGE)

_MEMO_SIZE = 256
# An entry keeps its result's probability maps alive: 16 MiB for a 2k x 2k radiograph, so 256 entries could hold
# gigabytes. The bytes bound keeps the last few dozen large images (or a few hundred small ones).
_MEMO_BYTES = 512 * 2**20
_Key = tuple[int, Thresholds, tuple[float, float] | None]


def _array_bytes(obj: object) -> int:
    """Bytes of the numpy arrays ``obj``'s dataclass fields hold directly or in a mapping (maps, masks, boxes)."""
    total = 0
    for value in vars(obj).values():
        values = value.values() if isinstance(value, Mapping) else (value,)
        total += sum(v.nbytes for v in values if isinstance(v, np.ndarray))
    return total


class _Memo:
    """Least-recently-used findings per (result identity, thresholds, spacing), at most ``size`` entries and
    ``max_bytes`` of arrays (the newest entry is always kept).

    The entry keeps its result alive and is checked with ``is``, so a recycled ``id()`` can never hand out another
    result's findings. A lock makes it safe for the viewer's worker threads.
    """

    def __init__(self, size: int, max_bytes: int = _MEMO_BYTES) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.nbytes = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, tuple[AnalysisResult, Findings, int]] = OrderedDict()

    def get(self, key: _Key, result: AnalysisResult) -> Findings | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] is not result:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: _Key, result: AnalysisResult, findings: Findings) -> None:
        # Results sharing one result object (other thresholds) count their arrays again: a bound, not an account.
        size = _array_bytes(result) + _array_bytes(findings)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[2]
            self._entries[key] = (result, findings, size)
            self.nbytes += size
            while len(self._entries) > 1 and (len(self._entries) > self.size or self.nbytes > self.max_bytes):
                self.nbytes -= self._entries.popitem(last=False)[1][2]

    def __len__(self) -> int:
        return len(self._entries)


_MEMO = _Memo(_MEMO_SIZE)


def findings_for(
    result: AnalysisResult,
    thresholds: Thresholds,
    spacing_mm: tuple[float, float] | None = None,
    *,
    memo: bool = True,
) -> Findings:
    """The findings of one model result under ``thresholds`` (``spacing_mm`` ``(row_mm, col_mm)`` for areas in
    mm²; None when unknown). The same (result object, thresholds, spacing) returns the same ``Findings`` object.
    ``memo=False`` neither looks up nor keeps the result (a batch post-processes each result once, and keeping
    it would hold its probability maps in memory).

    Raises ValueError as :func:`pneumoview.postprocess.postprocess` does for an inconsistent result.
    """
    spacing = None if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
    key: _Key = (id(result), thresholds, spacing)
    hit = _MEMO.get(key, result) if memo else None
    if hit is not None:
        return hit
    from pneumoview.postprocess import (
        postprocess,  # lazy: scipy and skimage stay off the viewer's start-up path
    )

    # cast: ResultLike's members are settable and the frozen result's are not, which mypy's protocol rule refuses.
    findings = postprocess(cast(Any, result), thresholds, spacing_mm=spacing_mm)
    if memo:
        _MEMO.put(key, result, findings)
    return findings


def memo_stats() -> tuple[int, int]:
    """``(hits, misses)`` of :func:`findings_for` since the process started (for tests and benchmarks)."""
    return _MEMO.hits, _MEMO.misses


@dataclass(frozen=True)
class Analysed:
    """One analysed image: the image, the models' raw result and its findings under the thresholds used."""

    image: XrayImage
    result: AnalysisResult
    findings: Findings


def analyse(
    engine: Engine | Any, image: XrayImage, thresholds: Thresholds, stages: Sequence[str] = STAGES
) -> Analysed:
    """Run ``stages`` of ``engine`` on ``image`` and post-process the result with ``thresholds``."""
    result = engine.analyze(image, stages=tuple(stages))
    return Analysed(image, result, findings_for(result, thresholds, image.spacing_mm))


def image_status(findings: Findings | None, result: AnalysisResult | None) -> tuple[str, str]:
    """``(status, explanation)`` of an analysed image for the browser: FINDING when a final box is reported."""
    if result is None or findings is None:
        return NOT_ANALYSED, "not analysed yet"
    p = "" if result.p_opacity is None else f"P(opacity) {result.p_opacity:.2f}"
    if not result.stages_done:
        return NOT_ANALYSED, _reason_or(result.notes, "no model ran")
    if not {"segment", "detect"} & set(result.stages_done):
        # Only the classifier ran: its P(opacity) against the gate (0.5 when the gate is off) decides.
        if result.p_opacity is None:
            return NOT_ANALYSED, _reason_or(result.notes, "no model ran")
        cut = findings.thresholds.gate or 0.5
        status = FINDING if result.p_opacity >= cut else NO_FINDING
        return status, f"{p}, classifier only (no box model installed)"
    if findings.positive:
        n = len(findings.fused)
        return FINDING, ", ".join(filter(None, [f"{n} box{'es' if n != 1 else ''}", p]))
    why = "P(opacity) gate" if findings.gated else ""
    return NO_FINDING, ", ".join(filter(None, ["no box", why, p]))


def _reason_or(notes: tuple[str, ...], default: str) -> str:
    return "; ".join(notes) or default
