"""Load test of ``pneumoview predict``: a folder of ≥ 1,000 mixed good and broken files, on the CPU.

Run: ``.venv/bin/python benchmarks/bench_load.py [--files 1000] [--broken 0.2] [--no-png] [--keep DIR]``

Builds ``--files`` files in a temporary folder (plain copies, nothing is linked or written to the sources):

* good radiographs (80 %): real RSNA training JPEGs (512 px, ``../shared/data/rsna/images-512``), and about
  one in ten a real DICOM: the six RSNA-style CR files of the sample study, the SIIM-ACR JPEG-baseline CR, its
  MONOCHROME1 variant, the uncompressed NIH DX, the 10-bit no-preamble Fuji CR and, rarely, the 1955×1841 JPEG 2000
  and JPEG-LS CRs. Every copy gets a fresh RSNA-style UUID name, so every image has its own patientId;
* broken files (20 %), made from the same real files by :data:`tests.fuzzing.BROKEN_MUTATORS` and a few more
  cuts that can never be read: a file cut inside its first 128 bytes, DICOM images whose Pixel Data is empty,
  DICOM headers claiming 65,535 × 65,535 pixels, JPEGs cut in the middle of their entropy-coded data, random bytes.

Then it runs ``pneumoview predict`` in a child process (CPU; the real models when the manifest in the models folders
has all three stages installed, else the tiny test models of ``tests/model_fixtures.py``) and reports wall time,
images/s and the child's peak RSS (``os.wait4``), and checks the outputs: ``run.json``'s failed list must equal the
broken files exactly, ``submission.csv`` must have exactly one row per good file and no other row.

Interrupted batch: a second run on the first 200 files is killed with SIGKILL after 40 images are journaled, then
run again; the resumed run must finish the rest without redoing what was done, with one row per image and no
temporary files left behind.

The functions are reused by ``tests/test_nothing_lost.py`` on a smaller folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CHEST = DATA / "dicom" / "chest"
SAMPLE_STUDY = ROOT / "pneumoview" / "data" / "sample_study"
JOURNAL = ".pneumoview-journal"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (real DICOM, relative weight) for the good DICOM copies.
DICOM_SOURCES: tuple[tuple[Path, int], ...] = (
    *((p, 8) for p in sorted(SAMPLE_STUDY.glob("*.dcm"))),
    (CHEST / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", 10),
    (CHEST / "Fake_MONOHR1.dcm", 6),
    (CHEST / "nih-cxr14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm", 6),
    (CHEST / "fo-dicom_CR-MONO1-10-chest.dcm", 6),
    (CHEST / "WG04_RG1_J2KI.dcm", 1),
    (CHEST / "WG04_RG1_JLSN.dcm", 1),
)
BROKEN_KINDS = ("truncate-header", "zero-pixels", "huge-dims", "cut-jpeg", "random-bytes")


@dataclass
class Corpus:
    """A benchmark folder: ``good`` radiographs and ``broken`` files that can never be read (both absolute)."""

    folder: Path
    good: list[Path] = field(default_factory=list)
    broken: list[Path] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        """The patientIds the good files must get (their RSNA-style stems)."""
        return {p.stem for p in self.good}


@dataclass
class RunStats:
    """One ``pneumoview predict`` child process."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    killed: bool
    journaled_at_kill: int | None
    stdout: str
    stderr: str


