"""The study index: a header-only scan of a folder into Patient ▸ Study ▸ Series ▸ Instance.

``scan(folder)`` walks a folder (recursively, in a sorted and therefore deterministic order) and yields one
:class:`ScanEntry` or :class:`ScanError` per file as it goes, so a browser can show the first rows at once,
even for a folder of 10,000 files. It never decodes pixels and never writes to the folder:

* Files are recognised by their first bytes with ``pneumoview.imaging.sniff_bytes``, as the loader does.
* DICOM files (with or without the ``.dcm`` suffix, with or without the 128-byte preamble) are read with
  ``pydicom.filereader.read_partial`` on a handful of tags, stopping at the Pixel Data element. The stop
  callback also tells whether the file has Pixel Data and how long it is: that is how truncated images and
  image objects without pixels are found without reading any pixel bytes.
* DICOMDIR files are read with ``pydicom.fileset.FileSet``; the instances they list are yielded right after
  them, grouped by the directory records, and are not yielded again when the walk reaches them.
* PNG and JPEG files are one-image studies; only their header is read (Pillow opens images lazily).
* Everything else yields a :class:`ScanError` with a sentence a user understands.

Rules a user may want to know:

* Each regular file under the folder is accounted for exactly once (as an entry or an error). A file reached
  twice (a DICOMDIR listed it, or a symbolic link points at it) is reported the first time only.
* Hidden files (``.DS_Store``, ``._name`` …) are scanned like any other file, so they usually show up as
  errors. Hidden and system *folders* (a name starting with ``.``, ``__MACOSX``, ``$RECYCLE.BIN``, ``System
  Volume Information``) are not entered; each one is reported as a single error naming the folder.
* Within a folder, DICOMDIR files come first, then the other files, then the sub-folders, each group sorted
  by name ignoring case.

Grouping keys are opaque strings, unique within one scan: PatientID, StudyInstanceUID and SeriesInstanceUID
when the file has them, otherwise fallbacks that keep unrelated files apart (see ``ScanEntry``). Labels are
what a browser shows; the patient label holds the patient's name, because this is the user's own viewer.
Nothing here is meant for export: use ``ScanEntry.image_id`` there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import stat
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from pneumoview.identity import image_id_for, is_rsna_style_name
from pneumoview.imaging import DEFAULT_MAX_PIXELS
from pneumoview.imaging.dicom_reader import deflated_limit
from pneumoview.imaging.sniff import (
    deflated_size_exceeds,
    describe_unknown,
    is_document,
    plausible_bare_dataset,
    sniff_bytes,
)
from pneumoview.quick_header import read_quick_header
from pneumoview.result_refs import REFERENCE_KEYWORDS, referenced_images

__all__ = [
    "DICOMDIR_KIND",
    "PatientNode",
    "ScanEntry",
    "ScanError",
    "SeriesNode",
    "StudyNode",
    "StudyTree",
    "build_tree",
    "scan",
]

EntryKind = Literal["image", "non-image", "result"]
ErrorStage = Literal["header", "pixels", "document"]

#: ``ScanEntry.object_kind`` of a DICOMDIR file itself (its instances are separate entries).
DICOMDIR_KIND = "DICOMDIR (file-set index)"
UNKNOWN_PATIENT = "Unknown patient"
UNKNOWN_STUDY = "Unknown study"

_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel Data, Float and Double Float Pixel Data
_ID_BYTES = 64 * 1024  # what pneumoview.imaging hashes for images without a SOP Instance UID
_HEAD_BYTES = 512
_HIDDEN_FOLDERS = frozenset({"__macosx", "$recycle.bin", "system volume information"})
_VIEW_IN_DESCRIPTION = re.compile(r"\bview:\s*([A-Za-z]+)", re.IGNORECASE)
_UID_SHAPE = re.compile(r"[0-9]+(\.[0-9]+)+")

_HEADER_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDescription",
    "StudyID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "PhotometricInterpretation",
    "ViewPosition",
    "BodyPartExamined",
    "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity",  # present in every DICOMDIR
    *REFERENCE_KEYWORDS,  # which image an SR / SEG / GSPS is about
)
_HEADER_TAGS: list[BaseTag | int] = [Tag(k) for k in _HEADER_KEYWORDS]
# The quick reader takes the plain-valued tags; a DICOMDIR or a result's references need pydicom's reader.
_QUICK_WANTED = {
    int(Tag(k)): k
    for k in (*_HEADER_KEYWORDS, "SpecificCharacterSet")
    if k not in REFERENCE_KEYWORDS and k != "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"
}
_QUICK_GIVE_UP = frozenset(int(Tag(k)) for k in REFERENCE_KEYWORDS)
_META_TAGS = [Tag(k) for k in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")]

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

# SOP classes that are never shown as radiographs, matched against pydicom's UID names (first match wins).
_NON_IMAGE_CLASSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (r"Presentation State", "presentation state"),
        (r"Key Object Selection", "key object selection"),
        (r"\bSR\b|Structured Report", "structured report"),
        (r"Waveform|Standalone Curve|Standalone PET Curve", "waveform"),
        (r"RT (Ion )?Plan", "RT plan"),
        (r"RT Structure Set", "RT structure set"),
        (r"^RT .*(Record|Instruction|Intent|Annotation|Set)", "RT object"),
        (r"Encapsulated PDF", "encapsulated PDF document"),
        (r"Encapsulated CDA", "encapsulated CDA document"),
        (r"Encapsulated (STL|OBJ|MTL)", "encapsulated 3D model"),
        (r"Raw Data", "raw data"),
        (r"Spatial Registration", "spatial registration"),
        (r"Spatial Fiducials", "spatial fiducials"),
        (r"Segmentation", "segmentation"),
        (r"Hanging Protocol", "hanging protocol"),
        (r"Procedure Log|Procedure Protocol|Protocol Approval", "procedure log or protocol"),
        (r"Measurements|Report Storage", "measurement report"),
        (r"Real World Value Mapping", "real-world value mapping"),
        (r"Color Palette", "color palette"),
        (r"Implant", "implant template"),
        (r"Inventory", "inventory"),
    )
)


@dataclass(frozen=True, kw_only=True)
class ScanEntry:
    """One file the scan could read: an image, or a DICOM object that is not an image.

    Attributes:
        path: the file (the folder given to ``scan`` joined with the file's relative path; not resolved).
        kind: ``"image"`` when it can be opened as a radiograph; ``"non-image"`` for DICOM objects without
            pixels to show (structured reports, presentation states, RT plans, waveforms, DICOMDIR files …);
            ``"result"`` for an SR, SEG or GSPS that refers to images (``result_for``): results to show over them.
        object_kind: what the file holds, for people: ``"CR image"``, ``"PNG image"``, ``"RT plan"``,
            ``"structured report"``, ``"waveform"``, :data:`DICOMDIR_KIND` …
        file_format: ``"dicom"``, ``"png"`` or ``"jpeg"``.
        patient_key, study_key, series_key: opaque grouping keys: PatientID / StudyInstanceUID /
            SeriesInstanceUID when present; otherwise ``"unknown-patient"``, a study key made of the patient
            and the file's folder, and a series key made of the study, modality and series number. PNG/JPEG
            files are their own study and series (``"file:<path>"``); their patient is the RSNA
            ``patientId`` for RSNA-style names. Empty for DICOMDIR files, which belong to no patient.
        patient_label, study_label, series_label, instance_label: what a browser shows at each level
            (``"Doe, Archibald (77654033)"``, ``"2001-01-01 - XR C Spine"``, ``"CR #1 - PA"``, ``"#3 6154"``).
        image_id: the non-identifying id used in outputs (as ``pneumoview.identity.image_id_for``).
        modality, view, body_part: DICOM Modality, view (View Position, or ``"view: PA"`` in the Series
            Description), Body Part Examined; ``None`` when absent and for PNG/JPEG.
        rows, cols: image size in pixels; frames: number of frames (1 for single-frame images). ``None`` for
            non-images.
        sop_class_uid, sop_instance_uid, transfer_syntax: DICOM identifiers (the transfer syntax by name);
            ``None`` for PNG/JPEG or when absent.
        study_date: ``"YYYY-MM-DD"`` or ``None``; series_number, instance_number: as in the file, or ``None``.
        dicomdir: the DICOMDIR that listed this file, when the entry came from one.
        file_size: bytes on disk.
        notes: sentences worth showing (reader warnings, what a DICOMDIR holds …).
        result_for: for ``kind == "result"``, the SOP Instance UIDs of the images the result refers to.
    """

    path: Path
    kind: EntryKind
    object_kind: str
    file_format: str
    patient_key: str
    patient_label: str
    study_key: str
    study_label: str
    series_key: str
    series_label: str
    instance_label: str
    image_id: str
    modality: str | None = None
    view: str | None = None
    body_part: str | None = None
    rows: int | None = None
    cols: int | None = None
    frames: int | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    transfer_syntax: str | None = None
    study_date: str | None = None
    series_number: int | None = None
    instance_number: int | None = None
    dicomdir: Path | None = None
    file_size: int = 0
    notes: tuple[str, ...] = ()
    result_for: tuple[str, ...] = ()

    @property
    def is_dicomdir(self) -> bool:
        """True for a DICOMDIR file itself (its listed instances are separate entries)."""
        return self.object_kind == DICOMDIR_KIND

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, notes as a list)."""
        d = asdict(self)
        d["path"] = str(self.path)
        d["dicomdir"] = None if self.dicomdir is None else str(self.dicomdir)
        d["notes"] = list(self.notes)
        d["result_for"] = list(self.result_for)
        return d


@dataclass(frozen=True)
class ScanError:
    """A file (or folder) the scan could not use, and why.

    ``stage`` is ``"header"`` when the file is not a readable DICOM/PNG/JPEG header at all (or is a folder
    that was not entered) and ``"pixels"`` when the header was read but the pixel data is missing or visibly
    incomplete. ``"document"`` marks a plain document (``README.md``, ``labels.csv`` …: a document suffix and
    content that is no image): not an error, just another file of the folder, listed apart (``is_document``).
    ``message`` is a sentence for a user, without the path (which is in ``path``).
    """

    path: Path
    stage: ErrorStage
    message: str

    @property
    def is_document(self) -> bool:
        """True for a plain document (notes, labels, licences), which is listed apart, not as an error."""
        return self.stage == "document"

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "stage": self.stage, "message": self.message}


