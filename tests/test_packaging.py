"""Packaging: the wheel's contents, the Linux desktop entry, the icons and the PyInstaller spec.

PyInstaller itself is not run (minutes and gigabytes); the spec is executed with stand-ins for PyInstaller's
Analysis/PYZ/EXE/COLLECT to check what it collects and filters.
"""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
RESOURCES = ROOT / "resources"
ICON_SIZES = (16, 32, 48, 64, 128, 256)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Built from a copy, so that the build leaves no build/ or *.egg-info in the working tree.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "pneumoview", src / "pneumoview", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    dist = tmp_path_factory.mktemp("dist")
    # --skip-dependency-check: setuptools >= 70.1 builds wheels without the 'wheel' package the build-system lists.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(dist),
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (whl,) = dist.glob("pneumoview-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_holds_the_package_data_and_no_weights(wheel: zipfile.ZipFile):
    names = set(wheel.namelist())
    sample = {
        f"pneumoview/data/sample_study/{p.name}" for p in (ROOT / "pneumoview/data/sample_study").iterdir()
    }
    assert any(n.endswith(".dcm") for n in sample) and sample <= names
    resources = {f"pneumoview/gui/resources/{p.name}" for p in (ROOT / "pneumoview/gui/resources").iterdir()}
    assert "pneumoview/gui/resources/app.svg" in resources and resources <= names
    assert "pneumoview/py.typed" in names
    assert "pneumoview/deidentify.py" in names and "pneumoview/commands/deidentify.py" in names
    # Weights stay out of the wheel; so do the tests, the packaging art and caches.
    assert not [
        n for n in names if n.endswith((".pt", ".pth", ".pyc")) or n.startswith(("models/", "tests/"))
    ]
    assert not [n for n in names if n.startswith(("resources/", "packaging/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    ep = configparser.ConfigParser()
    ep.read_string(wheel.read(entry_points).decode())
    assert ep["console_scripts"]["pneumoview"].strip() == "pneumoview.__main__:main"
    assert ep["gui_scripts"]["pneumoview-gui"].strip() == "pneumoview.__main__:main"


def _desktop_entry() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(PACKAGING / "pneumoview.desktop", encoding="utf-8")
    return parser


def test_desktop_entry_is_valid():
    entry = _desktop_entry()["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Name"] == "PneumoView"
    assert entry["Exec"] == "pneumoview-gui %F"
    assert entry["Icon"] == "pneumoview" and (RESOURCES / "pneumoview.svg").is_file()
    assert entry["MimeType"] == "application/dicom;image/png;image/jpeg;"
    assert entry["Categories"] == "Graphics;MedicalSoftware;Science;"
    assert entry["Terminal"] == "false"
    assert "not for diagnosis" in entry["Comment"]
    validator = shutil.which("desktop-file-validate")
    if validator is not None:  # apt install desktop-file-utils
        r = subprocess.run([validator, str(PACKAGING / "pneumoview.desktop")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "error" not in (r.stdout + r.stderr).lower()


def test_icons_are_renders_of_the_svg(tmp_path: Path):
    root = ET.parse(RESOURCES / "pneumoview.svg").getroot()
    assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 256 256"
    for n in ICON_SIZES:
        with Image.open(RESOURCES / f"pneumoview-{n}.png") as im:
            assert im.size == (n, n) and im.mode == "RGBA"
            alpha = np.asarray(im)[..., 3]
            assert alpha[0, 0] == 0 and alpha[n // 2, n // 2] == 255  # transparent corners, opaque body
    with Image.open(RESOURCES / "pneumoview.ico") as ico:
        assert set(ico.info["sizes"]) == {(n, n) for n in ICON_SIZES}
    # Rendering the SVG again gives the committed PNGs (so they are renders of this SVG, not stale files).
    sys.path.insert(0, str(PACKAGING))
    try:
        import render_icons
    finally:
        sys.path.remove(str(PACKAGING))
    render_icons.render(RESOURCES / "pneumoview.svg", tmp_path, (32, 128))
    for n in (32, 128):
        fresh = np.asarray(Image.open(tmp_path / f"pneumoview-{n}.png"), dtype=np.int16)
        committed = np.asarray(Image.open(RESOURCES / f"pneumoview-{n}.png"), dtype=np.int16)
        assert np.abs(fresh - committed).mean() < 2.0


# ---------------------------------------------------------------------------------------------------------------
# The PyInstaller spec, executed with stand-ins


class _Analysis:
    def __init__(self, scripts, **kwargs) -> None:
        self.scripts_in, self.kwargs = scripts, kwargs
        self.pure, self.scripts = [], []
        self.binaries = [
            ("libcudnn.so.9", "/venv/nvidia/cudnn/lib/libcudnn.so.9", "BINARY"),
            ("nvidia/cublas/lib/libcublasLt.so.12", "/venv/nvidia/cublas/lib/libcublasLt.so.12", "BINARY"),
            ("torch/lib/libtorch_cuda.so", "/venv/torch/lib/libtorch_cuda.so", "BINARY"),
            ("torch/lib/libc10_cuda.so", "/venv/torch/lib/libc10_cuda.so", "BINARY"),
            ("torch/lib/cudnn64_9.dll", "C:\\venv\\torch\\lib\\cudnn64_9.dll", "BINARY"),
            ("torch/lib/libtorch_cpu.so", "/venv/torch/lib/libtorch_cpu.so", "BINARY"),
            ("torch/lib/libc10.so", "/venv/torch/lib/libc10.so", "BINARY"),
            ("PySide6/Qt/lib/libQt6Core.so.6", "/venv/PySide6/Qt/lib/libQt6Core.so.6", "BINARY"),
            ("libcurl.so.4", "/usr/lib/libcurl.so.4", "BINARY"),
        ]
        self.datas = [
            ("torch/include/ATen/ATen.h", "/venv/torch/include/ATen/ATen.h", "DATA"),
            (
                "torch/share/cmake/Torch/TorchConfig.cmake",
                "/venv/torch/share/cmake/Torch/TorchConfig.cmake",
                "DATA",
            ),
            ("torch/lib/libprotobuf.a", "/venv/torch/lib/libprotobuf.a", "DATA"),
            ("pneumoview/gui/resources/app.svg", "/src/pneumoview/gui/resources/app.svg", "DATA"),
        ]


class _Recorder:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _run_spec(monkeypatch: pytest.MonkeyPatch, allow_cuda: bool) -> dict:
    source = (PACKAGING / "pneumoview.spec").read_text(encoding="utf-8")
    ast.parse(source)
    if allow_cuda:
        monkeypatch.setenv("PNEUMOVIEW_ALLOW_CUDA_BUILD", "1")
    else:
        monkeypatch.delenv("PNEUMOVIEW_ALLOW_CUDA_BUILD", raising=False)
    namespace = {
        "SPECPATH": str(PACKAGING),
        "Analysis": _Analysis,
        "PYZ": _Recorder,
        "EXE": _Recorder,
        "COLLECT": _Recorder,
        "__name__": "__main__",
    }
    exec(compile(source, str(PACKAGING / "pneumoview.spec"), "exec"), namespace)
    return namespace


def test_pyinstaller_spec_collects_data_and_drops_cuda(monkeypatch: pytest.MonkeyPatch):
    ns = _run_spec(monkeypatch, allow_cuda=True)
    a = ns["a"]
    assert a.scripts_in == [str(PACKAGING / "pneumoview_entry.py")]
    ast.parse((PACKAGING / "pneumoview_entry.py").read_text())
    datas = {Path(src).relative_to(ROOT).as_posix(): dest for src, dest in a.kwargs["datas"]}
    assert datas["pneumoview/data/sample_study"] == "pneumoview/data/sample_study"
    assert datas["pneumoview/gui/resources"] == "pneumoview/gui/resources"
    if (ROOT / "models" / "manifest.toml").is_file():
        assert datas["models/manifest.toml"] == "models"
        assert {k for k in datas if k.endswith(".pt")} == {
            f"models/{p.name}" for p in (ROOT / "models").glob("*.pt")
        }
    hidden = set(a.kwargs["hiddenimports"])
    from pneumoview.cli import COMMAND_MODULES

    assert set(COMMAND_MODULES) <= hidden and "pneumoview.commands.deidentify" in hidden
    for module in hidden:  # every hidden import exists here
        if not module.startswith("pneumoview.gui"):
            __import__(module)
    kept = {b[0] for b in a.binaries}
    assert kept == {
        "torch/lib/libtorch_cpu.so",
        "torch/lib/libc10.so",
        "PySide6/Qt/lib/libQt6Core.so.6",
        "libcurl.so.4",
    }
    assert [d[0] for d in a.datas] == ["pneumoview/gui/resources/app.svg"]
    gui, cli = ns["gui"], ns["cli"]
    assert gui.kwargs["name"] == "pneumoview-gui" and gui.kwargs["console"] is False
    assert cli.kwargs["name"] == "pneumoview" and cli.kwargs["console"] is True
    assert ns["coll"].kwargs["name"] == "PneumoView" and ns["coll"].kwargs["upx"] is False


def test_pyinstaller_spec_refuses_a_cuda_torch(monkeypatch: pytest.MonkeyPatch):
    import torch

    if torch.version.cuda is None:  # a CPU torch: the build goes ahead
        assert _run_spec(monkeypatch, allow_cuda=False)["a"].binaries
        return
    with pytest.raises(SystemExit, match="CPU wheel"):
        _run_spec(monkeypatch, allow_cuda=False)


def test_readme_explains_how_models_reach_wheel_users():
    text = (PACKAGING / "README.md").read_text(encoding="utf-8")
    assert "user_models_dir()" in text and "PNEUMOVIEW_MODELS" in text and "--models-dir" in text
    assert "pyinstaller packaging/pneumoview.spec" in text
    assert "download.pytorch.org/whl/cpu" in text
    from pneumoview.inference.manifest import user_models_dir

    if sys.platform.startswith("linux") and "XDG_DATA_HOME" not in os.environ:
        assert str(user_models_dir()).replace(str(Path.home()), "~") in text
