"""Settings: JSON round trip, the config-folder override, and files that must never block start-up."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoview.settings import (
    CONFIG_DIR_ENV,
    Settings,
    config_dir,
    load_settings,
    save_settings,
    settings_path,
)
from pneumoview.thresholds import Thresholds


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def test_env_overrides_the_config_folder(cfg):
    assert config_dir() == cfg
    assert settings_path() == cfg / "settings.json"


def test_missing_file_gives_defaults(cfg):
    s = load_settings()
    assert s == Settings()
    assert s.device == "auto"
    assert s.include_identifiers_in_exports is False
    assert s.first_run_done is False
    assert s.get_thresholds() == Thresholds()


def test_round_trip(cfg):
    s = Settings(
        device="cpu", models_dir="/m", include_identifiers_in_exports=True, first_run_done=True, tta=False
    )
    s.set_thresholds(Thresholds(det_score=0.7, fusion="nms"))
    s.overlay_opacity["heatmap"] = 0.8
    s.overlay_visible["saliency"] = True
    s.add_recent_folder("/a")
    s.add_recent_folder("/b")
    s.add_recent_folder("/a")
    path = save_settings(s)
    assert path == cfg / "settings.json"
    assert json.loads(path.read_text())["device"] == "cpu"
    back = load_settings()
    assert back == s
    assert back.recent_folders == [str(Path("/a")), str(Path("/b"))]
    assert back.get_thresholds() == Thresholds(det_score=0.7, fusion="nms")
    assert not list(cfg.glob(".*.tmp")), "the temporary file must be gone after an atomic write"


def test_recent_folders_are_capped():
    s = Settings()
    for i in range(15):
        s.add_recent_folder(f"/f{i}")
    assert len(s.recent_folders) == 10
    assert s.recent_folders[0] == str(Path("/f14"))


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b"", b"null"],
    ids=["bad-json", "binary", "list", "empty", "null"],
)
def test_corrupt_file_warns_and_gives_defaults(cfg, caplog, content):
    cfg.mkdir(parents=True)
    (cfg / "settings.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="pneumoview.settings"):
        s = load_settings()
    assert s == Settings()
    assert caplog.records, "a corrupt settings file must be reported in the log"


def test_bad_fields_fall_back_one_by_one(cfg, caplog):
    cfg.mkdir(parents=True)
    (cfg / "settings.json").write_text(
        json.dumps(
            {
                "device": "tpu",
                "models_dir": 5,
                "thresholds": {"det_score": 7},
                "recent_folders": "/x",
                "overlay_opacity": {"heatmap": 2.0, "fused": 0.3, "nonsense": 1},
                "overlay_visible": {"mask_fill": True},
                "include_identifiers_in_exports": "yes",
                "first_run_done": True,
                "tta": "off",
                "mystery": 1,
            }
        )
    )
    with caplog.at_level(logging.WARNING, logger="pneumoview.settings"):
        s = load_settings()
    d = Settings()
    assert s.device == d.device
    assert s.models_dir == d.models_dir
    assert s.thresholds == d.thresholds
    assert s.recent_folders == []
    assert s.overlay_opacity["heatmap"] == d.overlay_opacity["heatmap"]
    assert s.overlay_opacity["fused"] == 0.3
    assert "nonsense" not in s.overlay_opacity
    assert s.overlay_visible["mask_fill"] is True
    assert s.include_identifiers_in_exports is False
    assert s.first_run_done is True  # the valid field survives
    assert s.tta is True
    text = caplog.text
    for name in ("device", "thresholds", "mystery", "include_identifiers_in_exports", "tta"):
        assert name in text


def test_unreadable_folder_does_not_raise(tmp_path, monkeypatch, caplog):
    # A settings "file" that is a folder cannot be read or replaced: both calls warn instead of raising.
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    (tmp_path / "settings.json").mkdir()
    with caplog.at_level(logging.WARNING, logger="pneumoview.settings"):
        assert load_settings() == Settings()
        assert save_settings(Settings()) is None
    assert len(caplog.records) >= 2


def test_invalid_thresholds_in_memory_fall_back():
    s = Settings(thresholds={"gate": -1})
    assert s.get_thresholds() == Thresholds()


def test_settings_module_is_qt_and_torch_free():
    code = (
        "import sys, pneumoview.settings as s; s.load_settings(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'pyqtgraph', 'superqt')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
