"""Every third-party package that pneumoview/ imports directly is declared in pyproject.toml's dependencies
(a package that only arrives as somebody else's dependency can disappear with their next release)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pneumoview"


def _imported_roots() -> dict[str, Path]:
    """Top-level names of absolute imports anywhere in the package (lazy ones included) → one file using it."""
    roots: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                roots.setdefault(name.split(".")[0], path)
    return roots


def _declared() -> set[str]:
    """Distribution names of [project] dependencies and of the optional extras (an optional backend such as
    ONNX Runtime is imported only when installed, and is declared in its extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps.extend(extra)
    return {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def test_third_party_imports_are_declared():
    dists = packages_distributions()
    declared = _declared()
    missing = []
    for root, path in _imported_roots().items():
        if root == "pneumoview" or root in sys.stdlib_module_names:
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(root, [])}
        assert owners, f"{root} (imported in {path.relative_to(ROOT)}) is not installed in this environment"
        if not owners & declared:
            missing.append(f"{root} ({', '.join(sorted(owners))}) imported in {path.relative_to(ROOT)}")
    assert not missing, "not declared in [project] dependencies: " + "; ".join(missing)


def test_the_check_sees_scipy_and_pyside():
    """The scan finds the imports it is meant to judge (scipy was the undeclared one; PySide6 maps to
    PySide6-Essentials)."""
    roots = _imported_roots()
    assert {"scipy", "PySide6", "skimage", "pydicom", "torch"} <= set(roots)
    assert "pyside6-essentials" in {d.lower().replace("_", "-") for d in packages_distributions()["PySide6"]}
