#!/usr/bin/env python3
"""Write the shipped models' held-out validation split as RSNA-style DICOMs with their real header values.

The shipped models hold out 20 % of NIH patients (split seed 0, :func:`pneumoview.training.splits.patient_split`,
the same call ``pneumoview train`` makes). The held-out figures in the README come from ``pneumoview predict`` on
these DICOM files, so the classifier reads View Position, Patient's Age and Patient's Sex from the header exactly as
it does on a user's files. Pixels are the 512-px challenge images (re-encoded as JPEG baseline, quality 95);
Pixel Spacing is the header's 1024-px value doubled. ``labels.csv`` beside them holds their challenge labels.

    python tools/make_heldout_dicoms.py OUT [--data ../shared/data/rsna] [--split val|train]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.rsna_dicom import read_rsna_headers, write_rsna_dicom  # noqa: E402
from tools.validation_split import split_ids  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rsna")
    ap.add_argument("--split", choices=("val", "train"), default="val")
    args = ap.parse_args(argv)
    train, val = split_ids(args.data)
    ids = val if args.split == "val" else train
    headers = read_rsna_headers(args.data / "stage_2_train_dicom_headers.csv.gz", ids)
    missing = sorted(set(ids) - set(headers))
    if missing:
        print(f"error: no header rows for {len(missing)} images (e.g. {missing[0]})", file=sys.stderr)
        return 1
    index = {r["patientId"]: r for r in csv.DictReader((args.data / "index.csv").open(newline=""))}
    for pid in ids:
        h = dict(headers[pid])
        h["pixel_spacing"] = 2.0 * float(h["pixel_spacing"])  # type: ignore[arg-type]
        out = args.out / f"{pid}.dcm"
        if not out.exists():
            write_rsna_dicom(args.data / index[pid]["file_512"], out, patient_id=pid, quality=95, **h)  # type: ignore[arg-type]
    wanted = set(ids)
    with (args.data / "stage_2_train_labels.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["patientId"] in wanted]
    with (args.out / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"{len(ids)} {args.split} images written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
