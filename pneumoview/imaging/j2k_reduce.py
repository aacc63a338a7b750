"""Reduced-resolution decoding of JPEG 2000 pixel data, for a quick first look at a large radiograph.

A JPEG 2000 codestream stores its image as a wavelet pyramid: decoding only the coarser levels gives the image at
1/2, 1/4, 1/8 … of its size in each direction, for a fraction of the time of the full decode (a 2048² lossless CR:
about 40 ms at 1/4 against 650 ms in full, on the development machine). pylibjpeg-openjpeg, the decoder PneumoView
prefers for JPEG 2000, has no such option; Pillow's OpenJPEG binding has (``Image.reduce``), so the reduced decode
uses Pillow. Only grey (one sample per pixel) data of up to 16 bits qualifies.

HTJ2K is not offered a reduced decode yet: no HTJ2K test file was at hand to check Pillow's result against.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from pneumoview.imaging.decoders import codestream_size

#: Transfer syntaxes that get a reduced-resolution first decode.
REDUCIBLE_SYNTAXES = frozenset({dcm_uid.JPEG2000Lossless, dcm_uid.JPEG2000})
#: Images whose larger side is at most this many pixels decode fast enough in full and get no reduced decode.
MIN_SIDE = 1024
#: The reduced decode is the smallest reduction whose larger side is at most this many pixels.
PREVIEW_SIDE = 640

_SOC_SIZ = b"\xff\x4f\xff\x51"
_COD, _SOT = 0xFF52, 0xFF90


def _main_header(frame: bytes) -> dict[int, int]:
    """Marker → offset of each marker segment in the codestream's main header (up to the first tile-part)."""
    out: dict[int, int] = {}
    pos = 2  # after SOC
    while pos + 4 <= len(frame):
        (marker, length) = struct.unpack_from(">HH", frame, pos)
        if marker == _SOT or marker >> 8 != 0xFF or length < 2:
            break
        out.setdefault(marker, pos)
        pos += 2 + length
    return out


def codestream_levels(frame: bytes) -> tuple[int, int, bool, int] | None:
    """``(components, precision in bits, signed, wavelet decomposition levels)`` from a JPEG 2000 codestream's
    SIZ and COD segments (ITU-T T.800 A.5.1, A.6.1), or None when they are missing or malformed."""
    if not frame.startswith(_SOC_SIZ):
        return None
    segments = _main_header(frame)
    cod = segments.get(_COD)
    if cod is None or cod + 10 > len(frame) or len(frame) < 46:
        return None
    (components,) = struct.unpack_from(">H", frame, 40)
    ssiz = frame[42]
    return components, (ssiz & 0x7F) + 1, bool(ssiz & 0x80), frame[cod + 9]


