"""The source image's header, cleaned so that what a result object copies from it is valid DICOM.

Real files break the standard: RSNA-style files carry Patient's Age ``62`` where the AS VR needs ``062Y``, ACR-NEMA
era files write dates as ``1995.07.20`` and times as ``11:22:07``, and many lack Type 2 attributes (Patient's
Birth Date, Study Date, Referring Physician's Name). :func:`clean_source` keeps only the attributes a result object
needs or copies (patient, study and the image's identity), corrects what has an unambiguous correction, leaves out
what is still invalid and fills missing Type 2 attributes with empty values. The source file itself is only read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian
from pydicom.valuerep import validate_value

__all__ = ["CleanSource", "clean_source", "read_source"]

# Patient, General Study and Patient Study module attributes a result copies (Type 1/2 first, then Type 3 ones
# worth keeping). Other patient-level attributes (addresses, other IDs …) are not copied: a result does not need them.
PATIENT_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_TYPE2 = ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
COPIED = (
    *PATIENT_TYPE2,
    "IssuerOfPatientID",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    *STUDY_TYPE2,
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
# The source image's own identity and geometry, used by highdicom to reference it (never copied into a result's
# own modules).
IMAGE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PatientOrientation",
    "FrameOfReferenceUID",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpecificCharacterSet",
    "NumberOfFrames",
    "InstanceNumber",
    "BodyPartExamined",
    "ImageType",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
)
# A patient frame is kept only when complete (a cross-sectional source); a partial one is left out, and results then
# refer to the source's pixel frame only, as for a projection radiograph.
PATIENT_FRAME = ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
                 "SliceThickness")  # fmt: skip
_TYPE1 = {"StudyInstanceUID", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Rows", "Columns"}


@dataclass(frozen=True)
class CleanSource:
    """A cleaned copy of a source header.

    Attributes:
        dataset: the attributes a result copies or references, valid per their VR.
        corrections: one sentence per attribute corrected, filled or left out (no values: they may identify).
    """

    dataset: Dataset
    corrections: tuple[str, ...]


def read_source(path: str | Path) -> Dataset:
    """The source file's header (pixel data not read). Files without preamble or file meta are read too.

    Raises:
        ValueError: the file is not DICOM or has no SOP Instance UID / Study Instance UID (the message names the
            file).
    """
    p = Path(path)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read the DICOM header ({exc})") from exc
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SOPClassUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise ValueError(
                f"{p}: the DICOM header has no {keyword}, so results cannot reference this image"
            )
    return ds


_DIGITS = re.compile(r"^\s*(\d{1,3})\s*$")
_AGE_UNIT = re.compile(r"^\s*(\d{1,3})\s*([DWMYdwmy])\s*$")
_ACR_DATE = re.compile(r"^(\d{4})[.\-/](\d{2})[.\-/](\d{2})$")
_ACR_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")


def _corrected(keyword: str, vr: str, value: object) -> object | None:
    """An unambiguous correction of an invalid value, or None."""
    text = str(value).strip()
    if vr == "AS":
        if m := _DIGITS.match(text):
            return f"{int(m.group(1)):03d}Y"
        if m := _AGE_UNIT.match(text):
            return f"{int(m.group(1)):03d}{m.group(2).upper()}"
    elif vr == "DA":
        if m := _ACR_DATE.match(text):
            return "".join(m.groups())
    elif vr == "TM" and (m := _ACR_TIME.match(text)):
        return m.group(1) + m.group(2) + (m.group(3) or "") + (m.group(4) or "")
    return None


_STRING_NUMBERS = ("DS", "IS")


def _valid(vr: str, value: object) -> bool:
    values = list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    try:
        for v in values:
            validate_value(vr, v if isinstance(v, bytes | int | float) and vr not in _STRING_NUMBERS else str(v),
                           config.RAISE)  # fmt: skip
    except (ValueError, TypeError):
        return False
    return True


def clean_source(ds: Dataset) -> CleanSource:
    """A copy of ``ds`` holding only :data:`COPIED` and :data:`IMAGE_ATTRIBUTES`, each valid for its VR: corrected
    when the correction is unambiguous (Patient's Age ``62`` → ``062Y``, date ``1995.07.20`` → ``19950720``, time
    ``11:22:07`` → ``112207``), left out otherwise (an emptied Type 2 value), and missing Type 2 patient/study
    attributes filled with empty values. Pixel Spacing values of 0 are left out (the spacing is unknown)."""
    out = Dataset()
    notes: list[str] = []
    for keyword in (*COPIED, *IMAGE_ATTRIBUTES):
        if keyword not in ds:
            continue
        elem = ds[keyword]
        if elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence([Dataset(item) for item in elem.value]))
            continue
        value = _clean_value(keyword, elem.VR, elem.value, notes)
        if value is not _LEAVE_OUT:
            out.add_new(elem.tag, elem.VR, value)
    _check_patient_frame(out, notes)
    for keyword in (*PATIENT_TYPE2, *STUDY_TYPE2):
        if keyword not in out:
            setattr(out, keyword, None)
            notes.append(f"{keyword} (Type 2) was missing and is written empty")
    return CleanSource(out, tuple(notes))


_LEAVE_OUT = object()


def _clean_value(keyword: str, vr: str, value: Any, notes: list[str]) -> Any:
    """The value to copy for ``keyword`` (corrected or emptied, with a note), or :data:`_LEAVE_OUT`.

    Raises:
        ValueError: a Type 1 attribute (one the results must reference) is invalid and cannot be corrected.
    """
    if value is None or value == "":
        return value
    if keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            ok = len(value) == 2 and all(float(v) > 0 for v in value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            notes.append(f"{keyword} left out: its values are not two positive numbers")
            return _LEAVE_OUT
    if _valid(vr, value):
        return value
    fixed = _corrected(keyword, vr, value)
    if fixed is not None and _valid(vr, fixed):
        notes.append(f"{keyword} corrected to the {vr} format")
        return fixed
    if keyword in _TYPE1:
        raise ValueError(f"the source's {keyword} is not a valid {vr} value; it cannot be referenced")
    if keyword in PATIENT_TYPE2 or keyword in STUDY_TYPE2:
        notes.append(f"{keyword} emptied: its value is not a valid {vr}")
        return None
    notes.append(f"{keyword} left out: its value is not a valid {vr}")
    return _LEAVE_OUT


def _check_patient_frame(out: Dataset, notes: list[str]) -> None:
    """Leave out a patient frame (Frame of Reference, orientation, position) that is incomplete or reuses the
    Study Instance UID, and the geometry that has no Frame of Reference to belong to."""
    frame = [k for k in PATIENT_FRAME if out.get(k) not in (None, "")]
    reused = "FrameOfReferenceUID" in frame and out.FrameOfReferenceUID == out.get("StudyInstanceUID")
    if "FrameOfReferenceUID" in frame and (len(frame) < len(PATIENT_FRAME) or reused):
        for k in ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"):
            if k in out:
                del out[k]
        notes.append(
            "the patient frame (Frame of Reference, orientation, position) is incomplete or reuses the Study "
            "Instance UID, and is left out"
        )
    elif "FrameOfReferenceUID" not in frame:
        for k in ("ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"):
            if k in out:
                del out[k]
