"""DICOM results (SR, SEG, GSPS, review SR) written for every real DICOM under ../shared/data: valid per dciodvfy,
read back with highdicom equal to what was written, same study as the source, deterministic UIDs, identifiers.

The images are real; the model outputs here are deterministic stand-ins (tests/dicom_checks.py) so that every file
gets boxes and a mask. ``test_cli_predict_dicom.py`` runs the real engine.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pneumoview.cli import main
from pneumoview.dicom_results import (
    DicomResultsError,
    read_result,
    read_results,
    review_from_sr,
    write_results,
    write_review_sr,
)
from pneumoview.dicom_results.source import clean_source, read_source
from pneumoview.errors import ImageReadError
from pneumoview.export import findings_rows, write_findings_csv
from pneumoview.imaging import load_image
from pneumoview.postprocess import Findings, postprocess
from pneumoview.review import FindingRef, ImageReview, ReviewedBox
from pneumoview.thresholds import Thresholds
from tests.dicom_checks import dciodvfy_errors, model_outputs
from tests.threshold_presets import BOTH_SOURCES

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"
CHEST = sorted((DATA / "dicom" / "chest").glob("*.dcm"))
ROBUSTNESS = sorted(
    p for p in (DATA / "dicom" / "robustness").rglob("*") if p.is_file() and p.suffix != ".md"
)
# Real files whose results are refused, and the words the error must contain (RT Dose: a 15-frame dose grid).
REFUSED = {"rtdose.dcm": "15 frames", "bad_sequence.dcm": "StudyInstanceUID"}
# pydicom's DICOMDIR test tree: MR images whose Frame of Reference UID is their Study Instance UID, so no valid SEG
# can reference them (the SR and GSPS are still written).
MR_WITHOUT_FRAME = "dicomdirtests"


def _id(p: Path) -> str:
    return str(p.relative_to(DATA)) if DATA in p.parents else p.name


def _analyse(path: Path, thresholds: Thresholds | None = None):
    image = load_image(path)
    result = model_outputs(image)
    return image, result, postprocess(result, thresholds, spacing_mm=image.spacing_mm)


def _check_round_trip(image, result, findings: Findings, paths: list[Path], probability_map: bool) -> None:
    source = pydicom.dcmread(image.source, stop_before_pixels=True, force=True)
    by_kind = {p.stem.rsplit("_", 1)[1]: p for p in paths}
    results = read_results(paths)
    assert set(results) == {str(source.SOPInstanceUID)}
    got = results[str(source.SOPInstanceUID)]
    # SR: probabilities, one region per final box with its box, confidence and source.
    (sr,) = got.srs
    assert sr.observer == "device" and sr.algorithm_name == "PneumoView"
    assert sr.p_opacity == pytest.approx(result.p_opacity, abs=1e-6)
    for name, p in zip(result.class_names, result.class_probs, strict=True):
        assert sr.probabilities[f"Probability of {name}"] == pytest.approx(float(p), abs=1e-6)
    assert [m for m in sr.algorithm_parameters if m.startswith("model=")] == [
        f"model={m.id}@{m.version}#{m.sha256_prefix}" for m in result.models
    ]
    assert any(p.startswith("thresholds=") and '"seg_threshold":' in p for p in sr.algorithm_parameters)
    assert len(sr.regions) == len(findings.fused)
    for region, box, score, src in zip(
        sr.regions, findings.fused.xyxy(), findings.fused.scores, findings.fused.sources, strict=True
    ):
        assert region.box_xyxy == tuple(float(v) for v in box)  # FL coordinates: exact for float32 boxes
        assert len(region.points) == 5 and region.points[0] == region.points[-1]
        assert region.confidence == pytest.approx(float(score), abs=1e-6)
        assert region.source == src
    # SEG: the mask exactly, the probability map to 1/255.
    mask = result.prob_map > findings.thresholds.seg_threshold
    if "SEG" in by_kind:
        (seg,) = got.segs
        assert seg.algorithm_name == "PneumoView" and seg.algorithm_version
        assert seg.segment_labels[0] == "Lung opacity"
        assert np.array_equal(seg.mask, mask)
        if probability_map:
            assert np.abs(seg.probability - result.prob_map).max() <= 0.5 / 255 + 1e-6
        else:
            assert seg.probability is None
    # GSPS: the same boxes.
    if "GSPS" in by_kind:
        (gsps,) = got.gsps
        assert gsps.boxes_xyxy == tuple(tuple(float(v) for v in b) for b in findings.fused.xyxy())
        assert len(gsps.labels) == len(findings.fused)
    # Every object joins the source's study, in a new series of its own, with the source's patient.
    series = set()
    for p in paths:
        ds = pydicom.dcmread(p)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        series.add(ds.SeriesInstanceUID)
        assert str(ds.get("PatientID") or "") == str(source.get("PatientID") or "")
        assert "PatientBirthDate" in ds and "ReferringPhysicianName" in ds  # Type 2 present, maybe empty
    assert len(series) == len(paths)


@pytest.mark.parametrize("path", [*CHEST, *sorted(SAMPLE.glob("*.dcm")), *ROBUSTNESS], ids=_id)
def test_results_for_every_real_dicom_are_valid_and_read_back(path: Path, tmp_path: Path):
    try:
        image, result, findings = _analyse(path)
    except ImageReadError as exc:
        # Not an image PneumoView can analyse (a DICOMDIR, a broken file): there is nothing to write results for.
        assert path.name in str(exc) or str(path) in str(exc)
        return
    has_mask = bool((result.prob_map > findings.thresholds.seg_threshold).any())
    assert len(findings.fused) >= 1 and (has_mask or min(image.shape) < 8)
    notes: list[str] = []
    if path.name in REFUSED:
        with pytest.raises(DicomResultsError, match=REFUSED[path.name]) as err:
            write_results(image, result, findings, tmp_path, gsps=True, probability_map=True, notes=notes)
        assert str(path) in str(err.value)
        return
    paths = write_results(image, result, findings, tmp_path, gsps=True, probability_map=True, notes=notes)
    kinds = [p.stem.rsplit("_", 1)[1] for p in paths]
    assert kinds[0] == "SR"
    colour = image.photometric not in ("MONOCHROME1", "MONOCHROME2")
    modality = pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality")
    if MR_WITHOUT_FRAME in str(path) and modality == "MR":
        assert "SEG" not in kinds and any("Frame Of Reference" in n for n in notes)
    else:
        assert ("SEG" in kinds) == has_mask
    assert ("GSPS" in kinds) != colour
    if colour:
        assert any("colour" in n for n in notes)
    for p in paths:
        assert dciodvfy_errors(p) == [], p.name
    _check_round_trip(image, result, findings, paths, probability_map=True)


def test_binary_seg_and_patient_age_fixed(tmp_path: Path):
    """The RSNA-style sample file says Patient's Age "42"; its results say "042Y". Without the probability map the SEG
    is BINARY with one segment."""
    path = SAMPLE / "01cad8d0-45cd-4603-b099-94055d322310.dcm"
    assert str(pydicom.dcmread(path, stop_before_pixels=True).PatientAge) == "42"
    image, result, findings = _analyse(path)
    paths = write_results(image, result, findings, tmp_path)
    assert [p.name for p in paths] == [f"{image.image_id}_SR.dcm", f"{image.image_id}_SEG.dcm"]
    for p in paths:
        ds = pydicom.dcmread(p)
        assert ds.PatientAge == "042Y"
        assert dciodvfy_errors(p) == []
    assert pydicom.dcmread(paths[1]).SegmentationType == "BINARY"
    _check_round_trip(image, result, findings, paths, probability_map=False)


def test_source_attributes_corrected_or_left_out():
    """fo-dicom's ACR-NEMA-era CR: no file meta, no Patient ID or Study Date; clean_source fills the Type 2
    attributes. WG04's Pixel Spacing of 0\\0 is left out."""
    clean = clean_source(read_source(DATA / "dicom" / "chest" / "fo-dicom_CR-MONO1-10-chest.dcm"))
    for keyword in ("PatientID", "StudyDate", "StudyTime", "StudyID", "PatientBirthDate"):
        assert keyword in clean.dataset and not clean.dataset[keyword].value
    assert any("StudyDate (Type 2) was missing" in n for n in clean.corrections)
    wg04 = clean_source(read_source(DATA / "dicom" / "chest" / "WG04_RG1_J2KI.dcm"))
    assert "PixelSpacing" not in wg04.dataset
    assert any("PixelSpacing left out" in n for n in wg04.corrections)
    age = pydicom.Dataset()
    age.update(
        {"StudyInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.3.4", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1"}
    )
    age.PatientAge = "7"
    age.StudyDate = "1995.07.20"
    age.StudyTime = "11:22:07"
    fixed = clean_source(age).dataset
    assert (fixed.PatientAge, fixed.StudyDate, fixed.StudyTime) == ("007Y", "19950720", "112207")
    age.PatientAge = "seven"
    assert "PatientAge" not in clean_source(age).dataset


def test_uids_are_deterministic(tmp_path: Path):
    """Writing the same result twice gives the same SOP Instance UIDs (a PACS keeps one copy); other thresholds
    give other UIDs. Two images of one study share one series per kind."""
    path = DATA / "dicom" / "chest" / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    image, result, findings = _analyse(path)
    a = write_results(image, result, findings, tmp_path / "a", gsps=True)
    b = write_results(image, result, findings, tmp_path / "b", gsps=True)
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in a]
    assert uids == [pydicom.dcmread(p).SOPInstanceUID for p in b]
    assert len(set(uids)) == len(uids)
    other = postprocess(result, Thresholds(det_score=0.7), spacing_mm=image.spacing_mm)
    c = write_results(image, result, other, tmp_path / "c")
    assert pydicom.dcmread(c[0]).SOPInstanceUID != uids[0]

    sample = sorted(SAMPLE.glob("*.dcm"))[:2]
    studies = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in sample}
    series = set()
    for p in sample:
        im, res, f = _analyse(p)
        series.add(pydicom.dcmread(write_results(im, res, f, tmp_path / "d")[0]).SeriesInstanceUID)
    assert len(series) == len(studies)  # one SR series per study


