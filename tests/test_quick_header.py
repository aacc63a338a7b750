"""The scan's one-pass header reader (pneumoview.quick_header) against pydicom's reader, on the real test data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.quick_header import read_quick_header
from pneumoview.study_index import files as one_file
from pneumoview.study_index import headers, scan

# The broken test files make pydicom warn (that is what the fallback is for).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"
ROBUST = DICOM / "robustness" / "pydicom"


def _quick(path: Path):
    with open(path, "rb") as fh:
        head = fh.read(512)
        return read_quick_header(
            fh,
            head,
            headers.QUICK_WANTED,
            stop_tags=headers.PIXEL_TAGS,
            give_up_tags=headers.QUICK_GIVE_UP,
        )


def test_scan_gives_the_same_entries_with_and_without_the_quick_reader(monkeypatch):
    used = []
    real = one_file.quick_header

    def counting(*args, **kwargs):
        header = real(*args, **kwargs)
        used.append(header is not None)
        return header

    monkeypatch.setattr(one_file, "quick_header", counting)
    quick = [item.to_dict() for item in scan(DICOM)]
    monkeypatch.setattr(one_file, "quick_header", lambda *args, **kwargs: None)
    full = [item.to_dict() for item in scan(DICOM)]
    assert len(quick) == len(full) > 100
    for a, b in zip(quick, full, strict=True):
        assert a == b, a["path"]
    # Most real files are plain and take the quick path; the odd ones went to pydicom.
    assert sum(used) > len(used) // 2 and not all(used)


def test_quick_reader_reads_a_plain_radiograph():
    path = DICOM / "chest" / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    header = _quick(path)
    assert header is not None
    assert header.values["Rows"] == header.values["Columns"] == 1024
    assert header.values["Modality"] == "CR"
    assert header.values["SOPInstanceUID"] == "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"
    assert header.values["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.50"
    assert header.pixel_tag == 0x7FE00010 and header.pixel_length == 0xFFFFFFFF
    assert 0 < header.pixel_position < path.stat().st_size


@pytest.mark.parametrize(
    "name",
    [
        "ExplVR_BigEndNoMeta.dcm",  # no preamble
        "MR_small_bigendian.dcm",  # big endian
        "image_dfl.dcm",  # deflated
        "badVR.dcm",  # a VR pydicom has to guess
        "UN_sequence.dcm",  # an undefined-length UN
        "dicomdirtests/DICOMDIR",  # a file-set index
    ],
)
def test_quick_reader_leaves_unusual_files_to_pydicom(name):
    assert _quick(ROBUST / name) is None


def test_truncated_header_goes_to_pydicom(tmp_path):
    source = (ROBUST / "CT_small.dcm").read_bytes()
    assert _quick(ROBUST / "CT_small.dcm") is not None
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source[:700])  # inside the header, before the pixel data
    assert _quick(cut) is None
