"""PACS dialogs: Settings ▸ PACS peers (with Test connection), File ▸ Open from PACS… (study list) and File ▸ Send
results to PACS (what to send). Network calls run in background jobs, so the viewer stays usable when a PACS is
slow or down; each dialog emits a signal when its job ends (tests wait on them)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6 import QtCore, QtWidgets

from pneumoview.gui import pacs_jobs, workers
from pneumoview.pacs import DimsePeer, Peer, StudyQuery, StudyRecord, WebPeer


def _buttons(dialog: QtWidgets.QDialog, ok_text: str = "OK") -> QtWidgets.QDialogButtonBox:
    box = QtWidgets.QDialogButtonBox(
        QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel
    )
    box.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText(ok_text)
    box.accepted.connect(dialog.accept)
    box.rejected.connect(dialog.reject)
    return box


class PeerForm(QtWidgets.QWidget):
    """Edits one peer: DIMSE (host, port, AE titles, our storage port, C-GET/C-MOVE) or DICOMweb (URL)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        form = QtWidgets.QFormLayout(self)
        self.kind = QtWidgets.QComboBox()
        self.kind.addItems(["DICOM (DIMSE)", "DICOMweb"])
        self.name = QtWidgets.QLineEdit()
        self.host = QtWidgets.QLineEdit()
        self.host.setPlaceholderText("pacs.hospital.org or 10.0.0.5")
        self.port = QtWidgets.QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(104)
        self.aet = QtWidgets.QLineEdit()
        self.aet.setPlaceholderText("the PACS's AE title")
        self.our_aet = QtWidgets.QLineEdit("PNEUMOVIEW")
        self.our_port = QtWidgets.QSpinBox()
        self.our_port.setRange(0, 65535)
        self.our_port.setSpecialValueText("none (C-GET only)")
        self.retrieve = QtWidgets.QComboBox()
        self.retrieve.addItems(["C-GET", "C-MOVE to our storage port"])
        self.url = QtWidgets.QLineEdit()
        self.url.setPlaceholderText("http://pacs:8042/dicom-web")
        form.addRow("Kind", self.kind)
        form.addRow("Name", self.name)
        self._dimse_rows = [
            ("Host", self.host),
            ("Port", self.port),
            ("PACS AE title", self.aet),
            ("Our AE title", self.our_aet),
            ("Our storage port", self.our_port),
            ("Retrieve with", self.retrieve),
        ]
        for label, w in self._dimse_rows:
            form.addRow(label, w)
        form.addRow("DICOMweb URL", self.url)
        self._form = form
        self.kind.currentIndexChanged.connect(self._on_kind)
        self._on_kind()

    def _on_kind(self) -> None:
        dimse = self.kind.currentIndex() == 0
        for _label, w in self._dimse_rows:
            self._form.setRowVisible(w, dimse)
        self._form.setRowVisible(self.url, not dimse)

    def set_peer(self, peer: Peer | None) -> None:
        if isinstance(peer, WebPeer):
            self.kind.setCurrentIndex(1)
            self.name.setText(peer.name)
            self.url.setText(peer.url)
        elif isinstance(peer, DimsePeer):
            self.kind.setCurrentIndex(0)
            self.name.setText(peer.name)
            self.host.setText(peer.host)
            self.port.setValue(peer.port)
            self.aet.setText(peer.aet)
            self.our_aet.setText(peer.our_aet)
            self.our_port.setValue(peer.our_port)
            self.retrieve.setCurrentIndex(1 if peer.retrieve == "move" else 0)

    def peer(self) -> Peer:
        """The peer the fields describe; raises ValueError saying what is wrong."""
        name = self.name.text().strip() or "PACS"
        if self.kind.currentIndex() == 1:
            return WebPeer(name, self.url.text().strip())
        return DimsePeer(
            name,
            self.host.text().strip(),
            self.port.value(),
            self.aet.text(),
            our_aet=self.our_aet.text() or "PNEUMOVIEW",
            our_port=self.our_port.value(),
            retrieve="move" if self.retrieve.currentIndex() == 1 else "get",
        )


