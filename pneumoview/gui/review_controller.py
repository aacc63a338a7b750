"""The reader review in the viewer: accept or reject each reported box, move or resize it, draw a missed one.

The state is a Qt-free :class:`~pneumoview.review.ImageReview`; every decision is saved at once to the per-user
review store (:mod:`pneumoview.review_store`: ``review.json`` keyed by the non-identifying image id, so PNG and
JPEG inputs are reviewable too and the user's folders are never written to) and shown again when the image is
opened later. For a DICOM image the review is also written as a review SR (the reader as a PERSON observer, via
:func:`pneumoview.dicom_results.write_review_sr`) beside the algorithm's SR in the store's ``dicom`` folder:
with Review ▸ Save review SR (``Ctrl+S``), and by itself when the reader moves to another image or closes the
viewer after a change.

Keys: ``A`` accept, ``R`` reject, ``U`` undo the decision on the selected box, ``D`` draw a missed box (left
drag), ``Delete`` remove a drawn box, ``Ctrl+S`` save the review SR.
"""

from __future__ import annotations

import logging
from dataclasses import replace as dc_replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from PySide6 import QtCore, QtGui, QtWidgets

from pneumoview.gui import workers
from pneumoview.gui.review_layer import DECISION_COLOURS, ReviewLayer
from pneumoview.imaging import sniff_kind
from pneumoview.review import FindingRef, ImageReview, ReviewedBox
from pneumoview.review_store import (
    ReviewStore,
    box_matches,
    current_decision,
    finding_refs,
    replace_added,
    review_marks,
    without_decision,
)
from pneumoview.settings import save_settings

if TYPE_CHECKING:
    from pneumoview.gui.main_window import MainWindow
    from pneumoview.types import AnalysisResult, XrayImage

log = logging.getLogger(__name__)

_ACTIONS = (
    ("accept", "&Accept box", "A", "Accept the selected reported box"),
    ("reject", "&Reject box", "R", "Reject the selected reported box"),
    ("undo", "&Undo decision", "U", "Forget the decision on the selected box"),
    ("draw", "&Draw missed box", "D", "Left-drag on the image draws a box the models missed"),
    ("remove", "Re&move drawn box", "Delete", "Remove the selected box you drew"),
    ("save_sr", "&Save review SR", "Ctrl+S", "Write the review as a DICOM SR beside the algorithm's SR"),
)
_MIN_BOX_PX = 2.0


