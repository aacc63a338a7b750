"""Write the SR, SEG and GSPS of one analysed DICOM image (see :mod:`pneumoview.dicom_results`)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pneumoview.dicom_results import content as c
from pneumoview.dicom_results.gsps import make_gsps
from pneumoview.dicom_results.seg import make_seg
from pneumoview.dicom_results.source import CleanSource, clean_source, read_source
from pneumoview.dicom_results.sr import SERIES_NUMBERS, instance_number, make_sr, measurement_report
from pneumoview.errors import PneumoViewError
from pneumoview.export import atomic_write_bytes, export_stem
from pneumoview.postprocess import Findings
from pneumoview.types import AnalysisResult, XrayImage

__all__ = ["DicomResultsError", "build_gsps", "build_seg", "build_sr", "result_uids", "write_results"]


class DicomResultsError(PneumoViewError):
    """DICOM results cannot be written for this input (e.g. a PNG/JPEG source, which has no study to join)."""


def result_uids(source: Dataset, kind: str, provenance: str) -> tuple[str, str]:
    """``(SOP Instance UID, Series Instance UID)`` of a result of ``kind`` (``"SR"``, ``"SEG"``, ``"GSPS"``):
    the instance from the source SOP Instance UID + ``provenance`` (model hashes and thresholds), the series from the
    study + ``provenance``, so every image of a study analysed the same way lands in one series per kind."""
    sop = c.derived_uid(kind, str(source.SOPInstanceUID), provenance)
    series = c.derived_uid(kind + "-series", str(source.StudyInstanceUID), provenance)
    return sop, series


def clean_header(source: Dataset) -> CleanSource:
    try:
        return clean_source(source)
    except ValueError as exc:
        raise DicomResultsError(f"{_name(source)}: {exc}") from exc


def _name(source: Dataset) -> str:
    return str(getattr(source, "filename", "") or "the source image")


@contextmanager
def _highdicom_errors(source: Dataset, kind: str) -> Iterator[None]:
    """highdicom refuses some sources (e.g. an RT Dose grid as a segmentation source): say so with the file name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # single-component person names copied from the source
            yield
    except (ValueError, TypeError, AttributeError) as exc:
        modality = source.get("Modality", "?")
        raise DicomResultsError(
            f"{_name(source)}: no {kind} can be written for this {modality} image ({exc}); PneumoView's DICOM "
            "results are meant for radiographs."
        ) from exc


def finish(ds: Dataset, clean: Dataset) -> Dataset:
    """Fill what the standard requires and highdicom leaves out: empty Type 2 patient/study attributes that the
    cleaned source did not have, Patient Orientation (Type 2C for images without a patient frame)."""
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):  # fmt: skip
        if keyword not in ds:
            setattr(ds, keyword, clean.get(keyword))
    return ds


def build_sr(source: Dataset, image: XrayImage, result: AnalysisResult, findings: Findings) -> Dataset:
    """The algorithm's TID 1500 Comprehensive 3D SR for ``image`` (always, even with no box).

    Args:
        source: the source image's header (as read by pydicom; pixel data not needed).
        image: the analysed image (its shape is the pixel frame of every coordinate).
        result: the model outputs (probabilities, model provenance).
        findings: the post-processed boxes; one planar ROI group per ``findings.fused`` box, in order.
    """
    clean = clean_header(source).dataset
    provenance = c.provenance_key(result, findings.thresholds)
    sop, series = result_uids(clean, "SR", provenance)
    with _highdicom_errors(source, "SR"):
        report = measurement_report(clean, result, findings, provenance)
        sr = make_sr(
            clean, report, kind="SR", sop_instance_uid=sop, series_instance_uid=series,
            series_description="PneumoView findings (research use only)",
        )  # fmt: skip
    return finish(sr, clean)


def final_mask(result: AnalysisResult, findings: Findings) -> np.ndarray | None:
    """bool ``(rows, cols)``: ``prob_map > seg_threshold`` on the source grid; None when no segmentation ran."""
    if result.prob_map is None:
        return None
    return np.asarray(result.prob_map) > findings.thresholds.seg_threshold


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
    mask = final_mask(result, findings)
    if mask is None or not mask.any():
        return None
    if mask.shape != image.shape:
        raise DicomResultsError(
            f"{image.source}: the probability map is {mask.shape} but the image is {image.shape}; cannot write a SEG"
        )
    clean = clean_header(source).dataset
    provenance = c.provenance_key(result, findings.thresholds)
    sop, series = result_uids(clean, "SEG-P" if probability_map else "SEG", provenance)
    _, series = result_uids(clean, "SEG", provenance)
    with _highdicom_errors(source, "SEG"):
        seg = make_seg(
            clean,
            mask,
            np.asarray(result.prob_map) if probability_map else None,
            algorithm_parameters=c.algorithm_parameters(result, findings.thresholds),
            provenance=provenance,
            sop_instance_uid=sop,
            series_instance_uid=series,
            series_number=SERIES_NUMBERS["SEG"],
            instance_number=instance_number(clean),
        )
    _drop_pixel_measures_without_frame_of_reference(seg)
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = clean.get("PatientOrientation")
    return finish(seg, clean)


