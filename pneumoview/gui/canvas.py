"""The image canvas: a pyqtgraph ViewBox with the radiograph, a histogram with the window, and the overlays.

The radiograph is shown from ``XrayImage.modality`` (file units) with the window as ``levels``, so window/level
works in the file's own units; MONOCHROME1 images (and the user's invert) get an inverted grey LUT instead of
inverted data. The view uses row-major image axes with y pointing down, so ``(x, y)`` in the view is
``(col, row)`` in image pixels and boxes are drawn as they are stored. Flips are view transforms: data and
coordinates never change.

Mouse: wheel zooms, left-drag pans (or sets the window / measures in those modes), right-drag always sets the
window (horizontal: width, vertical: level).

Screen-fixed annotations (children of the ViewBox, not of its data group, so they stay put while the image moves):
the patient's R/L at the left and right edges (:func:`pneumoview.anatomy.edge_markers`, following the viewer's
flip) and a corner text with view position, age, sex and study date (:func:`pneumoview.anatomy.corner_lines`).
They are drawn on the screen only, never into an export.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview.anatomy import Orientation, corner_lines, edge_markers, orientation_of
from pneumoview.gui import viewmodel as vm
from pneumoview.gui.overlays import OverlayLayers
from pneumoview.types import Window, XrayImage
from pneumoview.viewer_state import ViewerState

MODES = ("pan", "window", "measure", "draw")
_GREY = {"mode": "rgb", "ticks": [(0.0, (0, 0, 0, 255)), (1.0, (255, 255, 255, 255))]}
_GREY_INVERTED = {"mode": "rgb", "ticks": [(0.0, (255, 255, 255, 255)), (1.0, (0, 0, 0, 255))]}


class CanvasViewBox(pg.ViewBox):
    """A ViewBox whose drags set the window (right button, or left in window mode) or draw a measurement."""

    sigWindowDrag = QtCore.Signal(float, float)
    sigMeasure = QtCore.Signal(object, object, bool)
    sigDraw = QtCore.Signal(object, object, bool)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
        self.mode = "pan"

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - Qt override
        button = ev.button()
        left = button == QtCore.Qt.MouseButton.LeftButton
        if button == QtCore.Qt.MouseButton.RightButton or (left and self.mode == "window"):
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            self.sigWindowDrag.emit(float(d.x()), float(d.y()))
            return
        if left and self.mode in ("measure", "draw"):
            ev.accept()
            p0 = self.mapSceneToView(ev.buttonDownScenePos(button))
            p1 = self.mapSceneToView(ev.scenePos())
            signal = self.sigMeasure if self.mode == "measure" else self.sigDraw
            signal.emit((p0.x(), p0.y()), (p1.x(), p1.y()), bool(ev.isFinish()))
            return
        super().mouseDragEvent(ev, axis)


class ImageCanvas(pg.GraphicsLayoutWidget):
    """Radiograph + histogram/LUT + overlays + colour bar.

    Signals:
        pixelHovered(str): readout of the pixel under the mouse ("" outside the image).
        windowChanged(object): the current :class:`~pneumoview.types.Window` (file units).
        measured(str): the measurement's length text ("" when cleared).
    """

    pixelHovered = QtCore.Signal(str)
    windowChanged = QtCore.Signal(object)
    measured = QtCore.Signal(str)

    def __init__(self, state: ViewerState | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setBackground((12, 12, 14))
        self.view = CanvasViewBox()
        self.addItem(self.view, row=0, col=0)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.image_item)
        self.hist = pg.HistogramLUTItem()
        self.hist.setImageItem(self.image_item)
        self.addItem(self.hist, row=0, col=1)
        self.overlays = OverlayLayers(self.view, state if state is not None else ViewerState())
        self.addItem(self.overlays.colour_bar, row=0, col=2)
        self.addItem(self.overlays.saliency_bar, row=0, col=3)
        self.image: XrayImage | None = None
        self.factor = 1  # full-resolution pixels per pixel of ``image`` (> 1 while a preview is shown)
        self.user_inverted = False
        self.flipped_h = False
        self.flipped_v = False
        self._span = 1.0
        self._measure_line = pg.PlotCurveItem(pen=pg.mkPen((80, 255, 120), width=2))
        self._measure_label = pg.TextItem("", color=(80, 255, 120), anchor=(0, 1))
        for item in (self._measure_line, self._measure_label):
            item.setZValue(40)
            self.view.addItem(item)
        self.measurement = ""
        self.view.sigWindowDrag.connect(self._on_window_drag)
        self.view.sigMeasure.connect(self._on_measure)
        self.hist.sigLevelsChanged.connect(self._on_levels_changed)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._mouse_scene_pos: QtCore.QPointF | None = None
        # Fit, zoom and pan move the image under a still mouse: the readout must follow.
        self.view.sigRangeChanged.connect(self._refresh_readout)
        self.orientation = Orientation()
        self.markers = {"left": _screen_text(self.view, 17), "right": _screen_text(self.view, 17)}
        self.corner = _screen_text(self.view, 11)
        self.info_overlay = True
        self.view.sigResized.connect(self._place_annotations)

    # -- image --------------------------------------------------------------------------------------------------

    def set_image(self, image: XrayImage | None, factor: int = 1) -> None:
        """Show ``image`` with its default window (None clears the canvas).

        ``factor`` > 1 shows a reduced-resolution preview (:class:`~pneumoview.imaging.progressive.ReducedImage`)
        stretched over the full-resolution frame: view coordinates stay full-resolution pixels, so the zoom, pan
        and overlays carry over when :meth:`swap_image` puts the full image in its place.
        """
        self.image = image
        self.factor = factor
        self.overlays.clear()
        self.clear_measurement()
        self.orientation = orientation_of(image.metadata, image.view) if image is not None else Orientation()
        self._update_annotations()
        if image is None:
            self.image_item.clear()
            return
        self._show_pixels(image, image.window)
        self._apply_lut()
        self.fit()

    def swap_image(self, image: XrayImage) -> None:
        """Put the full-resolution ``image`` in place of its preview, keeping the zoom, pan, flips, overlays and
        measurement, and the window the user set (the image's default window when the user set none)."""
        shown = self.window()
        user_window = (
            shown
            if self.image is not None and shown is not None and not _same_window(shown, self.image.window)
            else None
        )
        self.image, self.factor = image, 1
        self._show_pixels(image, user_window or image.window)
        self._apply_lut()

    def _show_pixels(self, image: XrayImage, window: Window) -> None:
        lo, hi = vm.data_range(image.modality, robust=False)
        self._span = hi - lo
        # Levels in the same call as the data (a later setLevels can break when the shape changes).
        self.image_item.setImage(image.modality, levels=(window.low, window.high), autoLevels=False)
        rows, cols = image.shape
        # A preview pixel is centred on full pixel ``i * factor`` (pneumoview.imaging.progressive.ReducedImage).
        corner = -(self.factor - 1) / 2.0
        self.image_item.setRect(QtCore.QRectF(corner, corner, cols * self.factor, rows * self.factor))
        self.hist.setHistogramRange(lo, hi)
        self.hist.setLevels(window.low, window.high)

    def window(self) -> Window | None:
        if self.image is None:
            return None
        a, b = self.hist.getLevels()
        return Window((a + b) / 2.0, b - a)

    def set_window(self, window: Window) -> None:
        self.hist.setLevels(window.low, window.high)

    def apply_preset(self, name: str) -> None:
        """Apply a window preset of :data:`pneumoview.gui.viewmodel.WINDOW_PRESETS`."""
        if self.image is not None:
            self.set_window(vm.window_preset(self.image, name))

    def set_inverted(self, inverted: bool) -> None:
        """Invert the grey scale (on top of the file's own MONOCHROME1 inversion)."""
        self.user_inverted = bool(inverted)
        self._apply_lut()

    def _apply_lut(self) -> None:
        shown_inverted = (self.image is not None and self.image.inverted) != self.user_inverted
        self.hist.gradient.restoreState(_GREY_INVERTED if shown_inverted else _GREY)

    # -- view ---------------------------------------------------------------------------------------------------

    def fit(self) -> None:
        """Zoom so the whole image fits."""
        if self.image is not None:
            rows, cols = self.image.shape
            self.view.setRange(QtCore.QRectF(0, 0, cols * self.factor, rows * self.factor), padding=0.0)

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, keeping the centre."""
        centre = self.view.viewRect().center()
        w, h = self.view.width(), self.view.height()
        self.view.setRange(
            xRange=(centre.x() - w / 2, centre.x() + w / 2), yRange=(centre.y() - h / 2, centre.y() + h / 2),
            padding=0.0,
        )  # fmt: skip

    def zoom(self, factor: float) -> None:
        """Zoom in (factor > 1) or out around the view centre."""
        self.view.scaleBy((1.0 / factor, 1.0 / factor))

    def set_flips(self, horizontal: bool, vertical: bool) -> None:
        """Mirror the view (display only: coordinates and data are unchanged)."""
        self.flipped_h, self.flipped_v = bool(horizontal), bool(vertical)
        self.view.invertX(self.flipped_h)
        self.view.invertY(not self.flipped_v)
        self._update_annotations()

    # -- screen annotations -------------------------------------------------------------------------------------

    def set_info_overlay(self, shown: bool) -> None:
        """Show or hide the corner text (view, age, sex, study date)."""
        self.info_overlay = bool(shown)
        self._update_annotations()

    def marker_texts(self) -> tuple[str, str]:
        """The R/L letters shown at the left and right edges (``""`` when none)."""
        return self.markers["left"].text(), self.markers["right"].text()

    def corner_text(self) -> str:
        """The corner text as shown ("" when hidden or unknown)."""
        return self.corner.text() if self.corner.isVisible() else ""

    def _update_annotations(self) -> None:
        image = self.image
        left, right = edge_markers(self.orientation, self.flipped_h) if image is not None else ("", "")
        for item, text in ((self.markers["left"], left), (self.markers["right"], right)):
            item.setText(text)
            item.setVisible(bool(text))
        lines = (
            corner_lines(image.metadata, image.identifiers, image.view, self.orientation)
            if image is not None
            else []
        )
        self.corner.setText("\n".join(lines))
        self.corner.setVisible(self.info_overlay and bool(lines))
        self._place_annotations()

    def _place_annotations(self, *_args) -> None:
        rect = self.view.boundingRect()
        margin = 8.0
        for side, item in self.markers.items():
            r = item.boundingRect()
            x = rect.left() + margin if side == "left" else rect.right() - margin - r.width()
            item.setPos(x, rect.center().y() - r.height() / 2)
        self.corner.setPos(rect.left() + margin, rect.top() + margin)

    def centre_on(self, box: np.ndarray) -> None:
        """Centre the view on an ``[x, y, w, h]`` box, zooming out if it does not fit."""
        x, y, w, h = (float(v) for v in box)
        rect = self.view.viewRect()
        vw, vh = max(rect.width(), w * 1.5), max(rect.height(), h * 1.5)
        cx, cy = x + w / 2, y + h / 2
        self.view.setRange(xRange=(cx - vw / 2, cx + vw / 2), yRange=(cy - vh / 2, cy + vh / 2), padding=0.0)

    def set_mode(self, mode: str) -> None:
        """Left-drag mode: ``"pan"``, ``"window"``, ``"measure"`` or ``"draw"`` (a box, for the reader review)."""
        if mode not in MODES:
            raise ValueError(f"unknown canvas mode {mode!r}; valid: {', '.join(MODES)}")
        self.view.mode = mode

    # -- measurement --------------------------------------------------------------------------------------------

    def measure(self, p0: tuple[float, float], p1: tuple[float, float]) -> str:
        """Draw a measurement from ``p0`` to ``p1`` (image ``(x, y)``); returns its text (mm or px)."""
        spacing = self.image.spacing_mm if self.image is not None else None
        if spacing is not None:  # a preview's pixels are ``factor`` view pixels wide
            spacing = (spacing[0] / self.factor, spacing[1] / self.factor)
        length, unit = vm.distance(p0, p1, spacing)
        self.measurement = f"{length:.1f} {unit}"
        self._measure_line.setData([p0[0], p1[0]], [p0[1], p1[1]])
        self._measure_label.setText(self.measurement)
        self._measure_label.setPos(p1[0], p1[1])
        self.measured.emit(self.measurement)
        return self.measurement

    def clear_measurement(self) -> None:
        self.measurement = ""
        self._measure_line.setData([], [])
        self._measure_label.setText("")
        self.measured.emit("")

    # -- slots --------------------------------------------------------------------------------------------------

    def _on_measure(self, p0, p1, _finished: bool) -> None:
        if self.image is not None:
            self.measure(p0, p1)

    def _on_window_drag(self, dx: float, dy: float) -> None:
        current = self.window()
        if current is not None:
            self.set_window(vm.drag_window(current, dx, dy, self._span))

    def _on_levels_changed(self, *_args) -> None:
        w = self.window()
        if w is not None:
            self.windowChanged.emit(w)

    def _refresh_readout(self, *_args) -> None:
        if self._mouse_scene_pos is not None:
            self._on_mouse_moved(self._mouse_scene_pos)

    def _on_mouse_moved(self, scene_pos) -> None:
        self._mouse_scene_pos = QtCore.QPointF(scene_pos)
        if self.image is None or not self.view.sceneBoundingRect().contains(scene_pos):
            self.pixelHovered.emit("")
            return
        if self.factor > 1:
            self.pixelHovered.emit(f"preview at 1/{self.factor} resolution; the full image is loading")
            return
        p = self.view.mapSceneToView(scene_pos)
        self.pixelHovered.emit(vm.pixel_readout(self.image, p.x(), p.y()) or "")


def _same_window(a: Window, b: Window) -> bool:
    tol = 1e-6 * max(1.0, abs(b.width))
    return abs(a.center - b.center) <= tol and abs(a.width - b.width) <= tol


def _screen_text(view: pg.ViewBox, point_size: int) -> QtWidgets.QGraphicsSimpleTextItem:
    """White text with a dark outline, readable on any part of a radiograph, fixed to the screen."""
    item = QtWidgets.QGraphicsSimpleTextItem(view)
    font = QtGui.QFont()
    font.setPointSize(point_size)
    font.setBold(True)
    item.setFont(font)
    item.setBrush(QtGui.QBrush(QtGui.QColor(255, 255, 255)))
    pen = QtGui.QPen(QtGui.QColor(0, 0, 0, 200))
    pen.setWidthF(0.8)
    item.setPen(pen)
    item.setZValue(1e6)
    item.setVisible(False)
    return item
