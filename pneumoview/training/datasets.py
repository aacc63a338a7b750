"""Training data: which images exist, their labels, boxes and patients, and a decoded in-memory image cache.

Two layouts are read:

* **RSNA**: ``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``; one row per box, boxes in the
  native **1024×1024** frame) + optional ``stage_2_detailed_class_info.csv`` (3-way class) + a folder of
  ``<patientId>.dcm|.png|.jpg`` images of any size. Boxes are scaled to each image by ``width / 1024`` and
  ``height / 1024``.
* **ImageFolder** (seed 002): ``root/<class>/<file>``; for the acse4 classes the ids are covid 0, lung_opacity 1,
  pneumonia 2, normal 3 (the competition's ids, not ImageFolder's alphabetical ones).

An optional index CSV (e.g. ``rsna/index.csv``) restricts the images used and may give each image its patient
(``nih_patient``: several RSNA patientIds are the same NIH patient) and RSNA class.

Boxes in :class:`Record` are ``(N, 4)`` float32 ``[x, y, w, h]`` in the record's ``label_frame`` pixels (see
:mod:`pneumoview.types`). This module imports no torch.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumoview.errors import ImageReadError
from pneumoview.preprocess import FrameMap, InputSpec, fit_to_input
from pneumoview.rsna_labels import (
    RSNA_CLASSES,
    RSNA_OPACITY,
    RSNA_TARGET_CLASSES,
    read_classes,
    read_rsna_labels,
)
from pneumoview.rsna_labels import RSNA_FRAME as RSNA_LABEL_FRAME

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
RSNA_FRAME = (RSNA_LABEL_FRAME, RSNA_LABEL_FRAME)
RSNA3_CLASSES = RSNA_CLASSES
RSNA2_CLASSES = RSNA_TARGET_CLASSES
ACSE4_CLASSES = ("covid", "lung_opacity", "pneumonia", "normal")
# The acse4 classes whose probabilities add up to the viewer's gate P(opacity) = 1 - P(normal): in seed 002's
# data every class but normal is an airspace-opacity disease, and the detector's boxes are opacities.
ACSE4_GATE_CLASSES = ("covid", "lung_opacity", "pneumonia")
OPACITY = RSNA_OPACITY

# Label schemes for classifiers: classes in id order and the class whose probability is P(opacity).
SCHEMES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "rsna3": (RSNA3_CLASSES, OPACITY),
    "rsna2": (RSNA2_CLASSES, OPACITY),
    "acse4": (ACSE4_CLASSES, None),
}
_ID_COLUMNS = ("patientId", "patient_id", "image_id", "id", "file", "filename", "path", "name")
_GROUP_COLUMNS = ("nih_patient", "patient", "patient_group")
# When one patient has images of several classes, the split stratifies it by the most severe one.
_SEVERITY = {name: rank for rank, name in enumerate(RSNA_CLASSES)}


@dataclass(frozen=True, eq=False)
class Record:
    """One training image.

    Attributes:
        key: the image id (RSNA ``patientId``, or the file stem for ImageFolder data).
        path: the image file.
        label: the class name (RSNA 3-way class, ``"Lung Opacity"``/``"No Lung Opacity"`` when only Target is
            known, or the ImageFolder folder name).
        target: 1 when the image has opacity boxes (RSNA Target), else 0.
        boxes: ``(N, 4)`` float32 ``[x, y, w, h]`` in ``label_frame`` pixels; empty for negatives.
        label_frame: ``(H, W)`` of the frame the boxes are in (RSNA: 1024×1024), or None for the image's own frame.
        patient: the grouping key for splits (``nih_patient`` from the index, else the patientId / file stem).
    """

    key: str
    path: Path
    label: str
    target: int
    boxes: np.ndarray
    label_frame: tuple[int, int] | None
    patient: str

    @property
    def stratum(self) -> str:
        return self.label


@dataclass
class DataSource:
    """The records found for training, and what was left out and why.

    Attributes:
        records: images that exist and have labels, sorted by key.
        layout: ``"rsna"`` or ``"folders"``.
        classes: every class name seen, in the layout's natural order.
        description: one sentence for the manifest (where the data came from).
        n_labelled: patients/files with labels.
        n_missing: labelled patients without an image file (ignored).
        n_unlabelled: image files without a label (ignored).
        n_excluded: images left out because the index CSV does not list them.
        has_rsna_class: whether the 3-way RSNA class is known for every record.
        notes: sentences for the user.
        fixed_val: record keys held out for validation by the data itself (``--val-images``), or None to split.
    """

    records: list[Record]
    layout: str
    classes: tuple[str, ...]
    description: str
    n_labelled: int = 0
    n_missing: int = 0
    n_unlabelled: int = 0
    n_excluded: int = 0
    has_rsna_class: bool = False
    notes: list[str] = field(default_factory=list)
    fixed_val: frozenset[str] | None = None

    def summary(self) -> str:
        """What was found, in one paragraph."""
        counts = Counter(r.label for r in self.records)
        by_class = ", ".join(f"{name} {counts[name]}" for name in self.classes if counts[name])
        parts = [f"{len(self.records)} images found ({by_class})"]
        if self.layout == "rsna":
            parts.append(f"{self.n_labelled:,} patients in the labels file")
            parts.append(f"{self.n_missing:,} of them without an image file (ignored)")
        if self.n_unlabelled:
            parts.append(f"{self.n_unlabelled} image files without labels (ignored)")
        if self.n_excluded:
            parts.append(f"{self.n_excluded} images not in the index (left out)")
        patients = len({r.patient for r in self.records})
        parts.append(f"{patients} patients")
        return "; ".join(parts) + "."


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def scan_images(folder: str | Path) -> dict[str, Path]:
    """Image files directly in ``folder`` by file stem (``.dcm .dicom .png .jpg .jpeg``, any case).

    When one stem has several files, DICOM wins over PNG over JPEG (the order of IMAGE_SUFFIXES).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"images folder {folder} does not exist")
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    for p in sorted(folder.iterdir()):
        suffix = p.suffix.lower()
        if suffix not in rank or not p.is_file():
            continue
        old = found.get(p.stem)
        if old is None or rank[suffix] < rank[old.suffix.lower()]:
            found[p.stem] = p
    return found


