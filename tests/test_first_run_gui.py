"""The viewer as a first-time user starts it (issue 13): the real ``xcb`` platform under Xvfb, a clear sentence
instead of Qt's abort when a system library is missing, documents in the browser, a batch into a folder that
cannot be written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.gui_helpers import start_xvfb

pytest_plugins = ("tests.gui_fixtures",)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"


def _viewer(
    args: list[str], env: dict[str, str], timeout: float = 240, test_models: bool = True
) -> subprocess.CompletedProcess[str]:
    """``pneumoview ARGS`` in a fresh interpreter, as a user starts it (with the test models' builders registered
    when ``test_models``; that imports torch first)."""
    code = f"import sys, tests.model_fixtures; from pneumoview.__main__ import main; sys.exit(main({args!r}))"
    command = [sys.executable, "-c", code] if test_models else [sys.executable, "-m", "pneumoview", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


@pytest.fixture
def xvfb_display():
    """A real X server (Xvfb) on a display number it picks itself, so parallel runs never clash."""
    proc, display = start_xvfb()
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def user_env(tmp_path: Path, test_models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "PNEUMOVIEW_CONFIG_DIR": str(tmp_path / "config"),
        "PNEUMOVIEW_MODELS": str(test_models),
        "PNEUMOVIEW_DEVICE": "cpu",
    }


def test_viewer_starts_on_the_real_xcb_platform_under_xvfb(xvfb_display, user_env, tmp_path: Path):
    shot = tmp_path / "window.png"
    env = user_env | {"DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb", "QT_DEBUG_PLUGINS": "0"}
    r = _viewer([str(SAMPLE), "--screenshot", str(shot)], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"saved {shot}" in r.stdout
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    h, w, _ = pixels.shape
    assert w >= 800 and h >= 500, (w, h)
    # Not a blank or single-colour grab: a radiograph, panels and text make many distinct colours.
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 500


def test_missing_xcb_library_gives_one_sentence_and_status_2(user_env, tmp_path: Path):
    # A library the dynamic loader finds first but cannot load is, to Qt, a missing one: Qt itself would abort
    # with status 134 here. The viewer must say which package to install instead.
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libxcb-icccm.so.4").write_bytes(b"")
    env = user_env | {"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb", "LD_LIBRARY_PATH": str(libs)}
    r = _viewer([str(SAMPLE)], env, timeout=60, test_models=False)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "libxcb-icccm.so.4" in lines[0] and "apt-get install libxcb-icccm4" in lines[0]
    assert "dnf install xcb-util-wm" in lines[0] and "pneumoview --help" in lines[0]


def test_platform_check_only_applies_to_xcb_on_linux():
    from pneumoview.gui.platform_check import XCB_LIBRARIES, missing_libraries, qt_platform, startup_problem

    assert qt_platform({"QT_QPA_PLATFORM": "offscreen"}) == "offscreen"
    assert qt_platform({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}) == "wayland"
    assert qt_platform({}) == "xcb"
    assert startup_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert startup_problem({"DISPLAY": ":0"}, platform="darwin") is None
    assert missing_libraries(["libpneumoview-no-such-library.so.9"]) == ["libpneumoview-no-such-library.so.9"]
    if sys.platform.startswith(
        "linux"
    ):  # this machine runs the viewer under xcb (the test above), so all load
        assert missing_libraries(list(XCB_LIBRARIES)) == []
        assert "no X display" in startup_problem({"QT_QPA_PLATFORM": "xcb"})


def test_browser_lists_documents_as_other_files_not_errors(qtbot):
    from pneumoview.gui.study_browser import KIND_ROLE, StudyBrowser
    from pneumoview.study_index import scan

    browser = StudyBrowser()
    qtbot.addWidget(browser)
    browser.add_items(scan(SAMPLE))
    assert browser.n_errors == 0 and browser.errors() == [] and browser._errors_node is None
    other = browser._other_node
    assert other is not None and other.text() == "Other files"
    rows = {other.child(r, 0).text(): other.child(r, 1) for r in range(other.rowCount())}
    assert set(rows) == {"ATTRIBUTION.md", "labels.csv"}
    for status in rows.values():
        assert status.text() == "document" and "not an image" in status.toolTip()
        assert status.data(KIND_ROLE) != "error" and status.foreground().color().name() == "#9aa0a6"  # grey
    assert "unreadable" not in browser.summary.text()


def test_batch_dialog_refuses_an_output_folder_it_cannot_write_with_a_sentence(qtbot, make_window, tmp_path):
    from pneumoview.gui.batch_dialog import BatchDialog

    w = make_window()
    d = BatchDialog(lambda: w.engine_info, w.session.thresholds, input_dir=str(SAMPLE))
    qtbot.addWidget(d)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".pneumoview-journal").write_text("a file where the journal folder goes")
    d.output_edit.setText(str(out))
    assert d.start(confirm=lambda paths: True) is False
    assert "is a file, not a folder" in d.status.text() and "Errno" not in d.status.text()
    assert not d.running
    # An error met during a run (e.g. the disk became read-only) is a sentence too, not "[Errno 30] …".
    d._on_error(OSError(30, "Read-only file system", str(out / ".pneumoview-journal")))
    assert d.status.text() == (
        f"The batch stopped: Cannot write to {out / '.pneumoview-journal'}: read-only file system. "
        "Choose an output folder you can write to."
    )


def test_readme_and_ci_name_every_system_package_the_check_knows():
    from pneumoview.gui.platform_check import XCB_LIBRARIES

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    ci = re.split(r'[\s"=]+', (ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    debian_line = readme[readme.index("Debian/Ubuntu: `sudo apt-get install") :].split("`")[1].split()
    fedora_line = readme[readme.index("Fedora: `sudo dnf install") :].split("`")[1].split()
    for debian, fedora in XCB_LIBRARIES.values():
        assert debian in debian_line and debian in ci, debian
        assert fedora in fedora_line, fedora
    assert "xvfb" in ci and "apt-get" in ci and "update" in ci