def _drop_pixel_measures_without_frame_of_reference(seg: Dataset) -> None:
    # highdicom copies Pixel Spacing into a Pixel Measures item without Slice Thickness, which its own reader then
    # refuses; without a Frame of Reference (a projection radiograph) the macro is not required, so it is left out.
    if "FrameOfReferenceUID" in seg:
        return
    for item in seg.get("SharedFunctionalGroupsSequence", []):
        if "PixelMeasuresSequence" in item and "SliceThickness" not in item.PixelMeasuresSequence[0]:
            del item.PixelMeasuresSequence


def build_gsps(source: Dataset, image: XrayImage, result: AnalysisResult, findings: Findings) -> Dataset:
    """A GSPS drawing ``findings.fused`` as rectangles (closed polylines, source pixels) labelled with their
    confidences."""
    clean = clean_header(source).dataset
    provenance = c.provenance_key(result, findings.thresholds)
    sop, series = result_uids(clean, "GSPS", provenance)
    with _highdicom_errors(source, "GSPS"):
        gsps = make_gsps(
            clean, image, findings, sop_instance_uid=sop, series_instance_uid=series,
            series_number=SERIES_NUMBERS["GSPS"], instance_number=instance_number(clean),
        )  # fmt: skip
    # Laterality is Type 2C, required for a paired body part. A chest is not one; for anything else dciodvfy's
    # reading of the condition varies by body part, so the side is given as the source has it, or empty (unknown).
    if str(clean.get("BodyPartExamined") or "") == "CHEST":
        gsps.BodyPartExamined = "CHEST"
    elif "Laterality" not in gsps:
        side = str(source.get("Laterality") or source.get("ImageLaterality") or "")
        gsps.Laterality = side if side in ("R", "L") else None
    return finish(gsps, clean)


def dataset_bytes(ds: Dataset) -> bytes:
    """``ds`` as a DICOM file (preamble, file meta) in memory."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_results(
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    out_dir: str | Path,
    *,
    gsps: bool = False,
    probability_map: bool = False,
    include_identifiers: bool = False,
    notes: list[str] | None = None,
) -> list[Path]:
    """Write the SR (always), the SEG (when the mask has a pixel) and the GSPS (with ``gsps``) for one analysed
    DICOM image into ``out_dir`` (created when needed), atomically.

    The source file is ``image.source``; it is only read. File names are ``<export_stem>_SR.dcm``, ``…_SEG.dcm``,
    ``…_GSPS.dcm`` (:func:`pneumoview.export.export_stem`: no identifiers unless ``include_identifiers``).

    Only the SR is essential: when the SEG or GSPS cannot be written (a GSPS is grayscale only, so none for a colour
    image; highdicom refuses a SEG on an MR image without a valid Frame of Reference …) the other files are still
    written and a sentence per problem is appended to ``notes``; without ``notes`` a DicomResultsError says which
    files were written and what is missing.

    Returns:
        the files written, SR first.

    Raises:
        DicomResultsError: the source is not a DICOM image (PNG/JPEG input has no study to join), its header
            cannot be read or the SR cannot be written; the message names the file.
    """
    source = source_header(image)
    out = Path(out_dir)
    stem = export_stem(image, include_identifiers)
    written = [
        atomic_write_bytes(out / f"{stem}_SR.dcm", dataset_bytes(build_sr(source, image, result, findings)))
    ]
    problems: list[str] = []
    try:
        seg = build_seg(source, image, result, findings, probability_map=probability_map)
        if seg is not None:
            written.append(atomic_write_bytes(out / f"{stem}_SEG.dcm", dataset_bytes(seg)))
    except DicomResultsError as exc:
        problems.append(str(exc))
    if gsps and int(source.get("SamplesPerPixel", 1) or 1) != 1:
        problems.append(f"{image.source}: no GSPS, since the image is in colour (a GSPS is grayscale only)")
    elif gsps:
        try:
            written.append(
                atomic_write_bytes(
                    out / f"{stem}_GSPS.dcm", dataset_bytes(build_gsps(source, image, result, findings))
                )
            )
        except DicomResultsError as exc:
            problems.append(str(exc))
    if problems and notes is None:
        raise DicomResultsError(f"the SR was written to {written[0]}, but " + "; ".join(problems))
    if notes is not None:
        notes.extend(problems)
    return written


def source_header(image: XrayImage) -> Dataset:
    """The header of ``image.source``.

    Raises:
        DicomResultsError: ``image`` was not read from DICOM, is multi-frame (only its first frame was analysed, so
            results could not say which frames they are about), or its header cannot be read again.
    """
    if "SOPInstanceUID" not in image.identifiers:
        raise DicomResultsError(
            f"{image.source}: DICOM results are written only for DICOM images; a PNG or JPEG file has no study "
            "to join (analyse the DICOM original instead)."
        )
    if image.frame_count > 1:
        raise DicomResultsError(
            f"{image.source}: this image has {image.frame_count} frames and only the first was analysed; DICOM "
            "results are written for single-frame radiographs only (the CSVs and PNG have the first frame's results)."
        )
    try:
        return read_source(image.source)
    except ValueError as exc:
        raise DicomResultsError(str(exc)) from exc
