"""The reader-review layer on the canvas: one movable, resizable rectangle (a pyqtgraph ``RectROI``) per reported
box and per box the reader drew, coloured by the decision.

Coordinates: the view's ``(x, y)`` is ``(column, row)`` in source pixels (see :mod:`pneumoview.gui.canvas`), so an
ROI's position and size are the box's ``x1, y1`` and ``w, h`` as stored in the review.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6 import QtCore

from pneumoview.review_store import ReviewMark

DECISION_COLOURS = {
    "undecided": (235, 235, 235),
    "accepted": (60, 220, 110),
    "rejected": (255, 80, 90),
    "edited": (90, 150, 255),  # blue: yellow was too close to the final boxes' yellow-green
    "added": (225, 90, 255),
}
_Z = 25


class ReviewLayer(QtCore.QObject):
    """Signals:
    ``boxEdited(object, object, object)``: ``(finding_index | None, added_position | None, (x1, y1, x2, y2))``
    after the reader moved or resized a box (source pixels);
    ``boxClicked(object, object)``: ``(finding_index | None, added_position | None)``.
    """

    boxEdited = QtCore.Signal(object, object, object)
    boxClicked = QtCore.Signal(object, object)

    def __init__(self, view: pg.ViewBox, overlays) -> None:
        super().__init__()
        self.view = view
        self.overlays = overlays
        self.marks: list[ReviewMark] = []
        self.rois: list[pg.RectROI] = []
        self.labels: list[pg.TextItem] = []
        self.selected: tuple[int | None, int | None] | None = None
        overlays.layersChanged.connect(self._sync)

    def set_marks(self, marks: list[ReviewMark], editable: bool = True) -> None:
        """Draw ``marks`` (replacing what was drawn); ``editable`` lets the reader drag them."""
        self.clear()
        self.marks = list(marks)
        for mark in self.marks:
            x1, y1, x2, y2 = mark.box_xyxy
            movable = editable and not mark.stale
            roi = pg.RectROI(
                (x1, y1), (x2 - x1, y2 - y1), pen=self._pen(mark, False), movable=movable,
                resizable=movable, rotatable=False, removable=False, invertible=False,
            )  # fmt: skip
            if movable:
                roi.addScaleHandle((0, 0), (1, 1))
                roi.addScaleHandle((1, 0), (0, 1))
                roi.addScaleHandle((0, 1), (1, 0))
            roi.setZValue(_Z)
            # While the reader draws a new box, the boxes let the drag through to the view.
            roi.setAcceptedMouseButtons(
                QtCore.Qt.MouseButton.LeftButton if editable else QtCore.Qt.MouseButton.NoButton
            )
            roi.sigClicked.connect(
                lambda _roi, _ev, m=mark: self.boxClicked.emit(m.finding_index, m.added_position)
            )
            roi.sigRegionChangeFinished.connect(lambda r, m=mark: self._on_changed(m, r))
            label = pg.TextItem(
                mark.label,
                color=DECISION_COLOURS[mark.decision],
                anchor=(0, 0),
                fill=pg.mkBrush(0, 0, 0, 170),
            )
            label.setPos(x1, y2)
            label.setZValue(_Z)
            self.view.addItem(roi)
            self.view.addItem(label)
            self.rois.append(roi)
            self.labels.append(label)
        self._restyle()
        self._sync()

    def clear(self) -> None:
        for item in (*self.rois, *self.labels):
            self.view.removeItem(item)
        self.rois, self.labels, self.marks = [], [], []

    def select(self, finding_index: int | None, added_position: int | None) -> None:
        """Draw one box thicker (the box the review actions apply to)."""
        self.selected = (finding_index, added_position)
        self._restyle()

    def roi_for(
        self, finding_index: int | None = None, added_position: int | None = None
    ) -> pg.RectROI | None:
        """The (non-stale) ROI of a reported box or of an added one."""
        for mark, roi in zip(self.marks, self.rois, strict=True):
            if mark.stale:
                continue
            if (mark.finding_index, mark.added_position) == (finding_index, added_position):
                return roi
        return None

    @staticmethod
    def _pen(mark: ReviewMark, selected: bool):
        pen = pg.mkPen(DECISION_COLOURS[mark.decision], width=4 if selected else 2)
        if mark.decision in ("rejected", "undecided") or mark.stale:
            pen.setStyle(QtCore.Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        return pen

    def _restyle(self) -> None:
        for mark, roi in zip(self.marks, self.rois, strict=True):
            sel = self.selected == (mark.finding_index, mark.added_position) and not mark.stale
            roi.setPen(self._pen(mark, sel))

    def _on_changed(self, mark: ReviewMark, roi: pg.RectROI) -> None:
        pos, size = roi.pos(), roi.size()
        x1, y1 = float(pos.x()), float(pos.y())
        box = (x1, y1, x1 + float(size.x()), y1 + float(size.y()))
        if all(abs(a - b) < 1e-6 for a, b in zip(box, mark.box_xyxy, strict=True)):
            return
        self.boxEdited.emit(mark.finding_index, mark.added_position, box)

    def _sync(self) -> None:
        shown = self.overlays.is_shown("review")
        opacity = self.overlays.opacity.get("review", 1.0)
        for item in (*self.rois, *self.labels):
            item.setVisible(shown)
            item.setOpacity(opacity)
