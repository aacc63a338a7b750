"""``pneumoview predict --dicom [--gsps] [--probability-map]`` end to end on real radiographs with the real engine:
objects under OUT/dicom/, recorded in run.json, valid per dciodvfy, one SR region per box of submission.csv."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pydicom
import pytest

from pneumoview.cli import main
from pneumoview.dicom_results import read_result, read_results
from pneumoview.postprocess import parse_prediction_string
from tests.dicom_checks import dciodvfy_errors
from tests.model_fixtures import equivariant_models_dir
from tests.rsna_fixtures import write_rsna_dicoms
from tests.test_cli_predict import _tree_digest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RSNA = DATA / "rsna"
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return equivariant_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def input_folder(tmp_path: Path) -> Path:
    """Two RSNA-style DICOMs (real NIH pixels, Patient's Age as RSNA writes it), a real SIIM CR, a real JPEG."""
    src = tmp_path / "in"
    src.mkdir()
    write_rsna_dicoms(src)
    shutil.copy(
        DATA / "dicom" / "chest" / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
        src / "siim.dcm",
    )
    shutil.copy(sorted((RSNA / "images-512").glob("*.jpg"))[0], src / "photo.jpg")
    return src


def _sr_regions_per_image(out: Path) -> dict[str, int]:
    return {p.name[: -len("_SR.dcm")]: len(read_result(p).regions) for p in (out / "dicom").glob("*_SR.dcm")}


def _submission_boxes(out: Path) -> dict[str, int]:
    with open(out / "submission.csv", newline="") as f:
        return {
            r["patientId"]: len(parse_prediction_string(r["PredictionString"])[0]) for r in csv.DictReader(f)
        }


def test_predict_dicom_end_to_end(
    models: Path, input_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    before = _tree_digest(input_folder)
    out = tmp_path / "out"
    args = ["predict", str(input_folder), "--out", str(out), "--models-dir", str(models), "--device", "cpu",
            "--quiet", "--no-png", "--gate", "0", "--dicom", "--gsps", "--probability-map"]  # fmt: skip
    assert main(args) == 0
    assert "DICOM results: " in capsys.readouterr().out
    assert _tree_digest(input_folder) == before  # inputs never modified

    run = json.loads((out / "run.json").read_text())
    dicom = run["dicom"]
    assert dicom["options"] == {"gsps": True, "probability_map": True} and dicom["failed"] == []
    assert [Path(d["path"]).name for d in dicom["not_dicom"]] == ["photo.jpg"]
    files = sorted(out / f for f in dicom["files"])
    assert files == sorted((out / "dicom").glob("*.dcm"))
    # One SR per DICOM input; the equivariant models always find a bright region, so SEG and GSPS too.
    assert {p.name.rsplit("_", 1)[1] for p in files} == {"SR.dcm", "SEG.dcm", "GSPS.dcm"}
    assert len(files) == 3 * 3

    regions = _sr_regions_per_image(out)
    boxes = _submission_boxes(out)
    with open(out / "findings.csv", newline="") as f:
        photo = {r["image_id"] for r in csv.DictReader(f) if r["source_file"] == "photo.jpg"}
    assert set(regions) == set(boxes) - photo and len(regions) == 3
    assert all(regions[k] == boxes[k] for k in regions)  # the SR regions are exactly submission.csv's boxes
    assert sum(regions.values()) >= 3
    for p in files:
        assert dciodvfy_errors(p) == [], p.name
    results = read_results(files)
    for sop, got in results.items():
        sr, seg, gsps = got.srs[0], got.segs[0], got.gsps[0]
        assert seg.mask.any() and seg.probability is not None
        assert gsps.boxes_xyxy == tuple(r.box_xyxy for r in sr.regions)
        source = next(p for p in input_folder.glob("*.dcm") if pydicom.dcmread(p).SOPInstanceUID == sop)
        assert pydicom.dcmread(source).StudyInstanceUID == sr.study_instance_uid
    with open(out / "findings.csv", newline="") as f:
        assert "review" in next(csv.reader(f))  # the column exists; a batch run has no reader decisions

    # A second run skips everything (files untouched); --force redoes it with the same SOP Instance UIDs.
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    uids = {p.name: pydicom.dcmread(p).SOPInstanceUID for p in files}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert main([*args, "--force"]) == 0
    assert {p.name: pydicom.dcmread(p).SOPInstanceUID for p in sorted((out / "dicom").glob("*.dcm"))} == uids


def test_predict_dicom_options_need_dicom(models: Path, input_folder: Path, tmp_path: Path, capsys):
    for flag in ("--gsps", "--probability-map"):
        code = main(
            ["predict", str(input_folder), "--out", str(tmp_path / "o"), "--models-dir", str(models), flag]
        )
        assert code == 2
        assert "need --dicom" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_predict_dicom_with_shipped_models(tmp_path: Path):
    """The shipped models on two sample-study images (gate off, low detector threshold so boxes are reported)."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(SAMPLE.glob("*.dcm"))[:2]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    code = main(["predict", str(src), "--out", str(out), "--device", "cpu", "--quiet", "--no-png", "--gate", "0",
                 "--det-score", "0.1", "--seg-threshold", "0.2", "--dicom", "--probability-map"])  # fmt: skip
    assert code == 0
    regions = _sr_regions_per_image(out)
    boxes = _submission_boxes(out)
    assert regions == boxes and sum(boxes.values()) >= 1
    for p in (out / "dicom").glob("*.dcm"):
        assert dciodvfy_errors(p) == [], p.name
    sr = read_result(next((out / "dicom").glob("*_SR.dcm")))
    run = json.loads((out / "run.json").read_text())
    assert {f"model={m['id']}@{m['version']}#{m['sha256_prefix']}" for m in run["models"]} == {
        p for p in sr.algorithm_parameters if p.startswith("model=")
    }
