"""The main window's PACS features: File ▸ Open from PACS…, File ▸ Send results to PACS…, Settings ▸ PACS
peers…. Installed by :class:`PacsActions` into the window's File menu, so the window itself barely changes.

Retrieved studies go to the PACS cache (``pneumoview.pacs.cache_root()``); the browser lists what an earlier
retrieve left at once and fills with each instance as it arrives. A progress dialog shows the count and can
cancel: what arrived stays, and retrieving again fetches only the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview import pacs
from pneumoview.gui import pacs_jobs, workers
from pneumoview.gui.pacs_dialogs import OpenFromPacsDialog, PeersDialog, SendDialog
from pneumoview.settings import save_settings

if TYPE_CHECKING:
    from pneumoview.gui.main_window import MainWindow


class PacsActions(QtCore.QObject):
    """Signals (for tests): ``retrieveFinished(object)`` with a :class:`pacs_jobs.RetrieveSummary`,
    ``sendFinished(object)`` with a :class:`pneumoview.pacs.SendResult` or the error's text."""

    retrieveFinished = QtCore.Signal(object)
    sendFinished = QtCore.Signal(object)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.progress: QtWidgets.QProgressDialog | None = None
        self.last_message = ""
        self.open_action = QtGui.QAction("Open from &PACS…", window)
        self.open_action.setShortcut(QtGui.QKeySequence("Ctrl+Shift+P"))
        self.open_action.setStatusTip("Search a PACS and retrieve studies into the local cache")
        self.open_action.triggered.connect(lambda: self.open_dialog())
        self.send_action = QtGui.QAction("Send results to PAC&S…", window)
        self.send_action.setStatusTip(
            "Send DICOM results (SR, SEG) of this image, study or a batch to a PACS"
        )
        self.send_action.triggered.connect(lambda: self.send_dialog())
        self.peers_action = QtGui.QAction("PACS peers…", window)
        self.peers_action.setStatusTip("Set up PACS peers (DIMSE or DICOMweb) and test the connection")
        self.peers_action.triggered.connect(lambda: self.peers_dialog())
        for a in (self.open_action, self.send_action, self.peers_action):
            window.addAction(a)
        self._install_menu()

    def _install_menu(self) -> None:
        by_key = self.window.actions_by_key
        for menu_action in self.window.menuBar().actions():
            menu = menu_action.menu()
            if menu is None or by_key["open_folder"] not in menu.actions():
                continue
            menu.insertAction(by_key["export_current"], self.open_action)
            menu.insertSeparator(by_key["export_current"])
            menu.insertAction(by_key["batch"], self.send_action)
            menu.insertSeparator(by_key["batch"])
            actions = menu.actions()
            after = actions[actions.index(by_key["settings"]) + 1] if by_key["settings"] in actions else None
            menu.insertAction(after, self.peers_action)
            return

    def _say(self, text: str, warn: bool = False) -> None:
        self.last_message = text
        self.window.statusBar().showMessage(text, 15000)
        if warn:
            box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, "PACS", text, parent=self.window)
            box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()  # not modal to the app: the viewer stays usable

    # -- peers --------------------------------------------------------------------------------------------------

    def peers_dialog(self) -> PeersDialog:
        dialog = PeersDialog(self.window.settings.get_peers(), self.window)
        dialog.accepted.connect(lambda: self._save_peers(dialog))
        dialog.open()
        return dialog

    def _save_peers(self, dialog: PeersDialog) -> None:
        self.window.settings.set_peers(dialog.peers())
        save_settings(self.window.settings)

    # -- open from PACS -----------------------------------------------------------------------------------------

    def open_dialog(self) -> OpenFromPacsDialog:
        dialog = OpenFromPacsDialog(self.window.settings.get_peers(), self.window)
        dialog.accepted.connect(lambda: self._retrieve_chosen(dialog))
        dialog.open()
        if not self.window.settings.get_peers():
            self._say("No PACS is set up yet: File ▸ PACS peers… adds one.")
        return dialog

    def _retrieve_chosen(self, dialog: OpenFromPacsDialog) -> None:
        peer, uids = dialog.peer(), dialog.chosen_study_uids()
        if peer is not None and uids:
            self.retrieve(peer, uids)

    def retrieve(self, peer: pacs.Peer, study_uids: list[str], root: Path | None = None) -> workers.Job:
        """Retrieve studies into ``root`` (default: the PACS cache) and show them in the browser as they arrive."""
        w = self.window
        root = Path(root) if root is not None else pacs.cache_root()
        for name in ("scan", "many", "analyse", "pacs"):
            w._cancel(name)
        w.folder = root
        w.browser.clear(f"PACS: {peer.name}")
        w.canvas.set_image(None)
        w.findings_panel.clear()
        w.stack.setCurrentWidget(w.canvas)
        return self._start_with_progress(
            "pacs", f"Retrieving from {peer.address}…", "Open from PACS",
            pacs_jobs.retrieve_job, peer, list(study_uids), root,
            on_yield=self._on_retrieve_item, on_error=lambda e: self._retrieve_failed(str(e)),
        )  # fmt: skip

    def _start_with_progress(
        self, name: str, label: str, title: str, func: Any, *args: Any, **kwargs: Any
    ) -> workers.Job:
        """Start job ``name`` (kept running after a cancel until it stops by itself) under a progress dialog
        whose Cancel asks it to stop."""
        w = self.window
        self.progress = QtWidgets.QProgressDialog(label, "Cancel", 0, 0, w)
        self.progress.setWindowTitle(title)
        self.progress.setMinimumDuration(0)
        self.progress.setAutoClose(False)
        self.progress.setAutoReset(False)
        job = workers.start(name, func, *args, drop_after_cancel=False, **kwargs)
        self.progress.canceled.connect(lambda: job.cancel(hard=False))
        w.jobs[name] = job
        return job

    def _on_retrieve_item(self, value: tuple[str, Any]) -> None:
        kind, payload = value
        if kind == "items":
            self.window._on_scan_items(payload)
        elif kind == "progress" and self.progress is not None:
            study, studies, done, total = payload
            self.progress.setMaximum(total)
            self.progress.setValue(done)
            self.progress.setLabelText(f"Study {study + 1} of {studies}: {done} of {total} instances")
        elif kind == "summary":
            self._retrieve_done(payload)

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress.deleteLater()
            self.progress = None

    def _retrieve_done(self, s: pacs_jobs.RetrieveSummary) -> None:
        self._close_progress()
        n = len(self.window.browser.image_paths())
        if s.error and not s.studies:
            self._say(f"Retrieve failed: {s.error}", warn=True)
        elif s.cancelled:
            self._say(
                f"Retrieve cancelled: {s.fetched + s.already_present} instance(s) are in the cache and listed; "
                "Open from PACS again to fetch the rest."
            )
        else:
            extra = f", {s.non_images} non-image object(s)" if s.non_images else ""
            failed = f"; {len(s.failed)} could not be retrieved: {s.failed[0][1]}" if s.failed else ""
            self._say(
                f"Retrieved {s.studies} study(ies): {s.fetched} new instance(s), {s.already_present} already in "
                f"the cache{extra}; {n} image(s) listed{failed}",
                warn=bool(s.failed),
            )
        self.window.scanFinished.emit(n)
        self.retrieveFinished.emit(s)

    def _retrieve_failed(self, text: str) -> None:
        self._close_progress()
        self._say(f"Retrieve failed: {text}", warn=True)
        self.retrieveFinished.emit(pacs_jobs.RetrieveSummary(root=pacs.cache_root(), error=text))

    # -- send ---------------------------------------------------------------------------------------------------

    def _analysed(self, scope: str) -> list[tuple[Any, Any, Any]]:
        from pneumoview.findings_pipeline import findings_for

        w, s = self.window, self.window.session
        if scope == "image":
            if s.image is None or s.result is None or s.findings is None:
                return []
            return [(s.image, s.result, s.findings)]
        cache = s.cache_snapshot()
        out = []
        for path in w.browser.study_images():
            if path in cache:
                image, result = cache[path]
                out.append((image, result, findings_for(result, s.thresholds, image.spacing_mm)))
        return out

    def send_dialog(self) -> SendDialog:
        w = self.window
        has_image = w.session.result is not None
        dialog = SendDialog(w.settings.get_peers(), has_image, bool(w.browser.study_images()), w)
        dialog.accepted.connect(lambda: self._send_chosen(dialog))
        dialog.open()
        return dialog

    def _send_chosen(self, dialog: SendDialog) -> None:
        peer = dialog.peer()
        if peer is None:
            return
        if dialog.scope() == "folder":
            folder = Path(dialog.folder.text().strip())
            if not dialog.folder.text().strip() or not folder.is_dir():
                self._say(f"Choose an existing batch output folder to send ({folder} is not one).", warn=True)
                return
            self.send_folder(peer, folder)
        else:
            self.send_results(peer, dialog.scope())

    def send_results(self, peer: pacs.Peer, scope: str) -> workers.Job | None:
        """Write and send the DICOM results of the current image (``"image"``) or study (``"study"``)."""
        analysed = self._analysed(scope)
        if not analysed:
            what = "this image" if scope == "image" else "any image of this study"
            self._say(f"Nothing to send: analyse {what} first (Analysis menu).", warn=True)
            return None
        ids = self.window.settings.include_identifiers_in_exports
        return self._start_send(peer, pacs_jobs.send_results_job, analysed, ids)

    def send_folder(self, peer: pacs.Peer, folder: Path) -> workers.Job:
        """Send a batch output's ``dicom/`` folder (or, without one, every DICOM file under ``folder``)."""
        target = folder / "dicom" if (folder / "dicom").is_dir() else folder
        return self._start_send(peer, pacs_jobs.send_job, [target])

    def _start_send(self, peer: pacs.Peer, func, *args) -> workers.Job:
        self._notes: list[str] = []
        return self._start_with_progress(
            "pacs-send", f"Sending to {peer.address}…", "Send results to PACS", func, peer, *args,
            on_yield=self._on_send_item, on_error=self._send_failed,
        )  # fmt: skip

    def _on_send_item(self, value: tuple[str, Any]) -> None:
        kind, payload = value
        if kind == "progress" and self.progress is not None:
            done, total = payload
            self.progress.setMaximum(total)
            self.progress.setValue(done)
        elif kind == "notes":
            self._notes = list(payload)
        elif kind == "result":
            self._close_progress()
            r: pacs.SendResult = payload
            failed = f"; {len(r.failed)} failed: {r.failed[0][0].name}: {r.failed[0][1]}" if r.failed else ""
            notes = (
                f" ({len(self._notes)} image(s) had no DICOM results: {self._notes[0]})"
                if self._notes
                else ""
            )
            state = "Send cancelled" if r.cancelled else "Sent"
            self._say(
                f"{state}: {len(r.sent)} object(s) stored on the PACS{failed}{notes}", warn=bool(r.failed)
            )
            self.sendFinished.emit(r)

    def _send_failed(self, exc: BaseException) -> None:
        self._close_progress()
        self._say(f"Send failed: {exc}", warn=True)
        self.sendFinished.emit(str(exc))
