"""DICOM results found in the opened folder (SR, SEG, GSPS — PneumoView's or anyone's) shown over the image they
refer to, so a second reader sees what the first one stored. The scan lists them under their image
(:func:`pneumoview.gui.study_browser.StudyBrowser.results_for`); they are read in the background with
:func:`pneumoview.dicom_results.read_results` and drawn as the "Stored DICOM results" layer of the Layers tab.

Coordinates: every box is ``(x1, y1, x2, y2)`` in the referenced image's pixels, drawn in the canvas's
``(column, row)`` frame; a SEG mask is ``(rows, cols)`` on the same grid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from pneumoview.gui import workers
from pneumoview.masks import mask_outline

if TYPE_CHECKING:
    from pneumoview.dicom_results import ImageResults
    from pneumoview.gui.main_window import MainWindow
    from pneumoview.types import XrayImage

log = logging.getLogger(__name__)

SR_COLOUR = (0, 200, 255)
REVIEW_COLOUR = (255, 170, 230)
GSPS_COLOUR = (170, 255, 120)
SEG_COLOUR = (0, 200, 255)
_Z = 24


def read_results_job(paths: Sequence[Path], *, cancelled) -> tuple[list[Any], list[str]]:
    """Read the result files of one image (worker thread): the objects read and, for each file that could not be
    read, a sentence naming it."""
    # lazy: highdicom is heavy; DICOM results are written on request only
    from pneumoview.dicom_results import read_result

    objects, problems = [], []
    for path in paths:
        if cancelled():
            break
        try:
            objects.append(read_result(path))
        except ValueError as exc:  # the message names the file and what is wrong
            problems.append(f"{exc}; it is not shown.")
        except Exception as exc:  # a damaged file must never hide the others
            problems.append(f"{path}: cannot be read ({type(exc).__name__}: {exc}); it is not shown.")
    return objects, problems


def stored_summary(results: ImageResults | None) -> str:
    """One line for the findings panel: what was found and by whom."""
    if results is None:
        return ""
    parts = []
    for sr in results.algorithm_srs:
        who = sr.algorithm_name or sr.observer_name or sr.manufacturer or "an algorithm"
        parts.append(f"SR by {who} ({len(sr.regions)} region{'s' if len(sr.regions) != 1 else ''})")
    for sr in results.reviews:
        parts.append(f"review SR by {sr.observer_name or 'a reader'} ({len(sr.regions)} boxes)")
    for seg in results.segs:
        parts.append(
            f"SEG ({int(seg.mask.sum())} px{' + probability map' if seg.probability is not None else ''})"
        )
    for ps in results.gsps:
        parts.append(f"GSPS ({len(ps.boxes_xyxy)} boxes)")
    return "Stored results: " + ", ".join(parts) if parts else ""


class StoredResultsLayer(QtCore.QObject):
    """Signals: ``loaded(object)``: the :class:`ImageResults` now drawn for the current image (None when it has
    none)."""

    loaded = QtCore.Signal(object)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.view = window.canvas.view
        self.overlays = window.canvas.overlays
        self.results: ImageResults | None = None
        self.boxes: list[tuple[tuple[float, float, float, float], str]] = []
        self._items: list[QtWidgets.QGraphicsItem] = []
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.mask_item.setZValue(14)
        self.view.addItem(self.mask_item)
        self._generation = 0
        self.paths: list[Path] = []
        self.problems: list[str] = []  # files that could not be read or drawn, as sentences
        self.summary = QtWidgets.QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #7fd8ff;")
        panel = window.findings_panel
        layout = cast(QtWidgets.QBoxLayout, panel.layout())
        layout.insertWidget(layout.indexOf(panel.provenance), self.summary)
        self.overlays.layersChanged.connect(self._sync)

    def show_for(self, image: XrayImage | None, paths: Sequence[Path]) -> None:
        """Read and draw the result files ``paths`` of ``image`` (nothing when empty)."""
        self._generation += 1
        self.clear()
        self.paths = list(paths)
        if image is None or not paths:
            self.loaded.emit(None)
            return
        gen, uid = self._generation, image.identifiers.get("SOPInstanceUID", "")
        self.summary.setText(f"Reading {len(paths)} stored result file(s)…")
        self.window.jobs["stored"] = workers.start(
            "stored", read_results_job, list(paths),
            on_return=lambda found: self._on_read(gen, image, _group(uid, found[0]), found[1]),
            on_error=lambda exc: self._on_error(gen, exc),
        )  # fmt: skip

    def update_paths(self, image: XrayImage | None, paths: Sequence[Path]) -> None:
        """Show again when the scan found more results for the image on screen."""
        if image is not None and list(paths) != self.paths:
            self.show_for(image, paths)

    def clear(self) -> None:
        for item in self._items:
            self.view.removeItem(item)
        self._items, self.boxes, self.results, self.problems = [], [], None, []
        self.mask_item.clear()
        self.summary.setText("")

    def _on_error(self, gen: int, exc: BaseException) -> None:
        if gen == self._generation:
            self.summary.setText(f"Stored results could not be read: {exc}")

    def _on_read(self, gen: int, image: XrayImage, results: ImageResults | None, problems: list[str]) -> None:
        if gen != self._generation:
            return
        self.results = results
        notes = list(problems)
        if results is not None:
            for sr in results.srs:
                colour = REVIEW_COLOUR if sr.is_review else SR_COLOUR
                for region in sr.regions:
                    if sr.is_review:
                        text = f"{region.decision or 'reviewed'} · {sr.observer_name}"
                    else:
                        conf = "" if region.confidence is None else f" {region.confidence:.2f}"
                        text = f"SR {region.finding or 'finding'}{conf}"
                    self._box(
                        region.box_xyxy,
                        text,
                        colour,
                        dashed=region.decision == "rejected",
                        corner="bl" if sr.is_review else "tr",
                    )
            for ps in results.gsps:
                labels = (
                    list(ps.labels) if len(ps.labels) == len(ps.boxes_xyxy) else [""] * len(ps.boxes_xyxy)
                )
                for box, label in zip(ps.boxes_xyxy, labels, strict=True):
                    self._box(box, f"GSPS {label}".strip(), GSPS_COLOUR, dashed=True, corner="br")
            for seg in results.segs:
                if seg.mask.shape != image.shape:
                    notes.append(
                        f"{seg.path.name}: the SEG is {seg.mask.shape[1]}×{seg.mask.shape[0]} px but the image is "
                        f"{image.shape[1]}×{image.shape[0]}; its mask is not drawn."
                    )
                    continue
                outline = mask_outline(seg.mask)
                lut = np.array([[0, 0, 0, 0], [*SEG_COLOUR, 255]], dtype=np.uint8)
                self.mask_item.setImage(outline.view(np.uint8), levels=(0, 1), lut=lut, autoLevels=False)
        self.summary.setText("\n".join(filter(None, [stored_summary(results), *notes])))
        self.problems = notes
        self._sync()
        self.loaded.emit(results)

    def _box(self, box, text: str, colour, dashed: bool = False, corner: str = "tr") -> None:
        """A rectangle with its label inside one corner: top-right (algorithm SR), bottom-right (GSPS) or
        bottom-left (review SR), so the labels of objects that repeat the same box do not cover each other."""
        x1, y1, x2, y2 = (float(v) for v in box)
        rect = QtWidgets.QGraphicsRectItem(QtCore.QRectF(x1, y1, x2 - x1, y2 - y1))
        pen = pg.mkPen(colour, width=2)
        if dashed:
            pen.setStyle(QtCore.Qt.PenStyle.DashDotLine)
        pen.setCosmetic(True)
        rect.setPen(pen)
        anchor, pos = {"tr": ((1, 0), (x2, y1)), "br": ((1, 1), (x2, y2)), "bl": ((0, 1), (x1, y2))}[corner]
        label = pg.TextItem(text, color=colour, anchor=anchor, fill=pg.mkBrush(0, 0, 0, 170))
        label.setPos(*pos)
        for item in (rect, label):
            item.setZValue(_Z)
            self.view.addItem(item)
            self._items.append(item)
        self.boxes.append(((x1, y1, x2, y2), text))

    def _sync(self) -> None:
        shown = self.overlays.is_shown("stored")
        opacity = self.overlays.opacity.get("stored", 1.0)
        for item in (*self._items, self.mask_item):
            item.setVisible(shown)
            item.setOpacity(opacity)


def _group(uid: str, objects: Sequence[Any]) -> ImageResults | None:
    """The objects read for one image as :class:`ImageResults` (None when none could be read)."""
    # lazy: highdicom is heavy; DICOM results are written on request only
    from pneumoview.dicom_results import ImageResults, StoredSEG, StoredSR

    if not objects:
        return None
    srs = tuple(o for o in objects if isinstance(o, StoredSR))
    segs = tuple(o for o in objects if isinstance(o, StoredSEG))
    gsps = tuple(o for o in objects if not isinstance(o, StoredSR | StoredSEG))
    return ImageResults(uid, srs, segs, gsps)
