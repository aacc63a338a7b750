"""What kind of object a DICOM SOP class is, for people: image, structured report, RT plan … (by pydicom's UID names)."""

from __future__ import annotations

import functools
import re

from pydicom.uid import UID

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

_UID_SHAPE = re.compile(r"[0-9]+(\.[0-9]+)+")


# SOP classes that are never shown as radiographs, matched against pydicom's UID names (first match wins).
_NON_IMAGE_CLASSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (r"Presentation State", "presentation state"),
        (r"Key Object Selection", "key object selection"),
        (r"\bSR\b|Structured Report", "structured report"),
        (r"Waveform|Standalone Curve|Standalone PET Curve", "waveform"),
        (r"RT (Ion )?Plan", "RT plan"),
        (r"RT Structure Set", "RT structure set"),
        (r"^RT .*(Record|Instruction|Intent|Annotation|Set)", "RT object"),
        (r"Encapsulated PDF", "encapsulated PDF document"),
        (r"Encapsulated CDA", "encapsulated CDA document"),
        (r"Encapsulated (STL|OBJ|MTL)", "encapsulated 3D model"),
        (r"Raw Data", "raw data"),
        (r"Spatial Registration", "spatial registration"),
        (r"Spatial Fiducials", "spatial fiducials"),
        (r"Segmentation", "segmentation"),
        (r"Hanging Protocol", "hanging protocol"),
        (r"Procedure Log|Procedure Protocol|Protocol Approval", "procedure log or protocol"),
        (r"Measurements|Report Storage", "measurement report"),
        (r"Real World Value Mapping", "real-world value mapping"),
        (r"Color Palette", "color palette"),
        (r"Implant", "implant template"),
        (r"Inventory", "inventory"),
    )
)


def is_cut_uid(uid: str, name: str) -> bool:
    """True for a UID that cannot be a real SOP class: malformed ("1."), a prefix of the DICOM root, or under the
    DICOM root (private classes never are) yet unknown."""
    root = "1.2.840.10008."
    return not _UID_SHAPE.fullmatch(uid) or root.startswith(uid) or (uid.startswith(root) and not name)


@functools.lru_cache(maxsize=1024)
def uid_name(uid: str | None) -> str:
    if not uid:
        return ""
    try:
        name = UID(uid).name
    except Exception:
        return uid
    return name if name != uid else ""


@functools.lru_cache(maxsize=1024)
def non_image_kind_of(class_name: str) -> str | None:
    for pattern, kind in _NON_IMAGE_CLASSES:
        if class_name and pattern.search(class_name):
            return kind
    return None


def is_image_class(class_name: str) -> bool:
    return "Image Storage" in class_name or "Volume Storage" in class_name


def image_kind_from_class(class_name: str) -> str:
    if "Image Storage" in class_name:
        base = class_name.split(" Image Storage")[0].strip()
        return f"{base} image" if base else "DICOM image"
    return "DICOM image"


def generic_object_kind(sop_class: str, class_name: str) -> str:
    if class_name:
        return class_name.removesuffix(" Storage").removesuffix(" SOP Class")
    return f"private DICOM object ({sop_class})"
