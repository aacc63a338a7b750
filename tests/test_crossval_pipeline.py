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

from pneumoview.inference.manifest import load_manifest  # noqa: E402
from pneumoview.rsna_labels import read_labels, scale_boxes  # noqa: E402
from tools import crossval_pipeline as cv  # noqa: E402


def _cache(labels: Path, perfect: bool, first: int = 0, score: float = 0.95) -> dict:
    """Two opacity images whose detector boxes are the radiologists' (or elsewhere) and two without opacity."""
    truth = read_labels(labels)
    positives = [k for k, b in truth.items() if len(b)][first : first + 2]
    negatives = [k for k, b in truth.items() if not len(b)][first : first + 2]
    out = {}
    for i, k in enumerate(positives + negatives):
        gt = scale_boxes(truth[k], (512, 512))
        boxes = gt if perfect else gt + np.array([300.0, 300.0, 0.0, 0.0], np.float32)
        out[k] = {
            "patient": f"p{first + i}", "target": int(k in positives), "shape": (512, 512),
            "p_raw": 0.9 if k in positives else 0.05,
            "det": (boxes, np.full(len(boxes), score, np.float32)),
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


def test_refit_needs_two_folds_and_keeps_the_manifest_unless_the_rule_adopts(shared_data, tmp_path, capsys):
    import shutil

    labels = shared_data / "rsna" / "stage_2_train_labels.csv"
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "manifest.toml", models / "manifest.toml")
    before = (models / "manifest.toml").read_text()
    paths = []
    for fold, perfect in ((2, True), (3, False)):
        (tmp_path / f"c{fold}.pkl").write_bytes(pickle.dumps(_cache(labels, perfect, first=2 * fold)))
        paths.append(tmp_path / f"oof-fold{fold}.csv")
        cv.export(argparse.Namespace(cache=tmp_path / f"c{fold}.pkl", fold=fold, out=paths[-1]))
    args = argparse.Namespace(
        oof=paths[:1], labels=labels, models=models, classifier="rsna3-classifier", boot=50, write=True,
        fitted_on="test",
    )  # fmt: skip
    with pytest.raises(SystemExit, match="at least two folds"):
        cv.refit(args)
    args.oof = paths
    assert cv.refit(args) == 0
    out = capsys.readouterr().out
    assert "8 images of folds [2, 3]" in out and "log loss" in out
    verdict = next(line for line in out.splitlines() if line.startswith("log loss gain"))
    # raw P(opacity) 0.9 vs 0.05 separates these images perfectly: a fit on them is far sharper than the shipped one
    assert verdict.endswith(": adopt")
    fusion = load_manifest([models], check_builders=False).model("rsna3-classifier").fusion
    assert fusion is not None and fusion.fitted_on == "test" and fusion.detector == "f20e040d2de91cb0"
    args.write = False
    (models / "manifest.toml").write_text(before)
    cv.refit(args)
    assert (models / "manifest.toml").read_text() == before
    args.oof = [paths[0], paths[0]]
    with pytest.raises(SystemExit, match="in two files"):
        cv.refit(args)


