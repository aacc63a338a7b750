from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from pneumoview.metrics import (
    RSNA_IOU_THRESHOLDS,
    classification_report,
    iou_xywh,
    roc_auc,
    rsna_image_score,
    rsna_map,
)
from pneumoview.postprocess import shrink_boxes
from pneumoview.rsna_labels import read_labels

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RSNA = DATA / "rsna"


def rsna_gt() -> dict[str, np.ndarray]:
    """patientId → (k, 4) GT boxes (1024-px frame) for every patient in index.csv (negatives: empty)."""
    with open(RSNA / "index.csv", newline="") as fh:
        ids = {row["patientId"] for row in csv.DictReader(fh)}
    labels = read_labels(RSNA / "stage_2_train_labels.csv")
    return {pid: labels[pid].astype(np.float64) for pid in ids}


def community_map_iou(boxes_true, boxes_pred, scores, thresholds=RSNA_IOU_THRESHOLDS):
    """A plain-Python restatement of the community ``map_iou`` kernel (seeds.md §0.3), for cross-checking.

    Predictions are sorted by score (descending; the test data has distinct scores), then per threshold each
    GT box takes the first unmatched prediction with IoU >= t."""
    if len(boxes_true) == 0 and len(boxes_pred) == 0:
        return None
    order = sorted(range(len(boxes_pred)), key=lambda j: -scores[j])
    preds = [boxes_pred[j] for j in order]

    def iou(a, b):
        ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
        xi1, yi1, xi2, yi2 = max(a[0], b[0]), max(a[1], b[1]), min(ax2, bx2), min(ay2, by2)
        if xi2 <= xi1 or yi2 <= yi1:
            return 0.0
        inter = (xi2 - xi1) * (yi2 - yi1)
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    total = 0.0
    for t in thresholds:
        matched: set[int] = set()
        tp = fn = 0
        for bt in boxes_true:
            hit = False
            for j, bp in enumerate(preds):
                if not hit and j not in matched and iou(bt, bp) >= t:
                    hit = True
                    tp += 1
                    matched.add(j)
            if not hit:
                fn += 1
        fp = len(preds) - len(matched)
        total += tp / (tp + fn + fp)
    return total / len(thresholds)


# ---------------------------------------------------------------------------------------------- RSNA, by hand


def test_perfect_match_scores_one() -> None:
    gt = np.array([[100, 100, 200, 300], [500, 120, 150, 150]], float)
    assert rsna_image_score(gt, gt[::-1], [0.3, 0.9]) == 1.0


def test_iou_half_hits_three_of_eight_thresholds_inclusive() -> None:
    gt = np.array([[0, 0, 100, 100]], float)
    pred = np.array([[0, 0, 100, 50]], float)  # IoU = 5000 / 10000 = 0.5 exactly
    assert iou_xywh(gt, pred)[0, 0] == 0.5
    # >= : hits at 0.40, 0.45, 0.50 → precision 1 at 3 thresholds, 0 at 5 → 3/8.
    assert rsna_image_score(gt, pred, [0.9]) == 3 / 8
    # > (Kaggle text): hits at 0.40, 0.45 only → 2/8.
    assert rsna_image_score(gt, pred, [0.9], inclusive=False) == 2 / 8


def test_negative_and_empty_images() -> None:
    box = np.array([[10, 10, 50, 50]], float)
    none = np.zeros((0, 4))
    assert rsna_image_score(none, box, [0.99]) == 0.0  # any box on a negative image scores 0
    assert rsna_image_score(none, none, []) is None  # skipped
    assert rsna_image_score(box, none, []) == 0.0  # missed finding


def test_fp_and_fn_counts_by_hand() -> None:
    gt = np.array([[0, 0, 100, 100], [300, 300, 100, 100]], float)
    # one exact hit, one box far from everything: every threshold has TP 1, FP 1, FN 1 → 1/3.
    pred = np.array([[0, 0, 100, 100], [700, 700, 50, 50]], float)
    assert rsna_image_score(gt, pred, [0.5, 0.6]) == pytest.approx(1 / 3)