class ReviewController(QtCore.QObject):
    """Owns the review of the current image. Signals: ``reviewChanged(object)`` (the new
    :class:`ImageReview`, or None), ``reviewSrWritten(object)`` (the written :class:`~pathlib.Path`)."""

    reviewChanged = QtCore.Signal(object)
    reviewSrWritten = QtCore.Signal(object)

    def __init__(self, window: MainWindow, store: ReviewStore | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.store = store or ReviewStore()
        self.review: ImageReview | None = None
        self.image: XrayImage | None = None
        self.refs: list[FindingRef] = []
        self.result: AnalysisResult | None = None  # of the image under review, when analysed
        self.findings = None  # its post-processed Findings (the boxes on screen)
        self.selected: tuple[int | None, int | None] | None = None
        self.sr_pending = False
        self.last_error = ""
        self.layer = ReviewLayer(window.canvas.view, window.canvas.overlays)
        self.layer.boxEdited.connect(self._on_box_edited)
        self.layer.boxClicked.connect(self._on_box_clicked)
        window.canvas.view.sigDraw.connect(self._on_draw)
        window.findings_panel.boxSelected.connect(self._on_row_selected)
        self._preview = QtWidgets.QGraphicsRectItem()
        pen = QtGui.QPen(QtGui.QColor(*DECISION_COLOURS["added"]), 2, QtCore.Qt.PenStyle.DotLine)
        pen.setCosmetic(True)
        self._preview.setPen(pen)
        self._preview.setZValue(26)
        self._preview.setVisible(False)
        window.canvas.view.addItem(self._preview)
        self.actions = self._build_actions()
        self._build_bar()
        self._update_enabled()

    # -- construction -------------------------------------------------------------------------------------------

    def _build_actions(self) -> dict[str, QtGui.QAction]:
        w = self.window
        handlers = {
            "accept": lambda: self.decide("accepted"),
            "reject": lambda: self.decide("rejected"),
            "undo": self.undo,
            "draw": self.set_drawing,
            "remove": self.remove_added,
            "save_sr": lambda: self.save_sr(),
        }
        actions = {}
        menu = QtWidgets.QMenu("&Review", w)
        for key, text, keys, tip in _ACTIONS:
            a = QtGui.QAction(text, w)
            a.setShortcut(QtGui.QKeySequence(keys))
            a.setToolTip(f"{tip} ({keys})")
            a.setStatusTip(tip)
            a.setCheckable(key == "draw")
            (a.toggled if key == "draw" else a.triggered).connect(handlers[key])
            w.addAction(a)
            menu.addAction(a)
            actions[key] = a
            w.actions_by_key[f"review_{key}"] = a  # so Help ▸ Keyboard shortcuts lists them
        help_menu = next((m for m in w.menuBar().actions() if m.text() == "&Help"), None)
        if help_menu is not None:
            w.menuBar().insertMenu(help_menu, menu)
        else:
            w.menuBar().addMenu(menu)
        for key in ("mode_pan", "mode_window", "mode_measure"):
            if key in w.actions_by_key:
                w.actions_by_key[key].triggered.connect(lambda _=False: actions["draw"].setChecked(False))
        return actions

    def _build_bar(self) -> None:
        bar = QtWidgets.QWidget()
        # Rows of two buttons: one row of five would set the dock's minimum width and shrink the image.
        grid = QtWidgets.QGridLayout(bar)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(QtWidgets.QLabel("Review:"), 0, 0)
        for i, key in enumerate(("accept", "reject", "undo", "draw", "remove")):
            button = QtWidgets.QToolButton()
            button.setDefaultAction(self.actions[key])
            button.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
            grid.addWidget(button, i // 2, 1 + i % 2)
        self.status_label = QtWidgets.QLabel("")
        self.status_label.setStyleSheet("color: #aaa;")
        self.status_label.setWordWrap(True)
        panel = self.window.findings_panel
        panel.table.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.ActionsContextMenu)
        panel.table.addActions([self.actions[k] for k in ("accept", "reject", "undo")])
        layout = cast(QtWidgets.QBoxLayout, panel.layout())
        layout.insertWidget(layout.indexOf(panel.table) + 1, bar)
        layout.insertWidget(layout.indexOf(bar) + 1, self.status_label)
        self.bar = bar

    # -- the current image --------------------------------------------------------------------------------------

    def on_image(self, image: XrayImage | None) -> None:
        """A new image is on screen: write the previous image's pending review SR, load this one's review."""
        if image is not None and self.image is not None and image.image_id == self.image.image_id:
            return
        self.flush()
        self.image, self.review, self.refs, self.selected = image, None, [], None
        self.result = self.findings = None
        if image is not None:
            try:
                self.review = self.store.load(image.image_id)
            except ValueError as exc:
                self._problem(str(exc), dialog=True)
        self._redraw()
        self.reviewChanged.emit(self.review)

    def on_findings(self, findings) -> None:
        """The current image's findings changed (a stage landed or a threshold moved): redraw the review."""
        self.refs = finding_refs(findings) if findings is not None else []
        # Kept here: when the SR is written on leaving the image, the session already holds the next one.
        self.result, self.findings = self.window.session.result, findings
        self._redraw()

    def flush(self, wait: bool = False) -> None:
        """Write the pending review SR of the current image, if any: in the background on leaving it (so the next
        image is not held up), at once with ``wait`` (closing the viewer)."""
        if not (self.sr_pending and self.image is not None):
            return
        if wait or not _is_dicom(self.image.source) or not (self.review and self.review.boxes):
            self.save_sr(quiet=True)
            return

        image, name = self.image, self.image.source.name
        args = (self.review, image, self.result, self.findings, self.store.dicom_dir(image.image_id))
        self.sr_pending = False
        workers.start(
            f"review SR of {name}",
            _write_review_files,
            *args,
            include_identifiers=self.window.settings.include_identifiers_in_exports,
            on_return=self._sr_written,
            on_error=lambda exc: self._problem(f"The review SR of {name} was not written: {exc}."),
        )

    # -- decisions ----------------------------------------------------------------------------------------------

    def select(self, finding_index: int | None, added_position: int | None = None) -> None:
        """Make a reported box (``finding_index``) or a drawn one (``added_position``) the target of the actions."""
        self.selected = (finding_index, added_position)
        self.layer.select(finding_index, added_position)
        self._update_enabled()

    def decide(self, decision: str) -> bool:
        """Accept or reject the selected reported box; returns False (with the reason shown) when it cannot."""
        ref = self._selected_ref()
        if ref is None:
            return False
        reader = self.reader()
        if reader is None:
            return False
        maker = ReviewedBox.accept if decision == "accepted" else ReviewedBox.reject
        return self._commit(self._base(reader).with_decision(maker(ref, reader)))

    def edit(self, finding_index: int, box_xyxy) -> bool:
        """Move or resize reported box ``finding_index`` to ``box_xyxy`` (source pixels)."""
        ref = next((r for r in self.refs if r.index == finding_index), None)
        reader = self.reader() if ref is not None else None
        if ref is None or reader is None:
            return False
        try:
            box = ReviewedBox.edit(ref, self._clip(box_xyxy), reader)
        except ValueError as exc:
            self._problem(f"The box cannot be used: {exc}.")
            return False
        return self._commit(self._base(reader).with_decision(box))

    def add(self, box_xyxy) -> bool:
        """Add a box the models missed (``(x1, y1, x2, y2)`` source pixels, clipped to the image)."""
        reader = self.reader()
        if reader is None or self.image is None:
            return False
        box = self._clip(box_xyxy)
        if box[2] - box[0] < _MIN_BOX_PX or box[3] - box[1] < _MIN_BOX_PX:
            self._problem("The box is too small: drag across the region the models missed.")
            return False
        review = self._base(reader).with_decision(ReviewedBox.add(box, reader))
        ok = self._commit(review)
        if ok and self.review is not None:
            self.select(None, len(self.review.added) - 1)
        return ok

    def move_added(self, position: int, box_xyxy) -> bool:
        reader = self.reader()
        if reader is None or self.review is None:
            return False
        try:
            new = ReviewedBox.add(self._clip(box_xyxy), reader)
        except ValueError as exc:
            self._problem(f"The box cannot be used: {exc}.")
            return False
        return self._commit(replace_added(self._base(reader), position, new))

    def undo(self) -> bool:
        """Forget the decision on the selected reported box."""
        if self.review is None or self.selected is None or self.selected[0] is None:
            return False
        return self._commit(without_decision(self.review, self.selected[0]))

    def remove_added(self) -> bool:
        """Remove the selected drawn box."""
        if self.review is None or self.selected is None or self.selected[1] is None:
            return False
        ok = self._commit(replace_added(self.review, self.selected[1], None))
        if ok:
            self.select(None, None)
        return ok

    def set_drawing(self, on: bool) -> None:
        """Draw mode: a left drag on the image draws a missed box."""
        canvas = self.window.canvas
        if on:
            canvas.set_mode("draw")
        elif canvas.view.mode == "draw":  # leave another mode the reader just picked alone
            canvas.set_mode("pan")
            self.window.actions_by_key["mode_pan"].setChecked(True)
        self._redraw()
        if self.actions["draw"].isChecked() != on:
            self.actions["draw"].setChecked(on)

    def reader(self) -> str | None:
        """The reader's name from the settings, asked for once (None when the reader declines)."""
        settings = self.window.settings
        if settings.reader_name.strip():
            return settings.reader_name.strip()
        name, ok = QtWidgets.QInputDialog.getText(
            self.window, "Reader review", "Your name, recorded with each review decision:"
        )
        if not ok or not name.strip():
            self._problem("A review needs the reader's name (asked once, kept in Settings).")
            return None
        settings.reader_name = name.strip()
        save_settings(settings)
        return settings.reader_name

    # -- saving -------------------------------------------------------------------------------------------------

    def save_sr(self, quiet: bool = False) -> Path | None:
        """Write the review SR of the current DICOM image into the review store's ``dicom`` folder, beside the
        algorithm SR (written there too, with the same UIDs as ``predict --dicom`` for the same models and
        thresholds); returns the review SR's path, None when nothing was written (the reason is shown)."""
        image = self.image
        if image is None or self.review is None or not self.review.boxes:
            if not quiet:
                self._problem("Nothing to save: no review decision on this image yet.")
            return None
        if not _is_dicom(image.source):
            self.sr_pending = False
            if not quiet:
                self._problem(
                    f"{image.source.name} is not DICOM, so there is no study to store a review SR in; the review "
                    f"is kept in {self.store.json_path(image.image_id)}."
                )
            return None
        # lazy: highdicom is heavy; DICOM results are written on request only
        from pneumoview.dicom_results import DicomResultsError

        ids = self.window.settings.include_identifiers_in_exports
        out = self.store.dicom_dir(image.image_id)
        try:
            path = _write_review_files(
                self.review, image, self.result, self.findings, out, include_identifiers=ids
            )
        except (DicomResultsError, ValueError, OSError) as exc:
            self._problem(f"The review SR of {image.source.name} was not written: {exc}.", dialog=not quiet)
            return None
        self.sr_pending = False
        self._sr_written(path)
        return path

    def _sr_written(self, path: Path) -> None:
        self._say(f"Review SR written: {path}")
        self.reviewSrWritten.emit(path)

    def write_review_sr_into(self, out: Path, algorithm_sr: Path | None) -> Path:
        """Write the current image's review as a review SR into ``out``; with ``algorithm_sr`` (the algorithm SR
        of the boxes on screen) each decision carries the Tracking UID of its region there.

        Raises:
            DicomResultsError, ValueError, OSError: the SR cannot be written (the message names the file).
        """
        if self.image is None or self.review is None:
            raise ValueError("no review to write")
        ids = self.window.settings.include_identifiers_in_exports
        return _review_sr(self.review, self.image, self.findings, out, algorithm_sr, ids)

    # -- internals ----------------------------------------------------------------------------------------------

    def _base(self, reader: str) -> ImageReview:
        if self.review is not None:
            return self.review
        image = self.image
        assert image is not None  # a review is only made for the shown image
        return ImageReview(
            image_id=image.image_id, reader=reader,
            source_sop_instance_uid=image.identifiers.get("SOPInstanceUID") or None,
        )  # fmt: skip

    def _commit(self, review: ImageReview) -> bool:
        reader = self.reader() or review.reader
        review = dc_replace(review, reader=reader, time=datetime.now(UTC))
        try:
            self.store.save(review)
        except OSError as exc:
            self._problem(
                f"The review could not be saved to {self.store.json_path(review.image_id)}: {exc}", True
            )
            return False
        self.review = review
        self.sr_pending = _is_dicom(self.image.source) if self.image is not None else False
        self._redraw()
        self._say(f"Review saved ({len(review.boxes)} decisions by {reader}).")
        self.reviewChanged.emit(review)
        return True

    def _selected_ref(self) -> FindingRef | None:
        if self.selected is None or self.selected[0] is None:
            self._problem("Select a reported (final) box first: click it on the image or in the table.")
            return None
        ref = next((r for r in self.refs if r.index == self.selected[0]), None)
        if ref is None:
            self._problem("That box is no longer reported with the current thresholds.")
        return ref

    def _clip(self, box) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if self.image is not None:
            rows, cols = self.image.shape
            x1, x2 = min(max(x1, 0.0), cols), min(max(x2, 0.0), cols)
            y1, y2 = min(max(y1, 0.0), rows), min(max(y2, 0.0), rows)
        return (x1, y1, x2, y2)

    def _redraw(self) -> None:
        marks = review_marks(self.review, self.refs) if self.image is not None else []
        self.layer.set_marks(marks, editable=self.window.canvas.view.mode != "draw")
        if self.selected is not None:
            self.layer.select(*self.selected)
        texts = {}
        for ref in self.refs:
            b = current_decision(self.review, ref)
            if b is not None:
                texts[ref.index] = b.decision
        self.window.findings_panel.set_review_texts(texts)
        n_added = len(self.review.added) if self.review is not None else 0
        decided = len(texts)
        self.status_label.setText(
            f"{decided} of {len(self.refs)} reported boxes decided, {n_added} drawn"
            + (f" · reader {self.review.reader}" if self.review is not None else "")
            if self.image is not None
            else ""
        )
        self._update_enabled()

    def _update_enabled(self) -> None:
        has_image = self.image is not None
        finding = self.selected is not None and self.selected[0] is not None
        added = self.selected is not None and self.selected[1] is not None
        for key in ("accept", "reject", "undo"):
            self.actions[key].setEnabled(has_image and finding)
        self.actions["remove"].setEnabled(has_image and added)
        self.actions["draw"].setEnabled(has_image)
        self.actions["save_sr"].setEnabled(has_image and self.review is not None)

    def _on_row_selected(self, set_name: str, index: int) -> None:
        if set_name == "final":
            self.select(index, None)

    def _on_box_clicked(self, finding_index, added_position) -> None:
        self.select(finding_index, added_position)
        if finding_index is not None:
            panel = self.window.findings_panel
            for r, row in enumerate(panel.rows):
                if row.set == "final" and row.index == finding_index:
                    panel.table.blockSignals(True)
                    panel.select_row(r)
                    panel.table.blockSignals(False)

    def _on_box_edited(self, finding_index, added_position, box) -> None:
        if finding_index is not None:
            self.select(finding_index, None)
            if not self.edit(finding_index, box):
                self._redraw()
        elif added_position is not None:
            self.select(None, added_position)
            if not self.move_added(added_position, box):
                self._redraw()

    def _on_draw(self, p0, p1, finished: bool) -> None:
        if self.image is None:
            return
        box = self._clip((p0[0], p0[1], p1[0], p1[1]))
        self._preview.setRect(QtCore.QRectF(box[0], box[1], box[2] - box[0], box[3] - box[1]))
        self._preview.setVisible(not finished)
        if finished:
            self.add(box)

    def _say(self, text: str) -> None:
        self.window.statusBar().showMessage(text, 8000)

    def _problem(self, text: str, dialog: bool = False) -> None:
        self.last_error = text
        log.warning(text)
        self._say(text)
        if dialog:
            box = QtWidgets.QMessageBox(
                QtWidgets.QMessageBox.Icon.Warning, "Reader review", text, parent=self.window
            )
            box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
            box.open()  # window-modal, never blocks the event loop (tests, background jobs)


def _is_dicom(path: Path) -> bool:
    try:
        return sniff_kind(path) == "dicom"
    except OSError:
        return False


def _box_number(tracking_id: str, default: int) -> int:
    """``box_index`` from PneumoView's Tracking Identifier ``"box N"`` (stored order for anyone else's)."""
    head, _, number = tracking_id.partition(" ")
    return int(number) if head == "box" and number.isdigit() else default


def _with_tracking(review: ImageReview, refs: list[FindingRef]) -> ImageReview:
    """``review`` with each decision's finding given the Tracking UID of the same box in the algorithm SR (only
    when the decided box is still the reported box with that index)."""
    by_index = {r.index: r for r in refs}
    boxes = []
    for b in review.boxes:
        ref = by_index.get(b.finding.index) if b.finding is not None else None
        if ref is not None and b.finding is not None and box_matches(b.finding.box_xyxy, ref.box_xyxy):
            b = dc_replace(b, finding=ref)
        boxes.append(b)
    return dc_replace(review, boxes=tuple(boxes))


def _review_sr(
    review: ImageReview, image: XrayImage, findings, out: Path, algorithm_sr: Path | None, ids: bool
) -> Path:
    """Write ``review`` as a review SR into ``out``, tied to the regions of ``algorithm_sr`` when given."""
    # lazy: highdicom is heavy; DICOM results are written on request only
    from pneumoview.dicom_results import read_result, write_review_sr

    # lazy: highdicom is heavy; DICOM results are written on request only
    from pneumoview.dicom_results.reader import StoredSR

    if algorithm_sr is not None and findings is not None:
        sr = read_result(algorithm_sr)
        assert isinstance(sr, StoredSR), algorithm_sr  # the caller passes the algorithm SR
        tracking = {_box_number(r.tracking_id, i): r.tracking_uid for i, r in enumerate(sr.regions)}
        review = _with_tracking(review, finding_refs(findings, tracking, sr.sop_instance_uid))
        review = dc_replace(review, algorithm_sr_uid=sr.sop_instance_uid)
    return write_review_sr(review, image, out, include_identifiers=ids)


def _write_review_files(
    review: ImageReview,
    image: XrayImage,
    result,
    findings,
    out: Path,
    *,
    include_identifiers: bool,
    **_: object,
) -> Path:
    """The algorithm SR (and SEG) of the boxes on screen, then the review SR beside it; returns the review SR's
    path. Touches no widget, so it runs in a worker thread too (``**_`` takes the job's ``cancelled``)."""
    # lazy: highdicom is heavy; DICOM results are written on request only
    from pneumoview.dicom_results import write_results

    algorithm_sr = None
    if result is not None and findings is not None:
        algorithm_sr = write_results(image, result, findings, out, include_identifiers=include_identifiers)[0]
    return _review_sr(review, image, findings, out, algorithm_sr, include_identifiers)
