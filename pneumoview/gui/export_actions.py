"""Export from the viewer: the current image (annotated PNG + CSVs) or the current study (CSVs).

The PNG comes from :func:`pneumoview.export.annotated_image` at native resolution, the same code as
``pneumoview predict``. File names carry the non-identifying image id unless the user opted in to identifiers
(Settings), and existing files are never replaced without asking. A failed export says what failed and why in a
dialog (:meth:`MainWindow.report_error`) and leaves no partial file (:mod:`pneumoview.file_bundle`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtWidgets

from pneumoview.gui import viewmodel as vm
from pneumoview.gui import workers

if TYPE_CHECKING:
    from pneumoview.gui.main_window import MainWindow

log = logging.getLogger(__name__)


def reason(exc: BaseException) -> str:
    """A short, user-facing reason for a failed write ("Permission denied", "No space left on device" …)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Exporter:
    """The window's File ▸ Export actions; results are announced with ``window.exportFinished``."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window

    def confirm_overwrite(self, paths: list[Path]) -> bool:
        """Ask before replacing files (tests replace this)."""
        from pneumoview.gui.dialogs import ask_overwrite

        return ask_overwrite(self.window, paths)

    def _folder(self, folder: str | Path | None) -> Path | None:
        settings = self.window.settings
        if folder is None:
            folder = QtWidgets.QFileDialog.getExistingDirectory(
                self.window, "Export to folder", settings.last_export_dir
            )
        if not folder:
            return None
        settings.last_export_dir = str(folder)
        return Path(folder)

    def _message(self, text: str, ms: int = 8000) -> None:
        self.window.statusBar().showMessage(text, ms)

    def _failed(self, what: str, folder: Path, exc: BaseException) -> None:
        log.warning("%s failed", what, exc_info=exc)
        self.window.report_error(
            "Export failed",
            f"{what} to {folder} failed: {reason(exc)}.\n\nNothing was written. Choose a folder you can write "
            "to (and check that the disk has room), then export again.",
        )

    def export_current(self, folder: str | Path | None = None) -> list[Path]:
        """``<id>_annotated.png``, ``<id>_findings.csv`` and ``<id>_submission.csv`` of the current image in
        ``folder`` (asked for when None); returns the files written ([] when nothing was written)."""
        from pneumoview import export
        from pneumoview.file_bundle import write_together

        s = self.window.session
        image, result, findings = s.image, s.result, s.findings  # as shown now, whatever happens meanwhile
        if image is None or result is None or findings is None:
            self._message("Nothing to export: analyse an image first.")
            return []
        out = self._folder(folder)
        if out is None:
            return []
        ids = self.window.settings.include_identifiers_in_exports
        stem = export.export_stem(image, ids)
        targets = [
            out / f"{stem}_annotated.png",
            out / f"{stem}_findings.csv",
            out / f"{stem}_submission.csv",
        ]
        existing = [p for p in targets if p.exists()]
        if existing and not self.confirm_overwrite(existing):
            return []

        review = self.window.review.review  # the reader's decisions on this image (the current one), if any

        def write(stage: Path) -> None:
            export.save_png(export.annotated_image(image, result, findings), stage / targets[0].name)
            rows = export.findings_rows(image, result, findings, ids, review=review)
            export.write_findings_csv(rows, stage / targets[1].name)
            submission = [(vm.submission_id(image, ids), findings.prediction_string())]
            export.write_submission_csv(submission, stage / targets[2].name)

        try:
            write_together(out, [t.name for t in targets], write)
        except Exception as exc:
            self._failed(f"Exporting {targets[0].name} and its CSVs", out, exc)
            return []
        self._message(f"Exported {targets[0].name} and its CSVs to {out}")
        self.window.exportFinished.emit(targets)
        return targets

    def export_study(self, folder: str | Path | None = None) -> workers.Job | None:
        """``study-<key>_findings.csv`` and ``study-<key>_submission.csv`` for every image of the current study,
        analysing in the background the images that are not in the cache. ``<key>`` is a hash of the file paths,
        so the names reveal nothing about the patient."""
        w = self.window
        paths = w.browser.study_images()
        if not paths:
            self._message("Nothing to export: open a study first.")
            return None
        out = self._folder(folder)
        if out is None:
            return None
        from pneumoview.file_bundle import check_writable

        key = hashlib.sha256("\n".join(map(str, paths)).encode("utf-8", "surrogateescape")).hexdigest()[:10]
        targets = [out / f"study-{key}_findings.csv", out / f"study-{key}_submission.csv"]
        what = f"Exporting the study's CSVs ({targets[0].name}, {targets[1].name})"
        try:  # before analysing a whole study, not after
            check_writable(out)
        except OSError as exc:
            self._failed(what, out, exc)
            return None
        existing = [p for p in targets if p.exists()]
        if existing and not self.confirm_overwrite(existing):
            return None
        engine = w.engine_info.engine if w.engine_info is not None else None
        self._message(f"Exporting {len(paths)} images…", 0)
        job = workers.start(
            "export", workers.export_study_job, paths, w.session.cache_snapshot(), engine, w.engine_stages(),
            w.session.thresholds, w.settings.include_identifiers_in_exports, *targets,
            on_return=self._on_study_exported, on_error=lambda e: self._study_failed(what, out, e),
        )  # fmt: skip
        w.jobs["export"] = job
        return job

    def _study_failed(self, what: str, out: Path, exc: BaseException) -> None:
        self._message("")
        self._failed(what, out, exc)

    def _on_study_exported(self, outcome: workers.ExportOutcome) -> None:
        failed = f"; {len(outcome.failed)} images failed" if outcome.failed else ""
        self._message(f"Exported {', '.join(p.name for p in outcome.written)}{failed}", 10000)
        self.window.exportFinished.emit(outcome)
