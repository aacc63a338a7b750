from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pneumoview.postprocess import (
    BoxSet,
    apply_gate,
    boxes_from_probability,
    boxes_to_prediction_string,
    filter_detections,
    fuse,
    iou_matrix,
    nms,
    parse_prediction_string,
    postprocess,
    seed001_boxes,
    shrink_boxes,
    xywh_to_xyxy,
)
from pneumoview.postprocess import _nearest_resize as nearest_resize
from pneumoview.rsna_labels import read_labels
from pneumoview.thresholds import Thresholds, field_names, min_area_mm2, min_area_px
from tests.threshold_presets import BOTH_SOURCES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RSNA = DATA / "rsna"


def rsna_boxes_1024() -> dict[str, np.ndarray]:
    """patientId → (k, 4) GT boxes (1024-px frame) for every patient in index.csv (negatives: empty)."""
    with open(RSNA / "index.csv", newline="") as fh:
        ids = {row["patientId"] for row in csv.DictReader(fh)}
    labels = read_labels(RSNA / "stage_2_train_labels.csv")
    return {pid: labels[pid].astype(np.float32) for pid in ids}


# ------------------------------------------------------------------------------------------------ thresholds


def test_threshold_defaults_match_the_seeds_and_the_out_of_fold_choice() -> None:
    t = Thresholds()
    assert t.min_area_fraction == 25000 / 1024**2
    # 25,000 px² at 1024² exactly, and a quarter of that at 512².
    assert min_area_px(t, (1024, 1024)) == 25000.0
    assert min_area_px(t, (512, 512)) == 6250.0
    # seg_threshold and min_area are seed 001's; shrink, det_score, fusion and gate were chosen by `tune` on
    # out-of-fold predictions of the training split (README, "Levers tried").
    assert (t.seg_threshold, t.shrink, t.det_score, t.nms_iou, t.fusion, t.fusion_iou, t.gate) == (
        0.5,
        0.95,
        0.6,
        0.3,
        "detector",
        0.4,
        0.1,
    )
    s = Thresholds.seed001()
    assert (s.mode, s.shrink, s.fusion, s.gate, s.confidence) == (
        "seed001",
        0.9,
        "segmentation",
        0.0,
        "foreground_fraction",
    )


def test_min_area_in_mm2_is_resolution_independent() -> None:
    t = Thresholds()
    # 25,000 px² × 0.168² mm² = 705.6 mm² at 1024 px; the same radiograph at 512 px has 0.336 mm pixels.
    assert min_area_mm2(t, (1024, 1024), (0.168, 0.168)) == pytest.approx(705.6)
    assert min_area_mm2(t, (512, 512), (0.336, 0.336)) == pytest.approx(705.6)
    assert min_area_mm2(t, (1024, 1024), None) is None


def test_thresholds_round_trip_through_json() -> None:
    t = Thresholds(seg_threshold=0.4, shrink=1.0, fusion="nms", confidence="foreground_fraction", gate=0)
    again = Thresholds.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t
    assert isinstance(again.gate, float)
    assert list(t.to_dict()) == list(field_names())
    assert Thresholds.from_dict({"det_score": 0.7}) == Thresholds(det_score=0.7)


def test_unknown_threshold_keys_name_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown threshold key\(s\) 'seg_thresh'.*valid keys: seg_threshold"
    ):
        Thresholds.from_dict({"seg_thresh": 0.5})
    with pytest.raises(ValueError, match="valid keys"):
        Thresholds().replace(bogus=1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seg_threshold": 1.5}, r"'seg_threshold' is a probability and must lie in \[0, 1\], got 1.5"),
        ({"shrink": 0.0}, r"'shrink' .* must lie in \(0, 1\]"),
        ({"nms_iou": -0.1}, r"'nms_iou'"),
        ({"min_area_fraction": float("nan")}, r"'min_area_fraction' must be a finite number"),
        ({"gate": True}, r"'gate' must be a number"),
        ({"det_score": "0.5"}, r"'det_score' must be a number"),
        ({"fusion": "average"}, r"'fusion' must be one of wbf, nms, detector, segmentation, union"),
        ({"confidence": "max"}, r"'confidence' must be one of mean_prob, foreground_fraction"),
        ({"mode": "seed002"}, r"'mode' must be one of default, seed001"),
    ],
)
def test_out_of_range_thresholds_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds.from_dict(changes)


def test_thresholds_accept_numpy_scalars() -> None:
    t = Thresholds(seg_threshold=np.float32(0.25))
    assert t.seg_threshold == 0.25 and type(t.seg_threshold) is float


