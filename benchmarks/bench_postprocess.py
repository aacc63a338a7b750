"""Timing of post-processing and rendering on realistic probability maps (one CPU thread).

Run: ``.venv/bin/python benchmarks/bench_postprocess.py [--runs 50]``

Cases: a few soft blobs (like an upsampled segmentation output) with mild noise ("smooth") and with strong
per-pixel noise that breaks the foreground into thousands of specks ("noisy", a stress case), at 1024² and 2048².
Baselines: seed 001's approach (``regionprops`` objects, per-region bbox and intensity mean) and
``regionprops_table`` computing a full property set.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from skimage.measure import label, regionprops, regionprops_table  # noqa: E402

from pneumoview.postprocess import boxes_from_probability, postprocess  # noqa: E402
from pneumoview.render import render_annotated  # noqa: E402
from pneumoview.thresholds import Thresholds, min_area_px  # noqa: E402


def make_map(size: int, noise: float, seed: int = 0) -> np.ndarray:
    """Three Gaussian blobs (two large enough to pass the area filter, one not) plus white noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    s = size / 1024
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    prob = np.zeros((size, size), np.float32)
    for cy, cx, r in ((300, 300, 120), (600, 700, 150), (800, 200, 60)):
        prob += np.exp(-((yy - cy * s) ** 2 + (xx - cx * s) ** 2) / (2 * (r * s) ** 2))
    prob += rng.normal(0, noise, prob.shape).astype(np.float32)
    return np.clip(prob, 0, 1)


def seed001_style(prob: np.ndarray, t: Thresholds) -> list[tuple[float, ...]]:
    """The straightforward way: regionprops objects, bbox filter, mean intensity per kept region."""
    labels = label(prob > t.seg_threshold, connectivity=2)
    min_area = min_area_px(t, prob.shape)
    out = []
    for r in regionprops(labels, intensity_image=prob):
        y, x, y2, x2 = r.bbox
        if (y2 - y) * (x2 - x) <= min_area:
            continue
        out.append((float(r.intensity_mean), x, y, x2 - x, y2 - y))
    return out


FULL_PROPS = (
    "label",
    "area",
    "bbox",
    "centroid",
    "eccentricity",
    "orientation",
    "perimeter",
    "intensity_mean",
)


def full_props(prob: np.ndarray, t: Thresholds) -> dict:
    labels = label(prob > t.seg_threshold, connectivity=2)
    return regionprops_table(labels, intensity_image=prob, properties=FULL_PROPS)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up (imports, caches)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    t = Thresholds()
    print(
        f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy "
        f"{np.__version__}, 1 thread, median of {args.runs} runs (baselines: fewer runs when slow)"
    )
    rows = []
    for size in (1024, 2048):
        s = size / 1024
        det_boxes = np.array([[200, 180, 220, 260], [520, 470, 330, 300], [50, 50, 40, 40]], np.float32) * s
        det_scores = np.array([0.9, 0.7, 0.2], np.float32)
        for name, noise in (("smooth", 0.02), ("noisy", 0.08)):
            prob = make_map(size, noise)
            n_regions = int(label(prob > t.seg_threshold, connectivity=2).max())
            boxes = boxes_from_probability(prob, t)

            def full(prob=prob, det_boxes=det_boxes, det_scores=det_scores):
                return postprocess(
                    prob_map=prob, det_boxes=det_boxes, det_scores=det_scores, p_opacity=0.8, thresholds=t
                )

            ours_boxes = median_ms(lambda prob=prob: boxes_from_probability(prob, t), args.runs)
            ours_full = median_ms(full, args.runs)
            slow_runs = max(3, args.runs // 10)
            base_seed = median_ms(lambda prob=prob: seed001_style(prob, t), slow_runs)
            base_full = median_ms(lambda prob=prob: full_props(prob, t), slow_runs)
            findings = full()
            display = (np.clip(prob, 0, 1) * 200).astype(np.uint8)
            render = median_ms(
                lambda display=display, findings=findings, prob=prob: render_annotated(
                    display, findings, prob_map=prob, footer_lines=["benchmark"]
                ),
                max(5, args.runs // 5),
            )
            rows.append(
                (
                    f"{size}² {name}",
                    n_regions,
                    len(boxes),
                    ours_boxes,
                    ours_full,
                    base_seed,
                    base_full,
                    render,
                )
            )
    header = (
        "map",
        "regions",
        "boxes",
        "boxes_from_prob ms",
        "postprocess ms",
        "seed001-style ms",
        "regionprops_table ms",
        "render ms",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.1f} ({r[5] / r[3]:.0f}×) | "
            f"{r[6]:.1f} ({r[6] / r[3]:.0f}×) | {r[7]:.1f} |"
        )


if __name__ == "__main__":
    main()
