"""Read one DICOM file into an :class:`~pneumoview.types.XrayImage`.

Pipeline (DICOM PS3.3 C.11 and PS3.4 N.2): decode frame 1 → Modality LUT (LUT sequence or Rescale Slope/Intercept)
→ VOI (VOI LUT Sequence, else the first Window Center/Width, else the full range) → inversion for MONOCHROME1
XOR Presentation LUT Shape INVERSE → uint8 ``display``. ``modality`` keeps the float32 Modality LUT output,
never inverted. Colour images become grey by Rec. 601 luminance.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut

from pneumoview.errors import ImageReadError, ImageTooLargeError, NotAnImageError
from pneumoview.identity import image_id_for
from pneumoview.imaging.decoders import decode_first_frame
from pneumoview.imaging.j2k_reduce import decode_reduced
from pneumoview.imaging.sniff import deflated_size_exceeds
from pneumoview.imaging.voi import (
    VOI_FUNCTIONS,
    VoiFunction,
    apply_integer_lut,
    apply_lut_table,
    full_range_window,
    integer_display_lut,
    to_display,
)
from pneumoview.types import Window, XrayImage

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as Pillow's convert("L")
_RSNA_VIEW = re.compile(r"\bview\s*:\s*([A-Za-z]{1,4})\b", re.IGNORECASE)

# Substrings of SOP Class names (pydicom's UID dictionary) → what to call the object in an error message.
_SOP_KINDS: tuple[tuple[str, str], ...] = (
    ("Media Storage Directory", "DICOMDIR (media directory)"),
    ("SR Storage", "structured report"),
    ("Structured Report", "structured report"),
    ("Presentation State", "presentation state"),
    ("Key Object Selection", "key object selection"),
    ("Plan Storage", "RT plan"),
    ("RT Structure Set", "RT structure set"),
    ("Treatment Record", "RT treatment record"),
    ("Waveform", "waveform"),
    ("Encapsulated PDF", "encapsulated PDF"),
    ("Encapsulated", "encapsulated document"),
    ("Raw Data", "raw data"),
    ("Spectroscopy", "spectroscopy"),
    ("Registration", "spatial registration"),
    ("Fiducials", "spatial fiducials"),
)
_MODALITY_KINDS = {
    "SR": "structured report",
    "PR": "presentation state",
    "KO": "key object selection",
    "RTPLAN": "RT plan",
    "RTSTRUCT": "RT structure set",
    "RTRECORD": "RT treatment record",
    "ECG": "waveform",
    "HD": "waveform",
    "EPS": "waveform",
    "RESP": "waveform",
    "DOC": "encapsulated document",
    "REG": "spatial registration",
    "FID": "spatial fiducials",
}
_SAFE_TAGS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "PatientOrientation",
    "ImageLaterality",
    "PatientAge",
    "PatientSex",
    "Manufacturer",
    "ManufacturerModelName",
    "ConversionType",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "LossyImageCompression",
)
_IDENTIFIER_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "StudyDate",
)


def deflated_limit(max_pixels: int) -> int:
    """The most bytes a deflated data set may inflate to: room for ``max_pixels`` 32-bit samples plus 64 MiB."""
    return max_pixels * 4 + 64 * 2**20


def read_dicom(path: Path, max_pixels: int) -> XrayImage:
    """Read frame 1 of the DICOM file ``path``; see :func:`pneumoview.imaging.load_image` for the contract."""
    ds, notes = open_dicom(path, max_pixels)
    return dicom_image(ds, path, max_pixels, notes)


def open_dicom(path: Path, max_pixels: int) -> tuple[Dataset, list[str]]:
    """Read the whole DICOM file ``path`` (pixel data still encoded) and the notes made while reading it.

    Raises :class:`~pneumoview.errors.ImageReadError` (stage ``"header"``) for unreadable files and
    :class:`~pneumoview.errors.ImageTooLargeError` for a deflated data set that would inflate past the limit.
    """
    notes: list[str] = []
    if deflated_size_exceeds(path, deflated_limit(max_pixels)):
        raise ImageTooLargeError(
            path,
            "pixels",
            f"the deflate-compressed data set inflates to more than {deflated_limit(max_pixels) / 2**20:.0f} MiB, "
            "far more than an image within the size limit needs (a decompression bomb); it was not read.",
        )
    return _read_dataset(path, notes), notes


def dicom_image(ds: Dataset, path: Path, max_pixels: int, notes: list[str], reduce: int = 0) -> XrayImage:
    """Decode frame 1 of ``ds`` (read from ``path`` by :func:`open_dicom`) into an XrayImage.

    ``reduce`` > 0 decodes a JPEG 2000 frame at ``1 / 2**reduce`` of its size in each direction
    (:func:`pneumoview.imaging.j2k_reduce.decode_reduced`) and goes through the same Modality LUT, VOI and
    photometric steps; its ``spacing_mm`` is then the size of the reduced pixels. ``notes`` is extended.
    """
    try:
        return _image_from_dataset(ds, path, max_pixels, notes, reduce)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError(
            path,
            "pixels",
            "there was not enough memory to decode this image; close other programs and try again.",
        ) from exc
    except Exception as exc:
        detail = re.sub(r"\s+", " ", str(exc)).strip()[:200] or type(exc).__name__
        raise ImageReadError(
            path,
            "pixels",
            f"the image could not be read ({detail}); the file may be damaged: export it again.",
        ) from exc


def _read_dataset(path: Path, notes: list[str]) -> Dataset:
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, force=True)
            notes.append("the file has no DICOM preamble or file meta header (old ACR-NEMA style)")
    except OSError as exc:
        raise ImageReadError(
            path, "header", f"the file could not be read ({exc.strerror or exc}); check that you may read it."
        ) from exc
    except Exception as exc:
        detail = re.sub(r"\s+", " ", str(exc)).strip()[:200] or type(exc).__name__
        raise ImageReadError(
            path, "header", f"the DICOM header is damaged ({detail}); copy or export the file again."
        ) from exc
    if len(ds) == 0:
        raise ImageReadError(
            path, "header", "the file holds no DICOM data elements (it is empty or truncated); copy it again."
        )
    _ensure_transfer_syntax(ds, notes)
    return ds


def _ensure_transfer_syntax(ds: Dataset, notes: list[str]) -> None:
    """Give files without a Transfer Syntax UID the encoding pydicom detected while reading them."""
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip():
        return
    implicit, little = ds.original_encoding
    if implicit or implicit is None:
        ts = dcm_uid.ImplicitVRLittleEndian
    else:
        ts = dcm_uid.ExplicitVRLittleEndian if little else dcm_uid.ExplicitVRBigEndian
    ds.file_meta.TransferSyntaxUID = ts
    notes.append(f"no transfer syntax in the file; read as {ts.name}")


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    return str(value).strip()


def _floats(ds: Dataset, keyword: str, notes: list[str]) -> list[float]:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            items = value.split("\\")
        elif isinstance(value, (int, float)):
            items = [value]
        else:
            items = list(value)
        out = [float(v) for v in items]
    except (TypeError, ValueError, OverflowError):
        notes.append(f"ignored the invalid {keyword} value {_text(ds, keyword)!r}")
        return []
    if not all(math.isfinite(v) for v in out):
        notes.append(f"ignored the non-finite {keyword} value {_text(ds, keyword)!r}")
        return []
    return out


def _required_int(ds: Dataset, keyword: str, path: Path) -> int:
    raw = _text(ds, keyword)
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        hint = "is missing" if not raw else f"is {raw!r}, not a whole number"
        raise ImageReadError(
            path,
            "pixels",
            f"the header's {keyword} {hint}; export the image again from the system that made it.",
        ) from None
    if value < 1:
        raise ImageReadError(
            path, "pixels", f"the header's {keyword} is {value}; the image has no pixels to show."
        )
    return value


def _frame_count(ds: Dataset, path: Path) -> int:
    return _required_int(ds, "NumberOfFrames", path) if _text(ds, "NumberOfFrames") else 1


def _sop_class_name(ds: Dataset) -> str:
    sop = _text(ds, "SOPClassUID") or str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    return dcm_uid.UID(sop).name if sop else ""


def non_image_kind(ds: Dataset) -> str | None:
    """What a DICOM object without pixel data is (``"structured report"``, ``"RT plan"`` …), or None if unknown."""
    if "DirectoryRecordSequence" in ds:
        return "DICOMDIR (media directory)"
    name = _sop_class_name(ds)
    for needle, kind in _SOP_KINDS:
        if needle in name:
            return kind
    return _MODALITY_KINDS.get(_text(ds, "Modality").upper())


def _no_pixel_data_error(ds: Dataset, path: Path) -> ImageReadError:
    kind = non_image_kind(ds)
    if kind is not None:
        return NotAnImageError(path, kind)
    ts = dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID))
    if "Rows" in ds or "Columns" in ds or ts.is_encapsulated or "Image Storage" in _sop_class_name(ds):
        return ImageReadError(
            path,
            "pixels",
            "the file describes an image but holds no pixel data (it is truncated or damaged); "
            "copy or export it again from its source.",
        )
    return NotAnImageError(path, "non-image")


def _image_from_dataset(
    ds: Dataset, path: Path, max_pixels: int, notes: list[str], reduce: int = 0
) -> XrayImage:
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise _no_pixel_data_error(ds, path)
    rows, cols = _required_int(ds, "Rows", path), _required_int(ds, "Columns", path)
    frames = _frame_count(ds, path)
    if rows * cols * frames > max_pixels:
        size = f"{cols}×{rows} pixels" + (f" × {frames} frames" if frames > 1 else "")
        raise ImageTooLargeError(
            path,
            "pixels",
            f"the image is {size} ({rows * cols * frames / 1e6:.0f} megapixels), more than the limit of "
            f"{max_pixels / 1e6:.0f} megapixels; open it in a dedicated DICOM viewer, or raise the limit if this "
            "computer has the memory.",
        )
    arr, props, plugin = decode_reduced(ds, reduce) if reduce else decode_first_frame(ds, path)
    if frames > 1:
        notes.append(f"multi-frame image: showing frame 1 of {frames}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))

    photometric = _text(ds, "PhotometricInterpretation").upper() or "MONOCHROME2"
    decoded_pi = str(props.get("photometric_interpretation", photometric)).upper()
    invert = (decoded_pi == "MONOCHROME1") != (_text(ds, "PresentationLUTShape").upper() == "INVERSE")

    if arr.ndim == 3 or decoded_pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds) if arr.ndim == 2 else arr
        modality, display, window, windows = _grey_from_colour(rgb)
        invert = False
    else:
        modality, display, window, windows = _monochrome(ds, arr, invert, notes)

    ts = dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID))
    metadata = {k: v for k in _SAFE_TAGS if (v := _text(ds, k))}
    orientation = ds.get("PatientOrientation") if "PatientOrientation" in metadata else None
    if orientation and not isinstance(orientation, str):  # as DICOM writes it ("L\\F"), not as a Python list
        metadata["PatientOrientation"] = "\\".join(str(v).strip() for v in orientation)
    series = _text(ds, "SeriesDescription")
    if _RSNA_VIEW.fullmatch(series):  # free-text descriptions can name people; the RSNA form cannot
        metadata["SeriesDescription"] = series
    metadata.update(
        TransferSyntax=ts.name,
        TransferSyntaxUID=str(ts),
        Decoder=plugin,
        SOPClass=_sop_class_name(ds),
        Format="DICOM",
    )
    if frames > 1:
        metadata["NumberOfFrames"] = str(frames)
    metadata = {k: v for k, v in metadata.items() if v}
    identifiers = {k: v for k in _IDENTIFIER_TAGS if (v := _text(ds, k))}
    spacing = _spacing(ds, notes)
    if spacing is not None:
        metadata["PixelSpacing"] = f"{spacing[0]:g}\\{spacing[1]:g}"  # the file's, also for a reduced decode
        spacing = (spacing[0] * 2**reduce, spacing[1] * 2**reduce)
    return XrayImage(
        modality=modality,
        display=display,
        window=window,
        windows=tuple(windows),
        inverted=invert,
        spacing_mm=spacing,
        view=_view(ds),
        photometric=photometric,
        source=path,
        image_id=image_id_for(path, sop_instance_uid=identifiers.get("SOPInstanceUID")),
        metadata=metadata,
        identifiers=identifiers,
        frame_count=frames,
        notes=tuple(notes),
    )


def _grey_from_colour(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, Window, list[Window]]:
    grey = rgb[..., :3].astype(np.float32) @ _LUMA
    if rgb.dtype == np.uint8:
        window = full_range_window(0, 255)
    else:
        window = full_range_window(float(grey.min()), float(grey.max()))
    display = to_display(grey, window, function="LINEAR_EXACT")
    return grey, display, window, []


def _monochrome(
    ds: Dataset, arr: np.ndarray, invert: bool, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, Window, list[Window]]:
    if ds.get("ModalityLUTSequence"):
        base = apply_modality_lut(arr, ds)
        slope, intercept = 1.0, 0.0
    else:
        base = arr
        slope = (_floats(ds, "RescaleSlope", notes) or [1.0])[0]
        intercept = (_floats(ds, "RescaleIntercept", notes) or [0.0])[0]
        if slope == 0.0:
            notes.append("ignored a Rescale Slope of 0")
            slope = 1.0
    modality = base.astype(np.float32)
    if slope != 1.0:
        modality *= np.float32(slope)
    if intercept != 0.0:
        modality += np.float32(intercept)

    windows = _file_windows(ds, notes)
    voi = _voi_lut(ds, notes)
    if voi is not None:
        table, first, out_max = voi
        lut_window = Window(center=first + len(table) / 2.0, width=float(len(table)))
        notes.append("the display uses the file's VOI LUT; the default window shows that LUT's input range")
        display = apply_lut_table(modality, table, first, out_max, invert=invert)
        return modality, display, lut_window, [lut_window, *windows]

    function: VoiFunction = "LINEAR_EXACT"
    if windows:
        window = windows[0]
        function = _voi_function(ds, notes)
    elif base.dtype.kind == "u" and base.dtype.itemsize == 1 and slope == 1.0 and intercept == 0.0:
        # 8-bit data is shown as stored (0..2^BitsStored-1), like PNG/JPEG and like the RSNA models were trained;
        # stretching min..max would make a DICOM and the PNG of the same radiograph look different.
        bits = min(max(_int_or(ds, "BitsStored", 8), 1), 8)
        window = full_range_window(0, 2**bits - 1)
    else:
        window = full_range_window(float(modality.min()), float(modality.max()))

    if base.dtype.kind in "iu" and base.dtype.itemsize <= 2:
        lut = integer_display_lut(
            base.dtype, window, slope=slope, intercept=intercept, function=function, invert=invert
        )
        display = apply_integer_lut(lut, base)
    else:
        display = to_display(modality, window, function=function, invert=invert)
    return modality, display, window, windows


def _int_or(ds: Dataset, keyword: str, default: int) -> int:
    try:
        return int(float(_text(ds, keyword)))
    except (ValueError, OverflowError):
        return default


def _voi_function(ds: Dataset, notes: list[str]) -> VoiFunction:
    name = _text(ds, "VOILUTFunction").upper() or "LINEAR"
    for fn in VOI_FUNCTIONS:
        if fn == name:
            return fn
    notes.append(f"unknown VOI LUT Function {name!r}; used LINEAR")
    return "LINEAR"


def _file_windows(ds: Dataset, notes: list[str]) -> list[Window]:
    centers = _floats(ds, "WindowCenter", notes)
    widths = _floats(ds, "WindowWidth", notes)
    windows = [Window(center=c, width=w) for c, w in zip(centers, widths, strict=False) if w > 0]
    if len(windows) < min(len(centers), len(widths)):
        notes.append("ignored a window with a width of 0 or less")
    return windows


def _voi_lut(ds: Dataset, notes: list[str]) -> tuple[np.ndarray, int, int] | None:
    """``(table, first_mapped_value, largest_output)`` of the first VOI LUT, or None."""
    seq = ds.get("VOILUTSequence")
    if not seq:
        return None
    try:
        item = seq[0]
        n, first, bits = (int(v) for v in item.LUTDescriptor)
        n = n or 65536
        if first > 32767 and _int_or(ds, "PixelRepresentation", 0) == 1:
            first -= 65536  # the descriptor's VR is US or SS; signed images mean SS
        data: Any = item.LUTData
        if isinstance(data, bytes):
            little = dcm_uid.UID(str(ds.file_meta.TransferSyntaxUID)).is_little_endian
            table = np.frombuffer(data, dtype="<u2" if little else ">u2")[:n].astype(np.int64)
        else:
            table = np.asarray(data if isinstance(data, (list, tuple)) else [data], dtype=np.int64)[:n]
    except Exception as exc:
        notes.append(f"ignored a malformed VOI LUT ({exc})")
        return None
    if table.size == 0:
        notes.append("ignored an empty VOI LUT")
        return None
    out_max = 2 ** min(max(bits, 1), 16) - 1
    actual = int(table.max())
    if 0 < actual < out_max // 16:
        # Some writers declare 16 bits for 12-bit LUT data; trusting the descriptor would show a black image.
        out_max = 2 ** actual.bit_length() - 1
    return table, first, out_max


def _spacing(ds: Dataset, notes: list[str]) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(ds, keyword, notes)
        if len(values) == 1:
            values = values * 2  # VM 1 is invalid DICOM but means square pixels
        if len(values) >= 2 and values[0] > 0 and values[1] > 0:
            return (float(values[0]), float(values[1]))
    return None


def _view(ds: Dataset) -> str | None:
    view = _text(ds, "ViewPosition").upper()
    if view:
        return view
    m = _RSNA_VIEW.search(_text(ds, "SeriesDescription"))
    return m.group(1).upper() if m else None
