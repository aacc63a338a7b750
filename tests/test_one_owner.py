"""Each piece of shared vocabulary is defined once (issue #14): the stage names, the default model selection, the
RSNA class names; the engine hands out models through a public method; and an import inside a function says why
it is lazy. Read from the source with ``ast`` (string constants, not docstrings or comments)."""

from __future__ import annotations

import ast
from functools import cache
from itertools import permutations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pneumoview"


@cache
def _sources() -> dict[str, ast.Module]:
    return {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text("utf-8")) for p in PACKAGE.rglob("*.py")}


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _where(predicate) -> set[str]:
    found = set()
    for rel, tree in _sources().items():
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if id(node) not in skip and predicate(node):
                found.add(rel)
    return found


def test_stage_names_defined_once():
    stages = [("classify", "segment", "detect")]
    orders = {tuple(p) for p in permutations(stages[0])}

    def is_stage_tuple(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Tuple)
            and tuple(e.value for e in node.elts if isinstance(e, ast.Constant)) in orders
        )

    assert _where(is_stage_tuple) == {"types.py"}


def test_default_models_and_rsna_classes_defined_once():
    def const(text: str):
        return lambda node: isinstance(node, ast.Constant) and node.value == text

    assert _where(const("rsna3-classifier")) == {"types.py"}
    assert _where(const("seg-ensemble")) - {"training/cli.py", "training/segmenter.py"} == {"types.py"}
    # training names its ensemble output by default like the shipped one; that is the training recipe's choice.
    assert _where(const("No Lung Opacity / Not Normal")) == {"rsna_labels.py"}
    assert _where(const("Lung Opacity")) == {"rsna_labels.py"}


def test_saliency_uses_the_engines_public_model_access():
    text = (PACKAGE / "inference" / "saliency.py").read_text("utf-8")
    assert "engine._" not in text and "engine.torch_model(" in text


def test_imports_inside_functions_say_why():
    missing = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        lines = path.read_text("utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2]
                    said = any("#" in line for line in lines[node.lineno - 1 : node.end_lineno])
                    if not said and "# lazy:" not in above:
                        missing.append(f"{rel}:{node.lineno}: {here.strip()}")
    assert not missing, "move these to the top, or say why they are lazy (# lazy: …):\n" + "\n".join(missing)