def test_deidentified_source_stays_deidentified(tmp_path: Path):
    src = (
        DATA
        / "dicom"
        / "chest"
        / "nih-cxr14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
    )
    original = pydicom.dcmread(src, stop_before_pixels=True)
    deid = tmp_path / "deid"
    assert main(["deidentify", str(src), "--out", str(deid), "--key-file", str(tmp_path / "key")]) == 0
    (copy,) = sorted(p for p in deid.rglob("*") if p.is_file() and p.suffix == ".dcm")
    image, result, findings = _analyse(copy)
    paths = write_results(image, result, findings, tmp_path / "out", gsps=True)
    identifying = [str(original.PatientName), str(original.PatientID), str(original.StudyInstanceUID)]
    for p in paths:
        ds = pydicom.dcmread(p)
        assert ds.PatientIdentityRemoved == "YES"
        assert "DeidentificationMethodCodeSequence" in ds or "DeidentificationMethod" in ds
        raw = p.read_bytes()
        for text in identifying:
            assert text.encode() not in raw, (p.name, text)
        assert image.image_id in p.name and str(original.PatientID) not in p.name


def test_jpeg_input_gets_a_clear_error(tmp_path: Path):
    png = sorted((DATA / "rsna" / "images-512").glob("*.jpg"))[0]
    image = load_image(png)
    result = model_outputs(image)
    with pytest.raises(DicomResultsError, match="only for DICOM images") as err:
        write_results(image, result, postprocess(result), tmp_path)
    assert png.name in str(err.value) and "PNG or JPEG" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_multi_frame_input_gets_a_clear_error(tmp_path: Path, make_dicom):
    frames = np.stack(
        [np.asarray(load_image(SAMPLE / "1015e103-bda6-4664-978d-f761cd2982cb.dcm").display)] * 3
    )
    path = make_dicom(frames, name="multi.dcm", StudyInstanceUID="1.2.3", SOPInstanceUID="1.2.3.4",
                      SeriesInstanceUID="1.2.3.5")  # fmt: skip
    image = load_image(path)
    assert image.frame_count == 3
    result = model_outputs(image)
    with pytest.raises(DicomResultsError, match="3 frames") as err:
        write_results(image, result, postprocess(result), tmp_path / "out")
    assert "multi.dcm" in str(err.value) and not (tmp_path / "out").exists()