# ----------------------------------------------------------------------------------------------------
# The walk


def scan(folder: str | Path) -> Iterator[ScanEntry | ScanError]:
    """Scan ``folder`` recursively and yield one ``ScanEntry`` or ``ScanError`` per file, as it goes.

    The folder is checked at once (``FileNotFoundError`` / ``NotADirectoryError`` with a message naming it);
    after that the returned iterator never raises for a file: every problem becomes a ``ScanError``.
    ``folder`` may also be a single file, which is then scanned alone (a DICOMDIR: with the instances it
    lists).
    """
    root = Path(folder).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"folder not found: {root}")
    if root.is_file():
        return _scan_files([root], _ScanState())
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return _walk(root, _ScanState())


@dataclass
class _ScanState:
    seen_files: set[str] = field(default_factory=set)  # real paths already reported
    seen_dirs: set[str] = field(default_factory=set)  # real paths of folders already walked (symlink loops)


def _walk(folder: Path, state: _ScanState) -> Iterator[ScanEntry | ScanError]:
    real = os.path.realpath(folder)
    if real in state.seen_dirs:
        return
    state.seen_dirs.add(real)
    try:
        with os.scandir(folder) as it:
            children = sorted(it, key=lambda e: (e.name.casefold(), e.name))
    except OSError as exc:
        yield ScanError(folder, "header", f"the folder cannot be read: {_os_reason(exc)}")
        return

    files: list[Path] = []
    reals: dict[Path, str] = {}  # a plain file's real path is its real folder's joined with its name
    folders: list[os.DirEntry[str]] = []
    for child in children:
        try:
            is_dir = child.is_dir()  # follows links; loops are caught by seen_dirs
        except OSError:
            is_dir = False
        if is_dir:
            folders.append(child)
        else:
            files.append(Path(child.path))
            with contextlib.suppress(OSError):
                if not child.is_symlink():
                    reals[files[-1]] = os.path.join(real, child.name)
    # DICOMDIRs first, so that the files they list are reported with the DICOMDIR's grouping.
    files.sort(key=lambda p: not p.name.upper().startswith("DICOMDIR"))
    yield from _scan_files(files, state, reals)

    for child in folders:
        name = child.name
        if name.startswith(".") or name.casefold() in _HIDDEN_FOLDERS:
            yield ScanError(
                Path(child.path),
                "header",
                "hidden or system folder, not scanned; scan it on its own if it holds images.",
            )
            continue
        yield from _walk(Path(child.path), state)


