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
        # What a hook could still pull in from a CUDA torch environment, and what the app needs.
        self.binaries = [
            ("libcudnn.so.9", "/venv/nvidia/cudnn/lib/libcudnn.so.9", "BINARY"),
            ("nvidia/cublas/lib/libcublasLt.so.12", "/venv/nvidia/cublas/lib/libcublasLt.so.12", "BINARY"),
            ("torch/lib/libtorch_cuda.so", "/venv/torch/lib/libtorch_cuda.so", "BINARY"),
            ("torch/lib/libtorch_cpu.so", "/venv/torch/lib/libtorch_cpu.so", "BINARY"),
            ("torch/lib/cudnn64_9.dll", "C:\\venv\\torch\\lib\\cudnn64_9.dll", "BINARY"),
            (
                "triton/backends/nvidia/lib/libcuda_utils.so",
                "/venv/triton/backends/nvidia/lib/x.so",
                "BINARY",
            ),
            ("torchvision/_C.so", "/venv/torchvision/_C.so", "BINARY"),
            ("PySide6/Qt/lib/libQt6Core.so.6", "/venv/PySide6/Qt/lib/libQt6Core.so.6", "BINARY"),
            (
                "onnxruntime/capi/libonnxruntime.so.1",
                "/venv/onnxruntime/capi/libonnxruntime.so.1",
                "BINARY",
            ),
            ("libcurl.so.4", "/usr/lib/libcurl.so.4", "BINARY"),
            (
                "PySide6/Qt/plugins/platformthemes/libqgtk3.so",
                "/venv/PySide6/Qt/plugins/platformthemes/libqgtk3.so",
                "BINARY",
            ),
        ]
        self.datas = [
            ("PySide6/Qt/translations/qtbase_de.qm", "/venv/PySide6/Qt/translations/qtbase_de.qm", "DATA"),
            ("torch/include/ATen/ATen.h", "/venv/torch/include/ATen/ATen.h", "DATA"),
            ("torch-2.14.1.dist-info/METADATA", "/venv/torch-2.14.1.dist-info/METADATA", "DATA"),
            ("pneumoview/gui/resources/app.svg", "/src/pneumoview/gui/resources/app.svg", "DATA"),
        ]


class _Recorder:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _run_spec(monkeypatch: pytest.MonkeyPatch, models: Path | None) -> dict:
    source = (PACKAGING / "pneumoview.spec").read_text(encoding="utf-8")
    ast.parse(source)
    if models is None:
        monkeypatch.delenv("PNEUMOVIEW_BUNDLE_MODELS", raising=False)
    else:
        monkeypatch.setenv("PNEUMOVIEW_BUNDLE_MODELS", str(models))
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


def test_pyinstaller_spec_collects_data_and_drops_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    models = tmp_path / "app-models"
    (models / "onnx").mkdir(parents=True)
    shutil.copy(ROOT / "models" / "manifest.toml", models / "manifest.toml")
    for name in ("detector-f20e040dabcd.onnx", "detector-f20e040dabcd.json", "detector-f20e040d.pt"):
        (models / "onnx" / name).write_bytes(b"x")
    (models / "detector-f20e040d.pt").write_bytes(b"x")
    ns = _run_spec(monkeypatch, models)
    a = ns["a"]
    assert a.scripts_in == [str(PACKAGING / "pneumoview_entry.py")]
    ast.parse((PACKAGING / "pneumoview_entry.py").read_text())
    from pneumoview.imaging.isolated import WORKER_FLAG

    assert WORKER_FLAG.startswith("--pneumoview-")  # the entry point's cheap test before importing the worker
    datas = {Path(src).as_posix(): dest for src, dest in a.kwargs["datas"]}
    assert datas[(ROOT / "pneumoview/data/sample_study").as_posix()] == "pneumoview/data/sample_study"
    assert datas[(ROOT / "pneumoview/gui/resources").as_posix()] == "pneumoview/gui/resources"
    # The models folder: the manifest and the ONNX artefacts, never a .pt file (only torch reads those).
    shipped = {
        Path(src).relative_to(models).as_posix(): dest
        for src, dest in datas.items()
        if src.startswith(models.as_posix())
    }
    assert shipped == {
        "manifest.toml": "models",
        "onnx/detector-f20e040dabcd.onnx": "models/onnx",
        "onnx/detector-f20e040dabcd.json": "models/onnx",
    }
    hidden = set(a.kwargs["hiddenimports"])
    from pneumoview.cli import COMMAND_MODULES

    assert set(COMMAND_MODULES) <= hidden and "pneumoview.commands.deidentify" in hidden
    assert {
        "onnxruntime",
        "highdicom",
        "pynetdicom",
        "pyqtgraph",
        "pylibjpeg",
        "openjpeg",
        "jpeg_ls",
        "gdcm",
    } <= hidden
    for module in hidden:  # every hidden import exists here
        if not module.startswith("pneumoview.gui"):
            __import__(module)
    assert {"torch", "torchvision", "triton", "nvidia", "onnx", "sympy", "openvino"} <= set(
        a.kwargs["excludes"]
    )
    kept = {b[0] for b in a.binaries}
    assert kept == {"PySide6/Qt/lib/libQt6Core.so.6", "onnxruntime/capi/libonnxruntime.so.1", "libcurl.so.4"}
    assert [d[0] for d in a.datas] == ["pneumoview/gui/resources/app.svg"]
    gui, cli = ns["gui"], ns["cli"]
    assert gui.kwargs["name"] == "pneumoview-gui" and gui.kwargs["console"] is False
    assert cli.kwargs["name"] == "pneumoview" and cli.kwargs["console"] is True
    assert ns["coll"].kwargs["name"] == "PneumoView" and ns["coll"].kwargs["upx"] is False


def test_pyinstaller_spec_without_exports_says_the_app_cannot_analyse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "manifest.toml", models / "manifest.toml")
    (models / "detector-f20e040d.pt").write_bytes(b"x")
    datas = _run_spec(monkeypatch, models)["a"].kwargs["datas"]
    assert [dest for src, dest in datas if src.startswith(str(models))] == ["models"]  # the manifest only
    assert "has no ONNX artefacts" in capsys.readouterr().out


def test_readme_explains_how_models_reach_wheel_users():
    text = (PACKAGING / "README.md").read_text(encoding="utf-8")
    assert "user_models_dir()" in text and "PNEUMOVIEW_MODELS" in text and "--models-dir" in text
    assert "pyinstaller packaging/pneumoview.spec" in text
    assert "download.pytorch.org/whl/cpu" in text
    from pneumoview.inference.manifest import user_models_dir

    if sys.platform.startswith("linux") and "XDG_DATA_HOME" not in os.environ:
        assert str(user_models_dir()).replace(str(Path.home()), "~") in text
