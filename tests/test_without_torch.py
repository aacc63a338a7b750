"""The source install without PyTorch (as the desktop app is): every feature that needs torch names it.

Each test runs PneumoView in a child process whose ``sys.meta_path`` starts with a finder that refuses to import the
named packages (torch and torchvision; also onnxruntime for "no runtime at all"), as if they were not installed.
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
NO_RUNTIME = "torch,torchvision,onnxruntime"

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
deadline = time.monotonic() + 120
while (w.engine_info is None or not shown) and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
app.processEvents()
w.analyse_current()
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
    env.pop("PNEUMOVIEW_MODELS", None)
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


@pytest.mark.gui
def test_viewer_without_torch_disables_gradcam_and_says_why(tmp_path: Path):
    r = run_blocked(VIEWER, NO_TORCH, str(tmp_path / "no-models"), str(SAMPLE), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["engine_ready"]
    assert not seen["saliency_enabled"] and not seen["saliency_check_enabled"]
    assert seen["saliency_tooltip"].startswith("Grad-CAM needs PyTorch: pip install torch")
