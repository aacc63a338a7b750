#!/usr/bin/env python3
"""Cross-validate the shipped pipeline's rules (issue #11): per fold, the out-of-fold outputs of fold models trained
with the shipped recipes, scored with the shipped P(opacity) calibration and fusion coefficients and the default
thresholds, as a per-fold and a pooled RSNA mAP and P(opacity) AUC with patient-level bootstrap standard errors.

The out-of-fold outputs are kept in the repository (``docs/evidence/oof-fold<I>.csv``, one row per image: the
classifier's raw P(opacity) and every detector box with its score, in the pixel frame of the 512-px training image),
so that folds trained in different sessions add up and the table can be recomputed without the fold models.

    python tools/crossval_pipeline.py folds --index TRAIN_INDEX --out folds.csv
    python tools/crossval_pipeline.py last-epoch --models FOLD_MODELS --id det-fold2
    python tools/measure_fusion.py collect --ids folds.csv --fold 2 --images DIR --classifier rsna3-fold2 \
        --detector det-fold2-last --labels LABELS --cache fold2.pkl
    python tools/crossval_pipeline.py export --cache fold2.pkl --fold 2 --out docs/evidence/oof-fold2.csv
    python tools/crossval_pipeline.py report docs/evidence/oof-fold*.csv

The coefficients of the shipped fusion were fitted on fold 0, so fold 0's rows are in-sample for it (and for the
thresholds, which `pneumoview tune` chose there); ``report`` says so in its table.
"""

from __future__ import annotations

import argparse
import csv
import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.calibration import Calibration, expected_calibration_error  # noqa: E402
from pneumoview.metrics import roc_auc, rsna_image_score  # noqa: E402
from pneumoview.thresholds import Thresholds  # noqa: E402
from tools.measure_fusion import _paired  # noqa: E402
from tools.measure_levers import _auc_se, _boot, _findings, _map_se, _paired_map  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "rsna"
CHOSEN_ON = {0}  # the fold the shipped thresholds and fusion were chosen on
FIELDS = ["patientId", "nih_patient", "fold", "target", "rows", "cols", "p_raw", "det"]


def _boxes_text(boxes: np.ndarray, scores: np.ndarray) -> str:
    """``x y w h score`` per box (pixels of the scored image, score in [0, 1]), ``;``-separated."""
    return ";".join(
        f"{b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f} {s:.4f}"
        for b, s in zip(np.asarray(boxes).reshape(-1, 4), scores, strict=True)
    )


def _boxes_parse(text: str) -> tuple[np.ndarray, np.ndarray]:
    vals = np.array([[float(v) for v in part.split()] for part in text.split(";") if part.strip()])
    if not len(vals):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return vals[:, :4].astype(np.float32), vals[:, 4].astype(np.float32)


def folds(args: argparse.Namespace) -> int:
    """Every training image with its fold, as the trainer's ``--folds K --fold I`` deals them."""
    from tools.fit_calibration import fold_records

    with open(args.out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["patientId", "nih_patient", "fold", "target"])
        for fold, recs in enumerate(fold_records(args.data, args.index, args.folds, args.split_seed)):
            w.writerows([r.key, r.patient, fold, int(r.label == "Lung Opacity")] for r in recs)
    return 0


def last_epoch(args: argparse.Namespace) -> int:
    """Model ``<id>-last``: the last epoch of run ``<id>`` (its ``checkpoint.pt``), fp16, with ``<id>``'s manifest
    entry. The trainer keeps the epoch with the best validation metric, and for a fold model the validation images
    are the very images cross-validation scores, so the evidence uses the last epoch instead."""
    import tomllib

    import torch

    from pneumoview.inference.manifest import model_entry_toml, upsert_entries
    from pneumoview.training.checkpoint import export_weights, half_state

    ck = torch.load(args.models / "runs" / args.id / "checkpoint.pt", map_location="cpu", weights_only=False)
    weights, sha = export_weights(half_state(ck["model"]), args.models, f"{args.id}-last")
    doc = tomllib.loads((args.models / "manifest.toml").read_text(encoding="utf-8"))
    entry = dict(next(e for e in doc["model"] if e["id"] == args.id))
    entry.update(id=f"{args.id}-last", weights=weights.name, sha256=sha)
    history = ck.get("history") or [{}]
    entry["description"] = f"{entry.get('description', args.id)} (last epoch, {len(history)})"
    metric = entry.get("metrics", {}).get("metric")
    entry["metrics"] = {
        k: v
        for k, v in history[-1].items()
        if k not in ("epoch", "lr", "seconds") and isinstance(v, int | float)
    } | ({"metric": metric} if metric else {})
    upsert_entries(args.models / "manifest.toml", {entry["id"]: model_entry_toml(entry)})
    print(f"{args.id}-last: {weights} (sha256 {sha[:12]})")
    return 0