class PeersDialog(QtWidgets.QDialog):
    """Settings ▸ PACS peers: a list of peers, a form for the selected one and "Test connection".

    ``testFinished(bool, str)``: the connection test ended (success, the sentence shown)."""

    testFinished = QtCore.Signal(bool, str)

    def __init__(self, peers: Sequence[Peer], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS peers")
        self._peers: list[Peer] = list(peers)
        self.list = QtWidgets.QListWidget()
        self.form = PeerForm()
        add = QtWidgets.QPushButton("Add")
        remove = QtWidgets.QPushButton("Remove")
        self.save_button = QtWidgets.QPushButton("Save peer")
        self.test_button = QtWidgets.QPushButton("Test connection")
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        left = QtWidgets.QVBoxLayout()
        left.addWidget(self.list, 1)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(add)
        row.addWidget(remove)
        left.addLayout(row)
        right = QtWidgets.QVBoxLayout()
        right.addWidget(self.form)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.test_button)
        right.addLayout(row)
        right.addWidget(self.status)
        right.addStretch(1)
        body = QtWidgets.QHBoxLayout()
        body.addLayout(left, 1)
        body.addLayout(right, 2)
        outer = QtWidgets.QVBoxLayout(self)
        outer.addLayout(body)
        outer.addWidget(_buttons(self))
        add.clicked.connect(self._add)
        remove.clicked.connect(self._remove)
        self.save_button.clicked.connect(self.save_current)
        self.test_button.clicked.connect(self.test_connection)
        self.list.currentRowChanged.connect(lambda i: self.form.set_peer(self._peers[i] if i >= 0 else None))
        self._job: workers.Job | None = None
        self._refill(0)

    def _refill(self, select: int) -> None:
        self.list.clear()
        for p in self._peers:
            self.list.addItem(f"{p.name} — {p.address}")
        if self._peers:
            self.list.setCurrentRow(max(0, min(select, len(self._peers) - 1)))

    def _add(self) -> None:
        self.list.setCurrentRow(-1)
        self.form.set_peer(DimsePeer("New PACS", "localhost", 104, "PACS"))
        self.form.name.setFocus()
        self.status.setText("Fill in the peer, then Save peer.")

    def _remove(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            del self._peers[row]
            self._refill(row)

    def save_current(self) -> bool:
        """Validate the form and store it (replacing the selected peer, or as a new one)."""
        try:
            peer = self.form.peer()
        except ValueError as exc:
            self.status.setText(f"Not saved: {exc}.")
            return False
        row = self.list.currentRow()
        names = [p.name for i, p in enumerate(self._peers) if i != row]
        if peer.name in names:
            self.status.setText(f"Not saved: another peer is already called {peer.name!r}.")
            return False
        if row >= 0:
            self._peers[row] = peer
        else:
            self._peers.append(peer)
            row = len(self._peers) - 1
        self._refill(row)
        self.status.setText(f"Saved {peer.name}.")
        return True

    def test_connection(self) -> None:
        """C-ECHO (or a QIDO query) to the peer in the form, in the background."""
        try:
            peer = self.form.peer()
        except ValueError as exc:
            self._tested(False, f"Cannot test: {exc}.")
            return
        self.test_button.setEnabled(False)
        self.status.setText(f"Testing {peer.address}…")
        self._job = workers.start(
            "pacs-echo",
            pacs_jobs.echo_job,
            peer,
            on_return=lambda text: self._tested(True, f"Connected: {text}"),
            on_error=lambda exc: self._tested(False, f"Failed: {exc}"),
        )

    def _tested(self, ok: bool, text: str) -> None:
        self.test_button.setEnabled(True)
        self.status.setText(text)
        self.status.setStyleSheet("color: #3c3;" if ok else "color: #e55;")
        self.testFinished.emit(ok, text)

    def peers(self) -> list[Peer]:
        return list(self._peers)

    def done(self, result: int) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel()
        super().done(result)


class OpenFromPacsDialog(QtWidgets.QDialog):
    """File ▸ Open from PACS…: query a peer's study list, choose studies, Retrieve.

    ``searchFinished(int)``: a search ended (number of studies; -1 on error, with the reason in ``status``)."""

    searchFinished = QtCore.Signal(int)
    COLUMNS = ("Patient", "Patient ID", "Date", "Modalities", "Images", "Description", "Accession")

    def __init__(self, peers: Sequence[Peer], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open from PACS")
        self.resize(900, 520)
        self._peers = list(peers)
        self._job: workers.Job | None = None
        form = self._build_query_form()
        self._build_results()
        buttons = _buttons(self, "Retrieve")
        self.retrieve_button = buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
        self.retrieve_button.setEnabled(False)
        outer = QtWidgets.QVBoxLayout(self)
        outer.addLayout(form)
        outer.addWidget(self.table, 1)
        outer.addWidget(self.status)
        outer.addWidget(buttons)
        self.search_button.clicked.connect(self.search)
        self.table.itemSelectionChanged.connect(
            lambda: self.retrieve_button.setEnabled(bool(self.chosen_study_uids()))
        )
        self.table.doubleClicked.connect(lambda _i: self.accept())
        if not self._peers:
            self.search_button.setEnabled(False)
            self.status.setText("No PACS is set up yet: add one in Settings ▸ PACS peers… first.")

    def _build_query_form(self) -> QtWidgets.QGridLayout:
        """The peer and the query fields (name, ID, date range, modality, accession) with the Search button."""
        self.peer_box = QtWidgets.QComboBox()
        self.peer_box.addItems([f"{p.name} — {p.address}" for p in self._peers])
        self.patient_name = QtWidgets.QLineEdit()
        self.patient_name.setPlaceholderText("name; * and ? are wildcards")
        self.patient_id = QtWidgets.QLineEdit()
        self.use_dates = QtWidgets.QCheckBox("between")
        today = QtCore.QDate.currentDate()
        self.date_from = QtWidgets.QDateEdit(today.addYears(-1))
        self.date_to = QtWidgets.QDateEdit(today)
        for d in (self.date_from, self.date_to):
            d.setCalendarPopup(True)
            d.setDisplayFormat("yyyy-MM-dd")
        self.modality = QtWidgets.QLineEdit()
        self.modality.setPlaceholderText("CR, DX …")
        self.accession = QtWidgets.QLineEdit()
        self.search_button = QtWidgets.QPushButton("Search")
        self.search_button.setDefault(True)
        form = QtWidgets.QGridLayout()
        form.addWidget(QtWidgets.QLabel("PACS"), 0, 0)
        form.addWidget(self.peer_box, 0, 1, 1, 3)
        form.addWidget(QtWidgets.QLabel("Patient name"), 1, 0)
        form.addWidget(self.patient_name, 1, 1)
        form.addWidget(QtWidgets.QLabel("Patient ID"), 1, 2)
        form.addWidget(self.patient_id, 1, 3)
        dates = QtWidgets.QHBoxLayout()
        for w in (self.use_dates, self.date_from, QtWidgets.QLabel("and"), self.date_to):
            dates.addWidget(w)
        form.addWidget(QtWidgets.QLabel("Study date"), 2, 0)
        form.addLayout(dates, 2, 1)
        form.addWidget(QtWidgets.QLabel("Modality"), 2, 2)
        form.addWidget(self.modality, 2, 3)
        form.addWidget(QtWidgets.QLabel("Accession"), 3, 0)
        form.addWidget(self.accession, 3, 1)
        form.addWidget(self.search_button, 3, 3)
        return form

    def _build_results(self) -> None:
        """The table of studies found and the status line under it."""
        self.table = QtWidgets.QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSortingEnabled(True)
        self.status = QtWidgets.QLabel("Choose a PACS and Search." if self._peers else "")
        self.status.setWordWrap(True)

    def peer(self) -> Peer | None:
        i = self.peer_box.currentIndex()
        return self._peers[i] if 0 <= i < len(self._peers) else None

    def query(self) -> StudyQuery:
        dated = self.use_dates.isChecked()
        return StudyQuery(
            patient_name=self.patient_name.text(),
            patient_id=self.patient_id.text(),
            date_from=self.date_from.date().toPython() if dated else None,
            date_to=self.date_to.date().toPython() if dated else None,
            modality=self.modality.text(),
            accession=self.accession.text(),
        )

    def search(self) -> None:
        peer = self.peer()
        if peer is None:
            return
        self.search_button.setEnabled(False)
        self.status.setText(f"Searching {peer.address}…")
        self._job = workers.start(
            "pacs-find",
            pacs_jobs.find_job,
            peer,
            self.query(),
            on_return=self._show,
            on_error=self._failed,
        )

    def _show(self, studies: list[StudyRecord]) -> None:
        self.search_button.setEnabled(True)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(studies))
        for row, s in enumerate(studies):
            date = (
                f"{s.study_date[:4]}-{s.study_date[4:6]}-{s.study_date[6:8]}"
                if len(s.study_date) == 8
                else ""
            )
            values = (
                s.patient_name.replace("^", " "),
                s.patient_id,
                date,
                "/".join(s.modalities),
                "" if s.n_instances is None else str(s.n_instances),
                s.description,
                s.accession,
            )
            for col, text in enumerate(values):
                item = QtWidgets.QTableWidgetItem(text)
                item.setData(QtCore.Qt.ItemDataRole.UserRole, s.study_uid)
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        self.status.setText(f"{len(studies)} study(ies). Select one or more and Retrieve.")
        self.searchFinished.emit(len(studies))

    def _failed(self, exc: BaseException) -> None:
        self.search_button.setEnabled(True)
        self.status.setText(f"Search failed: {exc}")
        self.searchFinished.emit(-1)

    def chosen_study_uids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.table.item(r, 0).data(QtCore.Qt.ItemDataRole.UserRole) for r in rows]

    def done(self, result: int) -> None:
        if self._job is not None and not self._job.done:
            self._job.cancel()
        super().done(result)


