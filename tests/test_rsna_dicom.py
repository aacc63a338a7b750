"""The PNG → RSNA-style DICOM converter, the RSNA header reader and the shipped sample study."""

from __future__ import annotations

import csv
import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from pneumoview.data import sample_study_dir
from pneumoview.imaging import load_image
from tools.rsna_dicom import read_rsna_headers, write_rsna_dicom

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RSNA = DATA / "rsna"
HEADERS = RSNA / "stage_2_train_dicom_headers.csv.gz"
SIIM = DATA / "dicom" / "chest" / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _pngs(n: int) -> list[Path]:
    return sorted((RSNA / "images-1024").glob("*.png"))[:n]


def _convert(png: Path, out: Path) -> Path:
    pid = png.stem
    return write_rsna_dicom(png, out, patient_id=pid, **read_rsna_headers(HEADERS, [pid])[pid])


def test_read_rsna_headers_matches_the_csv(shared_data: Path) -> None:
    ids = [p.stem for p in _pngs(3)]
    headers = read_rsna_headers(HEADERS, [*ids, "not-a-patient"])
    assert set(headers) == set(ids)
    with gzip.open(HEADERS, "rt", newline="") as f:
        raw = {r["PatientID"]: r for r in csv.DictReader(f) if r["PatientID"] in ids}
    for pid, h in headers.items():
        assert h["age"] == int(raw[pid]["PatientAge"]) and h["sex"] == raw[pid]["PatientSex"] in ("M", "F")
        assert h["view"] == raw[pid]["ViewPosition"] in ("AP", "PA")
        assert (
            h["pixel_spacing"] == pytest.approx(float(raw[pid]["PixelSpacing"]))
            and 0.1 < h["pixel_spacing"] < 0.2
        )


@pytest.mark.parametrize("png", _pngs(2) or [None], ids=lambda p: p.stem[:8] if p else "missing")
def test_round_trip_through_load_image(shared_data: Path, tmp_path: Path, png: Path) -> None:
    pid = png.stem
    headers = read_rsna_headers(HEADERS, [pid])[pid]
    digest = hashlib.sha256(png.read_bytes()).hexdigest()
    out = write_rsna_dicom(png, tmp_path / "new" / "folder" / f"{pid}.dcm", patient_id=pid, **headers)
    assert out.is_file() and hashlib.sha256(png.read_bytes()).hexdigest() == digest  # input untouched

    image = load_image(out)
    with Image.open(png) as im:
        reference = np.asarray(im.convert("L")).astype(int)
    diff = np.abs(image.display.astype(int) - reference)
    assert image.shape == (1024, 1024) and diff.mean() < 2 and diff.max() < 40
    assert image.photometric == "MONOCHROME2" and not image.inverted
    assert (
        image.metadata["TransferSyntax"] == "JPEG Baseline (Process 1)"
        and image.metadata["Decoder"] == "pillow"
    )
    spacing = round(float(headers["pixel_spacing"]), 6)
    assert image.spacing_mm == (spacing, spacing)
    assert image.view == headers["view"] and image.metadata["SeriesDescription"] == f"view: {headers['view']}"
    assert (
        image.metadata["PatientAge"] == str(headers["age"]) and image.metadata["PatientSex"] == headers["sex"]
    )
    assert image.image_id == pid and image.identifiers["PatientID"] == pid == image.identifiers["PatientName"]


def test_writing_twice_gives_identical_bytes_and_stable_uids(shared_data: Path, tmp_path: Path) -> None:
    a, b = _pngs(2)
    first = _convert(a, tmp_path / "one" / "a.dcm")
    second = _convert(a, tmp_path / "two" / "a.dcm")
    assert first.read_bytes() == second.read_bytes()
    other = pydicom.dcmread(_convert(b, tmp_path / "b.dcm"))
    ds = pydicom.dcmread(first)
    uids = {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}
    assert len(uids) == 3 and not uids & {
        other.SOPInstanceUID,
        other.StudyInstanceUID,
        other.SeriesInstanceUID,
    }
    assert all(pydicom.uid.UID(u).is_valid and u.startswith("2.25.") for u in uids)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_tag_layout_matches_the_dcmtk_converted_file(shared_data: Path, tmp_path: Path) -> None:
    ours = pydicom.dcmread(_convert(_pngs(1)[0], tmp_path / "x.dcm"))
    theirs = pydicom.dcmread(SIIM)
    assert [e.keyword for e in ours] == [e.keyword for e in theirs]
    same = (
        "SOPClassUID",
        "Modality",
        "ConversionType",
        "BodyPartExamined",
        "StudyDate",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "LossyImageCompression",
        "LossyImageCompressionMethod",
        "SeriesNumber",
    )
    for keyword in same:
        assert ours[keyword].value == theirs[keyword].value, keyword
    assert ours.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID
    assert ours.PatientName == ours.PatientID and ours.PatientAge.isdigit()
    # One fragment, empty basic offset table, and a JPEG stream without a JFIF APP0 segment, as dcmtk writes them.
    for ds in (ours, theirs):
        frags = list(pydicom.encaps.generate_fragments(ds.PixelData))
        assert len(frags) == 2 and frags[0] == b"" and frags[1][:4] == b"\xff\xd8\xff\xdb"


