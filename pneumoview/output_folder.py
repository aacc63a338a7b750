"""Is an output folder writable? Checked before a batch loads its models, so a bad ``--out`` costs nothing.

Both ``pneumoview predict`` and the viewer's batch dialog ask :func:`output_folder_problem` first and show its one
sentence (the CLI then exits with status 2); :func:`write_error_text` turns an ``OSError`` met later into the same
kind of sentence instead of a raw ``[Errno 30] …``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["output_folder_problem", "write_error_text"]

# Sub-folders a batch writes into (see pneumoview.batch); named here to keep this module free of heavy imports.
_SUBFOLDERS = (".pneumoview-journal", "annotated")


def write_error_text(exc: OSError, what: str = "") -> str:
    """A sentence for a failed write: which file or folder, and why in words (no ``[Errno N]``)."""
    where = what or (str(exc.filename) if exc.filename else "the output folder")
    reason = (exc.strerror or str(exc)).rstrip(".").lower()
    return f"Cannot write to {where}: {reason}. Choose an output folder you can write to."


def output_folder_problem(out: str | Path) -> str | None:
    """Why PneumoView cannot write its outputs into ``out``, in one sentence; None when it can.

    Creates ``out`` (and its parents) when missing, then creates and deletes a small probe file in it and in the
    sub-folders a batch writes into that already exist. A path that exists but is no folder is a problem too.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        return f"The output folder {out} is a file, not a folder. Choose an output folder you can write to."
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return write_error_text(exc, str(out))
    for folder in (out, *(out / name for name in _SUBFOLDERS)):
        if folder != out and not folder.exists():
            continue
        if not folder.is_dir():
            return f"{folder} is a file, not a folder, so the outputs cannot be written. Choose another output folder."
        try:
            fd, probe = tempfile.mkstemp(prefix=".pneumoview-write-check.", suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return write_error_text(exc, str(folder))
    return None
