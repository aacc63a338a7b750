"""The overlapped batch pipeline (pneumoview.pipeline) against the sequential path, on real radiographs."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from pneumoview.batch import JOURNAL, collect_inputs, iter_batch, read_summary
from pneumoview.inference.engine import Engine
from pneumoview.pipeline import Finished, pipelined
from tests.model_fixtures import equivariant_models_dir

RSNA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsna"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(models_dir=equivariant_models_dir(tmp_path_factory.mktemp("models")), device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eleven real RSNA radiographs (PNG 1024 px and JPEG 512 px) and one corrupt file."""
    src = tmp_path_factory.mktemp("in")
    jpegs = sorted((RSNA / "images-512").glob("*.jpg"))[:7]
    for p in jpegs:
        shutil.copy(p, src / p.name)
    stems = {p.stem for p in jpegs}  # distinct patients, so that each gets its own annotated PNG
    for p in [p for p in sorted((RSNA / "images-1024").glob("*.png")) if p.stem not in stems][:4]:
        shutil.copy(p, src / p.name)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return src


def _outputs(out: Path) -> dict[str, bytes | dict]:
    """Every output file's bytes; journal records without their timings (which differ from run to run)."""
    files: dict[str, bytes | dict] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.name == "run.json":
            continue
        if p.parent.name == JOURNAL:
            record = json.loads(p.read_text())
            record.pop("timings_ms", None)
            files[str(p.relative_to(out))] = record
        else:
            files[str(p.relative_to(out))] = p.read_bytes()
    return files


def test_overlapped_outputs_match_sequential_bit_for_bit(engine: Engine, folder: Path, tmp_path: Path):
    inputs = collect_inputs([folder])
    assert len(inputs) == 12
    for overlap in (False, True):
        out = tmp_path / f"overlap-{overlap}"
        items = [p.item for p in iter_batch(inputs, out, engine, chunk=3, overlap=overlap)]
        assert len(items) == 12 and sum(i.status == "failed" for i in items) == 1
        summary = read_summary(out)
        assert summary.done == 11 and len(summary.failed) == 1 and not summary.cancelled
    sequential, overlapped = _outputs(tmp_path / "overlap-False"), _outputs(tmp_path / "overlap-True")
    assert len([k for k in sequential if k.startswith("annotated")]) == 11
    assert sequential.keys() == overlapped.keys()
    for name, content in sequential.items():
        assert overlapped[name] == content, name
    run = json.loads((tmp_path / "overlap-True" / "run.json").read_text())
    assert run["analysed_this_run"] == 11


def test_cancelling_an_overlapped_run_keeps_what_was_finished(engine: Engine, folder: Path, tmp_path: Path):
    inputs = collect_inputs([folder])
    gen = iter_batch(inputs, tmp_path, engine, chunk=2, overlap=True)
    first = [next(gen) for _ in range(3)]
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("pneumoview-batch")]
    summary = read_summary(tmp_path)
    assert summary.cancelled and summary.done >= sum(p.item.status == "done" for p in first)
    # Every image that was computed before the cancel was written in full (PNG and journal record).
    pngs = list((tmp_path / "annotated").glob("*.png"))
    assert len(pngs) == summary.done
    # A re-run resumes: it skips those and finishes the others with the same outputs.
    items = [p.item for p in iter_batch(inputs, tmp_path, engine, chunk=2, overlap=True)]
    assert sum(i.status == "skipped" for i in items) == summary.done
    assert read_summary(tmp_path).done == 11


def test_a_failing_stage_raises_in_the_caller_and_stops_the_threads():
    def write(work, result, seconds):
        if work == 5:
            raise OSError("disk full")
        return work

    with pytest.raises(OSError, match="disk full"):
        list(pipelined(range(20), lambda i: i, lambda ws: [w * 2 for w in ws], write, chunk=2, depth=2))

    def prepare(i):
        if i == 7:
            raise ValueError("bad input")
        return Finished(i) if i % 3 == 0 else i

    with pytest.raises(ValueError, match="bad input"):
        list(pipelined(range(20), prepare, lambda ws: list(ws), lambda w, r, s: r, chunk=2, depth=2))
    assert not [t for t in threading.enumerate() if t.name.startswith("pneumoview-batch")]


def test_outputs_come_in_input_order_with_bounded_queues():
    seen = []

    def prepare(i):
        seen.append(i)
        return Finished(-i) if i % 4 == 0 else i

    out = list(
        pipelined(range(50), prepare, lambda ws: [w + 100 for w in ws], lambda w, r, s: r, chunk=3, depth=2)
    )
    assert sorted(out) == sorted([-i for i in range(0, 50, 4)] + [i + 100 for i in range(50) if i % 4])
    assert [o for o in out if o >= 100] == [i + 100 for i in range(50) if i % 4]
    assert seen == list(range(50))


def test_a_batch_keeps_no_result_alive_in_the_findings_memo(
    engine: Engine, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The memo serves the viewer; a batch post-processes each result once, and keeping its results kept their
    probability maps: peak memory grew with the run until the memo's 256 entries were full."""
    import gc
    import weakref

    import pneumoview.findings_pipeline as fp
    import pneumoview.postprocess as pp

    kept: list[weakref.ref] = []
    real = pp.postprocess

    def spy(result, *args, **kwargs):  # findings_for imports postprocess when called, so this is what it gets
        kept.append(weakref.ref(result))
        return real(result, *args, **kwargs)

    before = len(fp._MEMO)
    monkeypatch.setattr(pp, "postprocess", spy)
    for overlap in (False, True):
        list(iter_batch(collect_inputs([folder]), tmp_path / f"o{overlap}", engine, overlap=overlap))
    gc.collect()
    assert len(kept) == 22 and len(fp._MEMO) == before
    assert all(ref() is None for ref in kept)  # every result (and its maps) was freed


def test_findings_memo_is_bounded_by_the_bytes_it_keeps_alive():
    import numpy as np

    from pneumoview.findings_pipeline import _Memo
    from pneumoview.postprocess import postprocess
    from pneumoview.thresholds import Thresholds
    from pneumoview.types import AnalysisResult

    memo = _Memo(size=256, max_bytes=10 * 2**20)
    results = [
        AnalysisResult(
            image_id=f"r{i}", image_shape=(1024, 1024), prob_map=np.zeros((1024, 1024), np.float32)
        )
        for i in range(6)
    ]  # 4 MiB of map each
    for i, r in enumerate(results):
        memo.put((id(r), Thresholds(), None), r, postprocess(r, Thresholds()))
        assert len(memo) == min(i + 1, 2) and memo.nbytes <= 10 * 2**20
    assert memo.get((id(results[-1]), Thresholds(), None), results[-1]) is not None  # the newest stays
    assert memo.get((id(results[0]), Thresholds(), None), results[0]) is None
    huge = AnalysisResult(
        image_id="huge", image_shape=(2048, 2048), prob_map=np.zeros((2048, 2048), np.float32)
    )
    memo.put((id(huge), Thresholds(), None), huge, postprocess(huge, Thresholds()))
    assert len(memo) == 1  # over the bound alone, but the newest entry is always kept
