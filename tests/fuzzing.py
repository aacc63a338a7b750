"""Seeded mutators that turn real DICOM, PNG and JPEG files into damaged ones, for robustness tests and benchmarks.

Every mutator is a pure function ``(data, rng) -> bytes | None`` of a file's bytes and a :class:`random.Random`;
``None`` means "does not apply to this file" (e.g. no Rows element to enlarge). The same seed always gives the same
corpus (:func:`make_corpus` names each file ``<n>-<mutator>-<seed file>.<ext>``), so a failure found once can be
replayed.

DICOM mutators find their targets with :func:`dicom_elements`, a small best-effort walker over the encoded data
set (explicit or implicit VR, little or big endian, nested sequences, encapsulated pixel data). It never raises: on
bytes it does not understand it stops, and a mutator then works on the elements found so far.

Bomb builders (:func:`png_bomb`, :func:`jpeg_with_size`, :func:`dicom_with_codestream_size`,
:func:`deflated_dicom_bomb`) make small files that claim or expand to huge images, to check that readers refuse
them before allocating.

:func:`probe` scans and loads one file the way the viewer does and reports what happened; :func:`run_probes` runs it
over many files in child processes with a per-file watchdog, so that a decoder that aborts the process or never
returns is attributed to its file (``python -m tests.fuzzing LIST SECONDS`` is that child).

Nothing here imports Qt or torch; inputs are only read.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BROKEN_MUTATORS",
    "CRASH",
    "HANG",
    "MUTATORS",
    "OK",
    "REFUSED",
    "Element",
    "Mutant",
    "deflated_dicom_bomb",
    "dicom_elements",
    "dicom_with_codestream_size",
    "jpeg_with_size",
    "make_corpus",
    "mutate",
    "png_bomb",
    "probe",
    "run_probes",
]

Mutator = Callable[[bytes, random.Random], bytes | None]

_PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2); all others have a 2-byte length.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_ALL_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_TRANSFER_SYNTAXES = (
    b"1.2.840.10008.1.2",  # Implicit VR Little Endian
    b"1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    b"1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    b"1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    b"1.2.840.10008.1.2.4.50",  # JPEG Baseline
    b"1.2.840.10008.1.2.4.51",  # JPEG Extended
    b"1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    b"1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    b"1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    b"1.2.840.10008.1.2.4.91",  # JPEG 2000
    b"1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    b"1.2.840.10008.1.2.5",  # RLE Lossless
    b"1.2.840.10008.1.2.4.100",  # MPEG2 (video)
    b"1.2.3.4.5.6.7",  # not a transfer syntax
    b"",  # empty
    b"\xff\xfe garbage \x00",  # not a UID at all
)


# ----------------------------------------------------------------------------------------------------
# A best-effort DICOM element walker


@dataclass(frozen=True)
class Element:
    """One encoded element (or item / delimiter) found in a file.

    ``offset`` is where its tag starts, ``value_offset`` where its value starts, ``length`` the encoded length
    (0xFFFFFFFF = undefined), ``length_offset``/``length_size`` where that length is stored (2 or 4 bytes), ``vr``
    the explicit VR (``b""`` for implicit VR, items and delimiters), ``little`` the byte order, ``depth`` the
    sequence nesting depth (0 = top level).
    """

    tag: int
    vr: bytes
    offset: int
    value_offset: int
    length: int
    length_offset: int
    length_size: int
    little: bool
    depth: int


@dataclass(frozen=True)
class _Syntax:
    start: int  # where the main data set starts
    implicit: bool
    little: bool
    deflated: bool
    meta: list[Element]


def _syntax(data: bytes) -> _Syntax | None:
    """Where the data set starts and how it is encoded, from the preamble and file meta (or a guess)."""
    start = 132 if data[128:132] == b"DICM" else 0
    meta: list[Element] = []
    ts = b""
    pos = start
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            break
        el = _header_at(data, pos, implicit=False, little=True, depth=0)
        if el is None or el.length == _UNDEFINED or el.value_offset + el.length > len(data):
            break
        meta.append(el)
        if el.tag == 0x00020010:
            ts = bytes(data[el.value_offset : el.value_offset + el.length]).rstrip(b"\x00 ")
        pos = el.value_offset + el.length
    if start == 0 and not meta and len(data) < 8:
        return None
    if ts:
        implicit = ts == b"1.2.840.10008.1.2"
        little = ts != b"1.2.840.10008.1.2.2"
        return _Syntax(pos, implicit, little, ts == b"1.2.840.10008.1.2.1.99", meta)
    # No transfer syntax: guess from the first element (as readers do for ACR-NEMA style files).
    if pos + 6 > len(data):
        return None
    explicit = bytes(data[pos + 4 : pos + 6]) in _ALL_VRS
    little = struct.unpack_from("<H", data, pos)[0] < 0x0100 or not explicit
    return _Syntax(pos, not explicit, little, False, meta)


def _header_at(data: bytes, pos: int, *, implicit: bool, little: bool, depth: int) -> Element | None:
    order = "<" if little else ">"
    if pos + 8 > len(data):
        return None
    group, elem = struct.unpack_from(order + "HH", data, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE or implicit:
        length = struct.unpack_from(order + "I", data, pos + 4)[0]
        return Element(tag, b"", pos, pos + 8, length, pos + 4, 4, little, depth)
    vr = bytes(data[pos + 4 : pos + 6])
    if vr not in _ALL_VRS:
        return None
    if vr in _LONG_VRS:
        if pos + 12 > len(data):
            return None
        length = struct.unpack_from(order + "I", data, pos + 8)[0]
        return Element(tag, vr, pos, pos + 12, length, pos + 8, 4, little, depth)
    length = struct.unpack_from(order + "H", data, pos + 6)[0]
    return Element(tag, vr, pos, pos + 8, length, pos + 6, 2, little, depth)


def _is_sequence(el: Element, implicit: bool) -> bool:
    if el.vr == b"SQ":
        return True
    if el.tag == _PIXEL_DATA:
        return False
    if el.length == _UNDEFINED:
        return True  # implicit VR or UN with undefined length: a sequence (encoded implicit VR)
    if implicit and el.tag >> 16 != 0xFFFE:
        try:
            from pydicom.datadict import dictionary_VR

            return dictionary_VR(el.tag) == "SQ"
        except (KeyError, ValueError):
            return False
    return False


def dicom_elements(data: bytes, limit: int = 100_000) -> list[Element]:
    """The elements of a DICOM file in file order (file meta first), at every nesting depth, best effort.

    Stops silently at the first bytes that do not parse; deflated data sets yield their file meta only.
    """
    syn = _syntax(data)
    if syn is None:
        return []
    out = list(syn.meta)
    if syn.deflated:
        return out
    pos, depth, end = syn.start, 0, len(data)
    ends: list[int] = []  # end offsets of defined-length sequences/items we are inside
    in_fragments = False
    while pos < end and len(out) < limit:
        while ends and pos >= ends[-1]:
            ends.pop()
            depth = max(0, depth - 1)
        el = _header_at(data, pos, implicit=syn.implicit, little=syn.little, depth=depth)
        if el is None:
            break
        out.append(el)
        if in_fragments:
            if el.tag == _SEQ_END:
                in_fragments = False
                pos = el.value_offset
            elif el.tag == _ITEM and el.length != _UNDEFINED:
                pos = el.value_offset + el.length
            else:
                break
            continue
        if el.tag in (_ITEM_END, _SEQ_END):
            depth = max(0, depth - 1)
            pos = el.value_offset
        elif el.tag == _ITEM:
            depth += 1
            if el.length != _UNDEFINED:
                ends.append(el.value_offset + el.length)
            pos = el.value_offset
        elif el.tag == _PIXEL_DATA and el.length == _UNDEFINED:
            in_fragments = True
            pos = el.value_offset
        elif _is_sequence(el, syn.implicit):
            depth += 1
            if el.length != _UNDEFINED:
                ends.append(el.value_offset + el.length)
            pos = el.value_offset
        else:
            if el.length == _UNDEFINED:
                break
            pos = el.value_offset + el.length
    return out


def _find(elements: Sequence[Element], tag: int) -> Element | None:
    for el in elements:
        if el.tag == tag and el.depth == 0:
            return el
    return None


def _put_length(buf: bytearray, el: Element, value: int) -> None:
    order = "<" if el.little else ">"
    if el.length_size == 2:
        struct.pack_into(order + "H", buf, el.length_offset, value & 0xFFFF)
    else:
        struct.pack_into(order + "I", buf, el.length_offset, value & 0xFFFFFFFF)


def _header_end(data: bytes, elements: Sequence[Element]) -> int:
    """Where the pixel data's value starts (or the file's end): mutations before it hit the header."""
    pixel = _find(elements, _PIXEL_DATA)
    return pixel.value_offset if pixel is not None else len(data)


# ----------------------------------------------------------------------------------------------------
# Mutators


def truncate(data: bytes, rng: random.Random) -> bytes | None:
    """Cut the file at a random offset (half of the time inside the first 2 KiB, where the header is)."""
    if len(data) < 2:
        return None
    cut = rng.randrange(0, min(len(data), 2048)) if rng.random() < 0.5 else rng.randrange(0, len(data))
    return data[:cut]


def bit_flips(data: bytes, rng: random.Random) -> bytes | None:
    """Flip 1–64 random bits, half of the time only in the header (before the pixel data)."""
    if not data:
        return None
    buf = bytearray(data)
    span = len(buf)
    if rng.random() < 0.5:
        span = max(1, min(len(buf), _header_end(data, dicom_elements(data))))
    for _ in range(rng.choice((1, 2, 4, 8, 64))):
        i = rng.randrange(span)
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def pixel_bit_flips(data: bytes, rng: random.Random) -> bytes | None:
    """Flip 1–16 random bits inside the pixel data (the compressed codestream for encapsulated files)."""
    pixel = _find(dicom_elements(data), _PIXEL_DATA)
    if pixel is None or pixel.value_offset >= len(data) - 1:
        return None
    buf = bytearray(data)
    for _ in range(rng.choice((1, 2, 4, 16))):
        i = rng.randrange(pixel.value_offset, len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def overwrite_block(data: bytes, rng: random.Random) -> bytes | None:
    """Overwrite 1–256 bytes with zeros, 0xFF or random bytes."""
    if not data:
        return None
    n = rng.randint(1, min(256, len(data)))
    i = rng.randrange(0, len(data) - n + 1)
    fill = rng.choice((b"\x00" * n, b"\xff" * n, rng.randbytes(n)))
    return data[:i] + fill + data[i + n :]


def corrupt_length(data: bytes, rng: random.Random) -> bytes | None:
    """Give one element (at any depth, items and pixel data included) a wrong length."""
    elements = dicom_elements(data)
    if not elements:
        return None
    el = rng.choice(elements)
    remaining = len(data) - el.value_offset
    choices = [0, 1, el.length + 1, max(0, el.length - 1), el.length * 2 + 2, remaining + rng.randint(1, 100)]
    choices += [0xFFFF] if el.length_size == 2 else [_UNDEFINED, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000]
    buf = bytearray(data)
    _put_length(buf, el, rng.choice(choices))
    return bytes(buf)


def huge_dimensions(data: bytes, rng: random.Random) -> bytes | None:
    """Set Rows and/or Columns (US) to huge values, leaving the pixel data as it is."""
    elements = dicom_elements(data)
    targets = [el for el in elements if el.tag in (0x00280010, 0x00280011) and el.length == 2]
    if not targets:
        return None
    buf = bytearray(data)
    value = rng.choice((0xFFFF, 0xFFFE, 0x8000, 40_000, 20_000))
    for el in targets if rng.random() < 0.7 else [rng.choice(targets)]:
        struct.pack_into("<H" if el.little else ">H", buf, el.value_offset, value)
    return bytes(buf)


def zero_length_pixel_data(data: bytes, rng: random.Random) -> bytes | None:
    """Give the Pixel Data element a length of 0 and drop its value (keeping or dropping what follows)."""
    elements = dicom_elements(data)
    pixel = _find(elements, _PIXEL_DATA)
    if pixel is None:
        return None
    buf = bytearray(data[: pixel.value_offset])
    _put_length(buf, pixel, 0)
    if pixel.length == _UNDEFINED and rng.random() < 0.5:
        # An empty fragment sequence: just the delimiter.
        buf[pixel.length_offset : pixel.length_offset + 4] = b"\xff\xff\xff\xff"
        buf += struct.pack("<HHI" if pixel.little else ">HHI", 0xFFFE, 0xE0DD, 0)
    return bytes(buf)


def _sequence_bytes(depth: int, little: bool, implicit: bool, closed: bool, defined: bool) -> bytes:
    """``depth`` nested sequences, each with one item, encoded with undefined lengths or (``defined``)
    explicit lengths."""
    order = "<" if little else ">"
    tag = struct.pack(order + "HH", 0x0040, 0x0275)  # Request Attributes Sequence (SQ)
    if defined:
        body = b""
        for _ in range(depth):
            item = struct.pack(order + "HHI", 0xFFFE, 0xE000, len(body)) + body
            head = tag + (
                struct.pack(order + "I", len(item))
                if implicit
                else b"SQ\x00\x00" + struct.pack(order + "I", len(item))
            )
            body = head + item
        return body
    sq = tag + (b"" if implicit else b"SQ\x00\x00") + struct.pack(order + "I", _UNDEFINED)
    item = struct.pack(order + "HHI", 0xFFFE, 0xE000, _UNDEFINED)
    item_end = struct.pack(order + "HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0)
    opening = (sq + item) * depth
    return opening + ((item_end + seq_end) * depth if closed else b"")


def deep_sequence(data: bytes, rng: random.Random) -> bytes | None:
    """Insert 50–5,000 nested sequences before the pixel data (balanced, unterminated or with defined lengths)."""
    syn = _syntax(data)
    if syn is None or syn.deflated:
        return None
    elements = dicom_elements(data)
    top = [el for el in elements if el.depth == 0 and el.offset >= syn.start]
    if not top:
        return None
    pixel = _find(elements, _PIXEL_DATA)
    at = pixel.offset if pixel is not None else rng.choice(top).offset
    depth = rng.choice((50, 200, 990, 1_500, 5_000))
    style = rng.choice(("closed", "open", "defined"))
    blob = _sequence_bytes(depth, syn.little, syn.implicit, style != "open", style == "defined")
    return data[:at] + blob + data[at:]


def garbage_after(data: bytes, rng: random.Random) -> bytes | None:
    """Append junk after the end of the data: random bytes, zeros, another copy of the file's header."""
    n = rng.choice((1, 7, 128, 4096, 65536))
    tail = rng.choice((rng.randbytes(n), b"\x00" * n, data[: min(len(data), n)], b"DICM" * (n // 4 + 1)))
    return data + tail


def wrong_transfer_syntax(data: bytes, rng: random.Random) -> bytes | None:
    """Replace the Transfer Syntax UID in the file meta with another (wrong) one, fixing the meta group length."""
    syn = _syntax(data)
    if syn is None:
        return None
    ts = _find(syn.meta, 0x00020010)
    if ts is None:
        return None
    current = bytes(data[ts.value_offset : ts.value_offset + ts.length]).rstrip(b"\x00 ")
    new = rng.choice([t for t in _TRANSFER_SYNTAXES if t != current])
    if len(new) % 2:
        new += b"\x00"
    buf = bytearray(data[: ts.value_offset]) + new + data[ts.value_offset + ts.length :]
    _put_length(buf, ts, len(new))
    group_length = _find(syn.meta, 0x00020000)
    if group_length is not None and group_length.length == 4:
        old = struct.unpack_from("<I", data, group_length.value_offset)[0]
        struct.pack_into("<I", buf, group_length.value_offset, (old + len(new) - ts.length) & 0xFFFFFFFF)
    return bytes(buf)


def swap_vr(data: bytes, rng: random.Random) -> bytes | None:
    """Change one explicit VR into another (or into two invalid letters), so lengths are read wrongly."""
    elements = [el for el in dicom_elements(data) if el.vr]
    if not elements:
        return None
    el = rng.choice(elements)
    vr = rng.choice((b"SQ", b"UN", b"OB", b"US", b"UT", b"XX", b"\x00\x00", b"sq"))
    return data[: el.offset + 4] + vr + data[el.offset + 6 :]


def duplicate_chunk(data: bytes, rng: random.Random) -> bytes | None:
    """Insert a copy of a random chunk (16 bytes – 4 KiB) somewhere else in the file."""
    if len(data) < 32:
        return None
    n = rng.randint(16, min(4096, len(data) // 2))
    src = rng.randrange(0, len(data) - n)
    dst = rng.randrange(0, len(data))
    return data[:dst] + data[src : src + n] + data[dst:]


def huge_frame_count(data: bytes, rng: random.Random) -> bytes | None:
    """Insert or replace Number of Frames (IS) with a huge or invalid value."""
    syn = _syntax(data)
    if syn is None or syn.deflated:
        return None
    elements = [el for el in dicom_elements(data) if el.depth == 0 and el.offset >= syn.start]
    value = rng.choice((b"2147483647", b"99999999", b"-1", b"0 ", b"1e9 ", b"NaN "))
    if len(value) % 2:
        value += b" "
    order = "<" if syn.little else ">"
    head = struct.pack(order + "HH", 0x0028, 0x0008)
    head += (
        struct.pack(order + "I", len(value)) if syn.implicit else b"IS" + struct.pack(order + "H", len(value))
    )
    existing = _find(elements, 0x00280008)
    if existing is not None:
        return data[: existing.offset] + head + value + data[existing.value_offset + existing.length :]
    after = [el for el in elements if el.tag > 0x00280008]
    if not after:
        return None
    at = after[0].offset
    return data[:at] + head + value + data[at:]


#: Every mutator by name; :func:`mutate` picks one at random.
MUTATORS: dict[str, Mutator] = {
    "truncate": truncate,
    "bitflip": bit_flips,
    "pixel-bitflip": pixel_bit_flips,
    "overwrite": overwrite_block,
    "length": corrupt_length,
    "huge-dims": huge_dimensions,
    "zero-pixels": zero_length_pixel_data,
    "deep-seq": deep_sequence,
    "garbage-after": garbage_after,
    "wrong-ts": wrong_transfer_syntax,
    "swap-vr": swap_vr,
    "duplicate": duplicate_chunk,
    "frames": huge_frame_count,
}

#: Mutators whose output can never be read as an image (used where a test must know which files fail):
#: a DICOM image cut inside its header, an image whose pixel data is empty, a header claiming 65535×65535 pixels.
BROKEN_MUTATORS: dict[str, Mutator] = {
    "truncate-header": lambda data, rng: data[: rng.randrange(0, 128)] if len(data) > 256 else None,
    "zero-pixels": zero_length_pixel_data,
    "huge-dims": lambda data, rng: _all_dims(data, 0xFFFF),
}


def _all_dims(data: bytes, value: int) -> bytes | None:
    elements = [el for el in dicom_elements(data) if el.tag in (0x00280010, 0x00280011) and el.length == 2]
    if len(elements) < 2:
        return None
    buf = bytearray(data)
    for el in elements:
        struct.pack_into("<H" if el.little else ">H", buf, el.value_offset, value)
    return bytes(buf)


def mutate(
    data: bytes,
    rng: random.Random,
    names: Sequence[str] | None = None,
    table: dict[str, Mutator] | None = None,
) -> tuple[str, bytes]:
    """Apply one randomly chosen applicable mutator; returns ``(name, mutated bytes)``.

    Falls back to truncation when no chosen mutator applies (every file of 2 bytes or more can be truncated).
    """
    table = table or MUTATORS
    pool = list(names or table)
    rng.shuffle(pool)
    for name in pool:
        out = table[name](data, rng)
        if out is not None and out != data:
            return name, out
    return "truncate", data[: len(data) // 2]


# ----------------------------------------------------------------------------------------------------
# Corpora


@dataclass(frozen=True)
class Mutant:
    """A mutated file: where it was written, the seed file it came from and the mutator that made it."""

    path: Path
    source: Path
    mutator: str


def make_corpus(
    seeds: Sequence[Path],
    out_dir: Path,
    count: int,
    *,
    seed: int = 0,
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    table: dict[str, Mutator] | None = None,
) -> list[Mutant]:
    """Write ``count`` mutants of ``seeds`` into ``out_dir`` (created; seed files are only read).

    Each mutant is named ``<n>-<mutator>-<seed file stem>.<ext>``; ``weights`` biases which seed files are picked
    (e.g. to keep large files rare). The same arguments always give the same bytes.
    """
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    blobs = {p: p.read_bytes() for p in seeds}
    mutants = []
    for n in range(count):
        src = rng.choices(list(seeds), weights=weights)[0]
        name, data = mutate(blobs[src], rng, names, table)
        ext = src.suffix.lower() if src.suffix.lower() in (".png", ".jpg", ".jpeg") else ".dcm"
        path = out_dir / f"{n:05d}-{name}-{src.stem[:24]}{ext}"
        path.write_bytes(data)
        mutants.append(Mutant(path, src, name))
    return mutants


# ----------------------------------------------------------------------------------------------------
# Bombs


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int, *, complete: bool = True) -> bytes:
    """An 8-bit grey PNG of ``width`` × ``height`` black pixels: a genuine decompression bomb (the zlib stream of
    ``complete`` rows is ~1/1000 of the decoded size). With ``complete=False`` only the header and one row are
    written."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    parts = []
    rows = height if complete else 1
    block = row * max(1, (1 << 22) // len(row))
    per_block = len(block) // len(row)
    done = 0
    while done < rows:
        k = min(per_block, rows - done)
        parts.append(comp.compress(block if k == per_block else row * k))
        done += k
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG (8×8 grey) whose frame header (SOF0) claims ``width`` × ``height`` pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _j2k_with_size(width: int, height: int) -> bytes:
    """A small real JPEG 2000 codestream (64×64) whose SIZ marker claims ``width`` × ``height`` pixels and one
    tile covering it."""
    import numpy as np
    import openjpeg

    data = bytearray(openjpeg.encode(np.zeros((64, 64), np.uint8)))
    siz = data.find(b"\xff\x51")
    # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz ...
    struct.pack_into(">IIIIII", data, siz + 6, width, height, 0, 0, width, height)
    return bytes(data)


def dicom_with_codestream_size(
    width: int, height: int, codec: str = "j2k", rows: int = 64, cols: int = 64
) -> bytes:
    """A DICOM CR image whose header says ``cols`` × ``rows`` but whose compressed frame (``"j2k"`` or
    ``"jpeg"``) claims ``width`` × ``height``: a decoder that trusts the codestream allocates the larger size."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000, JPEGBaseline8Bit

    frame = _j2k_with_size(width, height) if codec == "j2k" else jpeg_with_size(width, height)
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = "2.25.1"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEG2000 if codec == "j2k" else JPEGBaseline8Bit
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def deflated_dicom_bomb(inflated_bytes: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM image whose data set inflates to about ``inflated_bytes`` (a
    private OB element of zeros); the file itself is ~1/1000 of that."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = "2.25.2"
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    small = Dataset()
    small.SOPClassUID = meta.MediaStorageSOPClassUID
    small.SOPInstanceUID = "2.25.2"
    small.Modality = "CR"
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, small)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [comp.compress(body.getvalue())]
    size = inflated_bytes - inflated_bytes % 2
    out.append(comp.compress(struct.pack("<HH", 0x0009, 0x1010) + b"OB\x00\x00" + struct.pack("<I", size)))
    chunk = b"\x00" * (1 << 22)
    left = size
    while left > 0:
        out.append(comp.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    out.append(comp.flush())
    return head.getvalue() + b"".join(out)


# ----------------------------------------------------------------------------------------------------
# Probing files in isolated worker processes

#: Outcomes of :func:`probe`: the file loaded, failed with an ImageReadError, or failed some other way.
OK, REFUSED, CRASH, HANG = "ok", "refused", "crash", "hang"


def probe(path: str | Path) -> dict[str, object]:
    """Scan and load one file the way the viewer does and report what happened (never raises).

    Returns a JSON-ready dict: ``path``; ``scan`` (``"entry"``, ``"error"`` or ``"crash"``), ``scan_message``,
    ``scan_s``; ``outcome`` (:data:`OK`, :data:`REFUSED` for an ImageReadError, :data:`CRASH` for any other
    exception), ``error_type``, ``stage``, ``message``, ``shape`` and ``load_s`` (seconds).
    """
    import time
    import traceback

    from pneumoview.errors import ImageReadError
    from pneumoview.imaging import load_image
    from pneumoview.study_index import ScanError, scan

    p = Path(path)
    out: dict[str, object] = {"path": str(p)}
    t0 = time.perf_counter()
    try:
        items = list(scan(p))
        errors = [i for i in items if isinstance(i, ScanError)]
        out["scan"] = "error" if errors else "entry"
        out["scan_message"] = errors[0].message if errors else ""
        out["scan_items"] = len(items)
    except BaseException as exc:  # noqa: BLE001 - reporting crashes is the point
        out["scan"] = CRASH
        out["scan_message"] = "".join(traceback.format_exception(exc))[-2000:]
    out["scan_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        image = load_image(p)
        out.update(outcome=OK, shape=list(image.shape))
    except ImageReadError as exc:
        out.update(outcome=REFUSED, error_type=type(exc).__name__, stage=exc.stage, message=exc.message)
    except BaseException as exc:  # noqa: BLE001
        out.update(
            outcome=CRASH,
            error_type=type(exc).__name__,
            message="".join(traceback.format_exception(exc))[-2000:],
        )
    out["load_s"] = time.perf_counter() - t0
    return out


def _worker(list_file: str, watchdog_s: float) -> None:
    """``python -m tests.fuzzing LIST WATCHDOG``: probe each path in LIST, one JSON line per file on stdout.

    A file that takes longer than WATCHDOG seconds ends the process (faulthandler's watchdog thread works even
    when a decoder holds the GIL); the supervisor then reports it as a hang.
    """
    import faulthandler
    import json
    import sys
    import warnings

    warnings.simplefilter("ignore")
    for line in Path(list_file).read_text(encoding="utf-8").splitlines():
        faulthandler.dump_traceback_later(watchdog_s, exit=True)
        result = probe(line)
        faulthandler.cancel_dump_traceback_later()
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def run_probes(
    paths: Sequence[Path], *, workers: int = 2, watchdog_s: float = 30.0, python: str | None = None
) -> list[dict[str, object]]:
    """:func:`probe` every path in ``workers`` child processes; a file that kills its worker (segfault, abort,
    out of memory) is reported with outcome :data:`CRASH`, one that trips the watchdog with :data:`HANG`, and the
    worker is restarted on the files after it. Results are in the order of ``paths``."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    import threading

    exe = python or sys.executable
    # The workers import tests.fuzzing (and pneumoview) from this checkout, pneumoview installed or not.
    repo_root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])),
    }
    results: dict[int, dict[str, object]] = {}
    lock = threading.Lock()

    def supervise(indices: list[int]) -> None:
        todo = list(indices)
        while todo:
            with tempfile.TemporaryDirectory() as tmp:
                listing = Path(tmp) / "files.txt"
                listing.write_text("\n".join(str(paths[i]) for i in todo) + "\n", encoding="utf-8")
                errfile = Path(tmp) / "stderr.txt"
                with open(errfile, "wb") as err:
                    proc = subprocess.Popen(
                        [exe, "-m", "tests.fuzzing", str(listing), str(watchdog_s)],
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        env=env,
                    )
                    assert proc.stdout is not None
                    done = 0
                    for line in proc.stdout:
                        with lock:
                            results[todo[done]] = json.loads(line)
                        done += 1
                    rc = proc.wait()
                stderr = errfile.read_text(encoding="utf-8", errors="replace")
            if done >= len(todo):
                return
            culprit = todo[done]
            hung = "Timeout (" in stderr
            with lock:
                results[culprit] = {
                    "path": str(paths[culprit]),
                    "outcome": HANG if hung else CRASH,
                    "error_type": "watchdog" if hung else f"exit status {rc}",
                    "message": stderr[-2000:],
                    "load_s": watchdog_s if hung else None,
                }
            todo = todo[done + 1 :]

    threads = [
        threading.Thread(target=supervise, args=(list(range(k, len(paths), workers)),))
        for k in range(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[i] for i in range(len(paths))]


if __name__ == "__main__":
    import sys

    _worker(sys.argv[1], float(sys.argv[2]))
