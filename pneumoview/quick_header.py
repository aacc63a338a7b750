"""A fast, strict reader of a few top-level DICOM header elements, for the folder scan.

``pydicom.filereader.read_partial`` builds a data element object for every element of a header and converts
each selected value through several layers; on a folder of small files that costs more than reading the bytes.
:func:`read_quick_header` walks the elements of an ordinary file with ``struct`` and seeks past every value it
does not need, so the scan reads each file once, with only the tags it needs.

It is deliberately strict: it only handles the common case (a 128-byte preamble and ``DICM``, an explicit VR
little endian file meta group, an implicit or explicit VR little endian data set, ASCII values that pydicom would
accept without a warning, no DICOMDIR and no result references). For anything else it returns ``None`` and the
caller reads the file with pydicom, so every reader warning, every odd encoding and every damaged file is still
handled (and reported) the way pydicom does. Offsets are byte positions from the start of the file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.valuerep import PersonName, validate_value

__all__ = ["QuickHeader", "read_quick_header"]

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
# Little-endian syntaxes whose data set is explicit VR: the native one and every encapsulated (compressed) one.
# Big endian (…1.2.2) and deflated (…1.2.1.99) are left to pydicom.
_NOT_PLAIN = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
_ENCAPSULATED = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")  # JPEG family, RLE
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ALL_VRS = _LONG_VRS | frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI"})
_INT_VRS = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_META_KEYWORDS = {
    0x00020002: "MediaStorageSOPClassUID",
    0x00020003: "MediaStorageSOPInstanceUID",
    0x00020010: "TransferSyntaxUID",
}
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_SPECIFIC_CHARACTER_SET = 0x00080005
_MAX_DEPTH = 16  # nested undefined-length sequences deeper than this go to pydicom


class _NeedsPydicom(Exception):
    """The file is not the plain case this reader handles."""


@dataclass(frozen=True)
class QuickHeader:
    """The selected values and where the pixel element is.

    ``values`` maps keywords to values as pydicom would give them for single-valued elements (``str`` for text,
    ``int`` for binary integers, ``PersonName`` for PN); the file meta keywords TransferSyntaxUID,
    MediaStorageSOPClassUID and MediaStorageSOPInstanceUID are included when present. ``pixel_tag`` is the first
    Pixel Data / Float / Double Float Pixel Data tag (``None`` when there is none), ``pixel_length`` its value
    length in bytes (``0xFFFFFFFF`` for encapsulated data) and ``pixel_position`` the offset of its value.
    """

    values: dict[str, Any]
    pixel_tag: int | None
    pixel_length: int | None
    pixel_position: int | None


def read_quick_header(
    fh: BinaryIO,
    head: bytes,
    wanted: Mapping[int, str],
    *,
    stop_tags: frozenset[int],
    give_up_tags: frozenset[int],
) -> QuickHeader | None:
    """Read the ``wanted`` elements (tag → keyword) of the file ``fh``, whose first bytes are ``head``.

    Stops at the first tag in ``stop_tags`` (the pixel elements). Returns ``None`` (and reads nothing more) when
    the file needs pydicom: no preamble, an unusual transfer syntax, a value that is not plain ASCII or that
    pydicom would warn about, a multi-valued selected element, a tag in ``give_up_tags`` (elements whose value
    needs pydicom, such as sequences), a group 0004 (DICOMDIR) element, or any irregularity at all.
    The position of ``fh`` is undefined afterwards.
    """
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    try:
        return _read(fh, wanted, stop_tags, give_up_tags)
    except (_NeedsPydicom, struct.error, ValueError, UnicodeDecodeError, OverflowError):
        return None


def _read(
    fh: BinaryIO, wanted: Mapping[int, str], stop_tags: frozenset[int], give_up_tags: frozenset[int]
) -> QuickHeader:
    values = _read_meta(fh)
    syntax = values.get("TransferSyntaxUID")
    if not syntax or syntax in _NOT_PLAIN or values.get("MediaStorageSOPClassUID") == _DICOMDIR_CLASS:
        raise _NeedsPydicom
    implicit = syntax == _IMPLICIT_LE
    if not (implicit or syntax == _EXPLICIT_LE or syntax.startswith(_ENCAPSULATED)):
        raise _NeedsPydicom  # a private or unknown syntax: pydicom decides how to read it
    return _read_dataset(fh, implicit, values, wanted, stop_tags, give_up_tags)


def _read_meta(fh: BinaryIO) -> dict[str, Any]:
    """The file meta keywords (explicit VR little endian, all group 0002); ``fh`` is left at the data set."""
    fh.seek(132)
    values: dict[str, Any] = {}
    while True:
        start = fh.tell()
        raw = fh.read(8)
        if len(raw) < 8:
            raise _NeedsPydicom
        if raw[:2] != b"\x02\x00":
            fh.seek(start)
            return values
        tag, _, length = _explicit(fh, raw)
        if length == _UNDEFINED:
            raise _NeedsPydicom
        data = _read_exact(fh, length)
        keyword = _META_KEYWORDS.get(tag)
        if keyword is not None:
            values[keyword] = _text_value("UI", data)


def _element_header(fh: BinaryIO, raw: bytes, implicit: bool) -> tuple[int, str | None, int]:
    """``(tag, VR or None when implicit, value length)`` of the element whose first 8 bytes are ``raw``."""
    if implicit:
        group, element, length = struct.unpack("<HHI", raw)
        return group << 16 | element, None, length
    return _explicit(fh, raw)


def _read_dataset(
    fh: BinaryIO,
    implicit: bool,
    values: dict[str, Any],
    wanted: Mapping[int, str],
    stop_tags: frozenset[int],
    give_up_tags: frozenset[int],
) -> QuickHeader:
    """Add the ``wanted`` elements of the data set to ``values``, up to the first tag of ``stop_tags``."""
    while True:
        raw = fh.read(8)
        if not raw:
            return QuickHeader(values, None, None, None)
        if len(raw) < 8:
            raise _NeedsPydicom  # a file cut inside an element header: let pydicom report it
        tag, vr, length = _element_header(fh, raw, implicit)
        if tag in stop_tags:
            return QuickHeader(values, tag, length, fh.tell())
        if tag in give_up_tags or tag >> 16 == 0x0004 or tag >> 16 == 0x0002:
            raise _NeedsPydicom
        if length == _UNDEFINED:
            if vr is not None and vr != "SQ":
                raise _NeedsPydicom  # UN of undefined length is implicit VR inside: rare, pydicom knows it
            _skip_sequence(fh, implicit, 0)
            continue
        keyword = wanted.get(tag)
        if keyword is None:
            fh.seek(length, 1)
            continue
        data = _read_exact(fh, length)
        if tag == _SPECIFIC_CHARACTER_SET:
            continue  # the values are checked to be ASCII, which every character set starts with
        values[keyword] = _value(vr or dictionary_VR(tag), data)


def _explicit(fh: BinaryIO, raw: bytes) -> tuple[int, str, int]:
    group, element = struct.unpack_from("<HH", raw)
    vr = raw[4:6]
    if vr not in _ALL_VRS:
        raise _NeedsPydicom  # pydicom would warn and switch to implicit VR
    if vr in _LONG_VRS:
        if raw[6:8] != b"\x00\x00":
            raise _NeedsPydicom
        extra = fh.read(4)
        if len(extra) < 4:
            raise _NeedsPydicom
        (length,) = struct.unpack("<I", extra)
    else:
        (length,) = struct.unpack_from("<H", raw, 6)
    return group << 16 | element, vr.decode("ascii"), length


def _skip_sequence(fh: BinaryIO, implicit: bool, depth: int) -> None:
    """Skip an undefined-length sequence's items up to and including its delimiter."""
    if depth > _MAX_DEPTH:
        raise _NeedsPydicom
    while True:
        raw = _read_exact(fh, 8)
        group, element, length = struct.unpack("<HHI", raw)
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise _NeedsPydicom
        if length != _UNDEFINED:
            fh.seek(length, 1)
            continue
        _skip_item(fh, implicit, depth + 1)


