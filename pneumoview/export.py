"""Output files shared by ``pneumoview predict``, the batch dialog and the viewer's export menu.

* ``submission.csv`` — the RSNA challenge format: ``patientId,PredictionString`` with ``confidence x y w h`` per box in
  original pixels (empty when none), one row per image.
* ``findings.csv`` — one row per image and per box (see :data:`FINDINGS_COLUMNS`), with one probability column
  ``p_<class>`` per class of the classifier that ran (:func:`class_column`) after ``cols``; ``p_opacity`` is the
  probability that gates the boxes (the classifier's ``gate_classes`` summed; ``gate_classes`` names them).
* annotated PNGs — the same renderer as the viewer's export (:func:`annotated_image`).

Nothing here writes patient identifiers unless ``include_identifiers`` is set. Every file is written atomically
by :mod:`pneumoview.atomic` (temporary file in the same folder, then ``os.replace``), so a crash never leaves a
half-written output, and gets the permissions a plain file would have (``0o644`` under umask ``022``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview import __version__
from pneumoview.anatomy import describe_boxes, orientation_of
from pneumoview.atomic import atomic_write_bytes, atomic_write_text
from pneumoview.postprocess import Findings
from pneumoview.render import render_annotated, save_png
from pneumoview.review import ImageReview, review_column
from pneumoview.suitability import suitability_warnings
from pneumoview.types import AnalysisResult, XrayImage

SUBMISSION_HEADER = ("patientId", "PredictionString")
FINDINGS_COLUMNS = (
    "image_id",
    "source_file",
    "rows",
    "cols",
    "p_opacity",
    "gate_classes",
    "box_index",
    "box_source",
    "confidence",
    "x",
    "y",
    "w",
    "h",
    "area_px",
    "area_mm2",
    "side",  # the patient's right/left, zone (upper/middle/lower) and area_cm2: see _add_places
    "zone",
    "area_cm2",
    "gated",
    "thresholds",
    "models",
    "device",
    "review",
    "warnings",
)
IDENTIFIER_COLUMNS = ("patient_id", "patient_name", "study_instance_uid", "sop_instance_uid")

__all__ = [
    "FINDINGS_COLUMNS",
    "SUBMISSION_HEADER",
    "annotated_image",
    "atomic_write_bytes",
    "atomic_write_text",
    "class_column",
    "export_stem",
    "findings_rows",
    "footer_lines",
    "models_text",
    "save_png",
    "submission_id",
    "write_findings_csv",
    "write_json",
    "write_submission_csv",
]


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def export_stem(image: XrayImage, include_identifiers: bool = False) -> str:
    """A file-name stem for exports of ``image``: its non-identifying ``image_id`` by default; with
    ``include_identifiers``, the PatientID and the image id (characters unsafe in file names replaced)."""
    stem = image.image_id
    if include_identifiers and image.identifiers.get("PatientID"):
        stem = f"{image.identifiers['PatientID']}_{stem}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:120]


def models_text(result: AnalysisResult) -> str:
    """``id@version#sha12`` for every model that ran, separated by ``;``."""
    return ";".join(f"{m.id}@{m.version}#{m.sha256_prefix}" for m in result.models)


def _thresholds_text(findings: Findings) -> str:
    return json.dumps(findings.thresholds.to_dict(), separators=(",", ":"), sort_keys=True)


def class_column(name: str) -> str:
    """The findings.csv column of a class's probability: ``p_`` + the name in lower case with every run of other
    characters replaced by ``_`` (``"Lung Opacity"`` → ``p_lung_opacity``, ``"No Lung Opacity / Not Normal"`` →
    ``p_no_lung_opacity_not_normal``, ``"covid"`` → ``p_covid``)."""
    return "p_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _class_probs(result: AnalysisResult) -> dict[str, str]:
    """``p_<class>`` → probability (4 decimals) for every class of the classifier; empty when none ran."""
    if result.class_probs is None:
        return {}
    return {
        class_column(n): f"{float(v):.4f}"
        for n, v in zip(result.class_names, result.class_probs, strict=True)
    }


def findings_rows(
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    include_identifiers: bool = False,
    review: ImageReview | None = None,
) -> list[dict[str, str]]:
    """Rows of ``findings.csv`` for one image: one per final box, or a single row with no box; with a reader's
    ``review``, its decision in the ``review`` column (:func:`pneumoview.review.review_column`) and one more row per
    box the reader added (``box_source`` ``reader``, ``box_index`` ``added N``)."""
    rows = _algorithm_rows(image, result, findings, include_identifiers, review)
    if review is not None:
        blank = {k: "" for k in ("confidence", "area_mm2")}
        for n, b in enumerate(review.added):
            x1, y1, x2, y2 = b.box_xyxy
            area = (x2 - x1) * (y2 - y1)
            mm2 = (
                "" if image.spacing_mm is None else f"{area * image.spacing_mm[0] * image.spacing_mm[1]:.1f}"
            )
            rows.append(
                rows[0]
                | blank
                | {
                    "box_index": f"added {n}",
                    "box_source": "reader",
                    "x": f"{x1:.1f}",
                    "y": f"{y1:.1f}",
                    "w": f"{x2 - x1:.1f}",
                    "h": f"{y2 - y1:.1f}",
                    "area_px": f"{area:.0f}",
                    "area_mm2": mm2,
                    "review": f"added by {b.reader}",
                }
            )
    return rows


