"""The one reader of the RSNA Pneumonia Detection Challenge label files, and the RSNA class names.

``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``): one row per box; a negative patient has one row
with empty box fields. Boxes are ``[x, y, w, h]`` pixels in the native **1024×1024** frame: scale them by
``image_width / 1024`` and ``image_height / 1024`` for images stored at another size (:func:`scale_boxes`).
``stage_2_detailed_class_info.csv`` (``patientId,class``) gives the 3-way class of each patient.

Rules (one set, used by the CLI's evaluate/tune, the viewer's ground truth and training):

* ``Target`` must be ``0`` or ``1`` (``1.0`` accepted); anything else is an error naming the file and line.
* A patient is positive when **any** of its rows has ``Target`` 1 (the rows of one patient agree in the
  official file; when they do not, positive wins, so no box is dropped).
* A box is kept when its row has ``Target`` 1 and all of ``x, y, width, height`` are numbers with
  ``width > 0`` and ``height > 0``. A ``Target`` 1 row without such a box leaves the patient positive with no
  box (a zero-size box marks nothing); a ``Target`` 0 row's box fields are ignored.
* A UTF-8 byte-order mark is accepted (spreadsheets write one).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RSNA_FRAME = 1024
RSNA_CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
#: The class names when only ``Target`` is known (no class file): negative, positive.
RSNA_TARGET_CLASSES = ("No Lung Opacity", "Lung Opacity")
#: The RSNA positive class: its probability is P(opacity), and the detector's boxes are of it.
RSNA_OPACITY = "Lung Opacity"
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


@dataclass(frozen=True)
class RsnaLabels:
    """Per patientId: ``target`` 0/1 and ``boxes`` ``(N, 4)`` float32 ``[x, y, w, h]`` in the 1024-px frame
    (``(0, 4)`` for negatives and for positives without a usable box). Both have every patient of the file."""

    target: dict[str, int]
    boxes: dict[str, np.ndarray]


def _target(value: str, path: str | Path, line: int) -> int:
    try:
        t = float(value or 0)
    except ValueError:
        t = -1.0
    if t not in (0.0, 1.0):
        raise ValueError(f"{path}, line {line}: Target is {value!r}; an RSNA labels file has 0 or 1 there")
    return int(t)


def _box(row: dict[str, str]) -> list[float] | None:
    try:
        b = [float(row[k]) for k in ("x", "y", "width", "height")]
    except (TypeError, ValueError):
        return None
    return b if b[2] > 0 and b[3] > 0 else None


def read_rsna_labels(path: str | Path) -> RsnaLabels:
    """Read ``stage_2_train_labels.csv`` by the rules in the module docstring."""
    target: dict[str, int] = {}
    boxes: dict[str, list[list[float]]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = set(LABEL_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: not an RSNA labels file (missing column(s) {', '.join(sorted(missing))}; expected "
                f"{','.join(LABEL_COLUMNS)})"
            )
        for line, row in enumerate(reader, start=2):
            pid = row["patientId"].strip()
            t = _target(row["Target"].strip(), path, line)
            target[pid] = max(target.get(pid, 0), t)
            lst = boxes.setdefault(pid, [])
            box = _box(row) if t else None
            if box is not None:
                lst.append(box)
    return RsnaLabels(target, {k: np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()})


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """patientId → ``(N, 4)`` float32 boxes ``[x, y, w, h]`` in the 1024-px frame (``(0, 4)`` for negatives)."""
    return read_rsna_labels(path).boxes


def read_classes(path: str | Path) -> dict[str, str]:
    """patientId → RSNA class string (one of :data:`RSNA_CLASSES`)."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not {"patientId", "class"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: not an RSNA class file (expected columns patientId,class)")
        for row in reader:
            cls = row["class"].strip()
            if cls not in RSNA_CLASSES:
                raise ValueError(
                    f"{path}: unknown class {cls!r} for {row['patientId']}; expected {RSNA_CLASSES}"
                )
            out[row["patientId"].strip()] = cls
    return out


def scale_boxes(boxes: np.ndarray, image_shape: tuple[int, int], frame: int = RSNA_FRAME) -> np.ndarray:
    """Boxes from the ``frame``-px label frame to an image of ``(rows, cols)`` pixels."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    sy, sx = image_shape[0] / frame, image_shape[1] / frame
    b[:, [0, 2]] *= sx
    b[:, [1, 3]] *= sy
    return b