def _scan_files(
    paths: Iterable[Path], state: _ScanState, reals: dict[Path, str] | None = None
) -> Iterator[ScanEntry | ScanError]:
    for path in paths:
        real = (reals or {}).get(path) or os.path.realpath(path)
        if real in state.seen_files:
            continue
        state.seen_files.add(real)
        try:
            result = _scan_file(path)
        except Exception as exc:  # a scan must never stop on one file
            result = ScanError(path, "header", f"unexpected error while reading the header: {_exc_text(exc)}")
        if isinstance(result, _DicomDir):
            yield from _scan_dicomdir(result, state)
        else:
            yield result


# ----------------------------------------------------------------------------------------------------
# One file


@dataclass(frozen=True)
class _DicomDir:
    path: Path
    file_size: int
    sop_instance_uid: str | None
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Header:
    """What ``_read_dicom_header`` learnt about a DICOM file.

    ``values`` maps the keywords of the selected data-set elements and of the File Meta elements
    (TransferSyntaxUID, MediaStorageSOPClassUID …) to their values; elements whose value cannot be converted
    are left out.
    """

    values: dict[str, Any]
    pixel_tag: int | None  # the pixel element's tag, None when the file has none
    pixel_length: int | None  # its length in bytes (0xFFFFFFFF: encapsulated, undefined length)
    pixel_bytes_present: int | None  # bytes of its value actually in the file (None when unknown: deflated)
    notes: tuple[str, ...]

    def text(self, keyword: str) -> str:
        return _text(self.values.get(keyword)) or ""

    def number(self, keyword: str) -> int | None:
        return _int_value(self.values.get(keyword))