class SendDialog(QtWidgets.QDialog):
    """File ▸ Send results to PACS: a peer and what to send (current image, current study, a batch output)."""

    SCOPES = ("image", "study", "folder")

    def __init__(
        self, peers: Sequence[Peer], has_image: bool, has_study: bool, parent: QtWidgets.QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle("Send results to PACS")
        self._peers = list(peers)
        self.peer_box = QtWidgets.QComboBox()
        self.peer_box.addItems([f"{p.name} — {p.address}" for p in self._peers])
        self.image = QtWidgets.QRadioButton("The current image's results (SR, and SEG when there is a mask)")
        self.study = QtWidgets.QRadioButton("The results of every analysed image of the current study")
        self.folder_choice = QtWidgets.QRadioButton(
            "A batch output folder (its dicom/ folder: predict --dicom)"
        )
        self.image.setEnabled(has_image)
        self.study.setEnabled(has_study)
        (self.image if has_image else self.folder_choice).setChecked(True)
        self.folder = QtWidgets.QLineEdit()
        browse = QtWidgets.QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form = QtWidgets.QFormLayout(self)
        form.addRow("PACS", self.peer_box)
        form.addRow(self.image)
        form.addRow(self.study)
        form.addRow(self.folder_choice)
        form.addRow("Folder", row)
        note = QtWidgets.QLabel(
            "Results keep their SOP Instance UIDs: sending the same results twice stores nothing twice."
        )
        note.setWordWrap(True)
        form.addRow(note)
        buttons = _buttons(self, "Send")
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self._peers))
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Batch output folder", self.folder.text())
        if folder:
            self.folder.setText(folder)
            self.folder_choice.setChecked(True)

    def peer(self) -> Peer | None:
        i = self.peer_box.currentIndex()
        return self._peers[i] if 0 <= i < len(self._peers) else None

    def scope(self) -> str:
        return "image" if self.image.isChecked() else "study" if self.study.isChecked() else "folder"
