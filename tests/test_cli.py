"""The ``pneumoview`` command line (pneumoview.cli) and the CLI/viewer dispatch (pneumoview.__main__)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pneumoview
from pneumoview import __main__ as entry
from pneumoview import cli

# The broken test files make pydicom warn while they are scanned; the CLI reports them as notes and errors.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ROBUST = DATA / "dicom" / "robustness" / "pydicom"


def _file_count(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def test_scan_json_lists_entries_and_errors(capsys):
    rc = cli.main(["scan", str(ROBUST), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err  # files failed, but the scan completed
    doc = json.loads(out)
    assert set(doc) == {"folder", "entries", "errors", "documents", "counts"}
    assert doc["folder"] == str(ROBUST)
    assert doc["entries"] and doc["errors"]
    assert all(Path(e["path"]).is_file() for e in doc["entries"])
    assert all(
        set(e) == {"path", "stage", "message"} and e["stage"] in ("header", "pixels") for e in doc["errors"]
    )
    assert doc["counts"]["entries"] == len(doc["entries"])
    assert doc["counts"]["errors"] == len(doc["errors"])
    assert doc["counts"]["documents"] == len(doc["documents"]) > 0
    assert all(d["stage"] == "document" for d in doc["documents"])
    assert len(doc["entries"]) + len(doc["errors"]) + len(doc["documents"]) == _file_count(
        ROBUST
    )  # each once
    by_name = {Path(e["path"]).name: e for e in doc["entries"]}
    assert by_name["waveform_ecg.dcm"]["kind"] == "non-image"
    assert by_name["waveform_ecg.dcm"]["object_kind"] == "waveform"
    assert by_name["CT_small.dcm"]["rows"] == 128
    errors = {Path(e["path"]).name: e for e in doc["errors"]}
    assert "unpack it first" in errors["zipMR.gz"]["message"]
    counts = doc["counts"]
    assert counts["dicomdirs"] == 7 and counts["patients"] >= 2
    assert counts["images"] + counts["non_images"] + counts["dicomdirs"] == len(doc["entries"])


def test_scan_prints_an_indented_tree_then_errors(capsys):
    rc = cli.main(["scan", str(ROBUST / "dicomdirtests")])
    out, _ = capsys.readouterr()
    assert rc == 0
    lines = out.splitlines()
    assert "Patient: Doe, Archibald (77654033)" in lines
    i = lines.index("Patient: Doe, Archibald (77654033)")
    assert lines[i + 1] == "  Study: 2001-01-01 - XR C Spine Comp Min 4 Views"
    assert lines[i + 2] == "    Series: CR #1 - Cervical LAT"
    assert (
        lines[i + 3].startswith("      Image: #1 6154 [CR image, 16x16")
        and "in 77654033/CR1/6154" in lines[i + 3]
    )
    errors_at = next(n for n, line in enumerate(lines) if line.startswith("Errors ("))
    n_errors = int(lines[errors_at].split("(")[1].split(")")[0])
    # 50 TINY_ALPHA records without pixels, DICOMDIR-nopatient
    assert n_errors == len(lines) - errors_at - 1 == 51
    assert any(line.startswith("  DICOMDIR-nopatient [header] the DICOMDIR is damaged") for line in lines)
    # The two READMEs are documents: listed as other files, before the errors, not among them.
    others_at = lines.index("Other files (2, not images):")  # README.txt and TINY_ALPHA/README
    assert others_at < errors_at and lines[others_at + 1].startswith("  README.txt: a document (.txt)")
    assert "DICOMDIR files (7):" in lines


def test_missing_folder_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    assert cli.main(["scan", str(missing), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and str(missing) in err and "not found" in err


def test_bad_options_and_help(capsys):
    assert cli.main(["scan"]) == 2  # FOLDER missing
    assert cli.main(["frobnicate"]) == 2
    capsys.readouterr()
    assert cli.main(["scan", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--json" in help_text and "FOLDER" in help_text and "exit code is 0" in help_text
    assert cli.main(["--help"]) == 0
    assert "scan" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pneumoview {pneumoview.__version__}"


def test_python_dash_m_runs_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "pneumoview", "scan", str(ROBUST), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["entries"]) + len(doc["errors"]) + len(doc["documents"]) == _file_count(ROBUST)
    r = subprocess.run(
        [sys.executable, "-m", "pneumoview", "scan", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "missing" in r.stderr


def test_entry_point_sends_commands_to_the_cli_and_paths_to_the_viewer(monkeypatch, capsys):
    calls: list[list[str]] = []
    fake = types.ModuleType("pneumoview.gui.app")
    fake.main = lambda argv: calls.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pneumoview.gui.app", fake)
    assert entry.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pneumoview ")
    assert entry.main(["scan", str(ROBUST / "dicomdirtests"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"]
    assert calls == []
    assert entry.main(["/some/study"]) == 0 and entry.main([]) == 0
    assert calls == [["/some/study"], []]


def test_entry_point_without_a_viewer_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pneumoview.gui.app", None)  # makes the import fail
    assert entry.main([]) == 2
    err = capsys.readouterr().err
    assert "viewer cannot start" in err and "pneumoview --help" in err


def test_command_modules_plug_in(monkeypatch, capsys):
    module = types.ModuleType("pneumoview_test_hello")

    def register(subparsers: argparse._SubParsersAction) -> None:
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(run=lambda args: print(f"hello {args.name}") or 7)

    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pneumoview_test_hello", module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "pneumoview_test_hello"))
    assert "hello" in cli.command_names() and "scan" in cli.command_names()
    assert cli.main(["hello", "--name", "X"]) == 7
    assert capsys.readouterr().out == "hello X\n"
    assert entry.main(["hello"]) == 7


@pytest.mark.parametrize("name", sorted(cli.COMMAND_MODULES))
def test_listed_command_modules_register_a_runnable_command(name):
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    __import__(name)
    sys.modules[name].register(subparsers)
    assert len(subparsers.choices) == 1
    (sub,) = subparsers.choices.values()
    assert callable(sub.get_default("run"))
