"""Patient-level stratified splits on the real RSNA index (nih_patient groups several patientIds)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumoview.training.datasets import load_rsna, patient_strata
from pneumoview.training.splits import assign_folds, patient_split

RSNA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna"


@pytest.fixture(scope="module")
def records():
    source = load_rsna(
        RSNA / "stage_2_train_labels.csv",
        RSNA / "images-512",
        classes_csv=RSNA / "stage_2_detailed_class_info.csv",
        index_csv=RSNA / "index.csv",
    )
    return source.records


def test_index_groups_patient_ids_by_nih_patient(records):
    per_patient = Counter(r.patient for r in records)
    assert len(records) == 1617
    assert len(per_patient) == 1333  # 1,617 RSNA patientIds are 1,333 NIH patients
    assert max(per_patient.values()) > 1


def _check_no_leak(records, split):
    train_p = {records[i].patient for i in split.train}
    val_p = {records[i].patient for i in split.val}
    assert not train_p & val_p
    assert sorted(np.concatenate([split.train, split.val]).tolist()) == list(range(len(records)))


def test_holdout_split_never_leaks_and_is_stratified(records):
    strata = patient_strata(records)
    split = patient_split([r.patient for r in records], strata, val_fraction=0.2, seed=0)
    _check_no_leak(records, split)
    # Per class, the held-out share of patients is 20 % (rounded per stratum).
    val_p = {records[i].patient for i in split.val}
    for cls, n in Counter(strata.values()).items():
        held = sum(1 for p, c in strata.items() if c == cls and p in val_p)
        assert abs(held - 0.2 * n) <= 1, (cls, held, n)
    # Image-level class shares in validation stay close to the whole set's.
    whole = Counter(r.label for r in records)
    val = Counter(records[i].label for i in split.val)
    for cls in whole:
        assert abs(val[cls] / len(split.val) - whole[cls] / len(records)) < 0.03


def test_split_is_seeded(records):
    patients = [r.patient for r in records]
    strata = patient_strata(records)
    a = patient_split(patients, strata, seed=0)
    b = patient_split(patients, strata, seed=0)
    c = patient_split(patients, strata, seed=1)
    assert np.array_equal(a.val, b.val)
    assert not np.array_equal(a.val, c.val)


def test_kfold_partitions_patients_and_balances_classes(records):
    patients = [r.patient for r in records]
    strata = patient_strata(records)
    folds = assign_folds(strata, 5, seed=3)
    seen_val: set[int] = set()
    for k in range(5):
        split = patient_split(patients, strata, seed=3, folds=5, fold=k)
        _check_no_leak(records, split)
        assert not seen_val & set(split.val.tolist())
        seen_val |= set(split.val.tolist())
    assert seen_val == set(range(len(records)))
    # Each stratum is dealt round-robin: per class, fold sizes differ by at most one patient.
    for cls in set(strata.values()):
        sizes = Counter(folds[p] for p, c in strata.items() if c == cls)
        assert max(sizes.values()) - min(sizes.values()) <= 1


def test_most_severe_class_stratifies_a_patient(records):
    strata = patient_strata(records)
    by_patient: dict[str, set[str]] = {}
    for r in records:
        by_patient.setdefault(r.patient, set()).add(r.label)
    mixed = [p for p, labels in by_patient.items() if "Lung Opacity" in labels and len(labels) > 1]
    assert mixed, "the real index has patients with images of several classes"
    assert all(strata[p] == "Lung Opacity" for p in mixed)


def test_bad_fold_is_refused():
    with pytest.raises(ValueError, match="--fold"):
        patient_split(["a", "b"], {"a": "x", "b": "x"}, folds=2, fold=2)
