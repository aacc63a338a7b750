"""The viewer with the four-class acse4-classifier: Settings chooses it, the findings panel shows its four classes
and which probability gates the boxes (offscreen Qt, a real COVID-19 radiograph, the shipped models)."""

from __future__ import annotations

import pytest

from tests.gui_helpers import copy_study, open_and_wait

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui
ACSE4 = ("covid", "lung_opacity", "pneumonia", "normal")


def test_findings_panel_shows_the_four_classes_and_the_gate(qtbot, make_window, tmp_path, shared_data):
    from pneumoview.settings import Settings

    covid = sorted((shared_data / "acse4" / "covid").iterdir())[0]
    study = copy_study(tmp_path / "study", [covid])
    w = make_window(Settings(classifier="acse4-classifier"), models_dir=None)
    open_and_wait(qtbot, w, study, timeout=120_000)
    r = w.session.result
    assert r.class_names == ACSE4
    panel = w.findings_panel
    assert list(panel.prob_bars) == list(ACSE4)
    shown = [panel.prob_bars[c].value() / 1000 for c in ACSE4]
    assert shown == pytest.approx([float(p) for p in r.class_probs], abs=1e-3)
    assert sum(shown) == pytest.approx(1.0, abs=5e-3)
    gate = panel.gate_label.text()
    assert "P(covid + lung_opacity + pneumonia) = 1 − P(normal)" in gate
    assert f"{r.p_opacity:.2f}" in gate and f"{w.session.thresholds.gate:.2f}" in gate
    assert panel.gate_label.isVisibleTo(panel)


def test_rsna3_gate_names_lung_opacity(qtbot, make_window, small_study):
    w = make_window()  # the tiny test models: a 3-class rsna3 classifier
    open_and_wait(qtbot, w, small_study)
    assert "P(Lung Opacity) =" in w.findings_panel.gate_label.text()


def test_settings_dialog_chooses_the_classifier(qtbot, config_dir):
    from pneumoview.gui.dialogs import SettingsDialog
    from pneumoview.settings import Settings, load_settings, save_settings

    settings = Settings()
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    ids = [dialog.classifier.itemData(i) for i in range(dialog.classifier.count())]
    assert ids[0] == "rsna3-classifier" and "acse4-classifier" in ids
    assert "covid, lung_opacity, pneumonia, normal" in dialog.classifier.itemText(
        ids.index("acse4-classifier")
    )
    assert dialog.apply_to(settings) is False  # nothing changed
    dialog.classifier.setCurrentIndex(ids.index("acse4-classifier"))
    assert dialog.apply_to(settings) is True  # the engine must reload
    assert settings.classifier == "acse4-classifier"
    save_settings(settings)
    assert load_settings().classifier == "acse4-classifier"


def test_changing_models_drops_cached_results(tmp_path):
    from pneumoview.types import AnalysisResult
    from pneumoview.viewer_state import ViewerState

    s = ViewerState()
    s.select(tmp_path / "a.png")
    s.result = AnalysisResult(image_id="a", image_shape=(4, 4))
    s.remember(s.path, None, s.result)
    generation = s.generation
    s.forget_results()
    assert s.result is None and s.cached(s.path) is None and s.generation > generation
