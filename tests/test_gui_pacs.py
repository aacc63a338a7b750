"""The viewer's PACS features against the real Orthanc: PACS peers with Test connection, File ▸ Open from PACS…
(search, retrieve into the cache, the browser fills, resume), File ▸ Send results to PACS, and a PACS that is
down (a clear message within 5 s, the viewer stays usable)."""

from __future__ import annotations

import shutil
import time

import pytest
from pydicom import dcmread

from pneumoview.pacs import DimsePeer, WebPeer
from pneumoview.settings import load_settings
from tests.pacs_helpers import free_port, make_study, sample_files

pytest_plugins = ("tests.gui_fixtures", "tests.pacs_fixtures")
pytestmark = pytest.mark.gui


def _peer(server) -> DimsePeer:
    return DimsePeer("orthanc", server.host, server.dicom_port, server.aet)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "pacs-cache"
    monkeypatch.setenv("PNEUMOVIEW_PACS_CACHE", str(folder))
    return folder


def test_peers_dialog_saves_peers_and_tests_the_connection(qtbot, make_window, orthanc):
    w = make_window(wait_engine=False)
    file_menu = next(a.menu() for a in w.menuBar().actions() if a.menu() and "File" in a.text())
    texts = [a.text() for a in file_menu.actions()]
    assert {"Open from &PACS…", "Send results to PAC&S…", "PACS peers…"} <= set(texts)

    d = w.pacs.peers_dialog()
    f = d.form
    d._add()
    f.name.setText("orthanc")
    f.host.setText(orthanc.host)
    f.port.setValue(orthanc.dicom_port)
    f.aet.setText(orthanc.aet)
    assert d.save_current()
    with qtbot.waitSignal(d.testFinished, timeout=10_000) as blocker:
        d.test_button.click()
    ok, text = blocker.args
    assert ok and "answered C-ECHO" in text and text in d.status.text()

    f.aet.setText("WRONGAET")
    with qtbot.waitSignal(d.testFinished, timeout=10_000) as blocker:
        d.test_connection()
    assert blocker.args[0] is False and "rejected the association" in blocker.args[1]

    f.port.setValue(free_port())  # nothing listens there: PACS down
    f.aet.setText(orthanc.aet)
    t0 = time.monotonic()
    with qtbot.waitSignal(d.testFinished, timeout=10_000) as blocker:
        d.test_connection()
    assert blocker.args[0] is False and "no DICOM answer" in blocker.args[1]
    assert time.monotonic() - t0 < 5.0

    d._add()
    f.kind.setCurrentIndex(1)
    f.name.setText("web")
    f.url.setText(orthanc.dicomweb_url)
    assert d.save_current()
    with qtbot.waitSignal(d.testFinished, timeout=10_000) as blocker:
        d.test_connection()
    assert blocker.args[0] and "QIDO-RS" in blocker.args[1]
    f.url.setText("not a url")
    assert not d.save_current() and "Not saved" in d.status.text()

    d.accept()
    assert load_settings().get_peers() == [_peer(orthanc), WebPeer("web", orthanc.dicomweb_url)]


def test_open_from_pacs_fills_the_browser_and_resumes(qtbot, make_window, empty_orthanc, cache, tmp_path):
    study_uid, files = make_study(tmp_path / "in", 5, with_ecg=True, seed=21)
    for f in files:
        empty_orthanc.upload(f)
    for f in sample_files()[:2]:
        empty_orthanc.upload(f)
    settings = load_settings()
    settings.set_peers([_peer(empty_orthanc)])
    w = make_window(settings)

    d = w.pacs.open_dialog()
    d.patient_id.setText("PACS-TEST-21")
    with qtbot.waitSignal(d.searchFinished, timeout=10_000) as blocker:
        d.search_button.click()
    assert blocker.args == [1] and d.table.rowCount() == 1
    assert d.table.item(0, 4).text() == "6"  # 5 images + the ECG
    d.table.selectRow(0)
    assert d.chosen_study_uids() == [study_uid]

    # An earlier retrieve stopped half-way left two images in the cache.
    folder = cache / study_uid
    folder.mkdir(parents=True)
    for f in files[:2]:
        shutil.copy2(f, folder / f"{dcmread(f).SOPInstanceUID}.dcm")
    with qtbot.waitSignal(w.pacs.retrieveFinished, timeout=30_000) as blocker:
        d.accept()
    s = blocker.args[0]
    assert (s.studies, s.fetched, s.already_present, s.non_images, s.failed) == (1, 4, 2, 1, [])
    listed = sorted(p.name for p in w.browser.image_paths())
    assert listed == sorted(f"{dcmread(f).SOPInstanceUID}.dcm" for f in files[:5])
    assert "4 new instance(s), 2 already in the cache, 1 non-image object(s)" in w.pacs.last_message
    qtbot.waitUntil(lambda: w.session.image is not None, timeout=30_000)  # the first image shows

    d = w.pacs.open_dialog()
    with qtbot.waitSignal(d.searchFinished, timeout=10_000) as blocker:
        d.search()
    assert blocker.args == [3]
    d.reject()


