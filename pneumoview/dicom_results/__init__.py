"""DICOM results for an analysed DICOM image (IHE AI Results): TID 1500 Comprehensive 3D SR, SEG and GSPS.

Qt-free and torch-free; written and read with highdicom. For every analysed DICOM image (never for PNG/JPEG input,
which has no study to join):

* **SR** (Comprehensive 3D SR, TID 1500 Measurement Report), always, even with no box: the classifier's
  probabilities, one planar ROI group per reported box (closed 5-point POLYLINE in the source's ``(column, row)``
  pixel frame), the finding type, the box confidence and source, a tracking identifier, the algorithm
  identification (name, version, model ids and sha256 prefixes, thresholds) and the device as observer;
* **SEG** when the final mask (``prob_map > seg_threshold``) has any pixel: the binary mask at the source size and,
  with ``probability_map``, the probability map as a FRACTIONAL (PROBABILITY) segment;
* **GSPS** with ``gsps``: the final boxes as graphic annotations with their confidences;
* a reader's **review SR** (:func:`write_review_sr`): the reader as a PERSON observer, beside the algorithm SR,
  which is never altered.

Each object joins the source's study (same Study Instance UID, patient and study attributes copied, invalid ones
corrected or left out, missing Type 2 ones filled) in a new series per object type. Its UIDs are derived from the
source SOP Instance UID, the model hashes and the thresholds, so writing or sending the same result twice gives the
same SOP Instance UIDs. File names never carry identifiers unless ``include_identifiers`` is set (the same rule as
the other exports); a de-identified source stays de-identified.
"""

from pneumoview.dicom_results.reader import is_result_dataset, read_result, read_results
from pneumoview.dicom_results.review_sr import build_review_sr, review_from_sr, write_review_sr
from pneumoview.dicom_results.stored import ImageResults, StoredGSPS, StoredRegion, StoredSEG, StoredSR
from pneumoview.dicom_results.writer import (
    DicomResultsError,
    build_gsps,
    build_seg,
    build_sr,
    write_results,
)

__all__ = [
    "DicomResultsError",
    "ImageResults",
    "StoredGSPS",
    "StoredRegion",
    "StoredSEG",
    "StoredSR",
    "build_gsps",
    "build_review_sr",
    "build_seg",
    "build_sr",
    "is_result_dataset",
    "read_result",
    "read_results",
    "review_from_sr",
    "write_results",
    "write_review_sr",
]