# ------------------------------------------------------------------------------------------------ geometry


def test_iou_matrix_and_shrink_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    # overlap 5×10 = 50; union 100 + 100 - 50 = 150.
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0.0, 1.0]])
    # 100×200 box kept at 87.5 %: 87.5×175, moved in by 6.25 and 12.5.
    np.testing.assert_allclose(shrink_boxes([[0, 0, 100, 200]], 0.875), [[6.25, 12.5, 87.5, 175.0]])


def test_numpy_nms_equals_torchvision() -> None:
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(1)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(5, 150, (n, 2))
        xyxy = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        scores = rng.permutation(n).astype(np.float32) / n + rng.uniform(0, 1e-3, n).astype(np.float32)
        for thr in (0.1, 0.3, 0.5, 0.7):
            ours = nms(xyxy, scores, thr)
            theirs = tv_ops.nms(torch.from_numpy(xyxy), torch.from_numpy(scores), thr).numpy()
            np.testing.assert_array_equal(ours, theirs, err_msg=f"trial {trial}, iou {thr}")


# ----------------------------------------------------------------------------------------------- segmentation


def test_boxes_from_probability_on_a_rectangle() -> None:
    prob = np.zeros((200, 200), np.float32)
    prob[50:150, 20:80] = 0.8  # 100 rows × 60 cols = 15 % of the image
    exact = boxes_from_probability(prob, Thresholds(shrink=1.0))
    np.testing.assert_array_equal(exact.boxes, [[20, 50, 60, 100]])
    np.testing.assert_allclose(exact.scores, [0.8], rtol=1e-6)
    assert exact.sources == ("segmentation",)
    shrunk = boxes_from_probability(prob, Thresholds(shrink=0.875))
    # 60×100 at 87.5 % → 52.5×87.5, offsets 3.75 and 6.25.
    np.testing.assert_allclose(shrunk.boxes, [[23.75, 56.25, 52.5, 87.5]])


def test_threshold_is_strict_and_confidence_modes_differ() -> None:
    prob = np.zeros((100, 100), np.float32)
    prob[10:60, 10:60] = 0.5  # exactly at the threshold: not foreground
    assert len(boxes_from_probability(prob)) == 0
    # An L shape: 40×40 bbox, 40×20 + 20×20 = 1200 foreground pixels → fraction 0.75.
    prob[:] = 0
    prob[10:50, 10:30] = 0.9
    prob[30:50, 30:50] = 0.6
    t = Thresholds(shrink=1.0, min_area_fraction=0.01)
    mean_prob = boxes_from_probability(prob, t)
    frac = boxes_from_probability(prob, t.replace(confidence="foreground_fraction"))
    np.testing.assert_array_equal(mean_prob.boxes, frac.boxes)
    np.testing.assert_array_equal(mean_prob.boxes, [[10, 10, 40, 40]])
    # mean probability: (800 × 0.9 + 400 × 0.6) / 1200 = 0.8
    np.testing.assert_allclose(mean_prob.scores, [0.8], rtol=1e-6)
    np.testing.assert_allclose(frac.scores, [0.75])


def test_min_area_filter_is_strict_on_bbox_area() -> None:
    t = Thresholds(shrink=1.0, min_area_fraction=0.25)  # 2,500 px² on 100×100
    prob = np.zeros((100, 100), np.float32)
    prob[0:50, 0:50] = 1.0  # 2,500 px²: not more than the minimum
    assert len(boxes_from_probability(prob, t)) == 0
    prob[0:50, 0:51] = 1.0  # 2,550 px²
    assert len(boxes_from_probability(prob, t)) == 1
    # A thin diagonal line: few pixels but a large bounding box → kept (the rule is on the bbox, like seed
    # 001).
    diag = np.zeros((100, 100), np.float32)
    idx = np.arange(80)
    diag[idx, idx] = 1.0  # 8-connected: one region, 80×80 bbox
    np.testing.assert_array_equal(boxes_from_probability(diag, t).boxes, [[0, 0, 80, 80]])


def test_min_area_means_the_same_at_any_resolution() -> None:
    t = Thresholds(shrink=1.0)
    for side, kept in ((160, True), (156, False)):  # 160² = 25,600 > 25,000; 156² = 24,336
        big = np.zeros((1024, 1024), np.float32)
        big[100 : 100 + side, 300 : 300 + side] = 0.9
        small = big[::2, ::2]  # the same radiograph at 512 px
        b_big, b_small = boxes_from_probability(big, t), boxes_from_probability(small, t)
        assert len(b_big) == len(b_small) == int(kept)
        if kept:
            np.testing.assert_allclose(b_big.boxes, b_small.boxes * 2)


