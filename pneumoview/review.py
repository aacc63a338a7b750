"""A reader's review of the boxes PneumoView reported for one image (Qt-free frozen values).

The reader accepts or rejects each reported box, moves or resizes it (``edited``) or draws one the models missed
(``added``). A review never alters the algorithm's results: it is saved next to them as its own SR (with the reader
as a PERSON observer; :func:`pneumoview.dicom_results.write_review_sr`) and as the ``review`` column of
``findings.csv`` (:func:`review_column`).

Coordinates: every box is ``(x1, y1, x2, y2)`` in the **source image's pixel frame** — ``x`` along columns, ``y``
along rows, ``(0, 0)`` the top-left corner of the top-left pixel as displayed, ``x2 > x1`` and ``y2 > y1`` in pixels
(``x2 = x + w`` of the RSNA ``x y w h`` convention). Times are timezone-aware (UTC when created here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import UTC, datetime

__all__ = [
    "DECISIONS",
    "FindingRef",
    "ImageReview",
    "ReviewedBox",
    "review_column",
]

ACCEPTED, REJECTED, EDITED, ADDED = "accepted", "rejected", "edited", "added"
DECISIONS = (ACCEPTED, REJECTED, EDITED, ADDED)

BoxXYXY = tuple[float, float, float, float]


def _check_box(box: Sequence[float], what: str) -> BoxXYXY:
    if len(box) != 4:
        raise ValueError(f"{what} must be (x1, y1, x2, y2) in pixels, got {len(box)} values")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"{what} has a NaN or infinite coordinate: {box!r}")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{what} must have x2 > x1 and y2 > y1 (pixels), got {box!r}")
    return (x1, y1, x2, y2)


def _utc(t: datetime | None) -> datetime:
    if t is None:
        return datetime.now(UTC)
    if t.tzinfo is None:
        raise ValueError(f"review times must be timezone-aware, got naive {t.isoformat()}")
    return t


@dataclass(frozen=True)
class FindingRef:
    """The algorithm finding a reviewed box refers to.

    Attributes:
        index: the finding's ``box_index`` (0-based, in the order of ``findings.csv`` and of the algorithm SR's
            regions).
        box_xyxy: the box as the algorithm reported it, ``(x1, y1, x2, y2)`` in source pixels.
        confidence: the box confidence in ``[0, 1]``.
        source: ``"detector"``, ``"segmentation"`` or ``"fused"``.
        tracking_uid: the Tracking Unique Identifier of the finding's region in the algorithm SR, when one was
            written (it ties the review SR to that region).
        algorithm_sr_uid: the SOP Instance UID of the algorithm SR holding the finding, when known.
    """

    index: int
    box_xyxy: BoxXYXY
    confidence: float
    source: str
    tracking_uid: str | None = None
    algorithm_sr_uid: str | None = None

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"a finding index is 0 or more, got {self.index}")
        object.__setattr__(self, "box_xyxy", _check_box(self.box_xyxy, "the finding's box"))
        if not 0.0 <= float(self.confidence) <= 1.0:
            raise ValueError(f"a confidence is in [0, 1], got {self.confidence}")


@dataclass(frozen=True)
class ReviewedBox:
    """One reader decision.

    Attributes:
        finding: the algorithm finding decided on; None for a box the reader ``added``.
        decision: ``"accepted"``, ``"rejected"``, ``"edited"`` (moved or resized; ``box_xyxy`` is the new box) or
            ``"added"`` (drawn by the reader).
        box_xyxy: the box after the decision, ``(x1, y1, x2, y2)`` in source pixels (for ``accepted`` and
            ``rejected``: the finding's box).
        reader: the reader's name as entered (e.g. ``"Dr A. Smith"``).
        time: when the decision was made (timezone-aware).
        comment: free text, may be empty.
    """

    finding: FindingRef | None
    decision: str
    box_xyxy: BoxXYXY
    reader: str
    time: datetime
    comment: str = ""

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"unknown review decision {self.decision!r}; valid: {', '.join(DECISIONS)}")
        if (self.finding is None) != (self.decision == ADDED):
            raise ValueError("a box is 'added' exactly when it refers to no algorithm finding")
        if not self.reader.strip():
            raise ValueError("a review needs the reader's name")
        object.__setattr__(self, "box_xyxy", _check_box(self.box_xyxy, "the reviewed box"))
        object.__setattr__(self, "time", _utc(self.time))

    @classmethod
    def accept(cls, finding: FindingRef, reader: str, time: datetime | None = None) -> ReviewedBox:
        return cls(finding, ACCEPTED, finding.box_xyxy, reader, _utc(time))

    @classmethod
    def reject(cls, finding: FindingRef, reader: str, time: datetime | None = None) -> ReviewedBox:
        return cls(finding, REJECTED, finding.box_xyxy, reader, _utc(time))

    @classmethod
    def edit(
        cls, finding: FindingRef, box_xyxy: Sequence[float], reader: str, time: datetime | None = None
    ) -> ReviewedBox:
        return cls(finding, EDITED, _check_box(box_xyxy, "the edited box"), reader, _utc(time))

    @classmethod
    def add(cls, box_xyxy: Sequence[float], reader: str, time: datetime | None = None) -> ReviewedBox:
        return cls(None, ADDED, _check_box(box_xyxy, "the added box"), reader, _utc(time))


@dataclass(frozen=True)
class ImageReview:
    """Every decision one reader made on one image.

    Attributes:
        image_id: ``XrayImage.image_id`` of the reviewed image.
        reader: the reader's name.
        boxes: the decisions, at most one per finding index, in the order made (added boxes anywhere).
        time: when the review was saved (timezone-aware).
        source_sop_instance_uid: the reviewed image's SOP Instance UID (None for PNG/JPEG sources).
        algorithm_sr_uid: the SOP Instance UID of the algorithm SR that was reviewed, when one exists.
    """

    image_id: str
    reader: str
    boxes: tuple[ReviewedBox, ...] = ()
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    source_sop_instance_uid: str | None = None
    algorithm_sr_uid: str | None = None

    def __post_init__(self) -> None:
        if not self.reader.strip():
            raise ValueError("a review needs the reader's name")
        object.__setattr__(self, "boxes", tuple(self.boxes))
        object.__setattr__(self, "time", _utc(self.time))
        seen: set[int] = set()
        for b in self.boxes:
            if b.finding is not None:
                if b.finding.index in seen:
                    raise ValueError(f"finding {b.finding.index} has more than one review decision")
                seen.add(b.finding.index)

    def decision_for(self, index: int) -> ReviewedBox | None:
        """The decision on algorithm finding ``index``, None when the reader left it undecided."""
        for b in self.boxes:
            if b.finding is not None and b.finding.index == index:
                return b
        return None

    @property
    def added(self) -> tuple[ReviewedBox, ...]:
        """The boxes the reader drew."""
        return tuple(b for b in self.boxes if b.decision == ADDED)

    def with_decision(self, box: ReviewedBox) -> ImageReview:
        """A copy with ``box`` replacing any earlier decision on the same finding (or appended)."""
        if box.finding is None:
            return dc_replace(self, boxes=(*self.boxes, box))
        kept = tuple(b for b in self.boxes if b.finding is None or b.finding.index != box.finding.index)
        return dc_replace(self, boxes=(*kept, box))


def review_column(review: ImageReview | None, index: int | None) -> str:
    """The ``review`` cell of ``findings.csv`` for algorithm finding ``index``.

    ``""`` without a review, for the image's no-box row (``index`` None) or when the finding was left undecided;
    otherwise ``"accepted by READER"``, ``"rejected by READER"`` or ``"edited by READER: x1 y1 x2 y2"`` (source
    pixels, 1 decimal). Boxes the reader added get rows of their own (``"added by READER"``).
    """
    if review is None or index is None:
        return ""
    b = review.decision_for(index)
    if b is None:
        return ""
    if b.decision == EDITED:
        return f"edited by {b.reader}: " + " ".join(f"{v:.1f}" for v in b.box_xyxy)
    return f"{b.decision} by {b.reader}"
