"""The GSPS of one analysed image: the final boxes as rectangles with their confidences, for older viewers.

Graphics are in PIXEL units on the source image: ``(column, row)`` with ``(0, 0)`` the top-left corner of the
top-left pixel. The presentation state carries the window PneumoView shows (``XrayImage.window``, modality units)
and inverts MONOCHROME1 sources, so a viewer that applies it shows the image as PneumoView does.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from pneumoview.dicom_results import content as c
from pneumoview.dicom_results.sr import box_polyline
from pneumoview.postprocess import Findings
from pneumoview.types import XrayImage

__all__ = ["box_label", "make_gsps"]

LAYER = "PNEUMOVIEW"


def box_label(score: float, source: str) -> str:
    """The text drawn by a box: ``"opacity 0.87 (fused)"``."""
    return f"opacity {score:.2f} ({source})"


def make_gsps(
    source: Dataset,
    image: XrayImage,
    findings: Findings,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A GSPS with one rectangle (closed 5-point polyline) and one label per ``findings.fused`` box."""
    layer = hd.pr.GraphicLayer(
        layer_name=LAYER, order=1, description="PneumoView findings (research use only)"
    )
    graphics = []
    texts = []
    fused = findings.fused
    for box, score, src in zip(fused.xyxy(), fused.scores, fused.sources, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        graphics.append(
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=box_polyline(box),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
            )
        )
        rows, cols = image.shape
        texts.append(
            hd.pr.TextObject(
                text_value=box_label(float(score), src),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                anchor_point=(float(np.clip(x1, 0, cols)), float(np.clip(y1, 0, rows))),
                anchor_point_visible=False,
            )
        )
    annotations = []
    if graphics:
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[source], graphic_layer=layer, graphic_objects=graphics, text_objects=texts
            )
        )
    voi = hd.pr.SoftcopyVOILUTTransformation(
        window_center=float(image.window.center), window_width=max(float(image.window.width), 1.0)
    )
    shape = (
        hd.PresentationLUTShapeValues.INVERSE if image.inverted else hd.PresentationLUTShapeValues.IDENTITY
    )
    return hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        content_description="PneumoView findings (research use only)",
        graphic_annotations=annotations or None,
        graphic_layers=[layer],
        voi_lut_transformations=[voi],
        presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape),
        **c.instance_identity(series_instance_uid, series_number, sop_instance_uid, instance_number),
        series_description="PneumoView findings (research use only)",
    )