def _scan_file(
    path: Path, *, records: dict[str, Any] | None = None, dicomdir: Path | None = None
) -> ScanEntry | ScanError | _DicomDir:
    """Scan one file; ``records`` are DICOMDIR record values that override the header's grouping values."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return ScanError(path, "header", "broken link: the file it points to does not exist.")
        return ScanError(path, "header", "the file is missing (it was moved or deleted during the scan).")
    except OSError as exc:
        return ScanError(path, "header", f"the file cannot be read: {_os_reason(exc)}")
    if not stat.S_ISREG(st.st_mode):
        return ScanError(
            path, "header", "not a regular file (a device, pipe or socket), so it was not opened."
        )
    if st.st_size == 0:
        return ScanError(path, "header", describe_unknown(b"", path.name))
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
        return ScanError(path, "header", f"the file cannot be read: {_os_reason(exc)}")
    if is_document(path, head):
        return ScanError(path, "document", describe_unknown(head, path.name))
    return ScanError(path, "header", describe_unknown(head, path.name))


# ----------------------------------------------------------------------------------------------------
# PNG / JPEG


def _raster_entry(path: Path, fh: BinaryIO, kind: str, file_size: int) -> ScanEntry | ScanError:
    from PIL import Image, UnidentifiedImageError

    label = "PNG" if kind == "png" else "JPEG"
    try:
        with Image.open(fh) as im:  # reads the header only
            cols, rows = im.size
            frames = int(getattr(im, "n_frames", 1)) if kind == "png" else 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        return ScanError(path, "header", f"the {label} header is damaged: {_exc_text(exc)}")
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


# ----------------------------------------------------------------------------------------------------
# DICOM


def _read_dicom_header(fh: BinaryIO, *, forced: bool, file_size: int) -> _Header:
    """Read the selected tags of a DICOM file, stopping at (and noting) its pixel element."""
    found: dict[str, int] = {}

    def stop_at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in _PIXEL_TAGS:
            found.update(tag=int(tag), length=length, position=fh.tell())
            return True
        return False

    values: dict[str, Any] = {}
    with _reader_notes() as notes:
        ds = read_partial(fh, stop_when=stop_at_pixels, force=forced, specific_tags=_HEADER_TAGS)
        for group, tags in ((ds.file_meta, _META_TAGS), (ds, list(ds.keys()))):
            for tag in tags:
                try:  # a damaged value (e.g. IS "1A") must not hide the others
                    element = group[tag]
                    values[element.keyword] = element.value
                except Exception:
                    continue
    present: int | None = None
    deflated = values.get("TransferSyntaxUID") == "1.2.840.10008.1.2.1.99"
    if "tag" in found and found["length"] != 0xFFFFFFFF and not deflated:
        present = max(0, file_size - found["position"])
    return _Header(values, found.get("tag"), found.get("length"), present, tuple(notes))


def _quick_header(fh: BinaryIO, head: bytes, file_size: int) -> _Header | None:
    """The header of a plain file read in one pass without pydicom, or None when pydicom must read it."""
    quick = read_quick_header(fh, head, _QUICK_WANTED, stop_tags=_PIXEL_TAGS, give_up_tags=_QUICK_GIVE_UP)
    if quick is None:
        return None
    present = None
    if quick.pixel_position is not None and quick.pixel_length != 0xFFFFFFFF:
        present = max(0, file_size - quick.pixel_position)
    return _Header(quick.values, quick.pixel_tag, quick.pixel_length, present, ())


def _dicom_result(
    path: Path,
    fh: BinaryIO,
    head: bytes,
    *,
    forced: bool,
    file_size: int,
    records: dict[str, Any] | None,
    dicomdir: Path | None,
) -> ScanEntry | ScanError | _DicomDir:
    header = None if forced else _quick_header(fh, head, file_size)
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
        header = _read_dicom_header(fh, forced=forced, file_size=file_size)
    except Exception as exc:
        if forced:
            return ScanError(path, "header", describe_unknown(head, path.name))
        return ScanError(path, "header", f"the DICOM header is damaged: {_exc_text(exc)}")
    if forced and not _plausible_dataset(header):
        return ScanError(path, "header", describe_unknown(head, path.name))

    if (
        _sop_class(header) == _MEDIA_STORAGE_DIRECTORY
        or "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity" in header.values
    ):
        uid = header.text("SOPInstanceUID") or header.text("MediaStorageSOPInstanceUID")
        return _DicomDir(path, file_size, uid or None, header.notes)
    fields = {**header.values, **(records or {})}
    return _dicom_entry(path, header, file_size=file_size, fields=fields, dicomdir=dicomdir)


def _dicom_entry(
    path: Path,
    header: _Header,
    *,
    file_size: int,
    fields: dict[str, Any],
    dicomdir: Path | None = None,
) -> ScanEntry | ScanError:
    """Classify a read header and build its entry; ``fields`` are the grouping/label values to use."""
    sop_class = _sop_class(header) or _text(fields.get("ReferencedSOPClassUIDInFile")) or ""
    class_name = _uid_name(sop_class)
    modality = _text(fields.get("Modality"))
    rows, cols = header.number("Rows"), header.number("Columns")

    non_image_kind = _non_image_kind(class_name)
    if non_image_kind is None and header.pixel_tag is not None:
        problem = _pixel_problem(header)
        if problem is not None:
            return ScanError(path, *problem)
        kind: EntryKind = "image"
        object_kind = f"{modality} image" if modality else _image_kind_from_class(class_name)
        frames: int | None = _frames(header)
    elif non_image_kind is None and (_is_image_class(class_name) or rows or cols):
        what = f"{modality} image" if modality else _image_kind_from_class(class_name)
        return ScanError(
            path, "pixels", f"the file is a DICOM {what} but holds no pixel data: it is truncated or damaged."
        )
    elif non_image_kind is None and not sop_class:
        return ScanError(
            path,
            "header",
            "this DICOM file names no object type (no SOP Class UID) and holds no image: nothing to show.",
        )
    elif non_image_kind is None and _cut_uid(sop_class, class_name):
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
        object_kind = non_image_kind or _generic_object_kind(sop_class, class_name)
        rows = cols = frames = None
    result_for = referenced_images(sop_class, header.values)
    if result_for:
        kind = "result"
        object_kind = f"{object_kind} (results)" if "results" not in object_kind else object_kind

    sop_instance = _text(fields.get("ReferencedSOPInstanceUIDInFile")) or header.text("SOPInstanceUID")
    ts = header.text("TransferSyntaxUID")
    return ScanEntry(
        path=path,
        kind=kind,
        object_kind=object_kind,
        file_format="dicom",
        **_labels(path, fields),
        image_id=_dicom_image_id(path, sop_instance),
        modality=modality,
        view=_view(fields) if kind == "image" else None,
        body_part=_text(fields.get("BodyPartExamined")),
        rows=rows,
        cols=cols,
        frames=frames,
        sop_class_uid=sop_class or None,
        sop_instance_uid=sop_instance or None,
        transfer_syntax=(_uid_name(ts) or ts) if ts else None,
        study_date=_date(fields.get("StudyDate")),
        series_number=_int_value(fields.get("SeriesNumber")),
        instance_number=_int_value(fields.get("InstanceNumber")),
        dicomdir=dicomdir,
        file_size=file_size,
        notes=header.notes,
        result_for=result_for,
    )


def _dicom_image_id(path: Path, sop_instance_uid: str | None) -> str:
    """As pneumoview.imaging: from the SOP Instance UID, else from the file's first 64 KiB."""
    if sop_instance_uid:
        return image_id_for(path, sop_instance_uid=sop_instance_uid)
    with open(path, "rb") as fh:
        return image_id_for(path, content=fh.read(_ID_BYTES))


