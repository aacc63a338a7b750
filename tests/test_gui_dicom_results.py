"""DICOM results in the viewer (offscreen Qt, the real sample DICOMs, tiny real models): File ▸ Export as DICOM
writes SR/SEG/GSPS that read back to what is on screen; a folder holding results lists them under their image and
shows them as a layer; the review of a DICOM image is written as a review SR."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.dicom_checks import dciodvfy_errors
from tests.gui_helpers import both_sources_settings, copy_study, open_and_wait, rsna_images

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui

SAMPLE = Path(__file__).resolve().parents[1] / "pneumoview" / "data" / "sample_study"
# With the test models this sample image has two final boxes and a non-empty mask.
TWO_BOXES = SAMPLE / "1015e103-bda6-4664-978d-f761cd2982cb.dcm"


@pytest.fixture
def reviews(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "reviews"
    monkeypatch.setenv("PNEUMOVIEW_REVIEWS_DIR", str(folder))
    return folder


def _xyxy(findings) -> list[tuple[float, float, float, float]]:
    return [(x, y, x + w, y + h) for x, y, w, h in findings.fused.boxes.tolist()]


def test_export_current_image_as_dicom_reads_back(qtbot, make_window, tmp_path, reviews):
    from pneumoview.dicom_results import StoredGSPS, StoredSEG, StoredSR, read_result

    study = copy_study(tmp_path / "study", [TWO_BOXES])
    w = make_window(both_sources_settings())
    open_and_wait(qtbot, w, study)
    s = w.session
    assert len(s.findings.fused) == 2
    out = tmp_path / "dicom-out"
    files = w.dicom_exporter.export_current(out, gsps=True, probability_map=True)
    assert [p.name.rsplit("_", 1)[1] for p in files] == ["SR.dcm", "SEG.dcm", "GSPS.dcm"]
    assert {p.name: dciodvfy_errors(p) for p in files} == {p.name: [] for p in files}
    sr, seg, ps = (read_result(p) for p in files)
    assert isinstance(sr, StoredSR) and isinstance(seg, StoredSEG) and isinstance(ps, StoredGSPS)
    uid = s.image.identifiers["SOPInstanceUID"]
    assert sr.referenced_sop_instance_uid == seg.referenced_sop_instance_uid == uid
    assert sr.study_instance_uid == s.image.identifiers["StudyInstanceUID"]
    np.testing.assert_allclose([r.box_xyxy for r in sr.regions], _xyxy(s.findings), atol=0.01)
    assert sr.p_opacity == pytest.approx(s.result.p_opacity, abs=1e-3)
    np.testing.assert_array_equal(seg.mask, s.result.prob_map > s.thresholds.seg_threshold)
    assert seg.probability is not None and seg.probability.shape == s.image.shape
    np.testing.assert_allclose(ps.boxes_xyxy, _xyxy(s.findings), atol=0.01)
    assert sorted(p.name for p in study.iterdir()) == [TWO_BOXES.name], "the input folder is never written to"

    # Never replaced without asking.
    stamp = files[0].stat().st_mtime_ns
    w.exporter.confirm_overwrite = lambda paths: False
    assert w.dicom_exporter.export_current(out) == []
    assert files[0].stat().st_mtime_ns == stamp


def test_png_input_gets_no_dicom_results_and_says_why(qtbot, make_window, tmp_path, reviews):
    study = copy_study(tmp_path / "study", rsna_images(1))
    w = make_window()
    open_and_wait(qtbot, w, study)
    assert w.dicom_exporter.export_current(tmp_path / "out") == []
    assert "not a DICOM image" in w.dicom_exporter.last_error
    assert not (tmp_path / "out").exists()


def test_export_study_as_dicom(qtbot, make_window, tmp_path, reviews):
    from pneumoview.dicom_results import read_results
    from tests.gui_helpers import SHARED

    # pydicom's DICOMDIR tree: the first image belongs to a three-image CR study.
    tree = tmp_path / "dicomdir"
    shutil.copytree(SHARED / "dicom" / "robustness" / "pydicom" / "dicomdirtests", tree)
    w = make_window()
    open_and_wait(qtbot, w, tree / "DICOMDIR")
    study = w.browser.study_images()
    assert len(study) == 3
    with qtbot.waitSignal(w.exportFinished, timeout=120_000) as blocker:
        w.dicom_exporter.export_study(tmp_path / "out", gsps=True)
    outcome = blocker.args[0]
    assert outcome.failed == ()
    grouped = read_results(outcome.written)
    assert len(grouped) == 3
    assert all(len(r.srs) == 1 and len(r.gsps) == 1 for r in grouped.values())
    assert len({r.srs[0].study_instance_uid for r in grouped.values()}) == 1


def test_folder_with_results_lists_them_under_the_image_and_shows_the_layer(
    qtbot, make_window, tmp_path, reviews
):
    from pneumoview.dicom_results import read_result
    from pneumoview.study_index import ScanEntry, scan

    # Analyse and export once, then open a folder holding the image and its results (another reader's view).
    first = copy_study(tmp_path / "first", [TWO_BOXES])
    w = make_window()
    open_and_wait(qtbot, w, first)
    written = w.dicom_exporter.export_current(tmp_path / "results", gsps=True)
    w.close()
    # The results at the top, the image in a sub-folder: the scan reaches the results first.
    shared = tmp_path / "shared"
    shutil.copytree(tmp_path / "results", shared / "aaa-results")
    copy_study(shared / "aaa-results" / "image", [TWO_BOXES])
    # A damaged copy of the SEG (pixel data cut short): listed with the image, said so, never drawn.
    seg_bytes = written[1].read_bytes()
    damaged = shared / "aaa-results" / "damaged_SEG.dcm"
    damaged.write_bytes(seg_bytes[: len(seg_bytes) - 4000])

    entries = [e for e in scan(shared) if isinstance(e, ScanEntry)]
    results = [e for e in entries if e.kind == "result"]
    image = next(e for e in entries if e.kind == "image")
    assert entries[-1] == image
    assert len(results) == 4 and all(e.result_for == (image.sop_instance_uid,) for e in results)

    w2 = make_window()
    with qtbot.waitSignal(
        w2.stored.loaded, timeout=60_000, check_params_cb=lambda r: r is not None
    ) as blocker:
        open_and_wait(qtbot, w2, shared)
    assert w2.browser.n_errors == 0
    assert sorted(w2.browser.results_for(image.sop_instance_uid)) == sorted(
        [damaged, *(shared / "aaa-results" / p.name for p in written)]
    )
    # The browser shows them as children of the image row.
    item = w2.browser._images[image.path]
    assert item.rowCount() == 4
    assert item.parent().parent().rowCount() == 1, "no empty result series is left behind in the study"
    stored = blocker.args[0]
    sr = read_result(written[0])
    assert len(stored.srs) == 1 and len(stored.segs) == 1 and len(stored.gsps) == 1
    drawn = [box for box, _ in w2.stored.boxes]
    expected = [r.box_xyxy for r in sr.regions] + list(read_result(written[2]).boxes_xyxy)
    np.testing.assert_allclose(drawn, expected, atol=0.01)
    assert w2.stored.mask_item.image is not None and w2.stored.mask_item.image.any()
    assert "SR by" in w2.stored.summary.text() and "SEG" in w2.stored.summary.text()
    assert len(w2.stored.problems) == 1 and "damaged_SEG.dcm" in w2.stored.problems[0]
    assert "malformed" in w2.stored.problems[0] and "damaged_SEG.dcm" in w2.stored.summary.text()
    assert all(i.isVisible() for i in w2.stored._items)
    w2.layer_controls.checks["stored"].setChecked(False)
    assert not any(i.isVisible() for i in w2.stored._items) and not w2.stored.mask_item.isVisible()


def test_review_of_a_dicom_image_is_written_as_review_sr(qtbot, make_window, tmp_path, reviews):
    from pneumoview.dicom_results import read_results

    other = SAMPLE / "01cad8d0-45cd-4603-b099-94055d322310.dcm"
    study = copy_study(tmp_path / "study", [TWO_BOXES, other])
    settings = both_sources_settings()
    settings.reader_name = "Dr DICOM"
    w = make_window(settings)
    open_and_wait(qtbot, w, study)  # opens the other image first (name order)
    with qtbot.waitSignal(w.analysisFinished, timeout=60_000):
        w.browser.select_path(study / TWO_BOXES.name)
    image = w.session.image
    assert image.source.name == TWO_BOXES.name
    ctl = w.review
    ctl.select(0)
    assert ctl.decide("accepted")
    ctl.select(1)
    assert ctl.decide("rejected")
    assert ctl.add((100.0, 120.0, 300.0, 380.0))
    store = reviews / image.image_id / "dicom"
    assert ctl.sr_pending and not store.exists()
    # Moving to another image with a changed review writes its SR by itself (in the background).
    with qtbot.waitSignals([w.analysisFinished, ctl.reviewSrWritten], timeout=60_000):
        w.browser.select_path(study / other.name)
    assert not ctl.sr_pending and ctl.image is not image
    written = sorted(store.glob("*.dcm"))
    assert [p.name.split("_")[1] for p in written] == ["REVIEW", "SEG.dcm", "SR.dcm"]
    assert {p.name: dciodvfy_errors(p) for p in written} == {p.name: [] for p in written}

    grouped = read_results(written)
    res = grouped[image.identifiers["SOPInstanceUID"]]
    assert len(res.algorithm_srs) == 1 and len(res.reviews) == 1
    review_sr = res.reviews[0]
    assert review_sr.observer_name == "Dr DICOM"
    assert sorted(r.decision for r in review_sr.regions) == ["accepted", "added", "rejected"]
    algo_uids = {r.tracking_uid for r in res.algorithm_srs[0].regions}
    assert {r.reviewed_tracking_uid for r in review_sr.regions if r.decision != "added"} == algo_uids
    assert sorted(p.name for p in study.iterdir()) == sorted([TWO_BOXES.name, other.name])
    w.close()

    # Reopened, the review is back, and File ▸ Export as DICOM carries the review SR with the algorithm's.
    w2 = make_window(settings)
    open_and_wait(qtbot, w2, study)
    with qtbot.waitSignal(w2.analysisFinished, timeout=60_000):
        w2.browser.select_path(study / TWO_BOXES.name)
    assert w2.session.image.image_id == image.image_id
    assert w2.review.review is not None and len(w2.review.review.boxes) == 3
    files = w2.dicom_exporter.export_current(tmp_path / "export")
    res = read_results(files)[image.identifiers["SOPInstanceUID"]]
    assert len(res.algorithm_srs) == 1 and len(res.reviews) == 1 and len(res.segs) == 1
    assert w2.review.save_sr() is not None  # the explicit Review ▸ Save review SR


def test_batch_dialog_writes_dicom_results(qtbot, make_window, tmp_path, reviews):
    import json

    from pneumoview.dicom_results import read_results
    from pneumoview.gui.batch_dialog import BatchDialog

    src = copy_study(tmp_path / "in", [TWO_BOXES, *rsna_images(1)])
    w = make_window()
    d = BatchDialog(lambda: w.engine_info, w.session.thresholds, input_dir=str(src))
    qtbot.addWidget(d)
    d.output_edit.setText(str(tmp_path / "out"))
    d.write_png.setChecked(False)
    assert not d.dicom_gsps.isEnabled()
    d.write_dicom.setChecked(True)
    d.dicom_gsps.setChecked(True)
    with qtbot.waitSignal(d.finishedRun, timeout=120_000) as blocker:
        assert d.start()
    summary = blocker.args[0]
    assert summary is not None and summary.done == 2, d.status.text()
    files = sorted((tmp_path / "out" / "dicom").glob("*.dcm"))
    grouped = read_results(files)
    assert len(grouped) == 1, "only the DICOM input gets DICOM results"
    (res,) = grouped.values()
    assert len(res.srs) == 1 and len(res.segs) == 1 and len(res.gsps) == 1
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["dicom"]["options"] == {"gsps": True, "probability_map": False}
    assert sorted(run["dicom"]["files"]) == sorted(f"dicom/{p.name}" for p in files)
