"""``pneumoview [PATH] [--screenshot FILE] [--device auto|cpu|cuda] [--models-dir DIR]``: start the viewer.

The window is shown first; torch and the models load afterwards in a background worker, so the window appears
quickly. With ``--screenshot FILE`` the viewer opens PATH, analyses its first image, waits for the complete
result, saves a PNG of the whole window and exits (0 on success; 1 with a message on stderr otherwise).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pneumoview import RESEARCH_USE_NOTICE, __version__
from pneumoview.gui.platform_check import startup_problem
from pneumoview.settings import load_settings, save_settings
from pneumoview.types import DEVICES

_T0 = time.perf_counter()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pneumoview",
        description=f"PneumoView {__version__}: chest X-ray viewer with pneumonia models. {RESEARCH_USE_NOTICE}.",
    )
    p.add_argument("path", nargs="?", help="folder, DICOMDIR or image file (DICOM, PNG, JPEG) to open")
    p.add_argument(
        "--screenshot",
        metavar="FILE",
        help="open PATH, analyse its first image, save the window as PNG, exit",
    )
    p.add_argument("--device", choices=DEVICES, help="where the models run (default: the settings)")
    p.add_argument(
        "--models-dir", metavar="DIR", help="a models folder searched first (default: the settings)"
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help=argparse.SUPPRESS
    )  # screenshot time limit (s)
    p.add_argument(
        "--exit-when-shown", action="store_true", help=argparse.SUPPRESS
    )  # for the start-up benchmark
    p.add_argument("--version", action="version", version=f"PneumoView {__version__}")
    return p


def _dark_palette(app) -> None:
    # lazy: Qt is loaded only when the viewer starts
    from PySide6 import QtGui

    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    c = QtGui.QColor
    role = QtGui.QPalette.ColorRole
    for r, colour in (
        (role.Window, c(37, 40, 45)), (role.WindowText, c(225, 228, 232)), (role.Base, c(26, 28, 32)),
        (role.AlternateBase, c(33, 36, 41)), (role.ToolTipBase, c(20, 20, 20)), (role.ToolTipText, c(235, 235, 235)),
        (role.Text, c(225, 228, 232)), (role.Button, c(48, 52, 58)), (role.ButtonText, c(225, 228, 232)),
        (role.Highlight, c(61, 139, 253)), (role.HighlightedText, c(255, 255, 255)), (role.Link, c(94, 161, 255)),
        (role.PlaceholderText, c(130, 135, 140)),
    ):  # fmt: skip
        pal.setColor(r, colour)
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, role.Text, c(120, 120, 120))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, role.ButtonText, c(120, 120, 120))
    app.setPalette(pal)


class ScreenshotRun:
    """Drives ``--screenshot``: waits for the first image's complete result (or for the models to be known absent),
    then saves the window; ``exit_code`` is 0 on success."""

    def __init__(self, window, path: Path, out: Path, timeout_s: float) -> None:
        # lazy: Qt is loaded only when the viewer starts
        from PySide6 import QtCore

        self.window, self.path, self.out = window, path, out
        self.exit_code: int | None = None
        self._shown = self._analysed = False
        window.imageShown.connect(self._on_shown)
        window.analysisFinished.connect(self._on_analysed)
        window.imageFailed.connect(lambda p, msg: self._fail(f"{p}: {msg}"))
        window.engineReady.connect(lambda _info: self._check())
        window.scanFinished.connect(self._on_scan_finished)
        QtCore.QTimer.singleShot(
            int(timeout_s * 1000), lambda: self._fail(f"no complete result after {timeout_s:g} s")
        )

    def _on_shown(self, _path) -> None:
        self._shown = True
        self._check()

    def _on_analysed(self, _path) -> None:
        self._analysed = True
        self._check()

    def _on_scan_finished(self, n_images: int) -> None:
        if n_images == 0:
            self._fail(f"no readable image in {self.path}")

    def _check(self) -> None:
        info = self.window.engine_info
        if self.exit_code is not None or not self._shown or info is None:
            return
        if not info.stages:
            reasons = "; ".join(r for r in info.available.values() if r)
            print(
                f"pneumoview: no model could run ({reasons}); the screenshot shows the image only.",
                file=sys.stderr,
            )
        elif not self._analysed:
            return
        # lazy: Qt is loaded only when the viewer starts
        from PySide6 import QtCore

        self.exit_code = -1  # pending: let the last repaint happen first
        QtCore.QTimer.singleShot(400, self._save)

    def _save(self) -> None:
        # lazy: Qt is loaded only when the viewer starts
        from PySide6 import QtWidgets

        self.out.parent.mkdir(parents=True, exist_ok=True)
        if not self.window.grab().save(str(self.out), "PNG"):
            self._fail(f"cannot write {self.out}")
            return
        print(f"pneumoview: saved {self.out}")
        self.exit_code = 0
        QtWidgets.QApplication.exit(0)

    def _fail(self, message: str) -> None:
        if self.exit_code is not None and self.exit_code >= 0:
            return
        # lazy: Qt is loaded only when the viewer starts
        from PySide6 import QtWidgets

        print(f"pneumoview: screenshot failed: {message}", file=sys.stderr)
        self.exit_code = 1
        QtWidgets.QApplication.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run the viewer; returns the process exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.screenshot and not args.path:
        print("pneumoview: --screenshot needs a PATH to open", file=sys.stderr)
        return 2
    path = Path(args.path).expanduser() if args.path else None
    if path is not None and not path.exists():
        print(f"pneumoview: {path} does not exist", file=sys.stderr)
        return 2

    problem = startup_problem()  # before Qt: a missing system library must not end in Qt's abort (status 134)
    if problem is not None:
        print(f"pneumoview: {problem}", file=sys.stderr)
        return 2

    # lazy: Qt is loaded only when the viewer starts
    import pyqtgraph as pg

    # lazy: Qt is loaded only when the viewer starts
    from PySide6 import QtCore, QtWidgets

    # lazy: Qt is imported only after the platform check, so a missing system library gives a message
    from pneumoview.gui.main_window import MainWindow

    # lazy: pydicom's pixel machinery is not needed for --version or a failed platform check
    from pneumoview.imaging.decoders import decode_jpeg2000_in_worker

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    decode_jpeg2000_in_worker(True)  # a long JPEG 2000 decode must not hold the GUI thread's interpreter lock
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["pneumoview"])
    app.setApplicationName("PneumoView")
    app.setApplicationVersion(__version__)
    _dark_palette(app)
    settings = load_settings()
    window = MainWindow(settings, device=args.device, models_dir=args.models_dir)
    runner = None
    if args.screenshot and path is not None:  # --screenshot without a path was refused above
        window.auto_analyse = True
        runner = ScreenshotRun(window, path, Path(args.screenshot), args.timeout)
    window.show()
    if args.exit_when_shown:
        app.processEvents()
        print(f"PNEUMOVIEW_SHOWN {time.time():.6f} {time.perf_counter() - _T0:.6f}", flush=True)
        return 0
    QtCore.QTimer.singleShot(0, window.start_engine)
    if path is not None:
        window.open_path(path)
    elif not settings.first_run_done:
        window.open_sample()
    if not settings.first_run_done:
        settings.first_run_done = True
        save_settings(settings)
    code = app.exec()
    window.close()
    return int(runner.exit_code if runner is not None and runner.exit_code is not None else code)
