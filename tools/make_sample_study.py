"""Build PneumoView's sample study: six RSNA-style chest radiograph DICOMs with their labels.

Usage::

    python tools/make_sample_study.py [--out DIR] [--data DIR]

Takes 6 of the 60 full-resolution NIH-source images in ``<data>/rsna/images-1024`` (3 "Lung Opacity" with boxes,
2 "No Lung Opacity / Not Normal", 1 "Normal"; the first ones by patientId, so the choice is stable), writes each as
``<patientId>.dcm`` with :func:`tools.rsna_dicom.write_rsna_dicom` using the patient's real RSNA header values,
then ``labels.csv`` (the ``stage_2_train_labels.csv`` rows of those patients plus a ``class`` column) and
``ATTRIBUTION.md``. The data folder is only read. Re-running gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.rsna_dicom import read_rsna_headers, write_rsna_dicom  # noqa: E402

DEFAULT_OUT = REPO / "pneumoview" / "data" / "sample_study"
DEFAULT_DATA = REPO.parent / "shared" / "data"
LABEL_COLUMNS = ["patientId", "x", "y", "width", "height", "Target", "class"]

ATTRIBUTION = """\
# Sample study: attribution and terms

Six chest radiographs written as RSNA-Pneumonia-challenge-style DICOM files by `tools/make_sample_study.py`
(8-bit MONOCHROME2 JPEG-baseline CR, the challenge's tag layout and header values). **Research use only, not for
diagnosis.**

## Pixels: NIH ChestX-ray14
The images are NIH Clinical Center ChestX-ray14 radiographs (public release), taken from the lossless PNGs in
`shared/data/rsna/images-1024` and re-encoded as JPEG (quality 95).

> Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and
> Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases. IEEE CVPR 2017.

Please acknowledge the NIH Clinical Center as the data provider.

## Labels and header values: RSNA Pneumonia Detection Challenge
`labels.csv` holds the official `stage_2_train_labels.csv` rows (boxes in the 1024×1024 pixel frame) and
`stage_2_detailed_class_info.csv` classes of these patients; age, sex, view and pixel spacing come from the
challenge's DICOM headers. Research and non-commercial use.

> Shih G, Wu CC, Halabi SS, et al. Augmenting the National Institutes of Health Chest Radiograph Dataset with
> Expert Annotations of Possible Pneumonia. Radiology: Artificial Intelligence 2019;1(1):e180041.

## Files
| file | RSNA class | boxes | NIH image | source of the PNG |
|---|---|---|---|---|
"""


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def choose_patients(index: list[dict[str, str]]) -> list[dict[str, str]]:
    """3 Lung Opacity (two with 2 boxes, one with 1), 2 Not Normal, 1 Normal among the 1024-px images."""
    rows = sorted((r for r in index if r.get("file_1024")), key=lambda r: r["patientId"])

    def first(cls: str, n: int, boxes: str | None = None) -> list[dict[str, str]]:
        picked = [r for r in rows if r["rsna_class"] == cls and (boxes is None or r["n_boxes"] == boxes)][:n]
        if len(picked) < n:
            raise SystemExit(f"not enough 1024-px images of class {cls!r} in index.csv")
        return picked

    return (
        first("Lung Opacity", 2, "2")
        + first("Lung Opacity", 1, "1")
        + first("No Lung Opacity / Not Normal", 2)
        + first("Normal", 1)
    )


def build(out: Path, data: Path) -> list[Path]:
    """Write the sample study into ``out``; returns the DICOM files written."""
    rsna = data / "rsna"
    chosen = choose_patients(_read_csv(rsna / "index.csv"))
    ids = [r["patientId"] for r in chosen]
    headers = read_rsna_headers(rsna / "stage_2_train_dicom_headers.csv.gz", ids)
    missing = set(ids) - set(headers)
    if missing:
        raise SystemExit(f"no DICOM header rows for {sorted(missing)}")

    written = [
        write_rsna_dicom(
            rsna / r["file_1024"],
            out / f"{r['patientId']}.dcm",
            patient_id=r["patientId"],
            **headers[r["patientId"]],
        )
        for r in chosen
    ]

    labels = _read_csv(rsna / "stage_2_train_labels.csv")
    classes = _read_csv(rsna / "stage_2_detailed_class_info.csv")
    wanted = set(ids)
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for label, info in zip(labels, classes, strict=True):  # the two files are aligned row for row
            if label["patientId"] in wanted:
                assert info["patientId"] == label["patientId"]
                writer.writerow({**label, "class": info["class"]})

    lines = [
        f"| `{r['patientId']}.dcm` | {r['rsna_class']} | {r['n_boxes']} | {r['nih_image']} | "
        f"{r['origin_repo']}@{r['origin_commit'][:12]} `{r['origin_path']}` ({r['license']}) |"
        for r in chosen
    ]
    (out / "ATTRIBUTION.md").write_text(ATTRIBUTION + "\n".join(lines) + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"shared data folder (default {DEFAULT_DATA})"
    )
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(args.data.resolve()):
        parser.error("--out must not be inside the data folder, which is read-only")
    written = build(args.out, args.data)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(
        f"wrote {len(written)} DICOM files, labels.csv and ATTRIBUTION.md to {args.out} ({total / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
