"""P(opacity) calibration: the logistic fit, ECE, the manifest table, and the engine applying it with header facts
from real DICOM files (and the trained "unknown" for PNG), plus classifier ensembles."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pneumoview.calibration import (
    Calibration,
    expected_calibration_error,
    feature_row,
    fit_logistic,
    reliability_bins,
)
from pneumoview.errors import ManifestError
from pneumoview.imaging import load_image
from pneumoview.inference.engine import Engine, StageSelection
from pneumoview.inference.manifest import parse_manifest, repository_models_dir

SAMPLE = Path(__file__).resolve().parents[1] / "pneumoview" / "data" / "sample_study"
HEADER = ("logit", "view_ap", "view_unknown", "age", "age_unknown", "sex_male", "sex_unknown")


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    z = 1.5 * x[:, 0] - 0.7 * x[:, 1] + 0.3
    y = (rng.random(20000) < 1 / (1 + np.exp(-z))).astype(float)
    coef, intercept = fit_logistic(x, y, l2=0.0)
    assert coef == pytest.approx([1.5, -0.7], abs=0.06)
    assert intercept == pytest.approx(0.3, abs=0.05)


def test_ece_is_small_for_calibrated_and_large_for_overconfident_scores():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(float)
    assert expected_calibration_error(p, y) < 0.02
    over = np.where(p > 0.5, 0.99, 0.01)
    assert expected_calibration_error(over, y) > 0.2
    bins = reliability_bins(p, y, bins=10)
    assert len(bins) == 10 and sum(b[3] for b in bins) == 20000


def test_platt_scaling_fixes_an_overconfident_score():
    rng = np.random.default_rng(2)
    true_logit = rng.normal(0, 1.5, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    raw = 1 / (1 + np.exp(-3.0 * true_logit))  # three times too sharp
    x = np.array([feature_row(("logit",), p, None, {}) for p in raw])
    coef, intercept = fit_logistic(x, y)
    cal = Calibration(("logit",), tuple(coef), intercept)
    fixed = np.array([cal.apply(p) for p in raw])
    assert coef[0] == pytest.approx(1 / 3, abs=0.05)
    assert expected_calibration_error(fixed, y) < expected_calibration_error(raw, y) / 3


def test_header_features_read_the_dicom_header_and_fall_back_to_unknown():
    row = feature_row(HEADER, 0.5, "AP", {"PatientAge": "070Y", "PatientSex": "M"})
    assert row.tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    # RSNA's bare-number age, PA view, female
    assert feature_row(HEADER, 0.5, "PA", {"PatientAge": "30", "PatientSex": "F"}).tolist() == pytest.approx(
        [0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0]
    )
    # PNG: no header at all; nonsense ages count as unknown
    assert feature_row(HEADER, 0.5, None, {}).tolist() == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert feature_row(HEADER, 0.5, "LL", {"PatientAge": "412"}).tolist()[2:5] == [1.0, 0.0, 1.0]


def test_calibration_table_round_trips_and_rejects_bad_tables():
    cal = Calibration(HEADER, (0.9, 0.8, 0.1, 0.2, 0.0, -0.1, 0.0), -0.5, "oof")
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert cal.uses_header and not Calibration(("logit",), (1.0,), 0.0).uses_header
    with pytest.raises(ValueError, match="unknown calibration feature"):
        Calibration(("logit", "bmi"), (1.0, 1.0), 0.0)
    with pytest.raises(ValueError, match="2 features but 1"):
        Calibration(("logit", "age"), (1.0,), 0.0)
    with pytest.raises(ValueError, match="unknown calibration key"):
        Calibration.from_dict({**cal.to_dict(), "temperature": 2.0})
    assert 0.0 < cal.apply(0.5, "AP", {"PatientAge": "50"}) < 1.0


def _shipped_text() -> str:
    return (repository_models_dir() / "manifest.toml").read_text(encoding="utf-8")


def test_manifest_takes_a_calibration_on_classifiers_only():
    extra = (
        '\n[[ensemble]]\nid = "cls-pair"\ntask = "classify"\nversion = "1"\n'
        'members = ["rsna3-classifier", "rsna3-classifier"]\n'
        'calibration = { features = ["logit"], coef = [0.5], intercept = -1.0 }\n'
    )
    _, ensembles = parse_manifest(_shipped_text() + extra)
    cal = next(e for e in ensembles if e.id == "cls-pair").calibration
    assert cal is not None and cal.coef == (0.5,)
    bad = extra.replace('task = "classify"', 'task = "segment"')
    with pytest.raises(ManifestError, match="only classify models"):
        parse_manifest(_shipped_text() + bad)
    with pytest.raises(ManifestError, match="bad calibration.*unknown calibration feature"):
        parse_manifest(_shipped_text() + extra.replace('["logit"]', '["shoe_size"]'))


@pytest.fixture(scope="module")
def models_copy(tmp_path_factory) -> Path:
    """The shipped classifier in a models folder of its own, with a calibrated single model and a calibrated
    two-member ensemble of it."""
    src = repository_models_dir()
    out = tmp_path_factory.mktemp("models")
    spec = next(m for m in parse_manifest(_shipped_text())[0] if m.id == "rsna3-classifier")
    shutil.copy(src / spec.weights, out / spec.weights)
    block = _shipped_text().split("[[model]]")[1]
    # the shipped calibration goes: this folder's entries carry the test's own
    block = "".join(
        line for line in block.splitlines(keepends=True) if not line.startswith(("calibration =", "fusion ="))
    )
    assert 'id = "rsna3-classifier"' in block
    cal = '\ncalibration = { features = ["logit", "view_ap", "view_unknown"], coef = [0.5, 2.0, 1.0], intercept = -1.0 }\n'
    text = (
        "schema = 1\n\n[[model]]"
        + block
        + "\n[[model]]"
        + block.replace('"rsna3-classifier"', '"cal-single"', 1).rstrip()
        + cal
        + '\n[[ensemble]]\nid = "cal-pair"\ntask = "classify"\nversion = "1"\n'
        'members = ["rsna3-classifier", "rsna3-classifier"]\nweights = [1.0, 3.0]\n' + cal
    )
    (out / "manifest.toml").write_text(text, encoding="utf-8")
    return out


def _engine(models: Path, ident: str) -> Engine:
    sel = StageSelection(classify=ident, segment=None, detect=None)
    return Engine(device="cpu", models_dir=models, selection=sel, runtime="torch")


def test_engine_applies_the_calibration_with_the_dicom_header(models_copy):
    dicom = load_image(SAMPLE / "01cad8d0-45cd-4603-b099-94055d322310.dcm")  # RSNA-style CR, AP, 42, M
    assert dicom.view == "AP"
    raw = _engine(models_copy, "rsna3-classifier").analyze(dicom, stages=("classify",))
    cal_engine = _engine(models_copy, "cal-single")
    cal = cal_engine.stage_calibration("classify")
    assert cal is not None
    got = cal_engine.analyze(dicom, stages=("classify",))
    assert got.p_opacity == pytest.approx(cal.apply(raw.p_opacity, dicom.view, dicom.metadata), abs=1e-6)
    expected_z = -1.0 + 0.5 * np.log(raw.p_opacity / (1 - raw.p_opacity)) + 2.0
    assert got.p_opacity == pytest.approx(1 / (1 + np.exp(-expected_z)), abs=1e-5)
    np.testing.assert_allclose(got.class_probs, raw.class_probs, atol=1e-6)  # the softmax itself is kept
    # The same pixels without a header (as from a PNG) take the "unknown view" term instead.
    bare = replace(dicom, view=None, metadata={})
    got_bare = cal_engine.analyze(bare, stages=("classify",))
    z_bare = -1.0 + 0.5 * np.log(raw.p_opacity / (1 - raw.p_opacity)) + 1.0
    assert got_bare.p_opacity == pytest.approx(1 / (1 + np.exp(-z_bare)), abs=1e-5)


def test_classifier_ensemble_averages_members_and_is_calibrated(models_copy):
    image = load_image(SAMPLE / "07d0762b-8d1f-41d9-8ea9-1b6e4097cd33.dcm")
    single = _engine(models_copy, "cal-single").analyze(image, stages=("classify",))
    pair = _engine(models_copy, "cal-pair").analyze(image, stages=("classify",))
    # two copies of one model, weights 1:3: the mean is the model itself
    np.testing.assert_allclose(pair.class_probs, single.class_probs, atol=1e-6)
    assert pair.p_opacity == pytest.approx(single.p_opacity, abs=1e-6)


def test_fit_rows_learns_the_header_and_an_unknown_value_for_png():
    from tools.fit_calibration import FEATURE_SETS, fit_rows

    rng = np.random.default_rng(3)
    rows = []
    for _ in range(4000):
        view = "AP" if rng.random() < 0.5 else "PA"
        p_true = 0.45 if view == "AP" else 0.15  # the view alone decides here; the image score is noise
        rows.append({
            "p_raw": f"{rng.uniform(0.2, 0.4):.4f}", "view": view, "age": str(rng.integers(20, 80)),
            "sex": "M" if rng.random() < 0.5 else "F", "target": int(rng.random() < p_true),
        })  # fmt: skip
    cal = fit_rows(rows, FEATURE_SETS["header"], "synthetic")
    assert cal.coef[cal.features.index("view_ap")] > 1.0
    ap = cal.apply(0.3, "AP", {"PatientAge": "50", "PatientSex": "F"})
    pa = cal.apply(0.3, "PA", {"PatientAge": "50", "PatientSex": "F"})
    png = cal.apply(0.3, None, {})
    assert ap == pytest.approx(0.45, abs=0.04) and pa == pytest.approx(0.15, abs=0.04)
    assert png == pytest.approx(
        0.30, abs=0.04
    )  # no header: the population rate, learnt from the header-less copies


def test_a_calibration_is_part_of_the_identity_that_makes_resumed_rows_stale(models_copy):
    """predict resumes only rows made by the same models: the same weights with another calibration give other
    P(opacity) values, so they count as other models."""
    from pneumoview.batch import _model_hashes

    raw = _model_hashes(_engine(models_copy, "rsna3-classifier"))
    cal = _model_hashes(_engine(models_copy, "cal-single"))
    assert "classify:calibration" not in raw and '"coef": [0.5, 2.0, 1.0]' in cal["classify:calibration"]


def test_a_classifier_ensemble_of_models_with_other_classes_is_refused(tmp_path):
    from pneumoview.inference.manifest import load_manifest

    extra = (
        '\n[[ensemble]]\nid = "mixed"\ntask = "classify"\nversion = "1"\n'
        'members = ["rsna3-classifier", "acse4-classifier"]\n'
    )
    (tmp_path / "manifest.toml").write_text(_shipped_text() + extra, encoding="utf-8")
    with pytest.raises(ManifestError, match="mixed.*must share their classes.*acse4-classifier: \\['covid'"):
        load_manifest([tmp_path], check_builders=False)


def test_a_fusion_reads_the_detector_score_and_names_its_detector():
    fusion = Calibration(("logit", "det_score"), (0.5, 3.0), -1.5, "fold 0", "f20e040d2de91cb0")
    assert fusion.uses_evidence and not fusion.uses_header
    assert Calibration.from_dict(fusion.to_dict()) == fusion
    z = -1.5 + 0.5 * np.log(0.2 / 0.8) + 3.0 * 0.9
    assert fusion.apply(0.2, evidence={"det_score": 0.9}) == pytest.approx(1 / (1 + np.exp(-z)))
    assert fusion.apply(0.2, evidence={"det_score": 0.9}) > fusion.apply(0.2, evidence={"det_score": 0.0})
    assert fusion.fits_detector("F20E040D2DE91CB0" + "0" * 48) and not fusion.fits_detector("ab" * 32)
    with pytest.raises(KeyError):
        fusion.apply(0.2)  # no detector score: the engine must not apply it
    with pytest.raises(ValueError, match="must name its detector"):
        Calibration(("logit", "det_score"), (0.5, 3.0), -1.5)
    pair = '\n[[ensemble]]\nid = "pair"\ntask = "classify"\nversion = "1"\nmembers = ["rsna3-classifier"]\n'
    evidence = '{ features = ["logit", "det_score"], coef = [1.0, 1.0], intercept = 0.0, detector = "f20e040d2de91cb0" }'
    with pytest.raises(ManifestError, match="a calibration must not read"):
        parse_manifest(_shipped_text() + pair + f"calibration = {evidence}\n")
    with pytest.raises(ManifestError, match="a fusion must read"):
        parse_manifest(
            _shipped_text() + pair + 'fusion = { features = ["logit"], coef = [1.0], intercept = 0.0 }\n'
        )
    _, ensembles = parse_manifest(_shipped_text() + pair + f"fusion = {evidence}\n")
    assert next(e for e in ensembles if e.id == "pair").fusion is not None


def test_shipped_classifier_fuses_with_the_shipped_detector_only():
    """On a real radiograph: after the detector ran, P(opacity) is the manifest's fusion of the raw classifier
    probability and the top box score; without the detector (or with another one) it stays the Platt value."""
    image = load_image(SAMPLE / "01cad8d0-45cd-4603-b099-94055d322310.dcm")
    engine = Engine(device="cpu", runtime="torch", selection=StageSelection(segment=None))
    fusion, platt = engine.stage_calibration("classify", "fusion"), engine.stage_calibration("classify")
    assert fusion is not None and platt is not None
    steps = list(engine.iter_stages(image))
    first, last = steps[0], steps[-1]
    assert last.stages_done == ("classify", "detect") and last.p_opacity_fused and not first.p_opacity_fused
    p_raw = float(first.class_probs[first.class_names.index("Lung Opacity")])
    assert first.p_opacity == pytest.approx(platt.apply(p_raw), abs=1e-6)
    top = float(last.det_scores.max()) if len(last.det_scores) else 0.0
    assert last.p_opacity == pytest.approx(fusion.apply(p_raw, evidence={"det_score": top}), abs=1e-6)
    alone = engine.analyze(image, stages=("classify",))
    assert not alone.p_opacity_fused and alone.p_opacity == pytest.approx(first.p_opacity, abs=1e-6)
    from pneumoview.batch import _model_hashes

    assert (
        '"det_score"' in _model_hashes(engine)["classify:fusion"]
    )  # resumed rows of another fusion are stale
    # A fusion fitted with another detector is not applied: P(opacity) stays the classifier's calibrated value.
    spec = engine.manifest.model("rsna3-classifier")
    models = {
        **engine.manifest.models,
        spec.id: replace(spec, fusion=replace(fusion, detector="0123456789abcdef")),
    }
    elsewhere = Engine(
        replace(engine.manifest, models=models),
        device="cpu",
        runtime="torch",
        selection=StageSelection(segment=None),
    ).analyze(image)
    assert not elsewhere.p_opacity_fused and elsewhere.p_opacity == pytest.approx(first.p_opacity, abs=1e-6)


def test_the_model_card_in_the_viewer_describes_the_fusion():
    from pneumoview.gui.dialogs import model_cards_html

    text = model_cards_html(None)
    assert "Fusion with the detector:" in text and "detector sha256 f20e040d2de9" in text
