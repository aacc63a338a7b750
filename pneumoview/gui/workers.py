"""Background work for the viewer: superqt workers on the global thread pool.

The job functions below are plain Python (no Qt): they take a ``cancelled()`` callable, return or yield frozen
values (``XrayImage``, ``AnalysisResult``, numpy arrays, batch progress), and never touch widgets. :func:`start`
runs one in a worker and routes its results to slots on the GUI thread through Qt's queued signals.

torch is imported only inside the jobs (through the engine), never when this module is imported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superqt.utils import create_worker

from pneumoview.errors import ImageReadError, ModelError
from pneumoview.export import findings_rows, write_findings_csv, write_submission_csv
from pneumoview.file_bundle import write_together
from pneumoview.findings_pipeline import Analysed, analyse, findings_for
from pneumoview.gui import viewmodel as vm
from pneumoview.gui.progressive import load_steps
from pneumoview.imaging import load_image
from pneumoview.review_store import ReviewStore
from pneumoview.study_index import scan
from pneumoview.thresholds import Thresholds
from pneumoview.types import DEFAULT_TTA, STAGES, AnalysisResult, XrayImage

if TYPE_CHECKING:
    from pneumoview.inference.engine import Engine

log = logging.getLogger(__name__)

Cancelled = Callable[[], bool]


# --------------------------------------------------------------------------------------------------------------
# Running jobs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A running background job. ``cancel()`` asks it to stop at its next step; slots of a cancelled job are not
    called any more (except ``on_finish``)."""

    name: str
    worker: Any = None
    event: threading.Event = field(default_factory=threading.Event)
    done: bool = False

    def cancel(self, hard: bool = True) -> None:
        """Stop the job. ``hard`` also stops superqt's generator loop; jobs that must clean up (the batch) use
        ``hard=False`` so the generator sees the flag and closes its outputs itself."""
        self.event.set()
        if hard and self.worker is not None:
            self.worker.quit()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


_RUNNING: set[int] = set()
_JOBS: dict[int, Job] = {}


def start(
    name: str,
    func: Callable[..., Any],
    *args: Any,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    drop_after_cancel: bool = True,
    **kwargs: Any,
) -> Job:
    """Run ``func(*args, cancelled=..., **kwargs)`` (a function or generator function) in the thread pool.

    With ``drop_after_cancel`` (for work that a newer request makes stale), nothing it still sends after
    ``cancel()`` reaches the slots; without it (the batch), its last progress and its summary still arrive.
    """
    job = Job(name)

    def guarded(slot):
        def call(*a):
            if not (drop_after_cancel and job.event.is_set()):
                slot(*a)

        return call

    def finished():
        job.done = True
        _JOBS.pop(id(job), None)
        if on_finish is not None:
            on_finish()

    connect: dict[str, Any] = {"finished": finished, "errored": guarded(on_error or _log_error(name))}
    if on_yield is not None:
        connect["yielded"] = guarded(on_yield)
    if on_return is not None:
        connect["returned"] = guarded(on_return)
    _JOBS[id(job)] = job  # keeps the job (and its worker) alive until it finishes
    job.worker = create_worker(func, *args, cancelled=job.event.is_set, _connect=connect, **kwargs)
    return job


def running_jobs() -> list[Job]:
    return list(_JOBS.values())


def _log_error(name: str) -> Callable[[BaseException], None]:
    def log(exc: BaseException) -> None:
        logging.getLogger(__name__).error("background job %s failed: %s", name, exc, exc_info=exc)

    return log


# --------------------------------------------------------------------------------------------------------------
# Job functions (no Qt below this line)
# --------------------------------------------------------------------------------------------------------------


def scan_job(folder: Path, *, cancelled: Cancelled, flush_s: float = 0.05) -> Iterator[list[Any]]:
    """Scan a folder (or one file) and yield its entries in chunks, at least every ``flush_s`` seconds."""
    chunk: list[Any] = []
    last = time.perf_counter()
    for item in scan(folder):
        if cancelled():
            return
        chunk.append(item)
        if time.perf_counter() - last >= flush_s or len(chunk) >= 500:
            yield chunk
            chunk, last = [], time.perf_counter()
    if chunk:
        yield chunk


