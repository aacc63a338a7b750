"""Settings, keyboard-shortcut help and About (versions and model cards) dialogs."""

from __future__ import annotations

import html
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy
import pydicom
from PySide6 import QtCore, QtWidgets

from pneumoview import RESEARCH_USE_NOTICE, __version__
from pneumoview.calibration import Calibration
from pneumoview.errors import ModelError
from pneumoview.gui import viewmodel as vm
from pneumoview.inference.manifest import load_manifest, models_dirs
from pneumoview.inference.weights import find_weights
from pneumoview.settings import DEVICES, Settings, settings_path

MOUSE_GESTURES = (
    ("Mouse wheel", "Zoom"),
    ("Left drag", "Pan (or window/level, or measure, in those modes)"),
    ("Right drag", "Window/level: horizontal = width, vertical = level"),
    ("Drag the histogram's region", "Window/level"),
    ("Drag a review box or its handles", "Move or resize a reported box (reader review: edited)"),
    ("Left drag in draw mode (D)", "Draw a box the models missed (reader review: added)"),
    ("Drop a folder or file on the window", "Open it"),
)


class SettingsDialog(QtWidgets.QDialog):
    """Edits the settings that are not on the main window (device, models folder, exports, analysis)."""

    def __init__(self, settings: Settings, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        form = QtWidgets.QFormLayout(self)
        self.device = QtWidgets.QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(settings.device)
        self.device.setToolTip("auto: the GPU when CUDA is available, else the CPU")
        form.addRow("Device", self.device)
        row = QtWidgets.QHBoxLayout()
        self.models_dir = QtWidgets.QLineEdit(settings.models_dir)
        self.models_dir.setPlaceholderText("(default folders only)")
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.models_dir, 1)
        row.addWidget(browse)
        form.addRow("Models folder", row)
        self.classifier = QtWidgets.QComboBox()
        self.classifier.setEditable(False)
        for ident, label in vm.classifier_choices(settings.models_dir or None, settings.classifier):
            self.classifier.addItem(label, ident)
        self.classifier.setCurrentIndex(max(0, self.classifier.findData(settings.classifier)))
        self.classifier.setToolTip(
            "The whole-image classifier: its classes appear in the findings panel and findings.csv; its gate "
            "probability P(opacity) removes the boxes when low"
        )
        form.addRow("Classifier", self.classifier)
        self.include_identifiers = QtWidgets.QCheckBox(
            "Include patient identifiers in export file names and CSVs"
        )
        self.include_identifiers.setChecked(settings.include_identifiers_in_exports)
        form.addRow("Exports", self.include_identifiers)
        self.auto_analyse = QtWidgets.QCheckBox("Analyse an image as soon as it is selected")
        self.auto_analyse.setChecked(settings.auto_analyse)
        form.addRow("Analysis", self.auto_analyse)
        self.tta = QtWidgets.QCheckBox("Flip test-time augmentation")
        self.tta.setChecked(settings.tta)
        self.tta.setToolTip(
            "Also analyse the mirrored image and combine both: about twice the model time, slightly better "
            "boxes and P(opacity) (README, 'Flip test-time augmentation')"
        )
        form.addRow("", self.tta)
        self.reader_name = QtWidgets.QLineEdit(settings.reader_name)
        self.reader_name.setPlaceholderText("(asked at the first review decision)")
        form.addRow("Reader name", self.reader_name)
        where = QtWidgets.QLabel(f"Saved in {settings_path()}")
        where.setStyleSheet("color: #aaa;")
        where.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(where)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Models folder", self.models_dir.text())
        if folder:
            self.models_dir.setText(folder)

    def apply_to(self, settings: Settings) -> bool:
        """Copy the dialog's values into ``settings``; returns True when the engine must be reloaded."""
        classifier = self.classifier.currentData() or settings.classifier
        reload = (
            settings.device != self.device.currentText()
            or settings.models_dir != self.models_dir.text()
            or settings.classifier != classifier
            or settings.tta != self.tta.isChecked()
        )
        settings.classifier = classifier
        settings.device = self.device.currentText()
        settings.models_dir = self.models_dir.text().strip()
        settings.include_identifiers_in_exports = self.include_identifiers.isChecked()
        settings.auto_analyse = self.auto_analyse.isChecked()
        settings.tta = self.tta.isChecked()
        settings.reader_name = self.reader_name.text().strip()
        return reload