def _algorithm_rows(
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    include_identifiers: bool,
    review: ImageReview | None,
) -> list[dict[str, str]]:
    base = {
        "image_id": image.image_id,
        "source_file": image.source.name if not include_identifiers else str(image.source),
        "rows": str(image.shape[0]),
        "cols": str(image.shape[1]),
        "p_opacity": "" if result.p_opacity is None else f"{result.p_opacity:.4f}",
        "gate_classes": "+".join(result.gate_classes),
        **_class_probs(result),
        "gated": "yes" if findings.gated else "no",
        "thresholds": _thresholds_text(findings),
        "models": models_text(result),
        "device": result.device,
        "review": "",
        "warnings": " | ".join(suitability_warnings(image)),
    }
    if include_identifiers:
        ids = image.identifiers
        base |= {
            "patient_id": ids.get("PatientID", ""),
            "patient_name": ids.get("PatientName", ""),
            "study_instance_uid": ids.get("StudyInstanceUID", ""),
            "sop_instance_uid": ids.get("SOPInstanceUID", ""),
        }
    fused = findings.fused
    if len(fused) == 0:
        return [base | {"box_index": "", "box_source": "", "confidence": "", "x": "", "y": "", "w": "", "h": "",
                        "area_px": "", "area_mm2": ""}]  # fmt: skip
    areas = fused.areas_px()
    mm2 = fused.areas_mm2(image.spacing_mm)
    rows = []
    for i, (box, score, src) in enumerate(zip(fused.boxes, fused.scores, fused.sources, strict=True)):
        x, y, w, h = (float(v) for v in box)
        rows.append(
            base
            | {
                "box_index": str(i),
                "box_source": src,
                "confidence": f"{float(score):.4f}",
                "x": f"{x:.1f}",
                "y": f"{y:.1f}",
                "w": f"{w:.1f}",
                "h": f"{h:.1f}",
                "area_px": f"{float(areas[i]):.0f}",
                "area_mm2": "" if mm2 is None else f"{float(mm2[i]):.1f}",
                "review": review_column(review, i),
            }
        )
    _add_places(rows, image, findings)
    return rows


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[str] | Mapping[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(c, "") for c in header] if isinstance(r, Mapping) else r)
    return buf.getvalue()


def write_findings_csv(rows: Iterable[Mapping[str, str]], path: str | Path) -> Path:
    """Write ``findings.csv`` atomically: :data:`FINDINGS_COLUMNS` with the rows' ``p_<class>`` columns (in the
    order first seen) after ``cols``; identifier columns appear only when the rows have them."""
    rows = list(rows)
    header = list(FINDINGS_COLUMNS)
    fixed = set(header)
    per_class = list(dict.fromkeys(k for r in rows for k in r if k.startswith("p_") and k not in fixed))
    at = header.index("cols") + 1
    header[at:at] = per_class
    if any("patient_id" in r for r in rows):
        header += list(IDENTIFIER_COLUMNS)
    return atomic_write_text(path, _csv_text(header, rows))


def submission_id(image: XrayImage, include_identifiers: bool = False) -> str:
    """The RSNA ``patientId`` column for an image: its non-identifying ``image_id``, or the PatientID when the
    user opted in to identifiers (``--include-identifiers``, or the viewer's export option)."""
    if include_identifiers and image.identifiers.get("PatientID"):
        return str(image.identifiers["PatientID"])
    return image.image_id


def write_submission_csv(rows: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Write an RSNA ``submission.csv`` atomically from ``(patientId, PredictionString)`` pairs."""
    return atomic_write_text(path, _csv_text(SUBMISSION_HEADER, rows))


def footer_lines(result: AnalysisResult, findings: Findings) -> list[str]:
    """The annotated PNG's footer: models with versions and hashes, thresholds, device (the notice is added by
    the renderer)."""
    t = findings.thresholds
    p = "n/a" if result.p_opacity is None else f"{result.p_opacity:.2f}"
    what = f"P({'+'.join(result.gate_classes)})" if len(result.gate_classes) > 1 else "P(opacity)"
    return [
        f"PneumoView {__version__} | image {result.image_id} | {what} {p} | device {result.device}",
        "models: " + (", ".join(f"{m.id} v{m.version} #{m.sha256_prefix}" for m in result.models) or "none"),
        (
            f"thresholds: seg>{t.seg_threshold:g} min-area {t.min_area_fraction * 100:.2f}% shrink {t.shrink:g} "
            f"det>={t.det_score:g} nms {t.nms_iou:g} fusion {t.fusion}@{t.fusion_iou:g} gate {t.gate:g} "
            f"mode {t.mode}"
        ),
    ]


def annotated_image(
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    *,
    heat_map: bool = True,
    mask_outline: bool = True,
    show_sources: Sequence[str] = ("fused",),
) -> np.ndarray:
    """The annotated PNG's pixels: native resolution, heat map, mask outline, boxes, footer (with the research-use
    notice). ``(H + footer, W, 3)`` uint8 RGB."""
    return render_annotated(
        image.display,
        findings,
        prob_map=result.prob_map if heat_map or mask_outline else None,
        heat_opacity=0.35 if heat_map else 0.0,
        mask_outline=mask_outline,
        show_sources=show_sources,
        footer_lines=footer_lines(result, findings),
    )


def _add_places(rows: list[dict[str, str]], image: XrayImage, findings: Findings) -> None:
    """Add ``side`` (the patient's ``right``/``left``), ``zone`` (``upper``/``middle``/``lower``) and ``area_cm2`` to
    the rows of the final boxes (same order), from :mod:`pneumoview.anatomy`: DICOM PatientOrientation /
    ImageLaterality, or the standard PA/AP display (image left = patient right) when the file gives neither."""
    orientation = orientation_of(image.metadata, image.view)
    places = describe_boxes(findings.fused.boxes, image.shape, orientation, image.spacing_mm)
    for row, place in zip(rows, places, strict=True):
        row["side"], row["zone"] = place.side, place.zone
        row["area_cm2"] = "" if place.area_cm2 is None else f"{place.area_cm2:.2f}"
