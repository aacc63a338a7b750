"""Make RSNA-Pneumonia-challenge-style DICOM files from PNG radiographs.

The challenge DICOMs were NIH ChestX-ray14 PNGs converted by dcmtk into 8-bit MONOCHROME2 JPEG-baseline CR files
(Secondary Capture SOP class, Series Description ``"view: PA"``, PatientID = PatientName = the anonymous
``patientId``, Patient's Age as a bare number). They may not be redistributed, so PneumoView rebuilds files with the
same tag layout from the public NIH pixels and the header values in ``stage_2_train_dicom_headers.csv.gz``.

Output is deterministic: UIDs are derived from the ``patientId`` and Pillow's JPEG encoder is deterministic, so
writing the same input twice gives byte-identical files.
"""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import config as dcm_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage

from pneumoview import __version__

IMPLEMENTATION_VERSION_NAME = f"PNEUMOVIEW_{__version__.replace('.', '')}"[:16]
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://pneumoview.invalid/rsna-style-dicom")


def _uid(patient_id: str, what: str) -> str:
    # A 2.25.<UUID as integer> UID (PS3.5 B.2) needs no organisation root; a name-based UUID makes it a pure
    # function of the patientId, so re-running the converter reproduces the same UIDs.
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{patient_id}/{what}').int}"


def _grey8(png_path: Path) -> np.ndarray:
    """The PNG as 8-bit grey: L as is, colour by luminance, 16-bit scaled linearly from its min..max."""
    with Image.open(png_path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
            return np.rint(scaled).astype(np.uint8)
        if im.mode != "L":
            im = (im.convert("RGB") if im.mode not in ("RGB", "RGBA", "P", "LA") else im).convert("L")
        return np.asarray(im, dtype=np.uint8)


def _strip_jfif(jpeg: bytes) -> bytes:
    """Drop the JFIF APP0 segment Pillow writes; dcmtk-made RSNA files start SOI, DQT (no APP0)."""
    if jpeg[2:4] == b"\xff\xe0" and jpeg[6:11] == b"JFIF\x00":
        length = int.from_bytes(jpeg[4:6], "big")
        return jpeg[:2] + jpeg[4 + length :]
    return jpeg


def _encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=quality, optimize=True)
    return _strip_jfif(buf.getvalue())


def _spacing_ds(pixel_spacing: float | tuple[float, float]) -> list[str]:
    rows, cols = (pixel_spacing, pixel_spacing) if isinstance(pixel_spacing, (int, float)) else pixel_spacing
    if not (rows > 0 and cols > 0):
        raise ValueError(f"pixel_spacing must be positive millimetres, not {pixel_spacing!r}")
    # The CSV holds binary-float noise such as 0.14300000000000002; DS allows 16 characters.
    return [f"{float(rows):.10g}", f"{float(cols):.10g}"]


def write_rsna_dicom(
    png_path: str | Path,
    out_path: str | Path,
    *,
    patient_id: str,
    age: int | str,
    sex: str,
    view: str,
    pixel_spacing: float | tuple[float, float],
    quality: int = 95,
) -> Path:
    """Write ``png_path`` as an RSNA-challenge-style DICOM file at ``out_path``.

    The image keeps the PNG's size (RSNA images are 1024×1024) and becomes 8-bit grey, JPEG-baseline encoded by
    Pillow at ``quality``. Tags follow the dcmtk-converted RSNA files: CR modality, Secondary Capture SOP class,
    Conversion Type WSD, Body Part CHEST, View Position and Series Description ``"view: <view>"``, Patient's Age
    as a bare number (as in the challenge files), PatientName = PatientID = ``patient_id``, empty dates replaced by
    19010101, and Study/Series/SOP Instance UIDs derived from ``patient_id``.

    Args:
        png_path: the source PNG (only read).
        out_path: the DICOM file to write; its folder is created.
        patient_id: the RSNA ``patientId``.
        age: Patient's Age in years.
        sex: ``"M"``, ``"F"`` or ``"O"``.
        view: ``"PA"`` or ``"AP"``.
        pixel_spacing: mm per pixel, one value for square pixels or ``(row_mm, col_mm)``.
        quality: Pillow JPEG quality (1–100).

    Returns:
        ``out_path`` as a Path.
    """
    png_path, out_path = Path(png_path), Path(out_path)
    if out_path.resolve() == png_path.resolve():
        raise ValueError("out_path must differ from png_path: the input is never overwritten")
    view, sex = view.strip().upper(), sex.strip().upper()
    pixels = _grey8(png_path)
    jpeg = _encode_jpeg(pixels, quality)

    sop_uid, study_uid, series_uid = (_uid(patient_id, w) for w in ("instance", "study", "series"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    # The challenge files store a bare number ("62"), which is not a valid AS value; keep it as they do, without
    # pydicom's validation warning.
    ds[0x00101010] = DataElement(0x00101010, "AS", str(age).strip(), validation_mode=dcm_config.IGNORE)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = _spacing_ds(pixel_spacing)
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True

    out_path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_path, enforce_file_format=True)
    return out_path


def read_rsna_headers(csv_gz_path: str | Path, patient_ids: Iterable[str]) -> dict[str, dict[str, object]]:
    """Header values of the RSNA training DICOMs for ``patient_ids``.

    Reads ``stage_2_train_dicom_headers.csv.gz`` (columns ``PatientID``, ``PatientAge``, ``PatientSex``,
    ``ViewPosition``, ``PixelSpacing`` …; one row per DICOM). Patients not in the file are left out.

    Returns:
        ``{patientId: {"age": int | str, "sex": str, "view": str, "pixel_spacing": float}}``, ready to pass as
        keyword arguments to :func:`write_rsna_dicom` (spacing in mm, the same for rows and columns).
    """
    wanted = set(patient_ids)
    found: dict[str, dict[str, object]] = {}
    with gzip.open(csv_gz_path, "rt", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            pid = row.get("PatientID", "")
            if pid not in wanted:
                continue
            age_text = row.get("PatientAge", "").strip()
            found[pid] = {
                "age": int(age_text) if age_text.isdigit() else age_text,
                "sex": row.get("PatientSex", "").strip(),
                "view": row.get("ViewPosition", "").strip(),
                "pixel_spacing": float(row["PixelSpacing"]),
            }
    return found