def _separated(boxes: np.ndarray) -> bool:
    """No two boxes overlap or touch (not even diagonally), so each is its own 8-connected region."""
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes[i], boxes[j]
            if not (x1 + w1 < x2 or x2 + w2 < x1 or y1 + h1 < y2 or y2 + h2 < y1):
                return False
    return True


def test_real_rsna_boxes_are_recovered_from_a_box_mask() -> None:
    """Every positive RSNA patient in the data set: a probability map painted from its ground-truth boxes
    gives those boxes back exactly (integer coordinates in the labels file), with no shrink and no area
    limit."""
    t = Thresholds(shrink=1.0, min_area_fraction=0.0)
    checked = 0
    prob = np.zeros((1024, 1024), np.float32)
    for pid, boxes in sorted(rsna_boxes_1024().items()):
        if len(boxes) == 0 or not _separated(boxes):
            continue
        prob[:] = 0
        for x, y, w, h in boxes.astype(int):
            prob[y : y + h, x : x + w] = 0.9
        found = boxes_from_probability(prob, t)
        key = lambda b: np.lexsort((b[:, 1], b[:, 0]))  # noqa: E731
        np.testing.assert_array_equal(found.boxes[key(found.boxes)], boxes[key(boxes)], err_msg=pid)
        checked += 1
    assert checked >= 400  # 420 positive patients; a few have touching boxes


# ------------------------------------------------------------------------------------------------ seed 001


def _seed_mask_128() -> np.ndarray:
    p = np.zeros((128, 128), np.float32)
    p[10:40, 20:47] = 0.9  # region 1: 30 rows × 27 cols → 240 × 216 at 1024, full
    p[60:80, 60:100] = 0.7  # region 2, an L: 20×40 bar …
    p[80:100, 60:70] = 0.7  # … + 20×10 leg: bbox 40×40 → 320×320
    p[110:120, 110:130] = 0.8  # region 3: 10×20 → 80×160 = 12,800 px² ≤ 25,000: dropped
    p[0, 0] = 0.5  # not foreground (> 0.5 is)
    return p


def test_seed001_boxes_by_hand() -> None:
    got = seed001_boxes(_seed_mask_128())
    # Region 1: bbox x 160, y 80, w 216, h 240; conf 1.0; rw = int(216 × 0.05) = int(10.8) = 10,
    #   rh = int(240 × 0.05) = 12 → (170, 92, 196, 216).
    # Region 2: bbox x 480, y 480, w 320, h 320; foreground (20·40 + 20·10)·64 = 64,000 of 102,400 → 0.625;
    #   rw = rh = 16 → (496, 496, 288, 288).
    np.testing.assert_array_equal(got.boxes, [[170, 92, 196, 216], [496, 496, 288, 288]])
    np.testing.assert_allclose(got.scores, [1.0, 0.625])
    assert got.boxes.dtype == np.float32 and np.all(got.boxes == np.round(got.boxes))


def test_nearest_resize_matches_skimage_order0() -> None:
    from skimage.transform import resize

    rng = np.random.default_rng(3)
    for shape, out in (((128, 128), (1024, 1024)), ((100, 60), (256, 250))):
        m = (rng.random(shape) > 0.7).astype(np.uint8)
        ref = resize(m, out, order=0, anti_aliasing=False, preserve_range=True).astype(np.uint8)
        np.testing.assert_array_equal(nearest_resize(m, out), ref)


def test_seed001_mode_through_postprocess_equals_seed001_boxes() -> None:
    p128 = _seed_mask_128()
    p1024 = np.repeat(np.repeat(p128, 8, axis=0), 8, axis=1)
    expected = seed001_boxes(p128)
    # shrink 0.9 must become exactly 0.05 per side: int(320 × 0.04999…) would give 15 instead of 16.
    via_mode = boxes_from_probability(p1024, Thresholds.seed001())
    np.testing.assert_array_equal(via_mode.boxes, expected.boxes)
    f = postprocess(prob_map=p1024, thresholds=Thresholds.seed001(), p_opacity=0.01)
    np.testing.assert_array_equal(f.fused.boxes, expected.boxes)  # seed 001 has no gate
    assert not f.gated


def test_seed001_reduction_is_exact_for_a_200px_box() -> None:
    p = np.zeros((1024, 1024), np.float32)
    p[0:200, 0:200] = 1.0  # int(200 × 0.05) = 10, while int(200 × (1 - 0.9) / 2) would be 9
    got = boxes_from_probability(p, Thresholds.seed001())
    np.testing.assert_array_equal(got.boxes, [[10, 10, 180, 180]])