@dataclass(frozen=True)
class IndexInfo:
    """What an index CSV says: the image keys it lists, and per key a patient group and class when it has them."""

    keys: frozenset[str]
    patient: dict[str, str]
    rsna_class: dict[str, str]


def read_index(path: str | Path) -> IndexInfo:
    """Read an index CSV: its id column (``patientId``, ``image_id``, ``id``, ``file``, ``filename``, ``path`` or
    ``name``; file names and paths are reduced to their stem), optional ``nih_patient``/``patient`` and
    ``rsna_class`` columns."""
    rows = _read_csv(Path(path))
    if not rows:
        return IndexInfo(frozenset(), {}, {})
    columns = list(rows[0])
    id_col = next((c for c in _ID_COLUMNS if c in columns), None)
    if id_col is None:
        raise ValueError(
            f"index {path}: no id column; expected one of {', '.join(_ID_COLUMNS)}, found {', '.join(columns)}"
        )
    group_col = next((c for c in _GROUP_COLUMNS if c in columns), None)
    keys, patient, klass = set(), {}, {}
    for row in rows:
        key = Path(row[id_col].strip()).stem if id_col != "patientId" else row[id_col].strip()
        if not key:
            continue
        keys.add(key)
        if group_col and row.get(group_col, "").strip():
            patient[key] = row[group_col].strip()
        if row.get("rsna_class", "").strip():
            klass[key] = row["rsna_class"].strip()
    return IndexInfo(frozenset(keys), patient, klass)


def load_rsna(
    labels_csv: str | Path,
    images_dir: str | Path,
    classes_csv: str | Path | None = None,
    index_csv: str | Path | None = None,
) -> DataSource:
    """Records for the RSNA layout: every labelled patient whose ``<patientId>.<ext>`` is in ``images_dir``.

    Args:
        labels_csv: ``stage_2_train_labels.csv``; boxes in the 1024×1024 frame.
        images_dir: folder of ``<patientId>.dcm|.png|.jpg`` images of any size.
        classes_csv: ``stage_2_detailed_class_info.csv`` (the 3-way class); optional when the index gives
            ``rsna_class``.
        index_csv: optional index restricting the images and giving ``nih_patient`` groups.
    """
    labels_csv = Path(labels_csv)
    labels = read_rsna_labels(labels_csv)
    target, boxes = labels.target, labels.boxes
    klass: dict[str, str] = read_classes(classes_csv) if classes_csv is not None else {}
    index = read_index(index_csv) if index_csv is not None else None
    if index is not None:
        for k, c in index.rsna_class.items():
            klass.setdefault(k, c)
    files = scan_images(images_dir)
    records: list[Record] = []
    n_excluded = 0
    for pid in sorted(target):
        path = files.get(pid)
        if path is None:
            continue
        if index is not None and pid not in index.keys:
            n_excluded += 1
            continue
        label = klass.get(pid) or (OPACITY if target[pid] else RSNA2_CLASSES[0])
        arr = boxes[pid]
        patient = index.patient.get(pid, pid) if index is not None else pid
        records.append(Record(pid, path, label, target[pid], arr, RSNA_FRAME, patient))
    has_class = bool(records) and all(r.key in klass for r in records)
    classes = RSNA3_CLASSES if has_class else RSNA2_CLASSES
    n_found = sum(1 for pid in target if pid in files)
    source = DataSource(
        records=records,
        layout="rsna",
        classes=classes,
        description=(
            f"RSNA Pneumonia Detection Challenge labels ({labels_csv.name}) with {len(records)} images from "
            f"{Path(images_dir).name}/" + (f", restricted by {Path(index_csv).name}" if index_csv else "")
        ),
        n_labelled=len(target),
        n_missing=len(target) - n_found,
        n_unlabelled=sum(1 for k in files if k not in target),
        n_excluded=n_excluded,
        has_rsna_class=has_class,
    )
    if not has_class:
        source.notes.append(
            "no 3-way RSNA class for some images (pass --classes stage_2_detailed_class_info.csv or an index "
            "with rsna_class); classes come from Target only"
        )
    return source


