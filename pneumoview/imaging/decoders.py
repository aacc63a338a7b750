"""Which pixel-data decoder plugin PneumoView asks pydicom to use, and a report of the installed ones.

pydicom tries its plugins in registration order (GDCM first for every compressed syntax). PneumoView picks per
transfer syntax instead: Pillow for JPEG baseline (about 5× faster than GDCM on a 1024² radiograph),
pylibjpeg-openjpeg for JPEG 2000, pyjpegls for JPEG-LS, GDCM for JPEG extended/lossless, and falls back to any other
installed plugin when the preferred one fails. pylibjpeg-libjpeg is GPL-licensed and is neither a dependency nor
preferred; pydicom only reaches it if a user installs it.
"""

from __future__ import annotations

import re
import struct
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

from pneumoview.errors import ImageReadError, UnsupportedTransferSyntaxError
from pneumoview.imaging.isolated import decode_isolated, warm_worker_in_background

_J2K = (dcm_uid.JPEG2000Lossless, dcm_uid.JPEG2000)
_HTJ2K = (dcm_uid.HTJ2KLossless, dcm_uid.HTJ2KLosslessRPCL, dcm_uid.HTJ2K)
_JPEG_LS = (dcm_uid.JPEGLSLossless, dcm_uid.JPEGLSNearLossless)
_JPEG_LOSSLESS = (dcm_uid.JPEGLossless, dcm_uid.JPEGLosslessSV1)
_NATIVE = (
    dcm_uid.ImplicitVRLittleEndian,
    dcm_uid.ExplicitVRLittleEndian,
    dcm_uid.DeflatedExplicitVRLittleEndian,
    dcm_uid.ExplicitVRBigEndian,
)

# pydicom plugin names in the order PneumoView tries them.
_PREFERRED: dict[str, tuple[str, ...]] = {
    dcm_uid.JPEGBaseline8Bit: ("pillow", "gdcm"),
    dcm_uid.JPEGExtended12Bit: ("gdcm", "pillow"),
    **{ts: ("gdcm",) for ts in _JPEG_LOSSLESS},
    **{ts: ("pyjpegls", "gdcm") for ts in _JPEG_LS},
    **{ts: ("pylibjpeg", "gdcm", "pillow") for ts in _J2K},
    **{ts: ("pylibjpeg",) for ts in _HTJ2K},
    dcm_uid.RLELossless: ("pydicom", "gdcm"),
}

# The package a user should install to read a syntax none of the installed plugins reads.
_INSTALL_HINT: dict[str, str] = {
    dcm_uid.JPEGBaseline8Bit: "pillow",
    dcm_uid.JPEGExtended12Bit: "python-gdcm",
    **{ts: "python-gdcm" for ts in _JPEG_LOSSLESS},
    **{ts: "pyjpegls" for ts in _JPEG_LS},
    **{ts: "pylibjpeg-openjpeg" for ts in (*_J2K, *_HTJ2K)},
    dcm_uid.RLELossless: "python-gdcm",
}

# (distribution, pydicom plugin name, licence when the metadata has none, role, transfer syntaxes)
_PLUGINS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    (
        "pydicom",
        "pydicom",
        "MIT",
        "native (uncompressed, deflate, big endian) and RLE Lossless",
        (*_NATIVE, dcm_uid.RLELossless),
    ),
    (
        "pillow",
        "pillow",
        "MIT-CMU",
        "preferred for JPEG baseline; fallback for 8-bit JPEG extended and JPEG 2000",
        (dcm_uid.JPEGBaseline8Bit, dcm_uid.JPEGExtended12Bit, *_J2K),
    ),
    (
        "pylibjpeg-openjpeg",
        "pylibjpeg",
        "MIT",
        "preferred for JPEG 2000 and HTJ2K (through pylibjpeg)",
        (*_J2K, *_HTJ2K),
    ),
    ("pyjpegls", "pyjpegls", "MIT", "preferred for JPEG-LS", _JPEG_LS),
    (
        "python-gdcm",
        "gdcm",
        "Apache-2.0 (GDCM: BSD-3-Clause)",
        "preferred for JPEG extended and lossless; fallback for every compressed syntax",
        (
            dcm_uid.JPEGBaseline8Bit,
            dcm_uid.JPEGExtended12Bit,
            *_JPEG_LOSSLESS,
            *_JPEG_LS,
            *_J2K,
            dcm_uid.RLELossless,
        ),
    ),
)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _licence(distribution: str, fallback: str) -> str:
    try:
        meta = metadata.metadata(distribution)
    except metadata.PackageNotFoundError:
        return fallback
    text = meta["License-Expression"] or meta["License"] or ""
    return text if text and len(text) < 40 else fallback