@dataclass(frozen=True)
class EngineInfo:
    """The loaded engine (None when it could not be made), which stages can run, and messages for the user."""

    engine: Engine | None
    available: Mapping[str, str | None]
    notes: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        """Where the engine runs now (the engine owns it: it may fall back to the CPU); ``"none"`` without one."""
        return "none" if self.engine is None else str(self.engine.device)

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s for s in STAGES if self.available.get(s) is None)

    def why_off(self) -> str:
        """Why no stage can run, in the engine's words: the one cause when every stage gives the same (e.g. no
        inference runtime installed), else each stage's cause."""
        reasons = {s: r for s, r in self.available.items() if r}
        if not reasons:
            return "no model is selected"
        if len(set(reasons.values())) == 1:
            return next(iter(reasons.values()))
        return "; ".join(f"{s}: {r}" for s, r in reasons.items())


def load_engine_job(
    device: str,
    models_dir: str | None,
    classifier: str | None = None,
    tta: bool = DEFAULT_TTA,
    *,
    cancelled: Cancelled,
) -> EngineInfo:
    """Make the engine (with ``classifier`` as its classifier, default rsna3; flip test-time augmentation when
    ``tta``) and load every installed model once (this is where torch is imported)."""
    # lazy: the model stack (torch) is loaded only when models run
    from pneumoview.inference.engine import DEFAULT_SELECTION, Engine, StageSelection

    selection = StageSelection(classify=classifier or DEFAULT_SELECTION["classify"])
    notes: list[str] = []
    try:
        try:
            engine = Engine(device=device, models_dir=models_dir or None, selection=selection, tta=tta)
        except ModelError as exc:
            if device in ("auto", "cpu"):
                raise
            notes.append(f"{exc}; using the CPU instead.")
            engine = Engine(device="cpu", models_dir=models_dir or None, selection=selection, tta=tta)
    except ModelError as exc:
        return EngineInfo(None, dict.fromkeys(STAGES, str(exc)), (str(exc),))
    available = engine.available_stages()
    if not cancelled() and any(v is None for v in available.values()):
        engine.load()
    return EngineInfo(engine, available, tuple(notes))


def analyse_job(
    path: Path,
    engine: Engine,
    stages: Sequence[str],
    image: XrayImage | None = None,
    *,
    preview: bool = True,
    cancelled: Cancelled,
) -> Iterator[tuple[Any, ...]]:
    """Load one image (unless given) and run the stages one at a time, classifier first.

    Yields ``("image", XrayImage)`` (after ``("preview", ReducedImage, painted)`` for a large JPEG 2000 image when
    ``preview`` is on, see :func:`pneumoview.gui.progressive.load_steps`) and then ``("stage", AnalysisResult,
    last)`` after each stage with the result so far. Only the full image is analysed. Raises
    :class:`~pneumoview.errors.ImageReadError` for unreadable files.
    """
    if image is None:
        image = yield from load_steps(path, cancelled, preview)
    if image is None or engine is None or not stages:
        return
    # Show each stage as soon as it lands; the final result is sent once more, marked as the last.
    latest: AnalysisResult | None = None
    for latest in engine.iter_stages(image, [s for s in STAGES if s in stages], cancelled=cancelled):
        yield ("stage", latest, False)
    if latest is not None and not cancelled():
        yield ("stage", latest, True)


def analyse_many_job(
    paths: Sequence[Path],
    engine: Engine,
    stages: Sequence[str],
    thresholds: Thresholds,
    *,
    cancelled: Cancelled,
) -> Iterator[tuple[Path, Analysed | None, str]]:
    """Analyse images one after another; yields ``(path, analysed, "")`` or ``(path, None, error message)``."""
    for path in paths:
        if cancelled():
            return
        try:
            image = load_image(path)
        except ImageReadError as exc:
            yield (path, None, exc.message)
            continue
        yield (path, analyse(engine, image, thresholds, stages), "")


def gradcam_job(engine: Engine, image: XrayImage, *, cancelled: Cancelled) -> Any:
    """The classifier's Grad-CAM map of ``image`` (float32 ``(H, W)`` in ``[0, 1]``)."""
    # lazy: the model stack (torch) is loaded only when models run
    from pneumoview.inference.saliency import gradcam

    return gradcam(engine, image)


