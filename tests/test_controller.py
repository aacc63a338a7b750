"""The viewer's Qt-free state owner (:mod:`pneumoview.viewer_state`) and the one findings pipeline
(:mod:`pneumoview.findings_pipeline`), with real analysis results: small real models (the flip-equivariant test
architectures, real weights files, the real engine) run on radiographs of the bundled sample study. No Qt here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pneumoview import findings_pipeline as fp
from pneumoview.data import sample_study_dir
from pneumoview.imaging import load_image
from pneumoview.inference import weights
from pneumoview.inference.engine import Engine
from pneumoview.inference.manifest import load_manifest
from pneumoview.postprocess import postprocess
from pneumoview.settings import Settings
from pneumoview.thresholds import Thresholds
from pneumoview.viewer_state import ViewerState
from tests.model_fixtures import equivariant_models_dir


class Recorder:
    """Every emission of every signal of a state, in order: ``(signal name, args)``."""

    NAMES = (
        "current_changed",
        "findings_changed",
        "thresholds_changed",
        "status_changed",
        "layer_changed",
        "saliency_changed",
        "device_changed",
        "settings_changed",
    )

    def __init__(self, state: ViewerState) -> None:
        self.events: list[tuple[str, tuple]] = []
        for name in self.NAMES:
            getattr(state, name).connect(lambda *args, n=name: self.events.append((n, args)))

    def names(self) -> list[str]:
        return [n for n, _ in self.events]

    def clear(self) -> None:
        self.events.clear()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    d = equivariant_models_dir(tmp_path_factory.mktemp("models"))
    return Engine(load_manifest([d]), device="cpu", models_dir=d)


@pytest.fixture(scope="module")
def sample_paths() -> list[Path]:
    return sorted(sample_study_dir().glob("*.dcm"))[:3]


@pytest.fixture(scope="module")
def analysed(engine: Engine, sample_paths: list[Path]) -> list[fp.Analysed]:
    """Three real radiographs, each analysed by every stage with the default thresholds."""
    return [fp.analyse(engine, load_image(p), Thresholds()) for p in sample_paths]


def _positive_and_negative(a: fp.Analysed) -> tuple[Thresholds, Thresholds]:
    """Two thresholds under which this result reports boxes and reports none (the gate decides)."""
    p = a.result.p_opacity
    assert p is not None
    return Thresholds(gate=max(0.0, p - 0.05)), Thresholds(gate=min(1.0, p + 0.05))


def test_analyse_gives_what_postprocess_gives_and_memoises(analysed: list[fp.Analysed]):
    a = analysed[0]
    assert set(a.result.stages_done) == {"classify", "segment", "detect"}
    direct = postprocess(a.result, Thresholds(), spacing_mm=a.image.spacing_mm)
    assert a.findings.prediction_string() == direct.prediction_string()
    hits, misses = fp.memo_stats()
    again = fp.findings_for(a.result, Thresholds(), a.image.spacing_mm)
    assert again is a.findings, "the same (result, thresholds, spacing) must come from the memo"
    assert fp.memo_stats() == (hits + 1, misses)
    other = fp.findings_for(a.result, Thresholds(seg_threshold=0.9), a.image.spacing_mm)
    assert other is not a.findings and fp.memo_stats() == (hits + 1, misses + 1)
    # An equal but distinct result object is another result: never served another object's findings.
    from dataclasses import replace

    twin = replace(a.result)
    assert fp.findings_for(twin, Thresholds(), a.image.spacing_mm) is not a.findings


def test_events_fire_once_per_change_and_thresholds_change_findings(
    analysed: list[fp.Analysed], sample_paths: list[Path]
):
    a = analysed[0]
    on, off = _positive_and_negative(a)
    settings = Settings()
    settings.set_thresholds(on)
    s = ViewerState(settings)
    rec = Recorder(s)
    gen = s.select(sample_paths[0])
    s.set_image(a.image)
    assert s.set_result(a.result, complete=True, generation=gen)
    assert rec.names().count("current_changed") == 1
    assert rec.names().count("findings_changed") == 1
    assert s.findings is not None and s.findings.positive
    assert s.status(sample_paths[0])[0] == fp.FINDING

    rec.clear()
    s.set_thresholds(off)
    assert rec.names().count("thresholds_changed") == 1
    assert rec.names().count("findings_changed") == 1
    assert rec.names().count("settings_changed") == 1
    assert not s.findings.positive and s.findings.gated
    assert s.status(sample_paths[0]) == (fp.NO_FINDING, fp.image_status(s.findings, a.result)[1])
    assert ("status_changed", (sample_paths[0], fp.NO_FINDING, s.status(sample_paths[0])[1])) in rec.events
    assert settings.get_thresholds() == off, "the state writes its thresholds back to the settings"

    rec.clear()
    s.set_thresholds(off)  # the same value again: nothing changes, nothing fires
    assert rec.events == []

    rec.clear()
    s.set_thresholds(on)  # back: the memo gives the very same findings object as before
    assert s.findings.positive and rec.names().count("findings_changed") == 1


def test_generation_counter_discards_stale_results(analysed: list[fp.Analysed], sample_paths: list[Path]):
    s = ViewerState()
    first = s.select(sample_paths[0])
    s.set_image(analysed[0].image)
    second = s.select(sample_paths[1])  # the user moved on before the first result arrived
    s.set_image(analysed[1].image)
    rec = Recorder(s)
    assert not s.set_result(analysed[0].result, generation=first)
    assert s.result is None and rec.events == [] and s.cached(sample_paths[0]) is None
    assert not s.set_saliency(analysed[0].image.display, generation=first) and s.saliency is None
    assert s.set_result(analysed[1].result, generation=second)
    assert s.result is analysed[1].result and s.cached(sample_paths[1]) is not None
    rerun = s.bump()  # a re-analysis of the same image makes the older work stale too
    assert not s.is_current(second) and s.is_current(rerun)


def test_partial_results_are_running_and_not_cached(analysed: list[fp.Analysed], sample_paths: list[Path]):
    a, path = analysed[0], sample_paths[0]
    s = ViewerState()
    gen = s.select(path)
    s.set_image(a.image)
    s.set_result(a.result, complete=False, generation=gen)
    assert s.running and s.status(path) == (fp.RUNNING, "analysing") and s.cached(path) is None
    s.set_thresholds(Thresholds(seg_threshold=0.8))  # a threshold change keeps a running image running
    assert s.status(path)[0] == fp.RUNNING
    s.set_result(a.result, complete=True, generation=gen)
    assert not s.running and s.status(path)[0] in (fp.FINDING, fp.NO_FINDING) and s.cached(path) is not None


def test_status_per_image_cache_and_restatus(analysed: list[fp.Analysed], sample_paths: list[Path]):
    s = ViewerState(cache_size=2)
    rec = Recorder(s)
    for path, a in zip(sample_paths, analysed, strict=True):
        s.record(path, a)
    assert s.cached(sample_paths[0]) is None, "the least recently used result left the cache"
    assert all(s.cached(p) is not None for p in sample_paths[1:])
    assert {s.status(p)[0] for p in sample_paths} <= {fp.FINDING, fp.NO_FINDING}
    assert rec.names().count("status_changed") == 3
    assert s.status(Path("/never/seen.dcm")) == (fp.NOT_ANALYSED, "")
    # Gate everything off: the cached images' statuses follow restatus_cached; the evicted one keeps its own.
    before = {p: s.status(p) for p in sample_paths}
    s.set_thresholds(Thresholds(gate=1.0))
    rec.clear()
    changed = s.restatus_cached()
    assert all(s.status(p)[0] == fp.NO_FINDING for p in sample_paths[1:])
    assert changed == [p for p in sample_paths[1:] if before[p] != s.status(p)] and changed
    assert rec.names().count("status_changed") == len(changed)
    assert s.status(sample_paths[0]) == before[sample_paths[0]]
    assert s.restatus_cached() == [], "nothing changes twice"


def test_layers_device_and_forget(analysed: list[fp.Analysed], engine: Engine, sample_paths: list[Path]):
    settings = Settings()
    s = ViewerState(settings, device="cpu")
    rec = Recorder(s)
    s.set_layer_visible("heatmap", False)
    s.set_layer_visible("heatmap", False)
    s.set_layer_opacity("fused", 0.4)
    s.set_layer_opacity("fused", 0.4)
    assert rec.names() == ["settings_changed", "layer_changed"] * 2
    assert [args for n, args in rec.events if n == "layer_changed"] == [("heatmap",), ("fused",)]
    assert settings.overlay_visible["heatmap"] is False and settings.overlay_opacity[
        "fused"
    ] == pytest.approx(0.4)
    s.set_layer_opacity("fused", 1.7)
    assert s.overlay_opacity["fused"] == 1.0 == settings.overlay_opacity["fused"] and not s.is_shown(
        "heatmap"
    )
    s.set_all_hidden(True)
    assert not s.is_shown("fused") and "all_hidden" not in settings.overlay_visible
    with pytest.raises(ValueError, match="valid layers"):
        s.set_layer_visible("no-such-layer", True)

    rec.clear()
    assert s.device is None and s.device_request == "cpu"
    s.set_engine(engine)
    assert s.device == "cpu" and rec.events == [("device_changed", ("cpu",))]
    gen = s.select(sample_paths[0])
    s.set_image(analysed[0].image)
    s.set_result(analysed[0].result, generation=gen)
    assert rec.names().count("device_changed") == 1, "same device: not announced again"

    s.forget_results()
    assert s.result is None and s.findings is None and s.cached(sample_paths[0]) is None


def test_weights_are_hashed_once_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    d = equivariant_models_dir(tmp_path / "models")
    hashed: list[Path] = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p, *a: hashed.append(Path(p)) or real(p, *a))
    engine = Engine(load_manifest([d]), device="cpu", models_dir=d)
    assert all(v is None for v in engine.available_stages().values())
    engine.load()
    files = sorted(d.glob("*.pt"))
    assert sorted(hashed) == files, "each weights file is hashed once for the check and the load"
    # A replaced file is a new file: it is hashed (and refused) again.
    with open(files[0], "ab") as f:
        f.write(b"\0")
    assert engine.available_stages() != dict.fromkeys(engine.available_stages())
    assert sorted(hashed).count(files[0]) == 2


def test_state_modules_are_qt_and_torch_free():
    code = (
        "import sys; import pneumoview.viewer_state, pneumoview.findings_pipeline; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt', 'torch')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_complete_result_is_announced_even_when_its_findings_are_the_same(
    analysed: list[fp.Analysed], sample_paths: list[Path]
):
    """The engine sends the last stage's result twice (partial, then marked complete): the memo gives the same
    findings object, yet the viewer must hear of it to drop "analysing…"."""
    a = analysed[0]
    s = ViewerState()
    gen = s.select(sample_paths[0])
    s.set_image(a.image)
    rec = Recorder(s)
    s.set_result(a.result, complete=False, generation=gen)
    partial = s.findings
    s.set_result(a.result, complete=True, generation=gen)
    assert s.findings is partial and not s.running
    assert rec.names().count("findings_changed") == 2
