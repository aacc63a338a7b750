"""A reader's review as its own TID 1500 SR (the reader as a PERSON observer), written beside the algorithm's SR,
which is never altered."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from pneumoview.review import ImageReview
from pneumoview.types import XrayImage

__all__ = ["build_review_sr", "write_review_sr"]


def build_review_sr(source: Dataset, image: XrayImage, review: ImageReview) -> Dataset:
    """The review SR: one planar ROI group per reviewed box (accepted, rejected, edited or added), its region the
    box after the decision as a closed 5-point POLYLINE in ``(column, row)`` source pixels, the decision as a
    qualitative evaluation, the algorithm finding's Tracking UID when there is one; the reader as PERSON observer.
    Its SOP Instance UID is derived from the source, the reader and the review time."""
    raise NotImplementedError


def write_review_sr(
    review: ImageReview, image: XrayImage, out_dir: str | Path, *, include_identifiers: bool = False
) -> Path:
    """Write :func:`build_review_sr` for ``image.source`` into ``out_dir`` as ``<export_stem>_REVIEW_<n>.dcm``
    (a new file per saved review; earlier ones and the algorithm SR are left as they are).

    Raises:
        DicomResultsError: the source is not DICOM or its header cannot be read.
    """
    raise NotImplementedError
