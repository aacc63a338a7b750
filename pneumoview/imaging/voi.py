"""Value-of-interest (VOI) mapping: modality values → 8-bit display values.

Follows DICOM PS3.3 C.11.2.1.2: ``LINEAR`` and ``SIGMOID`` as defined there for the windows a file carries, and
``LINEAR_EXACT`` for the full-range windows PneumoView makes up, so that ``window.low`` maps to 0 and
``window.high`` to 255 exactly, the same as pyqtgraph levels ``(low, high)`` on the ``modality`` array.
All functions are pure numpy and work on any array shape.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pneumoview.types import Window

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
VOI_FUNCTIONS: tuple[VoiFunction, ...] = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

#: The window of 8-bit data shown as is (``display == stored value`` with ``LINEAR_EXACT``).
EIGHT_BIT_WINDOW = Window(center=127.5, width=255.0)


def full_range_window(low: float, high: float) -> Window:
    """The window spanning ``low..high`` (modality units), for use with ``LINEAR_EXACT``.

    A constant image (``low == high``) gets a width of 1 so that the mapping stays defined.
    """
    low, high = float(low), float(high)
    if not high > low:
        return Window(center=low, width=1.0)
    return Window(center=(low + high) / 2.0, width=high - low)


def to_display(
    values: np.ndarray, window: Window, *, function: VoiFunction = "LINEAR", invert: bool = False
) -> np.ndarray:
    """Map modality values to uint8 display values through ``window``.

    Args:
        values: any numeric array, in modality units.
        window: centre and width in modality units.
        function: the DICOM VOI LUT Function.
        invert: show low values bright (MONOCHROME1 / Presentation LUT Shape INVERSE).

    Returns:
        a new uint8 array of the same shape (0 = black, 255 = white).
    """
    c, w = float(window.center), float(window.width)
    out = np.empty(values.shape, dtype=np.float32)
    if function == "SIGMOID":
        np.subtract(values, c, out=out)
        out *= -4.0 / max(w, 1e-6)
        np.clip(out, -80.0, 80.0, out=out)  # exp(80) fits float32; the result is 0 or 255 either way
        np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
    elif function == "LINEAR_EXACT":
        if w <= 0:
            np.greater(values, c, out=out)
        else:
            np.subtract(values, c, out=out)
            out *= 1.0 / w
            out += 0.5
    else:  # LINEAR: PS3.3 C.11.2.1.2.1 requires width >= 1; a narrower window is a threshold
        if w <= 1:
            np.greater(values, c - 0.5, out=out)
        else:
            np.subtract(values, c - 0.5, out=out)
            out *= 1.0 / (w - 1.0)
            out += 0.5
    np.clip(out, 0.0, 1.0, out=out)
    out *= 255.0
    if invert:
        np.subtract(255.0, out, out=out)
    np.rint(out, out=out)
    return out.astype(np.uint8)


def integer_display_lut(
    dtype: np.dtype,
    window: Window,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    function: VoiFunction = "LINEAR",
    invert: bool = False,
) -> np.ndarray:
    """A uint8 lookup table for every code of an 8- or 16-bit integer ``dtype``.

    Entry ``i`` is the display value of the stored code whose bit pattern, read as unsigned, is ``i``; index it
    with :func:`lut_index`. Folding the rescale, the window and the inversion into one table makes the per-pixel
    work a single gather, which matters for 2–4 megapixel radiographs.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        raise ValueError(f"integer_display_lut needs an 8- or 16-bit integer dtype, not {dtype}")
    unsigned = np.dtype(f"u{dtype.itemsize}")
    codes = (
        np.arange(2 ** (8 * dtype.itemsize), dtype=np.int64).astype(unsigned).view(dtype.newbyteorder("="))
    )
    values = codes.astype(np.float64) * slope + intercept
    return to_display(values, window, function=function, invert=invert)


def lut_index(arr: np.ndarray) -> np.ndarray:
    """``arr`` viewed as the unsigned integers :func:`integer_display_lut` tables are indexed by (no copy)."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr.view(f"u{arr.dtype.itemsize}")


_LUT_CHUNK = 1 << 18  # pixels per gather


def apply_integer_lut(table: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """``table[lut_index(arr)]`` as a new array of ``table``'s dtype, in the shape of ``arr``.

    numpy converts gather indices to int64 first; done in one go that is a temporary 8× the size of an 8-bit
    image (29 MB for a 1955×1841 radiograph), so the gather runs in chunks of 256 Ki pixels.
    """
    idx = lut_index(arr).reshape(-1)
    out = np.empty(idx.shape, dtype=table.dtype)
    for start in range(0, idx.size, _LUT_CHUNK):
        np.take(table, idx[start : start + _LUT_CHUNK], out=out[start : start + _LUT_CHUNK])
    return out.reshape(arr.shape)


def apply_lut_table(
    values: np.ndarray, table: np.ndarray, first_mapped: int, out_max: int, *, invert: bool = False
) -> np.ndarray:
    """Apply a DICOM VOI LUT (``table`` of LUT Data, ``first_mapped`` from the LUT Descriptor) → uint8.

    Values below the first mapped value take the first entry and values past the end take the last
    (PS3.3 C.11.2.1.1). ``out_max`` is the largest possible LUT output, which becomes 255.
    """
    idx = np.rint(values).astype(np.int64)
    idx -= int(first_mapped)
    np.clip(idx, 0, len(table) - 1, out=idx)
    scaled = (table.astype(np.float32) * (255.0 / max(out_max, 1))).clip(0.0, 255.0)
    if invert:
        scaled = 255.0 - scaled
    lut8 = np.rint(scaled).astype(np.uint8)
    return lut8[idx]
