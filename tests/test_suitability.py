"""Header warnings: images that are not adult frontal chest radiographs by their header, on real DICOM files
(and real files copied with one header attribute changed), through `pneumoview predict` and the viewer."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pydicom
import pytest

from pneumoview.imaging import load_image
from pneumoview.suitability import parse_age_years, suitability_warnings, warnings_from_header
from tests.model_fixtures import equivariant_models_dir

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHEST = DATA / "dicom" / "chest"
ADULT_PA = (
    CHEST / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
)  # CHEST, PA, age "62"
NON_CHEST = CHEST / "WG04_RG3_J2KI_nonchest.dcm"  # CR, BodyPartExamined EXTREMITY
DICOMDIR_TREE = DATA / "dicom" / "robustness" / "pydicom" / "dicomdirtests"
CSPINE_CR = DICOMDIR_TREE / "77654033" / "CR3" / "6278"  # CR, BodyPartExamined CSPINE, age 047Y
HEAD_CT = DICOMDIR_TREE / "77654033" / "CT2" / "17136"
MR = DICOMDIR_TREE / "98892003" / "MR700" / "4648"


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("062Y", 62.0),
        ("006M", 0.5),
        ("012W", 12 * 7 / 365.25),
        ("003D", 3 / 365.25),
        ("62", 62.0),  # RSNA headers carry bare numbers
        ("17Y", 17.0),
        (" 045Y ", 45.0),
        ("", None),
        ("adult", None),
        ("62Q", None),
        (None, None),
    ],
)
def test_age_string_is_parsed(text, years):
    got = parse_age_years(text)
    assert got == (None if years is None else pytest.approx(years))


def _copy_with(tmp_path: Path, src: Path, name: str, **tags: str) -> Path:
    ds = pydicom.dcmread(src)
    for k, v in tags.items():
        setattr(ds, k, v)
    out = tmp_path / name
    ds.save_as(out)
    return out


def test_real_adult_frontal_chest_files_give_no_warning(shared_data: Path):
    files = [
        ADULT_PA,
        CHEST / "WG04_RG1_J2KI.dcm",
        CHEST / "fo-dicom_CR-MONO1-10-chest.dcm",
        CHEST / "Fake_MONOHR1.dcm",
        next((CHEST).glob("nih-cxr14_*.dcm")),  # no body part or view, age 81
        sorted((shared_data / "rsna" / "images-512").glob("*.jpg"))[0],  # no header at all
    ]
    for f in files:
        assert suitability_warnings(load_image(f)) == (), f


def test_real_non_chest_and_non_radiograph_files_are_flagged(shared_data: Path):
    (w,) = suitability_warnings(load_image(NON_CHEST))
    assert w.startswith("Not a chest image: Body Part Examined is EXTREMITY")
    assert "adult frontal chest radiographs" in w
    (w,) = suitability_warnings(load_image(CSPINE_CR))
    assert "Body Part Examined is CSPINE" in w
    ct = suitability_warnings(load_image(HEAD_CT))
    assert any(x.startswith("Not a radiograph: Modality is CT") for x in ct)
    assert any("Body Part Examined is HEAD" in x for x in ct)
    (w,) = suitability_warnings(load_image(MR))
    assert w.startswith("Not a radiograph: Modality is MR")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"ViewPosition": "LL"}, "Not a frontal view: View Position is LL (left lateral)"),
        ({"ViewPosition": "RL"}, "View Position is RL (right lateral)"),
        ({"ViewPosition": "LATERAL"}, "View Position is LATERAL"),
        ({"PatientAge": "006M"}, "Not an adult: Patient's Age is 006M (0.5 years)"),
        ({"PatientAge": "012Y"}, "Patient's Age is 012Y (12.0 years)"),
        ({"PatientAge": "017Y"}, "Patient's Age is 017Y (17.0 years)"),
    ],
)
def test_lateral_and_paediatric_copies_of_a_real_chest_file_are_flagged(tmp_path: Path, tags, expected):
    before = hashlib.sha256(ADULT_PA.read_bytes()).hexdigest()
    path = _copy_with(tmp_path, ADULT_PA, "copy.dcm", **tags)
    warnings = suitability_warnings(load_image(path))
    assert len(warnings) == 1 and expected in warnings[0]
    assert warnings[0].startswith(("Not a frontal view: ", "Not an adult: "))
    assert hashlib.sha256(ADULT_PA.read_bytes()).hexdigest() == before


def test_adult_age_and_frontal_views_pass():
    for age in ("018Y", "18", "090Y"):
        assert (
            warnings_from_header({"PatientAge": age, "ViewPosition": "AP", "BodyPartExamined": "CHEST"}) == ()
        )
    assert warnings_from_header({"BodyPartExamined": "THORAX", "ViewPosition": "PA", "Modality": "DX"}) == ()
    assert warnings_from_header({"Modality": "OT"}) == ()  # converted images pass


def test_predict_reports_header_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from pneumoview.cli import main

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy2(ADULT_PA, src / "adult.dcm")
    shutil.copy2(NON_CHEST, src / "nonchest.dcm")
    _copy_with(src, ADULT_PA, "lateral.dcm", ViewPosition="LL")
    _copy_with(src, ADULT_PA, "child.dcm", PatientAge="007Y")
    models = equivariant_models_dir(tmp_path / "models")
    out = tmp_path / "out"
    rc = main(
        ["predict", str(src), "--out", str(out), "--models-dir", str(models), "--device", "cpu", "--no-png"]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning: 3 image(s) are not adult frontal chest radiographs by their header" in err
    with open(out / "findings.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_file = {r["source_file"]: r["warnings"] for r in rows}
    assert by_file["adult.dcm"] == ""
    assert "Body Part Examined is EXTREMITY" in by_file["nonchest.dcm"]
    assert "View Position is LL" in by_file["lateral.dcm"]
    assert "Patient's Age is 007Y" in by_file["child.dcm"]
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert sorted(Path(w["path"]).name for w in run["warnings"]) == [
        "child.dcm",
        "lateral.dcm",
        "nonchest.dcm",
    ]
