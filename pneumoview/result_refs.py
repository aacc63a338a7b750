"""Which images a DICOM result object (SR, SEG, GSPS) is about, from its header alone (no highdicom, no pixels).

The scan (:mod:`pneumoview.study_index`) uses this to list PneumoView's (or anyone's) results *with the image they
belong to* instead of as unrelated non-image files; :mod:`pneumoview.dicom_results` reads them in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["REFERENCE_KEYWORDS", "RESULT_SOP_CLASSES", "referenced_images"]

RESULT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34": "SR",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.22": "SR",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.11.1": "GSPS",  # Grayscale Softcopy Presentation State
}
#: Top-level sequences that name the referenced images: SR evidence (TID 1500 lists the source image there),
#: SEG and GSPS Referenced Series (with Referenced Instance / Image sequences).
REFERENCE_KEYWORDS = (
    "CurrentRequestedProcedureEvidenceSequence",
    "PertinentOtherEvidenceSequence",
    "ReferencedSeriesSequence",
)
_ITEM_SEQUENCES = ("ReferencedSOPSequence", "ReferencedInstanceSequence", "ReferencedImageSequence")


def _items(value: Any) -> list[Any]:
    try:
        return list(value or [])
    except TypeError:
        return []


def referenced_images(sop_class_uid: str, values: Mapping[str, Any]) -> tuple[str, ...]:
    """SOP Instance UIDs of the images a result object refers to, in header order without repeats; ``()`` for any
    other object or a result that names no image. ``values`` maps header keywords to pydicom values (sequences
    as read)."""
    if sop_class_uid not in RESULT_SOP_CLASSES:
        return ()
    uids: list[str] = []
    for keyword in REFERENCE_KEYWORDS:
        for item in _items(values.get(keyword)):
            series_items = _items(getattr(item, "ReferencedSeriesSequence", None)) or [item]
            for series in series_items:
                for seq in _ITEM_SEQUENCES:
                    for ref in _items(getattr(series, seq, None)):
                        uid = str(getattr(ref, "ReferencedSOPInstanceUID", "") or "").strip()
                        if uid:
                            uids.append(uid)
    return tuple(dict.fromkeys(uids))
