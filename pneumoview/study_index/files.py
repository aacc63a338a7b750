"""One file: sniffed by its first bytes, then read as a PNG/JPEG header or a DICOM header, into an entry or an error."""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pneumoview.identity import image_id_for, is_rsna_style_name
from pneumoview.imaging import DEFAULT_MAX_PIXELS
from pneumoview.imaging.dicom_reader import deflated_limit
from pneumoview.imaging.sniff import deflated_size_exceeds, describe_unknown, is_document, sniff_bytes
from pneumoview.result_refs import referenced_images
from pneumoview.study_index.classes import (
    MEDIA_STORAGE_DIRECTORY,
    generic_object_kind,
    image_kind_from_class,
    is_cut_uid,
    is_image_class,
    non_image_kind_of,
    uid_name,
)
from pneumoview.study_index.entries import EntryKind, ScanEntry, ScanError
from pneumoview.study_index.headers import (
    Header,
    dicom_date,
    frame_count,
    int_value,
    pixel_problem,
    plausible_dataset,
    quick_header,
    read_dicom_header,
    sop_class_of,
    text_value,
)
from pneumoview.study_index.labels import grouping_labels, view_of
from pneumoview.study_index.notes import exc_text, os_reason

_ID_BYTES = 64 * 1024  # what pneumoview.imaging hashes for images without a SOP Instance UID
_HEAD_BYTES = 512


@dataclass(frozen=True)
class FoundDicomDir:
    path: Path
    file_size: int
    sop_instance_uid: str | None
    notes: tuple[str, ...]


