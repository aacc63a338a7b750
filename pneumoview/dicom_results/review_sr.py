"""A reader's review as its own TID 1500 SR (the reader as a PERSON observer), written beside the algorithm's SR,
which is never altered.

Each reviewed box is a planar ROI group: the box after the decision as a closed 5-point POLYLINE in the source's
``(column, row)`` pixel frame, the decision (accepted / rejected / edited / added) as a qualitative evaluation, the
box source and, for a box the algorithm reported, its confidence and the **same Tracking Unique Identifier** as the
algorithm SR's region, so a viewer can pair each decision with the finding it is about.
"""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pneumoview.dicom_results import content as c
from pneumoview.dicom_results.sr import make_sr, region_group
from pneumoview.dicom_results.stored import StoredSR
from pneumoview.dicom_results.writer import clean_header, dataset_bytes, finish, source_header
from pneumoview.export import atomic_write_bytes, export_stem
from pneumoview.review import ADDED, FindingRef, ImageReview, ReviewedBox
from pneumoview.types import XrayImage

__all__ = ["build_review_sr", "review_from_sr", "write_review_sr"]


def _review_uids(source: Dataset, review: ImageReview) -> tuple[str, str]:
    stamp = review.time.astimezone(UTC).isoformat()
    sop = c.derived_uid("REVIEW", str(source.SOPInstanceUID), review.reader, stamp)
    series = c.derived_uid("REVIEW-series", str(source.StudyInstanceUID))
    return sop, series


def build_review_sr(source: Dataset, image: XrayImage, review: ImageReview) -> Dataset:
    """The review SR: one planar ROI group per reviewed box (accepted, rejected, edited or added), its region the
    box after the decision as a closed 5-point POLYLINE in ``(column, row)`` source pixels, the decision as a
    qualitative evaluation, the algorithm finding's Tracking UID when there is one; the reader as PERSON observer.
    Its SOP Instance UID is derived from the source, the reader and the review time."""
    clean = clean_header(source).dataset
    sop_uid = str(clean.SOPInstanceUID)
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = []
    n_added = 0
    for box in review.boxes:
        f = box.finding
        if f is None:
            tracking_uid = c.derived_uid(
                "review-added", sop_uid, review.reader, box.time.isoformat(), str(n_added)
            )
            tracking_id = f"added {n_added}"
            n_added += 1
        else:
            tracking_uid = f.tracking_uid or c.derived_uid("review-finding", sop_uid, str(f.index))
            tracking_id = f"box {f.index}"
        groups.append(
            region_group(
                clean,
                box.box_xyxy,
                tracking_uid=tracking_uid,
                tracking_id=tracking_id,
                source_label="reader" if f is None else f.source,
                confidence=None if f is None else f.confidence,
                decision=box.decision,
            )
        )
    if not groups:  # a review that decided nothing still says which image the reader saw
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=c.derived_uid("review-image", sop_uid, review.reader, review.time.isoformat()),
                    identifier="image",
                ),
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(clean)],
            )
        )
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=review.reader),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person),
        procedure_reported=c.PROCEDURE,
        imaging_measurements=groups,
    )
    sop, series = _review_uids(clean, review)
    when = review.time.astimezone(UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sr = make_sr(
            clean, report, kind="REVIEW", sop_instance_uid=sop, series_instance_uid=series,
            series_description="PneumoView reader review (research use only)",
            content_date=when.date(), content_time=when.time().replace(tzinfo=None),
        )  # fmt: skip
    return finish(sr, clean)


def write_review_sr(
    review: ImageReview, image: XrayImage, out_dir: str | Path, *, include_identifiers: bool = False
) -> Path:
    """Write :func:`build_review_sr` for ``image.source`` into ``out_dir`` as
    ``<export_stem>_REVIEW_<UTC time>.dcm`` (a new file per saved review; earlier ones and the algorithm SR are left
    as they are).

    Raises:
        DicomResultsError: the source is not DICOM or its header cannot be read.
    """
    ds = build_review_sr(source_header(image), image, review)
    stamp = review.time.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{export_stem(image, include_identifiers)}_REVIEW_{stamp}.dcm"
    return atomic_write_bytes(Path(out_dir) / name, dataset_bytes(ds))


_BOX_ID = re.compile(r"^box (\d+)$")


def review_from_sr(stored: StoredSR, image_id: str, algorithm: StoredSR | None = None) -> ImageReview:
    """The :class:`~pneumoview.review.ImageReview` a review SR holds (reader, decisions, boxes; every decision gets
    the SR's content time).

    A review SR stores each box after the decision; with the ``algorithm`` SR reviewed, each finding's original box,
    confidence and the algorithm SR's UID are taken from the region with the same Tracking UID (without it, a
    finding's box is the reviewed one).

    Raises:
        ValueError: ``stored`` is not a review SR (no person observer) or a region has no decision.
    """
    if not stored.is_review:
        raise ValueError(f"{stored.path}: this SR was made by a device, not a reader's review")
    text = stored.content_datetime.split(".")[0]
    try:
        when = datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        when = datetime.now(UTC)
    originals = {r.tracking_uid: r for r in algorithm.regions} if algorithm is not None else {}
    boxes = []
    for r in stored.regions:
        if r.decision is None:
            raise ValueError(f"{stored.path}: region {r.tracking_id!r} has no reader decision")
        if r.decision == ADDED:
            boxes.append(ReviewedBox(None, ADDED, r.box_xyxy, stored.observer_name, when))
            continue
        m = _BOX_ID.match(r.tracking_id)
        index = int(m.group(1)) if m else len(boxes)
        original = originals.get(r.tracking_uid, r)
        finding = FindingRef(
            index=index,
            box_xyxy=original.box_xyxy,
            confidence=original.confidence if original.confidence is not None else 0.0,
            source=original.source or "fused",
            tracking_uid=r.tracking_uid,
            algorithm_sr_uid=None if algorithm is None else algorithm.sop_instance_uid,
        )
        boxes.append(ReviewedBox(finding, r.decision, r.box_xyxy, stored.observer_name, when))
    return ImageReview(
        image_id=image_id,
        reader=stored.observer_name,
        boxes=tuple(boxes),
        time=when,
        source_sop_instance_uid=stored.referenced_sop_instance_uid,
        algorithm_sr_uid=None if algorithm is None else algorithm.sop_instance_uid,
    )
