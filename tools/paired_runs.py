#!/usr/bin/env python3
"""Two ``pneumoview predict`` runs over the same RSNA images, compared pairwise (e.g. with and without ``--tta``).

Each run folder needs the per-image scores of ``pneumoview evaluate RUN/submission.csv --per-image
RUN/per-image.csv`` and ``predict``'s own ``findings.csv`` (P(opacity) per image). Prints, for each run, the RSNA mAP
and the P(opacity) ROC AUC (opacity vs rest) and, for B − A, their paired differences; every ± is one standard error
from a bootstrap over NIH patients (an image's patient from the subset's ``index.csv``; 1,000 resamples), so a
patient's images move together.

    python tools/paired_runs.py RUN_A RUN_B [--classes stage_2_detailed_class_info.csv] [--index index.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.measure_fusion import _paired  # noqa: E402
from tools.measure_levers import DATA, _auc_se, _boot, _map_se, _paired_map  # noqa: E402


def _read(run: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Per image: the RSNA score (NaN = skipped: no truth, no box) and the reported P(opacity)."""
    per_image = run / "per-image.csv"
    if not per_image.is_file():
        raise SystemExit(
            f"{per_image}: missing; run pneumoview evaluate {run}/submission.csv --per-image {per_image}"
        )
    with open(per_image, encoding="utf-8", newline="") as f:
        score = {r["patientId"]: float(r["score"]) if r["score"] else np.nan for r in csv.DictReader(f)}
    with open(run / "findings.csv", encoding="utf-8", newline="") as f:
        p = {r["image_id"]: float(r["p_opacity"]) for r in csv.DictReader(f)}
    return score, p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--classes", type=Path, default=DATA / "stage_2_detailed_class_info.csv")
    ap.add_argument("--index", type=Path, default=DATA / "index.csv")
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args(argv)
    (sa, pa), (sb, pb) = _read(args.a), _read(args.b)
    if set(sa) != set(sb):
        raise SystemExit(f"{args.a} and {args.b} scored different images ({len(set(sa) ^ set(sb))} differ)")
    with open(args.classes, encoding="utf-8", newline="") as f:
        target = {r["patientId"]: int(r["class"] == "Lung Opacity") for r in csv.DictReader(f)}
    with open(args.index, encoding="utf-8", newline="") as f:
        patient = {r["patientId"]: r["nih_patient"] or r["patientId"] for r in csv.DictReader(f)}
    keys = sorted(sa)
    boots = _boot({k: {"patient": patient.get(k, k)} for k in keys}, keys, args.boot)
    y = np.array([target[k] for k in keys])
    m = {"A": np.array([sa[k] for k in keys]), "B": np.array([sb[k] for k in keys])}
    p = {"A": np.array([pa[k] for k in keys]), "B": np.array([pb[k] for k in keys])}
    print(
        f"{len(keys)} images, {int(y.sum())} with opacity, {len(set(patient.get(k, k) for k in keys))} patients"
    )
    for name, run in (("A", args.a), ("B", args.b)):
        (mp, se_m), (auc, se_a) = _map_se(m[name], boots), _auc_se(y, p[name], boots)
        print(f"{name} {run}: mAP {mp:.4f} ± {se_m:.4f}, P(opacity) AUC {auc:.4f} ± {se_a:.4f}")
    (dm, se_dm), (da, se_da) = _paired_map(m["B"], m["A"], boots), _paired(y, p["B"], p["A"], boots)
    print(f"B − A: mAP {dm:+.4f} ± {se_dm:.4f}, AUC {da:+.4f} ± {se_da:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
