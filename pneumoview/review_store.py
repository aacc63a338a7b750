"""Where a reader's review lives between sessions, and how it meets the boxes on screen (Qt-free).

A review is kept per image in the **per-user data folder**, never beside the input (the user's folders are only
read): ``<reviews dir>/<image_id>/review.json`` holds the latest :class:`~pneumoview.review.ImageReview` of the
image (any input: DICOM, PNG or JPEG), and for a DICOM source ``<reviews dir>/<image_id>/dicom/`` holds the
review SRs (and the algorithm SR they refer to). ``<reviews dir>`` is ``$PNEUMOVIEW_REVIEWS_DIR`` when set, else
``reviews`` in the platform's per-user data folder (e.g. ``~/.local/share/PneumoView/reviews``). The folder name is
the non-identifying ``image_id``, so nothing there names the patient.

Coordinates: boxes here are ``(x1, y1, x2, y2)`` in source pixels (:mod:`pneumoview.review`); the post-processing's
``BoxSet`` stores ``[x, y, w, h]`` in the same pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from pneumoview.export import write_json
from pneumoview.review import ADDED, FindingRef, ImageReview, ReviewedBox

if TYPE_CHECKING:
    from pneumoview.postprocess import Findings

__all__ = [
    "REVIEWS_DIR_ENV",
    "ReviewMark",
    "ReviewStore",
    "box_matches",
    "finding_refs",
    "review_from_json",
    "review_marks",
    "review_to_json",
    "reviews_dir",
]

REVIEWS_DIR_ENV = "PNEUMOVIEW_REVIEWS_DIR"
FORMAT = "pneumoview-review/1"
# A decision belongs to the box on screen when the box has not moved by more than this (pixels): the boxes are
# recomputed from the same model outputs, so a real match is exact up to float rounding.
MATCH_TOLERANCE_PX = 0.5


def reviews_dir() -> Path:
    """The folder holding every saved review (see the module docstring)."""
    env = os.environ.get(REVIEWS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("PneumoView", appauthor=False)) / "reviews"


# ----------------------------------------------------------------------------------------------------------------
# Serialisation


def _box(values: Any, what: str) -> tuple[float, float, float, float]:
    if not isinstance(values, list | tuple) or len(values) != 4:
        raise ValueError(f"{what} must be a list of 4 numbers")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def review_to_json(review: ImageReview) -> dict[str, Any]:
    """A JSON-ready dict of ``review`` (times as ISO 8601 with their offset; boxes in source pixels)."""

    def finding(f: FindingRef | None) -> dict[str, Any] | None:
        if f is None:
            return None
        return {
            "index": f.index,
            "box_xyxy": list(f.box_xyxy),
            "confidence": f.confidence,
            "source": f.source,
            "tracking_uid": f.tracking_uid,
            "algorithm_sr_uid": f.algorithm_sr_uid,
        }

    return {
        "format": FORMAT,
        "image_id": review.image_id,
        "reader": review.reader,
        "time": review.time.isoformat(),
        "source_sop_instance_uid": review.source_sop_instance_uid,
        "algorithm_sr_uid": review.algorithm_sr_uid,
        "boxes": [
            {
                "finding": finding(b.finding),
                "decision": b.decision,
                "box_xyxy": list(b.box_xyxy),
                "reader": b.reader,
                "time": b.time.isoformat(),
                "comment": b.comment,
            }
            for b in review.boxes
        ],
    }


def review_from_json(data: Mapping[str, Any]) -> ImageReview:
    """The :class:`ImageReview` of :func:`review_to_json`'s dict.

    Raises:
        ValueError: the dict is not a PneumoView review or a value is invalid (the message says which).
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ValueError(f"not a PneumoView review (expected format {FORMAT!r})")
    boxes = []
    for i, b in enumerate(data.get("boxes") or []):
        f = b.get("finding")
        ref = None
        if f is not None:
            ref = FindingRef(
                index=int(f["index"]),
                box_xyxy=_box(f["box_xyxy"], f"box {i}'s finding"),
                confidence=float(f["confidence"]),
                source=str(f["source"]),
                tracking_uid=f.get("tracking_uid"),
                algorithm_sr_uid=f.get("algorithm_sr_uid"),
            )
        boxes.append(
            ReviewedBox(
                finding=ref,
                decision=str(b["decision"]),
                box_xyxy=_box(b["box_xyxy"], f"box {i}"),
                reader=str(b["reader"]),
                time=datetime.fromisoformat(str(b["time"])),
                comment=str(b.get("comment", "")),
            )
        )
    return ImageReview(
        image_id=str(data["image_id"]),
        reader=str(data["reader"]),
        boxes=tuple(boxes),
        time=datetime.fromisoformat(str(data["time"])),
        source_sop_instance_uid=data.get("source_sop_instance_uid"),
        algorithm_sr_uid=data.get("algorithm_sr_uid"),
    )


