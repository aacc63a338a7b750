"""Helpers for the viewer's tests: real data paths, small study folders, waiting for a result."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RSNA_512 = SHARED / "rsna" / "images-512"
RSNA_1024 = SHARED / "rsna" / "images-1024"
BAD_PIXELS = SHARED / "dicom" / "robustness" / "fo-dicom" / "GH340.dcm"  # header fine, pixel data unreadable
CHEST_DICOM = (
    SHARED / "dicom" / "chest" / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
)


def both_sources_settings():
    """Saved-settings defaults, but with thresholds that report the test models' detector and segmentation boxes
    fused (the shipped defaults report the detector's only)."""
    from pneumoview.settings import load_settings
    from tests.threshold_presets import BOTH_SOURCES

    settings = load_settings()
    settings.set_thresholds(BOTH_SOURCES)
    return settings


def rsna_images(n: int, offset: int = 0) -> list[Path]:
    files = sorted(RSNA_512.glob("*.jpg"))[offset : offset + n]
    assert len(files) == n, f"expected {n} RSNA images in {RSNA_512}"
    return files


def copy_study(dest: Path, files: list[Path], extra: dict[str, bytes] | None = None) -> Path:
    """Copy real images into ``dest`` (plus optional extra files by name)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)
    for name, data in (extra or {}).items():
        (dest / name).write_bytes(data)
    return dest


def open_and_wait(qtbot, window, path: Path, timeout: int = 30_000) -> None:
    """Open ``path`` and wait until the scan has finished and the first image's complete result is on screen."""
    with qtbot.waitSignals([window.scanFinished, window.analysisFinished], timeout=timeout):
        assert window.open_path(path)


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """A real X server (Xvfb, 1600×1000×24) on a display number it picks itself (``-displayfd``, so parallel runs
    never clash): ``(process, ":N")``. The caller terminates the process.

    Raises:
        RuntimeError: Xvfb is not installed or did not start.
    """
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise RuntimeError(
            "Xvfb is missing: install the xvfb package (apt-get install -y xvfb; .ci/run does)"
        )
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number.isdigit():
        proc.kill()
        proc.wait()
        raise RuntimeError("Xvfb did not start")
    return proc, f":{number}"
