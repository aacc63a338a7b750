"""pneumoview.pacs against a real Orthanc (tests/pacs_fixtures.py): echo, find, retrieve, send, and the faults."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from pneumoview.pacs import (
    AssociationRejected,
    DimsePeer,
    PacsError,
    PacsUnreachable,
    StudyQuery,
    WebPeer,
    echo,
    find_studies,
    peer_from_dict,
    peer_to_dict,
    retrieve_study,
    send_files,
)
from tests.pacs_helpers import free_port, make_study, sample_files

pytest_plugins = ("tests.pacs_fixtures",)


def dimse_peer(server, **changes) -> DimsePeer:
    peer = DimsePeer("orthanc", server.host, server.dicom_port, server.aet, server.our_aet, server.our_port)
    return dataclasses.replace(peer, **changes)


def web_peer(server, **changes) -> WebPeer:
    return dataclasses.replace(WebPeer("orthanc-web", server.dicomweb_url), **changes)


@pytest.fixture(params=["dimse", "dicomweb"])
def peer(request, empty_orthanc):
    return dimse_peer(empty_orthanc) if request.param == "dimse" else web_peer(empty_orthanc)


# -- peers ------------------------------------------------------------------------------------------------------


def test_peers_round_trip_and_refuse_bad_values():
    for p in (
        DimsePeer("a", "pacs.local", 104, "PACS", retrieve="move", our_port=11112),
        WebPeer("w", "http://x/dw/"),
    ):
        assert peer_from_dict(peer_to_dict(p)) == p
    assert WebPeer("w", "http://x/dw/").url == "http://x/dw"
    with pytest.raises(ValueError, match="AE title"):
        DimsePeer("a", "h", 104, "A" * 17)
    with pytest.raises(ValueError, match="port"):
        DimsePeer("a", "h", 0, "PACS")
    with pytest.raises(ValueError, match="C-MOVE needs our storage port"):
        DimsePeer("a", "h", 104, "PACS", retrieve="move")
    with pytest.raises(ValueError, match="http"):
        WebPeer("w", "ftp://x")
    with pytest.raises(ValueError, match="unknown PACS peer kind"):
        peer_from_dict({"kind": "carrier-pigeon"})


# -- the happy paths, DIMSE and DICOMweb ------------------------------------------------------------------------


def test_echo(peer):
    echo(peer)


def test_send_find_and_retrieve_the_sample_study(peer, tmp_path):
    files = sample_files()
    # A folder: its CSV and Markdown files are skipped, not failures.
    sent = send_files(peer, [files[0].parent])
    assert sorted(sent.sent) == files and not sent.failed
    assert {p.name for p in sent.skipped} == {"ATTRIBUTION.md", "labels.csv"}

    studies = find_studies(peer, StudyQuery())
    originals = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID): f for f in files}
    assert {s.study_uid for s in studies} == set(originals)
    one = dcmread(files[2], stop_before_pixels=True)
    by_id = find_studies(peer, StudyQuery(patient_id=str(one.PatientID)))
    assert [s.study_uid for s in by_id] == [one.StudyInstanceUID]
    assert by_id[0].modalities == ("CR",) and by_id[0].n_instances == 1
    assert len(find_studies(peer, StudyQuery(patient_name=str(one.PatientName)[:8] + "*"))) >= 1
    assert len(find_studies(peer, StudyQuery(modality="CR"))) == 6
    assert find_studies(peer, StudyQuery(modality="MR")) == []
    assert find_studies(peer, StudyQuery(accession="NO-SUCH-ACC")) == []
    in_1901 = find_studies(peer, StudyQuery(date_from=dt.date(1901, 1, 1), date_to=dt.date(1901, 1, 1)))
    assert len(in_1901) == 6  # RSNA files carry Study Date 19010101
    assert find_studies(peer, StudyQuery(date_from=dt.date(2000, 1, 1))) == []

    seen = []
    result = retrieve_study(
        peer, one.StudyInstanceUID, tmp_path / "cache", progress=lambda *a: seen.append(a)
    )
    assert result.complete and len(result.fetched) == 1 and seen[-1][:2] == (1, 1)
    got, want = dcmread(result.fetched[0]), dcmread(files[2])
    assert got.SOPInstanceUID == want.SOPInstanceUID
    # It arrives as stored (JPEG baseline), not transcoded.
    assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
    assert got.PixelData == want.PixelData


def test_retrieve_by_c_move_to_our_storage_scp(empty_orthanc, tmp_path):
    study_uid, files = make_study(tmp_path / "in", 3, seed=1)
    peer = dimse_peer(empty_orthanc, retrieve="move")
    assert len(send_files(peer, files).sent) == 3
    result = retrieve_study(peer, study_uid, tmp_path / "cache")
    assert result.complete and len(result.fetched) == 3
    assert {dcmread(p).SOPInstanceUID for p in result.fetched} == {dcmread(p).SOPInstanceUID for p in files}


# -- faults -----------------------------------------------------------------------------------------------------


def test_retrieve_stopped_half_way_keeps_what_arrived_and_a_retry_fetches_only_the_rest(peer, tmp_path):
    study_uid, files = make_study(tmp_path / "in", 8, seed=2)
    assert len(send_files(peer, files).sent) == 8
    folder = tmp_path / "cache" / study_uid
    arrived = []

    def progress(done, total, path):
        arrived.append(path)

    first = retrieve_study(peer, study_uid, folder, progress=progress, cancelled=lambda: len(arrived) >= 3)
    assert first.cancelled and not first.complete
    kept = {p.stem for p in folder.glob("*.dcm")}
    assert len(kept) >= 3 and kept == {p.stem for p in first.fetched}
    assert len(kept) < 8 and first.missing == first.expected - kept
    assert not list(folder.glob(".*.tmp"))  # nothing half-written is left behind
    for p in first.fetched:
        dcmread(p)  # every kept file is complete

    second = retrieve_study(peer, study_uid, folder)
    assert second.complete and second.already_present == kept
    assert {p.stem for p in second.fetched} == second.expected - kept  # only the rest was fetched
    third = retrieve_study(peer, study_uid, folder)
    assert third.complete and third.fetched == [] and len(third.already_present) == 8


def test_sending_twice_stores_no_duplicate(peer, empty_orthanc, tmp_path):
    _study_uid, files = make_study(tmp_path / "in", 4, seed=3)
    assert len(send_files(peer, files).sent) == 4
    assert len(empty_orthanc.instances()) == 4
    again = send_files(peer, files)
    assert len(again.sent) == 4 and not again.failed
    assert len(empty_orthanc.instances()) == 4
    assert empty_orthanc.sop_instance_uids() == {str(dcmread(f).SOPInstanceUID) for f in files}


def test_non_image_objects_in_a_study_arrive_and_are_reported(peer, tmp_path):
    study_uid, files = make_study(tmp_path / "in", 2, with_ecg=True, seed=4)
    assert len(send_files(peer, files).sent) == 3
    result = retrieve_study(peer, study_uid, tmp_path / "cache")
    assert result.complete and len(result.fetched) == 3
    assert [dcmread(p).SOPClassUID.name for p in result.non_images] == ["12-lead ECG Waveform Storage"]


def test_a_named_file_that_is_not_dicom_is_a_failure_and_nothing_to_send_is_an_error(peer, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("not DICOM")
    result = send_files(peer, [note, sample_files()[0], tmp_path / "gone.dcm"])
    assert result.sent == [sample_files()[0]]
    assert {p.name for p, _ in result.failed} == {"note.txt", "gone.dcm"}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PacsError, match="nothing to send"):
        send_files(peer, [empty])


def test_wrong_called_ae_title_is_rejected_and_says_so(orthanc):
    with pytest.raises(AssociationRejected, match=r"rejected the association.*AE title \(WRONGAET\)"):
        echo(dimse_peer(orthanc, aet="WRONGAET"))


def test_pacs_down_is_reported_within_five_seconds(tmp_path):
    closed = free_port()  # nothing listens there
    for peer in (
        DimsePeer("down", "127.0.0.1", closed, "ORTHANC"),
        WebPeer("down", f"http://127.0.0.1:{closed}/dicom-web"),
    ):
        t0 = time.monotonic()
        with pytest.raises(PacsUnreachable, match="no (DICOM|DICOMweb) answer"):
            echo(peer)
        with pytest.raises(PacsUnreachable):
            find_studies(peer)
        assert time.monotonic() - t0 < 5.0


def test_a_pacs_that_accepts_but_never_answers_times_out(tmp_path):
    # A hung server: the TCP connection is accepted, then nothing is ever said.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        for peer in (
            DimsePeer("hung", "127.0.0.1", port, "ORTHANC", timeout_s=1.5),
            WebPeer("hung", f"http://127.0.0.1:{port}/dicom-web", timeout_s=1.5),
        ):
            t0 = time.monotonic()
            with pytest.raises(PacsUnreachable):
                echo(peer)
            assert time.monotonic() - t0 < 1.5 + 2.0  # the timeout, plus slack for a loaded CI machine
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        server.close()


def test_retrieve_of_an_unknown_study_says_so(peer, tmp_path):
    with pytest.raises(PacsError, match="no instances for study 1.2.3.4"):
        retrieve_study(peer, "1.2.3.4", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_default_cache_is_under_the_user_data_dir(monkeypatch, tmp_path):
    from pneumoview.pacs import cache_root, study_folder

    monkeypatch.delenv("PNEUMOVIEW_PACS_CACHE", raising=False)
    assert "PneumoView" in str(cache_root()) and cache_root().name == "pacs-cache"
    monkeypatch.setenv("PNEUMOVIEW_PACS_CACHE", str(tmp_path))
    assert study_folder(cache_root(), "1.2.3") == tmp_path / "1.2.3"
    with pytest.raises(ValueError, match="not a DICOM UID"):
        study_folder(tmp_path, "../../etc")
    assert isinstance(Path(cache_root()), Path)


def test_settings_keep_valid_peers_and_drop_bad_ones(tmp_path, caplog):
    import json

    from pneumoview.settings import load_settings

    good = peer_to_dict(WebPeer("web", "http://127.0.0.1:8042/dicom-web"))
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps({"pacs_peers": [good, {"kind": "dimse", "name": "bad", "host": "h", "port": 0}]})
    )
    settings = load_settings(path)
    assert settings.get_peers() == [WebPeer("web", "http://127.0.0.1:8042/dicom-web")]
    assert "ignoring a saved PACS peer" in caplog.text


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_a_pacs_that_dies_half_way_keeps_what_arrived_and_a_retry_fetches_the_rest(kind, tmp_path):
    from tests.pacs_fixtures import start_orthanc

    server = start_orthanc(tmp_path / "orthanc")  # its own server: this test kills it
    try:
        peer = dimse_peer(server) if kind == "dimse" else web_peer(server)
        study_uid, files = make_study(tmp_path / "in", 8, seed=5)
        for f in files:
            server.upload(f)
        folder = tmp_path / "cache" / study_uid
        arrived = []

        def progress(done, total, path):
            arrived.append(path)
            if len(arrived) == 3:
                server.kill()

        with pytest.raises(
            PacsError, match=r"(\d) of 8 instance\(s\) are in .*; retrieve again to fetch the rest"
        ):
            retrieve_study(peer, study_uid, folder, progress=progress)
        kept = {p.stem for p in folder.glob("*.dcm")}
        assert 3 <= len(kept) < 8
        for p in folder.glob("*.dcm"):
            dcmread(p)  # complete files only

        server.start_again()
        again = retrieve_study(peer, study_uid, folder)
        assert again.complete and again.already_present == kept
        assert {p.stem for p in again.fetched} == again.expected - kept
    finally:
        server.stop()
