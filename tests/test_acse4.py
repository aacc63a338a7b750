"""Seed 002's four classes: the layout tool, the fixed validation split, the shipped acse4-classifier, per-class
probability columns in findings.csv, and `pneumoview evaluate --class-folders`, on real radiographs."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from pneumoview.cli import main
from pneumoview.errors import ManifestError
from pneumoview.inference.manifest import parse_manifest, repository_models_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ACSE4 = ("covid", "lung_opacity", "pneumonia", "normal")


def _tool():
    if "make_acse4_layout" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "make_acse4_layout", ROOT / "tools" / "make_acse4_layout.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_acse4_layout"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["make_acse4_layout"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory, shared_data) -> Path:
    out = tmp_path_factory.mktemp("acse4") / "layout"
    assert _tool().main(["--data", str(shared_data), "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_layout_splits_by_patient_and_links_every_image(layout: Path):
    rows = _rows(layout / "index.csv")
    assert len(rows) == 99 + 149 + 309 + 489 + 420
    sides = defaultdict(set)
    for r in rows:
        if r["nih_patient"]:
            sides[r["nih_patient"]].add(r["split"])
        link = layout / r["file"]
        assert link.is_symlink() and link.resolve().is_file()
        assert link.parent.name == r["acse4_class"] and link.parent.parent.name == r["split"]
    assert all(len(s) == 1 for s in sides.values()), "a patient has images on both sides"
    # COVID files have no patient: split by file, about a fifth held out.
    covid = [r for r in rows if r["acse4_class"] == "covid"]
    assert not any(r["nih_patient"] for r in covid)
    assert 15 <= sum(r["split"] == "val" for r in covid) <= 25
    for klass in ACSE4:
        assert any((layout / "val" / klass).iterdir()) and any((layout / "train" / klass).iterdir())


def test_layout_keeps_the_shipped_rsna_split_sides(layout: Path, shared_data: Path):
    """A model started from rsna3-classifier must never have trained on an acse4 validation patient."""
    rsna_train, rsna_val = _tool().rsna_val_patients(shared_data / "rsna")
    rows = _rows(layout / "index.csv")
    val_patients = {r["nih_patient"] for r in rows if r["split"] == "val" and r["nih_patient"]}
    train_patients = {r["nih_patient"] for r in rows if r["split"] == "train" and r["nih_patient"]}
    assert not val_patients & rsna_train
    assert not train_patients & rsna_val
    assert rsna_val & val_patients  # the RSNA validation patients are there


def test_layout_is_deterministic_and_refuses_the_repository(layout: Path, shared_data: Path, tmp_path: Path):
    again = tmp_path / "again"
    _tool().build(shared_data, again)
    assert (again / "index.csv").read_text() == (layout / "index.csv").read_text()
    assert _tool().main(["--data", str(shared_data), "--out", str(ROOT / "acse4-layout")]) == 2
    assert not (ROOT / "acse4-layout").exists()


def test_fixed_validation_split_refuses_a_patient_on_both_sides(tmp_path: Path):
    from pneumoview.training.splits import fixed_split

    split = fixed_split(["a", "a", "b", "c"], [False, False, True, False], "--val-images")
    assert split.val.tolist() == [2] and split.train.tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="patients have images in both training and validation"):
        fixed_split(["a", "b", "a"], [False, True, True], "--val-images")


def test_train_uses_the_validation_folder(layout: Path, tmp_path: Path):
    """`train classifier --val-images` validates on exactly that folder and records it in the manifest."""
    import tomllib

    small = tmp_path / "small"
    for side, n in (("train", 4), ("val", 2)):
        for klass in ACSE4:
            (small / side / klass).mkdir(parents=True)
            for p in sorted((layout / side / klass).iterdir())[:n]:
                (small / side / klass / p.name).symlink_to(p.resolve())
    out = tmp_path / "models"
    code = main([
        "train", "classifier", "--recipe", "seed002", "--images", str(small / "train"), "--val-images",
        str(small / "val"), "--index", str(layout / "index.csv"), "--out", str(out), "--size", "64",
        "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--workers", "0", "--no-progress", "--id", "t4",
    ])  # fmt: skip
    assert code == 0
    entry = tomllib.loads((out / "manifest.toml").read_text())["model"][0]
    assert entry["training"]["val_images"] == 8 and entry["training"]["train_images"] == 16
    assert "validation fixed by the data" in entry["training"]["split"]
    assert entry["classes"] == list(ACSE4)
    assert entry["gate_classes"] == ["covid", "lung_opacity", "pneumonia"]


def test_manifest_gate_classes_must_be_classes():
    text = (repository_models_dir() / "manifest.toml").read_text(encoding="utf-8")
    models, _ = parse_manifest(text)
    spec = next(m for m in models if m.id == "acse4-classifier")
    assert spec.gate_names == ("covid", "lung_opacity", "pneumonia")
    bad = text.replace(
        'gate_classes = ["covid", "lung_opacity", "pneumonia"]', 'gate_classes = ["covid", "flu"]'
    )
    assert bad != text
    with pytest.raises(ManifestError, match="gate_classes"):
        parse_manifest(bad)
    rsna3 = next(m for m in models if m.id == "rsna3-classifier")
    assert rsna3.gate_names == ("Lung Opacity",)


# -- the shipped model ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acse4_engine():
    from pneumoview.inference.engine import Engine, StageSelection

    return Engine(
        device="cpu", selection=StageSelection(classify="acse4-classifier", segment=None, detect=None)
    )


def test_shipped_acse4_classifier_is_verified_small_and_gives_four_probabilities(acse4_engine, shared_data):
    from pneumoview.imaging import load_image

    spec = acse4_engine.manifest.model("acse4-classifier")
    weights = repository_models_dir() / spec.weights
    assert weights.stat().st_size <= 50 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == spec.sha256
    assert spec.classes == ACSE4
    for key in ("auc_covid", "auc_lung_opacity", "auc_pneumonia", "auc_normal", "cross_source_covid_auc"):
        assert 0.0 <= spec.metrics[key] <= 1.0
    covid = sorted((shared_data / "acse4" / "covid").iterdir())[0]
    res = acse4_engine.analyze(load_image(covid), stages=("classify",))
    assert res.class_names == ACSE4 and res.class_probs.shape == (4,)
    assert abs(float(res.class_probs.sum()) - 1.0) < 1e-4
    assert res.gate_classes == ("covid", "lung_opacity", "pneumonia")
    assert res.p_opacity == pytest.approx(1.0 - float(res.class_probs[3]), abs=1e-4)


def test_default_gate_is_still_rsna3():
    from pneumoview.inference.engine import DEFAULT_SELECTION

    assert DEFAULT_SELECTION["classify"] == "rsna3-classifier"


def test_models_lists_acse4_with_its_metrics(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(i for i, t in enumerate(out.splitlines()) if t.startswith("acse4-classifier"))
    following = "\n".join(out.splitlines()[line : line + 4])
    assert "cross_source_covid_auc" in following and "auc_covid" in following


# -- predict and evaluate --------------------------------------------------------------------------------------


def test_predict_with_acse4_writes_a_column_per_class(tmp_path: Path, shared_data: Path):
    src = tmp_path / "in"
    src.mkdir()
    covid = sorted((shared_data / "acse4" / "covid").iterdir())[:2]
    for p in covid:
        (src / p.name).symlink_to(p)
    out = tmp_path / "out"
    code = main([
        "predict", str(src), "--out", str(out), "--classifier", "acse4-classifier", "--segmenter", "none",
        "--device", "cpu", "--no-png", "--quiet",
    ])  # fmt: skip
    assert code == 0
    with open(out / "findings.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = list(reader)
    for c in ACSE4:
        assert f"p_{c}" in header
    assert "p_not_normal_no_opacity" not in header
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in ACSE4]
        assert sum(probs) == pytest.approx(1.0, abs=2e-3)
        assert r["gate_classes"] == "covid+lung_opacity+pneumonia"
        assert float(r["p_opacity"]) == pytest.approx(1.0 - float(r["p_normal"]), abs=2e-3)
        if r["gated"] == "yes":
            assert float(r["p_opacity"]) < 0.3


def test_findings_header_for_rsna3_names_its_three_classes(tmp_path: Path):
    from pneumoview.export import class_column, write_findings_csv

    assert class_column("No Lung Opacity / Not Normal") == "p_no_lung_opacity_not_normal"
    rows = [
        {"image_id": "a", "cols": "512", "p_normal": "0.2", "p_no_lung_opacity_not_normal": "0.3",
         "p_lung_opacity": "0.5", "p_opacity": "0.5", "gate_classes": "Lung Opacity"},
        {"image_id": "b", "cols": "512", "p_covid": "0.1", "p_opacity": "0.9"},
    ]  # fmt: skip
    header = next(csv.reader(write_findings_csv(rows, tmp_path / "f.csv").open()))
    at = header.index("cols")
    assert header[at + 1 : at + 6] == [
        "p_normal", "p_no_lung_opacity_not_normal", "p_lung_opacity", "p_covid", "p_opacity",
    ]  # fmt: skip


def test_evaluate_class_folders_reports_per_class_auc(layout: Path, tmp_path: Path, capsys):
    small = tmp_path / "cf"
    for klass in ACSE4:
        (small / klass).mkdir(parents=True)
        for p in sorted((layout / "val" / klass).iterdir())[:4]:
            (small / klass / p.name).symlink_to(p.resolve())
    per_file = tmp_path / "per_file.csv"
    code = main([
        "evaluate", "--class-folders", str(small), "--classifier", "acse4-classifier", "--device", "cpu",
        "--per-file", str(per_file),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "one-vs-rest" in out and "confusion matrix" in out
    for klass in ACSE4:
        line = next(t for t in out.splitlines() if t.strip().startswith(klass + " "))
        assert float(line.split()[-1]) >= 0.0  # a defined AUC for every class
    rows = _rows(per_file)
    assert len(rows) == 16 and {r["label"] for r in rows} == set(ACSE4)
    # A folder that is not a class of the classifier is a usage error.
    (small / "flu").mkdir()
    (small / "flu" / "x.jpg").symlink_to(sorted((layout / "val" / "covid").iterdir())[0].resolve())
    assert main(["evaluate", "--class-folders", str(small), "--classifier", "acse4-classifier"]) == 2
    assert "flu" in capsys.readouterr().err


def test_evaluate_needs_predictions_or_class_folders(capsys):
    assert main(["evaluate"]) == 2
    assert "--class-folders" in capsys.readouterr().err


def test_model_card_tool_runs_from_a_checkout():
    """The card tool parses its options (its numbers are in the manifest, checked above)."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "acse4_model_card.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "cross-source" in r.stdout
