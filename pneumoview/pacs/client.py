"""One entry point per PACS operation, whatever the peer speaks (DIMSE or DICOMweb)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pneumoview.pacs.peers import DimsePeer, Peer
from pneumoview.pacs.query import StudyQuery, StudyRecord
from pneumoview.pacs.transfer import Cancelled, Progress, RetrieveResult, SendResult, cache_root, study_folder

__all__ = ["echo", "find_studies", "retrieve_study", "send_files"]


def _backend(peer: Peer):
    # Imported here: pynetdicom and requests load only when a PACS is actually used.
    if isinstance(peer, DimsePeer):
        # lazy: pynetdicom or dicomweb-client load only for the kind of peer in use
        from pneumoview.pacs import dimse

        return dimse
    # lazy: pynetdicom or dicomweb-client load only for the kind of peer in use
    from pneumoview.pacs import dicomweb

    return dicomweb


def echo(peer: Peer) -> None:
    """C-ECHO (DIMSE) or a one-study QIDO query (DICOMweb); raises a :class:`PacsError` subclass on failure."""
    _backend(peer).echo(peer)


def find_studies(peer: Peer, query: StudyQuery | None = None) -> list[StudyRecord]:
    """Studies matching ``query`` (every study when None), by C-FIND or QIDO-RS."""
    return _backend(peer).find_studies(peer, query or StudyQuery())


def retrieve_study(
    peer: Peer,
    study_uid: str,
    folder: Path | None = None,
    progress: Progress | None = None,
    cancelled: Cancelled = lambda: False,
) -> RetrieveResult:
    """Fetch what ``folder`` (default ``<cache>/<StudyInstanceUID>``) lacks of the study, by C-GET, C-MOVE or
    WADO-RS; see :class:`RetrieveResult`."""
    target = Path(folder) if folder is not None else study_folder(cache_root(), study_uid)
    return _backend(peer).retrieve_study(peer, study_uid, target, progress, cancelled)


def send_files(
    peer: Peer,
    paths: Iterable[str | Path],
    progress: Progress | None = None,
    cancelled: Cancelled = lambda: False,
) -> SendResult:
    """Send DICOM files and folders by C-STORE or STOW-RS; see :class:`SendResult`."""
    return _backend(peer).send_files(peer, paths, progress, cancelled)