def _skip_item(fh: BinaryIO, implicit: bool, depth: int) -> None:
    """Skip the elements of an undefined-length item up to and including its delimiter."""
    while True:
        raw = _read_exact(fh, 8)
        group, element = struct.unpack_from("<HH", raw)
        tag = group << 16 | element
        if tag == _ITEM_END:
            return
        if implicit:
            (length,) = struct.unpack_from("<I", raw, 4)
            vr = None
        else:
            tag, vr, length = _explicit(fh, raw)
        if length == _UNDEFINED:
            if vr is not None and vr != "SQ":
                raise _NeedsPydicom
            _skip_sequence(fh, implicit, depth)
        else:
            fh.seek(length, 1)


def _read_exact(fh: BinaryIO, length: int) -> bytes:
    data = fh.read(length)
    if len(data) != length:
        raise _NeedsPydicom  # truncated: pydicom words the problem
    return data


def _value(vr: str, data: bytes) -> Any:
    if vr in _INT_VRS:
        fmt = _INT_VRS[vr]
        size = struct.calcsize(fmt)
        if len(data) == 0:
            return None
        if len(data) != size:
            raise _NeedsPydicom  # multi-valued or damaged
        return struct.unpack(fmt, data)[0]
    if vr == "PN":
        text = _ascii(data).rstrip(" \x00")
        if "\\" in text:
            raise _NeedsPydicom
        _validate(vr, text)
        return PersonName(text)
    if vr in _TEXT_VRS:
        return _text_value(vr, data)
    raise _NeedsPydicom


def _text_value(vr: str, data: bytes) -> str:
    text = _ascii(data)
    text = text.rstrip("\x00").rstrip(" ") if vr == "UI" else text.strip(" \x00")
    if "\\" in text:
        raise _NeedsPydicom
    _validate(vr, text)
    return text


def _ascii(data: bytes) -> str:
    text = data.decode("ascii")  # UnicodeDecodeError: other character sets go to pydicom
    if "\x1b" in text:  # ISO 2022 escape sequences
        raise _NeedsPydicom
    return text


# (VR, value) pairs pydicom accepts: a folder repeats the same UIDs, names and codes in every file.
_VALID: set[tuple[str, str]] = set()
_VALID_MAX = 8192


def _validate(vr: str, value: str) -> None:
    """Give up where pydicom's own validation would warn, so the warning reaches the user through pydicom."""
    if (vr, value) in _VALID or config.settings.reading_validation_mode == config.IGNORE:
        return
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, KeyError):
        raise _NeedsPydicom from None
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID.add((vr, value))
