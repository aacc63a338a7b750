"""Bad input never crashes or hangs PneumoView: every real file under shared/data/dicom and ~2,100 seeded mutants of
them (truncations, bit flips, wrong lengths, huge Rows/Columns, deep sequences, junk after the data, wrong transfer
syntaxes, empty pixel data …) go through ``scan``, ``load_image`` and, for a sample that loads, the engine.

Each file is probed in a child process (``tests.fuzzing.run_probes``) so that a decoder that aborts the process
or loops forever is caught and attributed to its file instead of killing the test run. Decompression bombs are
loaded in a fresh process whose peak RSS is measured.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pneumoview.errors import ImageReadError, ImageTooLargeError
from pneumoview.imaging import load_image, sniff_kind
from pneumoview.study_index import ScanEntry, ScanError, scan
from tests import fuzzing as fuzz

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DICOM = DATA / "dicom"
TIME_LIMIT_S = 5.0
N_DICOM_MUTANTS = 2_000
N_RASTER_MUTANTS = 100


def _is_sentence(text: object) -> bool:
    """A message a user can read: one line of at least four words starting with a letter, no traceback."""
    if not isinstance(text, str):
        return False
    t = text.strip()
    return bool(t) and t[0].isalpha() and len(t.split()) >= 4 and "\n" not in t and "Traceback" not in t


def _summary(results: list[dict[str, object]]) -> dict[str, object]:
    def seconds(r: dict[str, object]) -> float:
        return float(r.get("load_s") or 0.0) + float(r.get("scan_s") or 0.0)

    slowest = max(results, key=seconds)
    return {
        "files": len(results),
        "loaded": sum(r["outcome"] == fuzz.OK for r in results),
        "refused": sum(r["outcome"] == fuzz.REFUSED for r in results),
        "crashes": sum(r["outcome"] == fuzz.CRASH or r.get("scan") == fuzz.CRASH for r in results),
        "hangs": sum(r["outcome"] == fuzz.HANG for r in results),
        "slowest_file": Path(str(slowest["path"])).name,
        "slowest_s": round(seconds(slowest), 3),
    }


def _assert_clean(results: list[dict[str, object]]) -> None:
    bad = [r for r in results if r["outcome"] in (fuzz.CRASH, fuzz.HANG) or r.get("scan") == fuzz.CRASH]
    assert not bad, "crashes/hangs:\n" + "\n".join(
        f"{r['path']}: {r['outcome']} {r.get('error_type')} {str(r.get('message'))[-400:]}"
        f"{str(r.get('scan_message'))[-400:]}"
        for r in bad[:10]
    )
    slow = [
        r for r in results if float(r.get("load_s") or 0) > TIME_LIMIT_S or float(r["scan_s"]) > TIME_LIMIT_S
    ]
    assert not slow, [(r["path"], r["load_s"], r["scan_s"]) for r in slow]
    unclear = [r for r in results if r["outcome"] == fuzz.REFUSED and not _is_sentence(r["message"])]
    unclear += [r for r in results if r["scan"] == "error" and not _is_sentence(r["scan_message"])]
    assert not unclear, [(r["path"], r.get("message"), r.get("scan_message")) for r in unclear[:10]]
    assert all(r["stage"] in ("header", "pixels") for r in results if r["outcome"] == fuzz.REFUSED)


def _report(capsys: pytest.CaptureFixture[str], title: str, summary: dict[str, object]) -> None:
    with capsys.disabled():
        print(f"\n{title}: {json.dumps(summary)}")


# ---------------------------------------------------------------------------------------------------------------
# The corpus


@pytest.fixture(scope="module")
def seeds(shared_data: Path) -> list[Path]:
    found = [p for p in sorted(DICOM.rglob("*")) if p.is_file() and sniff_kind(p) == "dicom"]
    assert len(found) >= 100 and any(p.parent.name == "chest" for p in found)
    return found


@pytest.fixture(scope="module")
def corpus(seeds: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[fuzz.Mutant]:
    out = tmp_path_factory.mktemp("fuzz")
    # Large chest files are picked less often, so that the corpus stays small (about 60 MB) and quick to read.
    weights = [0.3 if p.stat().st_size > 500_000 else 1.0 for p in seeds]
    mutants = fuzz.make_corpus(seeds, out / "dicom", N_DICOM_MUTANTS, seed=20240611, weights=weights)
    rasters = sorted((DATA / "rsna" / "images-512").glob("*.jpg"))[:3]
    rasters += sorted((DATA / "other-cxr" / "figure1-covid" / "images").glob("*.png"))[:3]
    assert len(rasters) == 6
    mutants += fuzz.make_corpus(rasters, out / "raster", N_RASTER_MUTANTS, seed=7)
    return mutants


@pytest.fixture(scope="module")
def corpus_results(corpus: list[fuzz.Mutant]) -> list[dict[str, object]]:
    return fuzz.run_probes([m.path for m in corpus], workers=2, watchdog_s=30.0)


def test_mutators_are_seeded_and_hit_their_targets(seeds: list[Path], tmp_path: Path):
    a = fuzz.make_corpus(seeds[:10], tmp_path / "a", 40, seed=3)
    b = fuzz.make_corpus(seeds[:10], tmp_path / "b", 40, seed=3)
    assert [m.path.read_bytes() for m in a] == [m.path.read_bytes() for m in b]
    siim = next(p for p in seeds if p.name.startswith("siim-acr"))
    data = siim.read_bytes()
    elements = fuzz.dicom_elements(data)
    pixel = [e for e in elements if e.tag == 0x7FE00010]
    assert len(pixel) == 1 and pixel[0].length == 0xFFFFFFFF  # encapsulated JPEG
    rng = random.Random(1)
    for name, mutator in fuzz.MUTATORS.items():
        out = mutator(data, rng)
        assert out is not None and out != data, name
    huge = fuzz.huge_dimensions(data, random.Random(0))
    with pytest.raises(ImageReadError):
        load_image(_write(tmp_path / "huge.dcm", fuzz.BROKEN_MUTATORS["huge-dims"](data, rng)))
    assert huge is not None
    zero = _write(tmp_path / "zero.dcm", fuzz.zero_length_pixel_data(data, rng))
    with pytest.raises(ImageReadError) as err:
        load_image(zero)
    assert err.value.stage == "pixels"


def _write(path: Path, data: bytes | None) -> Path:
    assert data is not None
    path.write_bytes(data)
    return path


def test_every_shared_dicom_file_is_read_or_refused_cleanly(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
):
    files = [p for p in sorted(DICOM.rglob("*")) if p.is_file()]
    assert len(files) >= 140
    results = fuzz.run_probes(files, workers=2)
    _assert_clean(results)
    summary = _summary(results)
    assert summary["loaded"] >= 40 and summary["refused"] >= 30
    _report(capsys, "shared/data/dicom", summary)
    # The whole tree in one scan: every file accounted for exactly once, as an entry or an error.
    items = list(scan(DICOM))
    reported = [i.path.resolve() for i in items if isinstance(i, (ScanEntry, ScanError)) and i.path.is_file()]
    assert sorted(reported) == sorted(p.resolve() for p in files)


def test_mutants_never_crash_or_hang(
    corpus: list[fuzz.Mutant], corpus_results: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
):
    assert len(corpus) >= 2_000
    _assert_clean(corpus_results)
    summary = _summary(corpus_results)
    by_mutator: dict[str, list[int]] = {}
    for m, r in zip(corpus, corpus_results, strict=True):
        counts = by_mutator.setdefault(m.mutator, [0, 0])
        counts[r["outcome"] == fuzz.OK] += 1
    assert len(by_mutator) == len(fuzz.MUTATORS)  # every mutation kind was exercised
    # Some mutants stay readable (junk after the data, a flipped bit in a pixel) and most are refused.
    assert summary["loaded"] >= 50 and summary["refused"] >= 1_500
    for name in ("huge-dims", "zero-pixels", "frames"):
        assert by_mutator[name][1] == 0, f"{name} mutants must never load"
    summary["refused/loaded by mutator"] = by_mutator
    _report(capsys, "fuzz corpus", summary)


def test_scanning_the_mutant_folder_accounts_for_every_file(corpus: list[fuzz.Mutant]):
    folder = corpus[0].path.parent.parent
    r = subprocess.run(
        [sys.executable, "-m", "pneumoview", "scan", str(folder), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    reported = [Path(e["path"]).resolve() for e in doc["entries"] + doc["errors"]]
    mutants = {m.path.resolve() for m in corpus}
    # Each mutant is reported exactly once; the other rows are files that mutated DICOMDIRs list but that do not
    # exist here (they are reported as errors, not invented).
    assert sorted(p for p in reported if p in mutants) == sorted(mutants)
    extra = [e for e in doc["errors"] if Path(e["path"]).resolve() not in mutants]
    assert all(not Path(e["path"]).exists() for e in extra)
    assert len(reported) == len(mutants) + len(extra)
    assert all(_is_sentence(e["message"]) for e in doc["errors"])


def test_engine_analyses_mutants_that_load(
    corpus: list[fuzz.Mutant], corpus_results: list[dict[str, object]], tmp_path: Path
):
    from pneumoview.inference.engine import Engine
    from tests.model_fixtures import equivariant_models_dir

    loaded = [m for m, r in zip(corpus, corpus_results, strict=True) if r["outcome"] == fuzz.OK]
    sample = random.Random(5).sample(loaded, min(24, len(loaded)))
    models = equivariant_models_dir(tmp_path / "models", size=64)
    engine = Engine(models_dir=models, device="cpu")
    for m in sample:
        image = load_image(m.path)
        result = engine.analyze(image)
        assert result.image_shape == image.shape
        assert result.stages_done == ("classify", "segment", "detect"), result.notes
        assert result.prob_map is not None and result.prob_map.shape == image.shape
        assert np.isfinite(result.prob_map).all() and result.p_opacity is not None
        assert 0.0 <= result.p_opacity <= 1.0


def test_truncated_images_never_pass_for_non_image_objects(shared_data: Path, tmp_path: Path):
    """A radiograph cut anywhere in its header must be reported as an error (or as an image that then fails to
    load), never as a "non-image" object: ``pneumoview predict`` leaves those out silently."""
    sources = [
        DICOM / "chest" / "fo-dicom_CR-MONO1-10-chest.dcm",  # no preamble: the data set starts at byte 0
        DICOM / "chest" / "Fake_MONOHR1.dcm",
        next((DICOM / "chest").glob("nih-cxr14_*.dcm")),
    ]
    target = tmp_path / "cut.dcm"
    for src in sources:
        data = src.read_bytes()
        for cut in range(1, 900):
            target.write_bytes(data[:cut])
            (item,) = scan(target)
            assert isinstance(item, ScanError) or item.kind == "image", (src.name, cut, item)


# ---------------------------------------------------------------------------------------------------------------
# Decompression bombs: refused before anything large is allocated

_BOMB_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time, tracemalloc, warnings
    from pathlib import Path
    warnings.simplefilter("ignore")
    from pneumoview.errors import ImageReadError
    from pneumoview.imaging import load_image
    from pneumoview.study_index import scan

    load_image(sys.argv[2])  # warm up: imports and decoder set-up count as baseline, not as the bomb's cost
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    for path in sys.argv[3:]:
        tracemalloc.start()
        t0 = time.perf_counter()
        scanned = [type(i).__name__ for i in scan(path)]
        try:
            load_image(path)
            outcome, kind = "ok", ""
        except ImageReadError as exc:
            outcome, kind = exc.message, type(exc).__name__
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append({"path": path, "scan": scanned, "outcome": outcome, "type": kind, "seconds": seconds,
                    "traced_peak": peak})
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    Path(sys.argv[1]).write_text(json.dumps({"rss_growth_kib": grown, "files": out}))
    """
)