def test_confidence_order_decides_the_match() -> None:
    gt = np.array([[0, 0, 100, 100], [20, 0, 100, 100]], float)  # G0, G1
    q = [10, 0, 100, 100]  # IoU 9000 / 11000 = 0.818 with both G0 and G1
    p = [0, 0, 100, 100]  # = G0; IoU 8000 / 12000 = 0.667 with G1
    pred = np.array([q, p], float)
    # P first: G0 takes P, G1 takes Q at every threshold → 1.
    assert rsna_image_score(gt, pred, [0.1, 0.9]) == 1.0
    # Q first: at t <= 0.65 G0 takes Q and G1 takes P (0.667) → 1; at 0.70 and 0.75 G0 takes Q, P no longer
    # hits G1 → TP 1, FP 1, FN 1 → 1/3. Image: (6 + 2/3) / 8 = 5/6.
    assert rsna_image_score(gt, pred, [0.9, 0.1]) == pytest.approx(5 / 6)


def test_matches_the_community_kernel_on_random_images() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n_gt, n_pred = int(rng.integers(0, 4)), int(rng.integers(0, 5))
        base = rng.uniform(0, 600, (max(n_gt, 1), 2))
        gt = np.concatenate([base[:n_gt], rng.uniform(80, 300, (n_gt, 2))], axis=1)
        # Predictions near the GT boxes (so IoUs spread over 0.3 … 1) plus a few random ones.
        src = gt[rng.integers(0, n_gt, n_pred)] if n_gt else rng.uniform(0, 600, (n_pred, 4))
        pred = src + rng.normal(0, 25, (n_pred, 4))
        pred[:, 2:] = np.abs(pred[:, 2:]) + 5
        scores = rng.permutation(n_pred) / max(n_pred, 1) + 0.01
        ours = rsna_image_score(gt, pred, scores)
        ref = community_map_iou(gt.tolist(), pred.tolist(), scores.tolist())
        if ref is None:
            assert ours is None
        else:
            assert ours == pytest.approx(ref, abs=1e-12)


def test_rsna_map_aggregates_and_checks_ids() -> None:
    gt = {"a": np.array([[0, 0, 10, 10]]), "b": np.zeros((0, 4)), "c": np.zeros((0, 4))}
    preds = {
        "a": (np.array([[0, 0, 10, 10]]), np.array([1.0])),
        "b": (np.array([[0, 0, 5, 5]]), np.array([0.5])),
    }
    res = rsna_map(gt, preds)
    # a: 1.0; b: FP on a negative → 0; c: nothing on a negative → skipped. Mean of (1, 0) = 0.5.
    assert res.map == 0.5 and res.per_image == {"a": 1.0, "b": 0.0, "c": None}
    assert (res.n_scored, res.n_skipped) == (2, 1)
    with pytest.raises(ValueError, match="no ground-truth entry"):
        rsna_map(gt, {"zzz": (np.zeros((0, 4)), np.zeros(0))})
    assert math.isnan(rsna_map({"c": np.zeros((0, 4))}, {}).map)


# ------------------------------------------------------------------------------------------ RSNA, real labels


@pytest.fixture(scope="module")
def real_gt() -> dict[str, np.ndarray]:
    gt = rsna_gt()
    assert len(gt) == 1617 and sum(len(v) > 0 for v in gt.values()) == 420
    return gt


def test_real_labels_as_predictions_score_exactly_one(real_gt: dict[str, np.ndarray]) -> None:
    preds = {k: (v, np.ones(len(v))) for k, v in real_gt.items()}
    res = rsna_map(real_gt, preds)
    assert res.map == 1.0
    assert res.n_scored == 420 and res.n_skipped == 1617 - 420


def test_real_labels_empty_submission_scores_zero(real_gt: dict[str, np.ndarray]) -> None:
    res = rsna_map(real_gt, {})
    assert res.map == 0.0 and res.n_scored == 420


def test_real_labels_shrunk_boxes_hit_the_expected_thresholds(real_gt: dict[str, np.ndarray]) -> None:
    # Shrinking a box to 80 % of width and height inside itself gives IoU 0.64: hits at 0.40 … 0.60 (5 of 8),
    # so every positive image scores 5/8 — provided no shrunk box also reaches a neighbouring GT box.
    preds = {k: (shrink_boxes(v, 0.8).astype(np.float64), np.ones(len(v))) for k, v in real_gt.items()}
    res = rsna_map(real_gt, preds)
    assert res.map == pytest.approx(5 / 8, abs=1e-12)
    # 87.5 % (the default shrink) gives IoU 0.7656 ≥ 0.75: still a perfect score.
    preds = {k: (shrink_boxes(v, 0.875).astype(np.float64), np.ones(len(v))) for k, v in real_gt.items()}
    assert rsna_map(real_gt, preds).map == 1.0


