"""The Qt-free side of the reader review: the per-user store and matching decisions to the boxes on screen; and the scan's ``result`` entries (which image an SR/SEG/GSPS is about)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pneumoview.postprocess import BoxSet, Findings
from pneumoview.review import FindingRef, ImageReview, ReviewedBox
from pneumoview.review_store import (
    ReviewStore,
    finding_refs,
    replace_added,
    review_from_json,
    review_marks,
    reviews_dir,
    without_decision,
)
from pneumoview.thresholds import Thresholds

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _findings(boxes: list[list[float]], scores: list[float]) -> Findings:
    fused = BoxSet.of(boxes, scores, "fused")
    empty = BoxSet.of([], [], "detector")
    return Findings(
        fused=fused, detector=empty, segmentation=None, thresholds=Thresholds(), image_shape=(512, 512)
    )


def _review(refs: list[FindingRef]) -> ImageReview:
    r = ImageReview("img-1", "Dr A", time=T0)
    r = r.with_decision(ReviewedBox.accept(refs[0], "Dr A", T0))
    r = r.with_decision(ReviewedBox.edit(refs[1], (12, 22, 40, 60), "Dr B", T0))
    return r.with_decision(ReviewedBox.add((100, 100, 150, 170), "Dr A", T0))


def test_refs_marks_and_json_round_trip(tmp_path):
    findings = _findings([[10, 20, 30, 40], [200, 100, 50, 60]], [0.9, 0.6])
    refs = finding_refs(findings, {0: "1.2.3"}, "9.9")
    assert [r.box_xyxy for r in refs] == [(10, 20, 40, 60), (200, 100, 250, 160)]
    assert (
        refs[0].tracking_uid == "1.2.3" and refs[1].tracking_uid is None and refs[1].algorithm_sr_uid == "9.9"
    )
    review = _review(refs)

    store = ReviewStore(tmp_path / "reviews")
    path = store.save(review)
    assert path == tmp_path / "reviews" / "img-1" / "review.json"
    assert store.load("img-1") == review
    assert review_from_json(json.loads(path.read_text())) == review
    assert store.load("img-unknown") is None

    marks = review_marks(review, refs)
    assert [(m.decision, m.finding_index, m.added_position, m.stale) for m in marks] == [
        ("accepted", 0, None, False),
        ("edited", 1, None, False),
        ("added", None, 0, False),
    ]
    assert marks[1].box_xyxy == (12, 22, 40, 60)

    # Other thresholds: box 1 is gone and box 0 moved, so both decisions are shown as stale at their stored place.
    moved = finding_refs(_findings([[11, 20, 30, 40]], [0.9]))
    marks = review_marks(review, moved)
    assert [(m.decision, m.finding_index, m.stale) for m in marks] == [
        ("undecided", 0, False),
        ("accepted", 0, True),
        ("edited", 1, True),
        ("added", None, False),
    ]

    undone = without_decision(review, 0)
    assert undone.decision_for(0) is None and undone.decision_for(1) is not None
    moved_added = replace_added(review, 0, ReviewedBox.add((0, 0, 5, 5), "Dr A", T0))
    assert moved_added.added[0].box_xyxy == (0, 0, 5, 5) and len(moved_added.boxes) == 3
    assert replace_added(review, 0, None).added == ()
    with pytest.raises(IndexError):
        replace_added(review, 3, None)


def test_damaged_or_foreign_review_file_is_named(tmp_path):
    store = ReviewStore(tmp_path)
    (tmp_path / "img-2").mkdir()
    (tmp_path / "img-2" / "review.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"img-2/review\.json.*move it away"):
        store.load("img-2")
    with pytest.raises(ValueError, match="image id"):
        store.folder("../escape")


def test_reviews_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMOVIEW_REVIEWS_DIR", str(tmp_path / "r"))
    assert reviews_dir() == tmp_path / "r"
    monkeypatch.delenv("PNEUMOVIEW_REVIEWS_DIR")
    assert reviews_dir().name == "reviews" and "PneumoView" in str(reviews_dir())


def test_scan_lists_results_with_the_image_they_refer_to(tmp_path):
    """A real TID 1500 SR and SEG written for a real DICOM: the scan reports them as results of that image."""
    import numpy as np
    import pydicom

    from pneumoview.result_refs import referenced_images
    from pneumoview.study_index import ScanEntry, scan

    sample = Path(__file__).resolve().parents[1] / "pneumoview" / "data" / "sample_study"
    src = sorted(sample.glob("*.dcm"))[0]
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    # highdicom's own SR about the image, as another tool would write it.
    import highdicom as hd
    from pydicom.sr.codedict import codes

    source = pydicom.dcmread(src)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[10, 10], [50, 10], [50, 60], [10, 60], [10, 10]], dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="box 0", uid=hd.UID()),
        referenced_region=region,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Person,
                observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                    name="Other^Reader"
                ),
            )
        ),
        procedure_reported=hd.sr.CodedConcept("36643-5", "LN", "XR Chest 2 Views"),
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source], content=report[0], series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Other",
    )  # fmt: skip
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "image.dcm").write_bytes(src.read_bytes())
    sr.save_as(folder / "zz_sr.dcm")
    assert referenced_images(str(sr.SOPClassUID), {"CurrentRequestedProcedureEvidenceSequence": sr.get(
        "CurrentRequestedProcedureEvidenceSequence")}) == (ds.SOPInstanceUID,)  # fmt: skip
    entries = {e.path.name: e for e in scan(folder) if isinstance(e, ScanEntry)}
    assert entries["image.dcm"].kind == "image"
    assert entries["zz_sr.dcm"].kind == "result"
    assert entries["zz_sr.dcm"].result_for == (ds.SOPInstanceUID,)
    assert entries["zz_sr.dcm"].to_dict()["result_for"] == [ds.SOPInstanceUID]


def test_scan_text_names_results(tmp_path, capsys):
    """``pneumoview scan`` (text) says what a result object is about, not just "not an image"."""
    import pydicom

    from pneumoview.cli import main

    src = sorted(
        (Path(__file__).resolve().parents[1] / "pneumoview" / "data" / "sample_study").glob("*.dcm")
    )[0]
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    gsps = pydicom.Dataset()
    gsps.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    gsps.SOPInstanceUID = "1.2.3.4.5"
    gsps.PatientID, gsps.StudyInstanceUID, gsps.Modality = ds.PatientID, ds.StudyInstanceUID, "PR"
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    series = pydicom.Dataset()
    series.SeriesInstanceUID = ds.SeriesInstanceUID
    series.ReferencedImageSequence = [ref]
    gsps.ReferencedSeriesSequence = [series]
    gsps.file_meta = pydicom.dataset.FileMetaDataset()
    gsps.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    gsps.file_meta.MediaStorageSOPClassUID = gsps.SOPClassUID
    gsps.file_meta.MediaStorageSOPInstanceUID = gsps.SOPInstanceUID
    folder = tmp_path / "f"
    folder.mkdir()
    gsps.save_as(folder / "ps.dcm", enforce_file_format=True)
    assert main(["scan", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "Results: " in text and "presentation state (results) about 1 image(s)" in text
    assert "not an image" not in text
