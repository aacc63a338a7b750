"""Which evaluated images a model was trained on: its training split, rebuilt from what its manifest records.

A model's manifest entry records its data (labels file, images folder, index), the split seed and the held-out
fraction. The split is rebuilt exactly as ``pneumoview train`` made it (:func:`~pneumoview.training.splits.patient_split`
over :func:`~pneumoview.training.datasets.load_rsna` records) and checked against the recorded image counts. An
evaluated image counts as "trained on" when its patient (``nih_patient`` in the index, since several RSNA patientIds
can be one NIH patient; else the patientId) was on the training side. Torch-free.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumoview.training.datasets import load_rsna, patient_strata
from pneumoview.training.splits import patient_split

__all__ = ["Overlap", "training_overlap"]

_FOLDER = re.compile(r"images from (\S+?)/")
_FRACTION = re.compile(r"(\d+(?:\.\d+)?)% of patients held out")


@dataclass(frozen=True)
class Overlap:
    """Evaluated images whose patient was in the training split shared by ``models``.

    Attributes:
        models: ids of the models trained on that split.
        image_ids: the evaluated image ids (RSNA patientIds) whose patient was trained on, sorted.
        problem: why the split could not be rebuilt (then ``image_ids`` is empty), else None.
    """

    models: tuple[str, ...]
    image_ids: tuple[str, ...]
    problem: str | None = None


def _patients(index_csv: Path) -> dict[str, str]:
    with open(index_csv, newline="", encoding="utf-8") as f:
        return {r["patientId"]: (r.get("nih_patient") or r["patientId"]) for r in csv.DictReader(f)}


def _split_config(training: Mapping[str, Any]) -> tuple[str, float, int] | None:
    """(images folder name, held-out fraction, seed) of a simple held-out RSNA split, else None."""
    data = str(training.get("data", ""))
    folder = _FOLDER.search(data)
    fraction = _FRACTION.search(str(training.get("split", "")))
    if training.get("layout") != "rsna" or not folder or not fraction or "split_seed" not in training:
        return None
    return folder.group(1), float(fraction.group(1)) / 100.0, int(training["split_seed"])


def _training_patients(data_dir: Path, folder: str, fraction: float, seed: int, expected: tuple[int, int]):
    index = data_dir / "index.csv"
    classes = data_dir / "stage_2_detailed_class_info.csv"
    src = load_rsna(
        data_dir / "stage_2_train_labels.csv",
        data_dir / folder,
        classes if classes.exists() else None,
        index if index.exists() else None,
    )
    recs = src.records
    split = patient_split([r.patient for r in recs], patient_strata(recs), val_fraction=fraction, seed=seed)
    if (len(split.train), len(split.val)) != expected:
        raise ValueError(
            f"the rebuilt split has {len(split.train)}/{len(split.val)} training/validation images, the manifest "
            f"records {expected[0]}/{expected[1]}"
        )
    return {recs[i].patient for i in split.train}


def training_overlap(image_ids: Iterable[str], specs: Iterable[Any], data_dir: str | Path) -> list[Overlap]:
    """For each training split among ``specs`` (manifest :class:`ModelSpec`s), the evaluated images it contains.

    Args:
        image_ids: the evaluated RSNA patientIds.
        specs: models with a ``training`` mapping (from their manifest entries); others are ignored.
        data_dir: the folder holding ``stage_2_train_labels.csv``, the images folder the manifest names and
            ``index.csv`` (RSNA layout, as in ``../shared/data/rsna``).

    Returns:
        one :class:`Overlap` per distinct split; one with ``problem`` set when a split could not be rebuilt.
    """
    data_dir = Path(data_dir)
    ids = list(image_ids)
    groups: dict[tuple[str, float, int, tuple[int, int]], list[str]] = {}
    for spec in specs:
        t = getattr(spec, "training", None) or {}
        cfg = _split_config(t)
        if cfg is None:
            continue
        expected = (int(t.get("train_images", -1)), int(t.get("val_images", -1)))
        groups.setdefault((*cfg, expected), []).append(spec.id)
    index = data_dir / "index.csv"
    patient_of = _patients(index) if index.exists() else {}
    out = []
    for (folder, fraction, seed, expected), models in groups.items():
        try:
            trained = _training_patients(data_dir, folder, fraction, seed, expected)
        except (OSError, ValueError, KeyError) as exc:
            out.append(
                Overlap(tuple(models), (), f"cannot rebuild the training split from {data_dir}: {exc}")
            )
            continue
        hit = sorted(i for i in ids if patient_of.get(i, i) in trained)
        out.append(Overlap(tuple(models), tuple(hit)))
    return out
