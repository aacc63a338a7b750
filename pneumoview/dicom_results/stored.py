"""What a DICOM result object (SR, SEG, GSPS) says about an image, read back into plain frozen values.

Coordinates: boxes are ``(x1, y1, x2, y2)`` in the **referenced source image's pixel frame** (``x`` along columns,
``y`` along rows, pixels, ``(0, 0)`` the top-left corner of the top-left pixel); SR polylines store the same box as
five ``(column, row)`` points. Masks and probability maps are ``(rows, cols)`` arrays on the source image's grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ImageResults", "StoredGSPS", "StoredRegion", "StoredSEG", "StoredSR"]

BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class StoredRegion:
    """One planar region of an SR (TID 1410), e.g. one reported box.

    Attributes:
        box_xyxy: the polyline's bounding box in source pixels.
        points: the polyline as ``(column, row)`` points, as stored.
        finding: the finding type's code meaning (e.g. ``"Lung opacity"``).
        tracking_id: the Tracking Identifier text (PneumoView writes ``"box N"``, N = ``box_index``).
        tracking_uid: the Tracking Unique Identifier.
        confidence: the box confidence in ``[0, 1]``, None when the SR has none.
        source: ``"detector"``, ``"segmentation"``, ``"fused"`` (algorithm SR) or ``"reader"``, None when unknown.
        decision: for a review SR, ``"accepted"``, ``"rejected"``, ``"edited"`` or ``"added"``; None otherwise.
        reviewed_tracking_uid: for a review SR, the Tracking Unique Identifier of the algorithm region decided on.
    """

    box_xyxy: BoxXYXY
    points: tuple[tuple[float, float], ...]
    finding: str
    tracking_id: str
    tracking_uid: str
    confidence: float | None = None
    source: str | None = None
    decision: str | None = None
    reviewed_tracking_uid: str | None = None


@dataclass(frozen=True)
class StoredSR:
    """A TID 1500 measurement report about one image.

    Attributes:
        path: the file it was read from.
        sop_instance_uid: the SR's SOP Instance UID.
        study_instance_uid: its study (the source image's).
        referenced_sop_instance_uid: the source image it is about.
        observer: ``"device"`` (an algorithm) or ``"person"`` (a reader's review).
        observer_name: the device name or the reader's name.
        algorithm_name: Algorithm Name, "" when absent.
        algorithm_version: Algorithm Version, "" when absent.
        algorithm_parameters: Algorithm Parameters as stored (PneumoView: ``model=id@version#sha12`` per model and
            ``thresholds={json}``).
        probabilities: the image-level probabilities by concept meaning (e.g. ``"Probability of lung opacity"``).
        p_opacity: the classifier's P(opacity), None when absent.
        regions: the planar regions in stored order.
        manufacturer: Manufacturer of the SR's equipment (``"PneumoView"`` for ours).
        content_datetime: Content Date + Time as ISO text.
    """

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    referenced_sop_instance_uid: str
    observer: str
    observer_name: str
    algorithm_name: str = ""
    algorithm_version: str = ""
    algorithm_parameters: tuple[str, ...] = ()
    probabilities: Mapping[str, float] = field(default_factory=dict)
    p_opacity: float | None = None
    regions: tuple[StoredRegion, ...] = ()
    manufacturer: str = ""
    content_datetime: str = ""

    @property
    def is_review(self) -> bool:
        """True for a reader's review (person observer)."""
        return self.observer == "person"


@dataclass(frozen=True, eq=False)
class StoredSEG:
    """A segmentation of one image.

    Attributes:
        path: the file it was read from.
        sop_instance_uid: the SEG's SOP Instance UID.
        study_instance_uid: its study.
        referenced_sop_instance_uid: the source image.
        mask: bool ``(rows, cols)``: the binary segment (the opacity mask), all False when it has none.
        probability: float32 ``(rows, cols)`` in ``[0, 1]`` from a FRACTIONAL (PROBABILITY) segment, or None.
        segment_labels: every segment's label in segment-number order.
        algorithm_name: the segments' Algorithm Name, "" when absent.
        algorithm_version: their Algorithm Version.
    """

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    referenced_sop_instance_uid: str
    mask: np.ndarray
    probability: np.ndarray | None = None
    segment_labels: tuple[str, ...] = ()
    algorithm_name: str = ""
    algorithm_version: str = ""


@dataclass(frozen=True)
class StoredGSPS:
    """A grayscale softcopy presentation state's annotations on one image.

    Attributes:
        path: the file it was read from.
        sop_instance_uid: its SOP Instance UID.
        study_instance_uid: its study.
        referenced_sop_instance_uid: the source image.
        boxes_xyxy: every closed rectangular polyline's bounding box, in source pixels.
        labels: the text annotations (PneumoView: ``"opacity 0.87 (fused)"``) in stored order.
    """

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    referenced_sop_instance_uid: str
    boxes_xyxy: tuple[BoxXYXY, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageResults:
    """Every result object found for one source image (by its SOP Instance UID)."""

    sop_instance_uid: str
    srs: tuple[StoredSR, ...] = ()
    segs: tuple[StoredSEG, ...] = ()
    gsps: tuple[StoredGSPS, ...] = ()

    @property
    def algorithm_srs(self) -> tuple[StoredSR, ...]:
        """SRs made by a device (an algorithm)."""
        return tuple(s for s in self.srs if not s.is_review)

    @property
    def reviews(self) -> tuple[StoredSR, ...]:
        """Readers' review SRs, oldest first."""
        return tuple(sorted((s for s in self.srs if s.is_review), key=lambda s: s.content_datetime))
