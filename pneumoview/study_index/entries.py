"""What the scan yields: one :class:`ScanEntry` per usable file, one :class:`ScanError` per other file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

EntryKind = Literal["image", "non-image", "result"]
ErrorStage = Literal["header", "pixels", "document"]

#: ``ScanEntry.object_kind`` of a DICOMDIR file itself (its instances are separate entries).
DICOMDIR_KIND = "DICOMDIR (file-set index)"


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
