"""Frozen value types shared by the core, the CLI and the GUI.

Coordinate conventions used everywhere in PneumoView:

* Pixel arrays are row-major numpy arrays indexed ``[row, col]`` (``[y, x]``); ``(0, 0)`` is the top-left pixel as
  displayed (after any MONOCHROME1 inversion, never mirrored).
* Boxes are in the **original image's pixel frame**: ``x, y`` is the top-left corner in pixels, ``w, h`` the size in
  pixels (the RSNA convention). Arrays of boxes are ``(N, 4)`` float32 ``[x, y, w, h]`` unless named ``xyxy``.
* Spacing is ``(row_mm, col_mm)``: the physical size of one pixel in millimetres, ``None`` when unknown.

These dataclasses cross thread boundaries, so they hold numpy arrays and plain Python values only (no torch, no Qt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units: the displayed range is ``center ± width / 2``."""

    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2.0

    @property
    def high(self) -> float:
        return self.center + self.width / 2.0


@dataclass(frozen=True, eq=False)
class XrayImage:
    """One radiograph, read from DICOM, PNG or JPEG.

    Attributes:
        modality: float32 ``(H, W)`` pixel values after the Modality LUT (rescale slope/intercept), in the file's
            own units. Not inverted for MONOCHROME1 (see ``inverted``).
        display: uint8 ``(H, W)`` display-ready pixels: VOI LUT / default window applied, MONOCHROME1 and
            Presentation LUT Shape INVERSE already inverted, so bright means dense (bone) as on a light box.
            This is also what the models consume.
        window: the default window in modality units (from the file when it has one, else the full range).
        windows: every window the file offers (the first is ``window``); empty for PNG/JPEG.
        inverted: True when low modality values are shown bright (MONOCHROME1 or Presentation LUT INVERSE).
        spacing_mm: ``(row_mm, col_mm)`` from Pixel Spacing, else Imager Pixel Spacing; ``None`` when unknown.
        view: ``"PA"``, ``"AP"``, ``"LL"`` … from View Position (or the RSNA-style Series Description), else None.
        photometric: Photometric Interpretation as read (``"MONOCHROME2"``, ``"RGB"`` …; ``"PNG"``/``"JPEG"`` sources
            report the mode the decoder gave, e.g. ``"MONOCHROME2"`` for grey).
        source: the file this image came from.
        image_id: a stable, non-identifying id: the RSNA ``patientId`` (file stem) for RSNA-style names, else a
            hash of the SOP Instance UID (DICOM) or of the file's bytes (PNG/JPEG).
        metadata: safe, non-identifying tags as strings (modality, body part, rows, columns, bits stored,
            transfer syntax, view, age, sex …).
        identifiers: patient/study identifiers (PatientID, PatientName, StudyInstanceUID, SOPInstanceUID,
            AccessionNumber …); kept apart so that nothing exports them unless the user opts in.
        frame_count: number of frames in the file; only the first is read.
        notes: sentences a user should see about how the image was read (e.g. "multi-frame: frame 1 of 15 shown").
    """

    modality: np.ndarray
    display: np.ndarray
    window: Window
    windows: tuple[Window, ...]
    inverted: bool
    spacing_mm: tuple[float, float] | None
    view: str | None
    photometric: str
    source: Path
    image_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    identifiers: Mapping[str, str] = field(default_factory=dict)
    frame_count: int = 1
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` in pixels."""
        return (int(self.display.shape[0]), int(self.display.shape[1]))

    @property
    def pixel_area_mm2(self) -> float | None:
        """Area of one pixel in mm², or None when the spacing is unknown."""
        if self.spacing_mm is None:
            return None
        return float(self.spacing_mm[0] * self.spacing_mm[1])


@dataclass(frozen=True)
class ModelRef:
    """Provenance of one model used in an analysis: id, version and the first 12 hex digits of its sha256."""

    id: str
    task: str
    version: str
    sha256_prefix: str


#: The analysis stages, in the order they run; a model's manifest ``task`` is the stage it serves.
Stage = Literal["classify", "segment", "detect"]
STAGES: tuple[Stage, ...] = ("classify", "segment", "detect")
#: The model id or ensemble id each stage uses unless the user picks another (``--classifier`` …, the viewer).
DEFAULT_SELECTION: Mapping[Stage, str] = MappingProxyType(
    {"classify": "rsna3-classifier", "segment": "seg-ensemble", "detect": "detector"}
)
#: Whether ``predict``, ``tune`` and the viewer run flip test-time augmentation (:mod:`pneumoview.inference.tta`)
#: unless the user turns it off (``--no-tta``). On by default since 1.3: cross-validated on folds 1–4 of the training
#: split it gained RSNA mAP +0.008 ± 0.005 and AUC +0.003 ± 0.002 for about 1.9× the model time (README, "Flip
#: test-time augmentation"). :class:`~pneumoview.inference.engine.Engine` itself defaults to off, so a library
#: caller gets one pass per model unless it asks.
DEFAULT_TTA = True
#: The devices a user can choose in the viewer and its settings; the command line also takes ``cuda:N`` and
#: ``mps`` (:data:`DEVICE_HELP`), which the engine resolves.
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto (default; CUDA → MPS → CPU), cpu, cuda, cuda:N or mps"


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """What the models said about one image (before any thresholds are applied).

    Attributes:
        image_id: ``XrayImage.image_id`` of the analysed image.
        image_shape: ``(H, W)`` of the original image; every coordinate below is in that frame.
        class_names: the classifier's classes (empty when no classifier ran).
        class_probs: float32 ``(C,)`` softmax probabilities, or None.
        p_opacity: probability of a pneumonia-like lung opacity from the classifier (the probability that gates
            boxes: the sum of ``gate_classes``' probabilities), or None.
        gate_classes: the classes whose probabilities make ``p_opacity`` (rsna3: Lung Opacity; acse4: covid,
            lung_opacity, pneumonia), empty when no classifier ran.
        p_opacity_fused: True when ``p_opacity`` also reads the detector's top box score (the classifier's
            ``fusion`` in the manifest, applied once the detector it was fitted with has run).
        det_boxes: float32 ``(N, 4)`` detector boxes ``[x, y, w, h]`` in original pixels (all raw detections,
            sorted by score; thresholds are applied later by post-processing), or None when detection did not run.
        det_scores: float32 ``(N,)`` detector scores, or None.
        prob_map: float32 ``(H, W)`` ensemble probability of opacity per original pixel, or None.
        member_maps: each segmentation member's probability map at that member's input resolution, by model id.
        models: provenance of every model that ran.
        device: the torch device the models ran on (``"cpu"``, ``"cuda:0"`` …).
        timings_ms: milliseconds per stage (``"classify"``, ``"segment"``, ``"detect"``, ``"total"``).
        stages_done: the stages that ran, in order.
        notes: sentences for the user (a model not installed, a fallback from CUDA to CPU …).
    """

    image_id: str
    image_shape: tuple[int, int]
    class_names: tuple[str, ...] = ()
    class_probs: np.ndarray | None = None
    p_opacity: float | None = None
    gate_classes: tuple[str, ...] = ()
    p_opacity_fused: bool = False
    det_boxes: np.ndarray | None = None
    det_scores: np.ndarray | None = None
    prob_map: np.ndarray | None = None
    member_maps: Mapping[str, np.ndarray] = field(default_factory=dict)
    models: tuple[ModelRef, ...] = ()
    device: str = "cpu"
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    stages_done: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def softmax_p_opacity(self) -> float | None:
        """The gate classes' summed softmax probability (capped at 1), before any calibration or fusion; None when
        no classifier ran or it has no gate classes."""
        if self.class_probs is None or not self.gate_classes:
            return None
        return min(1.0, sum(float(self.class_probs[self.class_names.index(c)]) for c in self.gate_classes))
