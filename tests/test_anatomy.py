"""Where findings are (side, zone, cm²) from the DICOM orientation, the ground-truth hit rule, and all-or-nothing
export writing — Qt-free, on real files from ``../shared/data`` and the sample study."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pneumoview.anatomy import (
    Orientation,
    corner_lines,
    describe_box,
    edge_markers,
    orientation_of,
)
from pneumoview.data import sample_study_dir
from pneumoview.export import FINDINGS_COLUMNS, findings_rows, write_findings_csv
from pneumoview.file_bundle import check_writable, write_together
from pneumoview.ground_truth import HIT_IOU, find_labels, load_labels, match_hits
from pneumoview.imaging import load_image
from pneumoview.postprocess import postprocess
from pneumoview.thresholds import Thresholds
from pneumoview.types import AnalysisResult

SAMPLE = sample_study_dir()
SAMPLE_POSITIVE = SAMPLE / "01cad8d0-45cd-4603-b099-94055d322310.dcm"  # radiologists: one box in each lung


def test_orientation_from_real_dicom(shared_data):
    chest = shared_data / "dicom" / "chest"
    standard = load_image(chest / "WG04_RG1_JLSN.dcm")  # PatientOrientation L\F: the standard display
    assert standard.metadata["PatientOrientation"] == "L\\F"
    o = orientation_of(standard.metadata, standard.view)
    assert (o.image_left, o.head_up, o.assumed, o.note) == ("right", True, False, "")
    mirrored = load_image(chest / "WG04_RG3_J2KI_nonchest.dcm")  # PatientOrientation R\F: mirrored
    m = orientation_of(mirrored.metadata, mirrored.view)
    assert (m.image_left, m.assumed) == ("left", False) and "mirrored" in m.note
    assert edge_markers(m) == ("L", "R") and edge_markers(o) == ("R", "L")
    assert edge_markers(o, flipped_h=True) == ("L", "R")  # the viewer's flip moves the letters with the image

    rsna = load_image(SAMPLE_POSITIVE)  # RSNA-style: PatientOrientation empty
    r = orientation_of(rsna.metadata, rsna.view)
    assert r.assumed and r.image_left == "right" and "assumed" in r.note


def test_orientation_rules_for_stated_values():
    assert orientation_of({"PatientOrientation": "L\\H"}).head_up is False
    assert orientation_of({}, "LL").image_left == ""  # lateral: no side
    one_side = orientation_of({"ImageLaterality": "L"})
    assert describe_box([0, 0, 10, 10], (100, 100), one_side).side == "left"


def test_describe_box_side_zone_and_area():
    standard, mirrored = Orientation(assumed=False, note=""), Orientation(image_left="left", assumed=False)
    shape, spacing = (1024, 1024), (0.168, 0.168)
    # A box on the image's left half, in the upper third: the patient's right upper zone on a standard display.
    place = describe_box([100, 100, 300, 200], shape, standard, spacing)
    assert (place.side, place.zone, place.text) == ("right", "upper", "right upper")
    assert place.area_cm2 == pytest.approx(300 * 200 * 0.168 * 0.168 / 100)
    assert describe_box([100, 100, 300, 200], shape, mirrored, spacing).side == "left"
    assert describe_box([700, 400, 200, 200], shape, standard).zone == "middle"
    assert describe_box([700, 800, 200, 200], shape, standard).side == "left"
    assert describe_box([700, 800, 200, 200], shape, standard).zone == "lower"
    upside_down = Orientation(head_up=False, assumed=False)
    assert describe_box([700, 800, 200, 200], shape, upside_down).zone == "upper"
    assert describe_box([0, 0, 10, 10], shape, standard, None).area_cm2 is None


def test_corner_lines_from_the_sample_study():
    image = load_image(SAMPLE_POSITIVE)
    lines = corner_lines(
        image.metadata, image.identifiers, image.view, orientation_of(image.metadata, image.view)
    )
    assert lines == ["View AP", "Age 42 y, male", "Study 1901-01-01", "Orientation assumed (PA/AP)"]


def _findings_for(image, boxes, scores):
    result = AnalysisResult(
        image.image_id, image.shape, det_boxes=np.asarray(boxes, np.float32),
        det_scores=np.asarray(scores, np.float32), stages_done=("detect",),
    )  # fmt: skip
    t = Thresholds(shrink=1.0, det_score=0.1, gate=0.0, fusion="detector")
    return result, postprocess(result, t, image_shape=image.shape, spacing_mm=image.spacing_mm)


def test_findings_csv_has_side_zone_and_area_cm2(tmp_path):
    image = load_image(SAMPLE_POSITIVE)
    truth = find_labels(SAMPLE).boxes_for(image)
    # The radiologists' two boxes as findings: 218,667 (image left = patient right, lower) and 756,556.
    result, findings = _findings_for(image, truth, [0.9, 0.8])
    out = write_findings_csv(findings_rows(image, result, findings), tmp_path / "findings.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"side", "zone", "area_cm2"} <= set(FINDINGS_COLUMNS)
    by_x = sorted(rows, key=lambda r: float(r["x"]))
    assert [(r["side"], r["zone"]) for r in by_x] == [("right", "lower"), ("left", "lower")]
    sy, sx = image.spacing_mm
    assert float(by_x[0]["area_cm2"]) == pytest.approx(258 * 324 * sy * sx / 100, abs=0.01)


def test_ground_truth_from_the_sample_study_and_rsna_labels(shared_data):
    truth = find_labels(SAMPLE)
    assert truth is not None and truth.source.name == "labels.csv"
    image = load_image(SAMPLE_POSITIVE)
    np.testing.assert_allclose(truth.boxes_for(image), [[218, 667, 258, 324], [756, 556, 225, 441]])
    negative = load_image(SAMPLE / "07d0762b-8d1f-41d9-8ea9-1b6e4097cd33.dcm")
    assert truth.boxes_for(negative).shape == (0, 4)  # labelled, no opacity

    rsna = load_labels(shared_data / "rsna" / "stage_2_train_labels.csv")
    small = load_image(shared_data / "rsna" / "images-512" / f"{SAMPLE_POSITIVE.stem}.jpg")
    np.testing.assert_allclose(rsna.boxes_for(small), [[109, 333.5, 129, 162], [378, 278, 112.5, 220.5]])
    with pytest.raises(ValueError, match="index.csv"):
        load_labels(shared_data / "rsna" / "index.csv")  # not a labels file: the error names it


def test_hit_rule_is_greedy_by_confidence_at_iou_04():
    truth = np.array([[100, 100, 100, 100]], np.float32)
    same, shifted, far = [100, 100, 100, 100], [150, 100, 100, 100], [600, 600, 50, 50]  # IoU 1, 1/3, 0
    assert match_hits(np.array([same, far]), np.array([0.9, 0.8]), truth) == ([True, False], 0)
    assert match_hits(np.array([shifted]), np.array([0.9]), truth) == ([False], 1)
    # Two findings on one radiologist's box: only the more confident one is a hit.
    assert match_hits(np.array([same, same]), np.array([0.5, 0.9]), truth) == ([False, True], 0)
    assert HIT_IOU == 0.4


def test_write_together_leaves_nothing_when_a_file_fails(tmp_path):
    out = tmp_path / "out"

    def write(stage: Path) -> None:
        (stage / "a.png").write_bytes(b"png")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_together(out, ["a.png", "b.csv"], write)
    assert list(out.iterdir()) == []  # no partial file, no staging folder

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(OSError):
        check_writable(blocked / "sub")
    assert write_together(out, ["a.txt"], lambda s: (s / "a.txt").write_text("x")) == [out / "a.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]


def test_describe_boxes_matches_describe_box_for_every_orientation():
    from pneumoview.anatomy import describe_boxes

    rng = np.random.default_rng(0)
    boxes = np.c_[rng.uniform(0, 900, (50, 2)), rng.uniform(10, 300, (50, 2))]
    for o in (Orientation(), Orientation(image_left="left", head_up=False), Orientation(image_left=""),
              Orientation(laterality="left")):  # fmt: skip
        for spacing in (None, (0.1, 0.2)):
            assert describe_boxes(boxes, (1024, 1024), o, spacing) == [
                describe_box(b, (1024, 1024), o, spacing) for b in boxes
            ]
