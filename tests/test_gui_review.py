"""The reader review in the viewer (offscreen Qt, real radiographs, tiny real models): accept, reject, move, draw;
saved to the per-user review store (never the input folder) and shown again when the image is reopened."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from pneumoview.gui.findings_panel import COLUMNS
from tests.gui_helpers import both_sources_settings, copy_study, open_and_wait, rsna_images

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui


@pytest.fixture
def reviews(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "reviews"
    monkeypatch.setenv("PNEUMOVIEW_REVIEWS_DIR", str(folder))
    return folder


def _reader_window(make_window, name: str = "Dr T. Reader"):
    settings = both_sources_settings()  # the review is of several boxes, from both sources
    settings.reader_name = name
    return make_window(settings)


def _select_final(w, index: int) -> None:
    row = next(r for r, row in enumerate(w.findings_panel.rows) if row.set == "final" and row.index == index)
    w.findings_panel.select_row(row)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _drag(qtbot, w, p0: tuple[float, float], p1: tuple[float, float]) -> None:
    """A real left-button drag on the canvas from image point ``p0`` to ``p1`` (``(x, y)`` source pixels)."""
    from PySide6 import QtCore, QtGui, QtWidgets

    view, canvas = w.canvas.view, w.canvas
    viewport = canvas.viewport()
    qtbot.wait(100)  # let pending layout changes (a wider table column) settle before mapping image points

    def to_widget(p):
        scene = view.mapViewToScene(QtCore.QPointF(*p))
        return canvas.mapFromScene(scene)

    a, b = to_widget(p0), to_widget(p1)
    left = QtCore.Qt.MouseButton.LeftButton
    none = QtCore.Qt.MouseButton.NoButton
    mods = QtCore.Qt.KeyboardModifier.NoModifier

    def send(kind, pos, button, buttons):
        pos = QtCore.QPointF(pos)
        ev = QtGui.QMouseEvent(kind, pos, viewport.mapToGlobal(pos), button, buttons, mods)
        QtWidgets.QApplication.sendEvent(viewport, ev)

    send(QtCore.QEvent.Type.MouseButtonPress, a, left, left)
    for t in (0.25, 0.5, 0.75, 1.0):
        p = QtCore.QPoint(int(a.x() + (b.x() - a.x()) * t), int(a.y() + (b.y() - a.y()) * t))
        send(QtCore.QEvent.Type.MouseMove, p, none, left)
        qtbot.wait(10)
    send(QtCore.QEvent.Type.MouseButtonRelease, b, left, none)


def test_accept_reject_move_draw_persist_across_reopen(qtbot, make_window, tmp_path, reviews):
    from pneumoview.review_store import ReviewStore

    study = copy_study(tmp_path / "study", rsna_images(1))
    before = _snapshot(study)
    w = _reader_window(make_window)
    open_and_wait(qtbot, w, study)
    image_id = w.session.image.image_id
    ctl = w.review
    assert len(ctl.refs) >= 2, "the test models report two final boxes on this radiograph"
    assert [m.decision for m in ctl.layer.marks] == ["undecided"] * len(ctl.refs)

    # Nothing selected: the actions are off and say why when forced.
    assert not ctl.actions["accept"].isEnabled()
    assert ctl.decide("accepted") is False and "Select a reported" in ctl.last_error

    # Accept box 0 through the table and its shortcut key.
    _select_final(w, 0)
    assert ctl.selected == (0, None) and ctl.actions["accept"].isEnabled()
    qtbot.keyClick(w, "a")
    assert ctl.review.decision_for(0).decision == "accepted"
    assert ctl.review.decision_for(0).reader == "Dr T. Reader"

    # Reject box 1 by clicking it on the canvas, then the Reject action.
    ctl.layer.boxClicked.emit(1, None)
    assert ctl.selected == (1, None)
    ctl.actions["reject"].trigger()
    assert ctl.review.decision_for(1).decision == "rejected"
    col = COLUMNS.index("Review")
    texts = {
        row.index: w.findings_panel.table.item(r, col).text()
        for r, row in enumerate(w.findings_panel.rows)
        if row.set == "final"
    }
    assert texts[0] == "accepted" and texts[1] == "rejected"

    # Move and resize box 0 by its ROI on the canvas (what a handle drag ends with).
    roi = ctl.layer.roi_for(0)
    x1, y1, x2, y2 = ctl.refs[0].box_xyxy
    roi.setPos((x1 + 10, y1 + 5), update=False)
    roi.setSize((x2 - x1 - 20, y2 - y1 - 15), finish=True)
    edited = ctl.review.decision_for(0)
    assert edited.decision == "edited"
    assert edited.box_xyxy == pytest.approx((x1 + 10, y1 + 5, x2 - 10, y2 - 10), abs=1e-3)
    assert edited.finding.box_xyxy == pytest.approx(ctl.refs[0].box_xyxy)

    # Draw a missed box with a real mouse drag in draw mode (key D).
    qtbot.keyClick(w, "d")
    assert ctl.actions["draw"].isChecked() and w.canvas.view.mode == "draw"
    _drag(qtbot, w, (300.0, 320.0), (400.0, 450.0))
    assert len(ctl.review.added) == 1
    ax1, ay1, ax2, ay2 = ctl.review.added[0].box_xyxy
    assert (ax1, ay1, ax2, ay2) == pytest.approx((300, 320, 400, 450), abs=3.0)
    ctl.set_drawing(False)
    assert w.canvas.view.mode == "pan"

    # Saved at once, in the review store and never in the input folder.
    saved = ReviewStore(reviews).load(image_id)
    assert saved == ctl.review
    assert _snapshot(study) == before
    w.close()

    # A new viewer shows the same review when the image is opened again.
    w2 = _reader_window(make_window, "Someone Else")
    open_and_wait(qtbot, w2, study)
    ctl2 = w2.review
    assert ctl2.review == saved
    by_index = {m.finding_index: m for m in ctl2.layer.marks if m.finding_index is not None}
    assert by_index[0].decision == "edited" and by_index[0].box_xyxy == pytest.approx(edited.box_xyxy)
    assert by_index[1].decision == "rejected"
    assert [m.decision for m in ctl2.layer.marks if m.finding_index is None] == ["added"]
    assert ctl2.layer.roi_for(0).pos().x() == pytest.approx(x1 + 10, abs=1e-3)
    assert "2 of" in ctl2.status_label.text() and "1 drawn" in ctl2.status_label.text()

    # The exported findings CSV carries the review column, and a row for the drawn box.
    files = w2.export_current(tmp_path / "export")
    rows = list(csv.DictReader(files[1].open()))
    reviews_by_index = {r["box_index"]: r["review"] for r in rows if r["box_source"] != "reader"}
    assert reviews_by_index["0"].startswith("edited by Dr T. Reader: ")
    assert reviews_by_index["1"] == "rejected by Dr T. Reader"
    drawn = [r for r in rows if r["box_source"] == "reader"]
    assert len(drawn) == 1 and drawn[0]["review"] == "added by Dr T. Reader"

    # The reader's name is a setting.
    from pneumoview.gui.dialogs import SettingsDialog

    dialog = SettingsDialog(w2.settings, w2)
    assert dialog.reader_name.text() == "Someone Else"
    dialog.reader_name.setText("  Dr New  ")
    dialog.apply_to(w2.settings)
    assert w2.review.reader() == "Dr New"

    # Undo and remove work and persist too.
    _select_final(w2, 1)
    assert ctl2.undo()
    ctl2.select(None, 0)
    assert ctl2.remove_added()
    assert ReviewStore(reviews).load(image_id).decision_for(1) is None
    assert ReviewStore(reviews).load(image_id).added == ()


def test_review_layer_toggles_and_bad_saved_review_is_reported(qtbot, make_window, tmp_path, reviews):
    study = copy_study(tmp_path / "study", rsna_images(1))
    w = _reader_window(make_window)
    open_and_wait(qtbot, w, study)
    ctl = w.review
    assert ctl.layer.rois and all(r.isVisible() for r in ctl.layer.rois)
    w.layer_controls.checks["review"].setChecked(False)
    assert not any(r.isVisible() for r in ctl.layer.rois)
    w.layer_controls.checks["review"].setChecked(True)
    assert all(r.isVisible() for r in ctl.layer.rois)

    # A damaged review file: said so (naming it), and the image still opens.
    image_id = w.session.image.image_id
    w.close()
    bad = reviews / image_id / "review.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json", encoding="utf-8")
    w2 = _reader_window(make_window)
    open_and_wait(qtbot, w2, study)
    assert w2.review.review is None
    assert str(bad) in w2.review.last_error and "move it away" in w2.review.last_error
    assert os.path.exists(bad)