def _pixel_problem(header: _Header) -> tuple[ErrorStage, str] | None:
    """Why an image's pixels cannot be laid out or are incomplete, from the header alone; None when fine."""
    rows, cols = header.number("Rows"), header.number("Columns")
    if not rows or not cols:
        return "header", "the DICOM header is damaged: it has pixel data but no Rows/Columns to lay it out."
    try:
        frames = _frames(header)
    except ValueError as exc:
        return "header", f"the DICOM header is damaged: {exc}"
    bits = header.number("BitsAllocated")
    if header.pixel_tag == 0x7FE00010 and not bits:
        return "header", "the DICOM header is damaged: Bits Allocated (0028,0100) is missing."
    length = header.pixel_length
    ts = header.text("TransferSyntaxUID")
    try:
        compressed = bool(ts) and UID(ts).is_compressed
    except ValueError:  # a private or unknown transfer syntax: leave the judgement to the decoder
        compressed = True
    if length == 0xFFFFFFFF and ts and not compressed:
        return (
            "pixels",
            "the pixel data is stored in compressed fragments but the transfer syntax "
            f"({_uid_name(ts) or ts}) says it is not compressed: the file is damaged.",
        )
    if length is None or length == 0xFFFFFFFF or compressed:
        return None  # compressed pixel data: only a decoder can tell whether it is complete
    present = header.pixel_bytes_present
    if present is not None and present < length:
        return (
            "pixels",
            f"the file ends before its pixel data does ({present:,} of {length:,} bytes): it is truncated.",
        )
    samples = header.number("SamplesPerPixel") or 1
    bits = bits or {0x7FE00008: 32, 0x7FE00009: 64}.get(header.pixel_tag or 0, 8)
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if header.text("PhotometricInterpretation") == "YBR_FULL_422":
        expected = expected * 2 // 3
    if length < expected:
        size = f"{rows}x{cols}" + (f"x{frames} frames" if frames > 1 else "")
        return (
            "pixels",
            f"the pixel data is shorter than {size} needs ({length:,} of {expected:,} bytes): the file is "
            "truncated or damaged.",
        )
    return None