def export(args: argparse.Namespace) -> int:
    with open(args.cache, "rb") as f:
        cache = pickle.load(f)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        for key in sorted(cache):
            c = cache[key]
            w.writerow({
                "patientId": key, "nih_patient": c["patient"], "fold": args.fold, "target": c["target"],
                "rows": c["shape"][0], "cols": c["shape"][1], "p_raw": f"{c['p_raw']:.6f}",
                "det": _boxes_text(*c["det"]),
            })  # fmt: skip
    print(f"{len(cache)} images -> {args.out}")
    return 0


def load_rows(paths: list[Path], labels: Path) -> dict[str, dict]:
    """patientId → the entry ``tools.measure_levers`` scores: patient, fold, target, shape, ground truth, raw
    P(opacity), detector boxes and (no) segmentation boxes."""
    from pneumoview.rsna_labels import read_labels, scale_boxes

    truth = read_labels(labels)
    out: dict[str, dict] = {}
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                if r["patientId"] in out:
                    raise SystemExit(
                        f"{path}: image {r['patientId']} is in two files (each image has one fold)"
                    )
                shape = (int(r["rows"]), int(r["cols"]))
                out[r["patientId"]] = {
                    "patient": r["nih_patient"], "fold": int(r["fold"]), "target": int(r["target"]),
                    "shape": shape, "gt": scale_boxes(truth.get(r["patientId"], np.zeros((0, 4))), shape),
                    "p_raw": float(r["p_raw"]), "det": _boxes_parse(r["det"]),
                }  # fmt: skip
    return out


def _probabilities(rows: dict[str, dict], keys: list[str], cal: Calibration) -> np.ndarray:
    out = []
    for k in keys:
        scores = rows[k]["det"][1]
        top = float(scores.max()) if len(scores) else 0.0
        out.append(cal.apply(rows[k]["p_raw"], None, {}, {"det_score": top}))
    return np.array(out)


def _map_scores(rows: dict[str, dict], keys: list[str], p: np.ndarray, t: Thresholds) -> np.ndarray:
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    out = []
    for k, pk in zip(keys, p, strict=True):
        c = rows[k]
        found = _findings({"p": float(pk), "det": c["det"], "seg": empty}, c["shape"], t)
        s = rsna_image_score(c["gt"], found.boxes, found.scores)
        out.append(np.nan if s is None else s)
    return np.array(out)


def _line(
    name: str, rows: dict[str, dict], keys: list[str], platt: Calibration, fusion: Calibration, n: int
) -> str:
    y = np.array([rows[k]["target"] for k in keys])
    boots = _boot(rows, keys, n)
    p_cls = np.array([platt.apply(rows[k]["p_raw"]) for k in keys])
    p_fused = _probabilities(rows, keys, fusion)
    t = Thresholds()
    a_cls, a_fused = _auc_se(y, p_cls, boots), _auc_se(y, p_fused, boots)
    d, dse = _paired(y, p_fused, p_cls, boots)
    m = _map_se(_map_scores(rows, keys, p_fused, t), boots)
    m_det = _map_se(_map_scores(rows, keys, np.ones(len(keys)), t), boots)
    return (
        f"| {name} | {len(keys)} ({int(y.sum())}) | {a_cls[0]:.3f} ± {a_cls[1]:.3f} | {a_fused[0]:.3f} ± "
        f"{a_fused[1]:.3f} | {d:+.3f} ± {dse:.3f} | "
        f"{expected_calibration_error(p_cls, y):.3f} / {expected_calibration_error(p_fused, y):.3f} | "
        f"{m[0]:.3f} ± {m[1]:.3f} | {m_det[0]:.3f} ± {m_det[1]:.3f} |"
    )


