"""Import boundaries: the core (and the CLI's non-model commands) never load torch or Qt.

Rules (from the architecture):
* nothing outside ``pneumoview/gui`` imports Qt (PySide6, pyqtgraph, superqt, qtpy, shiboken6);
* torch/torchvision are imported only in ``pneumoview/inference`` and ``pneumoview/training``;
* core modules do not import ``pneumoview.gui`` (only ``pneumoview.__main__`` does, lazily, to start the
  viewer).

The grep checks cover every source file; the subprocess check imports every core module (and runs
``pneumoview scan``) in a fresh interpreter and inspects ``sys.modules``, which also catches indirect imports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pneumoview"
DATA = ROOT.parent / "shared" / "data"

QT_ROOTS = ("PySide6", "pyqtgraph", "superqt", "qtpy", "shiboken6")
TORCH_ROOTS = ("torch", "torchvision")
# Sub-packages allowed to import the heavy dependencies (at import time or lazily).
MODEL_PACKAGES = ("inference", "training")
GUI_PACKAGES = ("gui",)
# Files (relative to pneumoview/) allowed to import torch lazily, inside functions only: `pneumoview predict`
# sets up torch.distributed itself. Keep this list short; prefer moving such code into pneumoview/inference.
LAZY_TORCH_ALLOWED = ("commands/predict.py",)
# Core modules that must exist and stay light; every other module outside the packages above is added.
REQUIRED_CORE = (
    "pneumoview",
    "pneumoview.__main__",
    "pneumoview.cli",
    "pneumoview.errors",
    "pneumoview.identity",
    "pneumoview.imaging",
    "pneumoview.study_index",
    "pneumoview.types",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(*, exclude: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in exclude and "__pycache__" not in p.parts
    )


def _imports(path: Path, roots: tuple[str, ...], *, top_level_only: bool = False) -> list[str]:
    """``file:line`` of each statement importing a module under one of ``roots``: indented ones (inside
    functions) too, unless ``top_level_only``."""
    indent = "" if top_level_only else r"[ \t]*"
    names = "|".join(map(re.escape, roots))
    pattern = re.compile(rf"^{indent}(?:import|from)\s+({names})(?:[.\s]|$)", re.MULTILINE)
    text = path.read_text(encoding="utf-8")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return [f"{shown}:{text.count(chr(10), 0, m.start()) + 1}" for m in pattern.finditer(text)]


def core_modules() -> list[str]:
    names = {_module_name(p) for p in _sources(exclude=MODEL_PACKAGES + GUI_PACKAGES)}
    return sorted(names | set(REQUIRED_CORE))


def test_required_core_modules_exist():
    names = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    assert set(REQUIRED_CORE) <= names, f"missing: {sorted(set(REQUIRED_CORE) - names)}"


def test_no_qt_imports_outside_gui():
    offenders = [hit for p in _sources(exclude=GUI_PACKAGES) for hit in _imports(p, QT_ROOTS)]
    assert offenders == [], f"Qt imported outside pneumoview/gui: {offenders}"


def test_torch_only_in_inference_and_training():
    offenders = []
    for path in _sources(exclude=MODEL_PACKAGES):
        hits = _imports(path, TORCH_ROOTS)
        if path.relative_to(PACKAGE).as_posix() in LAZY_TORCH_ALLOWED:
            hits = _imports(path, TORCH_ROOTS, top_level_only=True)
        offenders += hits
    assert offenders == [], (
        f"torch imported outside pneumoview/inference and pneumoview/training: {offenders}"
    )


def test_core_does_not_import_the_gui():
    sources = [p for p in _sources(exclude=MODEL_PACKAGES + GUI_PACKAGES) if p.name != "__main__.py"]
    offenders = [hit for p in sources for hit in _imports(p, ("pneumoview.gui",))]
    offenders += [
        f"{p.relative_to(ROOT)}"
        for p in sources
        if re.search(r"from\s+pneumoview\s+import\s+.*\bgui\b", p.read_text())
    ]
    assert offenders == [], f"core modules importing pneumoview.gui: {offenders}"


def test_the_grep_checks_can_fail(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text(
        "import os\nfrom PySide6.QtCore import Qt\ndef f():\n    import torch\nimport torchvision.ops\n"
        "import torchmetrics\n# import torch in a comment\n"
    )
    assert _imports(sample, QT_ROOTS) == [f"{sample}:2"]
    assert _imports(sample, TORCH_ROOTS) == [f"{sample}:4", f"{sample}:5"]
    assert _imports(sample, TORCH_ROOTS, top_level_only=True) == [f"{sample}:5"]


def test_core_and_scan_load_neither_torch_nor_qt():
    modules = core_modules()
    folder = DATA / "dicom"
    code = f"""
import contextlib, importlib, io, json, sys
for name in {modules!r}:
    importlib.import_module(name)
from pneumoview.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    rc = main(["scan", {str(folder)!r}, "--json"])
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(["--help"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {QT_ROOTS + TORCH_ROOTS!r})
print(json.dumps({{"rc": rc, "entries": len(json.loads(out.getvalue())["entries"]), "heavy": heavy}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0 and result["entries"] > 50
    assert result["heavy"] == [], f"torch/Qt loaded by the core or `pneumoview scan`: {result['heavy']}"
