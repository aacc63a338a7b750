"""tools/paired_runs.py: two predict runs over the same real RSNA images, paired by a patient bootstrap."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import paired_runs  # noqa: E402
from tools.measure_levers import DATA  # noqa: E402


def _run(folder: Path, ids: list[str], scores: np.ndarray, p: np.ndarray) -> Path:
    """A run folder as ``predict`` + ``evaluate --per-image`` leave it: per-image.csv and findings.csv."""
    folder.mkdir()
    with open(folder / "per-image.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patientId", "score"])
        w.writerows([k, "" if np.isnan(s) else f"{s:.6f}"] for k, s in zip(ids, scores, strict=True))
    with open(folder / "findings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "p_opacity"])
        w.writerows([k, f"{v:.6f}"] for k, v in zip(ids, p, strict=True))
    return folder


@pytest.fixture
def images() -> tuple[list[str], np.ndarray]:
    """60 real training-set images (half with opacity) and their targets from the RSNA class file."""
    with open(DATA / "stage_2_detailed_class_info.csv", newline="") as f:
        cls = {r["patientId"]: r["class"] for r in csv.DictReader(f)}  # one row per box: a patient repeats
    pos = [k for k, c in cls.items() if c == "Lung Opacity"][:30]
    neg = [k for k, c in cls.items() if c != "Lung Opacity"][:30]
    return pos + neg, np.array([1] * 30 + [0] * 30)


def test_identical_runs_differ_by_nothing_and_a_uniform_gain_is_exact(tmp_path, images, capsys):
    ids, y = images
    rng = np.random.default_rng(0)
    scores = np.where(y == 1, rng.uniform(0, 0.8, len(y)), np.nan)  # no truth, no box: skipped
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, len(y)), 0, 1)
    a = _run(tmp_path / "a", ids, scores, p)
    b = _run(tmp_path / "b", ids, scores + 0.1, p)
    assert paired_runs.main([str(a), str(a), "--boot", "200"]) == 0
    assert "B − A: mAP +0.0000 ± 0.0000, AUC +0.0000 ± 0.0000" in capsys.readouterr().out
    assert paired_runs.main([str(a), str(b), "--boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "B − A: mAP +0.1000 ± 0.0000" in out
    assert f"mAP {np.nanmean(scores):.4f} ±" in out and f"mAP {np.nanmean(scores) + 0.1:.4f} ±" in out


def test_runs_over_different_images_are_refused(tmp_path, images):
    ids, y = images
    a = _run(tmp_path / "a", ids, np.full(len(ids), 0.5), np.full(len(ids), 0.5))
    b = _run(tmp_path / "b", ids[1:], np.full(len(ids) - 1, 0.5), np.full(len(ids) - 1, 0.5))
    with pytest.raises(SystemExit, match="scored different images"):
        paired_runs.main([str(a), str(b)])
