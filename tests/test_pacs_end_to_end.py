"""End to end with a real PACS: send the sample study to Orthanc, find it, retrieve it into a fresh cache, analyse
it with ``predict --dicom``, send the SR/SEG back, find them on the server, retrieve them and compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread

from pneumoview.cli import main
from pneumoview.dicom_results import read_result
from tests.model_fixtures import equivariant_models_dir
from tests.pacs_helpers import sample_files

pytest_plugins = ("tests.pacs_fixtures",)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return equivariant_models_dir(tmp_path_factory.mktemp("models"))


def test_round_trip_through_orthanc(empty_orthanc, models, tmp_path, capsys, monkeypatch):
    pacs = ["--host", empty_orthanc.host, "--port", str(empty_orthanc.dicom_port), "--aet", empty_orthanc.aet]
    sample = sample_files()
    assert main(["pacs", "send", str(sample[0].parent), *pacs]) == 0
    capsys.readouterr()

    assert main(["pacs", "find", "--json", *pacs]) == 0
    studies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    uids = sorted(s["StudyInstanceUID"] for s in studies)
    assert uids == sorted(str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in sample)

    monkeypatch.setenv("PNEUMOVIEW_PACS_CACHE", str(tmp_path / "cache"))  # a fresh cache, the default place
    assert main(["pacs", "get", *uids, *pacs]) == 0
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == uids

    out = tmp_path / "out"
    predict = ["predict", str(cache), "--out", str(out), "--models-dir", str(models), "--device", "cpu",
               "--quiet", "--no-png", "--gate", "0", "--dicom"]  # fmt: skip
    assert main(predict) == 0
    results = sorted((out / "dicom").glob("*.dcm"))
    srs = [p for p in results if p.name.endswith("_SR.dcm")]
    assert len(srs) == 6  # one SR per analysed image, always
    assert any(p.name.endswith("_SEG.dcm") for p in results)  # the test models' masks are never empty here
    capsys.readouterr()

    assert main(["pacs", "send", str(out / "dicom"), *pacs]) == 0
    assert f"{len(results)} sent, 0 failed" in capsys.readouterr().out

    assert main(["pacs", "find", "--json", *pacs]) == 0
    after = {s["StudyInstanceUID"]: s for s in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(after) == uids  # the results joined the source studies, no new study
    per_study: dict[str, list[Path]] = {}
    for p in results:
        per_study.setdefault(str(dcmread(p, stop_before_pixels=True).StudyInstanceUID), []).append(p)
    for uid in uids:
        assert after[uid]["NumberOfStudyRelatedInstances"] == 1 + len(per_study[uid])
        assert "SR" in after[uid]["ModalitiesInStudy"]

    monkeypatch.setenv("PNEUMOVIEW_PACS_CACHE", str(tmp_path / "cache2"))
    assert main(["pacs", "get", *uids, *pacs]) == 0
    for uid in uids:
        got = {dcmread(p).SOPInstanceUID: p for p in (tmp_path / "cache2" / uid).glob("*.dcm")}
        for sent in per_study[uid]:
            original = dcmread(sent)
            back = dcmread(got[original.SOPInstanceUID])
            assert back == original  # every attribute as written
            if sent.name.endswith("_SR.dcm"):
                assert read_result(got[original.SOPInstanceUID]).regions == read_result(sent).regions
    # Sending the results again stores nothing twice.
    n = len(empty_orthanc.instances())
    assert main(["pacs", "send", str(out / "dicom"), *pacs]) == 0
    assert len(empty_orthanc.instances()) == n == 6 + len(results)
