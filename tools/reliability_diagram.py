#!/usr/bin/env python3
"""Reliability diagrams of P(opacity), drawn with Pillow, for the model card.

Each curve is a ``findings.csv`` of ``pneumoview predict`` (its ``p_opacity`` column, or ``--column``) scored against
the RSNA class file, or an ``oof.csv`` of ``tools/fit_calibration.py`` (column ``p_raw`` or ``p_cal``):

    python tools/reliability_diagram.py OUT.png "held-out, calibrated=run/findings.csv" "held-out, softmax=run/findings.csv:p_lung_opacity" ...

The x axis is the mean predicted probability in each of 10 equal-width bins, the y axis the observed share of
"Lung Opacity" images in the bin; marker area grows with the bin's image count. The legend gives each curve's expected
calibration error (ECE).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumoview.calibration import expected_calibration_error, reliability_bins  # noqa: E402
from pneumoview.rsna_labels import read_classes  # noqa: E402

CLASSES = ROOT.parent / "shared" / "data" / "rsna" / "stage_2_detailed_class_info.csv"
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
SIZE, MARGIN = 520, 60


def read_curve(spec: str, classes: dict[str, str]) -> tuple[str, np.ndarray, np.ndarray]:
    """``LABEL=PATH[:COLUMN]`` → (label, probabilities, 0/1 truth)."""
    label, _, where = spec.partition("=")
    path, _, column = where.partition(":")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    column = column or ("p_opacity" if "p_opacity" in rows[0] else "p_cal")
    key = "image_id" if "image_id" in rows[0] else "patientId"
    # findings.csv has a row per box: one per image is enough
    rows = list({r[key]: r for r in rows if r.get(column, "") != "" and r[key] in classes}.values())
    p = np.array([float(r[column]) for r in rows])
    y = np.array([classes[r[key]] == "Lung Opacity" for r in rows], dtype=float)
    return label, p, y


def draw(curves: list[tuple[str, np.ndarray, np.ndarray]], out: Path) -> None:
    img = Image.new("RGB", (SIZE + 2 * MARGIN, SIZE + 2 * MARGIN + 20 * len(curves)), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def xy(px: float, py: float) -> tuple[float, float]:
        return MARGIN + px * SIZE, MARGIN + (1 - py) * SIZE

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(150, 150, 150), width=1)
    for t in np.linspace(0, 1, 6):
        d.text((xy(t, 0)[0] - 8, xy(t, 0)[1] + 6), f"{t:.1f}", fill="black", font=font)
        d.text((xy(0, t)[0] - 28, xy(0, t)[1] - 6), f"{t:.1f}", fill="black", font=font)
    d.text(
        (MARGIN + SIZE // 2 - 80, MARGIN + SIZE + 24),
        "mean predicted P(opacity) in bin",
        fill="black",
        font=font,
    )
    d.text(
        (MARGIN, 20),
        "observed share with opacity (10 equal-width bins; area ~ images)",
        fill="black",
        font=font,
    )
    for n, (label, p, y) in enumerate(curves):
        colour = COLOURS[n % len(COLOURS)]
        bins = reliability_bins(p, y)
        pts = [xy(mp, obs) for _, mp, obs, _ in bins]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for (_, _, _, k), (cx, cy) in zip(bins, pts, strict=True):
            r = 2 + 10 * np.sqrt(k / len(p))
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=2)
        ece = expected_calibration_error(p, y)
        d.text(
            (MARGIN, MARGIN + SIZE + 44 + 20 * n),
            f"{label}: ECE {ece:.3f} (n = {len(p)}, mean {p.mean():.3f} vs observed {y.mean():.3f})",
            fill=colour,
            font=font,
        )
    img.save(out)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    classes = read_classes(CLASSES)
    draw([read_curve(s, classes) for s in argv[1:]], Path(argv[0]))
    print(f"written {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
