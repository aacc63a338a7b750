"""Read SR, SEG and GSPS objects (PneumoView's or anyone's) back into :mod:`pneumoview.dicom_results.stored`
values, with highdicom."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from pneumoview.dicom_results.stored import ImageResults, StoredGSPS, StoredSEG, StoredSR

__all__ = ["is_result_dataset", "read_result", "read_results"]


def is_result_dataset(ds: Dataset) -> bool:
    """True when ``ds`` (a header is enough) is a result this module reads: Comprehensive 3D / Enhanced /
    Comprehensive SR, Segmentation or Grayscale Softcopy Presentation State."""
    raise NotImplementedError


def read_result(path: str | Path) -> StoredSR | StoredSEG | StoredGSPS:
    """Read one result file.

    Raises:
        ValueError: the file is not a result object this module reads, or is malformed (the message names the
            file).
    """
    raise NotImplementedError


def read_results(paths: Iterable[str | Path]) -> dict[str, ImageResults]:
    """Read every result among ``paths`` (other files are ignored) and group them by the SOP Instance UID of the
    image they refer to. A result referring to several images is listed under each."""
    raise NotImplementedError
