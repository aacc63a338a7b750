"""The CI runner's freeze handling (tests/run_resuming.py, tests/journal_plugin.py) on small real pytest runs:
a test that hangs is ended by faulthandler's watchdog, and only a freeze — never a failure — is run again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.journal_plugin import read_journal
from tests.run_resuming import main

REPO = Path(__file__).resolve().parents[1]

SUITE = """
import os, time
from pathlib import Path

LOG = Path(os.environ["RUNS_LOG"])


def _ran(name):
    with LOG.open("a") as f:
        f.write(name + "\\n")


def test_one():
    _ran("one")


def test_two():
    _ran("two")
    marker = Path(os.environ["FREEZE_MARKER"])
    if os.environ.get("FREEZE") == "always" or not marker.exists():
        marker.touch()
        time.sleep(60)  # the watchdog (faulthandler_timeout = 2) ends the process


def test_three():
    _ran("three")
    assert os.environ.get("FAIL_THREE") != "1"
"""


@pytest.fixture
def suite(tmp_path, monkeypatch) -> Path:
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfaulthandler_timeout = 2\nfaulthandler_exit_on_timeout = true\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    monkeypatch.setenv("FREEZE_MARKER", str(tmp_path / "hung-once"))
    return tmp_path


def runs(suite: Path) -> list[str]:
    return (suite / "runs.log").read_text().split()


def test_a_freeze_is_run_again_from_the_frozen_test_once(suite, capsys):
    assert main(["-p", "tests.journal_plugin", "-q", "-p", "no:cacheprovider"]) == 0
    out = capsys.readouterr().out
    assert "Timeout (0:00:02)!" in out, "faulthandler printed the stacks of the frozen run"
    assert "froze in test_suite.py::test_two" in out
    assert "1 deselected" in out and "2 passed" in out
    assert runs(suite) == ["one", "two", "two", "three"], "test_one passed and is not run again"


def test_a_second_freeze_fails_the_run(suite, monkeypatch, capsys):
    monkeypatch.setenv("FREEZE", "always")
    assert main(["-p", "tests.journal_plugin", "-q", "-p", "no:cacheprovider"]) != 0
    assert runs(suite) == ["one", "two", "two"]
    assert capsys.readouterr().out.count("Timeout (0:00:02)!") == 2


def test_a_failure_before_the_freeze_is_never_run_again(suite, monkeypatch, capsys):
    failing_first = SUITE.replace("def test_two", "def test_fails():\n    assert False\n\n\ndef test_two")
    (suite / "test_suite.py").write_text(failing_first)
    assert main(["-p", "tests.journal_plugin", "-q", "-p", "no:cacheprovider"]) != 0
    assert "not resuming" in capsys.readouterr().out
    assert runs(suite) == ["one", "two"]


def test_a_plain_failure_is_its_exit_status_and_nothing_is_rerun(suite, monkeypatch, capsys):
    (suite / "hung-once").touch()
    monkeypatch.setenv("FAIL_THREE", "1")
    assert main(["-p", "tests.journal_plugin", "-q", "-p", "no:cacheprovider"]) == 1
    assert runs(suite) == ["one", "two", "three"]
    assert "the interpreter froze" not in capsys.readouterr().out


def test_journal_records_each_test_once_ended(tmp_path):
    journal = tmp_path / "j"
    journal.write_text("start a::x\npassed a::x\nstart a::y\nfailed a::y\nstart a::z\n")
    assert read_journal(journal) == {"a::x": "passed", "a::y": "failed", "a::z": "start"}