def load_image_folder(
    root: str | Path, class_order: Sequence[str] | None = None, index_csv: str | Path | None = None
) -> DataSource:
    """Records for an ImageFolder layout ``root/<class>/<image>``.

    Args:
        root: the folder holding one sub-folder per class.
        class_order: class names in id order. Default: the acse4 order (covid 0, lung_opacity 1, pneumonia 2,
            normal 3) when the folders are exactly those four, else the sub-folders in alphabetical order.
        index_csv: optional index; only files whose stem (or name) it lists are used.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"images folder {root} does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_order is None:
        class_order = ACSE4_CLASSES if set(folders) == set(ACSE4_CLASSES) else tuple(folders)
    unknown = sorted(set(folders) - set(class_order))
    if unknown:
        raise ValueError(
            f"{root}: class folder(s) {', '.join(unknown)} are not among the classes {', '.join(class_order)}"
        )
    index = read_index(index_csv) if index_csv is not None else None
    records: list[Record] = []
    n_excluded = 0
    for name in class_order:
        folder = root / name
        if not folder.is_dir():
            continue
        for stem, path in scan_images(folder).items():
            if index is not None and stem not in index.keys:
                n_excluded += 1
                continue
            key = f"{name}/{stem}"
            patient = index.patient.get(stem, key) if index is not None else key
            records.append(Record(key, path, name, 0, np.zeros((0, 4), np.float32), None, patient))
    records.sort(key=lambda r: r.key)
    return DataSource(
        records=records,
        layout="folders",
        classes=tuple(class_order),
        description=f"ImageFolder layout {root.name}/ with classes {', '.join(class_order)}",
        n_labelled=len(records),
        n_excluded=n_excluded,
    )


def with_validation_folder(train: DataSource, val: DataSource, val_root: str | Path) -> DataSource:
    """One source of ``train``'s and ``val``'s ImageFolder records whose validation side is fixed to ``val``'s.

    Raises:
        ValueError: the two folders have other classes, or share an image (same class and file stem).
    """
    if train.classes != val.classes:
        raise ValueError(
            f"--val-images {val_root}: classes {', '.join(val.classes)} differ from the training folder's "
            f"{', '.join(train.classes)}"
        )
    val_keys = frozenset(r.key for r in val.records)
    both = sorted(val_keys & {r.key for r in train.records})
    if both:
        raise ValueError(f"--val-images {val_root}: {len(both)} images are in both folders, e.g. {both[0]}")
    return DataSource(
        records=sorted([*train.records, *val.records], key=lambda r: r.key),
        layout=train.layout,
        classes=train.classes,
        description=f"{train.description}, validation folder {Path(val_root).name}/",
        n_labelled=train.n_labelled + val.n_labelled,
        n_excluded=train.n_excluded + val.n_excluded,
        notes=[*train.notes, *val.notes],
        fixed_val=val_keys,
    )


def class_ids(records: Iterable[Record], scheme: str) -> np.ndarray:
    """Integer class ids of ``records`` under a label scheme (``rsna3``, ``rsna2``, ``acse4``)."""
    classes, _ = SCHEMES[scheme]
    out = []
    for r in records:
        if scheme == "rsna2":
            out.append(int(r.target))
            continue
        if r.label not in classes:
            raise ValueError(
                f"image {r.key} has class {r.label!r}, which the {scheme} scheme does not have "
                f"({', '.join(classes)}); for rsna3 pass --classes stage_2_detailed_class_info.csv"
            )
        out.append(classes.index(r.label))
    return np.asarray(out, dtype=np.int64)


def patient_strata(records: Sequence[Record]) -> dict[str, str]:
    """Each patient's stratum: the most severe RSNA class among its images (else its most common label)."""
    labels: dict[str, list[str]] = defaultdict(list)
    for r in records:
        labels[r.patient].append(r.stratum)
    out = {}
    for patient, names in labels.items():
        if all(n in _SEVERITY for n in names):
            out[patient] = max(names, key=lambda n: _SEVERITY[n])
        else:
            out[patient] = Counter(sorted(names)).most_common(1)[0][0]
    return out


