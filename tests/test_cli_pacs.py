"""``pneumoview pacs echo|find|get|send`` against the real Orthanc, with the documented exit codes."""

from __future__ import annotations

import json
import time

from pydicom import dcmread

from pneumoview.cli import main
from pneumoview.pacs import DimsePeer
from pneumoview.settings import Settings, save_settings
from tests.pacs_helpers import free_port, make_study, sample_files

pytest_plugins = ("tests.pacs_fixtures",)


def dimse_args(server) -> list[str]:
    return ["--host", server.host, "--port", str(server.dicom_port), "--aet", server.aet]


def test_send_find_get_round_trip_and_resume(empty_orthanc, tmp_path, capsys):
    folder = sample_files()[0].parent
    assert main(["pacs", "send", str(folder), *dimse_args(empty_orthanc)]) == 0
    assert "6 sent, 0 failed, 2 non-DICOM file(s) skipped" in capsys.readouterr().out

    assert main(["pacs", "find", "--json", "--modality", "CR", *dimse_args(empty_orthanc)]) == 0
    lines = capsys.readouterr().out.splitlines()
    studies = [json.loads(line) for line in lines]
    want = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in sample_files()}
    assert {s["StudyInstanceUID"] for s in studies} == want
    assert all(s["ModalitiesInStudy"] == ["CR"] and s["NumberOfStudyRelatedInstances"] == 1 for s in studies)

    for peer in (dimse_args(empty_orthanc), ["--url", empty_orthanc.dicomweb_url]):
        assert main(["pacs", "find", "--json", "--limit", "2", *peer]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2

    uid = sorted(want)[0]
    out = tmp_path / "out"
    assert main(["pacs", "get", uid, "--out", str(out), *dimse_args(empty_orthanc)]) == 0
    assert f"{uid}: 1 fetched, 0 already there" in capsys.readouterr().out
    assert [dcmread(p).StudyInstanceUID for p in (out / uid).glob("*.dcm")] == [uid]
    assert main(["pacs", "get", uid, "--out", str(out), *dimse_args(empty_orthanc)]) == 0
    assert f"{uid}: 0 fetched, 1 already there" in capsys.readouterr().out


def test_dicomweb_url_and_a_saved_peer(empty_orthanc, tmp_path, capsys, monkeypatch):
    study_uid, files = make_study(tmp_path / "in", 2, seed=11)
    assert main(["pacs", "send", *map(str, files), "--url", empty_orthanc.dicomweb_url]) == 0
    assert "2 sent, 0 failed" in capsys.readouterr().out
    assert (
        main(["pacs", "find", "--json", "--patient-id", "PACS-TEST-11", "--url", empty_orthanc.dicomweb_url])
        == 0
    )
    assert [json.loads(line)["StudyInstanceUID"] for line in capsys.readouterr().out.splitlines()] == [
        study_uid
    ]

    monkeypatch.setenv("PNEUMOVIEW_CONFIG_DIR", str(tmp_path / "config"))
    settings = Settings()
    settings.set_peers(
        [DimsePeer("hospital", empty_orthanc.host, empty_orthanc.dicom_port, empty_orthanc.aet)]
    )
    save_settings(settings)
    assert main(["pacs", "echo", "--peer", "hospital"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["pacs", "get", study_uid, "--peer", "hospital", "--out", str(tmp_path / "got")]) == 0
    assert len(list((tmp_path / "got" / study_uid).glob("*.dcm"))) == 2
    capsys.readouterr()
    assert main(["pacs", "echo", "--peer", "nope"]) == 2
    assert "no saved PACS peer named 'nope' (saved: hospital)" in capsys.readouterr().err


def test_exit_codes_for_failures_and_setup_errors(orthanc, tmp_path, capsys):
    note = tmp_path / "note.txt"
    note.write_text("not DICOM")
    assert main(["pacs", "send", str(note), str(sample_files()[0]), *dimse_args(orthanc)]) == 1
    assert "note.txt: not a DICOM file" in capsys.readouterr().err

    assert main(["pacs", "get", "1.2.3.4", "--out", str(tmp_path / "o"), *dimse_args(orthanc)]) == 1
    assert "no instances for study 1.2.3.4" in capsys.readouterr().err

    assert (
        main(["pacs", "echo", "--host", "127.0.0.1", "--port", str(orthanc.dicom_port), "--aet", "WRONG"])
        == 2
    )
    assert "rejected the association" in capsys.readouterr().err

    t0 = time.monotonic()
    assert main(["pacs", "find", "--host", "127.0.0.1", "--port", str(free_port()), "--aet", "X"]) == 2
    assert time.monotonic() - t0 < 5.0
    assert "no DICOM answer" in capsys.readouterr().err

    assert main(["pacs", "find"]) == 2
    assert "--host --port --aet" in capsys.readouterr().err
    assert main(["pacs", "find", "--date-from", "yesterday", "--url", "http://x"]) == 2
    assert main(["pacs", "get", "../../etc", "--out", str(tmp_path), *dimse_args(orthanc)]) == 2
    assert "not a DICOM UID" in capsys.readouterr().err
    assert main(["pacs", "get", "1.2.3", "--move", *dimse_args(orthanc)]) == 2
    assert "C-MOVE needs our storage port" in capsys.readouterr().err
