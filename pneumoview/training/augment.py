"""On-the-fly augmentation of uint8 model-input images, applied identically to the image, its mask and its boxes.

One random geometric transform (horizontal flip, rotation ±7°, scale 0.9–1.1, translation) is drawn per sample and
applied to the image (bilinear), the mask (nearest) and the boxes; then brightness/contrast change the image only.
Coordinates: continuous pixel coordinates where the image spans ``[0, W] × [0, H]`` (pixel ``(i, j)`` has its centre
at ``(j + 0.5, i + 0.5)``, as Pillow's affine transform uses); boxes are ``(N, 4)`` ``xyxy`` in input pixels.

A rotated box is replaced by the bounding box of its rotated inscribed ellipse, which keeps the box size under small
rotations instead of inflating it as the bounding box of the rotated corners would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths. ``hflip`` and ``p_affine`` are probabilities; ``rotate_deg`` the maximum rotation;
    ``scale`` the zoom range; ``translate`` the maximum shift as a fraction of width/height; ``brightness`` the
    maximum additive change as a fraction of 255; ``contrast`` the maximum relative contrast change."""

    hflip: float = 0.5
    rotate_deg: float = 7.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.06
    brightness: float = 0.1
    contrast: float = 0.15
    p_affine: float = 0.8

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(hflip=0.0, rotate_deg=0.0, scale=(1.0, 1.0), translate=0.0, brightness=0.0, contrast=0.0)

    @classmethod
    def flip_only(cls) -> AugmentConfig:
        """Seed 002's augmentation: a horizontal flip half of the time."""
        return cls(hflip=0.5, rotate_deg=0.0, scale=(1.0, 1.0), translate=0.0, brightness=0.0, contrast=0.0)

    @classmethod
    def named(cls, name: str) -> AugmentConfig:
        """``"full"`` (the default strengths), ``"flip"`` or ``"none"``."""
        table = {"full": cls(), "flip": cls.flip_only(), "none": cls.off()}
        if name not in table:
            raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(table)}")
        return table[name]

    @property
    def enabled(self) -> bool:
        return self != AugmentConfig.off()


def random_affine(rng: np.random.Generator, cfg: AugmentConfig, size: tuple[int, int]) -> np.ndarray:
    """A forward ``2×3`` affine matrix (input → output pixel coordinates) drawn from ``cfg`` for ``size=(h, w)``."""
    h, w = size
    flip = rng.random() < cfg.hflip
    use_affine = rng.random() < cfg.p_affine
    angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if use_affine else 0.0
    s = rng.uniform(cfg.scale[0], cfg.scale[1]) if use_affine else 1.0
    tx = rng.uniform(-cfg.translate, cfg.translate) * w if use_affine else 0.0
    ty = rng.uniform(-cfg.translate, cfg.translate) * h if use_affine else 0.0
    cx, cy = w / 2.0, h / 2.0
    cos, sin = math.cos(angle) * s, math.sin(angle) * s
    linear = np.array([[cos, -sin], [sin, cos]])
    if flip:
        linear = linear @ np.array([[-1.0, 0.0], [0.0, 1.0]])
    offset = np.array([cx + tx, cy + ty]) - linear @ np.array([cx, cy])
    return np.concatenate([linear, offset[:, None]], axis=1)


def _warp(array: np.ndarray, matrix: np.ndarray, resample: int) -> np.ndarray:
    if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]]):
        return array
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    h, w = array.shape
    out = Image.fromarray(array).transform(
        (w, h), Image.Transform.AFFINE, data=tuple(inverse.reshape(-1)), resample=resample, fillcolor=0
    )
    return np.asarray(out)


def transform_boxes(boxes_xyxy: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boxes through ``matrix`` (ellipse rule), clipped to ``size=(h, w)``; boxes left under 2 px are dropped."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros((0, 4), np.float32)
    centre = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, np.ones(len(b))], axis=1)
    half_w, half_h = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
    c = centre @ matrix.T
    lin = matrix[:, :2]
    new_hw = np.sqrt((lin[0, 0] * half_w) ** 2 + (lin[0, 1] * half_h) ** 2)
    new_hh = np.sqrt((lin[1, 0] * half_w) ** 2 + (lin[1, 1] * half_h) ** 2)
    h, w = size
    out = np.stack(
        [
            (c[:, 0] - new_hw).clip(0, w),
            (c[:, 1] - new_hh).clip(0, h),
            (c[:, 0] + new_hw).clip(0, w),
            (c[:, 1] + new_hh).clip(0, h),
        ],
        axis=1,
    )
    keep = (out[:, 2] - out[:, 0] >= 2) & (out[:, 3] - out[:, 1] >= 2)
    return out[keep].astype(np.float32)


def adjust_intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random contrast (about the image mean) and brightness on a uint8 image."""
    if cfg.brightness <= 0 and cfg.contrast <= 0:
        return image
    c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    b = rng.uniform(-cfg.brightness, cfg.brightness) * 255.0
    x = image.astype(np.float32)
    x = (x - x.mean()) * c + x.mean() + b
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment(
    image: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    mask: np.ndarray | None = None,
    boxes_xyxy: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Augment a uint8 ``(h, w)`` image, and the same way its uint8 mask and ``xyxy`` boxes (either may be None)."""
    if not cfg.enabled:
        return image, mask, boxes_xyxy
    size = (int(image.shape[0]), int(image.shape[1]))
    matrix = random_affine(rng, cfg, size)
    image = _warp(image, matrix, Image.Resampling.BILINEAR)
    if mask is not None:
        mask = _warp(mask, matrix, Image.Resampling.NEAREST)
    if boxes_xyxy is not None:
        boxes_xyxy = transform_boxes(boxes_xyxy, matrix, size)
    image = adjust_intensity(image, rng, cfg)
    return image, mask, boxes_xyxy


def box_mask(boxes_xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(h, w)`` mask with 1 inside the boxes (pixels whose centre lies in a box), as seed 001's targets."""
    h, w = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for x1, y1, x2, y2 in np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4):
        c0, c1 = max(0, round(x1)), min(w, round(x2))
        r0, r1 = max(0, round(y1)), min(h, round(y2))
        mask[r0:r1, c0:c1] = 1
    return mask