class ReviewStore:
    """Saved reviews, one folder per ``image_id`` under ``root`` (default :func:`reviews_dir`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else reviews_dir()

    def folder(self, image_id: str) -> Path:
        """``root/<image_id>`` (the id is non-identifying; path separators are refused)."""
        if not image_id or "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise ValueError(f"not a usable image id for a review folder: {image_id!r}")
        return self.root / image_id

    def json_path(self, image_id: str) -> Path:
        return self.folder(image_id) / "review.json"

    def dicom_dir(self, image_id: str) -> Path:
        """Where the review SRs (and the algorithm SR they refer to) of a DICOM image are written."""
        return self.folder(image_id) / "dicom"

    def load(self, image_id: str) -> ImageReview | None:
        """The saved review of ``image_id``; None when there is none.

        Raises:
            ValueError: the file exists but cannot be used (the message names it and says what to do).
        """
        path = self.json_path(image_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return review_from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"the saved review {path} cannot be read ({exc}); move it away to start a new review"
            ) from exc

    def save(self, review: ImageReview) -> Path:
        """Write ``review`` atomically to its ``review.json`` (replacing the earlier state)."""
        path = self.json_path(review.image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json(path, review_to_json(review))


# ----------------------------------------------------------------------------------------------------------------
# Reviews and the boxes on screen


def finding_refs(
    findings: Findings, tracking_uids: Mapping[int, str] | None = None, algorithm_sr_uid: str | None = None
) -> list[FindingRef]:
    """A :class:`FindingRef` per final (fused) box, in ``findings.csv`` order (``box_index``).

    ``tracking_uids`` maps ``box_index`` to the Tracking UID of its region in the algorithm SR, when one exists.
    """
    fused = findings.fused
    refs = []
    for i, (box, score, src) in enumerate(zip(fused.boxes, fused.scores, fused.sources, strict=True)):
        x, y, w, h = (float(v) for v in box)
        refs.append(
            FindingRef(
                index=i,
                box_xyxy=(x, y, x + w, y + h),
                confidence=min(max(float(score), 0.0), 1.0),
                source=str(src),
                tracking_uid=(tracking_uids or {}).get(i),
                algorithm_sr_uid=algorithm_sr_uid,
            )
        )
    return refs


def box_matches(a: Iterable[float], b: Iterable[float], tol: float = MATCH_TOLERANCE_PX) -> bool:
    """True when two ``(x1, y1, x2, y2)`` boxes are the same within ``tol`` pixels on every edge."""
    return all(abs(float(u) - float(v)) <= tol for u, v in zip(a, b, strict=True))


def current_decision(review: ImageReview | None, ref: FindingRef) -> ReviewedBox | None:
    """The decision on the finding ``ref`` *as it is on screen now*: a decision on the same index whose finding
    box is the same (a threshold change that renumbers or moves the boxes leaves earlier decisions unmatched)."""
    if review is None:
        return None
    b = review.decision_for(ref.index)
    if b is None or b.finding is None or not box_matches(b.finding.box_xyxy, ref.box_xyxy):
        return None
    return b


@dataclass(frozen=True)
class ReviewMark:
    """One box of the review layer.

    Attributes:
        box_xyxy: where to draw it, source pixels.
        decision: ``"accepted"``, ``"rejected"``, ``"edited"``, ``"added"`` or ``"undecided"``.
        label: short text for the canvas (``"#0 accepted"``; the reader is named in the findings panel).
        finding_index: the final box's ``box_index`` (None for an added box).
        added_position: the position of an added box among ``review.added`` (None otherwise).
        stale: a decision on a box that is no longer reported with the current thresholds.
    """

    box_xyxy: tuple[float, float, float, float]
    decision: str
    label: str
    finding_index: int | None = None
    added_position: int | None = None
    stale: bool = False


UNDECIDED = "undecided"


def review_marks(review: ImageReview | None, refs: list[FindingRef]) -> list[ReviewMark]:
    """What the review layer draws: every current final box (with its decision, or undecided), every added box,
    and decisions on boxes the current thresholds no longer report (``stale``, at their stored place)."""
    marks = []
    matched: set[int] = set()
    for ref in refs:
        b = current_decision(review, ref)
        if b is None:
            marks.append(ReviewMark(ref.box_xyxy, UNDECIDED, f"#{ref.index} undecided", ref.index))
        else:
            matched.add(ref.index)
            marks.append(ReviewMark(b.box_xyxy, b.decision, f"#{ref.index} {b.decision}", ref.index))
    if review is not None:
        k = 0
        for b in review.boxes:
            if b.decision == ADDED:
                marks.append(ReviewMark(b.box_xyxy, ADDED, "added", None, k))
                k += 1
            elif b.finding is not None and b.finding.index not in matched:
                marks.append(
                    ReviewMark(
                        b.box_xyxy, b.decision, f"#{b.finding.index} {b.decision} (other thresholds)",
                        b.finding.index, stale=True,
                    )
                )  # fmt: skip
    return marks


def without_decision(review: ImageReview, index: int) -> ImageReview:
    """A copy of ``review`` with no decision on finding ``index`` (undo)."""
    kept = tuple(b for b in review.boxes if b.finding is None or b.finding.index != index)
    return dc_replace(review, boxes=kept)


def replace_added(review: ImageReview, position: int, box: ReviewedBox | None) -> ImageReview:
    """A copy with the ``position``-th added box replaced by ``box`` (None removes it)."""
    out, k = [], 0
    for b in review.boxes:
        if b.decision == ADDED:
            if k == position:
                k += 1
                if box is not None:
                    out.append(box)
                continue
            k += 1
        out.append(b)
    if k <= position:
        raise IndexError(f"the review has {k} added boxes, not {position + 1}")
    return dc_replace(review, boxes=tuple(out))
