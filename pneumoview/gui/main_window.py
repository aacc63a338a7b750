"""The main window: wires the widgets to the Qt-free core and runs the work in background jobs.

State lives in the Qt-free :class:`~pneumoview.viewer_state.ViewerState` (``self.session``), which announces each
change; the widgets render from it (:meth:`MainWindow._bind_state`). Display logic is in
:mod:`pneumoview.gui.viewmodel`, the layout in :mod:`pneumoview.gui.window_layout`, work in
:mod:`pneumoview.gui.workers`. Every job result carries the generation number of the request that started it, and
results of a stale generation (the user moved to another image) are dropped.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets
from superqt.utils import qdebounced, qthrottled

from pneumoview import RESEARCH_USE_NOTICE, ground_truth
from pneumoview.data import sample_study_dir
from pneumoview.gui import viewmodel as vm
from pneumoview.gui import window_actions, window_layout, workers
from pneumoview.gui.batch_dialog import BatchDialog
from pneumoview.gui.dialogs import AboutDialog, SettingsDialog, ShortcutsDialog
from pneumoview.gui.dicom_export import DicomExporter
from pneumoview.gui.export_actions import Exporter
from pneumoview.gui.icons import icon
from pneumoview.gui.pacs_actions import PacsActions
from pneumoview.gui.progressive import ProgressiveDisplay
from pneumoview.gui.review_controller import ReviewController
from pneumoview.gui.stored_results import StoredResultsLayer
from pneumoview.inference.runtime import needs_torch
from pneumoview.prefetch import ImagePrefetcher, neighbours
from pneumoview.settings import Settings, save_settings, settings_path
from pneumoview.suitability import suitability_warnings
from pneumoview.types import STAGES
from pneumoview.viewer_state import ViewerState

if TYPE_CHECKING:
    import numpy as np

    from pneumoview.gui.batch_dialog import BatchDialog
    from pneumoview.gui.canvas import ImageCanvas
    from pneumoview.gui.findings_panel import FindingsPanel
    from pneumoview.gui.overlays import OverlayControls
    from pneumoview.gui.study_browser import StudyBrowser
    from pneumoview.gui.threshold_panel import ThresholdPanel
    from pneumoview.gui.welcome import WelcomePage

log = logging.getLogger(__name__)


class MainWindow(QtWidgets.QMainWindow):
    """Signals (for tests, the screenshot mode and the benchmark): ``imageShown(Path)``, ``imageFailed(Path,
    str)``, ``analysisFinished(Path)`` (the complete result of the current image is on screen),
    ``engineReady(EngineInfo)``, ``scanFinished(int)`` (number of images), ``exportFinished(object)``."""

    imageShown = QtCore.Signal(object)
    imageFailed = QtCore.Signal(object, str)
    analysisFinished = QtCore.Signal(object)
    engineReady = QtCore.Signal(object)
    scanFinished = QtCore.Signal(int)
    exportFinished = QtCore.Signal(object)

    # Made by pneumoview.gui.window_layout.
    canvas: ImageCanvas
    welcome: WelcomePage
    stack: QtWidgets.QStackedWidget
    browser: StudyBrowser
    findings_panel: FindingsPanel
    threshold_panel: ThresholdPanel
    layer_controls: OverlayControls
    readout: QtWidgets.QLabel
    window_label: QtWidgets.QLabel
    models_label: QtWidgets.QLabel
    notice: QtWidgets.QLabel

    def __init__(
        self, settings: Settings, *, device: str | None = None, models_dir: str | None = None
    ) -> None:
        super().__init__()
        self.settings = settings
        self.session = ViewerState(settings, device=device)  # the live state; settings persist it
        self.models_dir = models_dir or settings.models_dir or None
        self.auto_analyse = settings.auto_analyse
        self.prefetcher = ImagePrefetcher()  # PgDown/PgUp neighbours decoded ahead
        self.engine_info: workers.EngineInfo | None = None
        self.folder: Path | None = None
        self.jobs: dict[str, workers.Job] = {}
        self.batch_dialog: BatchDialog | None = None
        self.error_dialog: QtWidgets.QMessageBox | None = None
        self.labels = ground_truth.LabelSources()
        self._settings_save_failed = False
        self.setWindowIcon(icon("app"))
        self.setAcceptDrops(True)
        self._build_widgets()
        self.progressive = ProgressiveDisplay(self.canvas)  # large JPEG 2000: reduced decode first
        self.exporter = Exporter(self)
        self.pacs = PacsActions(self)  # File ▸ Open from PACS…, Send results to PACS…, PACS peers…
        self.dicom_exporter = DicomExporter(self)
        self.review = ReviewController(self)
        self.stored = StoredResultsLayer(self)
        self._set_title()
        self._restore_layout()

    # -- construction -------------------------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        window_layout.build_central(self)
        window_layout.build_docks(self)
        a = window_actions.build_actions(self, window_layout.handlers(self))
        self.actions_by_key = a
        self.recent_menu = window_actions.build_menus(self, a)
        window_actions.build_toolbar(self, a)
        self._fill_recent_menu()
        window_layout.build_status_bar(self)
        self.browser.imageSelected.connect(self._on_image_selected)
        self.browser.analyseRequested.connect(self.analyse_paths)
        self.findings_panel.boxSelected.connect(self._on_box_selected)
        self.welcome.open_button.clicked.connect(self.open_folder_dialog)
        self.welcome.sample_button.clicked.connect(self.open_sample)
        a["saliency"].setChecked(self.session.overlay_visible["saliency"])
        a["info_overlay"].setChecked(self.settings.info_overlay)
        self.canvas.set_info_overlay(self.settings.info_overlay)
        self._disable_gradcam_without_torch()
        self._bind_state()

    def _disable_gradcam_without_torch(self) -> None:
        # Grad-CAM backpropagates through the classifier, which only PyTorch does; the desktop app has no torch.
        self.gradcam_missing = needs_torch("Grad-CAM")
        if self.gradcam_missing is None:
            return
        for widget in (self.actions_by_key["saliency"], self.layer_controls.checks["saliency"]):
            widget.setEnabled(False)
            widget.setToolTip(self.gradcam_missing)
        self.actions_by_key["saliency"].setStatusTip(self.gradcam_missing)

    def _bind_state(self) -> None:
        """Render the state's changes: findings (throttled while a threshold is dragged), the Grad-CAM action and
        job, the models' device; save the settings (debounced) when the state wrote them back."""
        s = self.session
        self._render_findings = qthrottled(self._show_result, timeout=30, leading=True, parent=self)
        self._restatus_later = qdebounced(s.restatus_cached, timeout=300, parent=self)
        self._save_settings_later = qdebounced(self.save_settings_now, timeout=250, parent=self)
        s.findings_changed.connect(self._on_findings_changed)
        s.thresholds_changed.connect(lambda _t: self._restatus_later())
        s.layer_changed.connect(self._on_layer_changed)
        s.saliency_changed.connect(self.canvas.overlays.set_saliency)
        s.device_changed.connect(lambda _d: self._show_models_label())
        s.settings_changed.connect(self._save_settings_later)

    # -- engine -------------------------------------------------------------------------------------------------

    def start_engine(self) -> None:
        """Load torch and the models in the background (call once the window is shown)."""
        self._cancel("engine")
        self.engine_info = None
        self.models_label.setText("Models: loading…")
        self.jobs["engine"] = workers.start(
            "engine", workers.load_engine_job, self.session.device_request, self.models_dir, self.settings.classifier,
            self.settings.tta, on_return=self._on_engine_ready, on_error=self._on_engine_error,
        )  # fmt: skip

    def _on_engine_ready(self, info: workers.EngineInfo) -> None:
        self.engine_info = info
        self.session.set_engine(info.engine)
        self._show_models_label()
        for note in info.notes:
            self.statusBar().showMessage(note, 10000)
        self.engineReady.emit(info)
        if self.session.image is not None and self.session.result is None and self.auto_analyse:
            self.analyse_current()

    def _on_engine_error(self, exc: BaseException) -> None:
        log.error("the models could not be loaded", exc_info=exc)
        self._on_engine_ready(workers.EngineInfo(None, dict.fromkeys(STAGES, str(exc))))

    def _show_models_label(self) -> None:
        info = self.engine_info
        if info is None:
            return
        if info.stages:
            self.models_label.setText(f"Models: {', '.join(info.stages)} on {self.session.device}")
        else:
            self.models_label.setText("Models: analysis off (viewing only)")  # the tooltip says why
        reasons = [f"{s}: {r}" for s, r in info.available.items() if r]
        self.models_label.setToolTip("\n".join([*info.notes, *reasons]) or "All models are ready.")

    def engine_stages(self) -> tuple[str, ...]:
        return self.engine_info.stages if self.engine_info is not None else ()

    # -- opening ------------------------------------------------------------------------------------------------

    def open_path(self, path: str | Path) -> bool:
        """Open a folder, a DICOMDIR or one image file: the scan fills the browser and the first image is shown."""
        p = Path(path).expanduser()
        if not p.exists():
            self._error(f"{p} does not exist.")
            return False
        for name in ("scan", "many", "analyse"):
            self._cancel(name)
        self.folder = p
        self.session.forget_statuses()
        self.browser.clear(p.name or str(p))
        self.canvas.set_image(None)
        self.review.on_image(None)
        self.stored.show_for(None, [])
        self.findings_panel.clear()
        self.stack.setCurrentWidget(self.canvas)
        self.settings.add_recent_folder(p)
        self._fill_recent_menu()
        self.labels.folder = ground_truth.find_labels(p if p.is_dir() else p.parent)
        self._n_scanned = 0
        self.jobs["scan"] = workers.start(
            "scan", workers.scan_job, p, on_yield=self._on_scan_items,
            on_error=lambda e: self._error(f"Cannot scan {p}: {e}"), on_finish=self._on_scan_finished,
        )  # fmt: skip
        return True

    def _on_scan_items(self, items: list) -> None:
        self.browser.add_items(items)
        if self.browser.current_path() is None:
            self.browser.select_first_image()
        self.stored.update_paths(self.session.image, self._stored_paths(self.session.image))

    def _stored_paths(self, image) -> list[Path]:
        """Result files (SR/SEG/GSPS) of the opened folder about ``image``."""
        return self.browser.results_for(image.identifiers.get("SOPInstanceUID")) if image is not None else []

    def _on_scan_finished(self) -> None:
        n = len(self.browser.image_paths())
        self.statusBar().showMessage(f"{n} images, {self.browser.n_errors} unreadable files", 5000)
        self.scanFinished.emit(n)

    def open_folder_dialog(self) -> None:
        start = self.settings.recent_folders[0] if self.settings.recent_folders else ""
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open folder", start)
        if folder:
            self.open_path(folder)

    def open_file_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self,
            "Open image or DICOMDIR",
            "",
            "Images (*.dcm *.dicom DICOMDIR *.png *.jpg *.jpeg);;All files (*)",
        )
        if path:
            self.open_path(path)

    def open_sample(self) -> None:
        try:
            folder = sample_study_dir()
        except ImportError as exc:
            self._error(f"The sample study is not installed ({exc}).")
            return
        self.open_path(folder)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in self.settings.recent_folders:
            self.recent_menu.addAction(folder, functools.partial(self.open_path, folder))
        self.recent_menu.setEnabled(bool(self.settings.recent_folders))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt override
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt override
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_path(paths[0])
            event.acceptProposedAction()

    # -- one image ----------------------------------------------------------------------------------------------

    def _on_image_selected(self, path: Path) -> None:
        if path == self.session.path and self.session.image is not None:
            return
        self._cancel("analyse")
        self._cancel("saliency")
        gen = self.session.select(path)
        cached = self.session.cached(path)
        if cached is not None:
            self._show_image(cached[0])
            self._after_complete_result()
            return
        stages = self.engine_stages() if self.auto_analyse else ()
        image = self.prefetcher.get(path)
        if image is None:
            self.findings_panel.clear("Loading…")
        else:
            self._show_image(image)
        if stages:
            self.session.set_status(path, vm.RUNNING, "analysing")
        self._start_analysis(gen, path, stages, image=image)

    def analyse_current(self) -> None:
        """(Re-)analyse the current image with every stage that can run."""
        if self.session.image is None or self.session.path is None:
            return
        stages = self.engine_stages()
        if not stages:
            why = "the models are still loading" if self.engine_info is None else self.engine_info.why_off()
            self.statusBar().showMessage(f"Cannot analyse: {why}.", 8000)
            return
        self._cancel("analyse")
        gen = self.session.bump()
        self.session.set_status(self.session.path, vm.RUNNING, "analysing")
        self._start_analysis(gen, self.session.path, stages, image=self.session.image)

    def _start_analysis(self, gen: int, path: Path, stages, image) -> None:
        engine = self.engine_info.engine if self.engine_info is not None else None
        self.jobs["analyse"] = workers.start(
            "analyse", workers.analyse_job, path, engine, stages, image, preview=self.progressive.enabled,
            on_yield=functools.partial(self._on_analysis_yield, gen),
            on_error=functools.partial(self._on_analysis_error, gen, path),
        )  # fmt: skip

    def _on_analysis_yield(self, gen: int, value: tuple) -> None:
        if not self.session.is_current(gen):
            return
        if value[0] == "image":
            self._show_image(value[1])
            return
        if value[0] == "preview":
            self.progressive.show_preview(self.session.path, *value[1:])
            return
        _, result, last = value
        self.session.set_result(result, complete=last, generation=gen)
        self._render_findings.flush()  # a new result is shown at once; only threshold drags are throttled
        if last:
            self._after_complete_result()

    def _on_analysis_error(self, gen: int, path: Path, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc)
        self.session.set_status(path, vm.ERROR, message)
        if self.session.is_current(gen):
            if self.session.image is None:
                self.canvas.set_image(None)
            self.findings_panel.clear("Cannot show this file")
            self.findings_panel.notes.setText(message)
            self.statusBar().showMessage(f"{path.name}: {message}", 10000)
        self.imageFailed.emit(path, message)

    def _show_image(self, image) -> None:
        self.progressive.show_image(image)
        self.threshold_panel.set_image_geometry(image.shape, image.spacing_mm)
        self.canvas.overlays.set_truth(self.truth_boxes(image))
        self._set_title(image.source.name)
        pending = bool(self.engine_stages()) and self.auto_analyse
        notes = list(image.notes)
        if self.engine_info is not None and not self.engine_info.stages:
            notes.append(
                f"Analysis is off: {self.engine_info.why_off()}. Help ▸ About lists the models folders."
            )
        self.findings_panel.set_result(None, None, running=pending, extra_notes=notes)
        self.findings_panel.set_warnings(suitability_warnings(image))
        self.review.on_image(image)
        self.stored.show_for(image, self._stored_paths(image))
        self.session.set_image(image)  # a cached result is shown now, through findings_changed
        self._render_findings.flush()
        if self.session.path is not None:
            self.prefetcher.put(self.session.path, image)
            self.prefetcher.prefetch(neighbours(self.browser.visible_image_paths(), self.session.path))
        self.imageShown.emit(self.session.path)

    def _on_findings_changed(self, _findings) -> None:
        self._render_findings()

    def _show_result(self) -> None:
        """Render the state's current result and findings (overlays, table, review)."""
        s, ov = self.session, self.canvas.overlays
        if s.result is None:
            return
        ov.set_prob_map(s.result.prob_map)
        ov.set_findings(s.findings, s.thresholds.seg_threshold)
        ov.set_saliency(s.saliency)
        notes = s.image.notes if s.image else ()
        truth, source = self.truth_boxes(), self.labels.source_name()
        self.findings_panel.set_result(
            s.result, s.findings, s.running, notes, self.canvas.orientation, truth, source
        )
        self.review.on_findings(s.findings)

    def _after_complete_result(self) -> None:
        if self.session.overlay_visible["saliency"] and self.session.saliency is None:
            self._start_saliency()
        self.analysisFinished.emit(self.session.path)

    # -- layers -------------------------------------------------------------------------------------------------

    def set_thresholds(self, thresholds) -> None:
        """Use ``thresholds`` (post-processing only, never the models; saved at once, debounced)."""
        self.session.set_thresholds(thresholds)

    def _on_layer_changed(self, layer: str) -> None:
        if layer != "saliency":
            return
        on = self.session.overlay_visible["saliency"]
        action = self.actions_by_key["saliency"]
        action.blockSignals(True)
        action.setChecked(on)
        action.blockSignals(False)
        if on and self.session.saliency is None and self.session.result is not None:
            self._start_saliency()

    def _start_saliency(self) -> None:
        if (
            "classify" not in self.engine_stages()
            or self.session.image is None
            or self.engine_info is None
            or self.gradcam_missing
        ):
            return
        gen = self.session.generation

        def done(cam) -> None:
            self.session.set_saliency(cam, generation=gen)  # dropped when the user moved on

        self.jobs["saliency"] = workers.start(
            "saliency", workers.gradcam_job, self.engine_info.engine, self.session.image, on_return=done,
            on_error=lambda e: self.statusBar().showMessage(f"Grad-CAM is not available: {e}", 10000),
        )  # fmt: skip

    def _on_box_selected(self, set_name: str, index: int) -> None:
        boxes = vm.boxset_of(self.session.findings, set_name) if self.session.findings is not None else None
        if boxes is None:
            return
        box = boxes.boxes[index]
        self.canvas.overlays.highlight(box)
        self.canvas.centre_on(box)

    def _on_info_overlay(self, on: bool) -> None:
        self.settings.info_overlay = bool(on)
        self.canvas.set_info_overlay(on)

    # -- ground truth -------------------------------------------------------------------------------------------

    def truth_boxes(self, image=None) -> np.ndarray | None:
        """The radiologists' boxes for ``image`` (default: the current one) in its pixels, or None (no labels)."""
        return self.labels.boxes_for(image if image is not None else self.session.image)

    def load_labels(self, path: str | Path) -> bool:
        """Use an RSNA labels CSV (``stage_2_train_labels.csv`` layout) as the ground-truth layer."""
        try:
            self.labels.chosen = ground_truth.load_labels(path)
        except ValueError as exc:
            self.report_error("Cannot use these labels", f"{exc}\n\nChoose an RSNA labels CSV "
                              "(columns patientId,x,y,width,height,Target).")  # fmt: skip
            return False
        self.labels.folder = None
        n = len(self.labels.chosen.boxes)
        self.statusBar().showMessage(f"Ground truth: {n} patients from {Path(path).name}", 8000)
        self.canvas.overlays.set_truth(self.truth_boxes())
        self._show_result()
        return True

    def load_labels_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Ground-truth labels (RSNA CSV)", "", "CSV files (*.csv);;All files (*)"
        )
        if path:
            self.load_labels(path)

    # -- many images ----------------------------------------------------------------------------------------------

    def analyse_paths(self, paths: list) -> workers.Job | None:
        """Analyse images in the background (those already in the cache are skipped); statuses update as it goes."""
        todo = [
            Path(p) for p in paths if self.session.cached(Path(p)) is None and Path(p) != self.session.path
        ]
        if not self.engine_stages() or self.engine_info is None:
            why = "the models are still loading" if self.engine_info is None else self.engine_info.why_off()
            self.statusBar().showMessage(f"Cannot analyse: {why}.", 8000)
            return None
        self._cancel("many")
        for p in todo:
            self.session.set_status(p, vm.RUNNING, "queued")
        if self.session.path in paths and self.session.result is None:
            self.analyse_current()
        job = workers.start(
            "many", workers.analyse_many_job, todo, self.engine_info.engine, self.engine_stages(), self.session.thresholds,
            on_yield=self._on_many_item, on_finish=lambda: self.statusBar().showMessage("Analysis finished", 5000),
        )  # fmt: skip
        self.jobs["many"] = job
        return job

    def _on_many_item(self, value: tuple) -> None:
        path, analysed, error = value
        if error:
            self.session.set_status(path, vm.ERROR, error)
            return
        self.session.record(path, analysed)

    # -- export -------------------------------------------------------------------------------------------------

    def export_current(self, folder: str | Path | None = None) -> list[Path]:
        """Annotated PNG + CSVs of the current image (see :meth:`Exporter.export_current`)."""
        return self.exporter.export_current(folder)

    def export_study(self, folder: str | Path | None = None) -> workers.Job | None:
        """CSVs of the current study (see :meth:`Exporter.export_study`)."""
        return self.exporter.export_study(folder)

    # -- dialogs ------------------------------------------------------------------------------------------------

    def show_batch_dialog(self) -> None:
        if self.batch_dialog is None or not self.batch_dialog.isVisible():
            self.batch_dialog = BatchDialog(
                lambda: self.engine_info, self.session.thresholds, self.settings.include_identifiers_in_exports,
                str(self.folder) if self.folder is not None and self.folder.is_dir() else "", self,
            )  # fmt: skip
        self.batch_dialog.show()
        self.batch_dialog.raise_()

    def show_settings_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            reload = dialog.apply_to(self.settings)
            self.auto_analyse = self.settings.auto_analyse
            save_settings(self.settings)
            if reload:
                self.session.request_device(self.settings.device)
                self.models_dir = self.settings.models_dir or None
                self.session.forget_results()  # made by the previous models
                self.start_engine()

    def show_shortcuts(self) -> None:
        ShortcutsDialog(window_actions.shortcut_rows(self.actions_by_key), self).exec()

    def show_about(self) -> None:
        available = self.engine_info.available if self.engine_info is not None else None
        AboutDialog(self.models_dir, available, self).exec()

    # -- misc ---------------------------------------------------------------------------------------------------

    def _cancel(self, name: str) -> None:
        job = self.jobs.pop(name, None)
        if job is not None and not job.done:
            job.cancel()

    def report_error(self, title: str, text: str) -> QtWidgets.QMessageBox:
        """Say what failed and why in a (non-blocking) dialog; the last one is ``error_dialog``."""
        log.warning("%s: %s", title, text)
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, title, text, parent=self)
        box.setWindowModality(QtCore.Qt.WindowModality.WindowModal)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose, False)
        box.open()
        self.error_dialog = box
        return box

    def save_settings_now(self) -> bool:
        """Write the settings file; the first failure is reported in a dialog, later ones in the status bar."""
        path = save_settings(self.settings)
        if path is not None:
            return True

        text = f"Cannot save the settings to {settings_path()}; your changes last until you quit."
        if self._settings_save_failed:
            self.statusBar().showMessage(text, 10000)
        else:
            self.report_error("Settings not saved", f"{text}\n\nCheck that the folder can be written.")
        self._settings_save_failed = True
        return False

    def _error(self, message: str) -> None:
        log.warning(message)
        self.statusBar().showMessage(message, 10000)

    def _set_title(self, name: str | None = None) -> None:
        parts = ["PneumoView", name, RESEARCH_USE_NOTICE]
        self.setWindowTitle(" — ".join(p for p in parts if p))

    def _restore_layout(self) -> None:
        geometry = QtCore.QByteArray.fromBase64(self.settings.window_geometry.encode("ascii"))
        if geometry.isEmpty() or not self.restoreGeometry(geometry):
            self.resize(1500, 950)
        state = QtCore.QByteArray.fromBase64(self.settings.window_state.encode("ascii"))
        if not state.isEmpty():
            self.restoreState(state)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64().data()).decode("ascii")
        self.settings.window_state = bytes(self.saveState().toBase64().data()).decode("ascii")
        # Saved here, at once: a pending debounced save must not fire later from a closed window.
        for later in (self._save_settings_later, self._restatus_later, self._render_findings):
            later.cancel()
        save_settings(self.settings)
        self.review.flush(wait=True)
        self.prefetcher.close()
        if self.batch_dialog is not None:
            self.batch_dialog.close()
        for name in list(self.jobs):
            self._cancel(name)
        QtCore.QThreadPool.globalInstance().waitForDone(5000)
        super().closeEvent(event)