def scan_file(
    path: Path, *, records: dict[str, Any] | None = None, dicomdir: Path | None = None
) -> ScanEntry | ScanError | FoundDicomDir:
    """Scan one file; ``records`` are DICOMDIR record values that override the header's grouping values."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return ScanError(path, "header", "broken link: the file it points to does not exist.")
        return ScanError(path, "header", "the file is missing (it was moved or deleted during the scan).")
    except OSError as exc:
        return ScanError(path, "header", f"the file cannot be read: {os_reason(exc)}")
    if not stat.S_ISREG(st.st_mode):
        return ScanError(
            path, "header", "not a regular file (a device, pipe or socket), so it was not opened."
        )
    if st.st_size == 0:
        return ScanError(path, "header", "empty file (0 bytes): not a DICOM, PNG or JPEG file.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            kind = sniff_bytes(head, st.st_size)  # the loader's own test, so that scan and load agree
            fh.seek(0)
            if kind in ("png", "jpeg"):
                return _raster_entry(path, fh, kind, st.st_size)
            if kind == "dicom":
                forced = head[128:132] != b"DICM"  # no preamble: ACR-NEMA style or a bare data set
                return _dicom_result(
                    path, fh, head, forced=forced, file_size=st.st_size, records=records, dicomdir=dicomdir
                )
    except OSError as exc:
        return ScanError(path, "header", f"the file cannot be read: {os_reason(exc)}")
    if is_document(path, head):
        return ScanError(path, "document", describe_unknown(head, path.name))
    return ScanError(path, "header", describe_unknown(head, path.name))


def _raster_entry(path: Path, fh: BinaryIO, kind: str, file_size: int) -> ScanEntry | ScanError:
    from PIL import Image, UnidentifiedImageError

    label = "PNG" if kind == "png" else "JPEG"
    try:
        with Image.open(fh) as im:  # reads the header only
            cols, rows = im.size
            frames = int(getattr(im, "n_frames", 1)) if kind == "png" else 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        return ScanError(path, "header", f"the {label} header is damaged: {exc_text(exc)}")
    if rows <= 0 or cols <= 0:
        return ScanError(path, "header", f"the {label} header gives an empty image ({cols}x{rows}).")
    fh.seek(0)
    image_id = image_id_for(path, content=fh.read(_ID_BYTES))
    if is_rsna_style_name(path):
        patient_key = patient_label = path.stem.lower()
    else:
        patient_key, patient_label = f"file:{path}", path.name
    return ScanEntry(
        path=path,
        kind="image",
        object_kind=f"{label} image",
        file_format=kind,
        patient_key=patient_key,
        patient_label=patient_label,
        study_key=f"file:{path}",
        study_label=f"{label} file",
        series_key=f"file:{path}",
        series_label=f"{label} image",
        instance_label=path.name,
        image_id=image_id,
        rows=rows,
        cols=cols,
        frames=frames,
        file_size=file_size,
    )


def _dicom_result(
    path: Path,
    fh: BinaryIO,
    head: bytes,
    *,
    forced: bool,
    file_size: int,
    records: dict[str, Any] | None,
    dicomdir: Path | None,
) -> ScanEntry | ScanError | FoundDicomDir:
    header = None if forced else quick_header(fh, head, file_size)
    if header is not None:
        fields = {**header.values, **(records or {})}
        return _dicom_entry(path, header, file_size=file_size, fields=fields, dicomdir=dicomdir)
    fh.seek(0)
    if deflated_size_exceeds(fh, deflated_limit(DEFAULT_MAX_PIXELS)):
        return ScanError(
            path,
            "pixels",
            "the deflate-compressed data set inflates to far more than any image needs (a decompression bomb); "
            "it was not read.",
        )
    try:
        header = read_dicom_header(fh, forced=forced, file_size=file_size)
    except Exception as exc:
        if forced:
            return ScanError(path, "header", "not a DICOM, PNG or JPEG file.")
        return ScanError(path, "header", f"the DICOM header is damaged: {exc_text(exc)}")
    if forced and not plausible_dataset(header):
        return ScanError(path, "header", "not a DICOM, PNG or JPEG file.")

    if (
        sop_class_of(header) == MEDIA_STORAGE_DIRECTORY
        or "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity" in header.values
    ):
        uid = header.text("SOPInstanceUID") or header.text("MediaStorageSOPInstanceUID")
        return FoundDicomDir(path, file_size, uid or None, header.notes)
    fields = {**header.values, **(records or {})}
    return _dicom_entry(path, header, file_size=file_size, fields=fields, dicomdir=dicomdir)


def _dicom_entry(
    path: Path,
    header: Header,
    *,
    file_size: int,
    fields: dict[str, Any],
    dicomdir: Path | None = None,
) -> ScanEntry | ScanError:
    """Classify a read header and build its entry; ``fields`` are the grouping/label values to use."""
    sop_class = sop_class_of(header) or text_value(fields.get("ReferencedSOPClassUIDInFile")) or ""
    class_name = uid_name(sop_class)
    modality = text_value(fields.get("Modality"))
    rows, cols = header.number("Rows"), header.number("Columns")

    non_image_kind = non_image_kind_of(class_name)
    if non_image_kind is None and header.pixel_tag is not None:
        problem = pixel_problem(header)
        if problem is not None:
            return ScanError(path, *problem)
        kind: EntryKind = "image"
        object_kind = f"{modality} image" if modality else image_kind_from_class(class_name)
        frames: int | None = frame_count(header)
    elif non_image_kind is None and (is_image_class(class_name) or rows or cols):
        what = f"{modality} image" if modality else image_kind_from_class(class_name)
        return ScanError(
            path, "pixels", f"the file is a DICOM {what} but holds no pixel data: it is truncated or damaged."
        )
    elif non_image_kind is None and not sop_class:
        return ScanError(
            path,
            "header",
            "this DICOM file names no object type (no SOP Class UID) and holds no image: nothing to show.",
        )
    elif non_image_kind is None and is_cut_uid(sop_class, class_name):
        # A file cut inside its SOP Class UID ("1.2.840.100") would otherwise pass for a private non-image object
        # and drop silently out of a batch.
        return ScanError(
            path,
            "header",
            f"the DICOM header is damaged: its SOP Class UID {sop_class!r} is incomplete (the file may be "
            "truncated); copy or export it again.",
        )
    else:
        kind = "non-image"
        object_kind = non_image_kind or generic_object_kind(sop_class, class_name)
        rows = cols = frames = None
    result_for = referenced_images(sop_class, header.values)
    if result_for:
        kind = "result"
        object_kind = f"{object_kind} (results)" if "results" not in object_kind else object_kind

    sop_instance = text_value(fields.get("ReferencedSOPInstanceUIDInFile")) or header.text("SOPInstanceUID")
    ts = header.text("TransferSyntaxUID")
    return ScanEntry(
        path=path,
        kind=kind,
        object_kind=object_kind,
        file_format="dicom",
        **grouping_labels(path, fields),
        image_id=dicom_image_id(path, sop_instance),
        modality=modality,
        view=view_of(fields) if kind == "image" else None,
        body_part=text_value(fields.get("BodyPartExamined")),
        rows=rows,
        cols=cols,
        frames=frames,
        sop_class_uid=sop_class or None,
        sop_instance_uid=sop_instance or None,
        transfer_syntax=(uid_name(ts) or ts) if ts else None,
        study_date=dicom_date(fields.get("StudyDate")),
        series_number=int_value(fields.get("SeriesNumber")),
        instance_number=int_value(fields.get("InstanceNumber")),
        dicomdir=dicomdir,
        file_size=file_size,
        notes=header.notes,
        result_for=result_for,
    )


def dicom_image_id(path: Path, sop_instance_uid: str | None) -> str:
    """As pneumoview.imaging: from the SOP Instance UID, else from the file's first 64 KiB."""
    if sop_instance_uid:
        return image_id_for(path, sop_instance_uid=sop_instance_uid)
    with open(path, "rb") as fh:
        return image_id_for(path, content=fh.read(_ID_BYTES))