def _uuid_stem(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _broken_bytes(kind: str, rng: random.Random, dicoms: list[bytes], jpegs: list[Path]) -> tuple[bytes, str]:
    from tests.fuzzing import BROKEN_MUTATORS

    if kind == "cut-jpeg":
        data = rng.choice(jpegs).read_bytes()
        sos = data.find(b"\xff\xda")
        return data[: rng.randint(sos + 64, sos + (len(data) - sos) // 2)], ".jpg"
    if kind == "random-bytes":
        return rng.randbytes(rng.randint(1, 4096)), ".dcm"
    source = rng.choice(dicoms)
    out = BROKEN_MUTATORS[kind](source, rng)
    assert out is not None, kind
    return out, ".dcm"


def build_corpus(folder: Path, n_files: int, broken_fraction: float = 0.2, seed: int = 0) -> Corpus:
    """Write ``n_files`` files into ``folder`` (see the module docstring); the same seed gives the same folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    jpegs = sorted((DATA / "rsna" / "images-512").glob("*.jpg"))
    if not jpegs or not SAMPLE_STUDY.is_dir():
        raise SystemExit(f"missing data: {DATA / 'rsna' / 'images-512'} or {SAMPLE_STUDY}")
    n_broken = round(n_files * broken_fraction)
    n_good = n_files - n_broken
    corpus = Corpus(folder)
    order = list(jpegs)
    rng.shuffle(order)
    sources, weights = zip(*DICOM_SOURCES, strict=True)
    for i in range(n_good):
        if rng.random() < 0.1:
            src = rng.choices(sources, weights=weights)[0]
            dest = folder / "dicom" / f"{_uuid_stem(rng)}.dcm"
        else:
            src = order[i % len(order)]
            # The original name is kept while it is unique; later copies get a new RSNA-style name.
            stem = src.stem if i < len(order) else _uuid_stem(rng)
            dest = folder / "jpeg" / f"{stem}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        corpus.good.append(dest.resolve())
    dicoms = [p.read_bytes() for p, _ in DICOM_SOURCES if p.stat().st_size < 1_500_000]
    for i in range(n_broken):
        kind = BROKEN_KINDS[i % len(BROKEN_KINDS)]
        data, ext = _broken_bytes(kind, rng, dicoms, jpegs)
        dest = folder / "broken" / f"broken-{i:04d}-{kind}{ext}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        corpus.broken.append(dest.resolve())
    return corpus


def subset(corpus: Corpus, folder: Path, n: int) -> Corpus:
    """Copy the first ``n`` files of ``corpus`` (good and broken interleaved as built) into ``folder``."""
    out = Corpus(folder)
    k_broken = round(n * len(corpus.broken) / max(1, len(corpus.good) + len(corpus.broken)))
    for src_list, dst_list, k in (
        (corpus.good, out.good, n - k_broken),
        (corpus.broken, out.broken, k_broken),
    ):
        for p in src_list[:k]:
            dest = folder / p.relative_to(corpus.folder.resolve())
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
            dst_list.append(dest.resolve())
    return out


def real_models_installed() -> bool:
    """True when the default classifier, segmentation ensemble and detector are installed with good checksums."""
    try:
        from pneumoview.inference.manifest import load_manifest, models_dirs
        from pneumoview.inference.weights import verified_weights

        dirs = models_dirs()
        manifest = load_manifest(dirs)
        ids = ["rsna3-classifier", "detector", *manifest.ensemble("seg-ensemble").members]
        for model_id in ids:
            verified_weights(manifest.model(model_id), dirs)
    except Exception:
        return False
    return True


def tiny_models(folder: Path) -> Path:
    """The tiny flip-equivariant test models (``tests/model_fixtures.py``) in ``folder``."""
    from tests.model_fixtures import equivariant_models_dir

    return equivariant_models_dir(folder, size=64)


def predict_command(
    inputs: list[Path], out: Path, *, tiny: bool, extra: list[str] | None = None
) -> list[str]:
    """The child command: ``python -m pneumoview predict …`` (importing the test builders first for tiny models)."""
    args = ["predict", *map(str, inputs), "--out", str(out), "--device", "cpu", "--quiet", *(extra or [])]
    if not tiny:
        return [sys.executable, "-m", "pneumoview", *args]
    code = f"import sys, tests.model_fixtures; from pneumoview.__main__ import main; sys.exit(main({args!r}))"
    return [sys.executable, "-c", code]


def _vm_hwm_kb(pid: int) -> int:
    """Peak resident set size of process ``pid`` so far, in KiB (VmHWM of /proc/PID/status); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _journaled(out: Path) -> int:
    try:
        return sum(1 for n in os.listdir(out / JOURNAL) if n.endswith(".json"))
    except OSError:
        return 0


def run_predict(
    cmd: list[str],
    out: Path,
    *,
    env: dict[str, str] | None = None,
    kill_after: int | None = None,
    timeout_s=3600,
) -> RunStats:
    """Run ``cmd`` and measure it; with ``kill_after``, SIGKILL it once that many journal records exist."""
    logs = Path(tempfile.mkdtemp(prefix="bench-load-logs-"))
    t0 = time.perf_counter()
    killed = False
    journaled_at_kill = None
    peak_kb = 0
    with open(logs / "out", "wb") as fo, open(logs / "err", "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT, env=env)
        # The child's own high-water mark, sampled while it runs. wait4's ru_maxrss would not do: Linux carries the
        # parent's high-water mark across fork + exec, so a large caller (a long pytest run) inflates it.
        while proc.poll() is None and time.perf_counter() - t0 < timeout_s:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            if kill_after is not None and _journaled(out) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        proc.wait()
        peak = peak_kb / 1024 if peak_kb else float("nan")
        if killed:
            journaled_at_kill = _journaled(out)
    wall = time.perf_counter() - t0
    stdout = (logs / "out").read_text(errors="replace")
    stderr = (logs / "err").read_text(errors="replace")
    shutil.rmtree(logs, ignore_errors=True)
    return RunStats(proc.returncode, wall, peak, killed, journaled_at_kill, stdout, stderr)


def check_outputs(out: Path, corpus: Corpus) -> dict[str, object]:
    """Compare the outputs in ``out`` with what ``corpus`` must give; every value in ``problems`` is a failure."""
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    failed = {Path(f["path"]).resolve() for f in run["failed"]}
    with open(out / "submission.csv", newline="", encoding="utf-8") as f:
        ids = [row["patientId"] for row in csv.DictReader(f)]
    temp_files = [p for p in out.rglob("*.tmp")]
    problems = {
        "broken files not in run.json's failed list": sorted(map(str, set(corpus.broken) - failed)),
        "failed files that are not broken": sorted(map(str, failed - set(corpus.broken))),
        "duplicated submission rows": sorted({i for i in ids if ids.count(i) > 1})
        if len(set(ids)) < len(ids)
        else [],
        "images without a submission row": sorted(corpus.ids - set(ids)),
        "unexpected submission rows": sorted(set(ids) - corpus.ids),
        "failure messages that are empty": [f["path"] for f in run["failed"] if len(f["reason"].split()) < 4],
        "temporary files left": sorted(map(str, temp_files)),
    }
    return {
        "rows": len(ids),
        "done": run["done"],
        "failed": len(run["failed"]),
        "cancelled": run["cancelled"],
        "images_per_s": run.get("images_per_s_this_run"),
        "problems": {k: v for k, v in problems.items() if v},
    }


def interrupted_check(corpus: Corpus, out: Path, *, tiny: bool, env: dict[str, str], kill_after: int) -> dict:
    """Kill a run after ``kill_after`` journaled images, resume it, and check the result."""
    cmd = predict_command([corpus.folder], out, tiny=tiny)
    first = run_predict(cmd, out, env=env, kill_after=kill_after)
    done_before = {
        p.name: p.stat().st_mtime_ns
        for p in (out / JOURNAL).glob("*.json")
        if json.loads(p.read_text(encoding="utf-8")).get("status") == "done"
    }
    temp_after_kill = len(list(out.rglob("*.tmp")))
    second = run_predict(cmd, out, env=env)
    redone = [n for n, m in done_before.items() if (out / JOURNAL / n).stat().st_mtime_ns != m]
    result = check_outputs(out, corpus)
    if not first.killed:
        result["problems"]["the first run finished before it could be killed"] = [str(first.returncode)]
    if redone:
        result["problems"]["images done before the kill were redone"] = redone
    result.update(
        killed_at=first.journaled_at_kill,
        done_before_kill=len(done_before),
        temp_files_after_kill=temp_after_kill,
        resumed_returncode=second.returncode,
        resumed_wall_s=round(second.wall_s, 2),
        resumed_stdout=second.stdout.strip().splitlines()[-1:] if second.stdout.strip() else [],
    )
    return result


def _baseline_rss_mb(tiny: bool) -> float:
    """Peak RSS of a child that only imports what predict imports (torch, torchvision, the models' code)."""
    code = "import torch, torchvision, pneumoview.inference.engine, pneumoview.batch"
    if tiny:
        code += ", tests.model_fixtures"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--broken", type=float, default=0.2, help="fraction of broken files (default 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-png", action="store_true", help="pass --no-png to predict (no annotated PNGs)")
    ap.add_argument("--interrupt-files", type=int, default=200, help="files in the interrupted-batch check")
    ap.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    args = ap.parse_args(argv)

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        corpus = build_corpus(work / "in", args.files, args.broken, args.seed)
        build_s = time.perf_counter() - t0
        tiny = not real_models_installed()
        env = dict(os.environ, PNEUMOVIEW_DEVICE="cpu")
        if tiny:
            env["PNEUMOVIEW_MODELS"] = str(tiny_models(work / "models"))
        extra = ["--no-png"] if args.no_png else []
        out = work / "out"
        stats = run_predict(predict_command([corpus.folder], out, tiny=tiny, extra=extra), out, env=env)
        result = check_outputs(out, corpus)
        baseline = _baseline_rss_mb(tiny)

        part = subset(corpus, work / "in-interrupt", args.interrupt_files)
        inter = interrupted_check(part, work / "out-interrupt", tiny=tiny, env=env, kill_after=40)

        n_good = len(corpus.good)
        rows = [
            ("machine", f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, CPU only"),
            ("models", "tiny test models (tests/model_fixtures.py)" if tiny else "installed real models"),
            (
                "files",
                f"{args.files} ({n_good} good: JPEG 512 px + real DICOMs; {len(corpus.broken)} broken)",
            ),
            ("annotated PNGs", "no" if args.no_png else "yes"),
            ("corpus build", f"{build_s:.1f} s"),
            ("predict exit status", f"{stats.returncode} (1 = finished, some files failed)"),
            ("wall time (process)", f"{stats.wall_s:.1f} s"),
            ("images/s (wall, incl. start-up)", f"{n_good / stats.wall_s:.2f}"),
            ("images/s (run.json, analysis only)", f"{result['images_per_s']}"),
            ("peak RSS of predict", f"{stats.peak_rss_mb:.0f} MB (imports alone: {baseline:.0f} MB)"),
            ("submission rows / good files", f"{result['rows']} / {n_good}"),
            ("failed list == broken files", "yes" if not result["problems"] else "NO"),
            (
                "interrupted: killed after",
                f"{inter['killed_at']} of {len(part.good) + len(part.broken)} files",
            ),
            ("interrupted: temp files after kill", f"{inter['temp_files_after_kill']} (removed on resume)"),
            ("interrupted: resumed run", f"exit {inter['resumed_returncode']}, {inter['resumed_wall_s']} s"),
            ("interrupted: rows / good files", f"{inter['rows']} / {len(part.good)}"),
            ("interrupted: outputs correct", "yes" if not inter["problems"] else "NO"),
        ]
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
        for title, problems in (("load run", result["problems"]), ("interrupted run", inter["problems"])):
            for what, items in problems.items():
                print(f"PROBLEM ({title}): {what}: {items[:5]}{' …' if len(items) > 5 else ''}")
        return 0 if not result["problems"] and not inter["problems"] else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
