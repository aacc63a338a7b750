"""Is an output folder writable? Checked before a batch loads its models, so a bad ``--out`` costs nothing.

Both ``pneumoview predict`` and the viewer's batch dialog ask :func:`output_folder_problem` first (it writes
nothing) and show its one sentence (the CLI then exits with status 2); :func:`write_error_text` turns an ``OSError`` met later into the same
kind of sentence instead of a raw ``[Errno 30] …``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["output_folder_problem", "write_error_text"]

# Sub-folders a batch writes into (see pneumoview.batch); named here to keep this module free of heavy imports.
_SUBFOLDERS = (".pneumoview-journal", "annotated")


def write_error_text(exc: OSError, what: str = "") -> str:
    """A sentence for a failed write: which file or folder, and why in words (no ``[Errno N]``)."""
    where = what or (str(exc.filename) if exc.filename else "the output folder")
    reason = (exc.strerror or str(exc)).rstrip(".").lower()
    return f"Cannot write to {where}: {reason}. Choose an output folder you can write to."


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        pass
    return "permission denied"


def output_folder_problem(out: str | Path) -> str | None:
    """Why PneumoView cannot write its outputs into ``out``, in one sentence; None when it can.

    Touches nothing (a refused run must leave every folder as it was): a missing ``out`` is judged by its nearest
    existing parent, where it would be created; an existing one, and the sub-folders a batch writes into, by the
    file system's permission and read-only flags. A path that exists but is no folder is a problem too.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        return f"The output folder {out} is a file, not a folder. Choose an output folder you can write to."
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"Cannot write to {out}: {existing} is a file, not a folder. Choose an output folder you can write to."
    folders = [existing] if existing != out else [out, *(out / name for name in _SUBFOLDERS)]
    for folder in folders:
        if not folder.exists():
            continue
        if not folder.is_dir():
            return f"{folder} is a file, not a folder, so the outputs cannot be written. Choose another output folder."
        if not os.access(folder, os.W_OK | os.X_OK):
            where = folder if folder != existing or existing == out else out
            return f"Cannot write to {where}: {_why_not_writable(folder)}. Choose an output folder you can write to."
    return None