def _cut_uid(uid: str, name: str) -> bool:
    """True for a UID that cannot be a real SOP class: malformed ("1."), a prefix of the DICOM root, or under the
    DICOM root (private classes never are) yet unknown."""
    root = "1.2.840.10008."
    return not _UID_SHAPE.fullmatch(uid) or root.startswith(uid) or (uid.startswith(root) and not name)


def _plausible_dataset(header: _Header) -> bool:
    """A forced read of a file without preamble is accepted only when it yields real DICOM elements."""
    return plausible_bare_dataset(
        lambda k: str(header.number(k) or "") if k in ("Rows", "Columns") else header.text(k)
    )


def _sop_class(header: _Header) -> str:
    return header.text("SOPClassUID") or header.text("MediaStorageSOPClassUID")


@functools.lru_cache(maxsize=1024)
def _uid_name(uid: str | None) -> str:
    if not uid:
        return ""
    try:
        name = UID(uid).name
    except Exception:
        return uid
    return name if name != uid else ""


@functools.lru_cache(maxsize=1024)
def _non_image_kind(class_name: str) -> str | None:
    for pattern, kind in _NON_IMAGE_CLASSES:
        if class_name and pattern.search(class_name):
            return kind
    return None


def _is_image_class(class_name: str) -> bool:
    return "Image Storage" in class_name or "Volume Storage" in class_name