# ------------------------------------------------------------------------------------------ detector / fusion


def test_filter_detections_threshold_nms_and_formats() -> None:
    t = Thresholds(det_score=0.5, nms_iou=0.3)
    xyxy = np.array(
        [[0, 0, 100, 100], [0, 0, 100, 50], [300, 300, 350, 360], [500, 500, 600, 600]], np.float32
    )
    scores = np.array([0.9, 0.8, 0.5, 0.49], np.float32)
    got = filter_detections(xyxy, scores, t, box_format="xyxy")
    # box 1 overlaps box 0 with IoU 0.5 > 0.3 → suppressed; box 3 scores below 0.5; 0.5 itself is kept.
    np.testing.assert_array_equal(got.boxes, [[0, 0, 100, 100], [300, 300, 50, 60]])
    np.testing.assert_allclose(got.scores, [0.9, 0.5])
    assert got.sources == ("detector", "detector")
    with pytest.raises(ValueError, match="box_format"):
        filter_detections(xyxy, scores, t, box_format="cxcywh")
    with pytest.raises(ValueError, match="one value per box"):
        filter_detections(xyxy, scores[:2], t)


def _pair() -> tuple[BoxSet, BoxSet]:
    det = BoxSet.of([[100, 100, 100, 100], [600, 600, 80, 80]], [0.8, 0.9], "detector")
    seg = BoxSet.of([[110, 100, 100, 100]], [0.6], "segmentation")
    return det, seg


def test_weighted_box_fusion_by_hand() -> None:
    det, seg = _pair()
    got = fuse(det, seg, Thresholds(fusion="wbf", fusion_iou=0.4))
    # det 0 and seg 0: overlap 90×100 → IoU 9000 / 11000 = 0.82 → one cluster.
    #   x1 = (0.8·100 + 0.6·110) / 1.4 = 104.2857, x2 = (0.8·200 + 0.6·210) / 1.4 = 204.2857, y unchanged;
    #   confidence = (0.8 + 0.6) / 2 = 0.7, source "fused".
    # det 1 alone: confidence 0.9 / 2 = 0.45, source "detector".
    np.testing.assert_allclose(got.boxes, [[104.2857, 100, 100, 100], [600, 600, 80, 80]], rtol=1e-5)
    np.testing.assert_allclose(got.scores, [0.7, 0.45], rtol=1e-6)
    assert got.sources == ("fused", "detector")
    # Below the fusion IoU nothing merges: three boxes, each at half its score.
    apart = fuse(det, seg, Thresholds(fusion="wbf", fusion_iou=0.9))
    np.testing.assert_allclose(apart.scores, [0.45, 0.4, 0.3], rtol=1e-6)


def test_other_fusion_modes() -> None:
    det, seg = _pair()
    nms_set = fuse(det, seg, Thresholds(fusion="nms", fusion_iou=0.4))
    np.testing.assert_array_equal(nms_set.boxes, [[600, 600, 80, 80], [100, 100, 100, 100]])
    assert nms_set.sources == ("detector", "detector")
    union = fuse(det, seg, Thresholds(fusion="union"))
    np.testing.assert_allclose(union.scores, [0.9, 0.8, 0.6])
    assert len(fuse(det, seg, Thresholds(fusion="detector"))) == 2
    assert fuse(det, seg, Thresholds(fusion="segmentation")).sources == ("segmentation",)
    # One source not run: its boxes pass unchanged (no halving); the chosen-but-missing source gives nothing.
    np.testing.assert_allclose(fuse(det, None, Thresholds(fusion="wbf")).scores, [0.9, 0.8])
    assert len(fuse(None, seg, Thresholds(fusion="detector"))) == 0


def test_gate() -> None:
    det, _ = _pair()
    t = Thresholds(gate=0.3)
    assert len(apply_gate(det, 0.29, t)) == 0
    assert apply_gate(det, 0.3, t) is det
    assert apply_gate(det, None, t) is det
    with pytest.raises(ValueError, match="probability"):
        apply_gate(det, 1.2, t)


# ------------------------------------------------------------------------------------------------ postprocess