def test_identifiers_in_file_names_only_on_request(tmp_path: Path):
    path = SAMPLE / "07d0762b-8d1f-41d9-8ea9-1b6e4097cd33.dcm"
    image, result, findings = _analyse(path)
    plain = write_results(image, result, findings, tmp_path / "a")
    named = write_results(image, result, findings, tmp_path / "b", include_identifiers=True)
    patient = image.identifiers["PatientID"]
    assert all(p.name.startswith(image.image_id) for p in plain)
    assert all(p.name.startswith(f"{patient}_") for p in named)


# ------------------------------------------------------------------------------------------------------------
# Reader review
# ------------------------------------------------------------------------------------------------------------


def test_review_sr_round_trip_and_review_column(tmp_path: Path):
    path = SAMPLE / "16d8d1b9-1430-4043-acb3-d3938a354028.dcm"
    image, result, findings = _analyse(path, BOTH_SOURCES)  # several regions to review
    sr_path = write_results(image, result, findings, tmp_path)[0]
    algorithm_bytes = sr_path.read_bytes()
    algorithm = read_result(sr_path)
    assert len(algorithm.regions) >= 2
    refs = [
        FindingRef(i, r.box_xyxy, r.confidence, r.source, r.tracking_uid, algorithm.sop_instance_uid)
        for i, r in enumerate(algorithm.regions)
    ]
    t = datetime(2026, 12, 3, 9, 0, 5, tzinfo=UTC)
    reader = "Smith^Anna"
    x1, y1, x2, y2 = refs[1].box_xyxy
    review = ImageReview(image.image_id, reader, time=t, source_sop_instance_uid=algorithm.referenced_sop_instance_uid,
                         algorithm_sr_uid=algorithm.sop_instance_uid)  # fmt: skip
    review = review.with_decision(ReviewedBox.reject(refs[0], reader, t))
    review = review.with_decision(ReviewedBox.accept(refs[0], reader, t))  # a later decision replaces
    review = review.with_decision(ReviewedBox.edit(refs[1], (x1 + 10, y1 + 5, x2 - 10, y2), reader, t))
    review = review.with_decision(ReviewedBox.add((40.0, 60.0, 200.0, 300.0), reader, t))
    assert [b.decision for b in review.boxes] == ["accepted", "edited", "added"]

    out = write_review_sr(review, image, tmp_path)
    assert out.name == f"{image.image_id}_REVIEW_20261203T090005.dcm"
    assert dciodvfy_errors(out) == []
    assert sr_path.read_bytes() == algorithm_bytes  # the algorithm's SR is never altered
    stored = read_result(out)
    assert stored.is_review and stored.observer_name == reader
    assert [r.decision for r in stored.regions] == ["accepted", "edited", "added"]
    assert stored.regions[0].tracking_uid == algorithm.regions[0].tracking_uid  # paired with the finding
    assert stored.regions[1].box_xyxy == (x1 + 10, y1 + 5, x2 - 10, y2)
    assert review_from_sr(stored, image.image_id, algorithm) == review
    both = read_results([sr_path, out])[algorithm.referenced_sop_instance_uid]
    assert both.algorithm_srs[0].sop_instance_uid == algorithm.sop_instance_uid and both.reviews == (stored,)

    rows = findings_rows(image, result, findings, review=review)
    csv_path = write_findings_csv(rows, tmp_path / "findings.csv")
    with open(csv_path, newline="") as f:
        got = list(csv.DictReader(f))
    assert got[0]["review"] == f"accepted by {reader}"
    assert got[1]["review"].startswith(f"edited by {reader}: {x1 + 10:.1f}")
    assert all(r["review"] == "" for r in got[2 : len(findings.fused)])
    added = got[len(findings.fused)]
    assert (added["box_source"], added["box_index"], added["review"]) == (
        "reader",
        "added 0",
        f"added by {reader}",
    )
    assert (added["x"], added["y"], added["w"], added["h"]) == ("40.0", "60.0", "160.0", "240.0")

    # A review that decided nothing is still a valid SR about the image.
    empty = write_review_sr(ImageReview(image.image_id, reader, time=t.replace(second=6)), image, tmp_path)
    assert dciodvfy_errors(empty) == [] and read_result(empty).regions == ()