def report(args: argparse.Namespace) -> int:
    from pneumoview.inference.manifest import load_manifest

    spec = load_manifest([args.models], check_builders=False).model(args.classifier)
    if spec.calibration is None or spec.fusion is None:
        raise SystemExit(
            f"{args.classifier} in {args.models} has no calibration and fusion to cross-validate"
        )
    rows = load_rows(args.oof, args.labels)
    folds = sorted({r["fold"] for r in rows.values()})
    print(
        "| fold | images (with opacity) | AUC classifier (Platt) | AUC fused | paired | ECE Platt / fused | "
        "mAP, 1.2 defaults | mAP, no gate |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fold in folds:
        keys = sorted(k for k, r in rows.items() if r["fold"] == fold)
        name = f"{fold} (chosen here)" if fold in CHOSEN_ON else str(fold)
        print(_line(name, rows, keys, spec.calibration, spec.fusion, args.boot))
    if len(folds) > 1:
        keys = sorted(rows)
        print(
            _line(
                f"pooled {', '.join(map(str, folds))}", rows, keys, spec.calibration, spec.fusion, args.boot
            )
        )
    return 0


def _features(rows: dict[str, dict], keys: list[str], features: tuple[str, ...]) -> np.ndarray:
    from pneumoview.calibration import feature_row

    out = []
    for k in keys:
        scores = rows[k]["det"][1]
        top = float(scores.max()) if len(scores) else 0.0
        out.append(feature_row(features, rows[k]["p_raw"], None, {}, {"det_score": top}))
    return np.array(out, dtype=np.float64)


def _log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _cross_fitted_rows(
    args: argparse.Namespace, command: str, scored_by: str
) -> tuple[dict[str, dict], list[str], np.ndarray]:
    """The rows of ``args.oof``, their sorted keys and each key's fold; at least two folds, since every fold is
    scored by what the other folds chose."""
    rows = load_rows(args.oof, args.labels)
    keys = sorted(rows)
    fold = np.array([rows[k]["fold"] for k in keys])
    if len(set(fold)) < 2:
        raise SystemExit(
            f"{command} needs the rows of at least two folds (each fold is scored by {scored_by})"
        )
    return rows, keys, fold


def refit(args: argparse.Namespace) -> int:
    """The declared rule (docs/evidence/README.md): the fusion refitted across the given folds (fit on the others,
    score each fold) against the shipped coefficients, by per-image log loss with a paired patient bootstrap; with
    ``--write``, and only when the refit wins by more than one standard error, its fit on all the rows goes into
    the manifest."""
    from pneumoview.calibration import fit_logistic
    from pneumoview.inference.manifest import load_manifest
    from tools.fit_calibration import write_table

    spec = load_manifest([args.models], check_builders=False).model(args.classifier)
    shipped = spec.fusion
    if shipped is None:
        raise SystemExit(f"{args.classifier} in {args.models} has no fusion to compare with")
    rows, keys, fold = _cross_fitted_rows(args, "refit", "a fit on the others")
    y = np.array([rows[k]["target"] for k in keys], dtype=np.float64)
    x = _features(rows, keys, shipped.features)
    crossed = np.zeros(len(keys))
    for f in sorted(set(fold)):
        coef, b = fit_logistic(x[fold != f], y[fold != f])
        crossed[fold == f] = 1.0 / (1.0 + np.exp(-np.clip(x[fold == f] @ coef + b, -50, 50)))
    old = _probabilities(rows, keys, shipped)
    d = _log_loss(old, y) - _log_loss(crossed, y)
    boots = _boot(rows, keys, args.boot)
    se = float(np.std([d[b].mean() for b in boots], ddof=1))
    print(f"{len(keys)} images of folds {sorted(set(fold.tolist()))}, {int(y.sum())} with opacity")
    for name, p in (("shipped coefficients", old), ("refit, cross-fitted", crossed)):
        a = _auc_se(y, p, boots)
        print(
            f"{name:22s} log loss {_log_loss(p, y).mean():.4f}, AUC {a[0]:.3f} ± {a[1]:.3f}, "
            f"ECE {expected_calibration_error(p, y):.3f}, mean {p.mean():.3f} (prevalence {y.mean():.3f})"
        )
    wins = d.mean() > se
    print(f"log loss gain of the refit {d.mean():+.4f} ± {se:.4f}: {'adopt' if wins else 'keep the shipped'}")
    coef, b = fit_logistic(x, y)
    print(f"fit on all rows: coef {np.round(coef, 6).tolist()}, intercept {b:.6f}")
    if args.write and wins:
        cal = Calibration(
            shipped.features, tuple(float(c) for c in coef), b, args.fitted_on, shipped.detector
        )
        write_table(args.models / "manifest.toml", args.classifier, cal, "fusion")
    return 0


def _shipped_spec(models: Path, classifier: str):
    from pneumoview.inference.manifest import load_manifest

    spec = load_manifest([models], check_builders=False).model(classifier)
    if spec.calibration is None or spec.fusion is None:
        raise SystemExit(f"{classifier} in {models} has no calibration and fusion to cross-validate")
    return spec


def compare(args: argparse.Namespace) -> int:
    """Two runs of the same fold models over the same images (e.g. without and with flip TTA), scored with the
    shipped calibration, fusion and default thresholds: pooled mAP and fused AUC with paired standard errors."""
    spec = _shipped_spec(args.models, args.classifier)
    base, other = load_rows(args.base, args.labels), load_rows(args.other, args.labels)
    if set(base) != set(other):
        raise SystemExit(
            f"the two sets of evidence cover different images ({len(set(base) ^ set(other))} differ)"
        )
    keys = sorted(base)
    y = np.array([base[k]["target"] for k in keys])
    boots = _boot(base, keys, args.boot)
    t = Thresholds()
    p = {n: _probabilities(r, keys, spec.fusion) for n, r in (("base", base), ("other", other))}
    m = {n: _map_scores(r, keys, p[n], t) for n, r in (("base", base), ("other", other))}
    for n in ("base", "other"):
        a, mm = _auc_se(y, p[n], boots), _map_se(m[n], boots)
        print(
            f"{n:5s} mAP {mm[0]:.3f} ± {mm[1]:.3f}, fused AUC {a[0]:.3f} ± {a[1]:.3f}, "
            f"ECE {expected_calibration_error(p[n], y):.3f}"
        )
    d_map, se_map = _paired_map(m["other"], m["base"], boots)
    d_auc, se_auc = _paired(y, p["other"], p["base"], boots)
    print(f"other − base: mAP {d_map:+.4f} ± {se_map:.4f}, fused AUC {d_auc:+.4f} ± {se_auc:.4f}")
    for fold in sorted({r["fold"] for r in base.values()}):
        idx = np.array([base[k]["fold"] == fold for k in keys])
        print(
            f"  fold {fold}: mAP {np.nanmean(m['base'][idx]):.3f} → {np.nanmean(m['other'][idx]):.3f}, "
            f"fused AUC {roc_auc(y[idx], p['base'][idx]):.3f} → {roc_auc(y[idx], p['other'][idx]):.3f}"
        )
    return 0


RETUNE_GRID = {
    "det_score": (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80),
    "shrink": (0.85, 0.875, 0.90, 0.925, 0.95, 1.0),
    "nms_iou": (0.1, 0.2, 0.3, 0.4),
    "gate": (0.1, 0.2, 0.3),
}


def _grid() -> list[Thresholds]:
    import itertools

    names = list(RETUNE_GRID)
    return [
        Thresholds().replace(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*(RETUNE_GRID[n] for n in names))
    ]


def _setting(t: Thresholds) -> str:
    return ", ".join(f"{n} {getattr(t, n):g}" for n in RETUNE_GRID)


def retune(args: argparse.Namespace) -> int:
    """The declared rule 4 (docs/evidence/README.md): the default thresholds re-chosen on the grid
    :data:`RETUNE_GRID`, cross-fitted (each fold scored with the setting best on the others), against the shipped
    defaults on the same images by a paired patient bootstrap of the pooled mAP."""
    spec = _shipped_spec(args.models, args.classifier)
    rows, keys, fold = _cross_fitted_rows(args, "retune", "the others' choice")
    p = _probabilities(rows, keys, spec.fusion)
    grid = _grid()
    scores = np.stack([_map_scores(rows, keys, p, t) for t in grid])  # (settings, images), NaN = skipped
    shipped = _map_scores(rows, keys, p, Thresholds())
    crossed = np.full(len(keys), np.nan)
    print(f"{len(keys)} images of folds {sorted(set(fold.tolist()))}, {len(grid)} settings")
    for f in sorted(set(fold.tolist())):
        with np.errstate(invalid="ignore"):
            best = int(np.nanargmax(np.nanmean(scores[:, fold != f], axis=1)))
        crossed[fold == f] = scores[best, fold == f]
        print(
            f"  fold {f}: chosen on the others: {_setting(grid[best])}; fold mAP "
            f"{np.nanmean(shipped[fold == f]):.3f} (defaults) → {np.nanmean(crossed[fold == f]):.3f}"
        )
    boots = _boot(rows, keys, args.boot)
    d, se = _paired_map(crossed, shipped, boots)
    wins = d > se
    print(
        f"pooled mAP: defaults {_map_se(shipped, boots)[0]:.3f}, cross-fitted {_map_se(crossed, boots)[0]:.3f}; "
        f"gain {d:+.4f} ± {se:.4f}: {'adopt' if wins else 'keep the defaults'}"
    )
    best = int(np.nanargmax(np.nanmean(scores, axis=1)))
    print(f"best on all rows: {_setting(grid[best])} (in-sample mAP {np.nanmean(scores[best]):.3f})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("folds", help="the fold of every training image, as the trainer deals them")
    s.add_argument("--index", type=Path, required=True, help="index.csv of the training split's images")
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(run=folds)
    le = sub.add_parser("last-epoch", help="a fold model's last epoch as model <id>-last")
    le.add_argument("--models", type=Path, required=True, help="the models folder the run wrote")
    le.add_argument("--id", required=True)
    le.set_defaults(run=last_epoch)
    e = sub.add_parser("export", help="a measure_fusion cache as an out-of-fold evidence CSV")
    e.add_argument("--cache", type=Path, required=True)
    e.add_argument("--fold", type=int, required=True)
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(run=export)
    r = sub.add_parser("report", help="per-fold and pooled AUC and mAP of the shipped rules")
    r.add_argument("oof", type=Path, nargs="+", help="evidence CSVs written by export")
    r.add_argument("--labels", type=Path, default=DATA / "stage_2_train_labels.csv")
    r.add_argument(
        "--models", type=Path, default=ROOT / "models", help="folder whose manifest has the classifier"
    )
    r.add_argument("--classifier", default="rsna3-classifier")
    r.add_argument("--boot", type=int, default=1000)
    r.set_defaults(run=report)
    f = sub.add_parser("refit", help="the declared refit rule for the fusion coefficients")
    f.add_argument("oof", type=Path, nargs="+", help="evidence CSVs of two or more folds")
    f.add_argument("--labels", type=Path, default=DATA / "stage_2_train_labels.csv")
    f.add_argument("--models", type=Path, default=ROOT / "models")
    f.add_argument("--classifier", default="rsna3-classifier")
    f.add_argument("--boot", type=int, default=1000)
    f.add_argument(
        "--write", action="store_true", help="store the refit in the manifest when the rule adopts it"
    )
    f.add_argument("--fitted-on", default="out-of-fold outputs of the training split's folds")
    f.set_defaults(run=refit)
    c = sub.add_parser(
        "compare", help="two runs of the fold models (e.g. flip TTA) on the same images, paired"
    )
    c.add_argument("--base", type=Path, nargs="+", required=True, help="evidence CSVs of the first run")
    c.add_argument("--other", type=Path, nargs="+", required=True, help="evidence CSVs of the second run")
    t = sub.add_parser("retune", help="the declared rule for re-choosing the default thresholds")
    t.add_argument("oof", type=Path, nargs="+", help="evidence CSVs of two or more folds")
    for sp, run in ((c, compare), (t, retune)):
        sp.add_argument("--labels", type=Path, default=DATA / "stage_2_train_labels.csv")
        sp.add_argument("--models", type=Path, default=ROOT / "models")
        sp.add_argument("--classifier", default="rsna3-classifier")
        sp.add_argument("--boot", type=int, default=1000)
        sp.set_defaults(run=run)
    args = ap.parse_args()
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