def _review(image: XrayImage):
    """The reader's saved review of ``image`` (None when none or unreadable: the export goes on without it)."""
    try:
        return ReviewStore().load(image.image_id)
    except ValueError as exc:
        log.warning("%s", exc)
        return None


@dataclass(frozen=True)
class ExportOutcome:
    written: tuple[Path, ...]
    failed: tuple[tuple[str, str], ...]


def cached_or_analysed(
    path: Path,
    cache: Mapping[Path, tuple[XrayImage, AnalysisResult]],
    engine: Engine,
    stages: Sequence[str],
    thresholds: Thresholds,
    check: Callable[[XrayImage], str | None] | None = None,
) -> Analysed | str:
    """``path``'s image, result and findings, the result from ``cache`` or loaded and analysed by ``engine``; or
    why not (a message).

    ``check(image)`` may refuse an image with a reason; a loaded image is checked before it is analysed.
    """
    hit = cache.get(path)
    if hit is not None:
        image, result = hit
    else:
        if engine is None:
            return "not analysed and no models are loaded"
        try:
            image = load_image(path)
        except ImageReadError as exc:
            return exc.message
        result = None
    reason = check(image) if check is not None else None
    if reason:
        return reason
    if result is None:
        return analyse(engine, image, thresholds, stages)
    return Analysed(image, result, findings_for(result, thresholds, image.spacing_mm))


def export_study_job(
    paths: Sequence[Path],
    cache: Mapping[Path, tuple[XrayImage, AnalysisResult]],
    engine: Engine,
    stages: Sequence[str],
    thresholds: Thresholds,
    include_identifiers: bool,
    findings_csv: Path,
    submission_csv: Path,
    *,
    cancelled: Cancelled,
) -> ExportOutcome:
    """Write the study's ``findings.csv`` and RSNA ``submission.csv``, analysing the images not in ``cache``."""
    rows: list[dict[str, str]] = []
    submission: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    for path in paths:
        if cancelled():
            return ExportOutcome((), tuple(failed))
        got = cached_or_analysed(path, cache, engine, stages, thresholds)
        if isinstance(got, str):
            failed.append((str(path), got))
            continue
        image, result, findings = got.image, got.result, got.findings
        rows.extend(findings_rows(image, result, findings, include_identifiers, review=_review(image)))
        submission.append((vm.submission_id(image, include_identifiers), findings.prediction_string()))

    def write(stage: Path) -> None:
        write_findings_csv(rows, stage / findings_csv.name)
        write_submission_csv(submission, stage / submission_csv.name)

    # Both CSVs or neither (the two targets share a folder).
    written = write_together(findings_csv.parent, [findings_csv.name, submission_csv.name], write)
    return ExportOutcome(tuple(written), tuple(failed))


def batch_job(
    paths: Sequence[Path],
    out_dir: Path,
    engine: Engine,
    thresholds: Any,
    *,
    force: bool = False,
    write_png: bool = True,
    include_identifiers: bool = False,
    dicom: Any = None,
    cancelled: Cancelled,
) -> Generator[tuple[str, Any], None, Any]:
    """``pneumoview predict``'s code path: yields ``("inputs", n)`` then ``("progress", BatchProgress)``; returns
    the :class:`~pneumoview.batch.BatchSummary`. On cancel the batch generator is closed here, in the worker
    thread, so ``run.json`` and the CSVs are written for the images finished so far."""
    # lazy: batch analysis is a cold path here
    from pneumoview.batch import collect_inputs, iter_batch, read_summary

    inputs = collect_inputs(paths)
    yield ("inputs", len(inputs))
    extra = {"dicom": dicom} if dicom is not None else {}  # DicomOptions: predict --dicom's outputs
    gen = iter_batch(
        inputs, out_dir, engine, thresholds, force=force, write_png=write_png,
        include_identifiers=include_identifiers, run_info={"thresholds_source": "the batch dialog's Thresholds panel"},
        **extra,
    )  # fmt: skip
    try:
        for progress in gen:
            yield ("progress", progress)
            if cancelled():
                break
    finally:
        gen.close()
    return read_summary(out_dir)