def decoder_plugins() -> list[dict[str, Any]]:
    """Describe each pixel-data decoder PneumoView uses.

    Returns one dict per plugin with keys ``name`` (pip distribution), ``plugin`` (pydicom's plugin name),
    ``licence``, ``version`` (installed version or ``None``), ``role`` (a sentence), ``transfer_syntaxes`` (names)
    and ``transfer_syntax_uids``. ``pylibjpeg-openjpeg`` also needs the ``pylibjpeg`` package; its version is
    reported under ``requires``.
    """
    rows: list[dict[str, Any]] = []
    for dist, plugin, licence, role, syntaxes in _PLUGINS:
        row: dict[str, Any] = {
            "name": dist,
            "plugin": plugin,
            "licence": _licence(dist, licence),
            "version": _version(dist),
            "role": role,
            "transfer_syntaxes": [dcm_uid.UID(ts).name for ts in syntaxes],
            "transfer_syntax_uids": [str(ts) for ts in syntaxes],
        }
        if dist == "pylibjpeg-openjpeg":
            row["requires"] = {"pylibjpeg": _version("pylibjpeg")}
        rows.append(row)
    return rows


def _short(exc: BaseException, limit: int = 240) -> str:
    text = re.sub(r"\s+", " ", str(exc) or type(exc).__name__).strip()
    text = text.replace("Unable to decode as exceptions were raised by all available plugins: ", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pixel_error(path: Path, exc: BaseException, syntax_name: str) -> ImageReadError:
    """Turn an exception raised while decoding pixel data into an ImageReadError a user can act on."""
    detail = _short(exc)
    if "less than expected" in detail or "truncated" in detail.lower():
        advice = "the file is truncated; copy it again from its source"
    elif isinstance(exc, (AttributeError, KeyError)) or "Missing required element" in detail:
        advice = "the image header is incomplete; export the image again from the system that made it"
    elif isinstance(exc, ValueError) and "invalid literal" in detail:
        advice = "a header value is malformed; export the image again from the system that made it"
    else:
        advice = "the file may be damaged; copy or export it again from its source"
    return ImageReadError(
        path, "pixels", f"the {syntax_name} pixel data could not be read ({detail}): {advice}."
    )


def decode_first_frame(ds: Dataset, path: Path) -> tuple[np.ndarray, dict[str, Any], str]:
    """Decode frame 1 of ``ds`` (whose file meta must hold a Transfer Syntax UID).

    Returns ``(array, pixel_properties, plugin)``: the array is ``(rows, cols)`` or ``(rows, cols, samples)`` with
    colour already converted to RGB by pydicom, ``pixel_properties`` is pydicom's description of that array
    (``photometric_interpretation`` …) and ``plugin`` the pydicom plugin name that decoded it.

    Raises:
        UnsupportedTransferSyntaxError: no installed plugin reads this transfer syntax.
        ImageReadError: every plugin failed (damaged, truncated or malformed data), stage ``"pixels"``.
    """
    ts = dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID))
    syntax_name = ts.name if ts.is_transfer_syntax else f"unknown transfer syntax {ts}"
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntaxError(
            path, syntax_name, str(ts), _INSTALL_HINT.get(ts, "python-gdcm")
        ) from exc

    if not ts.is_encapsulated:
        try:
            arr, props = decoder.as_array(ds, index=0)
        except Exception as exc:
            raise pixel_error(path, exc, syntax_name) from exc
        return arr, props, "pydicom"

    available = list(decoder.available_plugins)
    if (
        ts == dcm_uid.JPEGExtended12Bit
        and int(ds.get("BitsStored", 8) or 8) > 8
        and "pylibjpeg" not in available
    ):
        # Pillow and GDCM's Python wheel are built with 8-bit libjpeg only; the one pip-installable 12-bit JPEG
        # decoder is pylibjpeg-libjpeg (GPL-3.0), which PneumoView does not ship.
        raise UnsupportedTransferSyntaxError(
            path, f"{syntax_name} with 12-bit samples", str(ts), "pylibjpeg-libjpeg"
        )
    if not available:
        raise UnsupportedTransferSyntaxError(path, syntax_name, str(ts), _INSTALL_HINT.get(ts, "python-gdcm"))

    _check_codestream_size(ds, path, syntax_name)
    order = [p for p in _PREFERRED.get(ts, ()) if p in available]
    order += [p for p in available if p not in order]
    first_error: BaseException | None = None
    for plugin in order:
        try:
            if plugin in _ISOLATED_PLUGINS or (ts in _J2K and _policy["jpeg2000_in_worker"]):
                arr, props = decode_isolated(ds, plugin)
            else:
                arr, props = decoder.as_array(ds, index=0, decoding_plugin=plugin)
        except Exception as exc:
            first_error = first_error or exc
            continue
        return arr, props, plugin
    assert first_error is not None
    raise pixel_error(path, first_error, syntax_name) from first_error


