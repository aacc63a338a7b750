"""The findings panel: classifier probabilities, the table of boxes, provenance (models, versions, device), notes."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview.anatomy import Orientation
from pneumoview.ground_truth import HIT_RULE, match_hits
from pneumoview.gui import viewmodel as vm
from pneumoview.gui.review_layer import DECISION_COLOURS
from pneumoview.render import BOX_SET_COLOURS
from pneumoview.types import STAGES, AnalysisResult

# What a reader looks at first comes first; pixel positions last (they may scroll out of a narrow panel).
COLUMNS = ("Set", "Found by", "Conf.", "Where", "cm²", "Truth", "Sources", "Review", "x", "y", "w", "h", "px²")  # fmt: skip
_RIGHT_ALIGNED = {"Conf.", "cm²", "x", "y", "w", "h", "px²"}
_TAGS = {"final": "final", "detector": "det", "segmentation": "seg", "fused": "both"}
_SET_LAYER = {"final": "fused", "detector": "detector", "segmentation": "segmentation"}
FUSION_TIP = (
    "Weighted box fusion (the default) averages the two models' confidences for a box; a model that did not find "
    "the box counts as 0, so a box only the detector found at 0.70 is reported at 0.35. The detector's and the "
    "segmentation's own confidences are shown here."
)
_TIPS = {
    "Set": "final: the reported boxes; det / seg: what each model found on its own (before the P(opacity) gate)",
    "Found by": "both: the detector and the segmentation agree (fused box)",
    "Conf.": "the box's confidence; for a final box fused by WBF, the mean of the two models' confidences",
    "Sources": FUSION_TIP,
    "Where": "the patient's side and the zone (thirds of the image height), from the DICOM orientation",
    "cm²": "box area in cm² (needs the pixel spacing)",
    "Truth": f"against the radiologists' boxes: {HIT_RULE}",
    "x": "left edge, image pixels",
    "y": "top edge, image pixels",
    "px²": "box area in square pixels",
    "Review": "the reader's decision on a final box (Review menu: A accept, R reject, drag to move or resize)",
}
_TRUTH_COLUMN = COLUMNS.index("Truth")
_SOURCES_COLUMN = COLUMNS.index("Sources")


class FindingsPanel(QtWidgets.QWidget):
    """Shows one image's result. Selecting a table row emits ``boxSelected(set, index)``."""

    boxSelected = QtCore.Signal(str, int)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.headline = QtWidgets.QLabel("No image")
        self.headline.setWordWrap(True)
        font = self.headline.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.headline.setFont(font)
        layout.addWidget(self.headline)
        self.suitability = QtWidgets.QLabel("")
        self.suitability.setWordWrap(True)
        self.suitability.setStyleSheet("color: #ff6060; font-weight: bold;")
        self.suitability.setAccessibleName("Header warnings")
        self.suitability.hide()
        layout.addWidget(self.suitability)

        self.probs_box = QtWidgets.QGroupBox("Classifier")
        self.probs_layout = QtWidgets.QFormLayout(self.probs_box)
        layout.addWidget(self.probs_box)
        self.prob_bars: dict[str, QtWidgets.QProgressBar] = {}
        self.gate_label = QtWidgets.QLabel("")
        self.gate_label.setWordWrap(True)
        self.gate_label.setToolTip(
            "The probability that removes every box when it is below the P(opacity) gate"
        )
        self.gate = 0.0

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for c, name in enumerate(COLUMNS):
            if name in _TIPS:
                header = self.table.horizontalHeaderItem(c)
                if header is not None:  # set just above by setHorizontalHeaderLabels
                    header.setToolTip(_TIPS[name])
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        # Columns are sized once per fill: ResizeToContents would re-measure every row after each cell.
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)
        self.table.setAccessibleName("Boxes")
        self.table.setMinimumHeight(120)  # the header and about three boxes, even when the panel is short
        self.table.itemSelectionChanged.connect(self._on_selection)
        layout.addWidget(self.table, 1)

        self.provenance = QtWidgets.QLabel("")
        self.provenance.setWordWrap(True)
        self.provenance.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.provenance)
        self.notes = QtWidgets.QLabel("")
        self.notes.setWordWrap(True)
        self.notes.setStyleSheet("color: #f0b060;")
        layout.addWidget(self.notes)
        self.rows: list[vm.BoxRow] = []

    # -- content ------------------------------------------------------------------------------------------------

    def clear(self, headline: str = "No image") -> None:
        self.headline.setText(headline)
        self._set_probs(None)
        self.set_rows([])
        self.provenance.setText("")
        self.notes.setText("")
        self.set_warnings(())

    def set_warnings(self, warnings) -> None:
        """Show why the header says this is not an adult frontal chest radiograph (hidden when there is none)."""
        self.suitability.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.suitability.setVisible(bool(warnings))

    def set_result(
        self,
        result: AnalysisResult | None,
        findings,
        running: bool,
        extra_notes=(),
        orientation: Orientation | None = None,
        truth=None,
        truth_source: str = "",
    ) -> None:
        """Show a (possibly partial) result and its post-processed findings. ``orientation`` places each box;
        ``truth`` (the radiologists' ``(N, 4)`` boxes in image pixels, from ``truth_source``) marks hits."""
        if result is None:
            self.clear("Analysing…" if running else "Not analysed")
            self.notes.setText("\n".join(extra_notes))
            return
        self.headline.setText(vm.headline_text(findings, result, running))
        if findings is not None:
            self.gate = findings.thresholds.gate
        self._set_probs(result)
        self.set_rows(vm.box_rows(findings, orientation=orientation, truth=truth))
        self.table.setColumnHidden(_TRUTH_COLUMN, truth is None)
        models = "<br>".join(
            f"{m.task}: <b>{m.id}</b> v{m.version} <span style='color:#999'>#{m.sha256_prefix}</span>"
            for m in result.models
        )
        t = result.timings_ms
        timing = ", ".join(f"{k} {t[k]:.0f} ms" for k in (*STAGES, "total") if k in t)
        self.provenance.setText(
            f"{models or 'no model ran'}<br>device: <b>{result.device}</b>"
            + (f"<br>{timing}" if timing else "")
        )
        notes = (
            list(extra_notes) + list(result.notes) + (list(findings.notes) if findings is not None else [])
        )
        if orientation is not None and orientation.note:
            notes.append(orientation.note)
        if truth is not None and findings is not None:
            notes.append(_truth_note(findings, truth, truth_source))
        self.notes.setText("\n".join(dict.fromkeys(notes)))

    def _set_probs(self, result: AnalysisResult | None) -> None:
        names = list(result.class_names) if result is not None and result.class_probs is not None else []
        if list(self.prob_bars) != names:
            while self.probs_layout.rowCount():
                self.probs_layout.removeRow(0)
            self.prob_bars = {}
            self.gate_label = QtWidgets.QLabel("")
            self.gate_label.setWordWrap(True)
            for name in names:
                bar = QtWidgets.QProgressBar()
                bar.setRange(0, 1000)
                bar.setTextVisible(True)
                bar.setAccessibleName(f"P({name})")
                self.probs_layout.addRow(name, bar)
                self.prob_bars[name] = bar
            if names:
                self.probs_layout.addRow(self.gate_label)
        self.gate_label.setText(vm.gate_text(result, self.gate))
        for i, name in enumerate(names):
            assert result is not None and result.class_probs is not None  # names is empty otherwise
            p = float(result.class_probs[i])
            self.prob_bars[name].setValue(int(round(p * 1000)))
            self.prob_bars[name].setFormat(f"{p * 100:.1f} %")
        self.probs_box.setVisible(bool(names))

    def set_rows(self, rows: list[vm.BoxRow]) -> None:
        self.rows = rows
        self.table.blockSignals(True)
        self.table.setUpdatesEnabled(False)
        self.table.clearContents()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            colour = BOX_SET_COLOURS[_SET_LAYER[row.set]]
            cm2 = "" if row.area_cm2 is None else f"{row.area_cm2:.1f}"
            values = (
                _TAGS[row.set], _TAGS[row.source], f"{row.confidence:.2f}",
                " ".join(p for p in (row.side, row.zone) if p), cm2, row.truth, sources_text(row), "",
                f"{row.x:.0f}", f"{row.y:.0f}", f"{row.w:.0f}", f"{row.h:.0f}", f"{row.area_px:.0f}",
            )  # fmt: skip
            for c, value in enumerate(values):
                item = QtWidgets.QTableWidgetItem(value)
                if COLUMNS[c] in _RIGHT_ALIGNED:
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
                if c == 0:
                    item.setForeground(QtGui.QBrush(QtGui.QColor(*colour)))
                if c == _SOURCES_COLUMN and value:
                    item.setToolTip(FUSION_TIP)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.setUpdatesEnabled(True)
        self.table.blockSignals(False)

    def set_review_texts(self, texts: dict[int, str]) -> None:
        """Show the reader's decision (``texts[box_index]``) in the Review column of the final boxes."""
        col = COLUMNS.index("Review")
        colours = {k: DECISION_COLOURS[k] for k in ("accepted", "rejected", "edited")}
        for r, row in enumerate(self.rows):
            text = texts.get(row.index, "") if row.set == "final" else ""
            item = QtWidgets.QTableWidgetItem(text)
            if text in colours:
                item.setForeground(QtGui.QBrush(QtGui.QColor(*colours[text])))
            self.table.setItem(r, col, item)
        self.table.resizeColumnToContents(col)

    def select_row(self, row: int) -> None:
        self.table.selectRow(row)

    def _on_selection(self) -> None:
        selected = self.table.selectionModel().selectedRows()
        if selected:
            row = self.rows[selected[0].row()]
            self.boxSelected.emit(row.set, row.index)


def sources_text(row: vm.BoxRow) -> str:
    """``"det 0.70, seg —"``: each model's own confidence for a final box ("" for the models' own rows)."""
    tags = {"detector": "det", "segmentation": "seg"}
    return ", ".join(f"{tags[n]} {'—' if v is None else f'{v:.2f}'}" for n, v in row.source_scores)


def _truth_note(findings, truth, source: str) -> str:
    hits, missed = match_hits(findings.fused.boxes, findings.fused.scores, truth)
    n = len(truth)
    where = f" ({source})" if source else ""
    if n == 0:
        head = f"Ground truth{where}: no opacity marked by the radiologists"
    else:
        head = f"Ground truth{where}: {n} radiologist box{'es' if n != 1 else ''}"
    return (
        f"{head}; final boxes: {sum(hits)} hit, {len(hits) - sum(hits)} miss; {missed} radiologist box"
        f"{'es' if missed != 1 else ''} not found (hit: IoU ≥ 0.4; the Truth column's tooltip has the rule)."
    )
