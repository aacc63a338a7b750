"""Honest train/validation splits: by patient, stratified by class, seeded.

Every image of one patient lands on the same side (several RSNA patientIds are the same NIH patient). Patients are
stratified by their class (:func:`pneumoview.training.datasets.patient_strata`): within each stratum the patients
are shuffled with the seed and dealt out, so every fold holds about the same share of each class.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Indices into the record list. ``train`` and ``val`` are sorted and share no patient."""

    train: np.ndarray
    val: np.ndarray
    seed: int
    folds: int | None
    fold: int | None
    val_fraction: float | None
    fixed: str | None = None

    def describe(self) -> str:
        if self.fixed:
            return f"validation fixed by the data ({self.fixed}); no patient on both sides"
        if self.folds:
            return f"fold {self.fold} of {self.folds} (seed {self.seed})"
        return f"{self.val_fraction:.0%} of patients held out (seed {self.seed})"


def assign_folds(strata: Mapping[str, str], folds: int, seed: int) -> dict[str, int]:
    """Deal patients into ``folds`` folds, stratum by stratum.

    Within each stratum (sorted by name) the patients are sorted, shuffled with ``seed`` and dealt round-robin;
    the deal continues from stratum to stratum so fold sizes differ by at most one patient.
    """
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for patient, stratum in strata.items():
        by_stratum[stratum].append(patient)
    out: dict[str, int] = {}
    position = 0
    for stratum in sorted(by_stratum):
        patients = sorted(by_stratum[stratum])
        for i in rng.permutation(len(patients)):
            out[patients[i]] = position % folds
            position += 1
    return out


def patient_split(
    patients: Sequence[str],
    strata: Mapping[str, str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    folds: int | None = None,
    fold: int | None = None,
) -> Split:
    """Split images (given by their patient) into train and validation.

    Args:
        patients: the patient of each image, in record order.
        strata: patient → stratum (class); every patient in ``patients`` must have one.
        val_fraction: share of each stratum's patients held out (ignored with ``folds``); rounded per stratum,
            at least one patient when the stratum has two or more.
        seed: the shuffle seed.
        folds, fold: K-fold mode: validation is fold ``fold`` (0-based) of ``folds``.
    """
    missing = sorted({p for p in patients if p not in strata})
    if missing:
        raise ValueError(f"{len(missing)} patients have no stratum (e.g. {missing[0]})")
    if folds is not None:
        if fold is None or not 0 <= fold < folds:
            raise ValueError(f"--fold must be in 0..{folds - 1} with --folds {folds}, got {fold}")
        fold_of = assign_folds({p: strata[p] for p in set(patients)}, folds, seed)
        val_patients = {p for p, f in fold_of.items() if f == fold}
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
        rng = np.random.default_rng(seed)
        by_stratum: dict[str, list[str]] = defaultdict(list)
        for p in sorted(set(patients)):
            by_stratum[strata[p]].append(p)
        val_patients = set()
        for stratum in sorted(by_stratum):
            group = by_stratum[stratum]
            n_val = round(len(group) * val_fraction)
            if len(group) >= 2:
                n_val = min(max(n_val, 1), len(group) - 1)
            order = rng.permutation(len(group))
            val_patients.update(group[i] for i in order[:n_val])
    is_val = np.asarray([p in val_patients for p in patients], dtype=bool)
    return Split(
        train=np.flatnonzero(~is_val),
        val=np.flatnonzero(is_val),
        seed=seed,
        folds=folds,
        fold=fold,
        val_fraction=None if folds is not None else val_fraction,
    )


def fixed_split(patients: Sequence[str], is_val: Sequence[bool], what: str, seed: int = 0) -> Split:
    """The split a dataset prescribes (a validation folder), checked: no patient may be on both sides.

    Raises:
        ValueError: a patient has images on both sides (naming one), or a side is empty.
    """
    flags = np.asarray(is_val, dtype=bool)
    val_patients = {p for p, v in zip(patients, flags, strict=True) if v}
    both = sorted({p for p, v in zip(patients, flags, strict=True) if not v} & val_patients)
    if both:
        raise ValueError(
            f"{what}: {len(both)} patients have images in both training and validation (e.g. {both[0]}); "
            "split the data by patient"
        )
    return Split(
        train=np.flatnonzero(~flags), val=np.flatnonzero(flags), seed=seed, folds=None, fold=None,
        val_fraction=None, fixed=what,
    )  # fmt: skip
