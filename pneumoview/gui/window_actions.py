"""The main window's actions, menus and toolbar, declared as data.

Each action has a key; the window connects handlers by key (``triggered`` for plain actions, ``toggled`` for
checkable ones). The shortcut help dialog is built from these same actions, so it cannot drift from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PySide6 import QtGui, QtWidgets

from pneumoview.gui.icons import icon
from pneumoview.gui.viewmodel import PRESET_TITLES, WINDOW_PRESETS


@dataclass(frozen=True)
class ActionSpec:
    key: str
    text: str
    shortcuts: tuple[str, ...] = ()
    icon: str | None = None
    checkable: bool = False
    tip: str = ""


_SPECS = (
    ActionSpec("open_folder", "&Open folder…", ("Ctrl+O",), "open", tip="Open a folder of DICOM/PNG/JPEG images"),
    ActionSpec("open_file", "Open &file…", ("Ctrl+Shift+O",), tip="Open one image file or a DICOMDIR"),
    ActionSpec("open_sample", "Open &sample study", ("Ctrl+Shift+S",), "sample",
               tip="Open the bundled sample study (six public chest radiographs)"),
    ActionSpec("load_labels", "Load ground-truth &labels…", (),
               tip="Show the radiologists' boxes from an RSNA labels CSV and mark each finding hit or miss"),
    ActionSpec("export_current", "&Export image…", ("Ctrl+E",), "export",
               tip="Annotated PNG at native resolution + findings and submission CSVs of the current image"),
    ActionSpec("export_study", "Export study &CSV…", ("Ctrl+Shift+E",),
               tip="Findings and submission CSVs for every image of the current study"),
    ActionSpec("export_dicom", "Export as &DICOM…", ("Ctrl+Shift+D",),
               tip="DICOM SR, SEG (and optionally GSPS) of the current image or study, in the source's study"),
    ActionSpec("batch", "&Batch process directory…", ("Ctrl+B",), "batch"),
    ActionSpec("settings", "Se&ttings…", ("Ctrl+,",), "settings"),
    ActionSpec("quit", "&Quit", ("Ctrl+Q",)),
    ActionSpec("fit", "&Fit to window", ("F",), "fit"),
    ActionSpec("one_to_one", "&1:1 pixels", ("1",), "one-to-one"),
    ActionSpec("zoom_in", "Zoom &in", ("+", "=")),
    ActionSpec("zoom_out", "Zoom &out", ("-",)),
    ActionSpec("invert", "&Invert grey scale", ("I",), "invert", checkable=True),
    ActionSpec("flip_h", "Flip &horizontally", ("H",), "flip-h", checkable=True),
    ActionSpec("flip_v", "Flip &vertically", ("V",), "flip-v", checkable=True),
    ActionSpec("mode_pan", "&Pan mode", ("P",), checkable=True, tip="Left drag pans"),
    ActionSpec("mode_window", "&Window/level mode", ("W",), "window-level", checkable=True,
               tip="Left drag sets the window (right drag always does)"),
    ActionSpec("mode_measure", "&Measure mode", ("M",), "measure", checkable=True,
               tip="Left drag measures a length (mm when the pixel spacing is known)"),
    ActionSpec("clear_measure", "Clear measurement", ("Esc",)),
    ActionSpec("hide_overlays", "Hide all &overlays", ("O",), "overlays", checkable=True,
               tip="Hide or show every overlay at once"),
    ActionSpec("saliency", "Classifier &Grad-CAM", ("G",), "saliency", checkable=True,
               tip="Show which regions raised the classifier's P(opacity)"),
    ActionSpec("info_overlay", "Patient &info on the image", ("T",), checkable=True,
               tip="View position, age, sex and study date in the image corner (never in exports)"),
    ActionSpec("analyse", "&Analyse image", ("Ctrl+R",), "analyse"),
    ActionSpec("analyse_study", "Analyse &study", ("Ctrl+Shift+R",)),
    ActionSpec("analyse_all", "Analyse a&ll", ()),
    ActionSpec("stop", "S&top background analysis", ()),
    ActionSpec("next_image", "&Next image", ("PgDown", "N")),
    ActionSpec("previous_image", "&Previous image", ("PgUp", "B")),
    ActionSpec("shortcuts", "&Keyboard shortcuts", ("F1", "?"), "help"),
    ActionSpec("about", "&About PneumoView and the models", ()),
)  # fmt: skip

_MENUS = (
    ("&File", ("open_folder", "open_file", "open_sample", "@recent", "load_labels", None, "export_current",
               "export_study", "export_dicom", None,
               "batch", None, "settings", None, "quit")),
    ("&View", ("fit", "one_to_one", "zoom_in", "zoom_out", None, "@presets", "invert", "flip_h", "flip_v", None,
               "mode_pan", "mode_window", "mode_measure", "clear_measure", None, "hide_overlays", "saliency",
               "info_overlay")),
    ("&Analysis", ("analyse", "analyse_study", "analyse_all", "stop", None, "next_image", "previous_image")),
    ("&Help", ("shortcuts", "about")),
)  # fmt: skip
_TOOLBAR = ("open_folder", "open_sample", None, "analyse", "export_current", "batch", None, "fit", "one_to_one",
            "invert", "mode_window", "mode_measure", "hide_overlays", "saliency", None, "settings", "shortcuts")  # fmt: skip


def build_actions(
    window: QtWidgets.QMainWindow, handlers: Mapping[str, Callable]
) -> dict[str, QtGui.QAction]:
    """Create every action, connect its handler (if any) and add it to ``window`` so its shortcut works."""
    actions: dict[str, QtGui.QAction] = {}
    for spec in _SPECS:
        a = QtGui.QAction(spec.text, window)
        if spec.icon:
            a.setIcon(icon(spec.icon))
        if spec.shortcuts:
            a.setShortcuts([QtGui.QKeySequence(s) for s in spec.shortcuts])
        a.setCheckable(spec.checkable)
        tip = spec.tip or spec.text.replace("&", "").rstrip("…")
        if spec.shortcuts:
            tip += f" ({spec.shortcuts[0]})"
        a.setToolTip(tip)
        a.setStatusTip(tip)
        handler = handlers.get(spec.key)
        if handler is not None:
            (a.toggled if spec.checkable else a.triggered).connect(handler)
        window.addAction(a)
        actions[spec.key] = a
    group = QtGui.QActionGroup(window)
    for key in ("mode_pan", "mode_window", "mode_measure"):
        group.addAction(actions[key])
    actions["mode_pan"].setChecked(True)
    for i, name in enumerate(WINDOW_PRESETS, start=1):
        a = QtGui.QAction(f"Window: {PRESET_TITLES[name]}", window)
        a.setShortcut(QtGui.QKeySequence(f"Ctrl+{i}"))
        if "preset" in handlers:
            a.triggered.connect(lambda _=False, n=name: handlers["preset"](n))
        window.addAction(a)
        actions[f"preset_{name}"] = a
    return actions


def build_menus(window: QtWidgets.QMainWindow, actions: Mapping[str, QtGui.QAction]) -> QtWidgets.QMenu:
    """Fill the menu bar; returns the (empty) recent-folders menu for the window to fill."""
    recent = QtWidgets.QMenu("Open &recent", window)
    for title, keys in _MENUS:
        menu = window.menuBar().addMenu(title)
        for key in keys:
            if key is None:
                menu.addSeparator()
            elif key == "@recent":
                menu.addMenu(recent)
            elif key == "@presets":
                sub = menu.addMenu("Window &presets")
                for name in WINDOW_PRESETS:
                    sub.addAction(actions[f"preset_{name}"])
            else:
                menu.addAction(actions[key])
    return recent


def build_toolbar(window: QtWidgets.QMainWindow, actions: Mapping[str, QtGui.QAction]) -> QtWidgets.QToolBar:
    bar = window.addToolBar("Main")
    bar.setObjectName("main-toolbar")
    bar.setMovable(False)
    for key in _TOOLBAR:
        if key is None:
            bar.addSeparator()
        else:
            bar.addAction(actions[key])
    return bar


def shortcut_rows(actions: Mapping[str, QtGui.QAction]) -> list[tuple[str, str]]:
    """``(keys, action)`` for every action that has a shortcut, in menu order."""
    rows = []
    for a in actions.values():
        keys = [k.toString(QtGui.QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts()]
        if keys:
            rows.append((" or ".join(keys), a.text().replace("&", "").rstrip("…")))
    return rows
