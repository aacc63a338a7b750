"""RSNA-style DICOM inputs for the CLI tests, made from the shared RSNA data's real NIH pixels and headers."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RSNA = DATA / "rsna"


def write_rsna_dicoms(dest: Path, count: int = 2) -> None:
    """Write the first ``count`` RSNA training images as ``dest/<patientId>.dcm`` (Patient's Age, sex, view and
    pixel spacing as RSNA's headers give them)."""
    from tools.rsna_dicom import read_rsna_headers, write_rsna_dicom

    pngs = sorted((RSNA / "images-1024").glob("*.png"))[:count]
    headers = read_rsna_headers(RSNA / "stage_2_train_dicom_headers.csv.gz", [p.stem for p in pngs])
    for p in pngs:
        h = headers[p.stem]
        write_rsna_dicom(p, dest / f"{p.stem}.dcm", patient_id=p.stem, age=h["age"], sex=h["sex"], view=h["view"],
                         pixel_spacing=h["pixel_spacing"])  # fmt: skip
