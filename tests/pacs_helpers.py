"""Helpers for the PACS tests (importable without registering the fixtures plugin): free ports and real
studies to put on the server."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_STUDY = Path(__file__).resolve().parents[1] / "pneumoview" / "data" / "sample_study"
ECG_WAVEFORM = SHARED / "dicom" / "robustness" / "pydicom" / "waveform_ecg.dcm"


def sample_files() -> list[Path]:
    """The sample study's six real RSNA-style DICOMs (JPEG baseline, one study each)."""
    files = sorted(SAMPLE_STUDY.glob("*.dcm"))
    assert len(files) == 6, f"expected the sample study's 6 DICOMs in {SAMPLE_STUDY}"
    return files


def make_study(dest: Path, n_images: int, *, with_ecg: bool = False, seed: int = 0) -> tuple[str, list[Path]]:
    """One study of ``n_images`` real radiographs (the sample study's files, reused with new instance UIDs when
    ``n_images > 6``) in one series, plus optionally a real 12-lead ECG waveform (a non-image object) in a second
    series. Only the UIDs and the patient change; pixels are untouched. Returns ``(StudyInstanceUID, files)``."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    dest.mkdir(parents=True, exist_ok=True)
    prefix = "1.2.826.0.1.3680043.10.1234."  # deterministic per seed, so each test's study is its own
    study_uid = generate_uid(prefix, [f"study-{seed}-{n_images}-{with_ecg}"])
    series_uid = generate_uid(prefix, [f"series-{seed}-{n_images}"])
    sources = sample_files()
    out = []
    for i in range(n_images):
        ds = dcmread(sources[i % len(sources)])
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(prefix, [f"image-{seed}-{n_images}-{i}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = ds.PatientName = f"PACS-TEST-{seed}"
        ds.InstanceNumber = i + 1
        path = dest / f"image{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    if with_ecg:
        ds = dcmread(ECG_WAVEFORM)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid(prefix, [f"ecg-series-{seed}"])
        ds.SOPInstanceUID = generate_uid(prefix, [f"ecg-{seed}-{n_images}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = ds.PatientName = f"PACS-TEST-{seed}"
        path = dest / "ecg.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return study_uid, out
