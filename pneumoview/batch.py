"""Batch analysis of folders and files: the code path of ``pneumoview predict`` and of the viewer's batch dialog.

Outputs in ``out_dir`` (see :mod:`pneumoview.export` for the formats):

* ``submission.csv``, ``findings.csv``, ``run.json`` — written at the end (and on cancel) from the journal;
* ``annotated/<image_id>.png`` — one per analysed image;
* ``.pneumoview-journal/<key>.json`` — one small record per input, written atomically as soon as that input is
  finished. The journal is what makes a killed run resumable: a re-run skips every input that has a ``done``
  record made with the same thresholds (unless ``force``) and the final CSVs are rebuilt from the journal in input
  order, so rows are never duplicated or dropped. Failed inputs are retried on a re-run.

Inputs are only ever read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumoview import __version__
from pneumoview.errors import ImageReadError
from pneumoview.export import (
    annotated_image,
    atomic_write_text,
    export_stem,
    findings_rows,
    models_text,
    save_png,
    submission_id,
    write_findings_csv,
    write_json,
    write_submission_csv,
)
from pneumoview.findings_pipeline import findings_for
from pneumoview.imaging import load_image
from pneumoview.pipeline import Finished, pipelined, sequential
from pneumoview.study_index import ScanEntry, ScanError, scan
from pneumoview.suitability import suitability_warnings
from pneumoview.thresholds import Thresholds
from pneumoview.types import STAGES

if TYPE_CHECKING:
    from pneumoview.dicom_results.batch_outputs import DicomOptions
    from pneumoview.inference.engine import Engine

JOURNAL = ".pneumoview-journal"
STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class BatchInput:
    """One input: an image file, or a file the folder scan already knows is unusable (``error``).

    ``image_id`` is set only when another input has the same id (two files with one SOP Instance UID, or two
    RSNA-style files with one name): it then replaces the file's own id in every output (see
    :func:`make_ids_unique`), and ``shared_id`` is the id they had in common.
    """

    path: Path
    error: str | None = None
    stage: str | None = None
    image_id: str | None = None
    shared_id: str | None = None


@dataclass(frozen=True)
class BatchItem:
    """What happened to one input."""

    path: Path
    image_id: str | None
    status: str
    message: str = ""
    n_boxes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class BatchProgress:
    """Progress after one input: ``done`` of ``total`` inputs handled, and an ETA in seconds (None at first)."""

    done: int
    total: int
    item: BatchItem
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class BatchSummary:
    """The outcome of a run (also in ``run.json``)."""

    out_dir: Path
    total: int
    done: int
    skipped: int
    failed: tuple[tuple[str, str], ...]
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        """0 when every input was analysed (now or before), 1 when some failed or the run was cancelled."""
        return 1 if self.failed or self.cancelled else 0


def collect_inputs(paths: Sequence[str | Path], ignored: list[Path] | None = None) -> list[BatchInput]:
    """Expand folders (recursively, with the study scanner: DICOMDIR, DICOM with or without ``.dcm``, PNG, JPEG)
    and keep files as given. Non-image DICOM objects are left out, and so are documents (the scan's
    ``ScanError.is_document``: appended to ``ignored`` when given); other unreadable files become inputs with
    ``error``. Inputs that share an image id get unique ones (:func:`make_ids_unique`)."""
    out: list[BatchInput] = []
    ids: dict[Path, str | None] = {}
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for item in scan(p):
                key = item.path.resolve()
                if key in seen:
                    continue
                seen.add(key)
                if isinstance(item, ScanError):
                    if item.is_document:
                        if ignored is not None:
                            ignored.append(item.path)
                        continue
                    out.append(BatchInput(item.path, item.message, item.stage))
                elif isinstance(item, ScanEntry) and item.kind == "image":
                    out.append(BatchInput(item.path))
                    ids[item.path] = item.image_id
        elif p.is_file():
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(BatchInput(p))
                ids[p] = next((i.image_id for i in scan(p) if isinstance(i, ScanEntry)), None)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return make_ids_unique(out, ids)


def make_ids_unique(inputs: Sequence[BatchInput], ids: dict[Path, str | None]) -> list[BatchInput]:
    """Give every input its own image id, so that each gets its own rows and output files.

    ``ids`` maps an input's path to the id the scan gave it. When several inputs share an id, the first (in input
    order) keeps it and the others get ``-2``, ``-3`` … appended. The input order is the sorted scan order, so the
    same inputs get the same ids in every run, on resume and in every shard.
    """
    groups: dict[str, list[int]] = {}
    for i, inp in enumerate(inputs):
        image_id = ids.get(inp.path)
        if image_id:
            groups.setdefault(image_id, []).append(i)
    out = list(inputs)
    for image_id, members in groups.items():
        if len(members) < 2:
            continue
        for n, i in enumerate(members, start=1):
            unique = image_id if n == 1 else f"{image_id}-{n}"
            out[i] = replace(out[i], image_id=unique, shared_id=image_id)
    return out


def id_clashes(inputs: Sequence[BatchInput]) -> list[dict[str, Any]]:
    """For ``run.json``: every id that several inputs shared, with their files and the ids they were given."""
    groups: dict[str, list[BatchInput]] = {}
    for inp in inputs:
        if inp.shared_id:
            groups.setdefault(inp.shared_id, []).append(inp)
    return [
        {"shared_id": k, "files": [str(i.path) for i in v], "image_ids": [i.image_id for i in v]}
        for k, v in groups.items()
    ]


def shard(inputs: Sequence[BatchInput], k: int, n: int) -> list[BatchInput]:
    """The ``k``-th of ``n`` interleaved shards (0-based)."""
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: K must be between 0 and N-1")
    return [x for i, x in enumerate(inputs) if i % n == k]


def _journal_path(out_dir: Path, path: Path) -> Path:
    # The key hides the input path, which may contain patient names.
    key = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return out_dir / JOURNAL / f"{key}.json"


def _read_journal(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def iter_batch(
    inputs: Sequence[BatchInput],
    out_dir: str | Path,
    engine: Engine,
    thresholds: Thresholds | None = None,
    *,
    force: bool = False,
    write_png: bool = True,
    include_identifiers: bool = False,
    chunk: int = 4,
    finalize_outputs: bool = True,
    all_inputs: Sequence[BatchInput] | None = None,
    run_info: dict[str, Any] | None = None,
    dicom: DicomOptions | None = None,
    overlap: bool = True,
) -> Generator[BatchProgress, None, None]:
    """Analyse ``inputs`` and yield progress after each one.

    Closing the generator early (``.close()``, or stopping a ``for`` loop) cancels the run: the inputs finished so far
    are kept and the CSVs/run.json are written for them. ``all_inputs`` (default ``inputs``) lists every input of a
    sharded run, so the merged CSVs cover all shards' journals. ``run_info`` is added to ``run.json`` (e.g. where
    the thresholds came from). ``dicom`` also writes each DICOM image's SR/SEG/GSPS into ``out_dir/dicom/``
    (:mod:`pneumoview.dicom_results.batch_outputs`). ``overlap`` (default) decodes the next inputs and writes the
    finished ones while the models run (:mod:`pneumoview.pipeline`); the outputs are the same as one step after the
    other (``overlap=False``).
    """
    t = thresholds or Thresholds()
    out = Path(out_dir)
    (out / JOURNAL).mkdir(parents=True, exist_ok=True)
    if finalize_outputs:  # the only writer: temporary files left by a killed run are debris (see export.py)
        remove_stale_temp_files(out)
    total = len(inputs)
    start = time.perf_counter()
    done_count = 0
    analysed = 0
    cancelled = True
    hashes = _model_hashes(engine)

    def prepare(inp: BatchInput) -> Finished[BatchItem] | tuple[BatchInput, Any]:
        """Skip a finished input, record an unusable one, or load the image (in the reader thread when overlapped)."""
        jp = _journal_path(out, inp.path)
        record = None if force else _read_journal(jp)
        if (
            record is not None
            and record.get("status") == STATUS_DONE
            and record.get("thresholds") == t.to_dict()
            and record.get("model_hashes") == hashes
            and record.get("write_png") in (write_png, True)
            and (
                dicom is None
                or (record.get("dicom_options") == dicom.to_dict() and not record.get("dicom_error"))
            )
        ):
            return Finished(
                BatchItem(inp.path, record.get("image_id"), STATUS_SKIPPED, "already done (use --force)")
            )
        if inp.error is not None:
            _write_failure(jp, inp.path, inp.stage or "header", inp.error)
            return Finished(BatchItem(inp.path, None, STATUS_FAILED, inp.error))
        try:
            image = load_image(inp.path)
            if inp.image_id is not None:
                image = replace(image, image_id=inp.image_id)
        except ImageReadError as exc:
            _write_failure(jp, inp.path, exc.stage, exc.message)
            return Finished(BatchItem(inp.path, None, STATUS_FAILED, exc.message))
        return inp, image

    def write(work: tuple[BatchInput, Any], result: Any, compute_s: float) -> BatchItem:
        return _write_result(work, result, compute_s, out, t, write_png, include_identifiers, dicom, hashes)

    def compute(works: Sequence[tuple[BatchInput, Any]]) -> list[Any]:
        return list(engine.analyze_batch([image for _, image in works]))

    if overlap:
        items: Generator[BatchItem, None, None] = pipelined(inputs, prepare, compute, write, chunk=chunk)
    else:
        items = sequential(inputs, prepare, compute, write, chunk=chunk)
    try:
        for item in items:
            done_count += 1
            analysed += item.status == STATUS_DONE
            yield _progress(done_count, total, item, start, analysed)
        cancelled = False
    finally:
        items.close()  # a cancelled pipeline writes what it computed and stops its threads before the CSVs
        if finalize_outputs:
            finalize(out, all_inputs if all_inputs is not None else inputs, engine, t, cancelled=cancelled,
                     elapsed_s=time.perf_counter() - start, analysed=analysed, run_info=run_info)  # fmt: skip


# What export.atomic_write_bytes and render.save_png leave behind when killed: tempfile.mkstemp(prefix=".<name>.",
# suffix=".tmp") in the destination's folder.
_TEMP_NAME = re.compile(r"^\..+\.(png|csv|json|dcm)\.[A-Za-z0-9_]{8}\.tmp$")
OUTPUT_FILES = ("submission.csv", "findings.csv", "run.json")


def remove_stale_temp_files(out_dir: str | Path) -> list[Path]:
    """Delete the partial temporary files that a killed run left in ``out_dir``, ``annotated/`` and the journal
    (only names PneumoView's atomic writers make); returns them. Call only when no other process writes there."""
    removed = []
    out = Path(out_dir)
    for folder in (out, out / "annotated", out / JOURNAL, out / "dicom"):
        try:
            names = [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            if _TEMP_NAME.match(name):
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
                    removed.append(folder / name)
    return removed


def output_conflict(out_dir: str | Path, thresholds: Thresholds) -> str | None:
    """Why a run into ``out_dir`` without ``force`` would replace results it holds; None when it only adds.

    The rule (``pneumoview predict`` refuses with this sentence unless ``--force`` is given):

    * a new or empty folder, or one without PneumoView outputs: fine;
    * a folder with a journal whose finished images were all made with ``thresholds``: fine, the run resumes
      (finished images are skipped, their annotated PNGs and journal records are not rewritten; submission.csv,
      findings.csv and run.json are rebuilt from the journal, so they keep every earlier row);
    * finished images made with other thresholds: a conflict, since redoing them would replace their results;
    * submission.csv, findings.csv, run.json or annotated/ without a journal (written by something else or
      another tool): a conflict, since they would be overwritten.
    """
    out = Path(out_dir)
    journal = out / JOURNAL
    records = sorted(journal.glob("*.json")) if journal.is_dir() else []
    if not records:
        existing = [n for n in (*OUTPUT_FILES, "annotated", "dicom") if (out / n).exists()]
        if existing:
            return (
                f"{out} already holds {', '.join(existing)} that this run would overwrite, and no PneumoView "
                "journal says how they were made; choose another --out folder, or use --force to replace them."
            )
        return None
    wanted = thresholds.to_dict()
    for jp in records:
        record = _read_journal(jp)
        if record is not None and record.get("status") == STATUS_DONE and record.get("thresholds") != wanted:
            return (
                f"{out} holds results made with other thresholds; re-running would replace them. Choose another "
                "--out folder, use the same thresholds to resume, or use --force to redo every image."
            )
    return None


def _model_hashes(engine: Engine) -> dict[str, str]:
    """Model id → sha256 of every model the engine would run, plus the classifier's P(opacity) calibration and fusion
    when it has them; a journal record made by other models (or the same weights calibrated otherwise) is stale."""
    out = {}
    for stage in STAGES:
        try:
            out.update({spec.id: spec.sha256 for spec, _ in engine.stage_specs(stage)})
        except Exception:  # noqa: BLE001 - an unknown id is reported elsewhere; here it just means "no model"
            continue
    for kind in ("calibration", "fusion"):
        calibration = engine.stage_calibration("classify", kind)
        if calibration is not None:
            out[f"classify:{kind}"] = json.dumps(calibration.to_dict(), sort_keys=True)
    return out


def _progress(done: int, total: int, item: BatchItem, start: float, analysed: int) -> BatchProgress:
    elapsed = time.perf_counter() - start
    eta = None
    if analysed and done < total:
        eta = elapsed / done * (total - done)
    return BatchProgress(done, total, item, elapsed, eta)


def _write_failure(jp: Path, path: Path, stage: str, message: str) -> None:
    atomic_write_text(
        jp,
        json.dumps({"status": STATUS_FAILED, "path": str(path), "stage": stage, "message": message}) + "\n",
    )


def _write_result(
    work: tuple[BatchInput, Any],
    result: Any,
    compute_s: float,
    out: Path,
    t: Thresholds,
    write_png: bool,
    include_identifiers: bool,
    dicom: DicomOptions | None,
    hashes: dict[str, str],
) -> BatchItem:
    """Post-process one model result and write its annotated PNG, DICOM results and journal record."""
    inp, image = work
    t1 = time.perf_counter()
    findings = findings_for(result, t, image.spacing_mm, memo=False)
    patient_id = submission_id(image, include_identifiers)
    png = None
    if write_png:
        png = out / "annotated" / f"{export_stem(image, include_identifiers)}.png"
        save_png(
            annotated_image(image, result, findings), png, text={"pneumoview:models": models_text(result)}
        )
    record = {
        "status": STATUS_DONE,
        "path": str(inp.path),
        "image_id": image.image_id,
        "patient_id": patient_id,
        "prediction_string": findings.prediction_string(),
        "findings": findings_rows(image, result, findings, include_identifiers),
        "annotated_png": None if png is None else png.name,
        "notes": list(image.notes) + list(result.notes) + list(findings.notes),
        "warnings": list(suitability_warnings(image)),
        "timings_ms": dict(result.timings_ms),
        "models": [asdict(m) for m in result.models],
        "device": result.device,
        "thresholds": t.to_dict(),
        "model_hashes": hashes,
        "write_png": write_png,
    }
    if dicom is not None:
        # lazy: highdicom is heavy; DICOM results are written on request only
        from pneumoview.dicom_results.batch_outputs import write_for_batch

        record |= write_for_batch(
            image, result, findings, out, dicom, include_identifiers=include_identifiers
        )
    atomic_write_text(_journal_path(out, inp.path), json.dumps(record) + "\n")
    return BatchItem(
        inp.path, image.image_id, STATUS_DONE, "; ".join(record["notes"]), len(findings.fused),
        compute_s + time.perf_counter() - t1,
    )  # fmt: skip


def finalize(
    out_dir: str | Path,
    inputs: Sequence[BatchInput],
    engine: Engine | None,
    thresholds: Thresholds,
    *,
    cancelled: bool = False,
    elapsed_s: float = 0.0,
    analysed: int = 0,
    command: Sequence[str] | None = None,
    run_info: dict[str, Any] | None = None,
) -> BatchSummary:
    """Rebuild ``submission.csv``, ``findings.csv`` and ``run.json`` from the journal, in input order;
    ``run_info`` adds keys to ``run.json``."""
    out = Path(out_dir)
    submission: list[tuple[str, str]] = []
    findings: list[dict[str, str]] = []
    failed: list[tuple[str, str]] = []
    done = 0
    models: dict[str, dict[str, str]] = {}
    timings: dict[str, list[float]] = {}
    device = None if engine is None else engine.device
    records = []
    for inp in inputs:
        record = _read_journal(_journal_path(out, inp.path))
        if record is None:
            continue
        records.append(record)
        if record["status"] == STATUS_FAILED:
            failed.append((record["path"], f"{record['stage']}: {record['message']}"))
            continue
        done += 1
        submission.append((record["patient_id"], record["prediction_string"]))
        findings.extend(record["findings"])
        for m in record["models"]:
            models[m["id"]] = m
        for k, v in record["timings_ms"].items():
            timings.setdefault(k, []).append(float(v))
        device = record.get("device", device)
    write_submission_csv(submission, out / "submission.csv")
    write_findings_csv(findings, out / "findings.csv")
    pending = len(inputs) - done - len(failed)
    failed += [(r["path"], f"dicom: {r['dicom_error']}") for r in records if r.get("dicom_error")]
    summary = BatchSummary(out, len(inputs), done, 0, tuple(failed), cancelled or pending > 0)
    dicom = None
    if any("dicom_options" in r for r in records):
        # lazy: highdicom is heavy; DICOM results are written on request only
        from pneumoview.dicom_results.batch_outputs import DicomOptions, dicom_summary

        opts = next(r["dicom_options"] for r in records if "dicom_options" in r)
        dicom = dicom_summary(records, DicomOptions(**opts))
    write_json(
        out / "run.json",
        {
            "app": "PneumoView",
            "app_version": __version__,
            "notice": "Research use only — not for diagnosis",
            "command": list(command if command is not None else sys.argv),
            "python": platform.python_version(),
            "device": device,
            "runtime": None if engine is None else getattr(engine, "runtime", None),
            "models": list(models.values()),
            "thresholds": thresholds.to_dict(),
            "tta": None if engine is None else bool(getattr(engine, "tta", False)),
            "inputs": len(inputs),
            "done": done,
            "failed": [{"path": p, "reason": r} for p, r in failed],
            "not_processed": pending,
            "cancelled": summary.cancelled,
            "analysed_this_run": analysed,
            "elapsed_s_this_run": round(elapsed_s, 3),
            "images_per_s_this_run": round(analysed / elapsed_s, 3) if elapsed_s > 0 and analysed else None,
            "mean_ms_per_stage": {k: round(sum(v) / len(v), 2) for k, v in timings.items()},
            "warnings": [
                {"path": r["path"], "image_id": r["image_id"], "warnings": r["warnings"]}
                for r in records
                if r.get("warnings")
            ],
            "id_clashes": id_clashes(inputs),
            **(run_info or {}),
        }
        | ({"dicom": dicom} if dicom is not None else {}),
    )
    return summary


def run_batch(
    inputs: Sequence[BatchInput],
    out_dir: str | Path,
    engine: Engine,
    thresholds: Thresholds | None = None,
    *,
    on_progress: Callable[[BatchProgress], None] | None = None,
    **kwargs: Any,
) -> BatchSummary:
    """Run :func:`iter_batch` to the end and return the summary read back from ``run.json``."""
    for progress in iter_batch(inputs, out_dir, engine, thresholds, **kwargs):
        if on_progress is not None:
            on_progress(progress)
    return read_summary(out_dir)


def read_summary(out_dir: str | Path) -> BatchSummary:
    """The summary of the last run in ``out_dir`` (from ``run.json``)."""
    data = json.loads((Path(out_dir) / "run.json").read_text(encoding="utf-8"))
    return BatchSummary(
        Path(out_dir),
        data["inputs"],
        data["done"],
        0,
        tuple((f["path"], f["reason"]) for f in data["failed"]),
        data["cancelled"],
        {"run": data},
    )