# JPEG start-of-frame markers (ITU T.81 B.1.1.3) and JPEG-LS SOF55 (ITU T.87): FF Cn, FF F7.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_PEEK_BYTES = 64 * 1024


def _first_fragment_head(pixel_data: bytes) -> bytes:
    """The first bytes of the first fragment of encapsulated pixel data (after the Basic Offset Table item)."""
    view = memoryview(pixel_data)
    item = b"\xfe\xff\x00\xe0"
    if len(view) < 8 or bytes(view[:4]) != item:
        return b""
    pos = 8 + struct.unpack_from("<I", view, 4)[0]  # skip the Basic Offset Table
    if len(view) < pos + 8 or bytes(view[pos : pos + 4]) != item:
        return b""
    (length,) = struct.unpack_from("<I", view, pos + 4)
    return bytes(view[pos + 8 : pos + 8 + min(length, _PEEK_BYTES)])


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels that a JPEG, JPEG-LS or JPEG 2000 codestream declares, or None when the
    bytes are none of these or the size is not in the first bytes (a JPEG height of 0 is defined later)."""
    if frame.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(frame):
            if frame[pos] != 0xFF:
                return None
            marker = frame[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack_from(">H", frame, pos + 2)
            if marker in _SOF_MARKERS and pos + 9 <= len(frame):
                height, width = struct.unpack_from(">HH", frame, pos + 5)
                return (width, height) if height else None
            if marker == 0xDA:  # start of scan: no frame header before it
                return None
            pos += 2 + length
        return None
    siz = frame.find(b"\xff\x4f\xff\x51", 0, 4096)  # SOC then SIZ, also inside a JP2 file
    if siz >= 0 and siz + 24 <= len(frame):
        xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", frame, siz + 8)
        if xsiz > xosiz and ysiz > yosiz:
            return (xsiz - xosiz, ysiz - yosiz)
    return None


def _check_codestream_size(ds: Dataset, path: Path, syntax_name: str) -> None:
    """Refuse a compressed frame whose own size differs from the header's Rows × Columns.

    Decoders allocate what the codestream declares before any check, so a 64×64 header around a codestream
    claiming 12,000×12,000 pixels would allocate gigabytes (a decompression bomb), and GDCM aborts the whole
    process on some mismatches instead of raising. pydicom would reject the mismatch after decoding anyway.
    """
    try:
        size = codestream_size(_first_fragment_head(ds.PixelData))
        rows, cols = int(ds.Rows), int(ds.Columns)
    except Exception:
        return  # let the decoders report what is wrong
    if size is None or size == (cols, rows):
        return
    width, height = size
    raise ImageReadError(
        path,
        "pixels",
        f"the {syntax_name} pixel data holds a {width}×{height} image but the header says {cols}×{rows} "
        "(Columns × Rows), so the file is damaged; export it again from the system that made it.",
    )


# GDCM's Python wrapper can abort the whole process on damaged data (see pneumoview.imaging.isolated), so its decodes
# run in a worker process.
_ISOLATED_PLUGINS = frozenset({"gdcm"})
_policy = {"jpeg2000_in_worker": False}


def decode_jpeg2000_in_worker(on: bool = True) -> None:
    """Decode JPEG 2000 pixel data in the decoder worker process from now on (``on``), or in the calling thread.

    The viewer turns this on: the JPEG 2000 decoders hold Python's interpreter lock for the whole decode (about
    0.6 s for a 2k × 2k lossless image), which froze the window; in the worker the calling thread only waits on a
    pipe. Batch runs leave it off, so that their decode threads run in parallel (the worker decodes one file at a
    time)."""
    _policy["jpeg2000_in_worker"] = bool(on)
    if on:
        warm_worker_in_background()
