"""Read SR, SEG and GSPS objects (PneumoView's or anyone's) back into :mod:`pneumoview.dicom_results.stored`
values: SR and SEG with highdicom, GSPS graphic annotations with pydicom.

Coordinates come back in the referenced image's pixel frame: SR/GSPS points as ``(column, row)``, boxes as
``(x1, y1, x2, y2)`` = the points' bounding box, masks as ``(rows, cols)`` arrays.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from pneumoview.dicom_results import content as c
from pneumoview.dicom_results.seg import MASK_LABEL, PROBABILITY_LABEL
from pneumoview.dicom_results.stored import ImageResults, StoredGSPS, StoredRegion, StoredSEG, StoredSR

__all__ = ["is_result_dataset", "read_result", "read_results"]

SR_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    }
)
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
RESULT_CLASSES = SR_CLASSES | {SEG_CLASS, GSPS_CLASS}


def is_result_dataset(ds: Dataset) -> bool:
    """True when ``ds`` (a header is enough) is a result this module reads: Comprehensive 3D / Enhanced /
    Comprehensive SR, Segmentation or Grayscale Softcopy Presentation State."""
    return str(ds.get("SOPClassUID", "")) in RESULT_CLASSES


def read_result(path: str | Path) -> StoredSR | StoredSEG | StoredGSPS:
    """Read one result file.

    Raises:
        ValueError: the file is not a result object this module reads, or is malformed (the message names the
            file).
    """
    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{p}: cannot be read as DICOM ({exc})") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in RESULT_CLASSES:
        name = UID(sop_class).name if sop_class else "an object without SOP Class UID"
        raise ValueError(f"{p}: this is {name}, not an SR, SEG or GSPS; PneumoView cannot show it as results")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if sop_class == SEG_CLASS:
                return _read_seg(p, ds)
            if sop_class == GSPS_CLASS:
                return _read_gsps(p, ds)
            return _read_sr(p, ds)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"{p}: the {UID(sop_class).name} is malformed and cannot be read ({exc})") from exc


def read_results(paths: Iterable[str | Path]) -> dict[str, ImageResults]:
    """Read every result among ``paths`` (other files, and results that cannot be read, are ignored) and group them
    by the SOP Instance UID of the image they refer to."""
    grouped: dict[str, dict[str, list[Any]]] = {}
    for p in paths:
        try:
            obj = read_result(p)
        except ValueError:
            continue
        entry = grouped.setdefault(obj.referenced_sop_instance_uid, {"sr": [], "seg": [], "gsps": []})
        key = "sr" if isinstance(obj, StoredSR) else "seg" if isinstance(obj, StoredSEG) else "gsps"
        entry[key].append(obj)
    return {
        uid: ImageResults(uid, tuple(e["sr"]), tuple(e["seg"]), tuple(e["gsps"]))
        for uid, e in grouped.items()
    }


# ------------------------------------------------------------------------------------------------------------
# SR
# ------------------------------------------------------------------------------------------------------------


def _walk(items: Iterable[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _code_value(item: Dataset) -> tuple[str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return ("", "")
    return (str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator))


def _texts(root: Dataset, code: tuple[str, str]) -> list[str]:
    return [str(i.TextValue) for i in _walk(root.get("ContentSequence", [])) if _code_value(i) == code]


def _evidence_uids(ds: Dataset) -> list[str]:
    uids = []
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                uids += [str(r.ReferencedSOPInstanceUID) for r in series.get("ReferencedSOPSequence", [])]
    return uids


def _value_meaning(items: Iterable[Any], concept: hd.sr.CodedConcept) -> str | None:
    for item in items:
        if item.name == concept:
            return str(item.value.meaning)
    return None


def _read_sr(path: Path, ds: Dataset) -> StoredSR:
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds) if ds.SOPClassUID.endswith(".34") else None
    report = sr.content if sr is not None else None
    regions: list[StoredRegion] = []
    probabilities: dict[str, float] = {}
    observer, observer_name = "device", ""
    if isinstance(report, hd.sr.MeasurementReport):
        for ctx in report.get_observer_contexts():
            attrs = ctx.observer_identifying_attributes
            if ctx.observer_type.value == "121006":  # Person
                observer, observer_name = "person", str(attrs.name)
                break
            observer_name = str(getattr(attrs, "name", "") or "")
        for group in report.get_image_measurement_groups():
            for m in group.get_measurements():
                probabilities[str(m.name.meaning)] = float(m.value)
        for roi_group in report.get_planar_roi_measurement_groups():
            regions.append(_region(roi_group))
    refs = _evidence_uids(ds)
    params = _texts(ds, ("111002", "DCM"))
    return StoredSR(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        referenced_sop_instance_uid=refs[0] if refs else "",
        observer=observer,
        observer_name=observer_name,
        algorithm_name=next(iter(_texts(ds, ("111001", "DCM"))), ""),
        algorithm_version=next(iter(_texts(ds, ("111003", "DCM"))), ""),
        algorithm_parameters=tuple(dict.fromkeys(params)),
        probabilities=probabilities,
        p_opacity=probabilities.get(c.P_OPACITY_MEANING),
        regions=tuple(regions),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        content_datetime=f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}",
    )


def _region(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> StoredRegion:
    roi = group.roi
    points = np.asarray(roi.value, dtype=np.float64).reshape(-1, 2) if roi is not None else np.zeros((0, 2))
    if len(points):
        box = (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()),
               float(points[:, 1].max()))  # fmt: skip
    else:
        box = (0.0, 0.0, 0.0, 0.0)
    confidence = None
    for m in group.get_measurements():
        if m.name == c.CERTAINTY:
            confidence = float(m.value)
    evaluations = group.get_qualitative_evaluations()
    source = _value_meaning(evaluations, c.BOX_SOURCE)
    decision = _value_meaning(evaluations, c.DECISION)
    finding = group.finding_type
    return StoredRegion(
        box_xyxy=box,
        points=tuple((float(x), float(y)) for x, y in points),
        finding=str(finding.meaning) if finding is not None else "",
        tracking_id=str(group.tracking_identifier or ""),
        tracking_uid=str(group.tracking_uid or ""),
        confidence=confidence,
        source=None if source is None else source.lower(),
        decision=None if decision is None else decision.lower(),
        reviewed_tracking_uid=(str(group.tracking_uid) if decision is not None and decision.lower() != "added"
                               else None),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------------
# SEG
# ------------------------------------------------------------------------------------------------------------


def _read_seg(path: Path, ds: Dataset) -> StoredSEG:
    # highdicom writes, for a source with Pixel Spacing but no Slice Thickness (a radiograph), a Pixel Measures item
    # that its own reader refuses; the in-memory copy loses that item (the file is not touched).
    for item in ds.get("SharedFunctionalGroupsSequence", []):
        measures = item.get("PixelMeasuresSequence")
        if measures and "SliceThickness" not in measures[0]:
            del item.PixelMeasuresSequence
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    sources = seg.get_source_image_uids()
    if not sources:
        raise ValueError("it references no source image")
    ref = str(sources[0][2])
    labels = tuple(str(s.SegmentLabel) for s in seg.SegmentSequence)
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance([ref], segment_numbers=numbers, combine_segments=False)[0]
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    mask_index = labels.index(MASK_LABEL) if MASK_LABEL in labels else 0
    if fractional:
        mask = pixels[..., mask_index] >= 0.5
    else:
        mask = pixels.astype(bool).any(axis=-1) if MASK_LABEL not in labels else pixels[..., mask_index] > 0
    probability = None
    if fractional and PROBABILITY_LABEL in labels:
        probability = pixels[..., labels.index(PROBABILITY_LABEL)].astype(np.float32)
    algorithm = seg.SegmentSequence[mask_index].get("SegmentationAlgorithmIdentificationSequence")
    return StoredSEG(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        referenced_sop_instance_uid=ref,
        mask=np.ascontiguousarray(mask),
        probability=probability,
        segment_labels=labels,
        algorithm_name=str(algorithm[0].AlgorithmName) if algorithm else "",
        algorithm_version=str(algorithm[0].AlgorithmVersion) if algorithm else "",
    )


# ------------------------------------------------------------------------------------------------------------
# GSPS
# ------------------------------------------------------------------------------------------------------------


def _read_gsps(path: Path, ds: Dataset) -> StoredGSPS:
    refs: list[str] = []
    for series in ds.get("ReferencedSeriesSequence", []):
        refs += [str(r.ReferencedSOPInstanceUID) for r in series.get("ReferencedImageSequence", [])]
    boxes = []
    labels = []
    for ann in ds.get("GraphicAnnotationSequence", []):
        for g in ann.get("GraphicObjectSequence", []):
            if str(g.get("GraphicAnnotationUnits", "")) != "PIXEL" or str(g.GraphicType) not in ("POLYLINE",):
                continue
            pts = np.asarray(g.GraphicData, dtype=np.float64).reshape(-1, 2)
            boxes.append((float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
                          float(pts[:, 1].max())))  # fmt: skip
        labels += [str(t.UnformattedTextValue) for t in ann.get("TextObjectSequence", [])]
    return StoredGSPS(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        referenced_sop_instance_uid=refs[0] if refs else "",
        boxes_xyxy=tuple(boxes),
        labels=tuple(labels),
    )
