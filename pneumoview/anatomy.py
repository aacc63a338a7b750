"""Where a finding is, in the patient's terms: side (right/left), zone (upper/middle/lower) and area in cm².

Qt-free; the findings panel, ``findings.csv`` and the canvas's R/L markers all use it.

Coordinates follow :mod:`pneumoview.types`: boxes ``[x, y, w, h]`` in original pixels, ``x`` along columns
(left to right as stored), ``y`` along rows (top to bottom); spacing ``(row_mm, col_mm)``.

Orientation comes from the DICOM attributes:

* ``PatientOrientation`` (0020,0020): two values, the patient direction of the rows (towards increasing column) and
  of the columns (towards increasing row). ``L\\F`` is the standard frontal display: image left is the patient's
  right, the head at the top. ``R`` first means the image is mirrored; ``H`` second means it is upside down.
* ``ImageLaterality`` (0020,0062): ``R`` or ``L`` when the image shows one side only, so every finding is on it.

RSNA-style files and PNG/JPEG carry neither; then the standard PA/AP display is *assumed* (image left = patient
right, head up) and :attr:`Orientation.note` says so. Lateral views (``LL``/``RL``) have no left/right in the image
plane, so their side is ``""``.

Zones are thirds of the image height (upper, middle, lower) by the box centre: the lungs are not segmented, so on a
radiograph with much neck or abdomen in the field the zones are approximate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SIDES",
    "ZONES",
    "BoxPlace",
    "Orientation",
    "corner_lines",
    "describe_box",
    "describe_boxes",
    "edge_markers",
    "orientation_of",
]

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")
_LATERAL_VIEWS = {"LL", "RL", "LLD", "RLD", "LATERAL"}
_ASSUMED = (
    "No patient orientation in the file: the standard PA/AP display is assumed (image left = patient right)."
)


@dataclass(frozen=True)
class Orientation:
    """How patient directions map onto the stored image.

    Attributes:
        image_left: the patient side at the image's left edge (column 0): ``"right"``, ``"left"``, or ``""`` when
            the image has no left/right (a lateral view).
        head_up: True when row 0 is towards the head.
        laterality: ``"right"``/``"left"`` when ImageLaterality says the image shows one side only, else ``""``.
        assumed: True when nothing in the file said it and the standard display was assumed.
        note: one sentence for the user (empty when the file said everything).
    """

    image_left: str = "right"
    head_up: bool = True
    laterality: str = ""
    assumed: bool = True
    note: str = _ASSUMED


@dataclass(frozen=True)
class BoxPlace:
    """A box's place: ``side`` (``"right"``/``"left"``/``""``), ``zone`` (``"upper"``/``"middle"``/``"lower"``) and
    ``area_cm2`` (None when the pixel spacing is unknown)."""

    side: str
    zone: str
    area_cm2: float | None

    @property
    def text(self) -> str:
        """``"right upper"``, ``"upper"`` (no side) …"""
        return " ".join(p for p in (self.side, self.zone) if p)


def _letters(value: str) -> list[str]:
    """The direction codes of a PatientOrientation value, however it was stored (``L\\F``, ``['L', 'F']``)."""
    parts = [p for p in re.split(r"[\\,\[\]'\" ]+", value.upper()) if p]
    return parts


def orientation_of(metadata: Mapping[str, str], view: str | None = None) -> Orientation:
    """The orientation of an image from its safe metadata (``XrayImage.metadata``) and view (``XrayImage.view``)."""
    laterality = {"R": "right", "L": "left"}.get(str(metadata.get("ImageLaterality", "")).strip().upper(), "")
    if (view or "").upper() in _LATERAL_VIEWS:
        return Orientation(
            "", True, laterality, False, "Lateral view: the image has no left/right, so no side is given."
        )
    codes = _letters(str(metadata.get("PatientOrientation", "")))
    if len(codes) == 2:
        rows_dir, cols_dir = codes
        image_left = "right" if "L" in rows_dir else "left" if "R" in rows_dir else ""
        head_up = "H" not in cols_dir
        if image_left:
            note = "" if head_up and image_left == "right" else _stated_note(image_left, head_up)
            return Orientation(image_left, head_up, laterality, False, note)
    if laterality:
        return Orientation(
            "right",
            True,
            laterality,
            False,
            f"ImageLaterality says the image shows the {laterality} side only.",
        )
    return Orientation(laterality=laterality)


def _stated_note(image_left: str, head_up: bool) -> str:
    parts = []
    if image_left == "left":
        parts.append("mirrored (image left = patient left)")
    if not head_up:
        parts.append("upside down (feet at the top)")
    return "PatientOrientation: the image is stored " + " and ".join(parts) + "; sides and zones follow it."


def describe_box(
    box: Sequence[float] | np.ndarray,
    shape: tuple[int, int],
    orientation: Orientation,
    spacing_mm: tuple[float, float] | None = None,
) -> BoxPlace:
    """Side, zone and area of one ``[x, y, w, h]`` box on an image of ``shape`` = ``(rows, cols)`` pixels."""
    x, y, w, h = (float(v) for v in box)
    rows, cols = shape
    cx, cy = x + w / 2.0, y + h / 2.0
    if orientation.laterality:
        side = orientation.laterality
    elif not orientation.image_left:
        side = ""
    else:
        other = "left" if orientation.image_left == "right" else "right"
        side = orientation.image_left if cx < cols / 2.0 else other
    third = min(int(3.0 * cy / rows), 2) if rows > 0 else 1
    zone = ZONES[third if orientation.head_up else 2 - third]
    area = None if spacing_mm is None else w * h * float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0
    return BoxPlace(side, zone, area)


def describe_boxes(
    boxes: np.ndarray,
    shape: tuple[int, int],
    orientation: Orientation,
    spacing_mm: tuple[float, float] | None = None,
) -> list[BoxPlace]:
    """:func:`describe_box` for every row of an ``(N, 4)`` array, computed at once (the table refills on every
    threshold change)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows, cols = shape
    cx, cy = b[:, 0] + b[:, 2] / 2.0, b[:, 1] + b[:, 3] / 2.0
    if orientation.laterality or not orientation.image_left:
        sides = [orientation.laterality] * len(b)
    else:
        other = "left" if orientation.image_left == "right" else "right"
        sides = np.where(cx < cols / 2.0, orientation.image_left, other).tolist()
    third = np.minimum((3.0 * cy / rows).astype(int), 2) if rows > 0 else np.ones(len(b), dtype=int)
    zones = [ZONES[t if orientation.head_up else 2 - t] for t in third.tolist()]
    areas = (
        [None] * len(b)
        if spacing_mm is None
        else (b[:, 2] * b[:, 3] * float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0).tolist()
    )
    return [BoxPlace(s, z, a) for s, z, a in zip(sides, zones, areas, strict=True)]


