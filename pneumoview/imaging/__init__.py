"""Read radiographs from DICOM, PNG and JPEG files into :class:`~pneumoview.types.XrayImage`.

``load_image`` is the one entry point; ``sniff_kind`` and ``SUPPORTED_SUFFIXES`` serve folder scanners and file
dialogs, ``decoder_plugins`` reports which pixel-data decoders are installed. Nothing here imports Qt or torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from pneumoview.errors import ImageReadError, ImageTooLargeError
from pneumoview.imaging.decoders import decoder_plugins
from pneumoview.imaging.dicom_reader import read_dicom
from pneumoview.imaging.raster_reader import read_raster
from pneumoview.imaging.sniff import (
    DESCRIBE_BYTES,
    SUPPORTED_SUFFIXES,
    ImageKind,
    describe_unknown,
    sniff_bytes,
    sniff_kind,
)
from pneumoview.types import XrayImage

DEFAULT_MAX_PIXELS = 80_000_000

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageKind",
    "decoder_plugins",
    "load_image",
    "sniff_kind",
]


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> XrayImage:
    """Read one radiograph (frame 1 of a DICOM file, or a PNG/JPEG file) for display and analysis.

    The kind of file is told from its content, not its suffix. The input file is only read.

    Args:
        path: the file.
        max_pixels: refuse images with more than this many pixels (rows × columns × frames for DICOM), checked
            from the header before any pixel data is decoded.

    Returns:
        an :class:`~pneumoview.types.XrayImage`: ``modality`` float32 in the file's units, ``display`` uint8
        windowed (and inverted for MONOCHROME1), spacing in mm as ``(row, col)``, see its docstring.

    Raises:
        ImageReadError: with ``stage == "header"`` when the file is missing, unreadable or not DICOM/PNG/JPEG, and
            ``stage == "pixels"`` when its pixel data cannot be used; the subclasses ``NotAnImageError`` (a DICOM
            object without an image), ``UnsupportedTransferSyntaxError`` (no installed decoder) and
            ``ImageTooLargeError`` say more. No other exception escapes.
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise ImageReadError(p, "header", "this is a folder, not an image file; open a file inside it.")
        if not p.exists():
            raise ImageReadError(p, "header", "the file does not exist; check the path.")
        with p.open("rb") as f:
            head = f.read(DESCRIBE_BYTES)
        kind = sniff_bytes(head, p.stat().st_size)
        if kind is None:
            raise ImageReadError(p, "header", describe_unknown(head, p.name))
        if kind == "dicom":
            return read_dicom(p, max_pixels)
        return read_raster(p, kind, max_pixels)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError(
            p, "pixels", "there was not enough memory to read this image; close other programs and try again."
        ) from exc
    except OSError as exc:
        raise ImageReadError(
            p, "header", f"the file could not be read ({exc.strerror or exc}); check that you may read it."
        ) from exc
    except Exception as exc:
        detail = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}").strip()[:200]
        raise ImageReadError(
            p, "pixels", f"the image could not be read ({detail}); the file may be damaged: copy it again."
        ) from exc
