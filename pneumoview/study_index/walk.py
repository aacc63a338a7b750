"""The walk: a folder (or one file) in a sorted, deterministic order, each regular file reported exactly once."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pneumoview.study_index.dicomdir import scan_dicomdir
from pneumoview.study_index.entries import ScanEntry, ScanError
from pneumoview.study_index.files import FoundDicomDir, scan_file
from pneumoview.study_index.notes import exc_text, os_reason

_HIDDEN_FOLDERS = frozenset({"__macosx", "$recycle.bin", "system volume information"})


def scan(folder: str | Path) -> Iterator[ScanEntry | ScanError]:
    """Scan ``folder`` recursively and yield one ``ScanEntry`` or ``ScanError`` per file, as it goes.

    The folder is checked at once (``FileNotFoundError`` / ``NotADirectoryError`` with a message naming it);
    after that the returned iterator never raises for a file: every problem becomes a ``ScanError``.
    ``folder`` may also be a single file, which is then scanned alone (a DICOMDIR: with the instances it
    lists).
    """
    root = Path(folder).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if root.is_file():
        return _scan_files([root], _ScanState())
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return _walk(root, _ScanState())


@dataclass
class _ScanState:
    seen_files: set[str] = field(default_factory=set)  # real paths already reported
    seen_dirs: set[str] = field(default_factory=set)  # real paths of folders already walked (symlink loops)


def _walk(folder: Path, state: _ScanState) -> Iterator[ScanEntry | ScanError]:
    real = os.path.realpath(folder)
    if real in state.seen_dirs:
        return
    state.seen_dirs.add(real)
    try:
        with os.scandir(folder) as it:
            children = sorted(it, key=lambda e: (e.name.casefold(), e.name))
    except OSError as exc:
        yield ScanError(folder, "header", f"the folder cannot be read: {os_reason(exc)}")
        return

    files: list[Path] = []
    reals: dict[Path, str] = {}  # a plain file's real path is its real folder's joined with its name
    folders: list[os.DirEntry[str]] = []
    for child in children:
        try:
            is_dir = child.is_dir()  # follows links; loops are caught by seen_dirs
        except OSError:
            is_dir = False
        if is_dir:
            folders.append(child)
        else:
            files.append(Path(child.path))
            with contextlib.suppress(OSError):
                if not child.is_symlink():
                    reals[files[-1]] = os.path.join(real, child.name)
    # DICOMDIRs first, so that the files they list are reported with the DICOMDIR's grouping.
    files.sort(key=lambda p: not p.name.upper().startswith("DICOMDIR"))
    yield from _scan_files(files, state, reals)

    for child in folders:
        name = child.name
        if name.startswith(".") or name.casefold() in _HIDDEN_FOLDERS:
            yield ScanError(
                Path(child.path),
                "header",
                "hidden or system folder, not scanned; scan it on its own if it holds images.",
            )
            continue
        yield from _walk(Path(child.path), state)


def _scan_files(
    paths: Iterable[Path], state: _ScanState, reals: dict[Path, str] | None = None
) -> Iterator[ScanEntry | ScanError]:
    for path in paths:
        real = (reals or {}).get(path) or os.path.realpath(path)
        if real in state.seen_files:
            continue
        state.seen_files.add(real)
        try:
            result = scan_file(path)
        except Exception as exc:  # a scan must never stop on one file
            result = ScanError(path, "header", f"unexpected error while reading the header: {exc_text(exc)}")
        if isinstance(result, FoundDicomDir):
            yield from scan_dicomdir(result, state.seen_files)
        else:
            yield result
