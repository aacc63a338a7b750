"""File ▸ Batch process directory…: input, output and thresholds; progress with ETA; cancel; a final summary.

Runs :func:`pneumoview.batch.iter_batch` in a worker, so the outputs are exactly those of ``pneumoview predict``
(``submission.csv``, ``findings.csv``, ``run.json``, ``annotated/*.png``; with "Write DICOM results" also the
SR/SEG/GSPS under ``dicom/``, as ``predict --dicom``). Cancelling stops between images and still writes the CSVs and
``run.json`` for the images finished so far.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from pneumoview.gui import viewmodel as vm
from pneumoview.gui import workers
from pneumoview.gui.dialogs import ask_overwrite
from pneumoview.gui.threshold_panel import ThresholdPanel
from pneumoview.output_folder import output_folder_problem, write_error_text
from pneumoview.thresholds import Thresholds
from pneumoview.viewer_state import ViewerState


class BatchDialog(QtWidgets.QDialog):
    """Signals: ``finishedRun(object)`` with the :class:`~pneumoview.batch.BatchSummary` (None on error)."""

    finishedRun = QtCore.Signal(object)

    def __init__(
        self,
        engine_info: Callable[[], workers.EngineInfo | None],
        thresholds: Thresholds,
        include_identifiers: bool = False,
        input_dir: str = "",
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Batch process directory")
        self._engine_info = engine_info
        self.include_identifiers = include_identifiers
        self.job: workers.Job | None = None
        self.summary = None
        self.last_progress = None
        self.total = 0

        layout = QtWidgets.QVBoxLayout(self)
        form = QtWidgets.QFormLayout()
        self.input_edit = self._folder_row(form, "Input folder", input_dir)
        self.output_edit = self._folder_row(form, "Output folder", "")
        self.force = QtWidgets.QCheckBox(
            "Analyse again images finished in an earlier run of this output folder"
        )
        self.write_png = QtWidgets.QCheckBox("Write annotated PNGs")
        self.write_png.setChecked(True)
        form.addRow("", self.force)
        form.addRow("", self.write_png)
        self._add_dicom_options(form)
        layout.addLayout(form)
        box = QtWidgets.QGroupBox("Thresholds")
        own = ViewerState()  # the batch's thresholds, apart from the viewer's (they start equal)
        own.set_thresholds(thresholds)
        self.thresholds_panel = ThresholdPanel(own)
        QtWidgets.QVBoxLayout(box).addWidget(self.thresholds_panel)
        layout.addWidget(box)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QtWidgets.QLabel("Choose the folders and press Start.")
        self.status.setWordWrap(True)
        self.failures = QtWidgets.QListWidget()
        self.failures.setMaximumHeight(120)
        self.failures.setAccessibleName("Failed files")
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(QtWidgets.QLabel("Failed files:"))
        layout.addWidget(self.failures)

        buttons = QtWidgets.QDialogButtonBox()
        self.start_button = buttons.addButton("Start", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = buttons.addButton("Cancel run", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = buttons.addButton(QtWidgets.QDialogButtonBox.StandardButton.Close)
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        layout.addWidget(buttons)
        self.resize(640, 720)

    def _add_dicom_options(self, form: QtWidgets.QFormLayout) -> None:
        """ "Write DICOM results (SR, SEG)" with its GSPS and probability-map options (``predict --dicom``)."""
        self.write_dicom = QtWidgets.QCheckBox("Write DICOM results (SR, SEG) for DICOM inputs, under dicom/")
        self.dicom_gsps = QtWidgets.QCheckBox("with a presentation state (GSPS) of the boxes")
        self.dicom_probability = QtWidgets.QCheckBox("with the probability map (fractional SEG)")
        for option in (self.dicom_gsps, self.dicom_probability):
            option.setEnabled(False)
            self.write_dicom.toggled.connect(option.setEnabled)
        form.addRow("", self.write_dicom)
        form.addRow("    ", self.dicom_gsps)
        form.addRow("    ", self.dicom_probability)

    def dicom_options(self):
        """The :class:`~pneumoview.dicom_results.batch_outputs.DicomOptions` chosen, None when DICOM is off."""
        if not self.write_dicom.isChecked():
            return None
        from pneumoview.dicom_results.batch_outputs import DicomOptions

        return DicomOptions(
            gsps=self.dicom_gsps.isChecked(), probability_map=self.dicom_probability.isChecked()
        )

    def _folder_row(self, form: QtWidgets.QFormLayout, label: str, value: str) -> QtWidgets.QLineEdit:
        row = QtWidgets.QHBoxLayout()
        edit = QtWidgets.QLineEdit(value)
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(lambda: self._browse(edit, label))
        row.addWidget(edit, 1)
        row.addWidget(browse)
        form.addRow(label, row)
        return edit

    def _browse(self, edit: QtWidgets.QLineEdit, title: str) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, title, edit.text())
        if folder:
            edit.setText(folder)

    # -- running ------------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.done

    def start(self, confirm: Callable[[list[Path]], bool] | None = None) -> bool:
        """Check the inputs and start the run; returns False (with the reason shown) when it cannot start."""
        src, out = Path(self.input_edit.text().strip()), Path(self.output_edit.text().strip())
        info = self._engine_info()
        problem = None
        if not self.input_edit.text().strip() or not src.exists():
            problem = "Choose an input folder that exists."
        elif not self.output_edit.text().strip():
            problem = "Choose an output folder."
        elif out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
            problem = "Choose an output folder outside the input folder (inputs are never written to)."
        elif output_folder_problem(out) is not None:  # e.g. read-only: say so now, not mid-run
            problem = output_folder_problem(out)
        elif info is None:
            problem = "The models are still loading; try again in a moment."
        elif info.engine is None or not info.stages:
            problem = "No model can run: " + "; ".join(r for r in info.available.values() if r)
        if problem:
            self.status.setText(problem)
            return False
        previous = [p for p in (out / "run.json", out / "submission.csv", out / "findings.csv") if p.exists()]
        if previous and not (confirm or (lambda ps: ask_overwrite(self, ps)))(previous):
            self.status.setText("Not started: the output folder holds an earlier run.")
            return False
        self.summary = None
        self.failures.clear()
        self.progress.setRange(0, 0)
        self.status.setText("Collecting the input files…")
        self._set_running(True)
        self.job = workers.start(
            "batch",
            workers.batch_job,
            [src],
            out,
            info.engine,
            self.thresholds_panel.thresholds(),
            force=self.force.isChecked(),
            write_png=self.write_png.isChecked(),
            include_identifiers=self.include_identifiers,
            dicom=self.dicom_options(),
            on_yield=self._on_yield,
            on_return=self._on_summary,
            on_error=self._on_error,
            on_finish=lambda: self._set_running(False),
            drop_after_cancel=False,
        )
        return True

    def cancel(self) -> None:
        """Stop after the image being analysed; the outputs are written for the finished images."""
        if self.running:
            self.job.cancel(hard=False)
            self.status.setText("Cancelling after the current image…")
            self.cancel_button.setEnabled(False)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.input_edit, self.output_edit, self.force, self.write_png, self.thresholds_panel):
            w.setEnabled(not running)
        self.write_dicom.setEnabled(not running)
        for option in (self.dicom_gsps, self.dicom_probability):
            option.setEnabled(not running and self.write_dicom.isChecked())

    def _on_yield(self, value) -> None:
        kind, payload = value
        if kind == "inputs":
            self.total = payload
            self.progress.setRange(0, max(payload, 1))
            self.status.setText(f"0 of {payload} images…")
            return
        p = payload
        self.last_progress = p
        self.progress.setValue(p.done)
        self.status.setText(f"{p.done} of {p.total} images · {p.elapsed_s:.0f} s · {vm.eta_text(p.eta_s)}")
        if p.item.status == "failed":
            self.failures.addItem(f"{p.item.path.name}: {p.item.message}")

    def _on_summary(self, summary) -> None:
        self.summary = summary
        how = "Cancelled" if summary.cancelled else "Finished"
        self.status.setText(
            f"{how}: {summary.done} of {summary.total} images analysed, {len(summary.failed)} failed. "
            f"Outputs in {summary.out_dir}."
        )
        self.failures.clear()
        for path, reason in summary.failed:
            self.failures.addItem(f"{Path(path).name}: {reason}")
        self.progress.setRange(0, max(summary.total, 1))
        self.progress.setValue(summary.done + len(summary.failed))
        self.finishedRun.emit(summary)

    def _on_error(self, exc: BaseException) -> None:
        text = write_error_text(exc) if isinstance(exc, OSError) else str(exc)
        self.status.setText(f"The batch stopped: {text}")
        self.finishedRun.emit(None)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        if self.running:
            self.cancel()
        super().closeEvent(event)