def test_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    with pytest.raises(ValueError):
        write_rsna_dicom(png, png, patient_id="p", age=40, sex="F", view="PA", pixel_spacing=0.14)


def test_sixteen_bit_and_colour_inputs_become_8_bit(tmp_path: Path) -> None:
    values = np.zeros((16, 32), np.uint16)
    values[:, 16:] = 4000  # 16-bit input is scaled from its min..max to 0..255
    grey16 = tmp_path / "g16.png"
    Image.fromarray(values).save(grey16)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(rgb)
    kw = {"age": 1, "sex": "M", "view": "AP"}
    a = write_rsna_dicom(grey16, tmp_path / "a.dcm", patient_id="a", pixel_spacing=(0.1, 0.2), **kw)
    b = write_rsna_dicom(rgb, tmp_path / "b.dcm", patient_id="b", pixel_spacing=0.1, **kw)
    img_a, img_b = load_image(a), load_image(b)
    assert img_a.spacing_mm == (0.1, 0.2) and img_a.shape == (16, 32)
    assert img_a.display[:, :8].mean() < 3 and img_a.display[:, 24:].mean() > 252
    assert abs(float(img_b.display.mean()) - 90) < 2


# ---------------------------------------------------------------------------------------------------------------
# The shipped sample study
# ---------------------------------------------------------------------------------------------------------------


def test_sample_study_contents(shared_data: Path) -> None:
    folder = sample_study_dir()
    dicoms = sorted(folder.glob("*.dcm"))
    assert len(dicoms) == 6 and (folder / "ATTRIBUTION.md").is_file()
    attribution = (folder / "ATTRIBUTION.md").read_text()
    assert "Wang" in attribution and "Shih" in attribution and "not for" in attribution
    with (folder / "labels.csv").open(newline="") as f:
        labels = list(csv.DictReader(f))
    assert set(labels[0]) == {"patientId", "x", "y", "width", "height", "Target", "class"}
    classes = {r["patientId"]: r["class"] for r in labels}
    assert set(classes) == {p.stem for p in dicoms}
    assert sorted(classes.values()) == sorted(
        ["Lung Opacity"] * 3 + ["No Lung Opacity / Not Normal"] * 2 + ["Normal"]
    )
    with (RSNA / "stage_2_train_labels.csv").open(newline="") as f:
        official = [r for r in csv.DictReader(f) if r["patientId"] in classes]
    assert [{k: r[k] for k in official[0]} for r in labels] == official
    assert all(r["x"] for r in labels if r["class"] == "Lung Opacity")
    for path in dicoms:
        image = load_image(path)
        assert image.shape == (1024, 1024) and image.image_id == path.stem and image.view in ("AP", "PA")
        assert image.spacing_mm is not None and image.metadata["Modality"] == "CR"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000


def test_sample_study_script_reproduces_the_shipped_files(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "make_sample_study.py"),
            "--out",
            str(out),
            "--data",
            str(DATA),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    shipped = sample_study_dir()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in shipped.iterdir())
    for name in ("labels.csv", "ATTRIBUTION.md"):
        assert (out / name).read_bytes() == (shipped / name).read_bytes()
    for new in sorted(out.glob("*.dcm")):
        old = shipped / new.name
        a, b = pydicom.dcmread(new), pydicom.dcmread(old)
        assert [(e.tag, e.value) for e in a if e.keyword != "PixelData"] == [
            (e.tag, e.value) for e in b if e.keyword != "PixelData"
        ]
        # JPEG bytes may differ with another libjpeg build; the pixels may not.
        diff = np.abs(load_image(new).display.astype(int) - load_image(old).display.astype(int))
        assert diff.max() <= 2


def test_sample_study_script_refuses_to_write_into_the_data_folder(shared_data: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "make_sample_study.py"),
            "--out",
            str(DATA / "x"),
            "--data",
            str(DATA),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "read-only" in result.stderr and not (DATA / "x").exists()
