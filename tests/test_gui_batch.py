"""The batch dialog: a full run, and a run cancelled midway whose outputs stay consistent."""

from __future__ import annotations

import csv
import json

import pytest

from tests.gui_helpers import copy_study, rsna_images

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui


def _dialog(qtbot, window, src, out):
    from pneumoview.gui.batch_dialog import BatchDialog

    d = BatchDialog(lambda: window.engine_info, window.session.thresholds, input_dir=str(src))
    qtbot.addWidget(d)
    d.output_edit.setText(str(out))
    return d


def test_batch_runs_and_writes_predict_outputs(qtbot, make_window, tmp_path):
    src = copy_study(tmp_path / "in", rsna_images(4, offset=30), {"junk.bin": b"hello"})
    w = make_window()
    d = _dialog(qtbot, w, src, tmp_path / "out")
    with qtbot.waitSignal(d.finishedRun, timeout=60_000) as blocker:
        assert d.start()
    summary = blocker.args[0]
    assert summary.total == 5 and summary.done == 4 and not summary.cancelled
    assert [p for p, _ in summary.failed] == [str(src / "junk.bin")]
    assert d.failures.count() == 1 and "junk.bin" in d.failures.item(0).text()
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    assert run["done"] == 4 and run["thresholds"] == w.session.thresholds.to_dict()
    assert run["thresholds_source"] == "the batch dialog's Thresholds panel"
    assert len(list(csv.DictReader((out / "submission.csv").open()))) == 4
    assert len(list((out / "annotated").glob("*.png"))) == 4
    assert "Finished: 4 of 5" in d.status.text()
    # Inputs are only read; a second start on the same output asks first, and "no" does not start.
    assert not (src / "run.json").exists()
    assert d.start(confirm=lambda paths: False) is False


def test_batch_cancel_midway_keeps_outputs_consistent(qtbot, make_window, tmp_path):
    src = copy_study(tmp_path / "in", rsna_images(12, offset=40))
    w = make_window()
    d = _dialog(qtbot, w, src, tmp_path / "out")
    d.write_png.setChecked(False)
    progressed = []
    show = d._on_yield

    def cancel_on_first(value):  # the user presses "Cancel run" as soon as the first image is done
        show(value)
        if value[0] == "progress" and not progressed:
            progressed.append(value[1])
            d.cancel()

    d._on_yield = cancel_on_first
    with qtbot.waitSignal(d.finishedRun, timeout=60_000) as blocker:
        assert d.start()
    summary = blocker.args[0]
    assert summary.cancelled
    assert 1 <= summary.done < summary.total == 12
    assert "Cancelled" in d.status.text() and f"{summary.done} of 12" in d.status.text()
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    rows = list(csv.DictReader((out / "submission.csv").open()))
    assert run["cancelled"] is True and run["done"] == summary.done == len(rows)
    assert run["not_processed"] == 12 - summary.done
    assert {r["patientId"] for r in rows} <= {p.stem for p in src.glob("*.jpg")}
    qtbot.waitUntil(lambda: not d.running, timeout=10_000)
    assert d.start_button.isEnabled()


def test_batch_refuses_output_inside_input_and_missing_models(qtbot, make_window, tmp_path):
    src = copy_study(tmp_path / "in", rsna_images(1))
    w = make_window(wait_engine=False)
    d = _dialog(qtbot, w, src, src / "results")
    assert d.start() is False and "outside the input folder" in d.status.text()
    d.output_edit.setText(str(tmp_path / "out"))
    assert d.start() is False and "still loading" in d.status.text()
    assert not (tmp_path / "out").exists()