def test_bombs_are_refused_before_allocating(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    siim = DICOM / "chest" / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    nih = next((DICOM / "chest").glob("nih-cxr14_*.dcm"))
    bombs = {
        # 12,000² black pixels in a 140 kB PNG: decoding would need 144 MB.
        "png-bomb.png": fuzz.png_bomb(12_000, 12_000),
        # A PNG header claiming 100,000² pixels (10 GB) followed by one row.
        "png-header.png": fuzz.png_bomb(100_000, 100_000, complete=False),
        "jpeg-sof.jpg": fuzz.jpeg_with_size(65_000, 65_000),
        # Real DICOMs whose Rows/Columns claim 65,535² (4.3 gigapixels).
        "huge-rows-jpeg.dcm": fuzz.BROKEN_MUTATORS["huge-dims"](siim.read_bytes(), random.Random(0)),
        "huge-rows-raw.dcm": fuzz.BROKEN_MUTATORS["huge-dims"](nih.read_bytes(), random.Random(0)),
        # Small headers around codestreams claiming 12,000² pixels (would allocate ~1 GB in the decoder).
        "j2k-in-dicom.dcm": fuzz.dicom_with_codestream_size(12_000, 12_000, "j2k"),
        "jpeg-in-dicom.dcm": fuzz.dicom_with_codestream_size(12_000, 12_000, "jpeg"),
        # A 0.5 MB deflated data set that inflates to 512 MiB.
        "deflate-bomb.dcm": fuzz.deflated_dicom_bomb(512 * 2**20),
    }
    paths = [_write(tmp_path / name, data) for name, data in bombs.items()]
    assert max(p.stat().st_size for p in paths) < 2_000_000
    report = tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "-c", _BOMB_PROBE, str(report), str(siim), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(report.read_text())
    for f in doc["files"]:
        name = Path(f["path"]).name
        assert f["outcome"] != "ok", f"{name} was decoded"
        assert _is_sentence(f["outcome"]), f
        assert f["seconds"] < TIME_LIMIT_S, f
        assert f["traced_peak"] < 32 * 2**20, f  # Python/numpy allocations stayed small
    too_large = {Path(f["path"]).name for f in doc["files"] if f["type"] == ImageTooLargeError.__name__}
    assert too_large >= {
        "png-bomb.png",
        "png-header.png",
        "jpeg-sof.jpg",
        "huge-rows-jpeg.dcm",
        "deflate-bomb.dcm",
    }
    # Peak RSS (C allocations included) grew by less than 64 MB over the whole set.
    assert doc["rss_growth_kib"] < 64 * 1024, doc
    _report(capsys, "bombs", {"files": len(paths), "rss_growth_mb": round(doc["rss_growth_kib"] / 1024, 1)})
