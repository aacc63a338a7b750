"""The page shown before anything is opened: open a folder, or the bundled sample study in one click."""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from pneumoview import RESEARCH_USE_NOTICE
from pneumoview.gui.icons import icon


class WelcomePage(QtWidgets.QWidget):
    """Two big buttons (``open_button``, ``sample_button``) and a drop hint; the window connects them."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addStretch(1)
        title = QtWidgets.QLabel(
            "<h1>PneumoView</h1><p>Chest X-ray viewer with pneumonia models.</p>"
            f"<p style='color:#ff9f1a'><b>{RESEARCH_USE_NOTICE}</b></p>"
        )
        title.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(title)
        row = QtWidgets.QHBoxLayout()
        row.addStretch(1)
        self.open_button = QtWidgets.QPushButton(icon("open"), "Open folder…")
        self.sample_button = QtWidgets.QPushButton(icon("sample"), "Open the sample study")
        for b in (self.open_button, self.sample_button):
            b.setMinimumHeight(40)
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        hint = QtWidgets.QLabel("…or drop a folder, a DICOMDIR or an image file here.")
        hint.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        hint.setStyleSheet("color: #aaa;")
        layout.addWidget(hint)
        layout.addStretch(2)
