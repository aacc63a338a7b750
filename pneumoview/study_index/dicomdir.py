"""DICOMDIR files: the entry of the DICOMDIR itself, then the instances it lists, grouped by its directory records."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pneumoview.study_index.classes import MEDIA_STORAGE_DIRECTORY
from pneumoview.study_index.entries import DICOMDIR_KIND, ScanEntry, ScanError
from pneumoview.study_index.files import FoundDicomDir, dicom_image_id, scan_file
from pneumoview.study_index.notes import exc_text, reader_notes

# Directory-record keywords that override what the file's own header says (the DICOMDIR's grouping wins).
_RECORD_KEYWORDS = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDescription",
    "StudyID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "InstanceNumber",
)


def scan_dicomdir(found: FoundDicomDir, seen_files: set[str]) -> Iterator[ScanEntry | ScanError]:
    """Yield the DICOMDIR's entry, then each instance it lists, then an error per listed file that is gone.

    ``seen_files`` holds the real paths the scan has reported; the listed files are added to it.
    """
    import pydicom
    from pydicom.fileset import FileSet

    path = found.path
    fileset = None
    try:
        with reader_notes() as caught:
            ds = pydicom.dcmread(path)
            # FileSet silently drops records whose file is missing, so collect every reference first.
            referenced = [
                path.parent.joinpath(*_file_id(item.ReferencedFileID))
                for item in ds.get("DirectoryRecordSequence", [])
                if item.get("ReferencedFileID")
            ]
            fileset = FileSet(ds)
            instances = list(fileset)
    except Exception as exc:
        yield ScanError(
            path,
            "header",
            f"the DICOMDIR is damaged ({exc_text(exc)}); the files it lists are scanned one by one instead.",
        )
        return
    finally:
        _discard_staging(fileset)
    missing = [p for p in referenced if not os.path.lexists(p)]
    notes = [n for n in caught if "consider using the" not in n and "does not exist" not in n]
    patients = {_record_value(i, "PatientID") for i in instances}
    studies = {_record_value(i, "StudyInstanceUID") for i in instances}
    series = {_record_value(i, "SeriesInstanceUID") for i in instances}
    summary = (
        f"lists {len(instances)} instance{'s' * (len(instances) != 1)} of {len(patients)} patient(s), "
        f"{len(studies)} study(ies), {len(series)} series"
    )
    summary += f"; {len(missing)} listed file(s) are missing." if missing else "."
    yield ScanEntry(
        path=path,
        kind="non-image",
        object_kind=DICOMDIR_KIND,
        file_format="dicom",
        patient_key="",
        patient_label="",
        study_key="",
        study_label="",
        series_key="",
        series_label="",
        instance_label=path.name,
        image_id=dicom_image_id(path, found.sop_instance_uid),
        sop_class_uid=MEDIA_STORAGE_DIRECTORY,
        sop_instance_uid=found.sop_instance_uid,
        file_size=found.file_size,
        notes=tuple(dict.fromkeys([summary, *found.notes, *notes])),
    )
    base = os.path.realpath(path.parent)
    for instance in instances:
        try:
            # FileSet gives resolved paths; keep the caller's spelling of the folder (it may pass through links).
            member = Path(instance.path)
            rel = os.path.relpath(os.path.realpath(member), base)
            if not rel.startswith(os.pardir):
                member = path.parent / rel
        except Exception as exc:
            yield ScanError(
                path, "header", f"a DICOMDIR record has no usable file reference: {exc_text(exc)}"
            )
            continue
        real = os.path.realpath(member)
        if real in seen_files:
            continue
        seen_files.add(real)
        if os.path.commonpath([base, real]) != base:
            yield ScanError(
                member, "header", f"listed in {path.name} but outside its folder, so it was not opened."
            )
            continue
        try:
            yield _dicomdir_member(member, instance, path)
        except Exception as exc:
            yield ScanError(member, "header", f"unexpected error while reading the header: {exc_text(exc)}")
    for member in missing:
        real = os.path.realpath(member)
        if real not in seen_files:
            seen_files.add(real)
            yield ScanError(member, "header", f"listed in {path.name} but the file is missing.")


def _file_id(value: Any) -> list[str]:
    """The components of a Referenced File ID (one string or several)."""
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def _dicomdir_member(path: Path, instance: Any, dicomdir: Path) -> ScanEntry | ScanError:
    """Read one instance a DICOMDIR lists; the directory records' values win over the file's own header."""
    if not os.path.lexists(path):
        return ScanError(path, "header", f"listed in {dicomdir.name} but the file is missing.")
    records: dict[str, Any] = {}
    for keyword in _RECORD_KEYWORDS + ("ReferencedSOPInstanceUIDInFile", "ReferencedSOPClassUIDInFile"):
        value = _record_value(instance, keyword)
        if value is not None:
            records[keyword] = value
    result = scan_file(path, records=records, dicomdir=dicomdir)
    if isinstance(result, FoundDicomDir):
        return ScanError(
            path, "header", f"listed in {dicomdir.name} as an instance but is itself a DICOMDIR."
        )
    return result


def _record_value(instance: Any, keyword: str) -> Any:
    """A value from the instance's directory records (lowest record first), or None."""
    try:
        element = instance[keyword]
    except (KeyError, ValueError):
        return None
    value = element.value
    return None if value in (None, "") else value


def _discard_staging(fileset: Any) -> None:
    """Remove the empty staging folder pydicom's FileSet makes in the temp dir (only its write() uses it)."""
    stage = getattr(fileset, "_stage", None)
    temp = stage.get("t") if isinstance(stage, dict) else None
    if temp is not None and hasattr(temp, "cleanup"):
        with contextlib.suppress(OSError):
            temp.cleanup()
