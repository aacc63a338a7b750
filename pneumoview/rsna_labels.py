"""Readers for the RSNA Pneumonia Detection Challenge label files.

``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``): one row per box; a negative patient has one row
with empty box fields. Boxes are ``[x, y, w, h]`` pixels in the native **1024×1024** frame: scale them by
``image_width / 1024`` and ``image_height / 1024`` for images stored at another size (:func:`scale_boxes`).
``stage_2_detailed_class_info.csv`` (``patientId,class``) gives the 3-way class of each patient.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

RSNA_FRAME = 1024
RSNA_CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """patientId → ``(N, 4)`` float32 boxes ``[x, y, w, h]`` in the 1024-px frame (``(0, 4)`` for negatives)."""
    boxes: dict[str, list[list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"patientId", "x", "y", "width", "height", "Target"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: not an RSNA labels file (missing column(s) {', '.join(sorted(missing))}; expected "
                "patientId,x,y,width,height,Target)"
            )
        for row in reader:
            pid = row["patientId"].strip()
            lst = boxes.setdefault(pid, [])
            if row["Target"].strip() in ("1", "1.0") and row["x"].strip():
                lst.append([float(row["x"]), float(row["y"]), float(row["width"]), float(row["height"])])
    return {k: np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()}


def read_classes(path: str | Path) -> dict[str, str]:
    """patientId → RSNA class string (one of :data:`RSNA_CLASSES`)."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
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
