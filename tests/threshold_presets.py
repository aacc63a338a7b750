"""Threshold presets for tests (torch-free)."""

from __future__ import annotations

from pneumoview.thresholds import Thresholds

# The defaults before 1.2: detector and segmentation boxes fused by WBF, shrink 0.875, detector score ≥ 0.5, gate
# 0.3. Tests of fusion, shrinking and the reader's review of several boxes use it; the shipped defaults now report
# the detector's boxes only.
BOTH_SOURCES = Thresholds(shrink=0.875, det_score=0.5, fusion="wbf", gate=0.3)
