"""Reading comfort in the viewer (issue 13): failed exports in a dialog, thresholds saved when changed, the
headline's top class, side/zone/cm² and R/L markers, the ground-truth layer, one colour per box set, the exact
status filter, absolute recent folders, the Grad-CAM colour bar and the small canvas/panel fixes.

Offscreen Qt, real radiographs (the sample study, ``../shared/data``) and the tiny real test models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.gui_helpers import RSNA_512, both_sources_settings, copy_study, open_and_wait, rsna_images

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    from pneumoview.data import sample_study_dir

    src = sample_study_dir()
    first = sorted(src.glob("*.dcm"))[:2]
    return copy_study(tmp_path / "sample", first, {"labels.csv": (src / "labels.csv").read_bytes()})


# -- 1. failed exports -------------------------------------------------------------------------------------------


def test_export_into_a_folder_that_cannot_be_written_says_why_and_writes_nothing(
    qtbot, make_window, small_study, tmp_path
):
    w = make_window()
    open_and_wait(qtbot, w, small_study)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the export folder should be")
    assert w.export_current(blocked / "out") == []
    box = w.error_dialog
    assert box is not None and box.isVisible() and box.windowTitle() == "Export failed"
    assert (
        "_annotated.png" in box.text()
        and "Not a directory" in box.text()
        and "Nothing was written" in box.text()
    )
    box.close()
    assert w.export_study(blocked / "out") is None  # checked before a whole study is analysed
    assert "study's CSVs" in w.error_dialog.text() and "Not a directory" in w.error_dialog.text()

    # A failure half-way (the disk fills up after the PNG): no partial file is left.
    from pneumoview import export

    out = tmp_path / "exports"
    original = export.write_submission_csv

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    export.write_submission_csv = full_disk
    try:
        assert w.export_current(out) == []
    finally:
        export.write_submission_csv = original
    assert "No space left on device" in w.error_dialog.text()
    assert list(out.iterdir()) == []
    assert len(w.export_current(out)) == 3 and len(list(out.iterdir())) == 3


# -- 2. thresholds saved when changed, rounded to the step --------------------------------------------------------


def test_threshold_change_is_saved_at_once_rounded_to_the_step(qtbot, make_window, config_dir):
    w = make_window(wait_engine=False)
    file = config_dir / "settings.json"
    w.threshold_panel.sliders["det_score"].setValue(0.4712)
    w.threshold_panel.sliders["min_area_fraction"].setValue(2.3799999)  # percent in the control
    w.threshold_panel.sliders["shrink"].setValue(12.74)

    def saved() -> dict:
        return json.loads(file.read_text())["thresholds"] if file.is_file() else {}

    qtbot.waitUntil(lambda: saved().get("det_score") == 0.47, timeout=5000)
    t = saved()
    assert t["min_area_fraction"] == 0.024  # 2.40 % (step 0.05 %), not 0.023799999
    assert t["shrink"] == 0.875  # 12.5 % removed (step 0.5 %)
    assert w.isVisible(), "saved while the window is open, not at exit"


# -- 3. the headline shows the top class -------------------------------------------------------------------------


def test_headline_shows_the_classifiers_top_class(qtbot):
    from pneumoview.gui.findings_panel import FindingsPanel
    from pneumoview.postprocess import postprocess
    from pneumoview.types import AnalysisResult

    panel = FindingsPanel()
    qtbot.addWidget(panel)
    names = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
    result = AnalysisResult(
        "x", (64, 64), class_names=names, class_probs=np.array([0.30, 0.51, 0.19], np.float32), p_opacity=0.19,
        det_boxes=np.zeros((0, 4), np.float32), det_scores=np.zeros(0, np.float32), stages_done=("classify", "detect"),
    )  # fmt: skip
    panel.set_result(result, postprocess(result, image_shape=(64, 64)), running=False)
    text = panel.headline.text()
    assert not text.startswith("No finding")
    assert text.startswith("No box reported") and "top class: No Lung Opacity / Not Normal (51 %)" in text


# -- 4. side, zone, cm², R/L markers and the corner overlay ------------------------------------------------------


def test_findings_are_placed_by_side_and_zone_and_the_canvas_shows_r_l_and_patient_info(
    qtbot, make_window, sample_copy, tmp_path
):
    from pneumoview import export
    from pneumoview.anatomy import describe_box

    w = make_window()
    open_and_wait(qtbot, w, sample_copy)
    c, image = w.canvas, w.session.image
    assert c.marker_texts() == ("R", "L")  # RSNA files lack PatientOrientation: the standard display, assumed
    assert "Orientation assumed (PA/AP)" in c.corner_text() and "Age 42 y, male" in c.corner_text()
    assert "View AP" in c.corner_text() and "Study 1901-01-01" in c.corner_text()
    assert "assumed" in w.findings_panel.notes.text()
    w.actions_by_key["flip_h"].trigger()
    assert c.marker_texts() == ("L", "R")
    w.actions_by_key["flip_h"].trigger()
    qtbot.keyClick(c, "t")
    assert c.corner_text() == "" and w.settings.info_overlay is False
    qtbot.keyClick(c, "t")
    assert c.corner_text()

    rows = w.findings_panel.rows
    assert rows, "the test models find boxes on the sample image"
    table = w.findings_panel.table
    headers = [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())]
    for r, row in enumerate(rows):
        place = describe_box([row.x, row.y, row.w, row.h], image.shape, c.orientation, image.spacing_mm)
        assert table.item(r, headers.index("Where")).text() == place.text
        assert float(table.item(r, headers.index("cm²")).text()) == pytest.approx(place.area_cm2, abs=0.05)
    # The corner text is for the screen only: the exported PNG's footer carries none of it.
    footer = " ".join(export.footer_lines(w.session.result, w.session.findings))
    assert "1901" not in footer and "42" not in footer.split("|")[0]


# -- 5. ground truth ---------------------------------------------------------------------------------------------


def test_ground_truth_layer_from_the_sample_labels_and_a_chosen_rsna_csv(
    qtbot, make_window, sample_copy, tmp_path, shared_data
):
    from pneumoview.ground_truth import match_hits

    w = make_window()
    open_and_wait(qtbot, w, sample_copy)
    ov = w.canvas.overlays
    assert w.session.path.name.startswith("01cad8d0")
    assert ov.box_count("truth") == 2 and all(i.isVisible() for pair in ov.box_items("truth") for i in pair)
    truth = w.truth_boxes()
    panel = w.findings_panel
    truth_col = [panel.table.horizontalHeaderItem(i).text() for i in range(panel.table.columnCount())].index(
        "Truth"
    )
    assert not panel.table.isColumnHidden(truth_col)
    for set_name in ("final", "detector", "segmentation"):
        rows = [r for r in panel.rows if r.set == set_name]
        if rows:
            hits, _ = match_hits(
                np.array([[r.x, r.y, r.w, r.h] for r in rows]), np.array([r.confidence for r in rows]), truth
            )
            assert [r.truth for r in rows] == ["hit" if h else "miss" for h in hits]
    assert (
        "Ground truth (labels.csv): 2 radiologist boxes" in panel.notes.text()
        and "IoU ≥ 0.4" in panel.notes.text()
    )
    header = panel.table.horizontalHeaderItem(truth_col).toolTip()
    assert "IoU ≥ 0.4" in header and "no more confident" in header
    qtbot.keyClick(w.canvas, "o")
    assert not any(i.isVisible() for pair in ov.box_items("truth") for i in pair)
    qtbot.keyClick(w.canvas, "o")

    # An RSNA labels CSV the user chooses, on 512-px images: boxes scaled from the 1024-px frame.
    study = copy_study(tmp_path / "rsna", [RSNA_512 / f"{w.session.path.stem}.jpg"])
    open_and_wait(qtbot, w, study)
    assert w.labels.current() is None and ov.box_count("truth") == 0
    assert panel.table.isColumnHidden(truth_col)
    assert w.load_labels(shared_data / "rsna" / "stage_2_train_labels.csv")
    np.testing.assert_allclose(w.truth_boxes(), [[109, 333.5, 129, 162], [378, 278, 112.5, 220.5]])
    assert ov.box_count("truth") == 2
    assert not w.load_labels(shared_data / "rsna" / "index.csv")
    assert (
        "index.csv" in w.error_dialog.text() and "patientId,x,y,width,height,Target" in w.error_dialog.text()
    )


# -- 6. one colour per box set; fused boxes show their sources ---------------------------------------------------


def test_one_colour_per_box_set_in_legend_canvas_and_png_and_source_confidences(
    qtbot, make_window, small_study, tmp_path
):
    from PIL import Image

    from pneumoview.gui.findings_panel import COLUMNS, FUSION_TIP
    from pneumoview.render import BOX_SET_COLOURS

    w = make_window(both_sources_settings())
    open_and_wait(qtbot, w, small_study)
    findings = w.session.findings
    single = [i for i, src in enumerate(findings.fused.sources) if src != "fused"]
    assert single, "the test models give a final box that only one model found"
    fused = BOX_SET_COLOURS["fused"]
    # Legend (Layers tab swatch), canvas (every final box, whoever found it) and the exported PNG agree.
    swatch = w.layer_controls.checks["fused"].icon().pixmap(12, 12).toImage().pixelColor(6, 6)
    assert (swatch.red(), swatch.green(), swatch.blue()) == fused
    for rect, _label in w.canvas.overlays.box_items("fused"):
        colour = rect.pen().color()
        assert (colour.red(), colour.green(), colour.blue()) == fused
    png = next(p for p in w.export_current(tmp_path / "out") if p.suffix == ".png")
    pixels = np.asarray(Image.open(png).convert("RGB"))
    x, y, bw, bh = (int(round(v)) for v in findings.fused.boxes[0])
    assert tuple(pixels[y + bh // 2, x]) == fused  # the left edge of the first final box

    # The fused box's source confidences: WBF halves a box only one model found.
    i = single[0]
    src = findings.fused.sources[i]
    other = "detector" if src == "segmentation" else "segmentation"
    row = next(r for r in w.findings_panel.rows if r.set == "final" and r.index == i)
    own = dict(row.source_scores)[src]
    assert dict(row.source_scores)[other] is None and row.confidence == pytest.approx(own / 2, abs=1e-4)
    column = COLUMNS.index("Sources")
    item = w.findings_panel.table.item(w.findings_panel.rows.index(row), column)
    expected = {"detector": f"det {own:.2f}", "segmentation": f"seg {own:.2f}"}
    expected[other] = f"{other[:3]} —"
    assert item.text() == f"{expected['detector']}, {expected['segmentation']}"
    assert item.toolTip() == FUSION_TIP and "0.35" in FUSION_TIP


# -- 7. exact status filter --------------------------------------------------------------------------------------


def test_status_filter_is_exact(qtbot, make_window, tmp_path):
    from pneumoview.gui import viewmodel as vm

    study = copy_study(tmp_path / "s", rsna_images(3))
    w = make_window(wait_engine=False)
    w.auto_analyse = False
    with qtbot.waitSignal(w.scanFinished, timeout=30_000):
        w.open_path(study)
    a, b, c = w.browser.image_paths()
    w.browser.set_status(a, vm.FINDING, "1 box")
    w.browser.set_status(b, vm.NO_FINDING, "no box")
    # The browser shows the state's statuses; it keeps none of its own.
    assert w.session.status(a) == (vm.FINDING, "1 box") and w.browser.status_of(a)[0] == vm.FINDING
    w.browser.filter_edit.setText("finding")
    assert w.browser.visible_image_paths() == [a]
    w.browser.filter_edit.setText("No  Finding")
    assert w.browser.visible_image_paths() == [b]
    w.browser.filter_edit.setText(c.stem[:8])  # other text: a name match
    assert w.browser.visible_image_paths() == [c]
    w.browser.filter_edit.setText("")
    assert len(w.browser.visible_image_paths()) == 3


# -- 8. recent folders -------------------------------------------------------------------------------------------


def test_recent_folders_are_absolute_and_listed_once(qtbot, make_window, tmp_path, monkeypatch):
    from pneumoview.settings import Settings, load_settings

    study = copy_study(tmp_path / "s", rsna_images(1))
    w = make_window(wait_engine=False)
    w.auto_analyse = False
    monkeypatch.chdir(tmp_path)
    for spelling in ("s", str(study), "./s/", str(tmp_path / "s" / ".." / "s")):
        with qtbot.waitSignal(w.scanFinished, timeout=30_000):
            w.open_path(spelling)
    assert w.settings.recent_folders == [str(study)]
    assert [a.text() for a in w.recent_menu.actions()] == [str(study)]
    # Settings written by an older version with both spellings load as one absolute entry.
    (tmp_path / "old.json").write_text(json.dumps({"recent_folders": ["s", str(study), "s/"]}))
    assert load_settings(tmp_path / "old.json").recent_folders == [str(study)]
    assert Settings().recent_folders == []


# -- 9. Grad-CAM legend, readout after F, O keeps the view, shortcuts table, threshold form ------------------------


def test_gradcam_colour_bar_and_o_keeps_the_zoom(qtbot, make_window, small_study):
    w = make_window()
    open_and_wait(qtbot, w, small_study)
    ov, c = w.canvas.overlays, w.canvas
    assert ov.saliency_bar.opacity() == 0.0
    w.session.set_layer_visible("saliency", True)  # the state owns the layers; the canvas renders them
    # Showing the layer starts the classifier's Grad-CAM; let it end here, not during the next test.
    qtbot.waitUntil(lambda: "saliency" not in w.jobs or w.jobs["saliency"].done, timeout=60_000)
    ov.set_saliency(np.linspace(0, 1, 512 * 512, dtype=np.float32).reshape(512, 512))
    assert ov.saliency_bar.opacity() == 1.0 and "Grad-CAM" in ov.saliency_bar.toolTip()
    w.session.set_layer_visible("saliency", False)
    assert ov.saliency_bar.opacity() == 0.0

    assert ov.colour_bar.opacity() == 1.0  # the heat map's bar is shown
    c.zoom(2.0)
    # Background work that finishes late on a loaded machine (saliency, stored results) may still resize the
    # window's docks; compare against a settled view.
    before = None
    for _ in range(40):
        qtbot.wait(50)
        now = c.view.viewRange()
        if now == before:
            break
        before = now
    qtbot.keyClick(c, "o")
    qtbot.wait(100)
    assert ov.colour_bar.opacity() == 0.0
    np.testing.assert_allclose(c.view.viewRange(), before)
    qtbot.keyClick(c, "o")


def test_pixel_readout_follows_fit(qtbot, make_window, small_study):
    w = make_window()
    open_and_wait(qtbot, w, small_study)
    c = w.canvas
    c.zoom(4.0)
    qtbot.wait(50)
    scene_pos = c.view.mapViewToScene(c.view.viewRect().center() + c.view.viewRect().topLeft()) / 2
    c.scene().sigMouseMoved.emit(scene_pos)
    zoomed = w.readout.text()
    assert zoomed.startswith("x ")
    qtbot.keyClick(c, "f")
    qtbot.wait(50)
    p = c.view.mapSceneToView(scene_pos)
    assert w.readout.text() != zoomed
    assert w.readout.text().startswith(f"x {int(np.floor(p.x()))}  y {int(np.floor(p.y()))}")


def test_shortcuts_table_fits_without_sideways_scrolling(qtbot, make_window):
    from pneumoview.gui import window_actions
    from pneumoview.gui.dialogs import ShortcutsDialog

    w = make_window(wait_engine=False)
    dialog = ShortcutsDialog(window_actions.shortcut_rows(w.actions_by_key), w)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.table.horizontalScrollBar().maximum() == 0
    keys = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
    assert "T" in keys  # the new patient-info toggle is listed


def test_threshold_form_has_no_empty_row(qtbot):
    from PySide6 import QtWidgets

    from pneumoview.gui.threshold_panel import ThresholdPanel

    panel = ThresholdPanel()
    qtbot.addWidget(panel)
    panel.show()
    form = panel.layout()
    for r in range(form.rowCount()):
        label = form.itemAt(r, QtWidgets.QFormLayout.ItemRole.LabelRole)
        field = form.itemAt(r, QtWidgets.QFormLayout.ItemRole.FieldRole)
        label_text = label.widget().text() if label is not None and label.widget() is not None else ""
        field_widget = field.widget() if field is not None else None
        empty_field = isinstance(field_widget, QtWidgets.QLabel) and not field_widget.text()
        assert not (label_text == "" and empty_field), f"row {r} is empty"
    assert panel.area_label.isHidden()
    panel.set_image_geometry((1024, 1024), (0.168, 0.168))
    assert not panel.area_label.isHidden() and "mm²" in panel.area_label.text()
    assert os.environ["QT_QPA_PLATFORM"]  # set by the GUI fixtures before Qt loads


def test_a_settings_file_that_cannot_be_saved_is_reported(
    qtbot, make_window, config_dir, monkeypatch, tmp_path
):
    blocked = tmp_path / "config-is-a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("PNEUMOVIEW_CONFIG_DIR", str(blocked / "sub"))
    w = make_window(wait_engine=False)
    w.threshold_panel.sliders["gate"].setValue(0.42)
    qtbot.waitUntil(lambda: w.error_dialog is not None, timeout=5000)
    assert w.error_dialog.windowTitle() == "Settings not saved"
    assert str(blocked / "sub") in w.error_dialog.text() and "until you quit" in w.error_dialog.text()
