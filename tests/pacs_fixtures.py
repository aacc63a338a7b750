"""A real PACS for the tests: Debian's Orthanc (with its DICOMweb plugin) as a plain process.

A pytest plugin (``pytest_plugins = ("tests.pacs_fixtures",)``). The session-scoped :func:`orthanc` fixture writes
a temporary JSON configuration (DICOM and HTTP ports chosen free on the loopback interface, storage and index in a
temporary folder, no remote access, no authentication, our AE registered as a modality for C-MOVE), starts
``/usr/sbin/Orthanc``, waits until its REST API answers and stops it at the end of the session. Tests that need an
empty server call :meth:`OrthancServer.clear`. Missing Orthanc fails the test (``.ci/run`` installs it): a PACS
test that skips cannot fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pacs_helpers import free_port

ORTHANC = os.environ.get("PNEUMOVIEW_TEST_ORTHANC", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
SERVER_AET = "ORTHANC"
OUR_AET = "PNEUMOVIEW"


@dataclass
class OrthancServer:
    """A running Orthanc: DIMSE on ``host:dicom_port`` (AE ``aet``), REST on ``http_url``, DICOMweb on
    ``dicomweb_url``; ``our_aet``/``our_port`` is the storage SCP Orthanc sends C-MOVE results to."""

    host: str
    dicom_port: int
    http_port: int
    aet: str
    our_aet: str
    our_port: int
    process: subprocess.Popen
    folder: Path

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def rest(self, path: str, method: str = "GET", body: bytes | None = None):
        request = urllib.request.Request(self.http_url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return json.loads(data) if data else None

    def instances(self) -> list[str]:
        """Orthanc ids of every instance stored."""
        return self.rest("/instances")

    def sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every stored instance."""
        out = set()
        for oid in self.instances():
            out.add(self.rest(f"/instances/{oid}")["MainDicomTags"]["SOPInstanceUID"])
        return out

    def upload(self, path: Path) -> None:
        """Store one file through the REST API (not through the code under test)."""
        self.rest("/instances", "POST", Path(path).read_bytes())

    def clear(self) -> None:
        """Delete every patient (and so every study and instance)."""
        for pid in self.rest("/patients"):
            self.rest(f"/patients/{pid}", "DELETE")

    def answers(self) -> bool:
        try:
            self.rest("/system")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def start_again(self, timeout_s: float = 30.0) -> None:
        """Start the stopped server again with the same configuration, ports and storage."""
        log = (self.folder / "orthanc.log").open("ab")
        cfg = self.folder / "orthanc.json"
        self.process = subprocess.Popen(
            [ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
        )
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Orthanc did not start again", pytrace=False)
            time.sleep(0.1)

    def kill(self) -> None:
        """Kill the server at once (a PACS that dies mid-transfer)."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def dicomweb_plugin() -> str:
    for candidate in DICOMWEB_PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    pytest.fail(
        "the Orthanc DICOMweb plugin is missing: install Debian's 'orthanc-dicomweb' (.ci/run does)",
        pytrace=False,
    )


def start_orthanc(folder: Path, timeout_s: float = 30.0) -> OrthancServer:
    """Start Orthanc with a fresh configuration and storage in ``folder``; returns once its REST API answers."""
    if not Path(ORTHANC).is_file():
        pytest.fail(f"{ORTHANC} is missing: install Debian's 'orthanc' package (.ci/run does)", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port, our_port = free_port(), free_port(), free_port()
    config = {
        "Name": "pneumoview-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "DicomAet": SERVER_AET,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,  # a wrong called AE title is rejected, as most PACS do
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomModalities": {"pneumoview": [OUR_AET, "127.0.0.1", our_port]},
        "Plugins": [dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpCompressionEnabled": False,
        "SaveJobs": False,
        "StableAge": 1,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1), encoding="utf-8")
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = OrthancServer("127.0.0.1", dicom_port, http_port, SERVER_AET, OUR_AET, our_port, process, folder)
    deadline = time.monotonic() + timeout_s
    while not server.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            text = (folder / "orthanc.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"Orthanc did not start (exit {process.poll()}):\n{text}", pytrace=False)
        time.sleep(0.1)
    return server


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> OrthancServer:
    """One real Orthanc for the whole session (see the module docstring)."""
    folder = tmp_path_factory.mktemp("orthanc")
    server = start_orthanc(folder)
    yield server
    server.stop()
    shutil.rmtree(folder / "storage", ignore_errors=True)


@pytest.fixture
def empty_orthanc(orthanc: OrthancServer) -> OrthancServer:
    """The session's Orthanc, emptied before the test."""
    orthanc.clear()
    return orthanc
