"""The study browser: Patient ▸ Study ▸ Series ▸ Image tree, filled as the folder scan yields, with a status per
image (icon, colour and text; the reason in a tooltip), a filter box, and "Analyse study" / "Analyse all".

It is a view: the grouping is :class:`pneumoview.study_index.StudyTree`'s (the browser adds each scan item to
the tree and shows the tree's patient, study and series nodes), and each image's status is the
:class:`~pneumoview.viewer_state.ViewerState`'s, shown when the state announces it.

Files the scan could not read are listed under "Unreadable files", documents (notes, labels) and DICOMDIR files under
"Other files", and non-image DICOM objects (reports, presentation states, RT plans …) under their series, so nothing
is left out silently. DICOM results (SR, SEG, GSPS) that refer to an image of the folder are listed under that image
(under their own series until the image has been scanned).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview.gui import viewmodel as vm
from pneumoview.gui.icons import icon, status_icon
from pneumoview.viewer_state import ViewerState

if TYPE_CHECKING:  # the scan runs in a worker, which imports the module (and pydicom) off the start-up path
    from pneumoview.study_index import ScanEntry, ScanError, StudyTree

PATH_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1
KIND_ROLE = QtCore.Qt.ItemDataRole.UserRole + 2
_STATUS_COLOURS = {
    vm.NOT_ANALYSED: "#9aa0a6",
    vm.RUNNING: "#5ea1ff",
    vm.NO_FINDING: "#3ccf78",
    vm.FINDING: "#ff9f1a",
    vm.ERROR: "#ff6369",
    vm.NON_IMAGE: "#9aa0a6",
}


class _Filter(QtCore.QSortFilterProxyModel):
    """Text that is a status ("finding", "no finding", "error" …) keeps exactly the rows with that status, so
    "finding" does not also match "no finding"; any other text is a case-insensitive match on the name. The
    parents of a match stay visible."""

    def __init__(self) -> None:
        super().__init__()
        self.setRecursiveFilteringEnabled(True)
        self.setFilterCaseSensitivity(QtCore.Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(0)
        self.status: str | None = None

    def set_text(self, text: str) -> None:
        key = " ".join(text.split()).lower()
        self.status = key if key in vm.STATUS_LABELS else None
        self.setFilterFixedString("" if self.status else text)
        self.invalidate()  # the status may change while the fixed string stays ""

    def filterAcceptsRow(self, row: int, parent: QtCore.QModelIndex) -> bool:  # noqa: N802 - Qt override
        if self.status is None:
            return super().filterAcceptsRow(row, parent)
        item = self.sourceModel().index(row, 1, parent)
        return item.data(KIND_ROLE) == self.status


class StudyBrowser(QtWidgets.QWidget):
    """Signals: ``imageSelected(Path)``, ``analyseRequested(list)`` (paths of the images to analyse)."""

    imageSelected = QtCore.Signal(object)
    analyseRequested = QtCore.Signal(list)

    def __init__(self, state: ViewerState | None = None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state if state is not None else ViewerState()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.filter_edit = QtWidgets.QLineEdit()
        self.filter_edit.setPlaceholderText("Filter (name or status, e.g. 'finding')")
        self.filter_edit.setClearButtonEnabled(True)
        layout.addWidget(self.filter_edit)

        self.model = QtGui.QStandardItemModel(0, 2)
        self.model.setHorizontalHeaderLabels(["Name", "Status"])
        self.proxy = _Filter()
        self.proxy.setSourceModel(self.model)
        self.tree = QtWidgets.QTreeView()
        self.tree.setModel(self.proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.header().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(False)
        self.tree.setAccessibleName("Studies")
        self.tree.setMinimumWidth(300)
        layout.addWidget(self.tree, 1)

        buttons = QtWidgets.QHBoxLayout()
        self.analyse_study_button = QtWidgets.QPushButton(icon("analyse"), "Analyse study")
        self.analyse_study_button.setToolTip("Analyse every image of the selected study")
        self.analyse_all_button = QtWidgets.QPushButton(icon("analyse-all"), "Analyse all")
        self.analyse_all_button.setToolTip("Analyse every image in the folder")
        buttons.addWidget(self.analyse_study_button)
        buttons.addWidget(self.analyse_all_button)
        layout.addLayout(buttons)
        self.summary = QtWidgets.QLabel("")
        self.summary.setStyleSheet("color: #aaa;")
        layout.addWidget(self.summary)

        self.filter_edit.textChanged.connect(self._on_filter)
        self.tree.selectionModel().currentChanged.connect(self._on_current_changed)
        self.analyse_study_button.clicked.connect(lambda: self.analyseRequested.emit(self.study_images()))
        self.analyse_all_button.clicked.connect(lambda: self.analyseRequested.emit(self.image_paths()))
        self.state.status_changed.connect(self._render_status)
        self.clear()

    # -- content ------------------------------------------------------------------------------------------------

    def clear(self, title: str = "") -> None:
        self.model.removeRows(0, self.model.rowCount())
        self.study_tree: StudyTree | None = None  # made on the first scan item (study_index imports pydicom)
        self._nodes: dict[tuple[str, ...], QtGui.QStandardItem] = {}
        self._images: dict[Path, QtGui.QStandardItem] = {}
        self._errors_node: QtGui.QStandardItem | None = None
        self._other_node: QtGui.QStandardItem | None = None
        self._image_by_uid: dict[str, QtGui.QStandardItem] = {}
        self._results: dict[str, list[Path]] = {}  # referenced SOP Instance UID → result files
        self._waiting: dict[
            str, list[QtGui.QStandardItem]
        ] = {}  # results whose image has not been scanned yet
        self.title = title
        self._update_summary()

    def add_items(self, items: Iterable[ScanEntry | ScanError]) -> None:
        """Add scan results (in scan order) to the study tree and show them."""
        from pneumoview.study_index import ScanError, StudyTree

        if self.study_tree is None:
            self.study_tree = StudyTree()
        for item in items:
            self.study_tree.add(item)
            if isinstance(item, ScanError) and item.is_document:
                self._add_document(item)
            elif isinstance(item, ScanError):
                self._add_error(item)
            elif item.patient_key:
                self._add_entry(item)
            else:  # a DICOMDIR file itself, which belongs to no patient
                self._add_other(item)
        self._update_summary()

    def _node(self, key: tuple[str, ...], label: str, parent: QtGui.QStandardItem, kind: str):
        node = self._nodes.get(key)
        if node is None:
            node = QtGui.QStandardItem(label)
            node.setData(kind, KIND_ROLE)
            parent.appendRow([node, QtGui.QStandardItem("")])
            self._nodes[key] = node
            if kind in ("patient", "study"):
                self.tree.expand(self.proxy.mapFromSource(node.index()))
        return node

    def _add_entry(self, e: ScanEntry) -> None:
        image = None
        if e.kind == "result":
            image = next((self._image_by_uid[u] for u in e.result_for if u in self._image_by_uid), None)
        # A result about an image already listed goes straight under it.
        series = image if image is not None else self._series_node(e)
        name = QtGui.QStandardItem(e.instance_label or e.path.name)
        name.setData(str(e.path), PATH_ROLE)
        name.setData(e.kind, KIND_ROLE)
        size = f"{e.cols}×{e.rows}" if e.rows and e.cols else ""
        name.setToolTip("\n".join(filter(None, [str(e.path), e.object_kind, size, *e.notes])))
        status = QtGui.QStandardItem("")
        series.appendRow([name, status])
        if e.kind == "image":
            self._images[e.path] = name
            self._render_status(e.path, *self.state.status(e.path))
            if e.sop_instance_uid:
                self._image_by_uid[e.sop_instance_uid] = name
                for waiting in self._waiting.pop(e.sop_instance_uid, []):
                    self._attach_result(waiting, name)
        else:
            self._paint_status(name, status, vm.NON_IMAGE, e.object_kind, e.object_kind)
        if e.kind == "result":
            for uid in e.result_for:
                self._results.setdefault(uid, []).append(e.path)
                if image is None:
                    self._waiting.setdefault(uid, []).append(name)

    def _series_node(self, e: ScanEntry) -> QtGui.QStandardItem:
        """The row of ``e``'s series, made (with its study and patient rows) from the study tree's nodes."""
        assert self.study_tree is not None
        patient_node = self.study_tree.patients[e.patient_key]
        study_node = patient_node.studies[e.study_key]
        series_node = study_node.series[e.series_key]
        root = self.model.invisibleRootItem()
        patient = self._node((e.patient_key,), patient_node.label, root, "patient")
        study = self._node((e.patient_key, e.study_key), study_node.label, patient, "study")
        return self._node((e.patient_key, e.study_key, e.series_key), series_node.label, study, "series")

    def _attach_result(self, name: QtGui.QStandardItem, image: QtGui.QStandardItem) -> None:
        """Move a result's row under the image it is about."""
        parent = name.parent()
        if parent is None or parent is image:
            return
        row = parent.takeRow(name.row())
        image.appendRow(row)
        for items in self._waiting.values():
            if name in items:
                items.remove(name)
        # Drop the series (and study, patient) nodes the move left empty.
        while (
            parent is not None
            and parent.rowCount() == 0
            and parent.data(KIND_ROLE) in ("series", "study", "patient")
        ):
            up = parent.parent() or self.model.invisibleRootItem()
            self._nodes = {k: v for k, v in self._nodes.items() if v is not parent}
            up.removeRow(parent.row())
            parent = up if up is not self.model.invisibleRootItem() else None

    def _add_error(self, err: ScanError) -> None:
        if self._errors_node is None:
            self._errors_node = QtGui.QStandardItem("Unreadable files")
            self._errors_node.setData("errors", KIND_ROLE)
            self.model.appendRow([self._errors_node, QtGui.QStandardItem("")])
        name = QtGui.QStandardItem(err.path.name)
        name.setData(str(err.path), PATH_ROLE)
        name.setData("error", KIND_ROLE)
        status = QtGui.QStandardItem("")
        self._errors_node.appendRow([name, status])
        self._paint_status(name, status, vm.ERROR, f"{err.stage}: {err.message}", vm.ERROR)
        self._errors_node.setText(f"Unreadable files ({self.n_errors})")

    def _other_files_node(self) -> QtGui.QStandardItem:
        if self._other_node is None:
            self._other_node = QtGui.QStandardItem("Other files")
            self.model.appendRow([self._other_node, QtGui.QStandardItem("")])
        return self._other_node

    def _add_document(self, doc: ScanError) -> None:
        """A document beside the images (notes, labels): another file, in grey, not an error."""
        name = QtGui.QStandardItem(doc.path.name)
        name.setData(str(doc.path), PATH_ROLE)
        name.setData("document", KIND_ROLE)
        status = QtGui.QStandardItem("")
        self._other_files_node().appendRow([name, status])
        self._paint_status(name, status, vm.NON_IMAGE, doc.message, "document")

    def _add_other(self, e: ScanEntry) -> None:
        self._other_files_node()
        name = QtGui.QStandardItem(e.path.name)
        name.setData(str(e.path), PATH_ROLE)
        name.setData(e.kind, KIND_ROLE)
        status = QtGui.QStandardItem("")
        self._other_node.appendRow([name, status])
        self._paint_status(name, status, vm.NON_IMAGE, "\n".join([e.object_kind, *e.notes]), e.object_kind)

    # -- status -------------------------------------------------------------------------------------------------

    def set_status(self, path: Path, status: str, reason: str = "") -> None:
        """Set an image's status (``viewmodel.STATUS_LABELS``) in the state, which the browser then shows."""
        self.state.set_status(path, status, reason)

    def _render_status(self, path: Path, status: str, reason: str = "") -> None:
        """Show an image's status with the reason as tooltip."""
        name = self._images.get(Path(path))
        if name is None:
            return
        status_item = name.parent().child(name.row(), 1)
        self._paint_status(name, status_item, status, f"{status}: {reason}" if reason else status, status)

    def status_of(self, path: Path) -> tuple[str, str]:
        """``(status, tooltip)`` shown for an image ("" when it is not in the tree)."""
        name = self._images.get(Path(path))
        if name is None:
            return "", ""
        item = name.parent().child(name.row(), 1)
        return item.text(), item.toolTip()

    @staticmethod
    def _paint_status(name, status_item, status: str, tooltip: str, text: str) -> None:
        name.setIcon(status_icon(status))
        status_item.setText(text)
        status_item.setToolTip(tooltip)
        status_item.setForeground(QtGui.QBrush(QtGui.QColor(_STATUS_COLOURS[status])))
        status_item.setData(status, KIND_ROLE)

    @property
    def n_errors(self) -> int:
        """How many files the scan could not read."""
        return len(self.study_tree.errors) if self.study_tree is not None else 0

    def errors(self) -> list[tuple[Path, str]]:
        """``(path, reason)`` of every file listed under "Unreadable files"."""
        errors = self.study_tree.errors if self.study_tree is not None else []
        return [(e.path, f"{e.stage}: {e.message}") for e in errors]

    def _update_summary(self) -> None:
        n = len(self._images)
        parts = [f"{n} image{'s' if n != 1 else ''}"]
        if self.n_errors:
            parts.append(f"{self.n_errors} unreadable")
        self.summary.setText((self.title + ": " if self.title else "") + ", ".join(parts))

    # -- navigation ---------------------------------------------------------------------------------------------

    def results_for(self, sop_instance_uid: str | None) -> list[Path]:
        """The result files (SR, SEG, GSPS) of the folder that refer to the image with this SOP Instance UID."""
        return list(self._results.get(sop_instance_uid or "", []))

    def image_paths(self) -> list[Path]:
        """Every image in the tree, in scan order."""
        return list(self._images)

    def visible_image_paths(self) -> list[Path]:
        """The images that pass the filter, in display order (for next/previous)."""
        return [p for p, item in self._images.items() if self.proxy.mapFromSource(item.index()).isValid()]

    def current_path(self) -> Path | None:
        index = self.proxy.mapToSource(self.tree.currentIndex())
        if not index.isValid():
            return None
        value = self.model.itemFromIndex(index.siblingAtColumn(0)).data(PATH_ROLE)
        return None if value is None else Path(value)

    def study_images(self) -> list[Path]:
        """The images of the study that holds the current item (all images when nothing is selected)."""
        index = self.proxy.mapToSource(self.tree.currentIndex())
        if not index.isValid():
            return self.image_paths()
        item = self.model.itemFromIndex(index.siblingAtColumn(0))
        while item is not None and item.data(KIND_ROLE) not in ("study", "patient", "errors"):
            item = item.parent()
        key = next((k for k, node in self._nodes.items() if node is item), None)
        if item is None or item.data(KIND_ROLE) != "study" or key is None or self.study_tree is None:
            return self.image_paths()
        study = self.study_tree.patients[key[0]].studies[key[1]]
        return [e.path for series in study.series.values() for e in series.entries if e.kind == "image"]

    def select_path(self, path: Path) -> bool:
        item = self._images.get(Path(path))
        if item is None:
            return False
        index = self.proxy.mapFromSource(item.index())
        if not index.isValid():
            return False
        self.tree.setCurrentIndex(index)
        self.tree.scrollTo(index)
        return True

    def select_first_image(self) -> bool:
        paths = self.visible_image_paths()
        return bool(paths) and self.select_path(paths[0])

    def select_next(self, step: int = 1) -> bool:
        """Move to the next (or previous, ``step=-1``) image that passes the filter."""
        paths = self.visible_image_paths()
        if not paths:
            return False
        current = self.current_path()
        i = paths.index(current) + step if current in paths else 0
        return 0 <= i < len(paths) and self.select_path(paths[i])

    def _on_current_changed(self, current: QtCore.QModelIndex, _previous) -> None:
        index = self.proxy.mapToSource(current)
        if not index.isValid():
            return
        item = self.model.itemFromIndex(index.siblingAtColumn(0))
        if item.data(KIND_ROLE) == "image":
            self.imageSelected.emit(Path(item.data(PATH_ROLE)))

    def _on_filter(self, text: str) -> None:
        self.proxy.set_text(text)
        self.tree.expandAll()
