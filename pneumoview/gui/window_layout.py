"""The main window's layout: the canvas and welcome page, the studies and findings docks, the status bar.

Every widget that shows viewer state is given the window's :class:`~pneumoview.viewer_state.ViewerState` to
render from; nothing here keeps a copy of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from pneumoview import RESEARCH_USE_NOTICE
from pneumoview.gui import viewmodel as vm
from pneumoview.gui.canvas import ImageCanvas
from pneumoview.gui.findings_panel import FindingsPanel
from pneumoview.gui.overlays import OverlayControls
from pneumoview.gui.study_browser import StudyBrowser
from pneumoview.gui.threshold_panel import ThresholdPanel
from pneumoview.gui.welcome import WelcomePage

if TYPE_CHECKING:
    from pneumoview.gui.main_window import MainWindow


def build_central(w: MainWindow) -> None:
    """The canvas behind a welcome page (shown until a folder is opened)."""
    w.canvas = ImageCanvas(w.session)
    w.welcome = WelcomePage()
    w.stack = QtWidgets.QStackedWidget()
    w.stack.addWidget(w.welcome)
    w.stack.addWidget(w.canvas)
    w.setCentralWidget(w.stack)


def build_docks(w: MainWindow) -> None:
    """Studies on the left; findings above the Thresholds and Layers tabs on the right."""
    w.browser = StudyBrowser(w.session)
    w.findings_panel = FindingsPanel()
    w.threshold_panel = ThresholdPanel(w.session)
    w.layer_controls = OverlayControls(w.session)
    tabs = QtWidgets.QTabWidget()
    tabs.addTab(w.threshold_panel, "Thresholds")
    tabs.addTab(w.layer_controls, "Layers")
    right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
    # Scrolls rather than squeezing the probability bars and the table when the panel is short.
    findings_scroll = QtWidgets.QScrollArea()
    findings_scroll.setWidgetResizable(True)
    findings_scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
    findings_scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    findings_scroll.setWidget(w.findings_panel)
    right.addWidget(findings_scroll)
    right.addWidget(tabs)
    right.setSizes([540, 330])
    dock(w, "Studies", w.browser, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea)
    dock(w, "Findings", right, QtCore.Qt.DockWidgetArea.RightDockWidgetArea)


def dock(w: QtWidgets.QMainWindow, title: str, widget: QtWidgets.QWidget, area) -> QtWidgets.QDockWidget:
    d = QtWidgets.QDockWidget(title, w)
    d.setObjectName(f"dock-{title.lower()}")
    d.setWidget(widget)
    d.setFeatures(
        QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
        | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
    )
    w.addDockWidget(area, d)
    return d


def build_status_bar(w: MainWindow) -> None:
    """Pixel readout, window, models (and their device) and the research-use notice."""
    bar = w.statusBar()
    w.readout = QtWidgets.QLabel("")
    w.window_label = QtWidgets.QLabel("")
    w.models_label = QtWidgets.QLabel("Models: not loaded")
    w.notice = QtWidgets.QLabel(RESEARCH_USE_NOTICE)
    w.notice.setStyleSheet("color: #ff9f1a; font-weight: bold; padding: 0 6px;")
    bar.addWidget(w.readout, 1)
    for label in (w.window_label, w.models_label, w.notice):
        bar.addPermanentWidget(label)
    w.canvas.pixelHovered.connect(w.readout.setText)
    w.canvas.windowChanged.connect(lambda win: w.window_label.setText(vm.window_text(win)))
    w.canvas.measured.connect(lambda t: w.statusBar().showMessage(f"Length: {t}" if t else "", 0))


def handlers(w: MainWindow) -> dict:
    """The handler of each action key (see :mod:`pneumoview.gui.window_actions`)."""
    c, s = w.canvas, w.session
    return {
        "open_folder": w.open_folder_dialog,
        "open_file": w.open_file_dialog,
        "open_sample": w.open_sample,
        "load_labels": w.load_labels_dialog,
        "info_overlay": w._on_info_overlay,
        "export_current": lambda: w.export_current(),
        "export_study": lambda: w.export_study(),
        "export_dicom": lambda: w.dicom_exporter.ask(),
        "batch": w.show_batch_dialog,
        "settings": w.show_settings_dialog,
        "quit": w.close,
        "fit": c.fit,
        "one_to_one": c.one_to_one,
        "zoom_in": lambda: c.zoom(1.25),
        "zoom_out": lambda: c.zoom(0.8),
        "invert": c.set_inverted,
        "flip_h": lambda on: c.set_flips(on, c.flipped_v),
        "flip_v": lambda on: c.set_flips(c.flipped_h, on),
        "mode_pan": lambda on: c.set_mode("pan") if on else None,
        "mode_window": lambda on: c.set_mode("window") if on else None,
        "mode_measure": lambda on: c.set_mode("measure") if on else None,
        "clear_measure": c.clear_measurement,
        "hide_overlays": s.set_all_hidden,
        "saliency": lambda on: s.set_layer_visible("saliency", on),
        "analyse": w.analyse_current,
        "analyse_study": lambda: w.analyse_paths(w.browser.study_images()),
        "analyse_all": lambda: w.analyse_paths(w.browser.image_paths()),
        "stop": lambda: w._cancel("many"),
        "next_image": lambda: w.browser.select_next(1),
        "previous_image": lambda: w.browser.select_next(-1),
        "shortcuts": w.show_shortcuts,
        "about": w.show_about,
        "preset": c.apply_preset,
    }