def _image_kind_from_class(class_name: str) -> str:
    if "Image Storage" in class_name:
        base = class_name.split(" Image Storage")[0].strip()
        return f"{base} image" if base else "DICOM image"
    return "DICOM image"


def _generic_object_kind(sop_class: str, class_name: str) -> str:
    if class_name:
        return class_name.removesuffix(" Storage").removesuffix(" SOP Class")
    return f"private DICOM object ({sop_class})"


# ----------------------------------------------------------------------------------------------------
# DICOMDIR


def _scan_dicomdir(found: _DicomDir, state: _ScanState) -> Iterator[ScanEntry | ScanError]:
    """Yield the DICOMDIR's entry, then each instance it lists, then an error per listed file that is gone."""
    import pydicom
    from pydicom.fileset import FileSet

    path = found.path
    fileset = None
    try:
        with _reader_notes() as caught:
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
            f"the DICOMDIR is damaged ({_exc_text(exc)}); the files it lists are scanned one by one instead.",
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
        image_id=_dicom_image_id(path, found.sop_instance_uid),
        sop_class_uid=_MEDIA_STORAGE_DIRECTORY,
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
                path, "header", f"a DICOMDIR record has no usable file reference: {_exc_text(exc)}"
            )
            continue
        real = os.path.realpath(member)
        if real in state.seen_files:
            continue
        state.seen_files.add(real)
        if os.path.commonpath([base, real]) != base:
            yield ScanError(
                member, "header", f"listed in {path.name} but outside its folder, so it was not opened."
            )
            continue
        try:
            yield _dicomdir_member(member, instance, path)
        except Exception as exc:
            yield ScanError(member, "header", f"unexpected error while reading the header: {_exc_text(exc)}")
    for member in missing:
        real = os.path.realpath(member)
        if real not in state.seen_files:
            state.seen_files.add(real)
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
    result = _scan_file(path, records=records, dicomdir=dicomdir)
    if isinstance(result, _DicomDir):
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


# ----------------------------------------------------------------------------------------------------
# Labels and values


def _labels(path: Path, fields: dict[str, Any]) -> dict[str, str]:
    patient_id = _text(fields.get("PatientID"))
    patient_key = patient_id or "unknown-patient"
    name = _person_name(fields.get("PatientName"))
    if name and patient_id and name != patient_id:
        patient_label = f"{name} ({patient_id})"
    else:
        patient_label = name or patient_id or UNKNOWN_PATIENT

    study_uid = _text(fields.get("StudyInstanceUID"))
    study_key = study_uid or f"unknown-study:{patient_key}:{path.parent}"
    date = _date(fields.get("StudyDate"))
    description = _text(fields.get("StudyDescription"))
    study_id = _text(fields.get("StudyID"))
    parts = [date or "", description or (f"Study {study_id}" if study_id else "")]
    study_label = " - ".join(p for p in parts if p) or UNKNOWN_STUDY

    series_uid = _text(fields.get("SeriesInstanceUID"))
    modality = _text(fields.get("Modality"))
    number = _int_value(fields.get("SeriesNumber"))
    series_key = (
        series_uid or f"unknown-series:{study_key}:{modality or ''}:{'' if number is None else number}"
    )
    head = f"{modality or 'Series'}{f' #{number}' if number is not None else ''}"
    series_description = _text(fields.get("SeriesDescription"))
    series_label = f"{head} - {series_description}" if series_description else head

    instance_number = _int_value(fields.get("InstanceNumber"))
    instance_label = f"#{instance_number} {path.name}" if instance_number is not None else path.name
    return {
        "patient_key": patient_key,
        "patient_label": patient_label,
        "study_key": study_key,
        "study_label": study_label,
        "series_key": series_key,
        "series_label": series_label,
        "instance_label": instance_label,
    }


def _person_name(value: Any) -> str | None:
    if value is None:
        return None
    family = _text(getattr(value, "family_name", None))
    given = " ".join(
        p
        for p in (_text(getattr(value, "given_name", None)), _text(getattr(value, "middle_name", None)))
        if p
    )
    if family or given:
        return ", ".join(p for p in (family, given) if p)
    text = _text(value)
    return text.replace("^", " ").strip() if text else None


def _view(fields: dict[str, Any]) -> str | None:
    view = _text(fields.get("ViewPosition"))
    if view:
        return view.upper()
    match = _VIEW_IN_DESCRIPTION.search(_text(fields.get("SeriesDescription")) or "")
    return match.group(1).upper() if match else None


