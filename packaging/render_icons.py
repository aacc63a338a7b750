"""Render the application icon ``resources/pneumoview.svg`` to PNGs and a Windows ``.ico``.

Run from the repository root: ``.venv/bin/python packaging/render_icons.py [--out DIR]``

Writes ``pneumoview-<N>.png`` for N in 16, 32, 48, 64, 128, 256 (each rendered from the SVG at that size with
PySide6's QSvgRenderer, not scaled from a larger bitmap, so small sizes stay sharp) and ``pneumoview.ico`` holding
all of them (Pillow). Needs PySide6 and Pillow; runs without a display (offscreen platform).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SIZES = (16, 32, 48, 64, 128, 256)


def render(svg: Path, out_dir: Path, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    """Render ``svg`` at each size into ``out_dir`` and write the ``.ico``; returns the files written."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer
    from PySide6.QtWidgets import QApplication

    # Painting needs an application object. A QApplication (not a QGuiApplication), so that a process that later
    # shows widgets (the viewer, the GUI tests) can reuse it.
    app = QApplication.instance() or QApplication([])  # noqa: F841
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for n in sizes:
        image = QImage(n, n, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"pneumoview-{n}.png"
        if not image.save(str(path), "PNG"):
            raise SystemExit(f"could not write {path}")
        written.append(path)
    images = [Image.open(p).convert("RGBA") for p in written]
    ico = out_dir / "pneumoview.ico"
    largest = images[-1]
    largest.save(ico, format="ICO", sizes=[im.size for im in images], append_images=images[:-1])
    written.append(ico)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--svg", type=Path, default=RESOURCES / "pneumoview.svg")
    ap.add_argument("--out", type=Path, default=RESOURCES)
    args = ap.parse_args(argv)
    for p in render(args.svg, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