def test_pacs_down_reports_quickly_and_the_viewer_stays_usable(qtbot, make_window, cache):
    down = DimsePeer("down", "127.0.0.1", free_port(), "PACS")
    settings = load_settings()
    settings.set_peers([down])
    w = make_window(settings)
    d = w.pacs.open_dialog()
    t0 = time.monotonic()
    with qtbot.waitSignal(d.searchFinished, timeout=10_000) as blocker:
        d.search()
    assert blocker.args == [-1] and "no DICOM answer" in d.status.text()
    assert time.monotonic() - t0 < 5.0
    d.reject()

    with qtbot.waitSignal(w.pacs.retrieveFinished, timeout=10_000) as blocker:
        w.pacs.retrieve(down, ["1.2.3"])
    assert "no DICOM answer" in blocker.args[0].error and "Retrieve failed" in w.pacs.last_message
    with qtbot.waitSignal(w.scanFinished, timeout=30_000):  # still usable: opening a folder works
        assert w.open_path(sample_files()[0].parent)
    assert len(w.browser.image_paths()) == 6


def test_send_results_of_the_image_and_the_study_without_duplicates(
    qtbot, make_window, empty_orthanc, tmp_path
):
    settings = load_settings()
    settings.set_peers([_peer(empty_orthanc)])
    w = make_window(settings)
    with qtbot.waitSignals([w.scanFinished, w.analysisFinished], timeout=60_000):
        assert w.open_path(sample_files()[0].parent)
    peer = _peer(empty_orthanc)
    with qtbot.waitSignal(w.pacs.sendFinished, timeout=60_000) as blocker:
        w.pacs.send_results(peer, "image")
    r = blocker.args[0]
    assert len(r.sent) >= 1 and not r.failed
    source = dcmread(w.session.image.source, stop_before_pixels=True)
    stored = [empty_orthanc.rest(f"/instances/{i}/simplified-tags") for i in empty_orthanc.instances()]
    assert {s["StudyInstanceUID"] for s in stored} == {source.StudyInstanceUID}
    assert "SR" in {s["Modality"] for s in stored}

    with qtbot.waitSignal(w.pacs.sendFinished, timeout=60_000) as blocker:
        w.pacs.send_results(peer, "image")
    assert len(empty_orthanc.instances()) == len(stored)  # same SOP Instance UIDs: nothing stored twice

    with qtbot.waitSignal(w.pacs.sendFinished, timeout=60_000) as blocker:
        w.pacs.send_folder(peer, tmp_path / "nothing-here")
    assert [reason for _, reason in blocker.args[0].failed] == ["does not exist"]
    assert "1 failed: nothing-here: does not exist" in w.pacs.last_message

    out = tmp_path / "batch-out"  # a batch output: its dicom/ folder is what is sent
    shutil.copytree(sample_files()[0].parent, out / "dicom")
    with qtbot.waitSignal(w.pacs.sendFinished, timeout=60_000) as blocker:
        w.pacs.send_folder(peer, out)
    assert len(blocker.args[0].sent) == 6 and not blocker.args[0].failed
    assert len(empty_orthanc.instances()) == len(stored) + 6


def test_cancelled_retrieve_keeps_what_arrived_and_retrying_fetches_the_rest(
    qtbot, make_window, empty_orthanc, cache, tmp_path
):
    from PySide6 import QtWidgets

    study_uid, files = make_study(tmp_path / "in", 8, seed=22)
    for f in files:
        empty_orthanc.upload(f)
    w = make_window()
    peer = _peer(empty_orthanc)
    with qtbot.waitSignal(w.pacs.retrieveFinished, timeout=30_000) as blocker:
        w.pacs.retrieve(peer, [study_uid])
        w.pacs.progress.findChild(QtWidgets.QPushButton).click()  # the user presses Cancel
    first = blocker.args[0]
    assert first.cancelled and "Retrieve cancelled" in w.pacs.last_message
    kept = {p.stem for p in (cache / study_uid).glob("*.dcm")}
    assert len(kept) == first.fetched < 8

    with qtbot.waitSignal(w.pacs.retrieveFinished, timeout=30_000) as blocker:
        w.pacs.retrieve(peer, [study_uid])
    again = blocker.args[0]
    assert not again.cancelled and again.already_present == len(kept) and again.fetched == 8 - len(kept)
    assert len(w.browser.image_paths()) == 8
