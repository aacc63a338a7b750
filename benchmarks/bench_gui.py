"""Viewer responsiveness on this machine (offscreen Qt, CPU).

Run: ``.venv/bin/python benchmarks/bench_gui.py [--runs 5] [--images 6]``

Measures:

* start-up: process start → main window shown (``pneumoview --exit-when-shown`` in a fresh subprocess; torch and the
  models load only after the window is shown), median of ``--runs``;
* analysis of one image, engine already loaded: selection → first stage (classifier) on screen, and → complete
  overlay (heat map, mask, boxes, table), median over ``--images`` real 1024² RSNA radiographs; with the tiny test
  models (pure overhead of loading, preprocessing, workers and drawing) and, when installed, the real models of the
  default models folders;
* PgDown: selection of the next image → image on the canvas, with the image decoded ahead by the prefetcher and
  without (cache cleared), alternating step by step (1024² RSNA PNGs, test models);
* first pixels of a 2048² JPEG 2000 (lossless, derived from a real CR chest radiograph) that was not decoded
  ahead: selection → reduced-resolution preview painted, and → full image painted, against the viewer with the
  preview switched off (full decode first), alternating step by step (``--j2k-only`` runs just this);
* threshold change: ``postprocess`` + overlay/table update, median and max over 50 changes (1024² image);
* event-loop worst delay: a 10 ms timer on the GUI thread while a batch runs in the background (and idle, for
  comparison).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED = ROOT.parent / "shared" / "data"
RSNA_1024 = SHARED / "rsna" / "images-1024"
RSNA_512 = SHARED / "rsna" / "images-512"


def realistic_models_dir(folder: Path) -> Path:
    """The project's intended architectures and input sizes with random weights (timing only: outputs are
    meaningless): ResNet-18 classifier at 256 px, two U-Net/ResNet-34 members at 256 px, Faster R-CNN/ResNet-18-FPN
    at 512 px."""
    from tests.model_fixtures import add_ensemble, add_model

    classes = ["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"]
    add_model(folder, "rsna3-classifier", task="classify", builder="resnet18_classifier",
              builder_args={"num_classes": 3, "in_channels": 1}, size=256, classes=classes,
              positive_class="Lung Opacity")  # fmt: skip
    for i in range(2):
        add_model(folder, f"seg-{i}", task="segment", builder="unet",
                  builder_args={"encoder": "resnet34", "in_channels": 1}, size=256, seed=i)  # fmt: skip
    add_ensemble(folder, "seg-ensemble", ["seg-0", "seg-1"])
    add_model(folder, "detector", task="detect", builder="fasterrcnn_resnet18_fpn",
              builder_args={"min_size": 512, "max_size": 512}, size=512, channels=3, mean=0.0, std=1.0)  # fmt: skip
    return folder


def startup_times(runs: int, config_dir: Path) -> list[float]:
    code = "import sys; from pneumoview.gui.app import main; sys.exit(main(['--exit-when-shown']))"
    env = dict(os.environ, PNEUMOVIEW_CONFIG_DIR=str(config_dir))
    out = []
    for _ in range(runs):
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        line = next(x for x in proc.stdout.splitlines() if x.startswith("PNEUMOVIEW_SHOWN"))
        out.append(float(line.split()[1]) - t0)
    return out


def _pump(app, until, timeout_s: float = 300.0) -> None:
    end = time.perf_counter() + timeout_s
    while not until():
        app.processEvents()
        if time.perf_counter() > end:
            raise TimeoutError("the viewer did not finish in time")
        time.sleep(0.001)


def make_window(app, models_dir: str | None):
    import pyqtgraph as pg

    from pneumoview.gui.main_window import MainWindow
    from pneumoview.imaging.decoders import decode_jpeg2000_in_worker
    from pneumoview.settings import Settings

    pg.setConfigOptions(imageAxisOrder="row-major")
    decode_jpeg2000_in_worker(True)  # as pneumoview.gui.app.main sets it for the viewer
    w = MainWindow(Settings(device="cpu"), device="cpu", models_dir=models_dir)
    w.show()
    w.start_engine()
    _pump(app, lambda: w.engine_info is not None)
    return w


def analysis_times(app, window, folder: Path, n: int) -> tuple[list[float], list[float]]:
    """Per image: (selection → first stage shown, selection → complete overlay shown), in seconds."""
    marks: dict[str, float] = {}
    show = window._show_result

    def timed_show(running: bool) -> None:
        show(running)
        marks.setdefault("first", time.perf_counter())

    window._show_result = timed_show
    window.analysisFinished.connect(lambda _p: marks.setdefault("full", time.perf_counter()))
    done = {"n": 0}
    window.scanFinished.connect(lambda _n: done.__setitem__("n", 1))
    window.open_path(folder)
    _pump(app, lambda: done["n"] and "full" in marks)  # the first image (warm-up: first calls of each model)
    paths = window.browser.image_paths()[1 : n + 1]
    first, full = [], []
    for p in paths:
        marks.clear()
        t0 = time.perf_counter()
        window.browser.select_path(p)
        _pump(app, lambda: "full" in marks)
        first.append(marks["first"] - t0)
        full.append(marks["full"] - t0)
    window._show_result = show
    return first, full


def pgdown_times(app, window, folder: Path, steps: int) -> tuple[list[float], list[float]]:
    """PgDown → next image on the canvas, (decoded ahead, not decoded ahead), alternating step by step so that a
    loaded machine slows both alike; each step waits for the analysis of the image before the next one."""
    marks: dict[str, float] = {}
    window.imageShown.connect(lambda _p: marks.setdefault("shown", time.perf_counter()))
    window.analysisFinished.connect(lambda _p: marks.setdefault("full", time.perf_counter()))
    done = {"n": 0}
    window.scanFinished.connect(lambda _n: done.__setitem__("n", 1))
    window.open_path(folder)
    _pump(app, lambda: done["n"] and "full" in marks)
    ahead: list[float] = []
    cold: list[float] = []
    for i in range(steps):
        paths = window.browser.visible_image_paths()
        current = window.session.path
        if current not in paths or paths.index(current) + 1 >= len(paths):
            break
        following = paths[paths.index(current) + 1]
        window.prefetcher.wait(60)
        if i % 2 == 0:
            _pump(app, lambda f=following: f in window.prefetcher)
        else:
            window.prefetcher.clear()
        marks.clear()
        t0 = time.perf_counter()
        window.browser.select_next(1)
        _pump(app, lambda: "shown" in marks)
        (ahead if i % 2 == 0 else cold).append(marks["shown"] - t0)
        _pump(app, lambda: "full" in marks)
    return ahead, cold


def j2k_times(app, window, folder: Path, steps: int) -> tuple[list[float], list[float], list[float]]:
    """Selection of a 2k JPEG 2000 not decoded ahead → pixels painted: (reduced preview, full image after the
    preview, full image with the preview switched off), alternating preview on/off step by step; each step waits
    for the analysis and the neighbour prefetch to end, then empties the prefetch and result caches."""
    marks: dict[str, float] = {}

    def painted(key: str) -> None:
        window.canvas.viewport().repaint()  # as the preview is painted before its signal
        marks.setdefault(key, time.perf_counter())

    window.progressive.previewShown.connect(lambda _p: marks.setdefault("preview", time.perf_counter()))
    window.imageShown.connect(lambda _p: painted("shown"))
    window.analysisFinished.connect(lambda _p: marks.setdefault("full", time.perf_counter()))
    done = {"n": 0}
    window.scanFinished.connect(lambda _n: done.__setitem__("n", 1))
    window.open_path(folder)
    _pump(app, lambda: done["n"] and "full" in marks)
    preview: list[float] = []
    after_preview: list[float] = []
    full_only: list[float] = []
    paths = window.browser.visible_image_paths()
    for i in range(steps):
        window.prefetcher.wait(60)
        window.prefetcher.clear()
        window.session.forget_results()  # else the analysed image comes back from the result cache
        window.progressive.enabled = i % 2 == 0
        target = paths[(paths.index(window.session.path) + 1) % len(paths)]
        marks.clear()
        t0 = time.perf_counter()
        window.browser.select_path(target)
        _pump(app, lambda: "shown" in marks and "full" in marks)
        if window.progressive.enabled:
            preview.append(marks["preview"] - t0)
            after_preview.append(marks["shown"] - t0)
        else:
            full_only.append(marks["shown"] - t0)
    window.progressive.enabled = True
    return preview, after_preview, full_only


def j2k_decode_delays(app, window, steps: int) -> tuple[list[float], list[float]]:
    """Worst lateness of a 10 ms GUI timer from selecting a 2k JPEG 2000 (not decoded ahead, reduced preview on)
    until its full image is shown: the full decode in this process vs in the decoder worker process, alternating
    step by step (the viewer's own setting is the worker)."""
    from pneumoview.imaging.decoders import decode_jpeg2000_in_worker

    marks: dict[str, float] = {}
    window.imageShown.connect(lambda _p: marks.setdefault("shown", time.perf_counter()))
    window.analysisFinished.connect(lambda _p: marks.setdefault("full", time.perf_counter()))
    in_process: list[float] = []
    in_worker: list[float] = []
    paths = window.browser.visible_image_paths()
    for i in range(steps):
        worker = i % 2 == 1
        decode_jpeg2000_in_worker(worker)
        window.prefetcher.wait(60)
        window.prefetcher.clear()
        window.session.forget_results()
        time.sleep(1.5)  # the worker process has started (the viewer starts it at launch)
        target = paths[(paths.index(window.session.path) + 1) % len(paths)]
        marks.clear()
        window.browser.select_path(target)
        delays = loop_delays(app, None, busy=lambda: "shown" not in marks)
        (in_worker if worker else in_process).append(max(delays, default=0.0))
        _pump(app, lambda: "full" in marks)
    decode_jpeg2000_in_worker(True)
    return in_process, in_worker


def j2k_rows(app, tmp: Path, models_dir: str, steps: int) -> list[tuple[str, str]]:
    from tests.j2k_fixtures import make_2k_j2k

    make_2k_j2k(tmp / "j2k", copies=2)
    window = make_window(app, models_dir)
    preview, after, full_only = j2k_times(app, window, tmp / "j2k", steps)
    in_process, in_worker = j2k_decode_delays(app, window, steps)
    window.close()
    return [
        ("first pixels, 2k J2K, reduced first (1/4 decode)", fmt_ms(preview)),
        ("first pixels, 2k J2K, full decode", fmt_ms(full_only)),
        ("full resolution shown, 2k J2K, reduced first", fmt_ms(after)),
        ("event-loop worst delay during a 2k J2K full decode, in the GUI process", fmt_ms(in_process)),
        (
            "event-loop worst delay during a 2k J2K full decode, in the decoder worker (viewer)",
            fmt_ms(in_worker),
        ),
    ]


def threshold_latency(app, window, changes: int = 50) -> list[float]:
    out = []
    t = window.session.thresholds
    for i in range(changes):
        t = t.replace(det_score=0.3 + 0.01 * (i % 40), seg_threshold=0.35 + 0.005 * (i % 50))
        t0 = time.perf_counter()
        window.set_thresholds(t)
        app.processEvents()
        out.append(time.perf_counter() - t0)
    return out


def loop_delays(app, seconds: float | None, busy=None) -> list[float]:
    """Lateness (s) of a 10 ms timer, while ``busy()`` is true (or for ``seconds``)."""
    from PySide6 import QtCore

    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    end = time.perf_counter() + (seconds or 1e9)
    while (busy() if busy else True) and time.perf_counter() < end:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.WaitForMoreEvents, 5)
    timer.stop()
    return [max(0.0, b - a - 0.010) for a, b in zip(ticks, ticks[1:], strict=False)]


