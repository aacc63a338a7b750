"""`pneumoview predict`, `evaluate`, `tune` and `models` end to end on real radiographs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoview.cli import main
from tests.model_fixtures import equivariant_models_dir
from tests.rsna_fixtures import write_rsna_dicoms

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RSNA = DATA / "rsna"


def _tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return equivariant_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def input_folder(tmp_path: Path) -> Path:
    """RSNA-style DICOMs (made by the sample-study converter from real NIH pixels), real PNG/JPEG, a corrupt file."""
    src = tmp_path / "in"
    (src / "dicom").mkdir(parents=True)
    write_rsna_dicoms(src / "dicom")
    for p in sorted((RSNA / "images-512").glob("*.jpg"))[:2]:
        shutil.copy(p, src / p.name)
    (src / "dicom" / "broken.dcm").write_bytes(b"DICM" * 10 + b"\x00garbage")
    (src / "README.md").write_text("study notes: a document, not an image\n")
    return src


def test_predict_end_to_end(
    models: Path, input_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    before = _tree_digest(input_folder)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(input_folder),
            "--out",
            str(out),
            "--models-dir",
            str(models),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 1  # finished, but one file failed
    assert "1 document file(s) (e.g. README.md) are not images" in capsys.readouterr().out
    assert _tree_digest(input_folder) == before  # input never modified

    with open(out / "submission.csv", newline="") as f:
        sub = list(csv.DictReader(f))
    assert len(sub) == 4 and set(sub[0]) == {"patientId", "PredictionString"}
    rsna_ids = {p.stem for p in (input_folder / "dicom").glob("*.dcm") if p.stem != "broken"}
    rsna_ids |= {p.stem for p in input_folder.glob("*.jpg")}
    assert {r["patientId"] for r in sub} == rsna_ids  # RSNA-style names → the file stem is the patientId
    for r in sub:
        parts = r["PredictionString"].split()
        assert len(parts) % 5 == 0
    with open(out / "findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["image_id"] for r in rows} == rsna_ids
    assert all(r["models"].count("#") == 4 for r in rows)  # 4 models with hash prefixes
    assert all("patient_id" not in r for r in rows)  # no identifiers by default
    dcm_rows = [r for r in rows if r["source_file"].endswith(".dcm") and r["box_index"]]
    assert all(float(r["area_mm2"]) > 0 for r in dcm_rows)  # spacing known for the DICOMs
    run = json.loads((out / "run.json").read_text())
    assert run["done"] == 4 and len(run["failed"]) == 1 and run["failed"][0]["path"].endswith("broken.dcm")
    assert run["thresholds"]["shrink"] == pytest.approx(0.95) and {m["id"] for m in run["models"]} >= {
        "detector"
    }
    pngs = sorted((out / "annotated").glob("*.png"))
    assert len(pngs) == 4

    # Re-running skips the work already done; failed files are retried.
    capsys.readouterr()
    journal_mtimes = {p: p.stat().st_mtime_ns for p in (out / ".pneumoview-journal").iterdir()}
    code = main(
        [
            "predict",
            str(input_folder),
            "--out",
            str(out),
            "--models-dir",
            str(models),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert code == 1
    assert [p.stat().st_mtime_ns for p in pngs] == [
        p.stat().st_mtime_ns for p in sorted((out / "annotated").glob("*.png"))
    ]
    changed = [p for p, m in journal_mtimes.items() if p.stat().st_mtime_ns != m]
    assert len(changed) == 1  # only the broken file was tried again
    with open(out / "submission.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4  # no duplicated rows


def test_predict_include_identifiers_and_shards(models: Path, input_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    args = ["predict", str(input_folder / "dicom"), "--out", str(out), "--models-dir", str(models), "--device", "cpu",
            "--quiet", "--no-png"]  # fmt: skip
    assert main([*args, "--shard", "0/2"]) in (0, 1)
    assert main([*args, "--shard", "1/2"]) in (0, 1)
    assert main([*args, "--merge-only"]) == 1
    with open(out / "submission.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    out2 = tmp_path / "ids"
    main(["predict", str(input_folder / "dicom"), "--out", str(out2), "--models-dir", str(models), "--device", "cpu",
          "--quiet", "--no-png", "--include-identifiers"])  # fmt: skip
    with open(out2 / "findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["patient_id"] for r in rows)


def test_predict_usage_errors(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert (
        main(["predict", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--models-dir", str(models)])
        == 2
    )
    assert "no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--out", str(tmp_path / "o"), "--models-dir", str(models)]) == 2
    assert (
        main(
            [
                "predict",
                str(empty),
                "--out",
                str(tmp_path / "o"),
                "--shrink",
                "1.5",
                "--models-dir",
                str(models),
            ]
        )
        == 2
    )


def test_predict_subprocess_exit_status(models: Path, input_folder: Path, tmp_path: Path):
    env = {**os.environ, "PNEUMOVIEW_MODELS": str(models), "PNEUMOVIEW_DEVICE": "cpu"}
    # A fresh interpreter, as a user runs it; it imports the test builders first (they are not part of the app).
    code = (
        "import sys, tests.model_fixtures; from pneumoview.__main__ import main; "
        f"sys.exit(main(['predict', {str(input_folder / 'dicom')!r}, '--out', {str(tmp_path / 'o')!r}, '--no-png']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert r.returncode == 1, r.stderr
    assert "2 of 3 images analysed, 1 failed" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "pneumoview", "predict", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0 and "exit status" in r.stdout and "--shrink" in r.stdout


def test_evaluate_ground_truth_scores_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from pneumoview.postprocess import boxes_to_prediction_string
    from pneumoview.rsna_labels import read_labels

    labels = read_labels(RSNA / "stage_2_train_labels.csv")
    ids = [p.stem for p in sorted((RSNA / "images-1024").glob("*.png"))]
    sub = tmp_path / "sub.csv"
    with open(sub, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patientId", "PredictionString"])
        for pid in ids:
            b = labels[pid]
            w.writerow([pid, boxes_to_prediction_string(b, [1.0] * len(b))])
    assert (
        main(
            ["evaluate", "--labels", str(RSNA / "stage_2_train_labels.csv"), "--image-size", "1024", str(sub)]
        )
        == 0
    )
    assert "RSNA mAP@[.40:.75]: 1.0000" in capsys.readouterr().out
    with open(sub, "w", newline="") as f:
        f.write("patientId,PredictionString\n" + "".join(f"{pid},\n" for pid in ids))
    assert (
        main(
            ["evaluate", "--labels", str(RSNA / "stage_2_train_labels.csv"), "--image-size", "1024", str(sub)]
        )
        == 0
    )
    assert "RSNA mAP@[.40:.75]: 0.0000" in capsys.readouterr().out


def test_tune_runs_models_once_and_reports(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = tmp_path / "labelled"
    src.mkdir()
    for p in sorted((RSNA / "images-512").glob("*.jpg"))[:6]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "tune"
    code = main(["tune", str(src), "--labels", str(RSNA / "stage_2_train_labels.csv"), "--models-dir", str(models),
                 "--device", "cpu", "--rounds", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "6 labelled images" in text and "best mAP" in text
    best = json.loads((out / "best_thresholds.json").read_text())
    assert 0.0 <= best["map"] <= 1.0 and best["images"] == 6
    assert len((out / "tune.csv").read_text().splitlines()) > 10
    # The file tune writes is what predict's --thresholds-file takes.
    pred = tmp_path / "pred"
    code = main(["predict", str(next(src.iterdir())), "--out", str(pred), "--thresholds-file",
                 str(out / "best_thresholds.json"), "--models-dir", str(models), "--device", "cpu", "--no-png",
                 "--quiet"])  # fmt: skip
    assert code == 0
    used = json.loads((pred / "run.json").read_text())["thresholds"]
    assert used == {k: v for k, v in best.items() if k not in ("map", "images")}


def test_models_command_lists_status(models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["models", "--models-dir", str(models), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ours = {m["id"]: m for m in doc["models"] if m["file"] and m["file"].startswith(str(models))}
    assert ours["detector"]["status"] == "ok" and len(ours["detector"]["sha256_prefix"]) == 12
    assert any(e["id"] == "seg-ensemble" for e in doc["ensembles"])


def test_predict_under_torchrun_merges_shards(tmp_path: Path):
    """Two gloo ranks on the CPU, the shipped models: each rank takes a shard, rank 0 writes the merged outputs."""
    src = tmp_path / "in"
    src.mkdir()
    images = sorted((RSNA / "images-512").glob("*.jpg"))[:5]
    for p in images:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PNEUMOVIEW_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "pneumoview", "predict", str(src), "--out", str(out),
         "--no-png", "--quiet", "--models-dir", str(ROOT / "models")],  # fmt: skip
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(row["patientId"] for row in rows) == sorted(p.stem for p in images)
    run = json.loads((out / "run.json").read_text())
    assert (
        run["done"] == 5 and run["failed"] == [] and {m["id"] for m in run["models"]} >= {"rsna3-classifier"}
    )
