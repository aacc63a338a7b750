"""The annotated PNG: radiograph + heat map + mask outline + boxes + a footer band, drawn in numpy.

The GUI shows the same colours (:data:`BOX_SET_COLOURS`, :func:`heat_colormap`) and box labels
(:func:`box_label`), so an exported PNG looks like the screen. Text comes from Pillow's built-in font (no font files, works offline). Arrays are ``[row, col]``;
boxes are ``[x, y, w, h]`` in the original image's pixel frame (see :mod:`pneumoview.types`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from pneumoview import RESEARCH_USE_NOTICE, masks
from pneumoview.atomic import atomic_write
from pneumoview.postprocess import BoxSet, Findings

__all__ = [
    "BACKGROUND_FOOTER",
    "BOX_SETS",
    "BOX_SET_COLOURS",
    "MASK_OUTLINE_COLOUR",
    "SOURCE_COLOURS",
    "SOURCE_TAGS",
    "TEXT_COLOUR",
    "box_label",
    "footer_text_lines",
    "heat_colormap",
    "line_width_for",
    "render_annotated",
    "save_png",
]

Colour = tuple[int, int, int]

#: The one colour per box *set*, used by the legend, the canvas and the exported PNG: the detector's own boxes cyan,
#: the segmentation's own boxes orange, the final (reported) boxes yellow-green whichever model found them, and the
#: radiologists' ground-truth boxes magenta.
BOX_SET_COLOURS: Mapping[str, Colour] = {
    "detector": (0, 215, 255),
    "segmentation": (255, 140, 0),
    "fused": (190, 255, 40),
    "truth": (255, 70, 210),
}
#: The box sets the annotated PNG can draw (``show_sources``).
BOX_SETS = ("detector", "segmentation", "fused")
SOURCE_COLOURS = BOX_SET_COLOURS  # the former name
SOURCE_TAGS: Mapping[str, str] = {"detector": "det", "segmentation": "seg", "fused": "fused"}
MASK_OUTLINE_COLOUR: Colour = (255, 190, 110)
BACKGROUND_FOOTER: Colour = (24, 24, 24)
TEXT_COLOUR: Colour = (235, 235, 235)

# Polynomial fit of matplotlib's "inferno" colour map by Matt Zucker (shadertoy WlfXRN, CC0):
# rgb(t) = c0 + c1 t + … + c6 t^6, one column per channel.
_INFERNO = np.array(
    [
        [0.0002189403691192265, 0.001651004631001012, -0.01948089843709184],
        [0.1065134194856116, 0.5639564367884091, 3.932712388889277],
        [11.60249308247187, -3.972853965665698, -15.9423941062914],
        [-41.70399613139459, 17.43639888205313, 44.35414519872813],
        [77.162935699427, -33.40235894210092, -81.80730925738993],
        [-71.31942824499214, 32.62606426397723, 73.20951985803202],
        [25.13112622477341, -12.24266895238567, -23.07032500287172],
    ]
)
# Heat-map alpha rises linearly from 0 at P = 0 to fully opaque at P = 0.5, so low probabilities do not darken
# the radiograph.
_ALPHA_FULL_AT = 0.5


@functools.cache
def _heat_lut() -> np.ndarray:
    t = np.linspace(0.0, 1.0, 256)
    rgb = sum(c[None, :] * t[:, None] ** k for k, c in enumerate(_INFERNO))
    alpha = np.clip(t / _ALPHA_FULL_AT, 0.0, 1.0)
    lut = np.concatenate([np.clip(rgb, 0.0, 1.0), alpha[:, None]], axis=1)
    out = np.rint(lut * 255.0).astype(np.uint8)
    out.setflags(write=False)
    return out


def heat_colormap() -> np.ndarray:
    """``(256, 4)`` uint8 RGBA lookup table for probabilities ``0 … 1`` (index ``round(p * 255)``).

    RGB is the perceptually uniform "inferno" map; alpha ramps from 0 (index 0) to 255 at P = 0.5.
    """
    return _heat_lut().copy()


def line_width_for(width_px: int) -> int:
    """Box line width in pixels for an image ``width_px`` wide: ``max(2, round(W / 400))``."""
    return max(2, int(round(width_px / 400)))


# ------------------------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------------------------

# Pillow's built-in font covers Latin-1 letters but not these; unknown characters become "?".
_ASCII_FOR = {"—": "-", "–": "-", "−": "-", "²": "^2", "³": "^3", "×": "x", "≥": ">=", "≤": "<=", "µ": "u"}


@functools.cache
def _font(size: int):  # -> PIL.ImageFont.FreeTypeFont | ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


@functools.cache
def _glyph_ok(size: int, ch: str) -> bool:
    if ch.isascii():
        return True
    font = _font(size)
    missing = font.getmask("\U0010fffd")
    mask = font.getmask(ch)
    return not (mask.size == missing.size and bytes(mask) == bytes(missing))


def _printable(text: str, size: int) -> str:
    out = []
    for ch in text:
        if _glyph_ok(size, ch):
            out.append(ch)
        else:
            out.append(_ASCII_FOR.get(ch, "?"))
    return "".join(out)


def _text_width(text: str, size: int) -> int:
    return int(np.ceil(_font(size).getlength(_printable(text, size))))


@functools.cache
def _line_height(size: int) -> int:
    font = _font(size)
    try:
        ascent, descent = font.getmetrics()
    except AttributeError:
        return size + 2
    return int(ascent + descent)


def _text_alpha(text: str, size: int) -> np.ndarray:
    """uint8 coverage ``(line_height, width)`` of ``text`` drawn with its baseline box at the top-left."""
    text = _printable(text, size)
    w = max(1, _text_width(text, size))
    h = _line_height(size)
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).text((0, 0), text, fill=255, font=_font(size))
    return np.asarray(img, dtype=np.uint8)


def _blend(region: np.ndarray, colour: Colour, alpha: np.ndarray) -> np.ndarray:
    """``region * (1 - alpha) + colour * alpha`` as uint8; ``alpha`` is ``(h, w)`` in ``[0, 1]``."""
    a = alpha[..., None]
    out = region.astype(np.float32) * (1.0 - a) + np.asarray(colour, dtype=np.float32) * a
    return np.rint(out).astype(np.uint8)


def _draw_text(canvas: np.ndarray, text: str, x: int, y: int, size: int, colour: Colour) -> int:
    """Draw ``text`` with its top-left at ``(x, y)`` (clipped); returns the width it took."""
    alpha = _text_alpha(text, size)
    h, w = alpha.shape
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, canvas.shape[0]), min(x + w, canvas.shape[1])
    if y1 > y0 and x1 > x0:
        a = alpha[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32) / 255.0
        canvas[y0:y1, x0:x1] = _blend(canvas[y0:y1, x0:x1], colour, a)
    return w


def _wrap(text: str, size: int, max_width: int) -> list[str]:
    words = text.split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        trial = word if not current else f"{current} {word}"
        if current and _text_width(trial, size) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    lines.append(current)
    return lines


def footer_text_lines(footer_lines: Sequence[str] = ()) -> list[str]:
    """The footer's text: the given lines, then the research-use notice (always, once)."""
    lines = [str(s) for s in footer_lines if str(s).strip()]
    if RESEARCH_USE_NOTICE not in lines:
        lines.append(RESEARCH_USE_NOTICE)
    return lines


