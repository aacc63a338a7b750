"""The one atomic file writer behind every output PneumoView writes (CSV, JSON, PNG, DICOM copies, journal).

A file is written to a temporary file in the destination's folder (``.<name>.XXXXXXXX.tmp``), flushed to disk and
renamed over the destination with ``os.replace``, so a reader or a killed run never sees a half-written file.

Permissions follow one rule: an output gets the mode a plain ``open(path, "w")`` would give it, ``0o666`` less the
process umask (``0o644`` under the usual umask ``022``), whatever its kind. Only secrets (``private=True``, e.g. the
de-identification key) are ``0o600``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "output_file_mode"]


def _umask() -> int:
    """The process umask now, read without changing it where the OS allows (Linux), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_file_mode(private: bool = False) -> int:
    """The permission bits of a file PneumoView writes: ``0o666 & ~umask``, or ``0o600`` when ``private``."""
    return 0o600 if private else 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, private: bool = False) -> Path:
    """Create or replace ``path`` atomically with what ``write(file)`` writes; returns ``path``.

    Missing parent folders are created. On any error (or interruption) the temporary file is removed and the
    destination is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600 whatever the umask; give it the mode a plain open() would have.
        os.chmod(tmp, output_file_mode(private))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, private: bool = False) -> Path:
    """Create or replace ``path`` atomically with ``data`` (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), private=private)


def atomic_write_text(path: str | Path, text: str, *, private: bool = False) -> Path:
    """Create or replace ``path`` atomically with ``text`` encoded as UTF-8 (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), private=private)
