"""Nothing is lost or damaged: inputs stay byte-identical, outputs are written atomically, a killed batch resumes with
exactly one row per image, existing results are not replaced without ``--force``, and every export records the
models (versions and hashes) that made it.

(``tests/test_cli_predict.py`` already covers the same-thresholds skip on re-run; this file does not repeat it.)
"""

from __future__ import annotations

import csv
import errno
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from PIL import Image

from pneumoview.batch import JOURNAL
from pneumoview.cli import main
from pneumoview.errors import ImageReadError
from pneumoview.imaging import load_image
from pneumoview.study_index import scan
from tests.model_fixtures import equivariant_models_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return equivariant_models_dir(tmp_path_factory.mktemp("models"), size=64)


def _predict(inputs: Path, out: Path, models: Path, *extra: str) -> int:
    return main(["predict", str(inputs), "--out", str(out), "--models-dir", str(models), "--device", "cpu",
                 "--quiet", *extra])  # fmt: skip


def _tree_state(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` with its type, size, mode, mtime (ns) and, for files, sha256."""
    state = {}
    for p in sorted([folder, *folder.rglob("*")]):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        state[str(p.relative_to(folder))] = (
            stat.S_IFMT(st.st_mode),
            st.st_size,
            st.st_mode,
            st.st_mtime_ns,
            digest,
        )
    return state


def _make_writable(folder: Path) -> None:
    # The shared data is read-only; its copy must be writable, or a stray write would fail instead of being seen.
    for p in [folder, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def _small_inputs(folder: Path) -> Path:
    """Two sample-study DICOMs, three RSNA JPEGs and one broken file."""
    folder.mkdir(parents=True)
    for p in sorted(SAMPLE.glob("*.dcm"))[:2]:
        shutil.copy(p, folder / p.name)
    for p in sorted((DATA / "rsna" / "images-512").glob("*.jpg"))[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Inputs are only read


def test_scan_load_and_predict_leave_the_input_tree_untouched(
    shared_data: Path, models: Path, tmp_path: Path
):
    src = tmp_path / "robustness"
    shutil.copytree(DATA / "dicom" / "robustness", src)
    _make_writable(src)
    for p in sorted((DATA / "dicom" / "chest").glob("*.dcm"))[:3]:  # a few real radiographs among them
        shutil.copy2(p, src / p.name)
        (src / p.name).chmod(0o644)
    before = _tree_state(src)

    items = list(scan(src))
    assert len(items) >= 100
    loaded = 0
    for p in sorted(src.rglob("*")):
        if p.is_file():
            try:
                load_image(p)
                loaded += 1
            except ImageReadError:
                pass
    assert loaded >= 40
    assert main(["scan", str(src), "--json"]) == 0
    out = tmp_path / "out"
    assert _predict(src, out, models) == 1  # finished; the broken files are listed as failed
    run = json.loads((out / "run.json").read_text())
    assert run["done"] >= 40 and run["failed"]

    assert _tree_state(src) == before  # same files, bytes, sizes, modes and mtimes; nothing added


# ---------------------------------------------------------------------------------------------------------------
# Atomic outputs


class _FailingWriter:
    """A file object that writes half of the first chunk it is given, then fails as a full disk does."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        self._f.write(bytes(data)[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def _assert_outputs_whole(out: Path, n_images: int) -> None:
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "partial temporary files remain"
    for png in (out / "annotated").glob("*.png"):
        with Image.open(png) as im:
            im.load()  # raises on a truncated file
    for record in (out / JOURNAL).glob("*.json"):
        json.loads(record.read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"] == n_images + 1
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == run["done"] and len({r["patientId"] for r in rows}) == len(rows)
    with open(out / "findings.csv", newline="") as f:
        assert list(csv.DictReader(f))


@pytest.mark.parametrize("crash_at", [1, 4, 9])
def test_a_crash_while_writing_leaves_no_partial_file(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
):
    src = _small_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(src, out, models) == 1
    complete = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    real_fdopen = os.fdopen
    opened = {"writes": 0}

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if "w" not in mode:
            return f
        opened["writes"] += 1
        return _FailingWriter(f) if opened["writes"] == crash_at else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="simulated"):
        _predict(src, out, models, "--force")
    monkeypatch.undo()
    assert opened["writes"] >= crash_at

    _assert_outputs_whole(out, 5)
    # Every file is either the complete old version or a complete new one (same bytes here: same inputs/models).
    for p, data in complete.items():
        if p.suffix in (".png", ".csv"):
            assert p.read_bytes() == data, p

    assert _predict(src, out, models, "--force") == 1  # and the next run completes normally
    _assert_outputs_whole(out, 5)


def test_a_resumed_run_removes_partial_files_a_killed_run_left(models: Path, tmp_path: Path):
    src = _small_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(src, out, models) == 1
    # What a SIGKILL during atomic writes leaves behind (mkstemp names), and files that only look similar.
    debris = [out / ".submission.csv.a1b2c3d4.tmp", out / "annotated" / ".x.png.k_9zQ2xy.tmp",
              out / JOURNAL / ".0123abcd.json.zzzzzzzz.tmp"]  # fmt: skip
    keep = [out / "notes.tmp", out / ".mine.tmp", out / "annotated" / "x.png.tmp"]
    for p in debris + keep:
        p.write_bytes(b"partial")
    assert _predict(src, out, models) == 1
    assert not any(p.exists() for p in debris)
    assert all(p.read_bytes() == b"partial" for p in keep)


# ---------------------------------------------------------------------------------------------------------------
# A killed batch resumes


def test_a_killed_batch_resumes_with_one_row_per_image(shared_data: Path, models: Path, tmp_path: Path):
    corpus = bench.build_corpus(tmp_path / "in", 44, broken_fraction=4 / 44, seed=3)
    assert len(corpus.good) == 40 and len(corpus.broken) == 4
    env = dict(os.environ, PNEUMOVIEW_MODELS=str(models), PNEUMOVIEW_DEVICE="cpu")
    result = bench.interrupted_check(corpus, tmp_path / "out", tiny=True, env=env, kill_after=14)
    assert not result["problems"], result["problems"]
    # It really was killed midway (the 4 broken files come first in scan order and fail at once).
    assert result["killed_at"] >= 14 and 6 <= result["done_before_kill"] < 40
    assert result["resumed_returncode"] == 1  # finished; the 4 broken files failed
    assert result["rows"] == 40 and result["done"] == 40 and result["failed"] == 4
    assert result["cancelled"] is False


def test_load_150_mixed_files(shared_data: Path, models: Path, tmp_path: Path):
    """The CI-sized version of benchmarks/bench_load.py: run.json's failed list is exactly the broken files."""
    corpus = bench.build_corpus(tmp_path / "in", 150, broken_fraction=0.2, seed=1)
    assert len(corpus.broken) == 30
    env = dict(os.environ, PNEUMOVIEW_MODELS=str(models), PNEUMOVIEW_DEVICE="cpu")
    out = tmp_path / "out"
    stats = bench.run_predict(
        bench.predict_command([corpus.folder], out, tiny=True, extra=["--no-png"]), out, env=env
    )
    assert stats.returncode == 1, stats.stderr[-3000:]
    result = bench.check_outputs(out, corpus)
    assert not result["problems"], result["problems"]
    assert result["rows"] == 120 and result["failed"] == 30
    assert stats.peak_rss_mb < 3000
    assert "120 of 150 images analysed, 30 failed" in stats.stdout


# ---------------------------------------------------------------------------------------------------------------
# Existing results are not replaced without --force


def test_existing_results_are_not_replaced_without_force(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    src = _small_inputs(tmp_path / "in")

    # A folder holding someone else's submission.csv is refused, and the file is left alone.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "submission.csv").write_text("patientId,PredictionString\nmine,0.9 1 2 3 4\n")
    assert _predict(src, foreign, models) == 2
    assert "--force" in capsys.readouterr().err
    assert (foreign / "submission.csv").read_text() == "patientId,PredictionString\nmine,0.9 1 2 3 4\n"
    assert not (foreign / JOURNAL).exists()

    # Results made with other thresholds are refused too; the same thresholds resume.
    out = tmp_path / "out"
    assert _predict(src, out, models, "--shrink", "0.9") == 1
    before = _tree_state(out)
    assert _predict(src, out, models, "--shrink", "0.8") == 2
    assert "other thresholds" in capsys.readouterr().err
    assert _tree_state(out) == before
    assert _predict(src, out, models, "--shrink", "0.9") == 1  # resumes: nothing to redo

    # --force redoes every image with the new thresholds and replaces the outputs.
    assert _predict(src, out, models, "--shrink", "0.8", "--force") == 1
    run = json.loads((out / "run.json").read_text())
    assert run["thresholds"]["shrink"] == pytest.approx(0.8) and run["done"] == 5
    records = [json.loads(p.read_text()) for p in (out / JOURNAL).glob("*.json")]
    assert all(r["thresholds"]["shrink"] == pytest.approx(0.8) for r in records if r["status"] == "done")


# ---------------------------------------------------------------------------------------------------------------
# Provenance: every export names the models, their versions and hashes


def test_every_export_records_model_versions_and_hashes(models: Path, tmp_path: Path):
    from pneumoview.export import footer_lines
    from pneumoview.inference.engine import Engine
    from pneumoview.postprocess import postprocess
    from pneumoview.thresholds import Thresholds

    src = _small_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert _predict(src, out, models) == 1
    weights = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in models.glob("*.pt")}
    assert set(weights) == {"rsna3-classifier", "seg-a", "seg-b", "detector"}
    expected = {f"{mid}@0.0.1-test#{sha}" for mid, sha in weights.items()}

    run = json.loads((out / "run.json").read_text())
    assert {(m["id"], m["version"], m["sha256_prefix"]) for m in run["models"]} == {
        (mid, "0.0.1-test", sha) for mid, sha in weights.items()
    }
    with open(out / "findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(set(r["models"].split(";")) == expected for r in rows)
    for record in (out / JOURNAL).glob("*.json"):
        data = json.loads(record.read_text())
        if data["status"] == "done":
            assert {m["sha256_prefix"] for m in data["models"]} == set(weights.values())

    # The annotated PNG: text chunks (when the writer adds them) and the rendered footer name the models.
    image = load_image(src / next(p.name for p in sorted(src.glob("*.jpg"))))
    result = Engine(models_dir=models, device="cpu").analyze(image)
    findings = postprocess(result, Thresholds())
    footer = "\n".join(footer_lines(result, findings))
    assert all(f"{mid} v0.0.1-test #{sha}" in footer for mid, sha in weights.items())
    png = out / "annotated" / f"{image.image_id}.png"
    with Image.open(png) as im:
        assert im.height > image.shape[0] and im.width == image.shape[1]  # the footer band is there
        chunks = {k: v for k, v in im.info.items() if isinstance(v, str) and "model" in k.lower()}
    for text in chunks.values():
        assert all(sha in text for sha in weights.values())