# --------------------------------------------------------------------------------------------------------------
# Decoding and the in-memory cache
# --------------------------------------------------------------------------------------------------------------


def read_display(path: str | Path) -> np.ndarray:
    """The uint8 ``(H, W)`` display pixels of an image file, exactly as inference sees them.

    Uses :func:`pneumoview.imaging.load_image` (windowing, MONOCHROME1 inversion); when that module or its DICOM
    dependencies cannot be imported (a bare GPU machine), PNG/JPEG files are read with Pillow as 8-bit grey, which
    is what ``load_image`` gives for 8-bit grey files.

    Raises:
        ImageReadError: the file is not a readable radiograph.
    """
    try:
        # lazy: falls back to Pillow when the DICOM stack cannot be imported
        from pneumoview.imaging import load_image as loader
    except ImportError:
        loader = None  # type: ignore[assignment]  # the fallback below reads the file with Pillow
    if loader is not None:
        return np.ascontiguousarray(loader(path).display)
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        raise ImageReadError(p, "header", "DICOM support is not installed (pip install pydicom)")

    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                a = np.asarray(im, dtype=np.float32)
                lo, hi = float(a.min()), float(a.max())
                return ((a - lo) * (255.0 / max(hi - lo, 1.0))).round().astype(np.uint8)
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageReadError(p, "header", f"not a readable image ({exc})") from None


def boxes_to_input(record: Record, image_shape: tuple[int, int], frame: FrameMap) -> np.ndarray:
    """A record's boxes as ``(N, 4)`` float32 ``xyxy`` in model-input pixels.

    RSNA boxes are in the 1024-px frame: scaled to the image by ``W / 1024`` and ``H / 1024``, then through the
    inverse of ``frame`` (input pixel = (original - offset) / scale).
    """
    b = record.boxes.astype(np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros((0, 4), np.float32)
    xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    if record.label_frame is not None:
        fh, fw = record.label_frame
        h, w = image_shape
        xyxy[:, [0, 2]] *= w / fw
        xyxy[:, [1, 3]] *= h / fh
    xyxy[:, [0, 2]] = (xyxy[:, [0, 2]] - frame.offset_x) / frame.scale_x
    xyxy[:, [1, 3]] = (xyxy[:, [1, 3]] - frame.offset_y) / frame.scale_y
    ih, iw = frame.input_shape
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, iw)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, ih)
    keep = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
    return xyxy[keep].astype(np.float32)


@dataclass
class ImageCache:
    """Every record decoded once and stored at the model-input size as uint8.

    Attributes:
        spec: the input spec the images were fitted to (size and resize mode; normalisation happens later).
        images: uint8 ``(N, h, w)``; row ``i`` is ``records[i]``.
        boxes: per record, ``(K, 4)`` float32 ``xyxy`` boxes in input pixels.
        records: the records that decoded.
        failed: ``(path, message)`` for every file that could not be read (reported, then skipped).
    """

    spec: InputSpec
    images: np.ndarray
    boxes: list[np.ndarray]
    records: list[Record]
    failed: list[tuple[Path, str]]

    def __len__(self) -> int:
        return len(self.records)


def build_cache(
    records: Sequence[Record],
    spec: InputSpec,
    *,
    threads: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> ImageCache:
    """Decode every record, fit it to ``spec`` (same resize as inference) and keep it in memory.

    Files that cannot be read are listed in ``failed`` and left out; nothing raises for a bad file.
    ``progress(done, total)`` is called from this thread as images finish.
    """

    def work(r: Record) -> tuple[np.ndarray, np.ndarray] | str:
        try:
            display = read_display(r.path)
        except ImageReadError as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 - a damaged file must be reported, not stop training
            return f"{type(exc).__name__}: {exc}"
        fitted, frame = fit_to_input(display, spec)
        return fitted, boxes_to_input(r, display.shape, frame)

    h, w = spec.size
    images = np.zeros((len(records), h, w), dtype=np.uint8)
    kept_boxes: list[np.ndarray] = []
    kept: list[Record] = []
    failed: list[tuple[Path, str]] = []
    n = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, (r, out) in enumerate(zip(records, pool.map(work, records), strict=True)):
            if isinstance(out, str):
                failed.append((r.path, out))
            else:
                images[n] = out[0]
                kept_boxes.append(out[1])
                kept.append(r)
                n += 1
            if progress is not None:
                progress(i + 1, len(records))
    return ImageCache(spec, images[:n], kept_boxes, kept, failed)


def sampling_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample weights ``1 / count(class)`` so every class is drawn equally often (``--balanced``)."""
    labels = np.asarray(labels)
    counts = Counter(labels.tolist())
    return np.asarray([1.0 / counts[int(v)] for v in labels], dtype=np.float64)


def describe_counts(values: Iterable[str]) -> str:
    c = Counter(values)
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def finite_or_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
