"""Is an image, by its header, what the models were made for: an adult frontal chest radiograph?

The models were trained on adult (and some adolescent) frontal chest radiographs of the RSNA challenge. When the
DICOM header says otherwise, their output is unsupported, and the user is told so. Only what the header states
counts: a missing attribute (and every PNG/JPEG, which has no header) gives no warning.

Warnings are full sentences for the user; :func:`suitability_warnings` is the one call the CLI and the viewer use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pneumoview.types import XrayImage

__all__ = ["ADULT_AGE_YEARS", "parse_age_years", "suitability_warnings", "warnings_from_header"]

ADULT_AGE_YEARS = 18.0

# DICOM Age String (PS3.5 VR AS): three digits and a unit; real files also carry bare numbers ("62", the RSNA
# headers) or unpadded forms ("62Y", "6 M").
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}

_CHEST_WORDS = ("CHEST", "THORAX", "THORACIC", "LUNG", "PULMONARY")
_NON_FRONTAL = {
    "LL": "left lateral",
    "RL": "right lateral",
    "LAT": "lateral",
    "LATERAL": "lateral",
    "LLD": "left lateral decubitus",
    "RLD": "right lateral decubitus",
    "LAO": "left anterior oblique",
    "RAO": "right anterior oblique",
    "LPO": "left posterior oblique",
    "RPO": "right posterior oblique",
}
# Modalities that are certainly not plain radiographs (CR, DX, DR, RG and converted "OT" images pass).
_NOT_RADIOGRAPH = {"CT", "MR", "NM", "PT", "US", "MG", "XA", "RF", "OP", "XC", "SM", "ES", "IO", "PX", "OCT"}

_WHY = "the models were made for adult frontal chest radiographs, so their findings here are unsupported."


def parse_age_years(text: str | None) -> float | None:
    """Patient's Age as years (float), or None when absent or unreadable.

    Accepts DICOM AS (``"062Y"``, ``"006M"``, ``"012W"``, ``"003D"``), bare numbers as in the RSNA headers
    (``"62"``, read as years) and unpadded forms (``"62Y"``).
    """
    if text is None:
        return None
    m = _AGE.match(str(text))
    if not m:
        return None
    return int(m.group(1)) * _UNIT_YEARS[m.group(2).upper()]


def warnings_from_header(metadata: Mapping[str, str], view: str | None = None) -> tuple[str, ...]:
    """Warnings from header attributes (keys as in :attr:`XrayImage.metadata`: ``Modality``,
    ``BodyPartExamined``, ``ViewPosition``, ``PatientAge``); ``view`` overrides ``ViewPosition`` (the reader also
    takes it from an RSNA-style Series Description)."""
    out: list[str] = []
    modality = str(metadata.get("Modality", "")).strip().upper()
    if modality in _NOT_RADIOGRAPH:
        out.append(f"Not a radiograph: Modality is {modality}; {_WHY}")
    body = str(metadata.get("BodyPartExamined", "")).strip()
    if body and not any(w in body.upper() for w in _CHEST_WORDS):
        out.append(f"Not a chest image: Body Part Examined is {body}; {_WHY}")
    v = (view if view is not None else str(metadata.get("ViewPosition", ""))).strip().upper()
    if v in _NON_FRONTAL:
        out.append(f"Not a frontal view: View Position is {v} ({_NON_FRONTAL[v]}); {_WHY}")
    raw_age = metadata.get("PatientAge")
    age = parse_age_years(raw_age)
    if age is not None and age < ADULT_AGE_YEARS:
        out.append(f"Not an adult: Patient's Age is {str(raw_age).strip()} ({age:.1f} years); {_WHY}")
    return tuple(out)


def suitability_warnings(image: XrayImage) -> tuple[str, ...]:
    """Warnings for one image (empty when the header gives no reason for doubt, e.g. every PNG/JPEG)."""
    return warnings_from_header(image.metadata, image.view)
