"""The per-epoch CSV log of a training run, and its loss/metric curves drawn as a PNG with Pillow.

The log has one row per epoch with the columns ``epoch, train_loss, val_loss, <metric>, lr, seconds`` followed by
the other validation metrics. Empty cells are values that were not computed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from pneumoview.atomic import atomic_write_text

BASE_COLUMNS = ("epoch", "train_loss", "val_loss")


def write_log(path: Path, history: Sequence[Mapping[str, Any]], metric: str) -> None:
    """Write the whole history as CSV (rewritten each epoch, so a resumed run keeps one consistent file)."""
    extra: list[str] = []
    for row in history:
        for k in row:
            if k not in (*BASE_COLUMNS, metric, "lr", "seconds") and k not in extra:
                extra.append(k)
    columns = [*BASE_COLUMNS, metric, "lr", "seconds", *extra]
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(columns)
    for row in history:
        w.writerow([_fmt(row.get(c)) for c in columns])
    atomic_write_text(path, out.getvalue())


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def read_log(path: Path) -> list[dict[str, float | None]]:
    """The CSV log as rows of floats (None for empty cells)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed: dict[str, float | None] = {}
        for k, v in row.items():
            try:
                parsed[k] = float(v) if v not in ("", None) else None
            except ValueError:
                parsed[k] = None
        out.append(parsed)
    return out


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: Mapping[str, list[tuple[float, float]]],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    x0, y0, x1, y1 = box
    left, right, top, bottom = x0 + 60, x1 - 15, y0 + 30, y1 - 40
    draw.text((x0 + 60, y0 + 8), title, fill=(0, 0, 0), font=font)
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    points = [p for pts in series.values() for p in pts if math.isfinite(p[1])]
    if not points:
        draw.text((left + 10, top + 10), "no data", fill=(120, 120, 120), font=font)
        return
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    xmin, xmax = min(xs), max(xs)
    ymin, ymax = min(ys), max(ys)
    if xmax == xmin:
        xmax = xmin + 1
    if ymax == ymin:
        ymin, ymax = ymin - 0.5, ymax + 0.5
    pad = (ymax - ymin) * 0.05
    ymin, ymax = ymin - pad, ymax + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - xmin) / (xmax - xmin) * (right - left),
            bottom - (y - ymin) / (ymax - ymin) * (bottom - top),
        )

    for i in range(5):
        yv = ymin + (ymax - ymin) * i / 4
        _, py = to_px(xmin, yv)
        draw.line([left, py, right, py], fill=(225, 225, 225))
        draw.text((x0 + 4, py - 6), f"{yv:.3g}", fill=(60, 60, 60), font=font)
    n_ticks = min(6, int(xmax - xmin) + 1)
    for i in range(n_ticks):
        xv = xmin + (xmax - xmin) * i / max(1, n_ticks - 1)
        px, _ = to_px(xv, ymin)
        draw.line([px, bottom, px, bottom + 4], fill=(0, 0, 0))
        draw.text((px - 8, bottom + 8), f"{xv:.0f}", fill=(60, 60, 60), font=font)
    draw.text(((left + right) // 2 - 15, bottom + 22), "epoch", fill=(0, 0, 0), font=font)
    for k, (name, pts) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        finite = [to_px(x, y) for x, y in pts if math.isfinite(y)]
        if len(finite) > 1:
            draw.line(finite, fill=colour, width=2)
        for px, py in finite:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.line([right - 130, top + 12 + 16 * k, right - 110, top + 12 + 16 * k], fill=colour, width=3)
        draw.text((right - 105, top + 5 + 16 * k), name, fill=(0, 0, 0), font=font)


def draw_curves(log_csv: Path, out_png: Path, metric: str, title: str = "") -> Path:
    """Draw train/validation loss and the validation metric against epoch into a 1000×420 PNG."""
    rows = read_log(log_csv)

    def series(col: str) -> list[tuple[float, float]]:
        return [
            (float(r["epoch"] or 0), float(r[col]))  # type: ignore[arg-type]
            for r in rows
            if r.get(col) is not None
        ]

    image = Image.new("RGB", (1000, 420), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if title:
        draw.text((10, 4), title, fill=(0, 0, 0), font=font)
    _panel(draw, (0, 14, 500, 420), "loss", {"train": series("train_loss"), "val": series("val_loss")}, font)
    _panel(draw, (500, 14, 1000, 420), f"validation {metric}", {metric: series(metric)}, font)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_png)
    return out_png