def _frames(header: _Header) -> int:
    raw = header.text("NumberOfFrames")
    if not raw:
        return 1
    try:
        frames = int(raw)
    except ValueError:
        raise ValueError(f"Number of Frames is {raw!r}, which is not a whole number.") from None
    if frames < 1:
        raise ValueError(f"Number of Frames is {frames}.")
    return frames


def _date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a DICOM DA (``YYYYMMDD``, or ``YYYY.MM.DD`` in old ACR-NEMA files)."""
    text = _text(value)
    if text and len(text) == 10 and text[4] == text[7] == ".":
        text = text.replace(".", "")
    if text and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or None


def _int_value(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


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
def _reader_notes() -> Iterator[list[str]]:
    """Collect the pydicom warnings of this thread while the block runs."""
    previous = getattr(_NOTES.local, "notes", None)
    notes: list[str] = []
    _NOTES.local.notes = notes
    try:
        yield notes
    finally:
        _NOTES.local.notes = previous


def _discard_staging(fileset: Any) -> None:
    """Remove the empty staging folder pydicom's FileSet makes in the temp dir (only its write() uses it)."""
    stage = getattr(fileset, "_stage", None)
    temp = stage.get("t") if isinstance(stage, dict) else None
    if temp is not None and hasattr(temp, "cleanup"):
        with contextlib.suppress(OSError):
            temp.cleanup()


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else _exc_text(exc)


# ----------------------------------------------------------------------------------------------------
# The tree


@dataclass
class SeriesNode:
    """One series: its entries in scan order."""

    key: str
    label: str
    entries: list[ScanEntry] = field(default_factory=list)


@dataclass
class StudyNode:
    key: str
    label: str
    series: dict[str, SeriesNode] = field(default_factory=dict)


@dataclass
class PatientNode:
    key: str
    label: str
    studies: dict[str, StudyNode] = field(default_factory=dict)


@dataclass
class StudyTree:
    """Patient ▸ Study ▸ Series ▸ entries, plus DICOMDIR files, documents and errors, all in scan order.

    Mutable so that a browser can ``add`` items as the scan yields them.
    """

    patients: dict[str, PatientNode] = field(default_factory=dict)
    dicomdirs: list[ScanEntry] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    documents: list[ScanError] = field(default_factory=list)

    def add(self, item: ScanEntry | ScanError) -> None:
        if isinstance(item, ScanError):
            (self.documents if item.is_document else self.errors).append(item)
            return
        if item.is_dicomdir:
            self.dicomdirs.append(item)
            return
        patient = self.patients.get(item.patient_key)
        if patient is None:
            patient = self.patients[item.patient_key] = PatientNode(item.patient_key, item.patient_label)
        study = patient.studies.get(item.study_key)
        if study is None:
            study = patient.studies[item.study_key] = StudyNode(item.study_key, item.study_label)
        series = study.series.get(item.series_key)
        if series is None:
            series = study.series[item.series_key] = SeriesNode(item.series_key, item.series_label)
        series.entries.append(item)

    def entries(self) -> Iterator[ScanEntry]:
        """Every entry in the tree (not DICOMDIR files), patient by patient."""
        for patient in self.patients.values():
            for study in patient.studies.values():
                for series in study.series.values():
                    yield from series.entries

    def counts(self) -> dict[str, int]:
        """Numbers for a summary line: patients, studies, series, images, non_images (results included), results
        (SR/SEG/GSPS about an image), dicomdirs, documents, errors."""
        entries = list(self.entries())
        images = sum(1 for e in entries if e.kind == "image")
        return {
            "patients": len(self.patients),
            "studies": sum(len(p.studies) for p in self.patients.values()),
            "series": sum(len(s.series) for p in self.patients.values() for s in p.studies.values()),
            "images": images,
            "non_images": len(entries) - images,
            "results": sum(1 for e in entries if e.kind == "result"),
            "dicomdirs": len(self.dicomdirs),
            "documents": len(self.documents),
            "errors": len(self.errors),
        }


def build_tree(items: Iterable[ScanEntry | ScanError]) -> StudyTree:
    """Group scan results into a :class:`StudyTree` (consumes ``items``)."""
    tree = StudyTree()
    for item in items:
        tree.add(item)
    return tree
