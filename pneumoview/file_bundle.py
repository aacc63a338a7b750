"""Write several output files as one: all of them appear, or none does. Qt-free.

The viewer's File ▸ Export writes a PNG and two CSVs; a folder that cannot be written, a full disk or a crash
half-way must not leave one of them without the others. Files are written into a hidden staging folder inside the
destination (so the final ``os.replace`` stays on one file system), then moved into place; on any failure the
staging folder is removed and the files already moved by this call are taken back out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["check_writable", "write_together"]


def check_writable(folder: str | Path) -> None:
    """Raise ``OSError`` (with the reason) when files cannot be created in ``folder`` (created when missing)."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    if not p.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(p))
    with tempfile.TemporaryFile(prefix=".pneumoview-check-", dir=p):
        pass


def write_together(folder: str | Path, names: Sequence[str], write: Callable[[Path], None]) -> list[Path]:
    """Call ``write(stage)``, which must create every file of ``names`` in the folder ``stage``, then move them
    all into ``folder``. Returns the final paths; raises what ``write`` or the file system raised, leaving no
    new file behind (a file this call replaced is gone, as the user agreed to replace it)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".pneumoview-export-", dir=out))
    moved: list[Path] = []
    try:
        write(stage)
        missing = [n for n in names if not (stage / n).is_file()]
        if missing:
            raise FileNotFoundError(
                errno.ENOENT, "the export did not produce " + ", ".join(missing), str(stage)
            )
        for name in names:
            os.replace(stage / name, out / name)
            moved.append(out / name)
    except BaseException:
        for path in moved:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return moved
