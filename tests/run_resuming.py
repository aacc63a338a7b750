"""Run pytest; if the interpreter froze, run the tests that had not finished once more (used by ``.ci/run``).

    python -m tests.run_resuming [pytest arguments]

A freeze is a run ended by pytest's faulthandler watchdog (``faulthandler_exit_on_timeout``: one test stuck for
``faulthandler_timeout`` seconds; it prints every thread's stack, then exits). It is told from a failure or a
crash by faulthandler's ``Timeout (h:mm:ss)!`` line together with a journal (:mod:`tests.journal_plugin`) whose
last test started and never ended. Then, and only when no test had failed before it, the tests that had not passed
are run again, once; a second freeze, a crash or any failure is the exit status. Everything pytest prints goes
through unchanged.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.journal_plugin import read_journal

_FREEZE = re.compile(r"Timeout \(\d+:\d\d:\d\d\)!")  # faulthandler's line, often after progress dots


def run_pytest(args: list[str], journal: Path) -> tuple[int, str]:
    """Run pytest with ``--journal``; its exit status and everything it printed (also echoed as it comes)."""
    cmd = [sys.executable, "-m", "pytest", *args, f"--journal={journal}"]  # one token: never taken for a path
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        printed.append(line)
    return proc.wait(), "".join(printed)


def frozen_test(status: int, printed: str, journal: Path) -> str | None:
    """The node id of the test the watchdog stopped, or None when the run was not ended by a freeze."""
    if status == 0 or not _FREEZE.search(printed) or not journal.is_file():
        return None
    unfinished = [nodeid for nodeid, state in read_journal(journal).items() if state == "start"]
    return unfinished[-1] if unfinished else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="pneumoview-journal-") as tmp:
        first = Path(tmp) / "first.journal"
        status, printed = run_pytest(args, first)
        stuck = frozen_test(status, printed, first)
        if stuck is None:
            return status
        failed = [n for n, state in read_journal(first).items() if state == "failed"]
        if failed:
            print(f"\nrun_resuming: the interpreter froze in {stuck}, and {len(failed)} test(s) had failed before "
                  f"it ({failed[0]} …): not resuming.", flush=True)  # fmt: skip
            return status
        print(f"\nrun_resuming: the interpreter froze in {stuck} (every thread's stack is above). Running the "
              "tests that had not finished once more; a second freeze fails the run.\n", flush=True)  # fmt: skip
        status, _ = run_pytest([*args, f"--resume-from={first}"], Path(tmp) / "second.journal")
        return status


if __name__ == "__main__":
    sys.exit(main())
