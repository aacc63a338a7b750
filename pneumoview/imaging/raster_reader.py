"""Read a PNG or JPEG file into an :class:`~pneumoview.types.XrayImage` with Pillow.

8-bit images are shown exactly as stored (window 0..255); 16-bit and float images are shown over their own value
range. Colour images become grey by Rec. 601 luminance (Pillow's ``convert("L")``). Only the first frame of an
animated PNG or a multi-picture JPEG is read, and a JPEG's EXIF orientation is applied so that row 0 is the top of
the picture as its author saw it. PNG/JPEG carry no spacing, view or window, so those are None / empty.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumoview.errors import ImageReadError, ImageTooLargeError
from pneumoview.identity import image_id_for
from pneumoview.imaging.voi import apply_integer_lut, full_range_window, integer_display_lut, to_display
from pneumoview.types import XrayImage

_ID_BYTES = 64 * 1024
_PIL_LIMIT_LOCK = threading.Lock()
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _too_large(path: Path, pixels: int, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        path,
        "pixels",
        f"the image has {pixels / 1e6:.0f} megapixels, more than the limit of {max_pixels / 1e6:.0f} megapixels; "
        "reduce its size in an image editor, or raise the limit if this computer has the memory.",
    )


def read_raster(path: Path, kind: str, max_pixels: int) -> XrayImage:
    """Read ``path`` (``kind`` ``"png"`` or ``"jpeg"``); see :func:`pneumoview.imaging.load_image`."""
    fmt = "PNG" if kind == "png" else "JPEG"
    with path.open("rb") as f:
        head = f.read(_ID_BYTES)
        f.seek(0)
        try:
            im = _open_with_limit(f, fmt, max_pixels)
        except Image.DecompressionBombError as exc:
            pixels = _pixels_in_message(str(exc))
            raise _too_large(path, pixels, max_pixels) from exc
        except (UnidentifiedImageError, SyntaxError, ValueError, OSError) as exc:
            raise ImageReadError(
                path, "header", f"the {fmt} header is damaged ({exc}); copy the file again from its source."
            ) from exc
        with im:
            width, height = im.size
            if width * height > max_pixels:
                raise _too_large(path, width * height, max_pixels)
            frames = int(getattr(im, "n_frames", 1) or 1)
            try:
                im.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise ImageReadError(
                    path,
                    "pixels",
                    f"the {fmt} pixel data could not be decoded ({exc}); the file is truncated or damaged: "
                    "copy it again from its source.",
                ) from exc
            notes: list[str] = []
            pic = im
            if _orientation(im) not in (None, 1):
                pic = ImageOps.exif_transpose(im)
                notes.append("rotated/flipped as the file's EXIF orientation tag asks")
            arr, photometric, bits = _grey_array(pic)
            mode = im.mode
    if frames > 1:
        notes.append(f"multi-frame image: showing frame 1 of {frames}")

    if arr.dtype == np.uint8:
        window = full_range_window(0, 255)
        display = arr if arr.flags.writeable else arr.copy()
    else:
        window = full_range_window(float(arr.min()), float(arr.max()))
        if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2:
            display = apply_integer_lut(integer_display_lut(arr.dtype, window, function="LINEAR_EXACT"), arr)
        else:
            display = to_display(arr, window, function="LINEAR_EXACT")
    modality = arr.astype(np.float32)
    metadata = {
        "Format": fmt,
        "Mode": mode,
        "Rows": str(arr.shape[0]),
        "Columns": str(arr.shape[1]),
        "BitsStored": str(bits),
        "PhotometricInterpretation": photometric,
    }
    if frames > 1:
        metadata["NumberOfFrames"] = str(frames)
    return XrayImage(
        modality=modality,
        display=display,
        window=window,
        windows=(),
        inverted=False,
        spacing_mm=None,
        view=None,
        photometric=photometric,
        source=path,
        image_id=image_id_for(path, content=head),
        metadata=metadata,
        frame_count=frames,
        notes=tuple(notes),
    )


def _open_with_limit(f: BinaryIO, fmt: str, max_pixels: int) -> Image.Image:
    """``Image.open`` with Pillow's decompression-bomb limit set to ``max_pixels`` for this call only.

    The limit is a Pillow global; leaving a caller's small limit in place would break every later Pillow user in
    the process, so it is restored at once, under a lock so that concurrent loads cannot interleave.
    """
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(f, formats=[fmt])
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        return None
    return int(value) if isinstance(value, int) else None


def _grey_array(im: Image.Image) -> tuple[np.ndarray, str, int]:
    """``(array, photometric, bits)``: a 2-D grey array of the picture in its own value range."""
    mode = im.mode
    if mode in _GREY_MODES:
        if mode in ("1", "LA", "La"):
            im = im.convert("L")
        arr = np.asarray(im)
        if arr.dtype.kind == "i" and arr.size and arr.min() >= 0 and arr.max() <= 0xFFFF:
            arr = arr.astype(np.uint16)  # Pillow's mode "I" holds 16-bit PNGs as int32
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        bits = 8 if arr.dtype == np.uint8 else (16 if arr.dtype == np.uint16 else 32)
        return arr, "MONOCHROME2", bits
    if mode not in ("RGB", "RGBA", "RGBX", "P", "PA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: Pillow converts these to L only through RGB
    return np.asarray(im.convert("L")), "RGB", 8


def _pixels_in_message(message: str) -> int:
    m = re.search(r"\((\d+) pixels\)", message)
    return int(m.group(1)) if m else 0