def batch_delays(app, window, src: Path, out: Path) -> tuple[list[float], int, float]:
    from pneumoview.gui.batch_dialog import BatchDialog

    d = BatchDialog(lambda: window.engine_info, window.session.thresholds, input_dir=str(src))
    d.output_edit.setText(str(out))
    t0 = time.perf_counter()
    assert d.start()
    delays = loop_delays(app, None, busy=lambda: d.running)
    return delays, d.summary.done if d.summary else 0, time.perf_counter() - t0


def shipped_models_set() -> list[tuple[str, str | None]]:
    """The shipped models as a model set, when the classifier and segmentation are installed."""
    from pneumoview.inference.engine import Engine

    try:
        available = Engine(device="cpu").available_stages()
    except Exception as exc:  # noqa: BLE001 - a report line, not a failure
        print(f"(real models not usable: {exc})")
        return []
    if available["classify"] is not None or available["segment"] is not None:
        return []
    missing = [s for s, why in available.items() if why is not None]
    return [("shipped models (models/)" + (f", without {', '.join(missing)}" if missing else ""), None)]


def fmt_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms (max {max(values) * 1000:7.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="start-up runs")
    parser.add_argument("--images", type=int, default=6, help="images timed per model set")
    parser.add_argument("--batch", type=int, default=24, help="images in the batch for the event-loop test")
    parser.add_argument(
        "--skip-realistic", action="store_true", help="skip the random-weight real architectures"
    )
    parser.add_argument("--j2k-steps", type=int, default=8, help="2k JPEG 2000 selections timed")
    parser.add_argument("--j2k-only", action="store_true", help="time only the 2k JPEG 2000 first pixels")
    args = parser.parse_args()

    from PySide6 import QtWidgets

    import tests.model_fixtures as mf

    # The viewer is timed with the small test models of tests/model_fixtures, which are torch modules made for the
    # tests (as in tests/conftest.py): eager PyTorch runs them; the runtimes are compared in bench_engine.py.
    os.environ.setdefault("PNEUMOVIEW_RUNTIME", "torch")
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["PNEUMOVIEW_CONFIG_DIR"] = str(tmp / "config")
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        models = mf.equivariant_models_dir(tmp / "models")
        if args.j2k_only:
            rows += j2k_rows(app, tmp, str(models), args.j2k_steps)
            sets = []
        else:
            rows.append(
                ("start-up: process start → window shown", fmt_ms(startup_times(args.runs, tmp / "cfg")))
            )
            sets = [("test models", str(models))]
        study = tmp / "study"
        study.mkdir()
        for p in sorted(RSNA_1024.glob("*.png"))[: args.images + 1]:
            (study / p.name).write_bytes(p.read_bytes())
        if not args.skip_realistic and not args.j2k_only:
            sets.append(("real architectures, random weights", str(realistic_models_dir(tmp / "realistic"))))
        if not args.j2k_only:
            sets += shipped_models_set()
        window = None
        for title, models_dir in sets:
            window = make_window(app, models_dir)
            if title == "test models":
                ahead, cold = pgdown_times(app, window, study, args.images)
                rows.append(("PgDown → next image shown, decoded ahead (prefetch)", fmt_ms(ahead)))
                rows.append(("PgDown → next image shown, not decoded ahead", fmt_ms(cold)))
                window.close()
                rows += j2k_rows(app, tmp, models_dir, args.j2k_steps)
                window = make_window(app, models_dir)
            first, full = analysis_times(app, window, study, args.images)
            rows.append((f"{title}: select → first stage on screen", fmt_ms(first)))
            rows.append((f"{title}: select → complete overlay", fmt_ms(full)))
            rows.append(
                (f"{title}: threshold change (postprocess + redraw)", fmt_ms(threshold_latency(app, window)))
            )
            if models_dir is not None:
                batch_in = tmp / f"batch-{len(rows)}"
                batch_in.mkdir()
                n = args.batch if title == "test models" else max(4, args.batch // 3)
                for p in sorted(RSNA_512.glob("*.jpg"))[:n]:
                    (batch_in / p.name).write_bytes(p.read_bytes())
                if title == "test models":
                    rows.append(("event loop, idle: timer lateness", fmt_ms(loop_delays(app, 1.0))))
                delays, done, secs = batch_delays(app, window, batch_in, tmp / f"out-{len(rows)}")
                rows.append(
                    (f"{title}: event loop during a batch ({done} images, {secs:.1f} s)", fmt_ms(delays))
                )
            window.close()

    print(f"\nPneumoView viewer benchmark — {platform.platform()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, offscreen Qt\n")  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  median (max)")
    print("-" * (width + 32))
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
