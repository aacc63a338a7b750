"""Stable, non-identifying image ids.

RSNA-style files are named ``<patientId>.<ext>`` where ``patientId`` is already an anonymised UUID, so the file stem
is the id (this is what the RSNA submission format expects). Any other image gets a short hash that does not reveal
the PatientID, the name or the file path.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_RSNA_STEM = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_rsna_style_name(path: str | Path) -> bool:
    """True when the file stem is an RSNA-style UUID ``patientId`` (e.g. ``0004cfab-14fd-4e49-80ba-63a80b6bddd6``)."""
    return bool(_RSNA_STEM.match(Path(path).stem.lower()))


def image_id_for(path: str | Path, sop_instance_uid: str | None = None, content: bytes | None = None) -> str:
    """The id PneumoView uses for an image in outputs.

    Args:
        path: the image file.
        sop_instance_uid: the DICOM SOP Instance UID, when the file is DICOM and has one.
        content: some bytes of the file (e.g. the first 64 KiB) used when neither of the above gives an id.

    Returns:
        the file stem for RSNA-style names; ``"img-" + 16 hex digits`` of a SHA-256 otherwise.
    """
    p = Path(path)
    if is_rsna_style_name(p):
        return p.stem.lower()
    if sop_instance_uid:
        key = b"uid:" + sop_instance_uid.strip().encode("ascii", "replace")
    elif content is not None:
        key = b"bytes:" + content
    else:
        key = b"name:" + p.name.encode("utf-8", "replace")
    return "img-" + hashlib.sha256(key).hexdigest()[:16]
