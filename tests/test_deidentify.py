"""Privacy: outputs and logs carry no patient identifiers by default, and ``pneumoview deidentify`` writes DICOM
PS3.15 basic-profile copies (identifiers gone, UIDs consistent, pixels identical) without touching its inputs."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from pneumoview.deidentify import DeidentifyOptions, UidMapper, deidentify_file, deidentify_tree
from pneumoview.errors import ImageReadError
from pneumoview.imaging import load_image
from tests.model_fixtures import equivariant_models_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CHEST = DATA / "dicom" / "chest"
DICOMDIR_TREE = DATA / "dicom" / "robustness" / "pydicom" / "dicomdirtests"
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"
SIIM_SUFFIX = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"

# Attributes whose original values must not survive (besides every date and every instance UID).
IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames", "AccessionNumber",
    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "StationName", "StudyID", "DeviceSerialNumber", "StudyDescription", "ImageComments", "PatientAddress",
    "RequestingPhysician", "InstitutionalDepartmentName",
)  # fmt: skip
CLASS_UIDS = ("SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID")


def _secrets(ds: pydicom.Dataset) -> set[str]:
    """Identifying values of ``ds`` (at any depth) that must not appear in a de-identified copy."""
    found = set()
    for el in ds.iterall():
        if el.value in (None, "") or el.VR == "SQ":
            continue
        values = el.value if el.VM > 1 else [el.value]
        for v in map(lambda x: str(x).strip(), values):
            instance_uid = (
                el.VR == "UI" and el.keyword not in CLASS_UIDS and not v.startswith("1.2.840.10008.")
            )
            if instance_uid or el.keyword in IDENTIFYING or el.VR in ("DA", "DT", "PN"):
                found.add(v)
    return {v for v in found if len(v) >= 4}


def _copy_writable(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dest


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, force=True)


# ---------------------------------------------------------------------------------------------------------------
# De-identified copies of real files


def test_deidentified_copies_of_real_chest_and_sample_files(shared_data: Path, tmp_path: Path):
    src = tmp_path / "in"
    _copy_writable(CHEST, src / "chest")
    _copy_writable(SAMPLE, src / "sample")
    before = _digest(src)
    out = tmp_path / "out"
    report = deidentify_tree([src], out)
    assert _digest(src) == before  # the input is only read
    # Fake_MONOHR1.dcm is the SIIM file with one attribute edited: the same SOP instance, so copied once.
    assert len(report.written) == 6 + 6
    skipped = {p.name: why for p, why in report.skipped}
    assert set(skipped) == {"SOURCES.md", "ATTRIBUTION.md", "labels.csv", "siim-acr_" + SIIM_SUFFIX}
    assert "same SOP Instance UID as Fake_MONOHR1.dcm" in skipped["siim-acr_" + SIIM_SUFFIX]
    for source, copy in report.written:
        original, new = _read(source), _read(copy)
        secrets = _secrets(original)
        assert secrets, source  # every one of these files carries identifiers
        data = copy.read_bytes()
        # The header only: compressed pixel data can hold any short byte string by chance.
        data = data[: data.rfind(b"\xe0\x7f\x10\x00")]
        leaked = {s for s in secrets if s.encode() in data or s in str(copy.relative_to(out))}
        assert not leaked, (source.name, leaked)
        assert not [el for el in new.iterall() if el.tag.is_private], source.name
        assert new.PatientIdentityRemoved == "YES" and new.DeidentificationMethod
        codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in new.DeidentificationMethodCodeSequence]
        assert codes == [("113100", "DCM")]
        assert new.LongitudinalTemporalInformationModified == "REMOVED"
        assert str(new.get("PatientID", "ANON-")).startswith("ANON-")
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            uid = UID(str(new[keyword].value))
            assert uid.startswith("2.25.") and uid.is_valid, (keyword, uid)
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        assert copy.relative_to(out).parts == (
            new.StudyInstanceUID,
            new.SeriesInstanceUID,
            f"{new.SOPInstanceUID}.dcm",
        )
        # Pixels: the same bytes, the same transfer syntax, and the copy reads back to the same image.
        assert new.PixelData == original.PixelData
        if "TransferSyntaxUID" in getattr(original, "file_meta", {}):
            assert new.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        a, b = load_image(source), load_image(copy)
        assert np.array_equal(a.display, b.display) and np.array_equal(a.modality, b.modality)
        assert a.spacing_mm == b.spacing_mm and a.view == b.view


def test_uids_stay_consistent_across_series_and_references(shared_data: Path, tmp_path: Path):
    key = b"k" * 32
    series_dirs = [DICOMDIR_TREE / "77654033" / "CT2", DICOMDIR_TREE / "98892001" / "CT5N"]
    inputs = [*series_dirs, CHEST / "WG04_RG1_J2KI.dcm", CHEST / "WG04_RG1_JLSN.dcm"]
    report = deidentify_tree(inputs, tmp_path / "a", key=key)
    assert len(report.written) == 4 + 5 + 2 and not report.skipped
    mapper = UidMapper(key)
    by_original: dict[tuple[str, str], set[str]] = {}
    sops = set()
    for source, copy in report.written:
        original, new = _read(source), _read(copy)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if keyword in original:
                by_original.setdefault((keyword, original[keyword].value), set()).add(new[keyword].value)
                assert new[keyword].value == mapper(original[keyword].value)
        sops.add(new.SOPInstanceUID)
        for seq in ("SourceImageSequence", "ReferencedImageSequence"):
            for item, new_item in zip(original.get(seq, []), new.get(seq, []), strict=True):
                assert new_item.ReferencedSOPInstanceUID == mapper(item.ReferencedSOPInstanceUID)
                assert new_item.ReferencedSOPClassUID == item.ReferencedSOPClassUID  # classes are kept
    assert all(len(v) == 1 for v in by_original.values())  # one original UID → one new UID
    assert len(sops) == len(report.written)  # distinct instances stay distinct
    series = {(k, v) for (k, v) in by_original if k == "SeriesInstanceUID"}
    assert len(series) == 3  # the two series, and the WG04 pair (one series, two encodings)
    # The same key maps the same way in another run; another key does not.
    again = deidentify_tree(inputs, tmp_path / "b", key=key)
    assert sorted(p.relative_to(tmp_path / "b") for _, p in again.written) == sorted(
        p.relative_to(tmp_path / "a") for _, p in report.written
    )
    other = deidentify_tree(inputs, tmp_path / "c", key=b"x" * 32)
    assert not {p.name for _, p in other.written} & {p.name for _, p in report.written}


def test_profile_actions_on_a_synthetic_header(make_dicom, tmp_path: Path):
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096).astype(np.uint16)
    path = make_dicom(
        arr, name="synthetic.dcm", PatientName="Doe^Jane", PatientID="MRN-0042", PatientBirthDate="19700101",
        PatientAge="052Y", PatientSex="F", AccessionNumber="ACC123456", InstitutionName="St Example Hospital",
        ReferringPhysicianName="House^Gregory", StudyDate="20200115", StudyTime="101500", SeriesDate="20200115",
        StudyInstanceUID="1.2.3.4.5.6.7", SeriesInstanceUID="1.2.3.4.5.6.8", SOPInstanceUID="1.2.3.4.5.6.9",
        OtherPatientIDs="OLD-77", StudyDescription="CHEST Doe Jane", ViewPosition="PA",
    )  # fmt: skip
    ds = _read(path)
    ds.add_new(0x00091010, "LO", "private secret")
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)
    ds.save_as(path)

    new, _ = deidentify_file(path, UidMapper(b"s" * 32))
    for keyword in (
        "PatientBirthDate",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDate",
        "StudyTime",
    ):
        assert keyword in new and new[keyword].value in (None, ""), keyword  # type 2: emptied
    for keyword in ("InstitutionName", "OtherPatientIDs", "StudyDescription", "SeriesDate", "PatientAge"):
        assert keyword not in new, keyword  # removed
    assert new.PatientID == new.PatientName == UidMapper(b"s" * 32).pseudonym("MRN-0042")
    assert 0x00091010 not in new and 0x60003000 not in new
    assert new.ViewPosition == "PA" and new.Modality == "CR"  # what the viewer needs is kept
    assert new.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"

    # Options: shifted dates (birth date still removed) and kept patient characteristics.
    options = DeidentifyOptions(date_shift_days=-10, keep_patient_characteristics=True)
    shifted, _ = deidentify_file(path, UidMapper(b"s" * 32), options)
    assert (
        shifted.StudyDate == "20200105" and shifted.SeriesDate == "20200105" and shifted.StudyTime == "101500"
    )
    assert shifted.PatientBirthDate in (None, "")
    assert shifted.PatientAge == "052Y" and shifted.PatientSex == "F"
    codes = [c.CodeValue for c in shifted.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108"]
    assert shifted.LongitudinalTemporalInformationModified == "MODIFIED"


def test_burned_in_annotation_is_not_copied_unless_allowed(make_dicom, tmp_path: Path):
    path = make_dicom(
        np.zeros((8, 8), np.uint8), name="burned.dcm", BurnedInAnnotation="YES", PatientName="X^Y"
    )
    report = deidentify_tree([path], tmp_path / "out")
    assert not report.written and "Burned In Annotation" in report.skipped[0][1]
    report = deidentify_tree([path], tmp_path / "out", options=DeidentifyOptions(allow_burned_in=True))
    assert len(report.written) == 1


# ---------------------------------------------------------------------------------------------------------------
# The command


def _deidentify_cli(argv: list[str]) -> int:
    from pneumoview import cli
    from pneumoview.commands import deidentify as command

    if "deidentify" in cli.command_names():
        return cli.main(["deidentify", *argv])
    parser = argparse.ArgumentParser(prog="pneumoview")
    command.register(parser.add_subparsers())
    args = parser.parse_args(["deidentify", *argv])
    return args.run(args)


def test_deidentify_command(make_dicom, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        make_dicom(np.full((16, 16), i, np.uint8), name=f"img{i}.dcm", PatientName="Doe^Jane", PatientID="MRN-0042",
                   StudyInstanceUID="1.2.3.4.5", SeriesInstanceUID="1.2.3.4.6", SOPInstanceUID=f"1.2.3.4.7.{i}")  # fmt: skip
        shutil.move(tmp_path / f"img{i}.dcm", src / f"img{i}.dcm")
    (src / "notes.txt").write_text("not an image")
    before = _digest(src)
    out = tmp_path / "out"
    key_file = tmp_path / "key"
    assert (
        _deidentify_cli([str(src), "--out", str(out), "--key-file", str(key_file)]) == 1
    )  # notes.txt skipped
    text = capsys.readouterr().out
    assert "3 de-identified copies written" in text and "notes.txt" in text
    assert "Doe" not in text and "MRN-0042" not in text
    assert key_file.stat().st_mode & 0o077 == 0  # the new key is private to its owner
    copies = sorted(out.rglob("*.dcm"))
    assert len(copies) == 3 and len({p.parent for p in copies}) == 1  # one study, one series
    assert _digest(src) == before
    # Existing copies are not replaced without --force; the same key gives the same names.
    assert _deidentify_cli([str(src / "img0.dcm"), "--out", str(out), "--key-file", str(key_file)]) == 1
    assert "already exists" in capsys.readouterr().out
    assert (
        _deidentify_cli([str(src / "img0.dcm"), "--out", str(out), "--key-file", str(key_file), "--force"])
        == 0
    )
    assert sorted(out.rglob("*.dcm")) == copies
    # The output folder may not be inside the input.
    assert _deidentify_cli([str(src), "--out", str(src / "anon")]) == 2
    assert not (src / "anon").exists()
    assert "inputs are never written to" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# No identifiers in predict's outputs or logs


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return equivariant_models_dir(tmp_path_factory.mktemp("models"), size=64)


def _predict_subprocess(
    inputs: Path | list[Path], out: Path, models: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    paths = inputs if isinstance(inputs, list) else [inputs]
    args = ["predict", *map(str, paths), "--out", str(out), "--device", "cpu", *extra]
    code = f"import sys, tests.model_fixtures; from pneumoview.__main__ import main; sys.exit(main({args!r}))"
    env = {**os.environ, "PNEUMOVIEW_MODELS": str(models)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def _found_in_tree(folder: Path, needles: set[str]) -> set[str]:
    """The needles that occur in any file's bytes or in any path under ``folder``."""
    found = set()
    for p in folder.rglob("*"):
        rel = str(p.relative_to(folder))
        data = p.read_bytes() if p.is_file() else b""
        found |= {n for n in needles if n in rel or n.encode() in data or n.encode("utf-16-le") in data}
    return found


