"""Background jobs for the viewer's PACS features: plain Python run by :func:`pneumoview.gui.workers.start`.

They take a ``cancelled()`` callable, yield or return plain values and never touch widgets. The network calls
(:mod:`pneumoview.pacs`) block, so each runs in a helper thread that reports through a queue; the job yields what
arrived as it arrives (the browser fills while a study downloads) and polls ``cancelled`` in between.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumoview import pacs
from pneumoview.pacs import Peer, StudyQuery
from pneumoview.study_index import scan

Cancelled = Callable[[], bool]


def echo_job(peer: Peer, *, cancelled: Cancelled) -> str:
    """Test the connection; returns a sentence for the dialog (raises the PacsError otherwise)."""
    t0 = time.perf_counter()
    pacs.echo(peer)
    how = "C-ECHO" if isinstance(peer, pacs.DimsePeer) else "a QIDO-RS query"
    return f"{peer.address} answered {how} in {time.perf_counter() - t0:.2f} s."


def find_job(peer: Peer, query: StudyQuery, *, cancelled: Cancelled) -> list[pacs.StudyRecord]:
    return pacs.find_studies(peer, query)


def _in_thread(func: Callable[..., Any], cancelled: Cancelled, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Run ``func(progress=..., cancelled=..., **kwargs)`` in a thread; yield ``("progress", (done, total,
    path))`` as it reports, then ``("done", value)`` or ``("error", exception)``."""
    q: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            q.put(("done", func(progress=lambda *a: q.put(("progress", a)), cancelled=cancelled, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - handed to the GUI thread, which shows it
            q.put(("error", exc))

    thread = threading.Thread(target=run, name="pacs", daemon=True)
    thread.start()
    while True:
        kind, value = q.get()
        yield kind, value
        if kind in ("done", "error"):
            thread.join()
            return


@dataclass
class RetrieveSummary:
    """What a retrieve of several studies did, for the status bar."""

    root: Path
    studies: int = 0
    fetched: int = 0
    already_present: int = 0
    non_images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False
    error: str = ""


def retrieve_job(
    peer: Peer, study_uids: Sequence[str], root: Path, *, cancelled: Cancelled
) -> Iterator[tuple[str, Any]]:
    """Retrieve the studies into ``root/<StudyInstanceUID>/``. Yields ``("items", [ScanEntry | ScanError])`` for
    files already there and for each one as it arrives, ``("progress", (study index, studies, done, total))``,
    and finally ``("summary", RetrieveSummary)``."""
    summary = RetrieveSummary(root=Path(root))
    for i, uid in enumerate(study_uids):
        if cancelled():
            summary.cancelled = True
            break
        folder = pacs.study_folder(root, uid)
        kept = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
        if kept:  # what an earlier (perhaps interrupted) retrieve left is listed at once
            yield "items", [item for p in kept for item in scan(p)]
        for kind, value in _in_thread(
            pacs.retrieve_study, cancelled, peer=peer, study_uid=uid, folder=folder
        ):
            if kind == "progress":
                done, total, path = value
                yield "progress", (i, len(study_uids), done, total)
                if path is not None:
                    yield "items", list(scan(path))
            elif kind == "error":
                summary.error = str(value)
                if isinstance(value, pacs.PacsUnreachable | pacs.AssociationRejected):
                    yield "summary", summary
                    return
                summary.failed.append((uid, str(value)))
            else:
                result: pacs.RetrieveResult = value
                summary.studies += 1
                summary.fetched += len(result.fetched)
                summary.already_present += len(result.already_present)
                summary.non_images += len(result.non_images)
                summary.failed.extend(result.failed)
                summary.cancelled = summary.cancelled or result.cancelled
        if summary.cancelled:
            break
    yield "summary", summary


def send_job(peer: Peer, paths: Sequence[Path], *, cancelled: Cancelled) -> Iterator[tuple[str, Any]]:
    """Send files/folders; yields ``("progress", (done, total))`` then ``("result", SendResult)``."""
    for kind, value in _in_thread(pacs.send_files, cancelled, peer=peer, paths=list(paths)):
        if kind == "progress":
            yield "progress", value[:2]
        elif kind == "error":
            raise value
        else:
            yield "result", value


def send_results_job(
    peer: Peer,
    analysed: Sequence[tuple[Any, Any, Any]],
    include_identifiers: bool,
    *,
    cancelled: Cancelled,
) -> Iterator[tuple[str, Any]]:
    """Write the DICOM results (SR, SEG when the mask has a pixel) of each analysed ``(image, result, findings)``
    into a temporary folder, then send them. Their SOP Instance UIDs derive from the source and the models, so
    sending the same results again stores nothing twice. Yields like :func:`send_job`, plus ``("notes",
    [sentences])`` for images that could not be written (PNG/JPEG input has no study to join)."""
    # lazy: highdicom is heavy; DICOM results are written on request only
    from pneumoview.dicom_results import DicomResultsError, write_results

    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pneumoview-send-") as tmp:
        written: list[Path] = []
        for image, result, findings in analysed:
            if cancelled():
                return
            try:
                written += write_results(
                    image, result, findings, tmp, include_identifiers=include_identifiers, notes=notes
                )
            except DicomResultsError as exc:
                notes.append(str(exc))
        if notes:
            yield "notes", notes
        if not written:
            raise pacs.PacsError(
                "no DICOM results to send: " + (notes[0] if notes else "nothing was analysed")
            )
        yield from send_job(peer, written, cancelled=cancelled)
