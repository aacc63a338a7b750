"""Reader warnings collected as notes (per thread), and the wording of exceptions in messages."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator


class _NoteCollector(logging.Handler):
    """Collects pydicom's warnings as notes for the thread that is reading a file.

    pydicom reports every reading problem both to its logger and with ``warnings.warn``. The logger is used here
    because ``warnings.catch_warnings`` swaps process-wide state and is not safe while the viewer scans in a
    worker thread; a log record is handled in the thread that emitted it, so a thread-local list suffices.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        notes = getattr(self.local, "notes", None)
        if notes is not None:
            text = record.getMessage().split(" Please see <", 1)[0].strip()
            if f"reader warning: {text}" not in notes:
                notes.append(f"reader warning: {text}")


_NOTES = _NoteCollector()
logging.getLogger("pydicom").addHandler(_NOTES)


@contextlib.contextmanager
def reader_notes() -> Iterator[list[str]]:
    """Collect the pydicom warnings of this thread while the block runs."""
    previous = getattr(_NOTES.local, "notes", None)
    notes: list[str] = []
    _NOTES.local.notes = notes
    try:
        yield notes
    finally:
        _NOTES.local.notes = previous


def exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else exc_text(exc)
