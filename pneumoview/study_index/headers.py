"""Reading a DICOM file's header: the selected tags, where its pixel data starts, and what the header says about
the pixels (without reading them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom.filereader import read_partial
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from pneumoview.quick_header import read_quick_header
from pneumoview.result_refs import REFERENCE_KEYWORDS
from pneumoview.study_index.classes import uid_name
from pneumoview.study_index.entries import ErrorStage
from pneumoview.study_index.notes import reader_notes

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel Data, Float and Double Float Pixel Data
_UID_CHARS = frozenset("0123456789.")

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
QUICK_WANTED = {
    int(Tag(k)): k
    for k in (*_HEADER_KEYWORDS, "SpecificCharacterSet")
    if k not in REFERENCE_KEYWORDS and k != "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity"
}
QUICK_GIVE_UP = frozenset(int(Tag(k)) for k in REFERENCE_KEYWORDS)
_META_TAGS = [Tag(k) for k in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")]


@dataclass(frozen=True)
class Header:
    """What ``read_dicom_header`` learnt about a DICOM file.

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
        return text_value(self.values.get(keyword)) or ""

    def number(self, keyword: str) -> int | None:
        return int_value(self.values.get(keyword))


def read_dicom_header(fh: BinaryIO, *, forced: bool, file_size: int) -> Header:
    """Read the selected tags of a DICOM file, stopping at (and noting) its pixel element."""
    found: dict[str, int] = {}

    def stop_at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if int(tag) in PIXEL_TAGS:
            found.update(tag=int(tag), length=length, position=fh.tell())
            return True
        return False

    values: dict[str, Any] = {}
    with reader_notes() as notes:
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
    return Header(values, found.get("tag"), found.get("length"), present, tuple(notes))


def quick_header(fh: BinaryIO, head: bytes, file_size: int) -> Header | None:
    """The header of a plain file read in one pass without pydicom, or None when pydicom must read it."""
    quick = read_quick_header(fh, head, QUICK_WANTED, stop_tags=PIXEL_TAGS, give_up_tags=QUICK_GIVE_UP)
    if quick is None:
        return None
    present = None
    if quick.pixel_position is not None and quick.pixel_length != 0xFFFFFFFF:
        present = max(0, file_size - quick.pixel_position)
    return Header(quick.values, quick.pixel_tag, quick.pixel_length, present, ())


def pixel_problem(header: Header) -> tuple[ErrorStage, str] | None:
    """Why an image's pixels cannot be laid out or are incomplete, from the header alone; None when fine."""
    rows, cols = header.number("Rows"), header.number("Columns")
    if not rows or not cols:
        return "header", "the DICOM header is damaged: it has pixel data but no Rows/Columns to lay it out."
    try:
        frames = frame_count(header)
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
            f"({uid_name(ts) or ts}) says it is not compressed: the file is damaged.",
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


def plausible_dataset(header: Header) -> bool:
    """A forced read of a file without preamble is accepted only when it yields real DICOM elements."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = header.text(keyword)
        if value and set(value) <= _UID_CHARS and "." in value:
            return True
    if re.fullmatch(r"[A-Z]{2,8}", header.text("Modality")):
        return True
    return bool(header.number("Rows") and header.number("Columns"))


def sop_class_of(header: Header) -> str:
    return header.text("SOPClassUID") or header.text("MediaStorageSOPClassUID")


def frame_count(header: Header) -> int:
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


def dicom_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a DICOM DA (``YYYYMMDD``, or ``YYYY.MM.DD`` in old ACR-NEMA files)."""
    text = text_value(value)
    if text and len(text) == 10 and text[4] == text[7] == ".":
        text = text.replace(".", "")
    if text and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or None


def int_value(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def text_value(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None
