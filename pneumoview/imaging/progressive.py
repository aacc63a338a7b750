"""Load an image in two steps: a reduced-resolution first look at a large JPEG 2000 radiograph, then the full image.

:func:`load_progressive` reads the file once. For a grey JPEG 2000 DICOM frame larger than
:data:`~pneumoview.imaging.j2k_reduce.MIN_SIDE` it first yields a :class:`ReducedImage` (decoded at 1/4 or less
of the size in each direction, through the same Modality LUT, VOI and photometric steps as the full image), then
the full-resolution :class:`~pneumoview.types.XrayImage`; for every other file it yields the full image only, as
:func:`~pneumoview.imaging.load_image` returns it. A reduced decode that fails is skipped silently: the full decode
reports what is wrong with the file.

A reduced image is for display only: models, exports and measurements use the full-resolution image.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from pneumoview.imaging import DEFAULT_MAX_PIXELS, load_image
from pneumoview.imaging.dicom_reader import dicom_image, open_dicom
from pneumoview.imaging.j2k_reduce import preview_reduction
from pneumoview.imaging.sniff import DESCRIBE_BYTES, sniff_bytes
from pneumoview.types import XrayImage

__all__ = ["ReducedImage", "load_progressive"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ReducedImage:
    """A reduced-resolution decode of a radiograph, standing in for it until the full image is decoded.

    Coordinates: continuous pixel coordinates ``(x, y)`` with ``(0, 0)`` at the top-left corner of the top-left
    pixel (pixel ``i`` spans ``[i, i + 1)``, its centre is ``i + 0.5``). Reduced pixel ``(r, c)`` is the wavelet
    low-pass sample centred on full-resolution pixel ``(r * factor, c * factor)`` (not on the middle of the
    ``factor`` × ``factor`` block), so a point ``(x, y)`` of ``image`` is the point
    ``(x * factor - (factor - 1) / 2, y * factor - (factor - 1) / 2)`` of the full-resolution frame
    (:meth:`to_full`). ``image.shape == ceil(full_shape / factor)``.

    Attributes:
        image: the reduced pixels with the full image's conventions (``modality`` in file units, ``display``
            windowed, the file's windows); its ``spacing_mm`` is the size of a reduced pixel (the file's spacing
            × ``factor``); its ``metadata`` is the file's (Rows, Columns and PixelSpacing of the full image).
        factor: full-resolution pixels per reduced pixel along each axis (a power of two).
        full_shape: ``(rows, cols)`` of the full-resolution image.
    """

    image: XrayImage
    factor: int
    full_shape: tuple[int, int]

    @property
    def offset(self) -> float:
        """Where the reduced image's top-left corner lies in the full frame, in full pixels (each axis):
        ``-(factor - 1) / 2``."""
        return -(self.factor - 1) / 2.0

    def to_full(self, x: float, y: float) -> tuple[float, float]:
        """A point of the reduced image in the full-resolution frame (both in pixels, see the class docstring)."""
        return x * self.factor + self.offset, y * self.factor + self.offset

    def from_full(self, x: float, y: float) -> tuple[float, float]:
        """A point of the full-resolution frame in the reduced image (pixels)."""
        return (x - self.offset) / self.factor, (y - self.offset) / self.factor


def load_progressive(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Generator[ReducedImage | XrayImage, None, XrayImage]:
    """Yield a :class:`ReducedImage` first when ``path`` is a large grey JPEG 2000 DICOM, then the full image.

    The full image is also the generator's return value. Raises what :func:`~pneumoview.imaging.load_image`
    raises (:class:`~pneumoview.errors.ImageReadError` and its subclasses) for files it cannot read.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            is_dicom = sniff_bytes(f.read(DESCRIBE_BYTES), p.stat().st_size) == "dicom"
    except OSError:
        is_dicom = False
    if not is_dicom:
        image = load_image(p, max_pixels=max_pixels)  # its errors are the ones to report
        yield image
        return image
    ds, notes = open_dicom(p, max_pixels)
    reduce = preview_reduction(ds)
    if reduce:
        try:
            reduced = dicom_image(ds, p, max_pixels, list(notes), reduce=reduce)
        except Exception as exc:  # noqa: BLE001 - the full decode below reports what is wrong with the file
            log.debug("no reduced-resolution decode of %s: %s", p, exc)
        else:
            rows, cols = int(ds.Rows), int(ds.Columns)
            yield ReducedImage(reduced, 2**reduce, (rows, cols))
    image = dicom_image(ds, p, max_pixels, notes)
    yield image
    return image
