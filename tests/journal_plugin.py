"""A test journal, so that a run whose interpreter froze can go on where it stopped (a pytest plugin, loaded by
``tests/conftest.py``).

``--journal FILE`` appends one line per test as it goes: ``start <nodeid>`` when it begins, then ``passed``,
``skipped`` or ``failed <nodeid>`` when it ends (every phase counted: a failing teardown is a failure). Lines are
flushed at once, so the file is complete up to the moment the process stopped, even after ``os._exit``.

``--resume-from FILE`` deselects the tests that FILE records as passed or skipped. ``.ci/run`` uses the pair: when
a run is ended by the faulthandler watchdog (``faulthandler_exit_on_timeout``: a test stuck for 10 minutes) and no
test had failed, it runs the tests that had not finished once more, and a second freeze fails the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_ENDED = ("passed", "skipped")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("journal", "test journal (resuming a run whose interpreter froze)")
    group.addoption(
        "--journal", metavar="FILE", help="append 'start'/'passed'/'skipped'/'failed <nodeid>' lines"
    )
    group.addoption(
        "--resume-from", metavar="FILE", help="deselect the tests FILE records as passed or skipped"
    )


def read_journal(path: Path) -> dict[str, str]:
    """The last recorded state of every test in the journal at ``path``: ``{nodeid: 'start'|'passed'|…}``."""
    states: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        state, _, nodeid = line.partition(" ")
        if nodeid:
            states[nodeid] = state
    return states


class Journal:
    """Writes the journal; a test's outcome is its worst phase (failed > skipped > passed)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._outcome: dict[str, str] = {}

    def write(self, state: str, nodeid: str) -> None:
        self._file.write(f"{state} {nodeid}\n")
        self._file.flush()

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.write("start", nodeid)

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self._outcome[report.nodeid] = "failed"
        elif report.skipped and self._outcome.get(report.nodeid) != "failed":
            self._outcome[report.nodeid] = "skipped"

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.write(self._outcome.pop(nodeid, "passed"), nodeid)

    def close(self) -> None:
        self._file.close()


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--journal")
    if path:
        journal = Journal(Path(path))
        config.pluginmanager.register(journal, "pneumoview-journal")
        config.add_cleanup(journal.close)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = config.getoption("--resume-from")
    if not path:
        return
    states = read_journal(Path(path))
    done = [item for item in items if states.get(item.nodeid) in _ENDED]
    if done:
        config.hook.pytest_deselected(items=done)
        items[:] = [item for item in items if states.get(item.nodeid) not in _ENDED]
