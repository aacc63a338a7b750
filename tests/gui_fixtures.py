"""Fixtures for the viewer's tests (a pytest plugin: ``pytest_plugins = ("tests.gui_fixtures",)``): offscreen Qt,
the flip-equivariant test models, small real studies, a MainWindow factory.

Loading it sets ``QT_QPA_PLATFORM=offscreen`` when unset, before anything imports Qt.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests.gui_helpers import BAD_PIXELS, copy_study, rsna_images  # noqa: E402
from tests.model_fixtures import equivariant_models_dir  # noqa: E402  (registers the test builders)


@pytest.fixture(scope="session")
def test_models(tmp_path_factory) -> Path:
    """A models folder with the tiny flip-equivariant classifier, segmentation ensemble and detector."""
    return equivariant_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    """A private settings folder (``$PNEUMOVIEW_CONFIG_DIR``) so tests never touch the user's settings."""
    folder = tmp_path / "config"
    monkeypatch.setenv("PNEUMOVIEW_CONFIG_DIR", str(folder))
    monkeypatch.delenv("PNEUMOVIEW_MODELS", raising=False)
    monkeypatch.delenv("PNEUMOVIEW_DEVICE", raising=False)
    return folder


@pytest.fixture
def small_study(tmp_path) -> Path:
    """Three real RSNA radiographs (512 px JPEG), a garbage file and a DICOM whose pixel data is broken."""
    study = copy_study(tmp_path / "study", rsna_images(3), {"notes.bin": b"\x00garbage" * 20})
    shutil.copy2(BAD_PIXELS, study / "broken.dcm")
    return study


@pytest.fixture
def make_window(qtbot, config_dir, test_models):
    """``make_window(settings=None, models_dir=...)``: a shown MainWindow whose engine has loaded."""
    import pyqtgraph as pg

    from pneumoview.gui.main_window import MainWindow
    from pneumoview.settings import load_settings

    pg.setConfigOptions(imageAxisOrder="row-major")
    windows = []

    def make(settings=None, models_dir: Path | None = test_models, wait_engine: bool = True):
        w = MainWindow(
            settings or load_settings(), device="cpu", models_dir=str(models_dir) if models_dir else None
        )
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        if wait_engine:
            with qtbot.waitSignal(w.engineReady, timeout=60_000):
                w.start_engine()
        return w

    yield make
    for w in windows:
        w.close()