def test_postprocess_all_sources() -> None:
    prob = np.zeros((512, 512), np.float32)
    prob[100:300, 100:260] = 0.9  # 160 × 200 region
    det_xyxy = np.array([[100, 100, 260, 300], [400, 20, 500, 80], [0, 0, 10, 10]], np.float32)
    result = SimpleNamespace(prob_map=prob, det_boxes=det_xyxy, det_scores=[0.8, 0.7, 0.1], p_opacity=0.9)
    f = postprocess(result, BOTH_SOURCES, det_box_format="xyxy", spacing_mm=(0.3, 0.25))
    assert f.image_shape == (512, 512)
    # Detector: third box below det_score; the kept boxes are shrunk to 87.5 %.
    np.testing.assert_allclose(f.detector.boxes[0], [110, 112.5, 140, 175])
    np.testing.assert_allclose(f.segmentation.boxes, [[110, 112.5, 140, 175]])
    # Fused: the two identical boxes merge ((0.8 + 0.9) / 2); the second detector box stays alone at 0.7 / 2.
    assert f.fused.sources == ("fused", "detector")
    np.testing.assert_allclose(f.fused.scores, [0.85, 0.35], rtol=1e-6)
    np.testing.assert_allclose(f.areas_px, [140 * 175, 87.5 * 52.5])
    np.testing.assert_allclose(f.areas_mm2, f.areas_px * 0.075)
    d = json.loads(json.dumps(f.to_dict()))
    assert d["boxes"][0]["source"] == "fused" and d["thresholds"] == BOTH_SOURCES.to_dict()
    assert d["prediction_string"] == f.prediction_string() and f.positive


def test_postprocess_gate_keeps_per_source_boxes_and_explains() -> None:
    prob = np.zeros((256, 256), np.float32)
    prob[50:150, 50:150] = 0.95
    f = postprocess({"prob_map": prob, "p_opacity": 0.1}, Thresholds(gate=0.3))
    assert f.gated and not f.positive and len(f.segmentation) == 1
    assert any("gate" in n for n in f.notes)
    assert f.areas_mm2 is None


def test_postprocess_input_errors_and_missing_source_note() -> None:
    with pytest.raises(ValueError, match="image_shape is required"):
        postprocess(det_boxes=np.zeros((0, 4)), det_scores=np.zeros(0))
    with pytest.raises(ValueError, match="resize the map"):
        postprocess(prob_map=np.zeros((10, 10)), image_shape=(20, 20))
    with pytest.raises(ValueError, match="together"):
        postprocess(det_boxes=np.zeros((1, 4)), image_shape=(20, 20))
    f = postprocess(prob_map=np.zeros((10, 10)), thresholds=Thresholds(fusion="detector"))
    assert not f.positive and f.detector is None and any("did not run" in n for n in f.notes)


def test_boxset_is_immutable_and_validated() -> None:
    b = BoxSet.of([[1, 2, 3, 4]], [0.5], "detector")
    with pytest.raises(ValueError):
        b.boxes[0, 0] = 9
    with pytest.raises(ValueError, match="shape"):
        BoxSet.of([[1, 2, 3]], [0.5], "detector")
    with pytest.raises(ValueError, match="unknown box source"):
        BoxSet.of([[1, 2, 3, 4]], [0.5], "classifier")
    np.testing.assert_array_equal(xywh_to_xyxy(b.boxes), [[1, 2, 4, 6]])


# ------------------------------------------------------------------------------------------- PredictionString


def test_prediction_string_format_and_parse() -> None:
    s = boxes_to_prediction_string([[605.4, 468.5, 246.0, 367.5]], [0.8592848904267589])
    assert s == "0.8593 605 469 246 368"
    assert boxes_to_prediction_string(np.zeros((0, 4)), []) == ""
    # Seed 001's own row (full-precision confidences, trailing space).
    row = "0.8592848904267589 605 468 246 368 0.9132706374085684 155 565 210 238 "
    boxes, scores = parse_prediction_string(row)
    np.testing.assert_array_equal(boxes, [[605, 468, 246, 368], [155, 565, 210, 238]])
    np.testing.assert_allclose(scores, [0.85928489, 0.91327064])
    for empty in ("", "   ", None, float("nan")):
        b, sc = parse_prediction_string(empty)
        assert b.shape == (0, 4) and sc.shape == (0,)
    with pytest.raises(ValueError, match="groups of 5"):
        parse_prediction_string("0.5 1 2 3")
    with pytest.raises(ValueError, match="numbers only"):
        parse_prediction_string("0.5 1 2 3 x")
    again = parse_prediction_string(boxes_to_prediction_string(boxes, scores))
    np.testing.assert_array_equal(again[0], boxes)


def test_core_modules_import_neither_torch_nor_qt() -> None:
    code = (
        "import sys, pneumoview.postprocess, pneumoview.metrics, pneumoview.render, pneumoview.thresholds;"
        "bad = [m for m in ('torch', 'torchvision', 'PySide6', 'pyqtgraph') if m in sys.modules];"
        "sys.exit(str(bad) if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
