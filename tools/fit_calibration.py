#!/usr/bin/env python3
"""Out-of-fold classifier predictions on the shipped models' training split, and the P(opacity) calibration.

``oof``: the K fold models (``pneumoview train classifier --folds K --fold I --index TRAIN_INDEX``, ids
``PREFIX0`` … ``PREFIX{K-1}``) each score the images of the fold they did not train on, so every training image gets
a P(opacity) from a model that never saw its patient. The fold of each image is recomputed with the trainer's own
split call. Header facts (view, age, sex) come from ``stage_2_train_dicom_headers.csv.gz``. Writes ``oof.csv``.

``fit``: fits :class:`pneumoview.calibration.Calibration` on ``oof.csv`` twice (Platt: ``logit`` only; header:
``logit`` + view/age/sex, each row also entered with its header removed so that PNG input gets a trained "unknown"),
reports cross-fitted AUC and ECE (the calibration for fold I fitted on the other folds' rows; ``--cross-out`` writes
them), and with ``--write``
stores the chosen calibration in a manifest entry. Nothing here reads the held-out validation split.

    python tools/fit_calibration.py oof --models DIR --prefix rsna3-fold --folds 5 --index TRAIN_INDEX --out oof.csv
    python tools/fit_calibration.py fit --oof oof.csv [--features header|platt] [--write MANIFEST --id ID]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.calibration import (  # noqa: E402
    HEADER_FEATURES,
    Calibration,
    expected_calibration_error,
    feature_row,
    fit_logistic,
)
from pneumoview.metrics import bootstrap_se, roc_auc  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "rsna"
FEATURE_SETS = {"platt": ("logit",), "header": ("logit", *HEADER_FEATURES)}
NO_HEADER: dict[str, str] = {}


def fold_records(
    data: Path, index: Path, folds: int, split_seed: int, images: Path | None = None
) -> list[list]:
    """The images of each fold (RSNA records of ``images``, default ``data/images-512``, restricted to ``index``),
    as the trainer's ``--folds K --fold I --split-seed S`` deals them: element I is fold I's validation images."""
    from pneumoview.training.datasets import load_rsna, patient_strata
    from pneumoview.training.splits import patient_split

    src = load_rsna(
        data / "stage_2_train_labels.csv", images or data / "images-512",
        classes_csv=data / "stage_2_detailed_class_info.csv", index_csv=index,
    )  # fmt: skip
    recs = src.records
    strata = patient_strata(recs)
    return [
        [
            recs[i]
            for i in patient_split(
                [r.patient for r in recs], strata, seed=split_seed, folds=folds, fold=k
            ).val
        ]
        for k in range(folds)
    ]


def oof(args: argparse.Namespace) -> int:
    from pneumoview.imaging import load_image
    from pneumoview.inference.engine import Engine, StageSelection
    from tools.rsna_dicom import read_rsna_headers

    per_fold = fold_records(args.data, args.index, args.folds, args.split_seed, args.images)
    keys = [r.key for recs in per_fold for r in recs]
    table = args.data / "stage_2_train_dicom_headers.csv.gz"
    # The challenge's own download has no header table; the Platt calibration does not read headers.
    headers = read_rsna_headers(table, keys) if table.is_file() else {}
    rows = []
    for fold, val in enumerate(per_fold):
        engine = Engine(
            device="cpu", models_dir=args.models, runtime="torch",
            selection=StageSelection(classify=f"{args.prefix}{fold}", segment=None, detect=None),
        )  # fmt: skip
        for r in val:
            res = engine.analyze(load_image(r.path), stages=("classify",))
            h = headers.get(r.key, {})
            rows.append({
                "patientId": r.key, "nih_patient": r.patient, "fold": fold, "p_raw": f"{res.p_opacity:.6f}",
                "target": int(r.label == "Lung Opacity"), "view": h.get("view", ""), "age": h.get("age", ""),
                "sex": h.get("sex", ""),
            })  # fmt: skip
        print(f"fold {fold}: {len(val)} images", file=sys.stderr)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return 0


def _design(rows: list[dict[str, str]], features: tuple[str, ...], with_header: bool) -> np.ndarray:
    out = []
    for r in rows:
        meta = {"PatientAge": r["age"], "PatientSex": r["sex"]} if with_header else NO_HEADER
        out.append(feature_row(features, float(r["p_raw"]), r["view"] if with_header else None, meta))
    return np.array(out)


def fit_rows(rows: list[dict[str, str]], features: tuple[str, ...], fitted_on: str) -> Calibration:
    """The calibration fitted on ``rows``; with header features each row is entered twice, with and without its
    header, so that input without one (PNG/JPEG) has a fitted "unknown" value."""
    y = np.array([int(r["target"]) for r in rows])
    x = _design(rows, features, True)
    if any(f in HEADER_FEATURES for f in features):
        x = np.vstack([x, _design(rows, features, False)])
        y = np.concatenate([y, y])
    coef, intercept = fit_logistic(x, y)
    return Calibration(features, tuple(float(c) for c in coef), intercept, fitted_on)


def _apply(cal: Calibration, rows: list[dict[str, str]], with_header: bool) -> np.ndarray:
    return np.array([
        cal.apply(float(r["p_raw"]), r["view"] if with_header else None,
                  {"PatientAge": r["age"], "PatientSex": r["sex"]} if with_header else NO_HEADER)
        for r in rows
    ])  # fmt: skip


def fit(args: argparse.Namespace) -> int:
    with open(args.oof, newline="") as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([int(r["target"]) for r in rows])
    folds = sorted({r["fold"] for r in rows})
    raw = np.array([float(r["p_raw"]) for r in rows])
    print(f"{len(rows)} out-of-fold predictions, {int(y.sum())} with opacity, {len(folds)} folds")
    print(f"{'calibration':<22} {'AUC':>14} {'ECE':>7} {'AUC no header':>14} {'ECE no header':>14}")
    print(f"{'none (softmax)':<22} {_auc_se(y, raw):>14} {expected_calibration_error(raw, y):>7.3f}")
    crossed: dict[str, np.ndarray] = {}
    for name, features in FEATURE_SETS.items():
        cross = np.zeros(len(rows))
        cross_nh = np.zeros(len(rows))
        for k in folds:
            train = [r for r in rows if r["fold"] != k]
            test = [i for i, r in enumerate(rows) if r["fold"] == k]
            cal = fit_rows(train, features, "")
            cross[test] = _apply(cal, [rows[i] for i in test], True)
            cross_nh[test] = _apply(cal, [rows[i] for i in test], False)
        crossed[name] = cross
        print(
            f"{name:<22} {_auc_se(y, cross):>14} {expected_calibration_error(cross, y):>7.3f} "
            f"{_auc_se(y, cross_nh):>14} {expected_calibration_error(cross_nh, y):>14.3f}"
        )
    if args.cross_out:
        with open(args.cross_out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*rows[0], "p_cal"], lineterminator="\n")
            w.writeheader()
            w.writerows({**r, "p_cal": f"{c:.6f}"} for r, c in zip(rows, crossed[args.features], strict=True))
    chosen = fit_rows(rows, FEATURE_SETS[args.features], args.fitted_on)
    print("chosen:", chosen.to_dict())
    if args.write:
        write_table(args.write, args.id, chosen)
    return 0


def _auc_se(y: np.ndarray, p: np.ndarray) -> str:
    return f"{roc_auc(y, p):.3f} ± {bootstrap_se(lambda i: roc_auc(y[i], p[i]), len(y)):.3f}"


def write_table(manifest: Path, ident: str, cal: Calibration, key: str = "calibration") -> None:
    """Store ``cal`` as the ``key`` table (``calibration`` or ``fusion``) of model or ensemble ``ident``."""
    import tomllib

    from pneumoview.inference.manifest import ensemble_entry_toml, model_entry_toml, upsert_entries

    doc = tomllib.loads(manifest.read_text())
    for kind, render in (("model", model_entry_toml), ("ensemble", ensemble_entry_toml)):
        for entry in doc.get(kind, []):
            if entry["id"] == ident:
                entry[key] = cal.to_dict()
                upsert_entries(manifest, {ident: render(entry)})
                print(f"{key} written to {ident} in {manifest}")
                return
    raise SystemExit(f"no model or ensemble {ident!r} in {manifest}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("oof")
    o.add_argument("--models", type=Path, required=True)
    o.add_argument("--prefix", default="rsna3-fold")
    o.add_argument("--folds", type=int, default=5)
    o.add_argument("--split-seed", type=int, default=0)
    o.add_argument("--index", type=Path, required=True)
    o.add_argument("--data", type=Path, default=DATA)
    o.add_argument("--images", type=Path, default=None, help="image folder (default: DATA/images-512)")
    o.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit")
    f.add_argument("--oof", type=Path, required=True)
    f.add_argument("--features", choices=sorted(FEATURE_SETS), default="header")
    f.add_argument("--fitted-on", default="out-of-fold predictions of the training split")
    f.add_argument("--write", type=Path)
    f.add_argument(
        "--cross-out", type=Path, help="write oof.csv with the cross-fitted calibrated p_cal column"
    )
    f.add_argument("--id")
    args = ap.parse_args(argv)
    return oof(args) if args.cmd == "oof" else fit(args)


if __name__ == "__main__":
    raise SystemExit(main())
