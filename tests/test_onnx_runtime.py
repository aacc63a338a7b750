"""The ONNX Runtime and OpenVINO backends on the shipped models and real radiographs: same outputs as eager PyTorch
within the issue's tolerances, verified artefacts, a stale cache rebuilt, and a run with torch and torchvision
unimportable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pneumoview.errors import ModelError
from pneumoview.imaging import load_image
from pneumoview.inference.engine import Engine
from pneumoview.inference.manifest import load_manifest, repository_models_dir
from pneumoview.inference.onnx_artifacts import EXPORTER_VERSION, cache_path, find_artefact, shipped_path
from pneumoview.inference.runtime import RUNTIMES, RuntimeMissingError, choose_runtime

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"
DATA = ROOT.parent / "shared" / "data"
PROB_TOL, MAP_TOL, IOU_MIN, SCORE_TOL = 0.01, 0.02, 0.98, 0.01

# A sys.meta_path finder that makes torch and torchvision unimportable, as in a viewer-only install.
BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked by the test")
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def _python(code: str, blocked: tuple[str, ...], env: dict[str, str], timeout: int = 300):
    script = f"BLOCKED = {blocked!r}\n" + BLOCK_TORCH + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the manifest and the ONNX exports only (no weights), made by the real CLI."""
    out = tmp_path_factory.mktemp("onnx-models")
    proc = subprocess.run(
        [sys.executable, "-m", "pneumoview", "models", "export-onnx", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shutil.copy(repository_models_dir() / "manifest.toml", out / "manifest.toml")
    return out


@pytest.fixture(scope="module")
def images():
    dicoms = sorted(SAMPLE.glob("*.dcm"))
    pngs = sorted((DATA / "rsna" / "images-1024").glob("*.png"))[:3]
    assert len(dicoms) == 6 and len(pngs) == 3, "the sample study or ../shared/data is incomplete"
    return [load_image(p) for p in [*dicoms, *pngs]]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``xywh`` boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def assert_same_result(ref, got) -> None:
    """ORT result ``got`` equals eager ``ref`` within the issue's tolerances (boxes matched in score order)."""
    assert ref.stages_done == got.stages_done == ("classify", "segment", "detect")
    assert np.abs(ref.class_probs - got.class_probs).max() <= PROB_TOL
    assert abs(ref.p_opacity - got.p_opacity) <= PROB_TOL
    assert np.abs(ref.prob_map - got.prob_map).max() <= MAP_TOL
    for mid, m in ref.member_maps.items():
        assert np.abs(m - got.member_maps[mid]).max() <= MAP_TOL, mid
    assert len(ref.det_boxes) == len(got.det_boxes), (ref.det_scores, got.det_scores)
    for box, score, obox, oscore in zip(
        ref.det_boxes, ref.det_scores, got.det_boxes, got.det_scores, strict=True
    ):
        assert _iou(box, obox) >= IOU_MIN, (box, obox)
        assert abs(score - oscore) <= SCORE_TOL


def test_onnx_matches_eager_on_real_images(onnx_models: Path, images) -> None:
    eager = Engine(device="cpu", runtime="torch")
    ort = Engine(runtime="onnx", models_dir=onnx_models)
    assert (ort.runtime, ort.device, eager.runtime) == ("onnx", "cpu", "torch")
    assert ort.available_stages() == dict.fromkeys(("classify", "segment", "detect"))
    ref = eager.analyze_batch(images, batch_size=4)
    one = [ort.analyze(im) for im in images]
    batched = ort.analyze_batch(images, batch_size=4)
    assert sum(len(r.det_boxes) for r in ref) >= 3, "the images should give the detector something to match"
    for r, a, b in zip(ref, one, batched, strict=True):
        assert_same_result(r, a)
        assert_same_result(r, b)
        assert r.models == a.models  # same ids, versions and weights hashes in the provenance


def test_onnx_flip_tta_matches_eager(onnx_models: Path, images) -> None:
    picked = [images[0], images[-1]]
    ref = Engine(device="cpu", runtime="torch", tta=True).analyze_batch(picked)
    for runtime in ("onnx", "openvino"):
        got = Engine(runtime=runtime, models_dir=onnx_models, tta=True).analyze_batch(picked)
        for r, g in zip(ref, got, strict=True):
            assert_same_result(r, g)


def test_openvino_runs_the_same_exports_with_eager_results(onnx_models: Path, images) -> None:
    eager = Engine(device="cpu", runtime="torch")
    ov = Engine(runtime="openvino", models_dir=onnx_models)
    assert (ov.runtime, ov.device, type(ov.backend).__name__) == ("openvino", "cpu", "OpenVinoBackend")
    assert ov.available_stages() == dict.fromkeys(("classify", "segment", "detect"))
    ref = eager.analyze_batch(images, batch_size=4)
    one = [ov.analyze(im) for im in images]
    batched = ov.analyze_batch(images, batch_size=4)
    for r, a, b in zip(ref, one, batched, strict=True):
        assert_same_result(r, a)
        assert_same_result(r, b)
        assert r.models == a.models


def test_export_into_cache_verified_and_stale_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PNEUMOVIEW_CACHE_DIR", str(tmp_path / "cache"))
    spec = load_manifest().model("rsna3-classifier")
    dirs = [repository_models_dir()]
    assert find_artefact(spec, dirs) == (None, [])
    # A stale export (another exporter version) is left from an earlier release.
    stale = (
        tmp_path / "cache" / "onnx" / f"{spec.id}-{spec.sha256[:12]}-ort1.0.0-x{EXPORTER_VERSION - 1}.onnx"
    )
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    stale.with_suffix(".json").write_text("{}")
    engine = Engine(runtime="onnx", selection=_only_classifier())
    result = engine.analyze(load_image(sorted(SAMPLE.glob("*.dcm"))[0]))
    assert result.stages_done == ("classify",)
    made = cache_path(spec)
    assert made.is_file() and not stale.exists() and not stale.with_suffix(".json").exists()
    meta = json.loads(made.with_suffix(".json").read_text())
    assert meta["model_id"] == spec.id and meta["source_sha256"] == spec.sha256
    assert meta["exporter_version"] == EXPORTER_VERSION and meta["opset"] >= 11
    # A damaged cached file is refused (its sha256 no longer matches the sidecar) and exported again.
    made.write_bytes(made.read_bytes()[:-10])
    artefact, problems = find_artefact(spec, dirs)
    assert artefact is None and "sha256" in problems[0] and str(made) in problems[0]
    from pneumoview.inference.onnx_runtime import SESSIONS

    SESSIONS.clear()
    again = Engine(runtime="onnx", selection=_only_classifier()).analyze(
        load_image(sorted(SAMPLE.glob("*.dcm"))[0])
    )
    np.testing.assert_allclose(again.class_probs, result.class_probs, atol=1e-6)
    assert find_artefact(spec, dirs)[0] is not None


def _only_classifier():
    from pneumoview.inference.engine import StageSelection

    return StageSelection(classify="rsna3-classifier", segment=None, detect=None)


def test_shipped_artefact_checked_against_weights(onnx_models: Path, tmp_path: Path) -> None:
    spec = load_manifest([onnx_models]).model("detector")
    path = shipped_path(spec, onnx_models)
    artefact, _ = find_artefact(spec, [onnx_models], cache_dir=tmp_path)
    assert artefact is not None and artefact.path == path
    # The same file claimed for other weights (a retrained model) is refused, naming both hashes.
    other = tmp_path / "models"
    (other / "onnx").mkdir(parents=True)
    shutil.copy(path, other / "onnx" / path.name)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["source_sha256"] = "0" * 64
    (other / "onnx" / path.with_suffix(".json").name).write_text(json.dumps(meta))
    artefact, problems = find_artefact(replace(spec, source=None), [other], cache_dir=tmp_path)
    assert artefact is None and "000000000000" in problems[0] and spec.sha256[:12] in problems[0]


def test_runtime_choice_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from pneumoview.inference import runtime

    assert RUNTIMES == ("auto", "onnx", "openvino", "torch")
    monkeypatch.delenv("PNEUMOVIEW_RUNTIME")
    assert choose_runtime("onnx", "auto") == ("onnx", "cpu")
    assert choose_runtime("openvino", "auto") == ("openvino", "cpu")
    assert choose_runtime("auto", "cpu") == ("openvino", "cpu"), "the fastest CPU runtime installed"
    monkeypatch.setattr(runtime, "openvino_available", lambda: False)
    assert choose_runtime("auto", "cpu") == ("onnx", "cpu")
    with pytest.raises(
        RuntimeMissingError, match=r"'openvino' is not installed; pip install 'pneumoview\[openvino\]'"
    ):
        choose_runtime("openvino", "cpu")
    monkeypatch.undo()
    monkeypatch.delenv("PNEUMOVIEW_RUNTIME")
    assert choose_runtime("torch", "cpu") == ("torch", "cpu")
    monkeypatch.setenv("PNEUMOVIEW_RUNTIME", "onnx")
    assert choose_runtime(None, "cpu") == ("onnx", "cpu")
    assert choose_runtime("torch", "cpu") == ("torch", "cpu")  # the argument wins over the environment
    with pytest.raises(ModelError, match="unknown runtime 'tensorrt'"):
        choose_runtime("tensorrt", "cpu")
    with pytest.raises(ModelError, match="CPU only"):
        choose_runtime("onnx", "cuda")
    with pytest.raises(ModelError, match="openvino runtime runs on the CPU only"):
        choose_runtime("openvino", "cuda")
    assert Engine(runtime="onnx", random_weights=True).runtime == "torch"


def test_runs_without_torch(onnx_models: Path, tmp_path: Path) -> None:
    """predict on the sample study's DICOMs with torch/torchvision unimportable; no artefact → a clear note."""
    code = f"""
    import csv, json, sys
    from pneumoview.inference.engine import Engine
    from pneumoview.cli import main
    rc = main(["predict", {str(SAMPLE)!r}, "--out", {str(tmp_path / "out")!r}, "--runtime", "auto", "--models-dir",
               {str(onnx_models)!r}])
    rows = list(csv.DictReader(open({str(tmp_path / "out" / "findings.csv")!r})))
    run = json.load(open({str(tmp_path / "out" / "run.json")!r}))
    print("RUNJSON", run["runtime"], run["device"])
    bare = Engine(runtime="auto", models_dir={str(tmp_path / "empty")!r})
    print("RC", rc, "ROWS", len({{r["image_id"] for r in rows}}), "RUNTIME", bare.runtime)
    print("AVAILABLE", bare.available_stages()["classify"])
    print("TORCH", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")))
    """
    empty_cache = {
        "PNEUMOVIEW_CACHE_DIR": str(tmp_path / "cache"),
        "PNEUMOVIEW_MODELS": str(tmp_path / "none"),
    }
    # OpenVINO blocked too: this is the desktop app's configuration (ONNX Runtime only).
    proc = _python(code, ("torch", "torchvision", "openvino"), {**empty_cache, "PNEUMOVIEW_RUNTIME": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "RC 0 ROWS 6 RUNTIME onnx" in out and "RUNJSON onnx cpu" in out, out
    # The repository's models folder has the weights but no export, and torch cannot be imported to make one.
    assert "AVAILABLE no ONNX export of rsna3-classifier" in out and "`pneumoview models export-onnx`" in out
    line = out.split("AVAILABLE")[1].split("\n")[0]
    assert "no model" not in line and "not installed" not in line, line
    assert "TORCH []" in out, out


def test_onnx_runtime_missing_is_named(tmp_path: Path) -> None:
    code = """
    from pneumoview.inference.engine import Engine
    from pneumoview.errors import ModelError
    try:
        Engine(runtime="onnx")
    except ModelError as exc:
        print("ERROR", type(exc).__name__, exc)
    print("AUTO", Engine(runtime="auto", device="cpu").runtime)
    """
    # Not the finder: torch probes optional packages with find_spec, which must answer "absent", as it does when a
    # package is not installed (a None entry in sys.modules makes find_spec return None and import fail).
    proc = _python(
        "import sys; sys.modules['onnxruntime'] = sys.modules['openvino'] = None\n" + textwrap.dedent(code),
        (),
        {"PNEUMOVIEW_RUNTIME": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ERROR {RuntimeMissingError.__name__}" in proc.stdout
    assert "'onnxruntime' is not installed" in proc.stdout and "pip install 'pneumoview[onnx]'" in proc.stdout
    assert "AUTO torch" in proc.stdout
