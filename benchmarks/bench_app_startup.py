"""Start-up of the frozen desktop app (tools/build_app.sh) beside the source install, under Xvfb with Qt's xcb.

Run: ``.venv/bin/python benchmarks/bench_app_startup.py dist/PneumoView [--runs 5]``

Measures, interleaved (app, source, app, source …), median of ``--runs``:

* ``pneumoview --version``: process start → exit;
* viewer: process start → main window shown (``--exit-when-shown``; the models load after the window is shown);
* viewer: process start → the sample study's first image analysed (all three stages) and the window saved as PNG
  (``--screenshot``, which waits 0.4 s for the last repaint before saving; included).

Each run gets a fresh settings and data folder; the cache folder is kept per install, and a first, uncounted round
lets the source install make its ONNX exports (the app ships them). Needs Xvfb (``apt-get install xvfb``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"

from tests.gui_helpers import start_xvfb  # noqa: E402


def _env(tmp: Path, display: str, cache: Path) -> dict[str, str]:
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    env |= {"PNEUMOVIEW_CONFIG_DIR": str(tmp / "config"), "XDG_DATA_HOME": str(tmp / "data")}
    env |= {"XDG_CACHE_HOME": str(cache)}  # kept across runs: the source install's ONNX exports are made once
    for name in ("PNEUMOVIEW_MODELS", "PNEUMOVIEW_RUNTIME", "PNEUMOVIEW_DEVICE", "PNEUMOVIEW_CACHE_DIR"):
        env.pop(name, None)
    return env


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", type=Path, help="the app folder (dist/PneumoView)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-source", action="store_true", help="measure the app only")
    args = parser.parse_args(argv)
    app = args.app.resolve()
    source = [sys.executable, "-m", "pneumoview"]
    kinds: dict[str, Callable[[list[str]], list[str]]] = {
        "--version": lambda exe: [*exe, "--version"],
        "window shown": lambda exe: [*exe, "--exit-when-shown"],
        "first image analysed + saved": lambda exe: [
            *exe,
            str(SAMPLE),
            "--screenshot",
            "shot.png",
            "--device",
            "cpu",
        ],
    }
    installs = {"app": [str(app / "pneumoview")]} | ({} if args.no_source else {"source": source})
    xvfb, display = start_xvfb()
    times: dict[tuple[str, str], list[float]] = {}
    caches = tempfile.TemporaryDirectory()
    try:
        for run in range(
            -1, args.runs
        ):  # run -1 warms the caches (the source install's ONNX export); not counted
            for kind, command in kinds.items():
                for name, exe in installs.items():
                    with tempfile.TemporaryDirectory() as tmp:
                        env = _env(Path(tmp), display, Path(caches.name) / name)
                        if name == "source":
                            env["PYTHONPATH"] = str(ROOT)
                        seconds = _timed(command(exe), env, Path(tmp))
                        if run >= 0:
                            times.setdefault((kind, name), []).append(seconds)
    finally:
        xvfb.terminate()
        xvfb.wait()
        caches.cleanup()
    print(f"median of {args.runs} runs, seconds (interleaved; the machine may be loaded by other jobs)")
    print(f"{'what':32s} " + " ".join(f"{n:>8s}" for n in installs))
    for kind in kinds:
        row = " ".join(f"{statistics.median(times[(kind, n)]):8.2f}" for n in installs)
        print(f"{kind:32s} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
