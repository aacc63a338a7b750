"""Helpers for the DICOM results tests: dciodvfy (Debian's dicom3tools) and deterministic model outputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pneumoview.types import AnalysisResult, ModelRef, XrayImage

CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
MODELS = (
    ModelRef("rsna3-classifier", "classify", "1.0.0", "ca60ba8c0123"),
    ModelRef("seg-ensemble", "segment", "1.0.0", "f5682f807fcd"),
    ModelRef("detector", "detect", "1.0.0", "f20e040d4567"),
)


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path`` (the test fails when dciodvfy is not installed)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail(
            "dciodvfy is missing: install Debian's dicom3tools (apt-get install dicom3tools)", pytrace=False
        )
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def model_outputs(image: XrayImage) -> AnalysisResult:
    """Deterministic model outputs for a real image, in its own pixel frame: a smooth opacity blob on the left lung
    (peak 0.9), a detector box on the right, classifier probabilities 0.2 / 0.3 / 0.5."""
    rows, cols = image.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    blob = np.exp(-(((yy - rows * 0.45) / (rows * 0.12)) ** 2 + ((xx - cols * 0.3) / (cols * 0.1)) ** 2))
    prob = (0.9 * blob).astype(np.float32)
    det = np.array([[cols * 0.58, rows * 0.3, cols * 0.2, rows * 0.3]], np.float32)
    return AnalysisResult(
        image_id=image.image_id,
        image_shape=(rows, cols),
        class_names=CLASSES,
        class_probs=np.array([0.2, 0.3, 0.5], np.float32),
        p_opacity=0.5,
        det_boxes=det,
        det_scores=np.array([0.93], np.float32),
        prob_map=prob,
        models=MODELS,
    )