def _evidence(tmp_path: Path, labels: Path, name: str, perfect: bool, score: float = 0.95) -> list[Path]:
    paths = []
    for fold in (2, 3):
        pkl = tmp_path / f"{name}{fold}.pkl"
        pkl.write_bytes(pickle.dumps(_cache(labels, perfect, first=2 * fold, score=score)))
        paths.append(tmp_path / f"{name}-fold{fold}.csv")
        cv.export(argparse.Namespace(cache=pkl, fold=fold, out=paths[-1]))
    return paths


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_compare_pairs_two_runs_over_the_same_images(shared_data, tmp_path, capsys):
    labels = shared_data / "rsna" / "stage_2_train_labels.csv"
    base = _evidence(tmp_path, labels, "base", perfect=False)
    other = _evidence(tmp_path, labels, "tta", perfect=True)
    args = argparse.Namespace(
        base=base, other=other, labels=labels, models=ROOT / "models", classifier="rsna3-classifier", boot=50
    )
    capsys.readouterr()
    assert cv.compare(args) == 0
    out = capsys.readouterr().out
    # moved boxes miss every opacity, boxes on the truth hit it: mAP 0 → 1 over the same four scored images
    assert "base  mAP 0.000" in out and "other mAP 1.000" in out
    assert "other − base: mAP +1.0000" in out and "fused AUC +0.0000" in out
    args.other = other[:1]
    with pytest.raises(SystemExit, match="different images"):
        cv.compare(args)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_retune_adopts_a_setting_only_when_cross_fitting_wins(shared_data, tmp_path, capsys):
    labels = shared_data / "rsna" / "stage_2_train_labels.csv"
    args = argparse.Namespace(labels=labels, models=ROOT / "models", classifier="rsna3-classifier", boot=50)
    # boxes on the truth scored 0.5: the default score threshold (0.6) drops every one, a lower one keeps them
    args.oof = _evidence(tmp_path, labels, "low", perfect=True, score=0.5)
    capsys.readouterr()
    assert cv.retune(args) == 0
    out = capsys.readouterr().out
    assert "8 images of folds [2, 3], 648 settings" in out
    verdict = next(line for line in out.splitlines() if line.startswith("pooled mAP"))
    assert "defaults 0.000, cross-fitted 1.000" in verdict and verdict.endswith(": adopt")
    best = next(line for line in out.splitlines() if line.startswith("best on all rows"))
    assert float(best.split("det_score ")[1].split(",")[0]) <= 0.5
    # boxes on the truth scored 0.95 already score 1.0 at the defaults: nothing to gain
    args.oof = _evidence(tmp_path, labels, "high", perfect=True)
    cv.retune(args)
    assert capsys.readouterr().out.count(": keep the defaults") == 1
    args.oof = args.oof[:1]
    with pytest.raises(SystemExit, match="at least two folds"):
        cv.retune(args)


def test_last_epoch_exports_the_final_weights_not_the_best(shared_data, tmp_path):
    import torch

    from pneumoview.inference.weights import build_and_load
    from pneumoview.training.checkpoint import load_checkpoint
    from pneumoview.training.datasets import load_rsna
    from pneumoview.training.loop import train_model
    from pneumoview.training.recipes import recipe

    rsna = shared_data / "rsna"
    source = load_rsna(
        rsna / "stage_2_train_labels.csv", rsna / "images-512",
        classes_csv=rsna / "stage_2_detailed_class_info.csv", index_csv=rsna / "index.csv",
    )  # fmt: skip
    cfg = recipe(
        "classifier", "default", size=64, workers=0, progress=False, device="cpu", limit=12, val_fraction=0.25,
        augment="none", epochs=3, batch_size=4,
    )  # fmt: skip
    train_model(cfg, source, tmp_path, log=lambda m: None)
    # make the checkpoint's (last) model unlike any epoch the trainer could have kept as its best
    ck_path = tmp_path / "runs" / "rsna3-classifier" / "checkpoint.pt"
    ck = load_checkpoint(ck_path)
    ck["model"] = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in ck["model"].items()}
    torch.save(ck, ck_path)
    cv.last_epoch(argparse.Namespace(models=tmp_path, id="rsna3-classifier"))
    spec = load_manifest([tmp_path], check_builders=False).model("rsna3-classifier-last")
    assert "(last epoch, 3)" in spec.description and spec.sha256 != ""
    got = build_and_load(spec, tmp_path / spec.weights).state_dict()
    best = load_manifest([tmp_path], check_builders=False).model("rsna3-classifier")
    kept = build_and_load(best, tmp_path / best.weights).state_dict()
    floats = [k for k, v in ck["model"].items() if v.is_floating_point()]
    assert all(torch.equal(got[k].half(), ck["model"][k].half()) for k in floats)
    assert not all(torch.equal(got[k], kept[k]) for k in floats)
