"""The SEG of one analysed image: the binary opacity mask, optionally with the probability map.

Both are on the source image's pixel grid (``(rows, cols)``, row-major, ``[0, 0]`` the top-left pixel). Without the
probability map the SEG is BINARY with one segment; with it, FRACTIONAL (PROBABILITY, 8-bit: steps of 1/255) with
segment 1 the mask (stored exactly as 0 or 1) and segment 2 the probability map.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from pneumoview.dicom_results import content as c

__all__ = ["MASK_LABEL", "PROBABILITY_LABEL", "make_seg"]

MASK_LABEL = "Lung opacity"
PROBABILITY_LABEL = "Lung opacity probability"


def _description(
    number: int,
    label: str,
    source_sop_uid: str,
    provenance: str,
    algorithm: hd.AlgorithmIdentificationSequence,
) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=c.FINDING_CATEGORY,
        segmented_property_type=c.FINDING,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=c.derived_uid("segment", source_sop_uid, provenance, str(number)),
        tracking_id=label,
        anatomic_regions=[c.FINDING_SITE],
    )


def make_seg(
    source: Dataset,
    mask: np.ndarray,
    probability: np.ndarray | None,
    *,
    algorithm_parameters: list[str],
    provenance: str,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
) -> hd.seg.Segmentation:
    """A SEG of ``mask`` (bool ``(rows, cols)``) and, when given, ``probability`` (float ``(rows, cols)`` in
    ``[0, 1]``) on ``source``."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=c.ALGORITHM_NAME,
        family=hd.sr.CodedConcept("123109", "DCM", "Artificial Intelligence"),
        version=c.ALGORITHM_VERSION,
        parameters={p.split("=", 1)[0] + (f"{i}" if p.startswith("model=") else ""): p.split("=", 1)[1]
                    for i, p in enumerate(algorithm_parameters)},
    )  # fmt: skip
    sop = str(source.SOPInstanceUID)
    mask = np.asarray(mask, dtype=bool)
    if probability is None:
        pixels: np.ndarray = mask[None, :, :, None].astype(np.uint8)
        kind = hd.seg.SegmentationTypeValues.BINARY
        descriptions = [_description(1, MASK_LABEL, sop, provenance, algorithm)]
    else:
        prob = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
        pixels = np.stack([mask.astype(np.float32), prob], axis=-1)[None]
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
        descriptions = [
            _description(1, MASK_LABEL, sop, provenance, algorithm),
            _description(2, PROBABILITY_LABEL, sop, provenance, algorithm),
        ]
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        content_description="PneumoView lung opacity segmentation (research use only)",
        omit_empty_frames=False,
        **c.instance_identity(series_instance_uid, series_number, sop_instance_uid, instance_number),
        series_description="PneumoView segmentation (research use only)",
    )
