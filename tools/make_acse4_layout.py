#!/usr/bin/env python3
"""Assemble seed 002's four-class folder layout from ``../shared/data/acse4`` and ``../shared/data/rsna`` (symlinks).

    python tools/make_acse4_layout.py --out /work/data/acse4-layout [--data ../shared/data] [--seed 0]

writes ``OUT/train/{covid,lung_opacity,normal,pneumonia}/`` and ``OUT/val/{...}/`` of symbolic links to the
original files (nothing is copied, the data folders are only read) plus ``OUT/index.csv``
(``file,acse4_class,split,nih_patient,source``), which ``pneumoview train classifier --images OUT/train --val-images
OUT/val --index OUT/index.csv`` uses for the patient groups.

Classes: ``covid`` = acse4/covid (Cohen et al.), ``pneumonia`` = acse4/pneumonia (NIH "Pneumonia"), ``normal`` =
acse4/normal (NIH "No Finding") + RSNA ``Normal``, ``lung_opacity`` = RSNA ``Lung Opacity`` (RSNA's third class,
"No Lung Opacity / Not Normal", is left out).

The validation split is by patient and deterministic:

* an NIH patient with RSNA images keeps the side the shipped RSNA models' split gave it (``--split-seed 0
  --val-fraction 0.2``), so a model started from ``rsna3-classifier`` never saw a validation patient;
* other NIH patients are split by patient, stratified by class, with ``--seed``, ``--val-fraction`` of them held out;
* COVID files carry no patient id, so they are split by file.

The output folder must be outside this repository (the images may not be redistributed).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pneumoview.training.datasets import load_rsna, patient_strata  # noqa: E402
from pneumoview.training.splits import patient_split  # noqa: E402

CLASSES = ("covid", "lung_opacity", "normal", "pneumonia")
RSNA_TO_ACSE4 = {"Normal": "normal", "Lung Opacity": "lung_opacity"}


@dataclass(frozen=True)
class Item:
    """One image of the layout: its file, class, patient group (empty for COVID) and origin collection."""

    path: Path
    klass: str
    patient: str
    source: str


def rsna_items(rsna: Path) -> list[Item]:
    """RSNA ``Normal`` and ``Lung Opacity`` images (512 px) with their NIH patient."""
    out = []
    with open(rsna / "index.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            klass = RSNA_TO_ACSE4.get(row["rsna_class"])
            if klass is not None and row["file_512"]:
                out.append(Item(rsna / row["file_512"], klass, row["nih_patient"], "rsna"))
    return out


def acse4_items(acse4: Path) -> list[Item]:
    """The acse4 folder's COVID, NIH Pneumonia and NIH No Finding images."""
    out = []
    with open(acse4 / "index.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            source = "cohen-covid" if row["acse4_class"] == "covid" else "nih"
            out.append(Item(acse4 / row["file"], row["acse4_class"], row["nih_patient"].strip(), source))
    return out


def rsna_val_patients(rsna: Path, seed: int = 0, val_fraction: float = 0.2) -> tuple[set[str], set[str]]:
    """(training, validation) NIH patients of the split the shipped RSNA models were trained with."""
    src = load_rsna(
        rsna / "stage_2_train_labels.csv",
        rsna / "images-512",
        rsna / "stage_2_detailed_class_info.csv",
        rsna / "index.csv",
    )
    records = src.records
    split = patient_split(
        [r.patient for r in records], patient_strata(records), val_fraction=val_fraction, seed=seed
    )
    return {records[i].patient for i in split.train}, {records[i].patient for i in split.val}


def assign(
    items: list[Item], rsna_train: set[str], rsna_val: set[str], *, seed: int, val_fraction: float
) -> list[bool]:
    """Whether each item is held out for validation (see the module docstring for the rules)."""
    free: dict[str, str] = {}
    for it in items:
        if it.patient and it.patient not in rsna_train and it.patient not in rsna_val:
            free.setdefault(it.patient, it.klass)
    # COVID files are their own group (no patient id).
    covid_keys = {f"file:{it.path.name}": it.klass for it in items if not it.patient}
    groups = {**free, **covid_keys}
    split = patient_split(list(groups), groups, val_fraction=val_fraction, seed=seed)
    keys = list(groups)
    held = {keys[i] for i in split.val}
    out = []
    for it in items:
        if not it.patient:
            out.append(f"file:{it.path.name}" in held)
        elif it.patient in rsna_val:
            out.append(True)
        elif it.patient in rsna_train:
            out.append(False)
        else:
            out.append(it.patient in held)
    return out


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def build(data: Path, out: Path, *, seed: int = 0, val_fraction: float = 0.2) -> dict[str, Counter[str]]:
    """Write the layout under ``out`` (see the module docstring); returns image counts per split and class.

    Raises:
        ValueError: ``out`` is inside this repository, or is a non-empty folder that is not a layout.
        FileNotFoundError: a data folder or listed image is missing.
    """
    if _inside(out, REPO):
        raise ValueError(f"{out} is inside the repository; write the layout outside it (e.g. /work/data/...)")
    for needed in (data / "rsna" / "index.csv", data / "acse4" / "index.csv"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing; pass --data pointing at the shared data folder")
    if out.exists() and any(out.iterdir()) and not (out / "index.csv").is_file():
        raise ValueError(f"{out} is not empty and not a layout this tool wrote; choose an empty folder")
    items = rsna_items(data / "rsna") + acse4_items(data / "acse4")
    missing = [it.path for it in items if not it.path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed images are missing, e.g. {missing[0]}")
    rsna_train, rsna_val = rsna_val_patients(data / "rsna")
    held = assign(items, rsna_train, rsna_val, seed=seed, val_fraction=val_fraction)
    counts: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
    for side in counts:
        for klass in CLASSES:
            folder = out / side / klass
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.iterdir():
                if old.is_symlink():
                    old.unlink()
    rows = []
    for it, is_val in zip(items, held, strict=True):
        side = "val" if is_val else "train"
        link = out / side / it.klass / it.path.name
        if link.exists() or link.is_symlink():
            raise ValueError(f"two images named {it.path.name} in class {it.klass}")
        link.symlink_to(it.path.resolve())
        counts[side][it.klass] += 1
        rows.append([f"{side}/{it.klass}/{it.path.name}", it.klass, side, it.patient, it.source])
    tmp = out / "index.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "acse4_class", "split", "nih_patient", "source"])
        w.writerows(rows)
    tmp.replace(out / "index.csv")
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder"
    )
    ap.add_argument("--out", type=Path, required=True, help="layout folder, outside the repository")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split of patients not in the RSNA set")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    args = ap.parse_args(argv)
    try:
        counts = build(args.data, args.out, seed=args.seed, val_fraction=args.val_fraction)
    except (ValueError, FileNotFoundError) as exc:
        print(f"make_acse4_layout: error: {exc}", file=sys.stderr)
        return 2
    for side, c in counts.items():
        print(f"{side}: {sum(c.values())} images (" + ", ".join(f"{k} {c[k]}" for k in CLASSES) + ")")
    print(f"layout written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
