"""Masks from a segmentation probability map, and their outlines: the one rule for the viewer, the annotated PNG
and the boxes drawn around segmented regions. Qt-free.

The mask is ``prob > threshold`` (strictly greater: a pixel at exactly the threshold is background, so a threshold
of 1.0 gives an empty mask). Arrays are ``(H, W)`` on the image's pixel grid, row ``y`` then column ``x``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["foreground_mask", "mask_outline"]


def foreground_mask(prob_map: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean ``(H, W)``: the pixels whose probability is strictly above ``threshold``."""
    return np.asarray(prob_map) > threshold


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Boolean ``(H, W)``: the pixels of ``mask`` within ``thickness`` 4-neighbour steps of its border.

    Pixels on the image's edge count as next to the outside, so a mask touching the edge is outlined there too.
    """
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    for _ in range(max(1, int(thickness))):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return m & ~inner
