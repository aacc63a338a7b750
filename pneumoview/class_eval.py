"""Classifier evaluation on labelled files: a class-folder layout (``ROOT/<class>/<image>``) or any list of
(file, class) pairs.

Per-class one-vs-rest ROC AUC comes from the softmax probabilities (not from hard labels, seed 002's mistake), with
the confusion matrix of the arg-max predictions (:func:`pneumoview.metrics.classification_report`). The engine is
passed in, so this module imports no torch; files that cannot be read are listed, never fatal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.errors import ModelError, PneumoViewError
from pneumoview.export import atomic_write_text, class_column
from pneumoview.imaging import load_image
from pneumoview.metrics import ClassificationReport, classification_report, roc_auc

if TYPE_CHECKING:
    from pneumoview.inference.engine import Engine

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ClassifiedFiles:
    """The classifier's probabilities for labelled files.

    Attributes:
        paths: the files that were classified, in input order.
        labels: the true class name of each.
        classes: the classifier's classes (column order of ``probs``).
        probs: float32 ``(N, C)`` softmax probabilities.
        failed: ``(path, reason)`` for every file that could not be read or classified.
        model: ``id@version#sha12`` of the classifier.
    """

    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    classes: tuple[str, ...]
    probs: np.ndarray
    failed: tuple[tuple[Path, str], ...]
    model: str

    def report(self) -> ClassificationReport:
        """Accuracy, confusion matrix and per-class AUC (labels must all be classes of the classifier).

        Raises:
            ValueError: a label is not one of the classifier's classes (naming it), or no file was classified.
        """
        unknown = sorted(set(self.labels) - set(self.classes))
        if unknown:
            raise ValueError(
                f"class(es) {', '.join(unknown)} are not classes of the classifier ({', '.join(self.classes)})"
            )
        y = np.asarray([self.classes.index(c) for c in self.labels], dtype=np.int64)
        return classification_report(y, self.probs, self.classes)

    def one_vs_rest_auc(self, klass: str, positives: Sequence[str] | None = None) -> float:
        """ROC AUC of P(``klass``) for files labelled ``positives`` (default: ``klass``) against all others."""
        pos = set(positives or [klass])
        y = np.asarray([lab in pos for lab in self.labels])
        return roc_auc(y, self.probs[:, self.classes.index(klass)])

    def write_csv(self, path: str | Path) -> Path:
        """Per-file probabilities: ``file,label,predicted,p_<class>...``."""

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["file", "label", "predicted", *(class_column(c) for c in self.classes)])
        for p, lab, row in zip(self.paths, self.labels, self.probs, strict=True):
            w.writerow([str(p), lab, self.classes[int(np.argmax(row))], *(f"{float(v):.4f}" for v in row)])
        return atomic_write_text(path, buf.getvalue())


def folder_items(root: str | Path) -> list[tuple[Path, str]]:
    """``(file, class)`` for every image in ``root/<class>/`` (class = sub-folder name; searched one level deep,
    hidden entries skipped; symbolic links followed).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: it has no class sub-folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder; give the root of a class-folder layout (ROOT/<class>/)"
        )
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and not f.name.startswith("."):
                items.append((f, folder.name))
    if not items:
        raise ValueError(f"{root} has no class sub-folder holding images (expected ROOT/<class>/<image>)")
    return items


def classify_files(
    engine: Engine,
    items: Sequence[tuple[Path, str]],
    *,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> ClassifiedFiles:
    """Run the engine's selected classifier on each file (display pixels, as in the viewer and ``predict``).

    Raises:
        pneumoview.errors.ModelError: no classifier is selected or installed.
    """
    specs = engine.stage_specs("classify")
    if not specs:
        raise ModelError("no classifier is selected; choose one with --classifier ID")
    spec = specs[0][0]
    engine.model_for(spec)  # load (and verify) once, before any file is read
    paths: list[Path] = []
    labels: list[str] = []
    rows: list[np.ndarray] = []
    failed: list[tuple[Path, str]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images, kept = [], []
        for path, label in chunk:
            try:
                images.append(load_image(path))
                kept.append((path, label))
            except PneumoViewError as exc:
                failed.append((path, str(exc)))
        if images:
            for (path, label), res in zip(
                kept, engine.analyze_batch(images, stages=("classify",), batch_size=batch_size), strict=True
            ):
                if res.class_probs is None:
                    failed.append((path, "; ".join(res.notes) or "the classifier did not run"))
                    continue
                paths.append(path)
                labels.append(label)
                rows.append(np.asarray(res.class_probs, dtype=np.float32))
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    probs = np.stack(rows) if rows else np.zeros((0, len(spec.classes)), np.float32)
    return ClassifiedFiles(
        tuple(paths), tuple(labels), tuple(spec.classes), probs, tuple(failed),
        f"{spec.id}@{spec.version}#{spec.sha256[:12]}",
    )  # fmt: skip


def report_lines(rep: ClassificationReport, n: int) -> list[str]:
    """The report as text: accuracy, macro AUC, per-class precision/recall/AUC, confusion matrix."""
    d = rep.to_dict()
    width = max(8, *(len(c["name"]) for c in d["classes"]))
    lines = [
        f"classifier ({n} images): accuracy {_f(d['accuracy'])}, macro ROC AUC {_f(d.get('macro_auc'))} "
        "(one-vs-rest, from probabilities)",
        f"  {'class':{width}s} {'n':>5s} {'precision':>9s} {'recall':>7s} {'AUC':>6s}",
    ]
    for c in d["classes"]:
        lines.append(
            f"  {c['name']:{width}s} {c['support']:5d} {_f(c['precision']):>9s} {_f(c['recall']):>7s} "
            f"{_f(c['auc']):>6s}"
        )
    lines.append("  confusion matrix (rows = truth, columns = predicted):")
    lines.append("  " + " " * width + " " + " ".join(f"{c['name'][:8]:>8s}" for c in d["classes"]))
    for c, row in zip(d["classes"], d["confusion"], strict=True):
        lines.append(f"  {c['name']:{width}s} " + " ".join(f"{v:8d}" for v in row))
    return lines


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"
