"""Controls for every field of :class:`pneumoview.thresholds.Thresholds`.

A view over the thresholds of a :class:`~pneumoview.viewer_state.ViewerState`: each change goes to the state
(which re-runs post-processing only, never the models), and the controls follow the state's
``thresholds_changed``. Widget ranges keep every value valid, so building the ``Thresholds`` cannot fail.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets
from superqt import QLabeledDoubleSlider

from pneumoview.gui.icons import icon
from pneumoview.thresholds import (
    CONFIDENCE_MODES,
    FUSION_MODES,
    GATE_MODES,
    MODES,
    Thresholds,
    min_area_mm2,
    min_area_px,
)
from pneumoview.viewer_state import ViewerState

# field: (label, minimum, maximum, step, decimals, tooltip); values are shown as stored unless noted.
_SLIDERS = {
    "seg_threshold": ("Mask threshold", 0.01, 0.99, 0.01, 2, "A pixel is opacity when its probability is above this."),
    "min_area_fraction": ("Minimum box area %", 0.0, 20.0, 0.05, 2,
                          "Segmentation regions whose box covers less of the image area than this are dropped."),
    "shrink": ("Box shrink %", 0.0, 50.0, 0.5, 1,
               "Width and height removed from every box around its centre (12.5 % is the RSNA winners' value)."),
    "det_score": ("Detector score", 0.0, 1.0, 0.01, 2, "Detector boxes scoring below this are dropped."),
    "nms_iou": ("Detector NMS IoU", 0.05, 1.0, 0.01, 2,
                "A detector box overlapping a better one by more than this IoU is suppressed."),
    "fusion_iou": ("Fusion IoU", 0.05, 1.0, 0.01, 2, "Boxes of the two models overlapping by this IoU are merged."),
    "gate": ("P(opacity) gate", 0.0, 1.0, 0.01, 2,
             "Hard gate: no box is reported when P(opacity) is below this (0 turns it off). Product gate: boxes "
             "whose score × P(opacity) is below this are dropped. Low-confidence gate: below this P(opacity), "
             "only boxes under the gate box score are dropped."),
    "gate_box_score": ("Gate box score", 0.0, 1.0, 0.01, 2,
                       "Low-confidence gate only: a box scoring at least this survives a low P(opacity)."),
}  # fmt: skip
_COMBOS = {
    "fusion": ("Fusion", FUSION_MODES, "How the detector's and the segmentation's boxes are combined."),
    "confidence": (
        "Segmentation score",
        CONFIDENCE_MODES,
        "How a segmentation box's confidence is computed.",
    ),
    "mode": ("Box rules", MODES, "'seed001' reproduces seed 001's box extraction exactly."),
    "gate_mode": (
        "Gate rule",
        GATE_MODES,
        "How the classifier's P(opacity) prunes the boxes (see the gate's tip).",
    ),
}
_ORDER = ("seg_threshold", "min_area_fraction", "shrink", "det_score", "nms_iou", "fusion", "fusion_iou", "gate_mode",
          "gate", "gate_box_score", "confidence", "mode")  # fmt: skip


def _to_widget(name: str, value: float) -> float:
    if name == "min_area_fraction":
        return value * 100.0
    if name == "shrink":
        return (1.0 - value) * 100.0
    return value


def _from_widget(name: str, value: float) -> float:
    """The stored value of a slider position, rounded to the slider's step (a drag gives 0.30000000000000004 or
    0.2347; the user chose 0.30 or 0.23), so the saved file holds what the control shows."""
    _label, lo, _hi, step, decimals, _tip = _SLIDERS[name]
    value = round(lo + round((value - lo) / step) * step, decimals)
    if name == "min_area_fraction":
        return round(value / 100.0, decimals + 2)
    if name == "shrink":
        return round(1.0 - value / 100.0, decimals + 2)
    return value


class ThresholdPanel(QtWidgets.QWidget):
    """A form with one control per threshold, a live minimum-area readout, and reset buttons.

    Args:
        state: whose thresholds it shows and edits (default: a state of its own, e.g. for a dialog).
    """

    def __init__(self, state: ViewerState | None = None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state if state is not None else ViewerState()
        form = QtWidgets.QFormLayout(self)
        form.setContentsMargins(4, 4, 4, 4)
        self.sliders: dict[str, QLabeledDoubleSlider] = {}
        self.combos: dict[str, QtWidgets.QComboBox] = {}
        for name in _ORDER:
            if name in _SLIDERS:
                label, lo, hi, step, decimals, tip = _SLIDERS[name]
                slider = QLabeledDoubleSlider(QtCore.Qt.Orientation.Horizontal)
                slider.setRange(lo, hi)
                slider.setDecimals(decimals)
                slider.setSingleStep(step)  # type: ignore[arg-type]  # superqt's stub says int; a double slider takes float
                slider.valueChanged.connect(lambda v, n=name: self._on_changed(n, _from_widget(n, float(v))))
                self.sliders[name] = slider
                w: QtWidgets.QWidget = slider
            else:
                label, choices, tip = _COMBOS[name]
                combo = QtWidgets.QComboBox()
                combo.addItems(list(choices))
                combo.currentTextChanged.connect(lambda text, n=name: self._on_changed(n, text))
                self.combos[name] = w = combo
            w.setToolTip(tip)
            w.setAccessibleName(label)
            if name == "min_area_fraction":
                # The px²/mm² readout sits under its slider in the same form row, and is hidden while there is
                # no image, so the form never shows an empty row.
                self.area_label = QtWidgets.QLabel("")
                self.area_label.setStyleSheet("color: #aaa;")
                self.area_label.setVisible(False)
                cell = QtWidgets.QWidget()
                column = QtWidgets.QVBoxLayout(cell)
                column.setContentsMargins(0, 0, 0, 0)
                column.setSpacing(0)
                column.addWidget(w)
                column.addWidget(self.area_label)
                form.addRow(label, cell)
            else:
                form.addRow(label, w)
        buttons = QtWidgets.QHBoxLayout()
        self.reset_button = QtWidgets.QPushButton(icon("reset"), "Defaults")
        self.reset_button.setToolTip("Reset every threshold to its default")
        self.reset_button.clicked.connect(lambda: self.set_thresholds(Thresholds()))
        self.seed_button = QtWidgets.QPushButton("Seed 001 rules")
        self.seed_button.setToolTip("Segmentation boxes only, exactly as seed 001 computes them")
        self.seed_button.clicked.connect(lambda: self.set_thresholds(Thresholds.seed001()))
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.seed_button)
        form.addRow(buttons)
        self._shape: tuple[int, int] | None = None
        self._spacing: tuple[float, float] | None = None
        self._render(self.state.thresholds)
        self.state.thresholds_changed.connect(self._render)

    def thresholds(self) -> Thresholds:
        """The state's thresholds (exact values: a slider's rounding only applies to the field it changed)."""
        return self.state.thresholds

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """Use ``thresholds`` (the state announces them once; the controls follow)."""
        self.state.set_thresholds(thresholds)

    def _render(self, thresholds: Thresholds) -> None:
        """Show ``thresholds`` with the controls' signals blocked, so showing never edits."""
        for name, w in self.sliders.items():
            w.blockSignals(True)
            w.setValue(_to_widget(name, getattr(thresholds, name)))
            w.blockSignals(False)
        for name, combo in self.combos.items():
            combo.blockSignals(True)
            combo.setCurrentText(getattr(thresholds, name))
            combo.blockSignals(False)
        self._update_area_label()
        self._update_gate_box_score()

    def set_image_geometry(
        self, shape: tuple[int, int] | None, spacing_mm: tuple[float, float] | None
    ) -> None:
        """The current image's size and spacing, for the minimum area in px² and mm²."""
        self._shape, self._spacing = shape, spacing_mm
        self._update_area_label()

    def _update_area_label(self) -> None:
        self.area_label.setVisible(self._shape is not None)
        if self._shape is None:
            self.area_label.setText("")
            return
        px = min_area_px(self.state.thresholds, self._shape)
        mm2 = min_area_mm2(self.state.thresholds, self._shape, self._spacing)
        text = f"= {px:,.0f} px²" + (
            f" = {mm2:,.0f} mm² on this image" if mm2 is not None else " on this image"
        )
        self.area_label.setText(text)

    def _on_changed(self, name: str, value: float | str) -> None:
        if isinstance(value, float):
            value = min(max(value, 0.0), 1.0)
            if name == "shrink":
                value = max(value, 0.5)
        self.state.set_thresholds(self.state.thresholds.replace(**{name: value}))

    def _update_gate_box_score(self) -> None:
        # Only the low-confidence gate reads it; enabled otherwise, it looks like it changes something.
        if "gate_box_score" in self.sliders:
            self.sliders["gate_box_score"].setEnabled(self.state.thresholds.gate_mode == "low_confidence")
