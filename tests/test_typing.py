"""Types and layers are checked, not hoped: mypy over the package ([tool.mypy]) and the import-linter contracts
([tool.importlinter]) in pyproject.toml both pass, and the contracts cover every top-level module."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pneumoview"
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_mypy_clean():
    # Configuration (python_version, per-module ignore_missing_imports) comes from pyproject.toml.
    r = _run(sys.executable, "-m", "mypy", "pneumoview")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Success: no issues found" in r.stdout


def test_import_contracts_kept():
    r = _run(str(BIN / "lint-imports"), "--no-cache")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def _top_level_modules() -> set[str]:
    names = {f"pneumoview.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {f"pneumoview.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    return names


def test_contracts_name_every_core_module():
    """A new module is covered by the layer rules the day it is added (the lists are explicit)."""
    contracts = {
        c["name"]: c
        for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    }
    modules = _top_level_modules()
    no_gui = set(contracts["core does not import the GUI"]["source_modules"])
    # __main__ starts the viewer (lazily); it is the only core module allowed to import the GUI.
    assert no_gui == modules - {"pneumoview.gui", "pneumoview.__main__"}
    no_torch = set(contracts["torch only in inference and training"]["source_modules"])
    assert no_torch == modules - {"pneumoview.inference", "pneumoview.training"}
