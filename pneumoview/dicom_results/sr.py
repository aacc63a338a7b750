"""TID 1500 Comprehensive 3D SR content: the algorithm's report and the pieces the review SR shares.

Regions are closed 5-point POLYLINEs in the source image's ``(column, row)`` pixel frame, ``(0, 0)`` the top-left
corner of the top-left pixel (the frame PneumoView's boxes use), corners in the order top-left, top-right,
bottom-right, bottom-left, top-left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pneumoview.dicom_results import content as c
from pneumoview.postprocess import Findings
from pneumoview.types import AnalysisResult

__all__ = ["box_polyline", "make_sr", "region_group"]

SERIES_NUMBERS = {"SR": 901, "SEG": 902, "GSPS": 903, "REVIEW": 904}


def box_polyline(box_xyxy: Sequence[float]) -> np.ndarray:
    """``(5, 2)`` float32 ``(column, row)`` points of a box's closed outline."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)


def algorithm_id(result: AnalysisResult, findings: Findings) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=c.ALGORITHM_NAME,
        version=c.ALGORITHM_VERSION,
        parameters=c.algorithm_parameters(result, findings.thresholds),
    )


def region_group(
    source: Dataset,
    box_xyxy: Sequence[float],
    *,
    tracking_uid: str,
    tracking_id: str,
    source_label: str,
    confidence: float | None = None,
    decision: str | None = None,
    algorithm: hd.sr.AlgorithmIdentification | None = None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """One TID 1410 planar ROI group: the box's polyline on ``source``, the finding type, the box source, the
    confidence (Certainty of Finding, no units, in ``[0, 1]``) and a reader's decision when given."""
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=box_polyline(box_xyxy),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    measurements = []
    if confidence is not None:
        measurements.append(
            hd.sr.Measurement(
                name=c.CERTAINTY, value=float(confidence), unit=c.NO_UNITS, algorithm_id=algorithm
            )
        )
    evaluations = [hd.sr.QualitativeEvaluation(c.BOX_SOURCE, c.SOURCE_VALUES[source_label])]
    if decision is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(c.DECISION, c.DECISION_VALUES[decision]))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=tracking_id),
        referenced_region=region,
        finding_type=c.FINDING,
        finding_category=c.CLINICAL_FINDING,
        finding_sites=[hd.sr.FindingSite(c.FINDING_SITE)],
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )


def box_tracking_uid(source_sop_uid: str, provenance: str, index: int) -> str:
    """The Tracking Unique Identifier of the algorithm's box ``index`` (a review refers to it)."""
    return c.derived_uid("track", source_sop_uid, provenance, str(index))


def device_context() -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=c.derived_uid("device", c.MANUFACTURER),
            name=c.ALGORITHM_NAME,
            manufacturer_name=c.MANUFACTURER,
            model_name=f"{c.ALGORITHM_NAME} {c.ALGORITHM_VERSION}",
        ),
    )


def measurement_report(
    source: Dataset, result: AnalysisResult, findings: Findings, provenance: str
) -> hd.sr.MeasurementReport:
    """The algorithm's TID 1500 content: an image-level group with the classifier's probabilities (TID 1501)
    and one planar ROI group per final box, in ``findings.fused`` order."""
    algorithm = algorithm_id(result, findings)
    sop_uid = str(source.SOPInstanceUID)
    measurements = []
    if result.p_opacity is not None:
        measurements.append(
            hd.sr.Measurement(name=c.P_OPACITY, value=float(result.p_opacity), unit=c.NO_UNITS)
        )
    if result.class_probs is not None:
        for i, (name, p) in enumerate(zip(result.class_names, result.class_probs, strict=True)):
            measurements.append(
                hd.sr.Measurement(name=c.class_probability_concept(i, name), value=float(p), unit=c.NO_UNITS)
            )
    groups: list = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=c.derived_uid("track-image", sop_uid, provenance), identifier="image"
            ),
            finding_type=c.FINDING,
            finding_category=c.CLINICAL_FINDING,
            algorithm_id=algorithm,
            measurements=measurements or None,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        )
    ]
    fused = findings.fused
    for i, (box, score, src) in enumerate(zip(fused.xyxy(), fused.scores, fused.sources, strict=True)):
        groups.append(
            region_group(
                source,
                box,
                tracking_uid=box_tracking_uid(sop_uid, provenance, i),
                tracking_id=f"box {i}",
                source_label=src,
                confidence=float(score),
                algorithm=algorithm,
            )
        )
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_context()),
        procedure_reported=c.PROCEDURE,
        imaging_measurements=groups,
    )


def make_sr(
    source: Dataset,
    report: hd.sr.MeasurementReport,
    *,
    kind: str,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_description: str,
    **kwargs: Any,
) -> hd.sr.Comprehensive3DSR:
    """Wrap a report as a Comprehensive 3D SR in the source's study (``kwargs`` go to highdicom, e.g.
    ``content_date``)."""
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SERIES_NUMBERS[kind],
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number(source),
        manufacturer=c.MANUFACTURER,
        is_complete=True,
        series_description=series_description,
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=c.SCHEME, name="PneumoView local codes", responsible_organization=c.MANUFACTURER
            )
        ],
        **kwargs,
    )
    return sr


def instance_number(source: Dataset) -> int:
    try:
        n = int(source.get("InstanceNumber") or 1)
    except (TypeError, ValueError):
        n = 1
    return n if 0 < n < 2**31 else 1
