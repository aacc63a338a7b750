"""Recognise DICOM, PNG and JPEG files by their first bytes, not by their names.

DICOM files from PACS exports and DICOMDIR trees often have no suffix at all, and old ACR-NEMA-style files have
neither the 128-byte preamble nor the ``DICM`` marker, so the suffix is only a hint.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

ImageKind = Literal["dicom", "png", "jpeg"]

#: Suffixes a file dialog or folder scan should offer. Files without a suffix may still be DICOM: use
#: :func:`sniff_kind` on them.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".dic", ".ima", ".png", ".jpg", ".jpeg", ".jpe")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
GZIP_SIGNATURE = b"\x1f\x8b"
ZIP_SIGNATURE = b"PK\x03\x04"

# Groups a DICOM data set without a preamble can start with: file meta (0002), directory (0004) or the
# identifying group (0008), which every composite object has.
_FIRST_GROUPS = frozenset({0x0002, 0x0004, 0x0008})
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_HEAD_BYTES = 132


def sniff_kind(path: str | Path) -> ImageKind | None:
    """Tell what kind of image file ``path`` is from its first 132 bytes.

    Returns ``"dicom"`` for a ``DICM`` marker at byte 128 or for a data set that starts directly with a plausible
    group 0002/0004/0008 element (implicit or explicit VR, little or big endian), ``"png"`` or ``"jpeg"`` for their
    signatures, and ``None`` for anything else, including unreadable paths and folders. Never raises.
    """
    try:
        p = Path(path)
        with p.open("rb") as f:
            head = f.read(_HEAD_BYTES)
        size = p.stat().st_size
    except OSError:
        return None
    return sniff_bytes(head, size)


def sniff_bytes(head: bytes, file_size: int | None = None) -> ImageKind | None:
    """Like :func:`sniff_kind` for the first bytes of a file (at least 132 of them when the file is that long)."""
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if _looks_like_bare_dicom(head, file_size if file_size is not None else len(head)):
        return "dicom"
    return None


def _looks_like_bare_dicom(head: bytes, file_size: int) -> bool:
    if len(head) < 8:
        return False
    group_le, element_le = struct.unpack_from("<HH", head)
    if group_le in _FIRST_GROUPS:
        if head[4:6] in _VRS:
            return True
        (length,) = struct.unpack_from("<I", head, 4)
        if element_le == 0x0000:  # group length elements hold one 4-byte UL
            return length == 4
        return length < file_size
    group_be, _ = struct.unpack_from(">HH", head)
    # Big endian exists only with explicit VR.
    return group_be in _FIRST_GROUPS and head[4:6] in _VRS


_ARCHIVES: tuple[tuple[int, bytes, str], ...] = (
    (0, GZIP_SIGNATURE, "gzip"),
    (0, ZIP_SIGNATURE, "zip"),
    (0, b"PK\x05\x06", "zip"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (0, b"Rar!\x1a\x07", "RAR"),
    (0, b"\x28\xb5\x2f\xfd", "Zstandard"),
    (257, b"ustar", "tar"),
)
_OTHER_FORMATS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"BM", "a BMP image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (0, b"\xff\x4f\xff\x51", "a JPEG 2000 codestream"),
    (0, b"%PDF", "a PDF document"),
)


def _match(head: bytes, table: tuple[tuple[int, bytes, str], ...]) -> str | None:
    """The kind of the first ``(offset, magic, kind)`` of ``table`` whose magic ``head`` has at its offset."""
    return next((kind for offset, magic, kind in table if head[offset : offset + len(magic)] == magic), None)


#: Bytes of a file's start that :func:`describe_unknown` looks at (a tar header's magic is at byte 257).
DESCRIBE_BYTES = 512

#: Suffixes of plain documents that sit beside images in study folders (notes, labels, licences): when such a
#: file is no image, it is a document, not a broken image.
DOCUMENT_SUFFIXES = frozenset(
    {".md", ".txt", ".csv", ".tsv", ".json", ".xml", ".html", ".pdf", ".toml", ".yaml", ".rst"}
)


#: Names of documents that often come without a suffix (``README`` in a DICOMDIR tree).
DOCUMENT_NAMES = frozenset({"README", "LICENSE", "LICENCE", "COPYING", "NOTICE", "AUTHORS", "CHANGELOG"})


def is_document(path: str | Path, head: bytes) -> bool:
    """True when ``path`` has a document suffix (or is a suffix-less ``README``, ``LICENSE`` … holding text) and
    its first bytes (``head``) are no image and no archive."""
    p = Path(path)
    if p.suffix.lower() not in DOCUMENT_SUFFIXES and not (
        p.name.upper() in DOCUMENT_NAMES and _looks_like_text(head)
    ):
        return False
    if sniff_bytes(head, len(head) + 1) is not None:
        return False
    return _match(head, _ARCHIVES) is None


def describe_unknown(head: bytes, name: str = "") -> str:
    """The one sentence, for the viewer and the command line alike, saying why a file that is none of the supported
    kinds cannot be opened. ``head`` is the start of the file (at least :data:`DESCRIBE_BYTES` bytes when it has
    them); ``name`` its file name (for hints such as "a macOS resource-fork file")."""
    if not head:
        return "empty file (0 bytes): not a DICOM, PNG or JPEG file."
    if (kind := _match(head, _ARCHIVES)) is not None:
        return f"compressed archive ({kind}): unpack it first, then open or scan the unpacked files."
    if (kind := _match(head, _OTHER_FORMATS)) is not None:
        return f"{kind}: not a DICOM, PNG or JPEG file; convert it to PNG to open it."
    if is_document(name or "x", head) and name:
        kind = Path(name).suffix.lower() or Path(name).name
        return f"a document ({kind}), not an image; it is listed and left as it is."
    hint = ""
    if name.startswith("._"):
        hint = " (a macOS resource-fork file)"
    elif name in (".DS_Store", "Thumbs.db", "desktop.ini"):
        hint = " (a hidden system file)"
    elif _looks_like_text(head):
        hint = " (it looks like text)"
    return f"not a DICOM, PNG or JPEG file{hint}."


_UID_CHARS = frozenset("0123456789.")


def plausible_bare_dataset(text: Callable[[str], str]) -> bool:
    """Whether a forced read of a file without preamble (``text(keyword)`` → the element's value as text, ``""``
    when absent) found real DICOM: a UID-shaped SOP/study/series UID, a modality code, or non-zero Rows and
    Columns. Arbitrary bytes parse as a few elements by chance; these are what chance does not give. The scan and
    the loader both use this rule, so that they call the same file the same thing."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = text(keyword)
        if value and set(value) <= _UID_CHARS and "." in value:
            return True
    if re.fullmatch(r"[A-Z]{2,8}", text("Modality")):
        return True
    return all(text(k).strip().isdigit() and int(text(k)) > 0 for k in ("Rows", "Columns"))


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a multi-byte character cut at the end of the sample
    return True


