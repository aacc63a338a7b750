"""One atomic writer (pneumoview/atomic.py) behind every file PneumoView writes, with one permission rule:
``0o666 & ~umask`` (what a plain ``open(path, "w")`` gives), ``0o600`` only for secrets. Each writer that used to
have its own temp-file-and-rename (settings, model manifest, training checkpoint, weights export, training log)
is checked here for the mode, for leaving no temporary file, and for leaving the old file intact on failure."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from pneumoview.atomic import atomic_write, atomic_write_text, output_file_mode
from pneumoview.export import write_findings_csv
from pneumoview.render import save_png
from pneumoview.settings import Settings, load_settings, save_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_core_writers_follow_the_umask(tmp_path: Path, umask_027: int):
    written = [
        save_settings(Settings(), tmp_path / "settings.json"),
        write_findings_csv([], tmp_path / "findings.csv"),
        save_png(np.zeros((4, 5, 3), np.uint8), tmp_path / "a.png"),
        atomic_write_text(tmp_path / "notes.txt", "é\n"),
    ]
    for path in written:
        assert path is not None and _mode(path) == umask_027, path
    assert (tmp_path / "notes.txt").read_bytes() == "é\n".encode()
    assert load_settings(tmp_path / "settings.json") == Settings()
    assert _mode(atomic_write_text(tmp_path / "key", "s", private=True)) == 0o600
    assert output_file_mode() == umask_027
    _no_temp_files(tmp_path)


def test_training_and_manifest_writers_use_the_same_writer(tmp_path: Path, umask_027: int):
    import torch  # lazy: only this test needs torch

    from pneumoview.inference.manifest import upsert_entries
    from pneumoview.inference.weights import sha256_file
    from pneumoview.training.checkpoint import export_weights, load_checkpoint, save_checkpoint
    from pneumoview.training.curves import read_log, write_log

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    ckpt = tmp_path / "run" / "last.pt"
    save_checkpoint(ckpt, {"model": state, "epoch": 3})
    assert load_checkpoint(ckpt)["epoch"] == 3
    weights, digest = export_weights(state, tmp_path / "models", "cls-test")
    # The name and the returned hash are the file's real sha256 (hashed once, from the bytes written).
    assert sha256_file(weights) == digest and weights.name == f"cls-test-{digest[:8]}.pt"
    log = tmp_path / "run" / "log.csv"
    write_log(log, [{"epoch": 1, "train_loss": 0.5, "auc": 0.7, "lr": 0.1, "seconds": 2.0}], "auc")
    assert read_log(log)[0]["auc"] == pytest.approx(0.7)
    manifest = tmp_path / "models" / "models.toml"
    upsert_entries(manifest, {})
    for path in (ckpt, weights, log, manifest):
        assert _mode(path) == umask_027, path
    for folder in (tmp_path / "run", tmp_path / "models"):
        _no_temp_files(folder)


def test_a_failing_write_keeps_the_old_file(tmp_path: Path):
    dest = atomic_write_text(tmp_path / "out.csv", "old\n")

    def half_then_fail(fh) -> None:
        fh.write(b"new, half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(dest, half_then_fail)
    assert dest.read_text() == "old\n"
    _no_temp_files(tmp_path)


def test_no_other_module_writes_files_by_rename():
    """The temp-file-and-``os.replace`` dance lives in atomic.py only (file_bundle moves whole sets of files that
    atomic.py wrote, which is a different job)."""
    allowed = {"atomic.py", "file_bundle.py"}
    offenders = []
    for path in (ROOT / "pneumoview").rglob("*.py"):
        rel = path.relative_to(ROOT / "pneumoview").as_posix()
        if rel in allowed:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"os\.replace\(|mkstemp\(|\btmp\.replace\(|\.rename\(", code):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "write through pneumoview.atomic instead:\n" + "\n".join(offenders)
