"""tools/crossval_pipeline.py: out-of-fold evidence rows round-trip, and the report scores them with the shipped
calibration, fusion and default thresholds against the real RSNA labels."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.rsna_labels import read_labels, scale_boxes  # noqa: E402
from tools import crossval_pipeline as cv  # noqa: E402


def _cache(labels: Path, perfect: bool) -> dict:
    """Two opacity images whose detector boxes are the radiologists' (or elsewhere) and two without opacity."""
    truth = read_labels(labels)
    positives = [k for k, b in truth.items() if len(b)][:2]
    negatives = [k for k, b in truth.items() if not len(b)][:2]
    out = {}
    for i, k in enumerate(positives + negatives):
        gt = scale_boxes(truth[k], (512, 512))
        boxes = gt if perfect else gt + np.array([300.0, 300.0, 0.0, 0.0], np.float32)
        out[k] = {
            "patient": f"p{i}", "target": int(k in positives), "shape": (512, 512),
            "p_raw": 0.9 if k in positives else 0.05,
            "det": (boxes, np.full(len(boxes), 0.95, np.float32)),
        }  # fmt: skip
    return out


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # resamples of negatives only: no scored image
@pytest.mark.parametrize("perfect", [True, False])
def test_report_scores_exported_rows_with_the_shipped_rules(shared_data, tmp_path, capsys, perfect):
    labels = shared_data / "rsna" / "stage_2_train_labels.csv"
    cache = _cache(labels, perfect)
    (tmp_path / "c.pkl").write_bytes(pickle.dumps(cache))
    out = tmp_path / "oof-fold3.csv"
    cv.export(argparse.Namespace(cache=tmp_path / "c.pkl", fold=3, out=out))
    rows = cv.load_rows([out], labels)
    for k, c in cache.items():
        np.testing.assert_allclose(rows[k]["det"][0], c["det"][0], atol=0.05)
        assert rows[k]["fold"] == 3 and rows[k]["target"] == c["target"]
    capsys.readouterr()
    args = argparse.Namespace(
        oof=[out], labels=labels, models=ROOT / "models", classifier="rsna3-classifier", boot=50
    )
    assert cv.report(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert line[1].strip() == "3" and line[2].strip() == "4 (2)"
    # boxes on the truth, shrunk to 95 %, overlap it by IoU 0.90 (a hit at every threshold); moved ones miss
    expected = "1.000" if perfect else "0.000"
    assert line[7].strip().startswith(expected) and line[8].strip().startswith(expected)
    assert line[3].strip().startswith("1.000") and line[4].strip().startswith("1.000")
