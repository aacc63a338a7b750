"""The viewer shows header warnings for images that are not adult frontal chest radiographs, and switches the gate
rule from the Thresholds tab (offscreen Qt, real DICOM files, tiny real models)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from tests.gui_helpers import CHEST_DICOM, open_and_wait

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui


def test_lateral_image_shows_a_header_warning_and_a_frontal_one_none(qtbot, make_window, tmp_path: Path):
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy2(CHEST_DICOM, study / "a_frontal.dcm")
    ds = pydicom.dcmread(CHEST_DICOM)
    ds.ViewPosition = "LL"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(study / "b_lateral.dcm")
    w = make_window()
    open_and_wait(qtbot, w, study)
    panel = w.findings_panel
    assert w.session.path.name == "a_frontal.dcm"
    assert panel.suitability.isHidden() and panel.suitability.text() == ""
    with qtbot.waitSignal(w.analysisFinished, timeout=30_000):
        assert w.browser.select_path(study / "b_lateral.dcm")
    assert not panel.suitability.isHidden()
    assert "View Position is LL (left lateral)" in panel.suitability.text()
    assert "adult frontal chest radiographs" in panel.suitability.text()


def test_gate_rule_can_be_switched_in_the_threshold_panel(qtbot, make_window):
    w = make_window()
    panel = w.threshold_panel
    combo = panel.combos["gate_mode"]
    assert [combo.itemText(i) for i in range(combo.count())] == ["hard", "product", "low_confidence"]
    assert combo.currentText() == "hard"
    assert not panel.sliders["gate_box_score"].isEnabled()  # only the low-confidence gate reads it
    combo.setCurrentText("low_confidence")  # the panel edits the state's thresholds at once
    assert w.session.thresholds.gate_mode == "low_confidence"
    assert panel.sliders["gate_box_score"].isEnabled()
    panel.sliders["gate_box_score"].setValue(0.9)
    assert w.session.thresholds.gate_box_score == pytest.approx(0.9)
    assert w.session.thresholds.gate_mode == "low_confidence"


def test_settings_turn_flip_tta_off_and_the_engine_reloads_without_it(qtbot, make_window):
    from pneumoview.gui.dialogs import SettingsDialog
    from pneumoview.settings import load_settings, save_settings

    w = make_window()
    assert w.settings.tta is True and w.engine_info.engine.tta is True  # on by default since 1.3
    dialog = SettingsDialog(w.settings, w)
    qtbot.addWidget(dialog)
    assert dialog.tta.isChecked()
    assert dialog.apply_to(w.settings) is False  # nothing changed
    dialog.tta.setChecked(False)
    assert dialog.apply_to(w.settings) is True  # the engine must reload
    assert w.settings.tta is False
    save_settings(w.settings)
    assert load_settings().tta is False
    with qtbot.waitSignal(w.engineReady, timeout=60_000):
        w.start_engine()
    assert w.engine_info.engine.tta is False
