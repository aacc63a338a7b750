"""tools/train_defaults.sh (the GPU training script) in its CPU smoke-test form: it trains the whole set on real RSNA
images and leaves a P(opacity) calibration and a fusion in the classifier's entry, fitted on out-of-fold outputs of
the training split and tied to the detector it trained."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoview.inference.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_fits_calibration_and_fusion_on_the_training_side(
    shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "train_defaults.sh"), "--quick", "--out", str(out), "--data",
         str(shared_data / "rsna")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = load_manifest([out], check_builders=False)
    classifier, detector = manifest.model("rsna3-classifier"), manifest.model("detector")
    assert classifier.calibration is not None and classifier.calibration.features == ("logit",)
    assert classifier.fusion is not None and classifier.fusion.features == ("logit", "det_score")
    assert classifier.fusion.detector == detector.sha256[:16]

    # The out-of-fold predictions cover the training side of the split exactly, each image scored once.
    kf = out / "runs" / "calibration"
    with open(kf / "train-index.csv", newline="") as f:
        train = {r["patientId"] for r in csv.DictReader(f)}
    with open(kf / "oof.csv", newline="") as f:
        oof = list(csv.DictReader(f))
    assert sorted(r["patientId"] for r in oof) == sorted(train)
    with open(ROOT / "docs" / "evidence" / "oof-fold2.csv", newline="") as f:
        validation_side = {r["patientId"] for r in csv.DictReader(f)}
    assert validation_side <= train  # the shipped split's training side, as the evidence files say
    assert {int(r["fold"]) for r in oof} == {0, 1, 2, 3, 4}
    # The fusion was fitted on the fold-0 detector's last epoch, never the epoch picked on fold 0.
    assert (kf / "models" / "runs" / "det-fold0" / "checkpoint.pt").is_file()
    assert "det-fold0-last" in load_manifest([kf / "models"], check_builders=False).models