def edge_markers(orientation: Orientation, flipped_h: bool = False) -> tuple[str, str]:
    """The letters for the left and right edges of the screen (``"R"``, ``"L"``; ``""`` for a lateral view),
    after the viewer's own horizontal flip."""
    if not orientation.image_left:
        return "", ""
    left = "R" if orientation.image_left == "right" else "L"
    right = "L" if left == "R" else "R"
    return (right, left) if flipped_h else (left, right)


def _age(text: str) -> str:
    m = re.fullmatch(r"0*(\d+)\s*([DWMY]?)", text.strip().upper())
    if not m:
        return text.strip()
    unit = {"D": "days", "W": "weeks", "M": "months", "Y": "y", "": "y"}[m.group(2)]
    return f"{int(m.group(1))} {unit}"


def _date(text: str) -> str:
    t = text.strip()
    return f"{t[:4]}-{t[4:6]}-{t[6:8]}" if re.fullmatch(r"\d{8}", t) else t


def corner_lines(
    metadata: Mapping[str, str], identifiers: Mapping[str, str], view: str | None, orientation: Orientation
) -> list[str]:
    """The canvas's corner text: view position, age and sex, study date, and ``(orientation assumed)``; unknown
    fields are left out. For the screen only: exports never draw it."""
    lines = []
    if view:
        lines.append(f"View {view}")
    age, sex = _age(str(metadata.get("PatientAge", ""))), str(metadata.get("PatientSex", "")).strip()
    who = ", ".join(p for p in (f"age {age}" if age else "", {"M": "male", "F": "female"}.get(sex, sex)) if p)
    if who:
        lines.append(who[0].upper() + who[1:])
    date = _date(str(identifiers.get("StudyDate", "")))
    if date:
        lines.append(f"Study {date}")
    if orientation.assumed:
        lines.append("Orientation assumed (PA/AP)")
    return lines