# ------------------------------------------------------------------------------------------------ classifier


def test_auc_by_hand() -> None:
    # Positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won (0.35>0.1), lost (0.35<0.4), won, won → 3/4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # Ties count ½: positive 0.5 vs negative 0.5 → ½; 0.5 > 0.2 → 1; 0.9 beats both → 2. Total 3.5 / 4.
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875
    assert roc_auc([1, 1, 0], [0.2, 0.2, 0.2]) == 0.5
    assert math.isnan(roc_auc([1, 1], [0.3, 0.4]))


def test_auc_equals_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 6, 40) / 5.0  # many ties
        if y.min() == y.max():
            continue
        pos, neg = s[y == 1], s[y == 0]
        pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(pos, neg)]
        assert roc_auc(y, s) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_classification_report_by_hand() -> None:
    y = [0, 0, 1, 1, 2, 2]
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # true 0 → 0
            [0.3, 0.6, 0.1],  # true 0 → 1
            [0.2, 0.5, 0.3],  # true 1 → 1
            [0.1, 0.8, 0.1],  # true 1 → 1
            [0.1, 0.1, 0.8],  # true 2 → 2
            [0.5, 0.1, 0.4],  # true 2 → 0
        ]
    )
    r = classification_report(y, probs, ["normal", "opacity", "pneumonia"])
    np.testing.assert_array_equal(r.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert r.accuracy == 4 / 6
    c0, c1, c2 = r.classes
    # class 0: TP 1, FP 1 (the last row), FN 1, TN 3 → precision ½, recall ½, FPR ¼, FNR ½.
    assert (c0.tp, c0.fp, c0.fn, c0.tn) == (1, 1, 1, 3)
    assert (c0.precision, c0.recall, c0.fpr, c0.fnr) == (0.5, 0.5, 0.25, 0.5)
    # class 1: TP 2, FP 1, FN 0, TN 3 → precision ⅔, recall 1, FPR ¼, FNR 0.
    assert (c1.precision, c1.recall, c1.fpr, c1.fnr) == (pytest.approx(2 / 3), 1.0, 0.25, 0.0)
    # class 2: TP 1, FP 0, FN 1, TN 4 → precision 1, recall ½, FPR 0.
    assert (c2.precision, c2.recall, c2.fpr) == (1.0, 0.5, 0.0)
    # AUC of class 0 from its column: positives 0.7, 0.3 vs negatives 0.2, 0.1, 0.1, 0.5:
    #   0.7 beats all 4; 0.3 beats 0.2, 0.1, 0.1 → 7 / 8.
    assert c0.auc == 7 / 8
    assert r.macro_auc == pytest.approx(np.mean([c.auc for c in r.classes]))
    assert r.to_dict()["classes"][0]["name"] == "normal"


def test_classification_report_undefined_values_are_nan_with_notes() -> None:
    # Nobody has class 2 and nothing is predicted as class 2.
    y = [0, 1, 1, 0]
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.4, 0.5, 0.1]])
    r = classification_report(y, probs, ["a", "b", "c"])
    assert math.isnan(r.classes[2].auc) and math.isnan(r.classes[2].precision)
    assert any("AUC of 'c' is undefined" in n for n in r.notes)
    assert r.macro_auc == pytest.approx((r.classes[0].auc + r.classes[1].auc) / 2)
    assert r.to_dict()["classes"][2]["auc"] is None
    with pytest.raises(ValueError, match="class names"):
        classification_report(y, probs, ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        classification_report([0, 3, 1, 0], probs, ["a", "b", "c"])


def test_binary_probabilities_as_a_vector() -> None:
    r = classification_report([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.6], ["negative", "positive"])
    # predictions 0, 1, 0, 1 → accuracy ½; AUC: positives 0.9, 0.4 vs 0.2, 0.6 → (2 + 1) / 4.
    assert r.accuracy == 0.5 and r.classes[1].auc == 0.75
