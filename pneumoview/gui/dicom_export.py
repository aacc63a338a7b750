"""File ▸ Export as DICOM…: the SR (always), SEG (when the mask has a pixel) and optionally GSPS and the probability
map of the current image or of every image of its study, written by
:func:`pneumoview.dicom_results.write_results` — the same writer as ``pneumoview predict --dicom``. The current
image's export also holds the reader's review SR when the image has been reviewed.

Only DICOM sources get DICOM results (a PNG/JPEG has no study to join): the viewer says so instead of writing
anything. File names carry the non-identifying image id unless the user opted in to identifiers (Settings), and
existing files are never replaced without asking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtWidgets

from pneumoview.gui import workers

if TYPE_CHECKING:
    from pneumoview.gui.main_window import MainWindow
    from pneumoview.types import AnalysisResult, XrayImage

NOT_DICOM = "not a DICOM image (PNG/JPEG has no study to join), so no DICOM results"
_KINDS = ("SR", "SEG", "GSPS")


def _is_dicom(image: XrayImage) -> bool:
    return "SOPInstanceUID" in image.identifiers


def _dicom_refusal(image: XrayImage) -> str | None:
    return None if _is_dicom(image) else NOT_DICOM


def result_targets(image: XrayImage, out: Path, include_identifiers: bool) -> list[Path]:
    """The files :func:`write_results` may write for ``image`` in ``out`` (to ask before replacing them)."""
    from pneumoview.export import export_stem

    stem = export_stem(image, include_identifiers)
    return [out / f"{stem}_{k}.dcm" for k in _KINDS]


def dicom_study_job(
    paths: Sequence[Path],
    cache: Mapping[Path, tuple[XrayImage, AnalysisResult]],
    engine: Any,
    stages: Sequence[str],
    thresholds: Any,
    out: Path,
    gsps: bool,
    probability_map: bool,
    include_identifiers: bool,
    *,
    cancelled,
) -> workers.ExportOutcome:
    """Write the DICOM results of every image of a study, analysing those not in ``cache`` (worker thread)."""
    from pneumoview.dicom_results import DicomResultsError, write_results

    written: list[Path] = []
    failed: list[tuple[str, str]] = []
    for path in paths:
        if cancelled():
            break
        got = workers.cached_or_analysed(path, cache, engine, stages, thresholds, check=_dicom_refusal)
        if isinstance(got, str):
            failed.append((str(path), got))
            continue
        image, result, findings = got.image, got.result, got.findings
        try:
            written += write_results(
                image, result, findings, out, gsps=gsps, probability_map=probability_map,
                include_identifiers=include_identifiers,
            )  # fmt: skip
        except (DicomResultsError, ValueError, OSError) as exc:
            failed.append((str(path), str(exc)))
    return workers.ExportOutcome(tuple(written), tuple(failed))


class DicomExportDialog(QtWidgets.QDialog):
    """Scope (current image or study), GSPS and probability-map options, and the output folder."""

    def __init__(self, folder: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export as DICOM")
        layout = QtWidgets.QVBoxLayout(self)
        self.current = QtWidgets.QRadioButton("Current image")
        self.study = QtWidgets.QRadioButton("Every image of the current study")
        self.current.setChecked(True)
        self.gsps = QtWidgets.QCheckBox("Also a presentation state (GSPS) with the boxes, for older viewers")
        self.probability = QtWidgets.QCheckBox("Also the probability map (fractional SEG segment)")
        note = QtWidgets.QLabel(
            "Writes a TID 1500 SR (always) and a SEG (when the mask has a pixel) into the same study as each DICOM "
            "image, in new series. PNG/JPEG images have no study to join and are skipped."
        )
        note.setWordWrap(True)
        row = QtWidgets.QHBoxLayout()
        self.folder = QtWidgets.QLineEdit(folder)
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(QtWidgets.QLabel("Output folder"))
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        for w in (self.current, self.study, self.gsps, self.probability, note):
            layout.addWidget(w)
        layout.addLayout(row)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Export DICOM results to", self.folder.text()
        )
        if folder:
            self.folder.setText(folder)


class DicomExporter(QtCore.QObject):
    """The window's File ▸ Export as DICOM…; results are announced with ``window.exportFinished``."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.last_error = ""

    def ask(self) -> None:
        """Show the export dialog and run the export the user chose."""
        dialog = DicomExportDialog(self.window.settings.last_export_dir, self.window)
        if dialog.exec() != QtWidgets.QDialog.DialogCode.Accepted or not dialog.folder.text().strip():
            return
        folder = dialog.folder.text().strip()
        self.window.settings.last_export_dir = folder
        options = {"gsps": dialog.gsps.isChecked(), "probability_map": dialog.probability.isChecked()}
        if dialog.study.isChecked():
            self.export_study(folder, **options)
        else:
            self.export_current(folder, **options)

    def export_current(
        self, folder: str | Path, gsps: bool = False, probability_map: bool = False
    ) -> list[Path]:
        """Write the current image's DICOM results into ``folder``; returns the files ([] when none, with the
        reason shown)."""
        from pneumoview.dicom_results import DicomResultsError, write_results

        w, s = self.window, self.window.session
        if s.image is None or s.result is None or s.findings is None:
            self._problem("Nothing to export: analyse an image first.")
            return []
        if not _is_dicom(s.image):
            self._problem(
                f"{s.image.source.name} is {NOT_DICOM}; export it with File ▸ Export image… instead."
            )
            return []
        out = Path(folder)
        ids = w.settings.include_identifiers_in_exports
        existing = [p for p in result_targets(s.image, out, ids) if p.exists()]
        if existing and not w.exporter.confirm_overwrite(existing):
            return []
        try:
            written = write_results(
                s.image, s.result, s.findings, out, gsps=gsps, probability_map=probability_map,
                include_identifiers=ids,
            )  # fmt: skip
            review = w.review.review
            if review is not None and review.boxes and w.review.image is s.image:
                written.append(w.review.write_review_sr_into(out, written[0]))
        except (DicomResultsError, ValueError, OSError) as exc:
            self._problem(f"DICOM results of {s.image.source.name} were not written: {exc}")
            return []
        w.statusBar().showMessage(f"Exported {', '.join(p.name for p in written)} to {out}", 8000)
        w.exportFinished.emit(written)
        return written

    def export_study(
        self, folder: str | Path, gsps: bool = False, probability_map: bool = False
    ) -> workers.Job | None:
        """Write the DICOM results of every image of the current study in the background."""
        w = self.window
        paths = w.browser.study_images()
        if not paths:
            self._problem("Nothing to export: open a study first.")
            return None
        engine = w.engine_info.engine if w.engine_info is not None else None
        w.statusBar().showMessage(f"Exporting DICOM results of {len(paths)} images…", 0)
        job = workers.start(
            "export_dicom", dicom_study_job, paths, w.session.cache_snapshot(), engine, w.engine_stages(),
            w.session.thresholds, Path(folder), gsps, probability_map, w.settings.include_identifiers_in_exports,
            on_return=self._on_study_done, on_error=lambda e: self._problem(f"DICOM export failed: {e}"),
        )  # fmt: skip
        w.jobs["export_dicom"] = job
        return job

    def _on_study_done(self, outcome: workers.ExportOutcome) -> None:
        failed = f"; {len(outcome.failed)} images without DICOM results" if outcome.failed else ""
        self.window.statusBar().showMessage(f"Exported {len(outcome.written)} DICOM files{failed}", 10000)
        self.window.exportFinished.emit(outcome)

    def _problem(self, text: str) -> None:
        self.last_error = text
        self.window.statusBar().showMessage(text, 10000)
        box = QtWidgets.QMessageBox(
            QtWidgets.QMessageBox.Icon.Warning, "Export as DICOM", text, parent=self.window
        )
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