_DEFLATED = b"1.2.840.10008.1.2.1.99"
_META_LIMIT = 8 * 1024  # the file meta group; a few hundred bytes in practice


def deflated_size_exceeds(source: str | Path | BinaryIO, limit: int) -> bool:
    """True when ``source`` is a Deflated Explicit VR Little Endian DICOM file whose data set inflates to more than
    ``limit`` bytes: a decompression bomb (a few MB of zeros can inflate to many GB, and pydicom inflates the whole
    data set in memory before reading any element).

    Only the file meta is parsed; the rest is inflated in 1 MiB steps and counted, never kept. False for every
    other file and on any read error (the reader then reports the problem). A file object is read from its start
    and left at its start.
    """
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as fh:
                return _deflated_size_exceeds(fh, limit)
        try:
            return _deflated_size_exceeds(source, limit)
        finally:
            source.seek(0)
    except (OSError, ValueError, struct.error, zlib.error):
        return False


def _deflated_size_exceeds(fh: BinaryIO, limit: int) -> bool:
    fh.seek(0)
    head = fh.read(_META_LIMIT)
    pos = 132 if head[128:132] == b"DICM" else 0
    syntax = b""
    while (
        pos + 8 <= len(head) and head[pos : pos + 2] == b"\x02\x00"
    ):  # group 0002, explicit VR little endian
        vr = head[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR"):
            (length,) = struct.unpack_from("<I", head, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            value = pos + 8
        if head[pos + 2 : pos + 4] == b"\x10\x00":
            syntax = head[value : value + length].rstrip(b"\x00 ")
        pos = value + length
    if syntax != _DEFLATED or pos > len(head):
        return False
    fh.seek(pos)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    while True:
        chunk = fh.read(1 << 16)
        data = inflater.decompress(chunk, 1 << 20) if chunk else inflater.flush()
        total += len(data)
        while inflater.unconsumed_tail:
            if total > limit:
                return True
            data = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
            total += len(data)
        if total > limit:
            return True
        if not chunk or inflater.eof:
            return False
