"""Overlay layers on the canvas (heat map, mask fill and outline, Grad-CAM, boxes) and their controls.

Colours come from :mod:`pneumoview.render` (the same LUT, the same one colour per box set and the same box labels
as the exported PNG), so the legend, the screen and the export match. Every layer lives in the image's pixel frame: ``ImageItem``s of the same ``(H, W)`` as
the radiograph, and box items at ``[x, y, w, h]`` in original pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview.gui import viewmodel as vm
from pneumoview.render import BOX_SET_COLOURS, MASK_OUTLINE_COLOUR, box_label, heat_colormap
from pneumoview.settings import OVERLAY_LAYERS
from pneumoview.viewer_state import ViewerState

IMAGE_LAYERS = ("heatmap", "mask_fill", "mask_outline", "saliency")
BOX_LAYERS = ("detector", "segmentation", "fused", "truth")
LAYER_TITLES = {
    "heatmap": "Heat map P(opacity)",
    "mask_fill": "Mask fill",
    "mask_outline": "Mask outline",
    "detector": "Detector boxes",
    "segmentation": "Segmentation boxes",
    "fused": "Final boxes",
    "saliency": "Classifier Grad-CAM",
    "truth": "Ground truth (radiologists)",
    "review": "Reader review",
    "stored": "Stored DICOM results (SR, SEG, GSPS)",
}
_Z = {"heatmap": 10, "saliency": 11, "mask_fill": 12, "mask_outline": 13, "truth": 19, "detector": 20,
      "segmentation": 21}  # fmt: skip
_Z_FINAL, _Z_HIGHLIGHT = 22, 30
_MASK_FILL_COLOUR = (255, 140, 0)


def _saliency_rgb() -> np.ndarray:
    return pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 256, alpha=False)


def _saliency_lut() -> np.ndarray:
    """A viridis LUT with alpha rising to opaque at 0.6, so Grad-CAM reads apart from the inferno heat map."""
    lut = _saliency_rgb()
    alpha = np.clip(np.linspace(0.0, 1.0, 256) / 0.6, 0.0, 1.0) * 255
    return np.concatenate([lut, alpha[:, None]], axis=1).astype(np.uint8)


def _binary_lut(colour: tuple[int, int, int]) -> np.ndarray:
    return np.array([[0, 0, 0, 0], [*colour, 255]], dtype=np.uint8)


class OverlayLayers(QtCore.QObject):
    """The overlay items inside a ViewBox; the canvas owns it.

    Each layer's visibility and opacity belong to the :class:`~pneumoview.viewer_state.ViewerState`; this
    renders them when it says they changed. ``layersChanged`` tells the layers drawn elsewhere (the reader review,
    stored DICOM results) to render again.
    """

    layersChanged = QtCore.Signal()

    def __init__(self, view: pg.ViewBox, state: ViewerState) -> None:
        super().__init__()
        self.view = view
        self.state = state
        self.images: dict[str, pg.ImageItem] = {}
        for name in IMAGE_LAYERS:
            item = pg.ImageItem(axisOrder="row-major")
            item.setZValue(_Z[name])
            view.addItem(item)
            self.images[name] = item
        self._luts = {
            "heatmap": heat_colormap(),
            "saliency": _saliency_lut(),
            "mask_fill": _binary_lut(_MASK_FILL_COLOUR),
            "mask_outline": _binary_lut(MASK_OUTLINE_COLOUR),
        }
        # Box items are pooled per layer and reused (a threshold change only moves and relabels them): creating
        # scene items is what costs time when a detector returns a hundred boxes.
        self._pool: dict[str, list[tuple[QtWidgets.QGraphicsRectItem, pg.TextItem]]] = {
            n: [] for n in BOX_LAYERS
        }
        self._used = dict.fromkeys(BOX_LAYERS, 0)
        self._prob_map: np.ndarray | None = None
        self._highlight = QtWidgets.QGraphicsRectItem()
        pen = pg.mkPen((255, 255, 255), width=3, style=QtCore.Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self._highlight.setPen(pen)
        self._highlight.setZValue(_Z_HIGHLIGHT)
        self._highlight.setVisible(False)
        view.addItem(self._highlight)
        self._truth: np.ndarray | None = None
        self.colour_bar = _colour_bar(
            heat_colormap()[:, :3], "Heat map: the segmentation's P(opacity), 0 to 1"
        )
        self.saliency_bar = _colour_bar(
            _saliency_rgb(),
            "Grad-CAM: how much each region raised the classifier's P(opacity), 0 (none) to 1 (most)",
        )
        self._saliency_shown = False
        state.layer_changed.connect(self._on_layer_changed)

    @property
    def opacity(self) -> Mapping[str, float]:
        """Opacity per layer, as the state holds it (read-only)."""
        return self.state.overlay_opacity

    def _on_layer_changed(self, _layer: str) -> None:
        self._sync()

    # -- data ---------------------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every overlay (a new image is shown)."""
        for item in self.images.values():
            item.clear()
        self._prob_map = None
        self._truth = None
        self._clear_boxes()
        self._highlight.setVisible(False)
        self._sync()

    def set_prob_map(self, prob_map: np.ndarray | None) -> None:
        """The segmentation ensemble's ``(H, W)`` probability map, or None."""
        if prob_map is self._prob_map:
            return
        self._prob_map = prob_map
        if prob_map is None:
            for name in ("heatmap", "mask_fill", "mask_outline"):
                self.images[name].clear()
        else:
            self.images["heatmap"].setImage(prob_map, levels=(0.0, 1.0), lut=self._luts["heatmap"])
        self._sync()

    def set_findings(self, findings, seg_threshold: float) -> None:  # findings: Findings | None
        """Redraw the mask (``prob_map > seg_threshold``) and the boxes of ``findings``."""
        if self._prob_map is not None:
            mask = self._prob_map > seg_threshold
            self.images["mask_fill"].setImage(
                mask.view(np.uint8), levels=(0, 1), lut=self._luts["mask_fill"], autoLevels=False
            )
            outline = vm.mask_outline(mask)
            self.images["mask_outline"].setImage(
                outline.view(np.uint8), levels=(0, 1), lut=self._luts["mask_outline"], autoLevels=False
            )
        self._clear_boxes(("detector", "segmentation", "fused"))
        self._highlight.setVisible(False)
        if findings is not None:
            sets = {
                "detector": findings.detector,
                "segmentation": findings.segmentation,
                "fused": findings.fused,
            }
            for layer, bs in sets.items():
                if bs is None:
                    continue
                for box, score, src in zip(bs.boxes, bs.scores, bs.sources, strict=True):
                    self._place_box(layer, box, box_label(layer, src, score), BOX_SET_COLOURS[layer])
        self._sync()

    def set_truth(self, boxes: np.ndarray | None) -> None:
        """The radiologists' ``(N, 4)`` ``[x, y, w, h]`` boxes in image pixels (None: no labels for this image)."""
        self._truth = None if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self._clear_boxes(("truth",))
        for box in self._truth if self._truth is not None else ():
            self._place_box("truth", box, "truth", BOX_SET_COLOURS["truth"])
        self._sync()

    def set_saliency(self, saliency: np.ndarray | None) -> None:
        self._saliency_shown = saliency is not None
        if saliency is None:
            self.images["saliency"].clear()
        else:
            self.images["saliency"].setImage(saliency, levels=(0.0, 1.0), lut=self._luts["saliency"])
        self._sync()

    def highlight(self, box: np.ndarray | None) -> None:
        """Outline one ``[x, y, w, h]`` box in white (None hides the highlight)."""
        if box is None:
            self._highlight.setVisible(False)
            return
        x, y, w, h = (float(v) for v in box)
        self._highlight.setRect(QtCore.QRectF(x, y, w, h))
        self._highlight.setVisible(True)

    def box_count(self, layer: str) -> int:
        """Number of boxes drawn in a box layer."""
        return self._used[layer]

    def box_items(self, layer: str) -> list[tuple[QtWidgets.QGraphicsRectItem, pg.TextItem]]:
        """The ``(rectangle, label)`` items of the boxes drawn in ``layer``."""
        return self._pool[layer][: self._used[layer]]

    def _place_box(self, layer: str, box: np.ndarray, text: str, colour: tuple[int, int, int]) -> None:
        pool, i = self._pool[layer], self._used[layer]
        if i == len(pool):
            rect = QtWidgets.QGraphicsRectItem()
            label = pg.TextItem("", color=(0, 0, 0), anchor=(0, 1))
            z = _Z_FINAL if layer == "fused" else _Z[layer]
            if layer == "truth":
                label.setColor((255, 255, 255))
            for item in (rect, label):
                item.setZValue(z)
                self.view.addItem(item)
            pool.append((rect, label))
        rect, label = pool[i]
        x, y, w, h = (float(v) for v in box)
        final = layer == "fused"
        pen = pg.mkPen(colour, width=3 if final else 2 if layer == "truth" else 1.5)
        if layer in ("detector", "segmentation"):
            pen.setStyle(QtCore.Qt.PenStyle.DashLine)
        elif layer == "truth":
            pen.setStyle(QtCore.Qt.PenStyle.DotLine)
        pen.setCosmetic(True)
        rect.setPen(pen)
        rect.setRect(QtCore.QRectF(x, y, w, h))
        label.fill = pg.mkBrush(*colour)
        label.setText(text)
        label.setPos(x, y)
        self._used[layer] = i + 1

    def _clear_boxes(self, layers: tuple[str, ...] = BOX_LAYERS) -> None:
        """Hide the boxes of ``layers`` (the items stay pooled for the next drawing)."""
        for layer in layers:
            for rect, label in self._pool[layer]:
                rect.setVisible(False)
                label.setVisible(False)
            self._used[layer] = 0

    # -- visibility ---------------------------------------------------------------------------------------------

    def is_shown(self, layer: str) -> bool:
        """True when ``layer`` is drawn (its flag is on and overlays are not all hidden)."""
        return self.state.is_shown(layer)

    def _sync(self) -> None:
        for name, item in self.images.items():
            item.setVisible(self.is_shown(name))
            item.setOpacity(self.opacity[name])
        for name, pool in self._pool.items():
            shown = self.is_shown(name)
            for i, pair in enumerate(pool):
                for item in pair:
                    item.setVisible(shown and i < self._used[name])
                    item.setOpacity(self.opacity[name])
        # The bars stay in the layout and only turn transparent: hiding them would resize the view and move the
        # image the reader has zoomed and panned.
        _show_bar(self.colour_bar, self._prob_map is not None and self.is_shown("heatmap"))
        _show_bar(self.saliency_bar, self._saliency_shown and self.is_shown("saliency"))
        self.layersChanged.emit()


