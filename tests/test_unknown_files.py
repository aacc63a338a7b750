"""One describer of files PneumoView cannot open (imaging.sniff.describe_unknown): the scan (study browser,
``pneumoview scan``) and the loader (viewer, ``pneumoview predict``) give the same advice for the same file.
Checked on the broken-file corpus in /work/shared/data/dicom/robustness and on a few files made here."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from pneumoview.errors import ImageReadError
from pneumoview.imaging import load_image
from pneumoview.imaging.sniff import DESCRIBE_BYTES, describe_unknown
from pneumoview.study_index import ScanError, scan

ROBUSTNESS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "robustness"


def _load_message(path: Path) -> str:
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    assert info.value.stage == "header", info.value
    return info.value.message


def _unopenable(folder: Path) -> dict[Path, ScanError]:
    """The scan's errors for files that are not a DICOM/PNG/JPEG at all (header stage) or are documents."""
    return {
        Path(e.path): e
        for e in scan(folder)
        if isinstance(e, ScanError)
        and (e.is_document or e.message == describe_unknown(_head(e.path), e.path.name))
    }


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(DESCRIBE_BYTES)


def test_scan_and_load_agree_on_the_broken_file_corpus():
    errors = _unopenable(ROBUSTNESS)
    names = {p.name for p in errors}
    # The corpus's non-images: an archive, documents, and a DICOM data set without file meta.
    assert {"zipMR.gz", "README.txt", "License.txt", "no_meta.dcm"} <= names
    for path, error in errors.items():
        assert error.message == _load_message(path), path
    assert errors[ROBUSTNESS / "pydicom" / "zipMR.gz"].message.startswith(
        "compressed archive (gzip): unpack it"
    )


def test_scan_and_load_agree_on_files_made_here(tmp_path: Path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.dcm").write_text("patient looked fine\n")
    (tmp_path / "._image.png").write_bytes(b"\x00\x05\x16\x07" + bytes(200))
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.7\n" + bytes(100))
    shutil.copy(ROBUSTNESS / "pydicom" / "no_meta.dcm", tmp_path / "bare.dcm")
    # Starts like a DICOM data set without preamble (group 0008), then text: pydicom's forced read finds an
    # element or two, but nothing real DICOM has; the loader used to call it "a non-image DICOM object".
    (tmp_path / "._scan.dcm").write_bytes(b"\x08\x00\x10\x00\x05\x00\x00\x00" + b"hello world, text " * 8)
    with gzip.open(tmp_path / "study.tar.gz", "wb") as fh:
        fh.write(b"x" * 1000)
    found = {p.name: e.message for p, e in _unopenable(tmp_path).items()}
    assert set(found) == {
        "empty.dcm",
        "notes.dcm",
        "._image.png",
        "scan.pdf",
        "bare.dcm",
        "study.tar.gz",
        "._scan.dcm",
    }
    for name, message in found.items():
        assert message == _load_message(tmp_path / name), name
    assert found["empty.dcm"] == "empty file (0 bytes): not a DICOM, PNG or JPEG file."
    assert found["notes.dcm"] == "not a DICOM, PNG or JPEG file (it looks like text)."
    assert (
        found["._image.png"]
        == found["._scan.dcm"]
        == "not a DICOM, PNG or JPEG file (a macOS resource-fork file)."
    )
