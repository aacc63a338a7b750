"""`pneumoview evaluate` warns when the images it scores were in a shipped model's training split."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.cli import main
from pneumoview.inference.manifest import load_manifest
from pneumoview.training.overlap import training_overlap

ROOT = Path(__file__).resolve().parents[1]
RSNA = ROOT.parent / "shared" / "data" / "rsna"
SHIPPED = ("rsna3-classifier", "seg-unet-resnet18", "seg-deeplabv3plus-resnet18", "detector")


@pytest.fixture(scope="module")
def split() -> dict[str, list[str]]:
    """The shipped split (seed 0, 20 %) as tools/validation_split.py writes it."""
    from pneumoview.training.datasets import load_rsna, patient_strata
    from pneumoview.training.splits import patient_split

    src = load_rsna(RSNA / "stage_2_train_labels.csv", RSNA / "images-512", RSNA / "stage_2_detailed_class_info.csv",
                    RSNA / "index.csv")  # fmt: skip
    recs = src.records
    s = patient_split([r.patient for r in recs], patient_strata(recs), val_fraction=0.2, seed=0)
    return {"train": [recs[i].key for i in s.train], "val": [recs[i].key for i in s.val]}


def test_overlap_is_the_training_split_of_every_shipped_model(split):
    specs = load_manifest([ROOT / "models"]).models.values()
    (o,) = training_overlap(split["train"][:5] + split["val"], specs, RSNA)
    assert o.problem is None and set(o.models) == set(SHIPPED)
    assert o.image_ids == tuple(sorted(split["train"][:5]))
    (o,) = training_overlap(split["val"], specs, RSNA)
    assert o.image_ids == ()


def test_overlap_cannot_be_checked_without_the_training_data(split, tmp_path: Path):
    (tmp_path / "stage_2_train_labels.csv").write_text((RSNA / "stage_2_train_labels.csv").read_text())
    (o,) = training_overlap(split["train"][:2], load_manifest([ROOT / "models"]).models.values(), tmp_path)
    assert o.image_ids == () and "cannot rebuild the training split" in o.problem


def _submission(path: Path, ids: list[str]) -> Path:
    path.write_text("patientId,PredictionString\n" + "".join(f"{i},\n" for i in ids), encoding="utf-8")
    return path


def test_evaluate_warns_on_training_images(split, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    args = [
        "--labels",
        str(RSNA / "stage_2_train_labels.csv"),
        "--models-dir",
        str(ROOT / "models"),
        "--image-size",
        "512",
    ]
    sub = _submission(tmp_path / "mixed.csv", split["train"][:3] + split["val"][:4])
    assert main(["evaluate", str(sub), *args]) == 0
    err = capsys.readouterr().err
    assert "warning: 3 of 7 evaluated images (or their patients) were in the training split of" in err
    assert all(m in err for m in SHIPPED) and split["train"][0] in err
    sub = _submission(tmp_path / "val.csv", split["val"][:4])
    assert main(["evaluate", str(sub), *args]) == 0
    assert "training split" not in capsys.readouterr().err
