"""The source install without PyTorch (as the desktop app is): every feature that needs torch names it.

Each test runs PneumoView in a child process whose ``sys.meta_path`` starts with a finder that refuses to import the
named packages (torch and torchvision; also onnxruntime and openvino for "no runtime at all"), as if they were not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"
NO_TORCH = "torch,torchvision"
NO_RUNTIME = "torch,torchvision,onnxruntime,openvino"

# argv[1] is the comma-separated list of packages to refuse; it is removed before PneumoView reads sys.argv.
BLOCKER = """
import sys
class _Refuse:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name)
        return None
sys.meta_path.insert(0, _Refuse(set(sys.argv.pop(1).split(","))))
"""

CLI = BLOCKER + "from pneumoview.__main__ import main\nsys.exit(main())\n"

# Starts the real main window offscreen, waits for the engine and the first image, prints what the user sees.
VIEWER = (
    BLOCKER
    + """
import json, time
from pathlib import Path
from PySide6 import QtWidgets
app = QtWidgets.QApplication(["pneumoview"])
from pneumoview.gui.main_window import MainWindow
from pneumoview.settings import load_settings
w = MainWindow(load_settings(), device="cpu", models_dir=sys.argv[1])
w.show()
shown = []
w.imageShown.connect(shown.append)
w.start_engine()
w.open_path(Path(sys.argv[2]))
def settle(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
deadline = time.monotonic() + 120
while (w.engine_info is None or not shown or w.session.image is None) and time.monotonic() < deadline:
    settle(0.05)
settle(1.0)  # the browser may select the first image again once the scan has finished
while w.session.image is None and time.monotonic() < deadline:
    settle(0.05)
# Under load the scan can finish (and re-show the first image, clearing its notes) after the request: ask again
# until the notes stay.
while time.monotonic() < deadline:
    w.analyse_current()
    settle(0.5)
    if w.findings_panel.notes.text():
        break
saliency = w.actions_by_key["saliency"]
print(json.dumps({
    "engine_ready": w.engine_info is not None,
    "stages": list(w.engine_info.stages) if w.engine_info else None,
    "models_label": w.models_label.text(),
    "models_tooltip": w.models_label.toolTip(),
    "notes": w.findings_panel.notes.text(),
    "status": w.statusBar().currentMessage(),
    "saliency_enabled": saliency.isEnabled(),
    "saliency_tooltip": saliency.toolTip(),
    "saliency_check_enabled": w.layer_controls.checks["saliency"].isEnabled(),
}))
w.close()
"""
)


def run_blocked(
    code: str, blocked: str, *args: str, tmp_path: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "QT_QPA_PLATFORM": "offscreen",
        "PNEUMOVIEW_CONFIG_DIR": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),  # no per-user models or ONNX cache
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    for name in ("PNEUMOVIEW_MODELS", "PNEUMOVIEW_RUNTIME", "PNEUMOVIEW_DEVICE"):  # conftest pins the runtime
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", code, blocked, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=timeout,
    )


def test_the_blocker_really_hides_torch(tmp_path: Path):
    r = run_blocked(BLOCKER + "import torch\n", NO_TORCH, tmp_path=tmp_path)
    assert r.returncode == 1 and "No module named 'torch' (refused by the test)" in r.stderr


def test_train_without_torch_is_one_line_naming_pytorch(tmp_path: Path):
    r = run_blocked(CLI, NO_TORCH, "train", "classifier", "--images", str(SAMPLE), tmp_path=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # no traceback
    assert lines[0].startswith("pneumoview train: error: training needs PyTorch: pip install torch")
    assert not (tmp_path / "data").exists()  # nothing was written


def _viewer(blocked: str, tmp_path: Path) -> dict:
    r = run_blocked(VIEWER, blocked, str(tmp_path / "no-models"), str(SAMPLE), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["engine_ready"]
    return seen


@pytest.mark.gui
def test_viewer_without_torch_disables_gradcam_and_says_why_analysis_is_off(tmp_path: Path):
    seen = _viewer(NO_TORCH, tmp_path)
    assert not seen["saliency_enabled"] and not seen["saliency_check_enabled"]
    assert seen["saliency_tooltip"].startswith("Grad-CAM needs PyTorch: pip install torch")
    # The repository's models folder has .pt weights but no ONNX export, and there is no torch to make one: the
    # viewer names that, not "no model is installed".
    assert seen["stages"] == []
    for shown in (seen["notes"], seen["status"], seen["models_tooltip"]):
        assert "no ONNX export of rsna3-classifier" in shown and "export-onnx" in shown, shown
        assert "no model is installed" not in shown.lower()


@pytest.mark.gui
def test_viewer_without_any_runtime_names_the_missing_runtime(tmp_path: Path):
    seen = _viewer(NO_RUNTIME, tmp_path)
    assert seen["stages"] == [] and not seen["saliency_enabled"]
    for shown in (seen["notes"], seen["status"], seen["models_tooltip"]):
        assert "no model runtime is installed" in shown, shown
        assert "onnxruntime" in shown and "pip install torch" in shown, shown


def test_predict_without_any_runtime_names_the_missing_runtime(tmp_path: Path):
    r = run_blocked(
        CLI, NO_RUNTIME, "predict", str(SAMPLE), "--out", str(tmp_path / "out"), tmp_path=tmp_path
    )
    assert r.returncode == 2
    assert "cannot set up the models: no model runtime is installed" in r.stderr, r.stderr
    assert "onnxruntime" in r.stderr and "pip install torch" in r.stderr
    assert "Traceback" not in r.stderr


def test_models_lists_a_model_shipped_as_its_onnx_export_only(tmp_path: Path, monkeypatch, capsys):
    """The app's models folder: the manifest and verified ONNX exports, no .pt (the listing verifies, never loads)."""
    from pneumoview.cli import main
    from pneumoview.inference import manifest as manifest_module
    from pneumoview.inference.manifest import load_manifest
    from pneumoview.inference.onnx_artifacts import shipped_path, write_sidecar

    empty = tmp_path / "empty"
    monkeypatch.setattr(manifest_module, "repository_models_dir", lambda: empty)
    monkeypatch.setattr(manifest_module, "user_models_dir", lambda: empty)
    monkeypatch.delenv("PNEUMOVIEW_MODELS", raising=False)
    monkeypatch.setenv("PNEUMOVIEW_CACHE_DIR", str(tmp_path / "cache"))  # no exports cached by earlier runs
    models = tmp_path / "app-models"
    models.mkdir()
    (models / "manifest.toml").write_bytes((ROOT / "models" / "manifest.toml").read_bytes())
    specs = load_manifest([models], check_builders=False).models
    for ident in ("rsna3-classifier", "detector"):
        path = shipped_path(specs[ident], models)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"an ONNX file " + ident.encode())
        write_sidecar(path, specs[ident], opset=17, torch_version="2.x")
    # The detector's export is then replaced: its sidecar no longer matches the file.
    shipped_path(specs["detector"], models).write_bytes(b"something else")

    assert main(["models", "--json", "--models-dir", str(models)]) == 0
    listed = {m["id"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["rsna3-classifier"]["status"] == "ok"
    assert listed["rsna3-classifier"]["file"] == str(shipped_path(specs["rsna3-classifier"], models))
    assert listed["detector"]["status"] == "not installed"
    assert listed["seg-unet-resnet18"]["status"] == "not installed"
