#!/usr/bin/env python3
"""Write the patient-level validation (or training) split that `pneumoview train` uses, as a patientId CSV.

The shipped models were all trained with ``--split-seed 0 --val-fraction 0.2`` on the RSNA subset; this lists the
held-out images so that `pneumoview tune ... --only val.csv` and `pneumoview evaluate` measure them honestly:

    python tools/validation_split.py --data ../shared/data/rsna --out val.csv [--train]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumoview.training.datasets import load_rsna, patient_strata  # noqa: E402
from pneumoview.training.splits import patient_split  # noqa: E402

SPLIT_SEED, VAL_FRACTION = 0, 0.2  # the shipped models' split


def shipped_split(
    data: Path, images: Path | None = None, seed: int = SPLIT_SEED, val_fraction: float = VAL_FRACTION
):
    """``(records, split)``: the RSNA records under ``data`` and the patient-level split ``pneumoview train`` makes
    with these settings (the same call); the default is the shipped models' split."""
    src = load_rsna(
        data / "stage_2_train_labels.csv",
        images or data / "images-512",
        data / "stage_2_detailed_class_info.csv",
        data / "index.csv" if (data / "index.csv").is_file() else None,  # without it, each image is a patient
    )
    records = src.records
    split = patient_split(
        [r.patient for r in records], patient_strata(records), val_fraction=val_fraction, seed=seed
    )
    return records, split


def split_ids(data: Path) -> tuple[list[str], list[str]]:
    """The patientIds of the shipped models' training and validation images (sorted)."""
    records, split = shipped_split(data)
    return sorted(records[i].key for i in split.train), sorted(records[i].key for i in split.val)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/rsna"))
    ap.add_argument("--images", type=Path, default=None, help="default: DATA/images-512")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--train", action="store_true", help="write the training side instead")
    args = ap.parse_args()
    records, split = shipped_split(args.data, args.images, args.seed, args.val_fraction)
    side = split.train if args.train else split.val
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["patientId", "patient", "class"])
        for i in side:
            w.writerow([records[i].key, records[i].patient, records[i].label])
    print(f"{len(side)} {'training' if args.train else 'validation'} images written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
