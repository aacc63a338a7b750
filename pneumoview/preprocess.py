"""Turn a display-ready radiograph into a model input, and map model outputs back to the original frame.

Pure numpy + Pillow (no torch), shared by inference and training so both see exactly the same pixels.

Conventions: input images are the uint8 ``XrayImage.display`` arrays ``(H, W)``; model inputs are float32
``(C, h, w)``; a ``FrameMap`` records how model-input pixels relate to original pixels so that boxes and probability
maps can be returned in the original image's pixel frame (see pneumoview.types).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

RESIZE_MODES = ("stretch", "center_crop")


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input.

    Attributes:
        size: ``(height, width)`` of the model input in pixels.
        channels: 1 (grey) or 3 (grey copied to three channels).
        mean, std: per-channel normalisation applied to values scaled to [0, 1]; one value per channel (a single
            value is broadcast).
        resize: ``"stretch"`` resizes the whole image to ``size`` (aspect ratio not kept; RSNA images are square);
            ``"center_crop"`` resizes the shorter side to ``round(max(size) * 299 / 224)`` and takes the central
            ``size`` crop, which reproduces seed 002's crop of 224 px from its 299-px images.
    """

    size: tuple[int, int]
    channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    resize: str = "stretch"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"input channels must be 1 or 3, got {self.channels}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"input resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if len(self.size) != 2 or min(self.size) < 16:
            raise ValueError(f"input size must be (height, width) of at least 16 px, got {self.size}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"input {name} needs 1 or {self.channels} values, got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("input std values must be positive")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        allowed = {"size", "channels", "mean", "std", "resize"}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown input keys {sorted(unknown)}; valid keys: {sorted(allowed)}")
        size = d["size"]
        if isinstance(size, int):
            size = (size, size)
        return cls(
            size=(int(size[0]), int(size[1])),
            channels=int(d.get("channels", 1)),
            mean=tuple(float(v) for v in d.get("mean", (0.5,))),
            std=tuple(float(v) for v in d.get("std", (0.25,))),
            resize=str(d.get("resize", "stretch")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }


@dataclass(frozen=True)
class FrameMap:
    """Affine map from model-input pixels to original pixels: ``x_orig = x_in * scale_x + offset_x`` (same for y).

    ``original_shape`` is ``(H, W)`` of the original image; ``input_shape`` ``(h, w)`` of the model input.
    """

    original_shape: tuple[int, int]
    input_shape: tuple[int, int]
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def boxes_to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` xyxy boxes from input pixels to original pixels, clipped to the image."""
        b = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
        b[:, [0, 2]] = b[:, [0, 2]] * self.scale_x + self.offset_x
        b[:, [1, 3]] = b[:, [1, 3]] * self.scale_y + self.offset_y
        h, w = self.original_shape
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        return b

    def map_to_original(self, prob: np.ndarray) -> np.ndarray:
        """Resample an ``(h, w)`` float map in input pixels to the original ``(H, W)`` frame (bilinear).

        Outside a centre crop the map is 0.
        """
        h_orig, w_orig = self.original_shape
        prob = np.asarray(prob, dtype=np.float32)
        # Size of the model input's footprint in the original frame.
        fw = max(1, round(self.input_shape[1] * self.scale_x))
        fh = max(1, round(self.input_shape[0] * self.scale_y))
        resized = np.asarray(
            Image.fromarray(prob, mode="F").resize((fw, fh), Image.Resampling.BILINEAR), dtype=np.float32
        )
        if (fh, fw) == (h_orig, w_orig) and self.offset_x == 0 and self.offset_y == 0:
            return resized
        out = np.zeros((h_orig, w_orig), dtype=np.float32)
        ox, oy = round(self.offset_x), round(self.offset_y)
        y0, x0 = max(0, oy), max(0, ox)
        y1, x1 = min(h_orig, oy + fh), min(w_orig, ox + fw)
        out[y0:y1, x0:x1] = resized[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return out


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 ``(H, W)`` image to ``size = (h, w)`` with Pillow's antialiased bilinear filter."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def fit_to_input(display: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, FrameMap]:
    """Resize/crop a uint8 ``(H, W)`` image as ``spec`` says; returns the uint8 ``(h, w)`` result and its map."""
    if display.ndim != 2 or display.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) image, got {display.dtype} {display.shape}")
    H, W = display.shape
    h, w = spec.size
    if spec.resize == "stretch":
        return resize_uint8(display, (h, w)), FrameMap((H, W), (h, w), W / w, H / h)
    short = round(max(h, w) * 299 / 224)
    scale = short / min(H, W)
    rh, rw = max(h, round(H * scale)), max(w, round(W * scale))
    resized = resize_uint8(display, (rh, rw))
    top, left = (rh - h) // 2, (rw - w) // 2
    crop = resized[top : top + h, left : left + w]
    sx, sy = W / rw, H / rh
    return crop, FrameMap((H, W), (h, w), sx, sy, left * sx, top * sy)


def normalise(image_u8: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 ``(h, w)`` → float32 ``(C, h, w)``: scale to [0, 1], copy to ``spec.channels``, normalise."""
    x = image_u8.astype(np.float32) * (1.0 / 255.0)
    x = np.repeat(x[None], spec.channels, axis=0)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
    return (x - mean) / std


def black(spec: InputSpec) -> tuple[float, ...]:
    """The value a black pixel (0) has after :func:`normalise`, one per input channel."""
    mean = np.broadcast_to(np.asarray(spec.mean, dtype=np.float64), (spec.channels,))
    std = np.broadcast_to(np.asarray(spec.std, dtype=np.float64), (spec.channels,))
    return tuple(float(v) for v in -mean / std)


def prepare(display: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, FrameMap]:
    """Model input ``(C, h, w)`` float32 for one display image, and the map back to the original frame."""
    fitted, frame = fit_to_input(display, spec)
    return normalise(fitted, spec), frame