class ShortcutsDialog(QtWidgets.QDialog):
    """A table of every keyboard shortcut (taken from the window's actions) and the mouse gestures."""

    def __init__(self, shortcuts: Iterable[tuple[str, str]], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = [*shortcuts, *MOUSE_GESTURES]
        table = QtWidgets.QTableWidget(len(rows), 2)
        table.setHorizontalHeaderLabels(["Key / gesture", "Action"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        for r, (key, what) in enumerate(rows):
            table.setItem(r, 0, QtWidgets.QTableWidgetItem(key))
            table.setItem(r, 1, QtWidgets.QTableWidgetItem(what))
        # Keys sized to their text, actions wrapped into the rest: the table never scrolls sideways.
        table.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.setWordWrap(True)
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.table = table
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(table)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(560, 620)


def versions() -> dict[str, str]:
    """Versions of PneumoView and its main libraries; torch only when it is already loaded (never imported here)."""
    # lazy: Qt is loaded only when the viewer starts
    import pyqtgraph

    # lazy: Qt is loaded only when the viewer starts
    import PySide6

    out = {
        "PneumoView": __version__,
        "Python": sys.version.split()[0],
        "Qt": QtCore.qVersion(),
        "PySide6": PySide6.__version__,
        "pyqtgraph": pyqtgraph.__version__,
        "pydicom": pydicom.__version__,
        "numpy": numpy.__version__,
    }
    torch = sys.modules.get("torch")
    out["torch"] = str(torch.__version__) if torch is not None else "not loaded yet"
    return out


def model_cards_html(models_dir: str | None, available: Mapping[str, str | None] | None = None) -> str:
    """HTML model cards from the manifests (no torch): id, task, version, hash, status, intended use,
    limitations and metrics."""
    dirs = models_dirs(models_dir or None)
    try:
        manifest = load_manifest(dirs, check_builders=False)
    except ModelError as exc:
        return f"<p><b>The model manifest cannot be read:</b> {html.escape(str(exc))}</p>"
    folders = "".join(f"<li>{html.escape(str(d))}</li>" for d in dirs)
    if not manifest.models:
        return (
            "<p><b>No models are installed.</b> The viewer works without them (viewing, measuring); analysis "
            f"needs a <code>manifest.toml</code> with weights in one of these folders:</p><ul>{folders}</ul>"
            "<p>Train models with <code>pneumoview train</code> or copy them in (see the README).</p>"
        )
    parts = [f"<p>Models folders, searched in order:</p><ul>{folders}</ul>"]
    for spec in manifest.models.values():
        try:
            status = f"installed ({html.escape(str(find_weights(spec, dirs)))})"
        except ModelError:
            status = "<span style='color:#ff6369'>not installed</span>"
        parts.append(
            f"<h3>{html.escape(spec.id)} <small>v{html.escape(spec.version)} · {spec.task} · "
            f"#{spec.sha256[:12]}</small></h3><p>Status: {status}</p>"
        )
        for title, text in (
            ("Description", spec.description),
            ("Intended use", spec.intended_use),
            ("Limitations", spec.limitations),
        ):
            if text:
                parts.append(f"<p><b>{title}:</b> {html.escape(text)}</p>")
        parts.extend(_card_tail(spec.calibration, spec.metrics, spec.fusion))
    for ens in manifest.ensembles.values():
        members = ", ".join(ens.members)
        parts.append(
            f"<h3>{html.escape(ens.id)} <small>v{html.escape(ens.version)} · ensemble of {html.escape(members)}"
            "</small></h3>"
        )
        for title, text in (
            ("Description", ens.description),
            ("Intended use", ens.intended_use),
            ("Limitations", ens.limitations),
        ):
            if text:
                parts.append(f"<p><b>{title}:</b> {html.escape(text)}</p>")
        parts.extend(_card_tail(ens.calibration, ens.metrics, ens.fusion))
    if available:
        problems = [f"<li>{s}: {html.escape(r)}</li>" for s, r in available.items() if r]
        if problems:
            parts.append("<p><b>Stages that cannot run now:</b></p><ul>" + "".join(problems) + "</ul>")
    return "".join(parts)


def _card_tail(
    calibration: Calibration | None, metrics: Mapping[str, object], fusion: Calibration | None = None
) -> list[str]:
    """A card's calibration and fusion paragraphs and its metrics table (HTML)."""
    parts = []
    for title, cal in (("Calibration", calibration), ("Fusion with the detector", fusion)):
        if cal is not None:
            parts.append(f"<p><b>{title}:</b> {html.escape(cal.describe())}</p>")
    if metrics:
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in metrics.items()
        )
        parts.append(
            f"<table border='0' cellspacing='4'><tr><th align='left'>Metric</th><th>Value</th></tr>{rows}</table>"
        )
    return parts


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class AboutDialog(QtWidgets.QDialog):
    """Versions, the research-use notice and the model cards."""

    def __init__(
        self,
        models_dir: str | None,
        available: Mapping[str, str | None] | None = None,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("About PneumoView")
        rows = "".join(
            f"<tr><td>{k}</td><td><b>{html.escape(v)}</b></td></tr>" for k, v in versions().items()
        )
        self.text = QtWidgets.QTextBrowser()
        self.text.setOpenExternalLinks(False)
        self.text.setHtml(
            f"<h2>PneumoView {__version__}</h2>"
            f"<p style='color:#ff9f1a'><b>{html.escape(RESEARCH_USE_NOTICE)}.</b> The models are research "
            "re-implementations trained on public data; they have not been validated for clinical use.</p>"
            f"<table cellspacing='4'>{rows}</table><h2>Model cards</h2>"
            + model_cards_html(models_dir, available)
        )
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.text)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(700, 640)


def ask_overwrite(parent: QtWidgets.QWidget, paths: Iterable[Path]) -> bool:
    """Ask before replacing existing files; True when the user agrees."""
    names = "\n".join(str(p) for p in paths)
    answer = QtWidgets.QMessageBox.question(
        parent,
        "Replace files?",
        f"These files exist already:\n{names}\n\nReplace them?",
        QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
        QtWidgets.QMessageBox.StandardButton.No,
    )
    return answer == QtWidgets.QMessageBox.StandardButton.Yes
