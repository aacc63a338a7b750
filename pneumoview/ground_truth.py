"""Radiologists' boxes for the images on screen, and whether each finding hits one. Qt-free.

Labels are an RSNA labels CSV (``patientId,x,y,width,height,Target``; boxes in the 1024-px frame): the sample
study's ``labels.csv`` (found beside the images) or a ``stage_2_train_labels.csv`` the user chooses. An image is
looked up by its ``image_id``, which is the RSNA ``patientId`` for RSNA-style file names, then by its file stem.

The hit rule (:data:`HIT_RULE`): findings are taken from the highest confidence down, and a finding is a *hit* when
its IoU with a radiologist's box not yet matched is at least :data:`HIT_IOU` = 0.4 (the lowest IoU threshold of the
RSNA metric); otherwise it is a *miss* (a false positive). Radiologists' boxes no finding matched are *missed*
opacities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumoview.metrics import iou_xywh
from pneumoview.rsna_labels import RSNA_FRAME, read_labels, scale_boxes
from pneumoview.types import XrayImage

__all__ = [
    "HIT_IOU",
    "HIT_RULE",
    "LABELS_FILE",
    "GroundTruth",
    "LabelSources",
    "find_labels",
    "load_labels",
    "match_hits",
]

HIT_IOU = 0.4
HIT_RULE = (
    "hit = IoU ≥ 0.4 with a radiologist's box that no more confident finding matched (0.4 is the RSNA metric's "
    "lowest threshold); miss = no such box"
)
LABELS_FILE = "labels.csv"


@dataclass(frozen=True)
class GroundTruth:
    """Boxes by RSNA ``patientId`` in the ``frame``-px label frame, read from ``source``."""

    source: Path
    boxes: dict[str, np.ndarray]
    frame: int = RSNA_FRAME

    def boxes_for(self, image: XrayImage) -> np.ndarray | None:
        """``(N, 4)`` ``[x, y, w, h]`` boxes in ``image``'s pixels (``(0, 4)`` for a labelled negative), or None
        when the labels do not cover this image."""
        for key in (image.image_id, image.source.stem):
            if key in self.boxes:
                return scale_boxes(self.boxes[key], image.shape, self.frame)
        return None


@dataclass
class LabelSources:
    """The viewer's labels: ``folder`` (the ``labels.csv`` beside the opened images) wins over ``chosen`` (an RSNA
    labels CSV the user picked, kept across folders)."""

    folder: GroundTruth | None = None
    chosen: GroundTruth | None = None

    def current(self) -> GroundTruth | None:
        return self.folder or self.chosen

    def boxes_for(self, image: XrayImage | None) -> np.ndarray | None:
        truth = self.current()
        return truth.boxes_for(image) if truth is not None and image is not None else None

    def source_name(self) -> str:
        truth = self.current()
        return truth.source.name if truth is not None else ""


def load_labels(path: str | Path) -> GroundTruth:
    """Read an RSNA labels CSV; raises ``ValueError`` naming the file when it is not one (or cannot be read)."""
    p = Path(path)
    try:
        boxes = read_labels(p)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: cannot read the labels ({exc})") from exc
    except KeyError as exc:
        raise ValueError(f"{p}: not an RSNA labels file (missing {exc})") from exc
    return GroundTruth(p, boxes)


def find_labels(folder: str | Path) -> GroundTruth | None:
    """The ``labels.csv`` beside the images of ``folder`` when it is an RSNA labels file, else None."""
    candidate = Path(folder) / LABELS_FILE
    if not candidate.is_file():
        return None
    try:
        return load_labels(candidate)
    except ValueError:
        return None


def match_hits(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> tuple[list[bool], int]:
    """``(hit per finding, number of radiologists' boxes no finding matched)`` under :data:`HIT_RULE`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
    hits = [False] * len(boxes)
    if len(boxes) == 0 or len(truth) == 0:
        return hits, len(truth)
    iou = iou_xywh(boxes, truth)
    free = np.ones(len(truth), dtype=bool)
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        candidates = np.where(free, iou[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= HIT_IOU:
            hits[int(i)] = True
            free[j] = False
    return hits, int(free.sum())