def _colour_bar(rgb: np.ndarray, tip: str) -> pg.ColorBarItem:
    cmap = pg.ColorMap(pos=np.linspace(0.0, 1.0, len(rgb)), color=rgb)
    bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=cmap, interactive=False, width=14, colorMapMenu=False)
    bar.setToolTip(tip)
    bar.setOpacity(0.0)
    return bar


def _show_bar(bar: pg.ColorBarItem, shown: bool) -> None:
    bar.setOpacity(1.0 if shown else 0.0)


class OverlayControls(QtWidgets.QWidget):
    """One row per layer: a visibility check box and an opacity slider, a view of the state's layers (a click
    changes the state; the state's ``layer_changed`` moves the controls)."""

    def __init__(self, state: ViewerState, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        grid = QtWidgets.QGridLayout(self)
        grid.setContentsMargins(4, 4, 4, 4)
        self.checks: dict[str, QtWidgets.QCheckBox] = {}
        self.sliders: dict[str, QtWidgets.QSlider] = {}
        for row, name in enumerate(OVERLAY_LAYERS):
            check = QtWidgets.QCheckBox(LAYER_TITLES[name])
            colour = BOX_SET_COLOURS.get(name)
            if colour is not None:
                swatch = QtGui.QPixmap(12, 12)
                swatch.fill(QtGui.QColor(*colour))
                check.setIcon(QtGui.QIcon(swatch))
            slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            slider.setRange(0, 100)
            slider.setToolTip(f"Opacity of {LAYER_TITLES[name].lower()}")
            slider.setAccessibleName(f"{LAYER_TITLES[name]} opacity")
            check.toggled.connect(lambda on, n=name: self.state.set_layer_visible(n, on))
            slider.valueChanged.connect(lambda v, n=name: self.state.set_layer_opacity(n, v / 100.0))
            grid.addWidget(check, row, 0)
            grid.addWidget(slider, row, 1)
            self.checks[name], self.sliders[name] = check, slider
        grid.setColumnStretch(1, 1)
        self._render("")
        state.layer_changed.connect(self._render)

    def _render(self, layer: str) -> None:
        """Show the state of ``layer`` (every layer for ``""``) without sending it back."""
        for name in OVERLAY_LAYERS if not layer else (layer,):
            check, slider = self.checks[name], self.sliders[name]
            for w in (check, slider):
                w.blockSignals(True)
            check.setChecked(self.state.overlay_visible[name])
            if round(slider.value() / 100.0, 2) != round(self.state.overlay_opacity[name], 2):
                slider.setValue(int(round(100 * self.state.overlay_opacity[name])))
            for w in (check, slider):
                w.blockSignals(False)
