"""DICOM results in a batch run (``pneumoview predict --dicom``, the batch dialog): one call per analysed image and
the ``run.json`` summary. Files go to ``OUT/dicom/``; what happened is kept in the image's journal record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pneumoview.dicom_results.writer import DicomResultsError, write_results
from pneumoview.postprocess import Findings
from pneumoview.types import AnalysisResult, XrayImage

__all__ = ["DICOM_DIR", "DicomOptions", "dicom_summary", "write_for_batch"]

DICOM_DIR = "dicom"


@dataclass(frozen=True)
class DicomOptions:
    """Which DICOM results a batch writes besides the SR (always) and the SEG (when the mask has a pixel)."""

    gsps: bool = False
    probability_map: bool = False

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


def write_for_batch(
    image: XrayImage,
    result: AnalysisResult,
    findings: Findings,
    out_dir: str | Path,
    options: DicomOptions,
    *,
    include_identifiers: bool = False,
) -> dict[str, Any]:
    """Write one image's DICOM results into ``out_dir/dicom`` and return the journal fields: ``dicom_options``,
    ``dicom_files`` (names relative to ``out_dir``), ``dicom_skipped`` (why none were written for a PNG/JPEG input)
    ``dicom_notes`` (a SEG or GSPS that could not be written beside the SR, and why) and ``dicom_error`` (a DICOM input
    whose SR could not be written; the run then reports the file as failed)."""
    record: dict[str, Any] = {"dicom_options": options.to_dict(), "dicom_files": []}
    if "SOPInstanceUID" not in image.identifiers:
        record["dicom_skipped"] = "not a DICOM image (PNG/JPEG has no study to join)"
        return record
    notes: list[str] = []
    try:
        paths = write_results(
            image,
            result,
            findings,
            Path(out_dir) / DICOM_DIR,
            gsps=options.gsps,
            probability_map=options.probability_map,
            include_identifiers=include_identifiers,
            notes=notes,
        )
    except (DicomResultsError, ValueError, OSError) as exc:
        record["dicom_error"] = str(exc)
        return record
    record["dicom_files"] = [f"{DICOM_DIR}/{p.name}" for p in paths]
    if notes:
        record["dicom_notes"] = notes
    return record


def dicom_summary(
    records: Iterable[Mapping[str, Any]], options: DicomOptions | None
) -> dict[str, Any] | None:
    """The ``dicom`` entry of ``run.json``: options, every file written, inputs without DICOM results and why."""
    if options is None:
        return None
    written: list[str] = []
    skipped: list[dict[str, str]] = []
    errors: list[dict[str, str]] = []
    notes: list[str] = []
    for r in records:
        notes += r.get("dicom_notes", [])
        written += r.get("dicom_files", [])
        if r.get("dicom_skipped"):
            skipped.append({"path": r["path"], "reason": r["dicom_skipped"]})
        if r.get("dicom_error"):
            errors.append({"path": r["path"], "reason": r["dicom_error"]})
    seen: set[str] = set()
    for name in written:
        if name in seen:
            notes.append(
                f"{name} was written for more than one input (they share a SOP Instance UID); the last one is kept"
            )
        seen.add(name)
    return {
        "folder": DICOM_DIR,
        "options": options.to_dict(),
        "files": list(dict.fromkeys(written)),
        "not_dicom": skipped,
        "failed": errors,
        "notes": notes,
    }
