"""PACS speed: PneumoView's pneumoview.pacs (DIMSE and DICOMweb) versus dcmtk's findscu/getscu/storescu, on the
same real Orthanc in the same run.

Run: ``.venv/bin/python benchmarks/bench_pacs.py [--repeats 5]`` (needs Debian's orthanc, orthanc-dicomweb and
dcmtk).

It starts Orthanc on free loopback ports (tests/pacs_fixtures.py) and stores, through Orthanc's REST API:

* 100 one-image studies (the sample study's real radiographs with new UIDs) to **list** (study-level C-FIND /
  QIDO-RS returning all 100);
* one 20-image study (the same real JPEG-baseline radiographs, 20 instances, ~3.4 MB) to **retrieve** into an empty
  folder (C-GET / WADO-RS; dcmtk: ``getscu``);
* 20 results to **send**: the DICOM results (TID 1500 SR + SEG) PneumoView writes for 10 of those images with
  deterministic model outputs (the tests' ``model_outputs``), deleted from the server before each repeat
  (C-STORE / STOW-RS; dcmtk: ``storescu``).

Each task runs ``--repeats`` times; the table shows the median and the best wall time. The dcmtk tools run as
child processes, so their time includes process start-up (as it does for a script that calls them).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom import dcmread  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from pneumoview import pacs  # noqa: E402
from tests.pacs_fixtures import start_orthanc  # noqa: E402
from tests.pacs_helpers import make_study, sample_files  # noqa: E402


def timed(func: Callable[[], object], repeats: int, before: Callable[[], None] | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return times


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def make_studies(dest: Path, n: int) -> list[Path]:
    dest.mkdir(parents=True)
    out = []
    sources = sample_files()
    for i in range(n):
        ds = dcmread(sources[i % len(sources)])
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = ds.PatientName = f"BENCH-{i:03d}"
        path = dest / f"s{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def make_results(images: list[Path], dest: Path) -> list[Path]:
    from pneumoview.dicom_results import write_results
    from pneumoview.imaging import load_image
    from pneumoview.postprocess import postprocess
    from pneumoview.thresholds import Thresholds
    from tests.dicom_checks import model_outputs

    written: list[Path] = []
    for path in images:
        image = load_image(path)
        result = model_outputs(image)
        findings = postprocess(result, Thresholds(), spacing_mm=image.spacing_mm)
        written += write_results(image, result, findings, dest)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for tool in ("findscu", "getscu", "storescu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: install Debian's dcmtk")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    server = start_orthanc(tmp / "orthanc")
    try:
        return _bench(server, tmp, args.repeats)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _bench(server, tmp: Path, repeats: int) -> int:
    dimse = pacs.DimsePeer("bench", server.host, server.dicom_port, server.aet, "BENCHSCU")
    web = pacs.WebPeer("bench", server.dicomweb_url)
    hp = [server.host, str(server.dicom_port), "-aet", "BENCHSCU", "-aec", server.aet]

    for f in make_studies(tmp / "hundred", 100):
        server.upload(f)
    study_uid, images = make_study(tmp / "twenty", 20, seed=99)
    for f in images:
        server.upload(f)
    results = make_results(images[:10], tmp / "results")
    assert len(results) == 20, f"expected 20 result objects, got {len(results)}"
    result_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in results}
    n_studies = len(pacs.find_studies(dimse))
    assert n_studies == 101, n_studies

    rows: list[tuple[str, str, list[float]]] = []

    # -- list 100 studies
    rows.append(("list 101 studies", "pneumoview C-FIND", timed(lambda: pacs.find_studies(dimse), repeats)))
    rows.append(("list 101 studies", "pneumoview QIDO-RS", timed(lambda: pacs.find_studies(web), repeats)))
    find_cmd = ["findscu", "-S", *hp, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k",
                "PatientName", "-k", "PatientID", "-k", "StudyDate", "-k", "ModalitiesInStudy", "-k",
                "NumberOfStudyRelatedInstances"]  # fmt: skip
    rows.append(("list 101 studies", "dcmtk findscu", timed(lambda: run(find_cmd), repeats)))

    # -- retrieve the 20-image study into an empty folder (getscu +xy: JPEG baseline accepted as stored, as ours)
    target = tmp / "retrieved"

    def fresh() -> None:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()

    def check(n: int = 20) -> None:
        got = len([p for p in target.iterdir() if p.is_file()])
        assert got == n, f"retrieved {got} files, expected {n}"

    def ours_get() -> None:
        r = pacs.retrieve_study(dimse, study_uid, target)
        assert r.complete and len(r.fetched) == 20

    def ours_wado() -> None:
        r = pacs.retrieve_study(web, study_uid, target)
        assert r.complete and len(r.fetched) == 20

    get_cmd = ["getscu", "-S", *hp, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
               "+xy", "-od", str(target)]  # fmt: skip
    rows.append(("retrieve a 20-image study", "pneumoview C-GET", timed(ours_get, repeats, fresh)))
    rows.append(("retrieve a 20-image study", "pneumoview WADO-RS", timed(ours_wado, repeats, fresh)))
    rows.append(("retrieve a 20-image study", "dcmtk getscu", timed(lambda: run(get_cmd), repeats, fresh)))
    check()

    # -- send 20 results (deleted from the server before each repeat)
    def delete_results() -> None:
        for oid in server.instances():
            if server.rest(f"/instances/{oid}")["MainDicomTags"]["SOPInstanceUID"] in result_uids:
                server.rest(f"/instances/{oid}", "DELETE")

    def ours_store() -> None:
        assert len(pacs.send_files(dimse, results).sent) == 20

    def ours_stow() -> None:
        assert len(pacs.send_files(web, results).sent) == 20

    store_cmd = ["storescu", *hp, "-R", *map(str, results)]
    rows.append(
        ("send 20 results (SR + SEG)", "pneumoview C-STORE", timed(ours_store, repeats, delete_results))
    )
    rows.append(
        ("send 20 results (SR + SEG)", "pneumoview STOW-RS", timed(ours_stow, repeats, delete_results))
    )
    rows.append(
        (
            "send 20 results (SR + SEG)",
            "dcmtk storescu",
            timed(lambda: run(store_cmd), repeats, delete_results),
        )
    )
    assert len(server.sop_instance_uids() & result_uids) == 20

    print(
        f"Orthanc 1.x on loopback; {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"{'task':28} {'client':22} {'median s':>9} {'best s':>8}")
    for task, client, times in rows:
        print(f"{task:28} {client:22} {statistics.median(times):9.3f} {min(times):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
