"""The viewer end to end (offscreen Qt, real radiographs, tiny real models): open, analyse, thresholds, overlays,
export, errors, settings and the ``--screenshot`` mode."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.gui_helpers import CHEST_DICOM, copy_study, open_and_wait, rsna_images

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[1]


def _rows(window) -> list:
    return list(window.findings_panel.rows)


def test_open_folder_analyse_and_move_thresholds(qtbot, make_window, small_study):
    from pneumoview.gui import viewmodel as vm

    w = make_window()
    open_and_wait(qtbot, w, small_study)
    first = sorted(small_study.glob("*.jpg"))[0]
    assert w.session.path == first
    assert w.session.image.shape == (512, 512)
    r = w.session.result
    assert r.stages_done == ("classify", "segment", "detect")
    assert r.prob_map.shape == (512, 512)
    assert w.canvas.image_item.image.shape == (512, 512)
    # The browser lists every file: three images, and the two bad files as errors or unanalysed images.
    assert len(w.browser.image_paths()) == 4  # broken.dcm has a readable header, so it is listed as an image
    assert w.browser.n_errors == 1
    status, tip = w.browser.status_of(first)
    assert status in (vm.FINDING, vm.NO_FINDING)
    assert "P(opacity)" in tip
    # The complete result is on screen, not the last partial one (the engine sends it again, marked complete).
    assert "analysing" not in w.findings_panel.headline.text()

    rows = _rows(w)
    assert any(r.set == "detector" for r in rows), "the bright-box test detector finds one box"
    det_rows = [r for r in rows if r.set == "detector"]
    assert w.findings_panel.table.rowCount() == len(rows)
    assert w.canvas.overlays.box_count("detector") == len(det_rows)

    # The test detector scores 0.9: a score threshold above that removes its boxes, live, without the models.
    calls = []
    engine = w.engine_info.engine
    original = engine.analyze
    engine.analyze = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        t0 = time.perf_counter()
        w.threshold_panel.sliders["det_score"].setValue(0.95)
        qtbot.waitUntil(lambda: not any(r.set == "detector" for r in _rows(w)), timeout=5000)
        elapsed = time.perf_counter() - t0
    finally:
        engine.analyze = original
    assert calls == [], "a threshold change must not re-run the models"
    assert w.canvas.overlays.box_count("detector") == 0
    assert w.session.thresholds.det_score == pytest.approx(0.95)
    assert elapsed < 2.0

    # The mask follows the segmentation threshold.
    before = int(w.canvas.overlays.images["mask_fill"].image.sum())
    w.threshold_panel.sliders["seg_threshold"].setValue(0.9)
    qtbot.waitUntil(lambda: int(w.canvas.overlays.images["mask_fill"].image.sum()) != before, timeout=5000)
    assert int(w.canvas.overlays.images["mask_fill"].image.sum()) < before

    # Reset to defaults brings the detector rows back.
    w.threshold_panel.reset_button.click()
    qtbot.waitUntil(lambda: any(r.set == "detector" for r in _rows(w)), timeout=5000)


def test_box_selection_highlights_and_centres(qtbot, make_window, small_study):
    w = make_window()
    open_and_wait(qtbot, w, small_study)
    assert _rows(w)
    w.canvas.zoom(4.0)
    w.findings_panel.select_row(0)
    row = _rows(w)[0]
    hl = w.canvas.overlays._highlight
    assert hl.isVisible()
    rect = hl.rect()
    assert (rect.x(), rect.y(), rect.width(), rect.height()) == pytest.approx(
        (row.x, row.y, row.w, row.h), abs=1e-3
    )
    centre = w.canvas.view.viewRect().center()
    assert centre.x() == pytest.approx(row.x + row.w / 2, abs=1.0)
    assert centre.y() == pytest.approx(row.y + row.h / 2, abs=1.0)


def test_overlay_toggles(qtbot, make_window, small_study):
    w = make_window()
    open_and_wait(qtbot, w, small_study)
    ov = w.canvas.overlays
    heat = ov.images["heatmap"]
    boxes = [
        i for layer in ("detector", "segmentation", "fused") for pair in ov.box_items(layer) for i in pair
    ]
    assert heat.isVisible() and boxes and all(i.isVisible() for i in boxes)
    qtbot.keyClick(w.canvas, "o")  # one key hides every overlay
    assert w.actions_by_key["hide_overlays"].isChecked()
    assert not heat.isVisible() and not any(i.isVisible() for i in boxes)
    w.actions_by_key["hide_overlays"].trigger()
    assert heat.isVisible() and all(i.isVisible() for i in boxes)
    # Per-layer visibility and opacity, remembered in the settings.
    w.layer_controls.checks["heatmap"].setChecked(False)
    assert not heat.isVisible() and w.settings.overlay_visible["heatmap"] is False
    w.layer_controls.sliders["fused"].setValue(40)
    assert all(i.opacity() == pytest.approx(0.4) for pair in ov.box_items("fused") for i in pair)
    assert w.settings.overlay_opacity["fused"] == pytest.approx(0.4)
    assert ov.colour_bar.opacity() == 0.0  # no heat map shown: the bar is transparent (it keeps its place)


def test_canvas_window_level_invert_flip_and_measure(qtbot, make_window, tmp_path):
    from pneumoview.gui import viewmodel as vm

    study = copy_study(tmp_path / "dicom", [CHEST_DICOM])
    w = make_window()
    open_and_wait(qtbot, w, study)
    c, image = w.canvas, w.session.image
    assert c.window() == pytest.approx(image.window)
    lo, hi = c.image_item.getLevels()
    assert (lo, hi) == pytest.approx((image.window.low, image.window.high))
    c.apply_preset("lung")
    lung = vm.window_preset(image, "lung")
    assert c.window().center == pytest.approx(lung.center)
    assert tuple(c.image_item.getLevels()) == pytest.approx((lung.low, lung.high))
    before = c.window()
    c._on_window_drag(40.0, 0.0)  # right-drag to the right widens the window
    assert c.window().width > before.width
    assert not image.inverted
    assert c.hist.gradient.getLookupTable(256)[0].tolist()[:3] == [0, 0, 0]  # low values black
    w.actions_by_key["invert"].trigger()
    lut = c.hist.gradient.getLookupTable(256)
    assert lut[0].tolist()[:3] == [255, 255, 255] and lut[-1].tolist()[:3] == [0, 0, 0]
    assert c.image_item.lut is not None  # the image uses the inverted table
    w.actions_by_key["flip_h"].trigger()
    assert c.view.xInverted()
    # A 100-pixel horizontal line on a 0.168 mm spacing DICOM measures 100 × col spacing in mm.
    assert image.spacing_mm is not None
    text = c.measure((10.0, 20.0), (110.0, 20.0))
    assert text == f"{100 * image.spacing_mm[1]:.1f} mm"
    assert vm.pixel_readout(image, 5.5, 7.2).startswith("x 5  y 7  value ")


def test_gradcam_layer_with_a_resnet_classifier(qtbot, make_window, small_study, tmp_path):
    from tests.model_fixtures import add_model

    models = tmp_path / "resnet"
    classes = ["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"]
    add_model(models, "rsna3-classifier", task="classify", builder="resnet18_classifier",
              builder_args={"num_classes": 3, "in_channels": 1}, size=64, classes=classes,
              positive_class="Lung Opacity")  # fmt: skip
    w = make_window(models_dir=models)
    assert "classify" in w.engine_info.stages
    open_and_wait(qtbot, w, small_study)
    assert w.session.saliency is None  # computed on demand only
    w.actions_by_key["saliency"].trigger()
    qtbot.waitUntil(lambda: w.session.saliency is not None, timeout=30_000)
    cam = w.session.saliency
    assert cam.shape == w.session.image.shape and float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
    layer = w.canvas.overlays.images["saliency"]
    assert layer.isVisible() and np.shares_memory(layer.image, cam)
    assert w.layer_controls.checks["saliency"].isChecked()
    # Moving to another image drops the map; it is recomputed there because the layer is on.
    first = w.session.path
    w.browser.select_next(1)
    qtbot.waitUntil(lambda: w.session.path != first and w.session.saliency is not None, timeout=30_000)
    assert w.session.saliency.shape == w.session.image.shape


def test_bad_files_show_their_error(qtbot, make_window, small_study):
    from pneumoview.gui import viewmodel as vm

    w = make_window()
    open_and_wait(qtbot, w, small_study)
    # Scan errors are listed under "Unreadable files" with the reason as tooltip.
    assert w.browser.status_of(small_study / "notes.bin") == ("", "")
    [(path, reason)] = w.browser.errors()
    assert path == small_study / "notes.bin" and "not a DICOM, PNG or JPEG" in reason
    assert w.browser._errors_node.text() == "Unreadable files (1)"
    # A file whose header is fine but whose pixels are not shows the loader's sentence when selected.
    broken = small_study / "broken.dcm"
    with qtbot.waitSignal(w.imageFailed, timeout=10_000) as blocker:
        assert w.browser.select_path(broken)
    assert blocker.args[0] == broken
    status, tip = w.browser.status_of(broken)
    assert status == vm.ERROR and len(tip) > 10
    assert "Cannot show this file" in w.findings_panel.headline.text()


def test_export_current_image(qtbot, make_window, small_study, tmp_path):
    from PIL import Image

    w = make_window()
    open_and_wait(qtbot, w, small_study)
    out = tmp_path / "export"
    files = w.export_current(out)
    png, findings_csv, submission_csv = files
    assert all(p.exists() for p in files)
    image_id = w.session.image.image_id
    assert png.name == f"{image_id}_annotated.png"
    with Image.open(png) as im:
        assert im.size[0] == 512 and im.size[1] > 512  # native width, footer below
    rows = list(csv.DictReader(findings_csv.open()))
    assert rows and all(r["image_id"] == image_id for r in rows)
    sub = list(csv.reader(submission_csv.open()))
    assert sub[0] == ["patientId", "PredictionString"] and sub[1][0] == image_id
    assert sub[1][1] == w.session.findings.prediction_string()
    # Never overwrite without asking: a "no" leaves the files untouched.
    stamp = png.stat().st_mtime_ns
    asked = []
    w.exporter.confirm_overwrite = lambda paths: asked.append(paths) or False
    assert w.export_current(out) == []
    assert asked and png.stat().st_mtime_ns == stamp


def test_dicomdir_tree_and_study_export(qtbot, make_window, tmp_path):
    import shutil

    from tests.gui_helpers import SHARED

    tree = tmp_path / "dicomdir"
    shutil.copytree(SHARED / "dicom" / "robustness" / "pydicom" / "dicomdirtests", tree)
    w = make_window()
    open_and_wait(qtbot, w, tree / "DICOMDIR")
    model = w.browser.model
    patients = [model.item(r, 0).text() for r in range(model.rowCount())]
    assert any("Archibald" in p for p in patients) and any("Peter" in p for p in patients)
    # The first image belongs to the three-image CR study "XR C Spine"; the study export covers exactly it.
    study = w.browser.study_images()
    assert len(study) == 3 and w.session.path in study
    with qtbot.waitSignal(w.exportFinished, timeout=30_000) as blocker:
        w.export_study(tmp_path / "out")
    outcome = blocker.args[0]
    findings_csv, submission_csv = outcome.written
    assert outcome.failed == ()
    sub = list(csv.DictReader(submission_csv.open()))
    assert len(sub) == 3 and len({r["patientId"] for r in sub}) == 3
    assert all(r["patientId"].startswith("img-") for r in sub), "ids must not reveal the PatientID"
    assert {r["image_id"] for r in csv.DictReader(findings_csv.open())} == {r["patientId"] for r in sub}
    assert "77654033" not in findings_csv.read_text() + submission_csv.read_text() + findings_csv.name


def test_moving_on_drops_stale_results(qtbot, make_window, tmp_path):
    study = copy_study(tmp_path / "s", rsna_images(3, offset=10))
    w = make_window()
    open_and_wait(qtbot, w, study)
    paths = w.browser.image_paths()
    with qtbot.waitSignal(w.analysisFinished, timeout=30_000, check_params_cb=lambda p: p == paths[2]):
        w.browser.select_path(paths[1])
        w.browser.select_path(paths[2])  # before image 2's analysis can finish
    assert w.session.path == paths[2]
    assert w.session.result.image_id == w.session.image.image_id == paths[2].stem
    qtbot.wait(200)
    assert w.session.path == paths[2] and w.session.result.image_id == paths[2].stem


def test_analyse_all_updates_every_status(qtbot, make_window, small_study):
    from pneumoview.gui import viewmodel as vm

    w = make_window()
    open_and_wait(qtbot, w, small_study)
    job = w.analyse_paths(w.browser.image_paths())
    qtbot.waitUntil(lambda: job.done, timeout=30_000)
    for p in small_study.glob("*.jpg"):
        assert w.browser.status_of(p)[0] in (vm.FINDING, vm.NO_FINDING)
    assert w.browser.status_of(small_study / "broken.dcm")[0] == vm.ERROR
    w.browser.filter_edit.setText("error")
    assert w.browser.visible_image_paths() == [small_study / "broken.dcm"]


def test_settings_survive_and_corrupt_file_does_not_block(qtbot, make_window, config_dir, small_study):
    from pneumoview.settings import load_settings

    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "settings.json").write_text("{this is not json")
    w = make_window(wait_engine=False)
    assert w.isVisible()
    w.threshold_panel.set_thresholds(w.session.thresholds.replace(gate=0.6))
    qtbot.waitUntil(lambda: w.session.thresholds.gate == pytest.approx(0.6), timeout=2000)
    w.close()
    saved = json.loads((config_dir / "settings.json").read_text())
    assert saved["thresholds"]["gate"] == pytest.approx(0.6)
    assert saved["window_geometry"]
    w2 = make_window(load_settings(), wait_engine=False)
    assert w2.threshold_panel.thresholds().gate == pytest.approx(0.6)


def test_viewing_works_without_models(qtbot, make_window, small_study, tmp_path, monkeypatch):
    from pneumoview.inference import manifest

    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setattr(manifest, "repository_models_dir", lambda: empty)
    monkeypatch.setattr(manifest, "user_models_dir", lambda: empty)
    w = make_window(models_dir=empty)
    assert w.engine_info.stages == ()
    assert "viewing only" in w.models_label.text()
    assert "no model 'rsna3-classifier' is installed" in w.models_label.toolTip()
    with qtbot.waitSignal(w.imageShown, timeout=10_000):
        w.open_path(small_study)
    assert w.canvas.image_item.image is not None
    assert w.session.result is None
    notes = w.findings_panel.notes.text()
    assert "Analysis is off" in notes and "no model 'rsna3-classifier' is installed" in notes
    assert w.export_current(tmp_path / "x") == []  # nothing to export, and no crash


def test_dialogs_show_shortcuts_versions_and_model_cards(qtbot, make_window, test_models):
    from pneumoview.gui.dialogs import AboutDialog, ShortcutsDialog
    from pneumoview.gui.window_actions import shortcut_rows

    w = make_window(wait_engine=False)
    rows = dict((b, a) for a, b in shortcut_rows(w.actions_by_key))
    assert rows["Hide all overlays"] == "O"
    assert "Ctrl+O" in rows["Open folder"]
    dialog = ShortcutsDialog(shortcut_rows(w.actions_by_key))
    qtbot.addWidget(dialog)
    assert dialog.table.rowCount() >= len(rows)
    about = AboutDialog(str(test_models))
    qtbot.addWidget(about)
    text = about.text.toPlainText()
    assert "Research use only" in text and "pydicom" in text and "rsna3-classifier" in text
    assert "tests only" in text  # the manifest's intended use
    assert "installed" in text


def test_dropping_a_folder_opens_it(qtbot, make_window, small_study):
    from PySide6 import QtCore, QtGui

    w = make_window()
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(small_study))])
    buttons, mods = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier

    class Enter:  # the parts of QDragEnterEvent the window reads (its QPoint constructor is deprecated)
        accepted = False

        def mimeData(self):  # noqa: N802 - Qt API
            return mime

        def acceptProposedAction(self):  # noqa: N802 - Qt API
            self.accepted = True

    enter = Enter()
    w.dragEnterEvent(enter)
    assert enter.accepted
    drop = QtGui.QDropEvent(QtCore.QPointF(20, 20), QtCore.Qt.DropAction.CopyAction, mime, buttons, mods)
    with qtbot.waitSignal(w.analysisFinished, timeout=30_000):
        w.dropEvent(drop)
    assert w.folder == small_study
    assert w.settings.recent_folders[0] == str(small_study)
    assert [a.text() for a in w.recent_menu.actions()][0] == str(small_study)


def test_research_notice_always_visible(qtbot, make_window):
    w = make_window(wait_engine=False)
    assert "Research use only" in w.windowTitle()
    assert w.notice.isVisible() and "not for diagnosis" in w.notice.text()


def _run_app(args: list[str], env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", **env_extra)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import tests.model_fixtures; "
        "from pneumoview.gui.app import main; sys.exit(main(sys.argv[2:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(REPO), *args], capture_output=True, text=True, timeout=timeout, env=env,
        cwd=REPO,
    )  # fmt: skip


def test_screenshot_mode_writes_the_window(tmp_path, test_models, config_dir):
    from PIL import Image

    study = copy_study(tmp_path / "one", rsna_images(1, offset=20))
    shot = tmp_path / "shot.png"
    proc = _run_app(
        [str(study), "--screenshot", str(shot), "--models-dir", str(test_models), "--device", "cpu"],
        {"PNEUMOVIEW_CONFIG_DIR": str(config_dir)},
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(shot) as im:
        assert im.size[0] >= 800 and im.size[1] >= 600
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10  # not a blank window
    # A path that does not exist fails with a message.
    bad = _run_app([str(tmp_path / "missing"), "--screenshot", str(tmp_path / "x.png")], {})
    assert bad.returncode != 0 and "does not exist" in bad.stderr


def test_window_shows_before_torch_is_imported(config_dir):
    code = (
        "import sys; from pneumoview.gui.app import main; rc = main(['--exit-when-shown']); "
        "print('TORCH', 'torch' in sys.modules); sys.exit(rc)"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PNEUMOVIEW_CONFIG_DIR=str(config_dir))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "PNEUMOVIEW_SHOWN" in proc.stdout
    assert "TORCH False" in proc.stdout


def test_qt_binding_does_not_leak_singleton_references():
    # PySide6 6.12.0 drops a reference to None/True/False per void call on Python 3.11, and the interpreter aborts
    # ("none_dealloc") after a few thousand calls; pyproject.toml keeps Python < 3.12 on PySide6 < 6.12.
    code = (
        "import sys; from PySide6 import QtCore, QtWidgets; "
        "app = QtWidgets.QApplication([]); t = QtCore.QTimer(); f = lambda: None; s = t.timeout; "
        "before = sys.getrefcount(None); "
        "[app.processEvents() for _ in range(30000)]; "
        "[(s.connect(f), s.disconnect(f)) for _ in range(30000)]; "
        "print('lost', before - sys.getrefcount(None))"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lost = int(proc.stdout.split("lost")[1])
    assert lost < 1000  # a leaking binding loses about 90,000 here
