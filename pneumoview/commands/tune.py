"""``pneumoview tune``: sweep the post-processing thresholds on a labelled set, running the models only once."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.commands.common import (
    add_model_options,
    add_threshold_source_options,
    base_thresholds,
    engine_from_args,
    thresholds_line,
)
from pneumoview.errors import ImageReadError, PneumoViewError
from pneumoview.metrics import rsna_map
from pneumoview.rsna_labels import read_labels, scale_boxes
from pneumoview.thresholds import FUSION_MODES, GATE_MODES, Thresholds

# Values tried for each threshold (one at a time, coordinate descent from the current defaults).
GRID: dict[str, tuple[Any, ...]] = {
    "gate_mode": GATE_MODES,
    "gate": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
    "gate_box_score": (0.6, 0.7, 0.8, 0.9),
    "seg_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "min_area_fraction": (0.0, 0.005, 0.01, 0.0238, 0.04, 0.06),
    "det_score": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "nms_iou": (0.1, 0.2, 0.3, 0.5),
    "fusion": FUSION_MODES,
    "fusion_iou": (0.3, 0.4, 0.5, 0.6),
    "shrink": (0.75, 0.8, 0.85, 0.875, 0.9, 0.95, 1.0),
}
NEEDS = {
    "gate_mode": "classify",
    "gate": "classify",
    "gate_box_score": "classify",
    "seg_threshold": "segment",
    "min_area_fraction": "segment",
    "det_score": "detect",
    "nms_iou": "detect",
    "fusion": "both",
    "fusion_iou": "both",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="find the thresholds with the best RSNA mAP on a labelled set",
        description="Run the models once over a labelled set (RSNA layout: <patientId>.dcm/.png/.jpg), then sweep "
        "every post-processing threshold (coordinate descent over a grid, post-processing only) and report the "
        "settings with the best RSNA mAP@[.40:.75], with a table of the sweep. Use a set the models were not "
        "trained on (e.g. the validation split), or the numbers will be optimistic.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="LABELLED_INPUT", help="folders or files")
    p.add_argument("--labels", type=Path, required=True, help="stage_2_train_labels.csv")
    p.add_argument(
        "--only",
        type=Path,
        default=None,
        metavar="CSV",
        help="restrict to patientIds listed (column patientId)",
    )
    p.add_argument("--rounds", type=int, default=2, help="coordinate-descent rounds (default 2)")
    p.add_argument("--limit", type=int, default=None, help="use at most N images")
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write tune.csv and best_thresholds.json here"
    )
    p.add_argument(
        "--save",
        action="store_true",
        help="save the best thresholds as the viewer's (profile 'viewer'; predict uses them with "
        "--thresholds-profile viewer)",
    )
    add_threshold_source_options(p.add_argument_group("starting thresholds (default: the built-in defaults)"))
    add_model_options(p)
    p.set_defaults(run=run)


@dataclass
class _Case:
    image_id: str
    shape: tuple[int, int]
    spacing: tuple[float, float] | None
    result: Any
    gt: np.ndarray


def _collect(args: argparse.Namespace, engine) -> list[_Case]:
    # lazy: only the command-line progress bar needs it
    from tqdm import tqdm

    # lazy: batch analysis is a cold path here
    from pneumoview.batch import collect_inputs

    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.imaging import load_image

    labels = read_labels(args.labels)
    only = None
    if args.only:
        with open(args.only, newline="", encoding="utf-8") as f:
            only = {row["patientId"] for row in csv.DictReader(f)}
    inputs = [i for i in collect_inputs(args.inputs) if i.error is None]
    cases: list[_Case] = []
    images = []
    skipped = 0
    for inp in inputs:
        try:
            im = load_image(inp.path)
        except ImageReadError:
            skipped += 1
            continue
        if im.image_id not in labels or (only is not None and im.image_id not in only):
            skipped += 1
            continue
        images.append(im)
        if args.limit and len(images) >= args.limit:
            break
    if skipped:
        print(
            f"note: {skipped} input(s) skipped (unreadable, or not in the labels/--only list)",
            file=sys.stderr,
        )
    for start in tqdm(range(0, len(images), 8), desc="running models", unit="batch", file=sys.stderr):
        chunk = images[start : start + 8]
        for im, res in zip(chunk, engine.analyze_batch(chunk), strict=True):
            cases.append(
                _Case(im.image_id, im.shape, im.spacing_mm, res, scale_boxes(labels[im.image_id], im.shape))
            )
    return cases


def evaluate(cases: list[_Case], t: Thresholds) -> float:
    """RSNA mAP of ``cases`` post-processed with ``t``."""
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.postprocess import postprocess

    preds = {}
    gt = {}
    for c in cases:
        f = postprocess(c.result, t, spacing_mm=c.spacing)
        preds[c.image_id] = (f.fused.boxes, f.fused.scores)
        gt[c.image_id] = c.gt
    return rsna_map(gt, preds).map


def sweep(cases: list[_Case], start: Thresholds, stages: set[str], rounds: int = 2):
    """Coordinate descent over :data:`GRID`; returns (best thresholds, best mAP, rows of (round, key, value, mAP))."""
    best = start
    best_map = evaluate(cases, best)
    rows: list[tuple[int, str, Any, float]] = [(0, "start", "", best_map)]
    for rnd in range(1, rounds + 1):
        improved = False
        for key, values in GRID.items():
            need = NEEDS.get(key)
            if need == "both" and not {"segment", "detect"} <= stages:
                continue
            if need not in (None, "both") and need not in stages:
                continue
            for v in values:
                if getattr(best, key) == v:
                    continue
                cand = best.replace(**{key: v})
                m = evaluate(cases, cand)
                rows.append((rnd, key, v, m))
                if m > best_map + 1e-9:
                    best, best_map, improved = cand, m, True
        if not improved:
            break
    return best, best_map, rows


def run(args: argparse.Namespace) -> int:
    try:
        engine = engine_from_args(args)
    except PneumoViewError as exc:
        print(f"pneumoview tune: cannot set up the models: {exc}", file=sys.stderr)
        return 2
    avail = engine.available_stages()
    stages = {s for s, why in avail.items() if why is None}
    if not stages & {"segment", "detect"}:
        print("pneumoview tune: neither the segmentation ensemble nor the detector can run:", file=sys.stderr)
        for s, why in avail.items():
            print(f"  {s}: {why}", file=sys.stderr)
        return 2
    try:
        cases = _collect(args, engine)
    except (OSError, ValueError) as exc:
        print(f"pneumoview tune: {exc}", file=sys.stderr)
        return 2
    if not cases:
        print(
            "pneumoview tune: no labelled images found (file stems must be RSNA patientIds)", file=sys.stderr
        )
        return 2
    try:
        start, source = base_thresholds(args)
    except (OSError, ValueError) as exc:
        print(f"pneumoview tune: bad thresholds: {exc}", file=sys.stderr)
        return 2
    print(thresholds_line(start, source).replace("thresholds (", "starting thresholds (", 1))
    best, best_map, rows = sweep(cases, start, stages, args.rounds)
    n_pos = sum(1 for c in cases if len(c.gt))
    print(f"\n{len(cases)} labelled images ({n_pos} with opacity); models ran once on {engine.device}")
    print(f"{'round':>5s}  {'threshold':18s} {'value':>10s}  {'mAP':>7s}")
    for rnd, key, v, m in rows:
        print(f"{rnd:>5d}  {key:18s} {v!s:>10s}  {m:7.4f}")
    print(f"\nstart mAP {rows[0][3]:.4f} → best mAP {best_map:.4f} with:")
    for k, v in best.to_dict().items():
        mark = "  (changed)" if getattr(start, k) != v else ""
        print(f"  {k:18s} {v}{mark}")
    if args.out:
        # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
        from pneumoview.export import atomic_write_text, write_json

        lines = ["round,threshold,value,map"] + [f"{r},{k},{v},{m:.6f}" for r, k, v, m in rows]
        atomic_write_text(args.out / "tune.csv", "\n".join(lines) + "\n")
        write_json(
            args.out / "best_thresholds.json", best.to_dict() | {"map": best_map, "images": len(cases)}
        )
        print(
            f"sweep written to {args.out / 'tune.csv'}, best settings to {args.out / 'best_thresholds.json'}"
        )
    if args.save:
        # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
        from pneumoview.settings import load_settings, save_settings

        s = load_settings()
        save_settings(s.replace(thresholds=best.to_dict()) if hasattr(s, "replace") else _with(s, best))
        print(
            "saved as the viewer's thresholds (profile 'viewer': the viewer uses them, and "
            "pneumoview predict --thresholds-profile viewer)"
        )
    return 0


def _with(settings: Any, best: Thresholds) -> Any:
    return dataclasses.replace(settings, thresholds=best.to_dict())


def best_thresholds_from_file(path: Path) -> Thresholds:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Thresholds.from_dict({k: v for k, v in data.items() if k not in ("map", "images")})
