"""Write the SR, SEG and GSPS of one analysed DICOM image (see :mod:`pneumoview.dicom_results`)."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from pneumoview.errors import PneumoViewError
from pneumoview.postprocess import Findings
from pneumoview.types import AnalysisResult, XrayImage

__all__ = ["DicomResultsError", "build_gsps", "build_seg", "build_sr", "write_results"]


class DicomResultsError(PneumoViewError):
    """DICOM results cannot be written for this input (e.g. a PNG/JPEG source, which has no study to join)."""


def build_sr(source: Dataset, image: XrayImage, result: AnalysisResult, findings: Findings) -> Dataset:
    """The algorithm's TID 1500 Comprehensive 3D SR for ``image`` (always, even with no box).

    Args:
        source: the source image's header (as read by pydicom; pixel data not needed).
        image: the analysed image (its shape is the pixel frame of every coordinate).
        result: the model outputs (probabilities, model provenance).
        findings: the post-processed boxes; one planar ROI group per ``findings.fused`` box, in order.
    """
    raise NotImplementedError


def build_seg(
    source: Dataset,
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    *,
    probability_map: bool = False,
) -> Dataset | None:
    """The SEG for ``image``: the binary mask ``result.prob_map > findings.thresholds.seg_threshold`` at the
    source's size, plus the probability map as a FRACTIONAL segment with ``probability_map``; None when the mask is
    empty or no segmentation ran."""
    raise NotImplementedError


def build_gsps(source: Dataset, image: XrayImage, result: AnalysisResult, findings: Findings) -> Dataset:
    """A GSPS drawing ``findings.fused`` as rectangles (closed polylines, source pixels) labelled with their
    confidences."""
    raise NotImplementedError


def write_results(
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    out_dir: str | Path,
    *,
    gsps: bool = False,
    probability_map: bool = False,
    include_identifiers: bool = False,
) -> list[Path]:
    """Write the SR (always), the SEG (when the mask has a pixel) and the GSPS (with ``gsps``) for one analysed
    DICOM image into ``out_dir`` (created when needed), atomically.

    The source file is ``image.source``; it is only read. File names are ``<export_stem>_SR.dcm``, ``…_SEG.dcm``,
    ``…_GSPS.dcm`` (:func:`pneumoview.export.export_stem`: no identifiers unless ``include_identifiers``).

    Returns:
        the files written, SR first.

    Raises:
        DicomResultsError: the source is not a DICOM image (PNG/JPEG input has no study to join) or its header
            cannot be read; the message names the file.
    """
    raise NotImplementedError
