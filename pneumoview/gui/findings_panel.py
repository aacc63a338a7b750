"""The findings panel: classifier probabilities, the table of boxes, provenance (models, versions, device), notes."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview.gui import viewmodel as vm
from pneumoview.render import SOURCE_COLOURS
from pneumoview.types import STAGES, AnalysisResult

COLUMNS = ("Set", "Found by", "Conf.", "x", "y", "w", "h", "px²", "mm²", "Review")
_TAGS = {"final": "final", "detector": "det", "segmentation": "seg", "fused": "both"}
_TIPS = {
    "Set": "final: the reported boxes; det / seg: what each model found on its own (before the classifier gate)",
    "Found by": "both: the detector and the segmentation agree (fused box)",
    "x": "left edge, image pixels",
    "y": "top edge, image pixels",
    "px²": "box area in square pixels",
    "mm²": "box area in mm² (needs the pixel spacing)",
    "Review": "the reader's decision on a final box (Review menu: A accept, R reject, drag to move or resize)",
}


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

        self.probs_box = QtWidgets.QGroupBox("Classifier")
        self.probs_layout = QtWidgets.QFormLayout(self.probs_box)
        layout.addWidget(self.probs_box)
        self.prob_bars: dict[str, QtWidgets.QProgressBar] = {}

        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for c, name in enumerate(COLUMNS):
            if name in _TIPS:
                self.table.horizontalHeaderItem(c).setToolTip(_TIPS[name])
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        # Columns are sized once per fill: ResizeToContents would re-measure every row after each cell.
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Interactive)
        self.table.setAccessibleName("Boxes")
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

    def set_result(self, result: AnalysisResult | None, findings, running: bool, extra_notes=()) -> None:
        """Show a (possibly partial) result and its post-processed findings."""
        if result is None:
            self.clear("Analysing…" if running else "Not analysed")
            self.notes.setText("\n".join(extra_notes))
            return
        status, text = vm.image_status(findings, result)
        headline = {vm.FINDING: "Finding", vm.NO_FINDING: "No finding"}.get(status, "Not analysed")
        if running:
            headline += " (so far; analysing…)"
        self.headline.setText(f"{headline}: {text}" if text else headline)
        self._set_probs(result)
        self.set_rows(vm.box_rows(findings))
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
        self.notes.setText("\n".join(dict.fromkeys(notes)))

    def _set_probs(self, result: AnalysisResult | None) -> None:
        names = list(result.class_names) if result is not None and result.class_probs is not None else []
        if list(self.prob_bars) != names:
            while self.probs_layout.rowCount():
                self.probs_layout.removeRow(0)
            self.prob_bars = {}
            for name in names:
                bar = QtWidgets.QProgressBar()
                bar.setRange(0, 1000)
                bar.setTextVisible(True)
                bar.setAccessibleName(f"P({name})")
                self.probs_layout.addRow(name, bar)
                self.prob_bars[name] = bar
        for i, name in enumerate(names):
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
            colour = SOURCE_COLOURS.get(row.source if row.set == "final" else row.set)
            mm2 = "" if row.area_mm2 is None else f"{row.area_mm2:.0f}"
            values = (
                _TAGS[row.set], _TAGS[row.source], f"{row.confidence:.2f}", f"{row.x:.0f}", f"{row.y:.0f}",
                f"{row.w:.0f}", f"{row.h:.0f}", f"{row.area_px:.0f}", mm2,
            )  # fmt: skip
            for c, value in enumerate(values):
                item = QtWidgets.QTableWidgetItem(value)
                if c >= 2:
                    item.setTextAlignment(
                        QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter
                    )
                if c == 1 and colour is not None:
                    item.setForeground(QtGui.QBrush(QtGui.QColor(*colour)))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.setUpdatesEnabled(True)
        self.table.blockSignals(False)

    def set_review_texts(self, texts: dict[int, str]) -> None:
        """Show the reader's decision (``texts[box_index]``) in the Review column of the final boxes."""
        col = COLUMNS.index("Review")
        colours = {"accepted": "#3cdc6e", "rejected": "#ff505a", "edited": "#ffd700"}
        for r, row in enumerate(self.rows):
            text = texts.get(row.index, "") if row.set == "final" else ""
            item = QtWidgets.QTableWidgetItem(text)
            if text in colours:
                item.setForeground(QtGui.QBrush(QtGui.QColor(colours[text])))
            self.table.setItem(r, col, item)
        self.table.resizeColumnToContents(col)

    def select_row(self, row: int) -> None:
        self.table.selectRow(row)

    def _on_selection(self) -> None:
        selected = self.table.selectionModel().selectedRows()
        if selected:
            row = self.rows[selected[0].row()]
            self.boxSelected.emit(row.set, row.index)
