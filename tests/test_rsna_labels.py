"""One RSNA label reader (pneumoview.rsna_labels) with one set of rules, used by the CLI, the viewer's ground truth
and training (training.datasets.load_rsna): checked on the official CSVs in /work/shared/data/rsna, and on small
files for the rules the official file never exercises."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumoview.rsna_labels import RSNA_CLASSES, read_classes, read_labels, read_rsna_labels
from pneumoview.training.datasets import load_rsna

RSNA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rsna"
LABELS = RSNA / "stage_2_train_labels.csv"
CLASSES = RSNA / "stage_2_detailed_class_info.csv"


def test_official_labels_and_classes():
    labels = read_rsna_labels(LABELS)
    classes = read_classes(CLASSES)
    # The data README: 30,227 rows, 26,684 patients; Lung Opacity is exactly Target 1.
    assert len(labels.target) == len(labels.boxes) == len(classes) == 26684
    assert sum(len(b) for b in labels.boxes.values()) == 9555  # one row per box, every Target-1 row has one
    assert all((classes[p] == "Lung Opacity") == bool(t) for p, t in labels.target.items())
    assert set(classes.values()) == set(RSNA_CLASSES)
    assert read_labels(LABELS).keys() == labels.boxes.keys()


def test_training_reads_the_same_labels_as_the_cli():
    """load_rsna takes its targets, boxes and classes from the same reader (the images-512 counts of the data
    README: Lung Opacity 420 with 665 boxes, No Lung Opacity / Not Normal 708, Normal 489)."""
    source = load_rsna(LABELS, RSNA / "images-512", classes_csv=CLASSES)
    boxes = read_labels(LABELS)
    assert len(source.records) == 1617 and source.has_rsna_class
    assert Counter(r.label for r in source.records) == {
        "Lung Opacity": 420,
        "No Lung Opacity / Not Normal": 708,
        "Normal": 489,
    }
    assert sum(len(r.boxes) for r in source.records) == 665
    for r in source.records:
        np.testing.assert_array_equal(r.boxes, boxes[r.key])


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.csv"
    p.write_bytes(text.encode("utf-8"))
    return p


def test_the_rules_the_official_file_does_not_exercise(tmp_path: Path):
    p = _write(
        tmp_path,
        "\ufeffpatientId,x,y,width,height,Target\n"
        "a,,,,,0\n"
        "b,10,20,30,40,1.0\n"
        "b,0,0,0,40,1\n"  # zero-size: no box, still positive
        "c,,,,,1\n"  # positive without a box
        "d,5,5,5,5,0\n"  # a negative row's box is ignored
        "e,,,,,0\n"
        "e,1,2,3,4,1\n",  # rows disagree: positive wins, the box is kept
    )
    labels = read_rsna_labels(p)
    assert labels.target == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}
    assert labels.boxes["b"].tolist() == [[10, 20, 30, 40]]
    assert labels.boxes["c"].shape == labels.boxes["d"].shape == (0, 4)
    assert labels.boxes["e"].tolist() == [[1, 2, 3, 4]]


def test_bad_files_name_the_file_and_line(tmp_path: Path):
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: Target is 'yes'"):
        read_rsna_labels(_write(tmp_path, "patientId,x,y,width,height,Target\na,,,,,0\nb,,,,,yes\n"))
    with pytest.raises(
        ValueError, match=r"labels\.csv: not an RSNA labels file \(missing column\(s\) Target"
    ):
        read_rsna_labels(_write(tmp_path, "patientId,x,y,width,height\na,,,,\n"))
