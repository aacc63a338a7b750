"""First pixels of a large JPEG 2000 image from a reduced-resolution decode, then the full image in its place.

The loading job (:func:`load_steps`, run by :func:`pneumoview.gui.workers.analyse_job`) yields the reduced image
of :func:`pneumoview.imaging.progressive.load_progressive` first and then the full image; only the full image goes
to the session, the models and the exports. :class:`ProgressiveDisplay` shows the reduced image on the canvas over
the full-resolution frame and swaps the full pixels in without touching the zoom, pan or the user's window.

Why the job waits for the preview to be painted: the JPEG 2000 decoders hold the GIL for the whole decode (about
0.6 s for a 2048² lossless frame), so a full decode started at once would keep the GUI thread from drawing the
preview until the full image is there anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from PySide6 import QtCore

from pneumoview.gui.canvas import ImageCanvas
from pneumoview.imaging.progressive import ReducedImage, load_progressive
from pneumoview.types import XrayImage

__all__ = ["ProgressiveDisplay", "load_steps"]

#: The longest the loading job waits for the GUI to paint a preview before it decodes the full image anyway.
PAINT_WAIT_S = 1.0


def load_steps(
    path: Path, cancelled: Callable[[], bool], preview: bool = True
) -> Generator[tuple[Any, ...], None, XrayImage | None]:
    """Load ``path`` for the viewer (no Qt here: this runs in a worker thread).

    Yields ``("preview", ReducedImage, painted)`` for a large JPEG 2000 image when ``preview`` is on, then waits
    until the GUI sets the ``painted`` event (or :data:`PAINT_WAIT_S`, or a cancel); then yields ``("image",
    XrayImage)`` and returns that full image. Returns None without the full decode when cancelled after the
    preview (the reader has moved on). Raises :class:`~pneumoview.errors.ImageReadError` like
    :func:`~pneumoview.imaging.load_image`.
    """
    if not preview:
        from pneumoview.imaging import load_image

        image = load_image(path)
        yield ("image", image)
        return image
    steps = load_progressive(path)
    for step in steps:
        if not isinstance(step, ReducedImage):
            yield ("image", step)
            return step
        painted = threading.Event()
        yield ("preview", step, painted)
        deadline = time.monotonic() + PAINT_WAIT_S
        while not painted.wait(0.01) and not cancelled() and time.monotonic() < deadline:
            pass
        if cancelled():
            return None
    raise AssertionError("load_progressive ended without the full image")  # pragma: no cover


class ProgressiveDisplay(QtCore.QObject):
    """Shows a preview on ``canvas`` and the full image in its place.

    Attributes:
        enabled: when False the viewer decodes every image in full before showing it (for the benchmark).

    Signals:
        previewShown(Path): a preview of the current image is painted on the canvas.
    """

    previewShown = QtCore.Signal(object)

    def __init__(self, canvas: ImageCanvas) -> None:
        super().__init__(canvas)
        self.canvas = canvas
        self.enabled = True
        self.preview: ReducedImage | None = None

    def show_preview(self, path: Path | None, preview: ReducedImage, painted: threading.Event) -> None:
        """Paint ``preview`` now (before the event loop runs again), tell the listeners, then the loading job."""
        self.preview = preview
        self.canvas.set_image(preview.image, factor=preview.factor)
        self.canvas.viewport().repaint()
        self.previewShown.emit(path)
        painted.set()  # last: once the full decode starts, this thread waits for the GIL until it ends

    def show_image(self, image: XrayImage) -> None:
        """Show a full image: in place of its preview when that is on the canvas, else afresh (fitted)."""
        preview, self.preview = self.preview, None
        if (
            preview is not None
            and self.canvas.image is preview.image
            and preview.image.source == image.source
        ):
            self.canvas.swap_image(image)
        else:
            self.canvas.set_image(image)
