"""The weights shipped in ``models/``: present, verified, loadable, honestly documented, and doing their job on real
validation radiographs (images of patients none of the shipped models trained on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumoview.imaging import load_image
from pneumoview.inference.engine import Engine, StageSelection
from pneumoview.inference.manifest import load_manifest
from pneumoview.inference.weights import build_and_load, verified_weights
from pneumoview.rsna_labels import scale_boxes
from pneumoview.training.datasets import load_rsna, patient_strata
from pneumoview.training.splits import patient_split
from pneumoview.training.transfer import split_mismatch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
RSNA = ROOT.parent / "shared" / "data" / "rsna"
SHIPPED = ("rsna3-classifier", "detector", "seg-unet-resnet18", "seg-deeplabv3plus-resnet18")


@pytest.fixture(scope="module")
def manifest():
    return load_manifest([MODELS])


@pytest.fixture(scope="module")
def validation():
    """The shipped models' validation split (split seed 0, 20 % of patients): RSNA records, positives first."""
    source = load_rsna(
        RSNA / "stage_2_train_labels.csv",
        RSNA / "images-512",
        classes_csv=RSNA / "stage_2_detailed_class_info.csv",
        index_csv=RSNA / "index.csv",
    )
    records = source.records
    split = patient_split([r.patient for r in records], patient_strata(records), val_fraction=0.2, seed=0)
    return source, [records[i] for i in split.val]


def test_every_shipped_model_verifies_and_loads(manifest):
    assert set(SHIPPED) <= set(manifest.models) and "seg-ensemble" in manifest.ensembles
    total = 0
    for model_id in SHIPPED:
        spec = manifest.model(model_id)
        path = verified_weights(spec, [MODELS])
        total += path.stat().st_size
        build_and_load(spec, path)  # strict
        assert spec.metrics.get("metric") in spec.metrics, f"{model_id} records its validation metric"
        assert spec.training["val_images"] == 335 and spec.intended_use.startswith("Research use only")
    assert total < 150 * 2**20
    # Every weights file in models/, the optional ones (acse4-classifier) included, stays under the budget too.
    assert sum(p.stat().st_size for p in MODELS.glob("*.pt")) < 150 * 2**20


def test_detector_starts_from_the_shipped_classifier_on_the_same_split(manifest):
    detector, classifier = manifest.model("detector"), manifest.model("rsna3-classifier")
    # The same weights: 1.1.0 only added the P(opacity) calibration to the 1.0.0 the detector started from.
    init = detector.training["init_from"]
    assert init.startswith("rsna3-classifier 1.") and init.endswith(f"(sha256 {classifier.sha256[:12]})")
    # Same data, split seed and validation size: the classifier never saw a detector validation patient.
    t = detector.training
    assert (
        split_mismatch(
            classifier.training,
            data=t["data"],
            split_seed=t["split_seed"],
            folds=t.get("folds"),
            fold=t.get("fold"),
            val_images=t["val_images"],
        )  # fmt: skip
        is None
    )
    assert detector.builder == "fasterrcnn_resnet18_fpn" and detector.metrics["rsna_map"] > 0.05


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_shipped_detector_finds_opacities_on_validation_radiographs(validation):
    """On 24 positive and 24 negative validation images: positives score higher, and the top box lands on one."""
    _, val = validation
    positives = [r for r in val if r.label == "Lung Opacity"][:24]
    negatives = [r for r in val if r.label != "Lung Opacity"][:24]
    engine = Engine(
        device="cpu",
        models_dir=MODELS,
        selection=StageSelection(classify=None, segment=None, detect="detector"),
    )
    top_scores, hits = {}, 0
    for rec in positives + negatives:
        image = load_image(rec.path)
        result = engine.analyze(image, stages=("detect",))
        scores = result.det_scores
        top_scores[rec.key] = float(scores[0]) if len(scores) else 0.0
        if rec in positives and len(scores):
            gt = scale_boxes(rec.boxes, result.image_shape)  # labels are in the 1024-px frame
            hits += max(_iou(result.det_boxes[0], g) for g in gt) >= 0.3
    pos = np.array([top_scores[r.key] for r in positives])
    neg = np.array([top_scores[r.key] for r in negatives])
    auc = float(np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))
    assert auc > 0.7, f"top-box score separates positives from negatives with AUC {auc:.2f}"
    assert hits >= len(positives) // 2, (
        f"the top box overlaps a radiologist's box (IoU ≥ 0.3) on {hits} images"
    )