# ------------------------------------------------------------------------------------------------------------
# Overlays
# ------------------------------------------------------------------------------------------------------------


def _heat_on_grey(grey: np.ndarray, prob: np.ndarray, opacity: float) -> np.ndarray:
    """``(H, W, 3)`` uint8: the heat map blended over a grey image.

    Both inputs are 8-bit (grey level, ``round(p * 255)``), so the blend is one lookup in a 256 × 256 table
    instead of per-pixel float arithmetic; pixels with ``round(p * 255) == 0`` stay grey.
    """
    lut = _heat_lut().astype(np.float32)
    alpha = lut[:, 3] / 255.0 * float(opacity)  # (256,) per probability level
    g = np.arange(256, dtype=np.float32)[:, None, None]  # grey level
    table = g * (1.0 - alpha[None, :, None]) + lut[None, :, :3] * alpha[None, :, None]
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)
    rgba[..., :3] = np.rint(table)
    rgba[:, 0, :3] = np.arange(256, dtype=np.uint8)[:, None]
    # One uint32 per (grey, level) pair: np.take on a flat index is ~4× faster than 2-D fancy indexing.
    packed = rgba.reshape(-1, 4).view(np.uint32).ravel()
    idx = np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint32)
    flat = (grey.astype(np.uint32) << 8) | idx
    return np.take(packed, flat).view(np.uint8).reshape(*grey.shape, 4)[..., :3]


