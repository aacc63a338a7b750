"""tools/pretrain_nih.py: NIH labels read right, and no validation or held-out patient's film used for pretraining."""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from tests.rsna_fixtures import DATA, RSNA
from tools.pretrain_nih import FINDINGS, nih_labels, training_images
from tools.validation_split import split_ids


@pytest.fixture(scope="module")
def train_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = set(split_ids(RSNA)[0])
    with open(RSNA / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["patientId"] in train]
    out = tmp_path_factory.mktemp("pretrain") / "index-train.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def _patients_of(index_rows: list[dict[str, str]], ids: set[str]) -> set[str]:
    return {r["nih_patient"] for r in index_rows if r["patientId"] in ids}


def test_nih_labels_are_multi_hot_over_the_14_findings_and_no_finding_is_zero():
    labels = nih_labels(DATA / "nih" / "Data_Entry_2017_v2020.csv.gz")
    assert len(labels) == 112_120
    with gzip.open(DATA / "nih" / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))[:2000]
    several = next(r for r in rows if r["Finding Labels"].count("|") >= 2)
    names = set(several["Finding Labels"].split("|"))
    got = {FINDINGS[k] for k in np.flatnonzero(labels[several["Image Index"]])}
    assert got == names and len(got) >= 3
    clear = next(r for r in rows if r["Finding Labels"] == "No Finding")
    assert not labels[clear["Image Index"]].any()


@pytest.mark.parametrize("fold", [None, 0])
def test_pretraining_images_leave_out_every_held_out_and_fold_validation_patient(train_index: Path, fold):
    from pneumoview.training.datasets import load_rsna, patient_strata
    from pneumoview.training.splits import patient_split

    args = argparse.Namespace(
        index=train_index, folds=None if fold is None else 5, fold=fold, split_seed=0, data=DATA
    )
    paths, names, patients = training_images(args)
    with open(RSNA / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    train_ids, held_out_ids = (set(ids) for ids in split_ids(RSNA))
    excluded = _patients_of(index, held_out_ids)
    if fold is not None:
        src = load_rsna(
            RSNA / "stage_2_train_labels.csv", RSNA / "images-512",
            classes_csv=RSNA / "stage_2_detailed_class_info.csv", index_csv=train_index,
        )  # fmt: skip
        recs = src.records
        split = patient_split([r.patient for r in recs], patient_strata(recs), seed=0, folds=5, fold=0)
        excluded |= {recs[i].patient for i in split.val}
    assert excluded and not excluded & set(patients)
    assert len(paths) == len(names) == len(patients)
    assert all(p.is_file() for p in paths)
    from_acse4 = [p for p in paths if "acse4" in p.parts]
    assert 400 < len(from_acse4) < 458  # the acse4 NIH images whose patients have no excluded RSNA film
    rsna_used = len(paths) - len(from_acse4)
    assert rsna_used == (len(train_ids) if fold is None else len(train_ids) - len(split.val))