def test_predict_outputs_and_logs_hold_no_identifiers(make_dicom, models: Path, tmp_path: Path):
    src = tmp_path / "in"
    src.mkdir()
    # The sample study, under neutral names (its RSNA names are the anonymised patientIds, used on purpose).
    needles = set()
    for i, p in enumerate(sorted(SAMPLE.glob("*.dcm"))[:3]):
        shutil.copy(p, src / f"case{i}.dcm")
        ds = _read(p)
        needles |= {str(ds.PatientID), str(ds.PatientName), ds.StudyInstanceUID, ds.SOPInstanceUID}
    # Synthetic DICOMs with a name, MRN and accession number, one of them with damaged pixel data.
    ids = {"PatientName": "Doe^Jane", "PatientID": "MRN-0042", "AccessionNumber": "ACC123456",
           "PatientBirthDate": "19700101", "InstitutionName": "St Example Hospital"}  # fmt: skip
    arr = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    for i in range(2):
        make_dicom(arr, name=f"synthetic{i}.dcm", SOPInstanceUID=f"1.2.826.0.1.99.{i}", **ids)
        shutil.move(tmp_path / f"synthetic{i}.dcm", src / f"synthetic{i}.dcm")
    damaged = _read(src / "synthetic1.dcm")
    damaged.PixelData = damaged.PixelData[:100]
    damaged.save_as(src / "synthetic1.dcm")
    needles |= {"Doe^Jane", "MRN-0042", "ACC123456", "19700101", "St Example", "1.2.826.0.1.99"}

    out = tmp_path / "out"
    r = _predict_subprocess(src, out, models)
    assert r.returncode == 1, r.stderr[-2000:]  # finished; the damaged file failed
    assert "4 of 5 images analysed, 1 failed" in r.stdout
    assert _found_in_tree(out, needles) == set()
    assert {n for n in needles if n in r.stdout or n in r.stderr} == set()

    # The check can fail: asked for, the identifiers do appear.
    opted = tmp_path / "opted-in"
    r = _predict_subprocess(src, opted, models, "--include-identifiers", "--no-png")
    assert r.returncode == 1
    assert {"MRN-0042", "Doe^Jane"} <= _found_in_tree(opted, needles)


def test_predict_on_the_sample_study_keeps_uids_and_names_out(models: Path, tmp_path: Path):
    out = tmp_path / "out"
    r = _predict_subprocess(sorted(SAMPLE.glob("*.dcm")), out, models, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    uids, patient_ids = set(), set()
    for p in SAMPLE.glob("*.dcm"):
        ds = _read(p)
        uids |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
        patient_ids.add(str(ds.PatientID))
        assert str(ds.PatientID) == p.stem  # RSNA: the anonymised patientId is the file name
    assert _found_in_tree(out, uids) == set()
    # The RSNA patientIds appear as the submission's patientId, as the challenge format requires.
    submission = (out / "submission.csv").read_text()
    assert all(pid in submission for pid in patient_ids)


def test_unreadable_inputs_are_reported_without_reading_identifiers(make_dicom, tmp_path: Path):
    path = make_dicom(
        np.zeros((32, 32), np.uint8), name="x.dcm", PatientName="Doe^Jane", Rows=40000, Columns=40000
    )
    with pytest.raises(ImageReadError) as err:
        load_image(path)
    assert "Doe" not in str(err.value.message)