def first_frame_bytes(ds: Dataset) -> bytes:
    """The encapsulated codestream of frame 1 of ``ds``."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return next(generate_frames(ds.PixelData, number_of_frames=frames))


def _pillow_j2k() -> bool:
    from PIL import features

    return bool(features.check("jpg_2000"))


def preview_reduction(ds: Dataset) -> int:
    """How many resolution levels a first decode of ``ds`` should drop (0: decode it in full only).

    Non-zero only for grey JPEG 2000 frames (:data:`REDUCIBLE_SYNTAXES`) larger than :data:`MIN_SIDE` whose
    codestream agrees with the header's Rows × Columns, when Pillow reads JPEG 2000. Never raises.
    """
    try:
        if dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID)) not in REDUCIBLE_SYNTAXES:
            return 0
        rows, cols = int(ds.Rows), int(ds.Columns)
        if max(rows, cols) <= MIN_SIDE or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            return 0
        frame = first_frame_bytes(ds)
        info = codestream_levels(frame)
        if info is None or codestream_size(frame) != (cols, rows) or not _pillow_j2k():
            return 0
    except Exception:  # noqa: BLE001 - no preview; the full decode reports what is wrong with the file
        return 0
    components, precision, _signed, levels = info
    if components != 1 or precision > 16 or frame[16:24] != bytes(8):  # one grey component, no image offset
        return 0
    reduce = 0
    while reduce < levels and _reduced_side(max(rows, cols), reduce) > PREVIEW_SIDE:
        reduce += 1
    return reduce


def _reduced_side(side: int, reduce: int) -> int:
    """OpenJPEG's size of a side at ``reduce`` levels down (ITU-T T.800 B.5, image offset 0)."""
    return -(-side // 2**reduce)


def _pillow_size_ok(side: int, reduce: int) -> bool:
    """Pillow (up to 13 at least) sizes a reduced image by rounding, ``(side + 2**(reduce-1)) // 2**reduce``,
    where OpenJPEG rounds up; where the two differ Pillow refuses the data ("broken data stream")."""
    return (side + 2 ** (reduce - 1)) // 2**reduce == _reduced_side(side, reduce)


def _set_reduce(im: Any, reduce: int) -> None:
    """Ask Pillow's JPEG 2000 image ``im`` (opened, not loaded) for ``reduce`` levels down.

    Where Pillow's rounding of the size is wrong (:func:`_pillow_size_ok`: about one size in four at 1/4), the
    size and the decoder arguments are set here instead, the way Pillow's ``Jpeg2KImageFile.load`` sets them
    (``args`` = codec, reduce, layers, fd, length). If a later Pillow changes those internals the decode fails,
    and the viewer shows the full image only.
    """
    cols, rows = im.size
    if _pillow_size_ok(rows, reduce) and _pillow_size_ok(cols, reduce):
        im.reduce = reduce
        return
    size = (_reduced_side(cols, reduce), _reduced_side(rows, reduce))
    (tile,) = im.tile
    codec, _old_reduce, _layers, fd, length = tile[3]
    args = (codec, reduce, im.layers, fd, length)
    extents = (0, 0, *size)
    im._size = size
    # Pillow 11+ tiles are named tuples; earlier ones plain tuples (codec name, extents, offset, args).
    im.tile = [
        tile._replace(extents=extents, args=args)
        if hasattr(tile, "_replace")
        else (tile[0], extents, tile[2], args)
    ]


def decode_reduced(ds: Dataset, reduce: int) -> tuple[np.ndarray, dict[str, Any], str]:
    """Decode frame 1 of ``ds`` at ``1 / 2**reduce`` of its size in each direction.

    Returns ``(array, pixel_properties, plugin)`` like :func:`pneumoview.imaging.decoders.decode_first_frame`:
    ``array`` is ``(ceil(rows / 2**reduce), ceil(cols / 2**reduce))`` holding the stored values (the wavelet's
    low-pass band, on the same scale as the full-resolution values), its dtype that of the full decode. Reduced
    pixel ``(r, c)`` is centred on full-resolution pixel ``(r * 2**reduce, c * 2**reduce)``. Raises whatever Pillow
    raises on bad data.
    """
    from PIL import Image

    frame = first_frame_bytes(ds)
    info = codestream_levels(frame)
    if info is None:
        raise ValueError("not a JPEG 2000 codestream")
    _components, precision, signed, _levels = info
    with Image.open(io.BytesIO(frame), formats=("JPEG2000",)) as im:
        _set_reduce(im, reduce)
        im.load()
        arr = np.array(im)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if arr.shape != (_reduced_side(rows, reduce), _reduced_side(cols, reduce)):
        raise ValueError(f"the reduced decode is {arr.shape}, not the expected size")
    # Pillow returns N-bit data as unsigned 8- or 16-bit, scaled up and offset for signed samples (Pillow's
    # Jpeg2KDecode.c j2ku_gray_i); undo both as pydicom's Pillow plugin does, then store the values in the dtype
    # the full decode gives (Bits Allocated, Pixel Representation).
    container = 8 * arr.dtype.itemsize
    values = arr.astype(np.int32)
    if signed:
        values -= 2 ** (container - 1)
    if container > precision:
        values >>= container - precision
    bits = 8 if int(ds.get("BitsAllocated", container) or container) <= 8 else 16
    dtype = np.dtype(f"{'i' if int(ds.get('PixelRepresentation', 0) or 0) == 1 else 'u'}{bits // 8}")
    stored = values.astype(dtype)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip()
    return stored, {"photometric_interpretation": photometric}, "pillow"
