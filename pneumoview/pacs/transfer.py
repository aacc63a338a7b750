"""The local side of PACS transfers: the cache folder, atomic instance files, and what a transfer reports.

Retrieved studies land in ``<cache>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``; the cache is
``platformdirs.user_data_dir("PneumoView")/pacs-cache`` unless ``$PNEUMOVIEW_PACS_CACHE`` names another folder.
Each instance is written to a temporary file and renamed, so a file named for a SOP Instance UID is always
complete: that is what makes an interrupted retrieve resumable (present files are not fetched again).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from pneumoview.atomic import atomic_write_bytes
from pneumoview.pacs.peers import PacsError

__all__ = [
    "CACHE_ENV",
    "Cancelled",
    "Progress",
    "RetrieveResult",
    "SendResult",
    "cache_root",
    "is_image_class",
    "present_instances",
    "remove_partials",
    "study_folder",
    "write_instance",
]

CACHE_ENV = "PNEUMOVIEW_PACS_CACHE"

#: ``progress(done, total, path)``: ``done`` of ``total`` instances handled; ``path`` is the file just written
#: (retrieve) or sent (send), or None. Called from a network thread.
Progress = Callable[[int, int, Path | None], None]
#: ``cancelled() -> bool``: polled between instances; True stops the transfer (what arrived stays).
Cancelled = Callable[[], bool]


def cache_root() -> Path:
    """The PACS cache folder (see the module docstring)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("PneumoView", appauthor=False)) / "pacs-cache"


def _safe_uid(uid: str) -> str:
    text = uid.strip().rstrip("\x00")
    if not text or not all(c.isdigit() or c == "." for c in text) or len(text) > 64:
        raise ValueError(f"{uid!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return text


def study_folder(root: Path, study_uid: str) -> Path:
    """``root/<StudyInstanceUID>`` (the UID is checked, so a PACS cannot make us write elsewhere)."""
    return Path(root) / _safe_uid(study_uid)


def present_instances(folder: Path) -> set[str]:
    """SOP Instance UIDs already complete in ``folder`` (files ``<uid>.dcm``)."""
    if not Path(folder).is_dir():
        return set()
    return {p.stem for p in Path(folder).glob("*.dcm") if not p.name.startswith(".")}


def write_instance(folder: Path, sop_uid: str, data: bytes) -> Path:
    """Write one encoded DICOM file (preamble + file meta + data set) atomically as ``folder/<uid>.dcm``
    (through :mod:`pneumoview.atomic`: the temporary file is ``.<uid>.dcm.XXXXXXXX.tmp``, never ``*.dcm``)."""
    return atomic_write_bytes(Path(folder) / f"{_safe_uid(sop_uid)}.dcm", data)


#: Temporary files an interrupted :func:`write_instance` can leave (``.incoming-*.part``: older versions).
_PARTIAL_GLOBS = (".*.dcm.*.tmp", ".incoming-*.part")


def remove_partials(folder: Path) -> None:
    """Delete half-written instance files a killed transfer left in ``folder`` (complete ``*.dcm`` stay)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for pattern in _PARTIAL_GLOBS:
        for stale in folder.glob(pattern):
            with contextlib.suppress(OSError):
                stale.unlink()


def interrupted(exc: Exception, kept: int, total: int, folder: Path) -> Exception:
    """``exc`` (the server went away mid-way through a retrieve), of the same type, saying that what arrived is
    kept, so retrying fetches only the rest."""
    text = str(exc)
    sep = " " if text.endswith(".") else ". "
    return type(exc)(
        f"{text}{sep}{kept} of {total} instance(s) are in {folder}; retrieve again to fetch the rest."
    )


def is_image_class(sop_class_uid: str) -> bool:
    """True for image storage SOP classes (the viewer can show them); False for SR, SEG, PR, KOS, PDF …"""
    name = UID(sop_class_uid).name
    return "Image Storage" in name and "Segmentation" not in name


@dataclass
class RetrieveResult:
    """What a retrieve did.

    Attributes:
        folder: where the study's files are (``<cache>/<StudyInstanceUID>``).
        expected: SOP Instance UIDs the PACS listed for the study.
        fetched: files written in this call.
        already_present: instances that were complete in the folder before (not fetched again).
        non_images: files of this call and before that hold no image (SR, SEG, presentation states …).
        failed: ``(SOP Instance UID or "", reason)`` for instances that did not arrive.
        cancelled: True when the user stopped it; what arrived stays and a retry fetches the rest.
    """

    folder: Path
    expected: set[str] = field(default_factory=set)
    fetched: list[Path] = field(default_factory=list)
    already_present: set[str] = field(default_factory=set)
    non_images: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False

    @property
    def missing(self) -> set[str]:
        """Listed instances that are not in the folder after this call."""
        return self.expected - present_instances(self.folder)

    @property
    def complete(self) -> bool:
        return not self.cancelled and not self.missing


@dataclass
class SendResult:
    """What a send did: files stored (or already on the server: same SOP Instance UID, no duplicate),
    ``failed`` as ``(path, reason)``, ``skipped``: files found in a folder that are not DICOM (CSV, PNG …),
    ``cancelled`` when stopped."""

    sent: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    cancelled: bool = False


def dicom_files(paths: Iterable[str | Path]) -> tuple[dict[Path, bool], list[tuple[Path, str]]]:
    """Files to send: each file given, and every file under each folder (recursively, sorted); hidden files
    and DICOMDIRs are left out. Returns ``({file: named by the user}, problems)``, problems being paths that do
    not exist (a file found in a folder that is not DICOM is skipped; one named by the user is an error)."""
    files: dict[Path, bool] = {}
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_file():
            files[p] = True
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.name.startswith(".") and f.name.upper() != "DICOMDIR":
                    files.setdefault(f, False)
        else:
            problems.append((p, "does not exist"))
    return files, problems


def read_headers(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, str, str]], SendResult]:
    """``([(file, SOP Class UID, Transfer Syntax UID)], result)`` for the DICOM files among ``paths`` (see
    :func:`dicom_files`); ``result`` starts a :class:`SendResult` with what cannot be sent. Raises
    :class:`PacsError` when nothing at all can be sent."""
    paths = list(paths)
    files, problems = dicom_files(paths)
    result = SendResult(failed=list(problems))
    headers: list[tuple[Path, str, str]] = []
    for path, named in files.items():
        try:
            ds = dcmread(path, stop_before_pixels=True)
            headers.append((path, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        except (OSError, InvalidDicomError, AttributeError, ValueError, KeyError):
            if named:
                result.failed.append(
                    (path, "not a DICOM file (or it lacks its file meta information); not sent")
                )
            else:
                result.skipped.append(path)
    if not headers and not result.failed:
        raise PacsError("nothing to send: no DICOM files found in " + ", ".join(str(p) for p in paths))
    return headers, result