def _box_pixels(box: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Inclusive pixel bounds ``(x0, y0, x1, y1)`` of an ``xywh`` box, clipped; None when off the image."""
    x, y, w, h = (float(v) for v in box)
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = int(round(x + w)) - 1, int(round(y + h)) - 1
    if x1 < 0 or y1 < 0 or x0 >= shape[1] or y0 >= shape[0] or x1 < x0 or y1 < y0:
        return None
    return max(x0, 0), max(y0, 0), min(x1, shape[1] - 1), min(y1, shape[0] - 1)


def _draw_box(canvas: np.ndarray, bounds: tuple[int, int, int, int], lw: int, colour: Colour) -> None:
    """A rectangle outline ``lw`` pixels thick, drawn inward from the box edge."""
    x0, y0, x1, y1 = bounds
    c = np.asarray(colour, dtype=np.uint8)
    canvas[y0 : min(y0 + lw, y1 + 1), x0 : x1 + 1] = c
    canvas[max(y1 - lw + 1, y0) : y1 + 1, x0 : x1 + 1] = c
    canvas[y0 : y1 + 1, x0 : min(x0 + lw, x1 + 1)] = c
    canvas[y0 : y1 + 1, max(x1 - lw + 1, x0) : x1 + 1] = c


def _draw_label(
    canvas: np.ndarray, bounds: tuple[int, int, int, int], text: str, size: int, colour: Colour, anchor: str
) -> None:
    """Text on a filled tab in the box colour, just outside the box at ``anchor`` (``"top-left"``,
    ``"bottom-left"`` or ``"bottom-right"``), moved inside when the image edge leaves no room."""
    x0, y0, x1, y1 = bounds
    pad = max(1, size // 6)
    tw = _text_width(text, size) + 2 * pad
    th = _line_height(size)
    if anchor == "top-left":
        ty = y0 - th if y0 - th >= 0 else y0
    else:
        ty = y1 + 1 if y1 + 1 + th <= canvas.shape[0] else max(y1 + 1 - th, 0)
    tx = x1 + 1 - tw if anchor == "bottom-right" else x0
    tx = min(max(tx, 0), max(canvas.shape[1] - tw, 0))
    canvas[ty : ty + th, tx : tx + tw] = np.asarray(colour, dtype=np.uint8)
    _draw_text(canvas, text, tx + pad, ty, size, (0, 0, 0))


# Where each set's labels go, so that the labels of boxes that several sets share do not cover each other.
_LABEL_ANCHOR = {"fused": "top-left", "detector": "bottom-left", "segmentation": "bottom-right"}


def box_label(role: str, source: str, score: float) -> str:
    """A box's label on the canvas and in the PNG: final boxes (``role="fused"``) "score", plus the source tag when
    only one model found the box; per-source boxes "tag score"."""
    tag = SOURCE_TAGS.get(source, source)
    if role == "fused":
        return f"{float(score):.2f}" if source == "fused" else f"{float(score):.2f} ({tag})"
    return f"{tag} {float(score):.2f}"


def _draw_boxset(canvas: np.ndarray, boxes: BoxSet, lw: int, size: int, colour: Colour, role: str) -> None:
    """Every box of a set in the set's colour, labelled by :func:`box_label`."""
    for box, score, src in zip(boxes.boxes, boxes.scores, boxes.sources, strict=True):
        bounds = _box_pixels(box, canvas.shape[:2])
        if bounds is None:
            continue
        _draw_box(canvas, bounds, lw, colour)
        _draw_label(canvas, bounds, box_label(role, src, score), size, colour, _LABEL_ANCHOR[role])


# ------------------------------------------------------------------------------------------------------------
# Composition
# ------------------------------------------------------------------------------------------------------------


def render_annotated(
    display_uint8: np.ndarray,
    findings: Findings | None = None,
    *,
    prob_map: np.ndarray | None = None,
    mask_outline: bool = True,
    heat_opacity: float = 0.35,
    show_sources: Sequence[str] = ("detector", "segmentation", "fused"),
    footer_lines: Sequence[str] = (),
    colours: Mapping[str, Colour] | None = None,
    seg_threshold: float | None = None,
) -> np.ndarray:
    """The annotated radiograph at native resolution with a footer band below it.

    Layers, bottom to top: the windowed grey image; the heat map of ``prob_map`` (inferno, alpha ramp ×
    ``heat_opacity``, only where ``round(p * 255) > 0``); the outline of ``prob_map > seg_threshold``; the
    boxes of each requested set: ``findings.detector`` and ``findings.segmentation`` in their source colours
    with half the line width and a "tag score" label below the box (detector left, segmentation right), then
    the final ``findings.fused`` boxes in the fused colour with the full line width (``max(2, W / 400)``) and
    a "score" label above the box (plus the source tag when only one model found the box).

    Args:
        display_uint8: ``(H, W)`` uint8 display-ready pixels (``XrayImage.display``).
        findings: the post-processed result, or None for no boxes.
        prob_map: ``(H, W)`` probabilities in ``[0, 1]`` on the same grid, or None.
        mask_outline: draw the thresholded mask's outline (needs ``prob_map``).
        heat_opacity: 0 … 1, opacity of the heat map where its alpha is full.
        show_sources: which box sets to draw: any of ``"detector"``, ``"segmentation"``, ``"fused"``.
        footer_lines: text lines for the footer; the research-use notice is always appended.
        colours: RGB overrides for ``"detector"``, ``"segmentation"``, ``"fused"`` and ``"outline"``.
        seg_threshold: mask threshold for the outline; defaults to ``findings.thresholds.seg_threshold`` or
            0.5.

    Returns:
        ``(H + footer_height, W, 3)`` uint8 RGB.
    """
    img, prob = _checked_inputs(display_uint8, prob_map, heat_opacity, show_sources)
    width = img.shape[1]
    colour_for: dict[str, Colour] = dict(BOX_SET_COLOURS)
    colour_for["outline"] = MASK_OUTLINE_COLOUR
    if colours:
        colour_for.update({k: (int(v[0]), int(v[1]), int(v[2])) for k, v in colours.items()})

    lw = line_width_for(width)
    text_size = max(10, int(round(width / 64)))

    if prob is not None and heat_opacity > 0:
        canvas = _heat_on_grey(img, prob, heat_opacity)
    else:
        canvas = np.repeat(img[:, :, None], 3, axis=2)
    if prob is not None and mask_outline:
        thr = seg_threshold
        if thr is None:
            thr = findings.thresholds.seg_threshold if findings is not None else 0.5
        edge = masks.mask_outline(masks.foreground_mask(prob, thr), max(1, lw // 2))
        canvas[edge] = np.asarray(colour_for["outline"], dtype=np.uint8)
    if findings is not None:
        _draw_findings(canvas, findings, show_sources, lw, text_size, colour_for)

    footer = _footer(width, footer_text_lines(footer_lines), text_size, colour_for, show_sources, prob_map)
    return np.concatenate([canvas, footer], axis=0)


def _checked_inputs(
    display_uint8: np.ndarray, prob_map: np.ndarray | None, heat_opacity: float, show_sources: Sequence[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image and the float32 probability map (or None), after checking what render_annotated was given."""
    img = np.asarray(display_uint8)
    if img.ndim != 2 or img.dtype != np.uint8 or img.size == 0:
        raise ValueError(f"display_uint8 must be a non-empty (H, W) uint8 array, got {img.dtype} {img.shape}")
    if not 0.0 <= heat_opacity <= 1.0:
        raise ValueError(f"heat_opacity must lie in [0, 1], got {heat_opacity}")
    unknown = sorted(set(show_sources) - set(BOX_SETS))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown} in show_sources; valid: {', '.join(BOX_SETS)}")
    if prob_map is None:
        return img, None
    prob = np.asarray(prob_map, dtype=np.float32)
    if prob.shape != img.shape:
        raise ValueError(
            f"prob_map is {prob.shape} but the image is {img.shape}; resize it to the image first"
        )
    return img, prob


def _draw_findings(
    canvas: np.ndarray,
    findings: Findings,
    show_sources: Sequence[str],
    lw: int,
    text_size: int,
    colour_for: Mapping[str, Colour],
) -> None:
    """The per-model boxes (half width) under the final fused boxes (full width ``lw``), as requested."""
    per_source = {"detector": findings.detector, "segmentation": findings.segmentation}
    for name in ("detector", "segmentation"):
        bs = per_source[name]
        if name in show_sources and bs is not None:
            _draw_boxset(canvas, bs, max(1, lw // 2), text_size, colour_for[name], role=name)
    if "fused" in show_sources:
        _draw_boxset(canvas, findings.fused, lw, text_size, colour_for["fused"], role="fused")


def _footer(
    width: int,
    lines: Sequence[str],
    size: int,
    colour_for: Mapping[str, Colour],
    show_sources: Sequence[str],
    prob_map: np.ndarray | None,
) -> np.ndarray:
    pad = max(2, size // 3)
    line_h = _line_height(size) + max(1, size // 6)
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(_wrap(line, size, width - 2 * pad))
    has_legend = bool(show_sources) or prob_map is not None
    n_rows = len(wrapped) + (1 if has_legend else 0)
    band = np.empty((2 * pad + n_rows * line_h, width, 3), dtype=np.uint8)
    band[...] = np.asarray(BACKGROUND_FOOTER, dtype=np.uint8)
    y = pad
    if has_legend:
        x = pad
        for name in show_sources:
            x += _draw_text(band, name, x, y, size, colour_for[name]) + size
        if prob_map is not None and x < width - pad:
            x += _draw_text(band, "P 0", x, y, size, TEXT_COLOUR) + max(2, size // 4)
            bar_w = min(128, width - pad - x - _text_width("1", size) - 4)
            if bar_w >= 16:
                lut = _heat_lut()[:, :3]
                cols = lut[np.linspace(0, 255, bar_w).round().astype(int)]
                top, bottom = y + line_h // 5, y + line_h - line_h // 5
                band[top:bottom, x : x + bar_w] = cols[None, :, :]
                _draw_text(band, "1", x + bar_w + max(2, size // 4), y, size, TEXT_COLOUR)
        y += line_h
    for line in wrapped:
        _draw_text(band, line, pad, y, size, TEXT_COLOUR)
        y += line_h
    return band


def save_png(array: np.ndarray, path: str | Path, *, text: Mapping[str, str] | None = None) -> Path:
    """Write an RGB/grey uint8 array as PNG atomically (temp file in the same folder, then ``os.replace``).

    Args:
        array: ``(H, W, 3)`` or ``(H, W)`` uint8.
        path: destination; missing parent folders are created.
        text: optional PNG text chunks (e.g. ``{"pneumoview:thresholds": json}``) stored in the file.

    Returns:
        the destination path.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(
            f"save_png needs a (H, W), (H, W, 3) or (H, W, 4) uint8 array, got {arr.dtype} {arr.shape}"
        )
    dest = Path(path)
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(str(k), str(v))

    def write(fh) -> None:
        Image.fromarray(np.ascontiguousarray(arr)).save(fh, format="PNG", pnginfo=info, compress_level=1)

    return atomic_write(dest, write)