def test_review_values_are_validated():
    ref = FindingRef(0, (1.0, 2.0, 30.0, 40.0), 0.8, "fused")
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="unknown review decision"):
        ReviewedBox(ref, "maybe", ref.box_xyxy, "A", t)
    with pytest.raises(ValueError, match="timezone-aware"):
        ReviewedBox.accept(ref, "A", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="x2 > x1"):
        ReviewedBox.add((10, 10, 5, 20), "A", t)
    with pytest.raises(ValueError, match="'added' exactly when"):
        ReviewedBox(None, "accepted", (1, 2, 3, 4), "A", t)
    with pytest.raises(ValueError, match="reader's name"):
        ReviewedBox.accept(ref, "  ", t)
    with pytest.raises(ValueError, match="more than one review decision"):
        ImageReview("x", "A", (ReviewedBox.accept(ref, "A", t), ReviewedBox.reject(ref, "A", t)), t)


def test_no_box_and_no_mask_still_gives_an_sr(tmp_path: Path):
    """A gated image (P(opacity) below the gate) with a faint map: only the SR, with the probabilities and no
    region."""
    image = load_image(SAMPLE / "2877c9be-1665-4131-ac0f-7b145696ebc5.dcm")
    result = model_outputs(image)
    faint = replace(result, prob_map=result.prob_map * 0.3, p_opacity=0.05)
    findings = postprocess(faint, spacing_mm=image.spacing_mm)
    assert findings.gated and len(findings.fused) == 0
    (sr_path,) = write_results(image, faint, findings, tmp_path, probability_map=True)
    assert sr_path.name.endswith("_SR.dcm") and dciodvfy_errors(sr_path) == []
    sr = read_result(sr_path)
    assert sr.regions == () and sr.p_opacity == pytest.approx(0.05)


def test_reader_takes_other_makers_objects_and_ignores_the_rest(tmp_path: Path):
    """An SR and a SEG made directly with highdicom (another maker's codes, a point region, two segments) are read;
    an image and a file that is not DICOM are not results."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = SAMPLE / "1015e103-bda6-4664-978d-f761cd2982cb.dcm"
    source = pydicom.dcmread(path)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[10, 20], [110, 20], [110, 90], [10, 20]], np.float32),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="nodule 1"),
        referenced_region=region,
        finding_type=codes.SCT.Nodule,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="OtherCAD"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR([source], report, hd.UID(), 1, hd.UID(), 1, manufacturer="Other")
    sr.save_as(tmp_path / "other_sr.dcm")
    mask = np.zeros((2, *source.pixel_array.shape), bool)
    mask[0, 100:200, 100:300] = True
    mask[1, 500:600, 600:700] = True
    descriptions = [
        hd.seg.SegmentDescription(
            i + 1,
            f"lesion {i + 1}",
            codes.SCT.MorphologicallyAbnormalStructure,
            codes.SCT.Nodule,
            hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )  # fmt: skip
        for i in range(2)
    ]
    seg = hd.seg.Segmentation([source], np.moveaxis(mask, 0, -1)[None].astype(np.uint8), "BINARY", descriptions,
                              hd.UID(), 2, hd.UID(), 1, "Other", "Other", "1", "1")  # fmt: skip
    seg.save_as(tmp_path / "other_seg.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM")
    shutil.copy(path, tmp_path / "image.dcm")

    got = read_results(sorted(tmp_path.iterdir()))
    assert set(got) == {str(source.SOPInstanceUID)}
    results = got[str(source.SOPInstanceUID)]
    (stored_sr,) = results.srs
    assert stored_sr.observer == "device" and stored_sr.observer_name == "OtherCAD"
    (r,) = stored_sr.regions
    assert r.box_xyxy == (10.0, 20.0, 110.0, 90.0) and r.tracking_id == "nodule 1" and r.finding == "Nodule"
    assert r.confidence is None and r.source is None
    (stored_seg,) = results.segs
    assert stored_seg.segment_labels == ("lesion 1", "lesion 2")
    assert np.array_equal(stored_seg.mask, mask.any(axis=0)) and stored_seg.probability is None
    with pytest.raises(ValueError, match="not an SR, SEG or GSPS") as err:
        read_result(tmp_path / "image.dcm")
    assert "image.dcm" in str(err.value)
