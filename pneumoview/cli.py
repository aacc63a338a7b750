"""The ``pneumoview`` command line: ``pneumoview <command> [options]``.

How commands are added: each command lives in its own module (``pneumoview/commands/<name>.py``) that defines

* ``register(subparsers) -> None``: adds one sub-parser with ``subparsers.add_parser(NAME, help=...)``, its
  options, and ``parser.set_defaults(run=run)``;
* ``run(args: argparse.Namespace) -> int``: does the work and returns the exit code;

and is listed in :data:`COMMAND_MODULES`. Importing the module and calling ``register`` must stay cheap:
import heavy dependencies (torch, the models) inside ``run``, so that ``pneumoview scan`` and
``pneumoview --help`` never load torch or Qt (tests/test_import_boundaries.py checks this). ``scan``, the one
command without models, follows the same pattern inside this module.

Exit codes: 0 when the command completed (even if some files could not be read: they are reported), 1 when it
failed, 2 for usage errors (bad options, a folder that does not exist), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pneumoview import RESEARCH_USE_NOTICE, __version__

if TYPE_CHECKING:
    from pneumoview.study_index import ScanEntry

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Modules that each add one subcommand (see the module docstring), in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "pneumoview.commands.predict",
    "pneumoview.commands.evaluate",
    "pneumoview.commands.tune",
    "pneumoview.commands.models",
    "pneumoview.training.cli",
    "pneumoview.commands.deidentify",
    "pneumoview.commands.pacs",
)


class UsageError(Exception):
    """A problem with what the user typed; main() prints it and exits with code 2."""


# ----------------------------------------------------------------------------------------------------
# scan


def register_scan(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="list the patients, studies, series and images in a folder (headers only)",
        description=(
            "Scan FOLDER recursively and list what it holds as Patient > Study > Series > Image, "
            "reading file headers only (pixels are not decoded, nothing is written). DICOM files with or "
            "without the .dcm suffix, DICOMDIR file-sets, PNG and JPEG are recognised; documents (notes, "
            "labels, licences) are listed under 'Other files', and every other or unreadable file under "
            "'Errors' with the reason (a heading only when there is one). Image sizes are shown as "
            "columns x rows. The exit code is 0 when the scan completed, even if files failed."
        ),
        epilog=RESEARCH_USE_NOTICE,
    )
    parser.add_argument("folder", metavar="FOLDER", type=Path, help="the folder to scan (or a single file)")
    parser.add_argument(
        "--json",
        action="store_true",
        help=(
            'print one JSON object instead of the tree: {"folder", "entries": [{"path", "kind", '
            '"object_kind", ...}], "errors": [{"path", "stage", "message"}], "documents": [{"path", "stage", '
            '"message"}], "counts": {"entries", "errors", "documents", "images", "non_images", "dicomdirs", '
            '"patients", "studies", "series"}}'
        ),
    )
    parser.set_defaults(run=run_scan)


def run_scan(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``pneumoview scan``: print the study tree (or JSON) of ``args.folder``."""
    from pneumoview.study_index import ScanError, build_tree, scan  # here, so that --help stays fast

    out = out or sys.stdout
    try:
        with warnings.catch_warnings():  # reader warnings become notes and errors in the output instead
            warnings.simplefilter("ignore")
            items = list(scan(args.folder))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UsageError(str(exc)) from None
    tree = build_tree(items)
    folder = Path(args.folder).expanduser().absolute()
    counts = tree.counts()
    if args.json:
        entries = [item for item in items if not isinstance(item, ScanError)]  # in scan order
        document = {
            "folder": str(folder),
            "entries": [e.to_dict() for e in entries],
            "errors": [e.to_dict() for e in tree.errors],
            "documents": [e.to_dict() for e in tree.documents],
            "counts": {**counts, "entries": len(entries)},
        }
        json.dump(document, out, indent=1)  # ASCII-only (escaped), so any console or pipe can carry it
        out.write("\n")
        return EXIT_OK

    _replace_unencodable(out)  # patient names may not fit a legacy console code page
    write = out.write
    write(
        f"{folder}: {counts['images']} image(s), {counts['non_images']} non-image object(s) in "
        f"{counts['patients']} patient(s), {counts['studies']} study(ies), {counts['series']} series; "
        f"{counts['documents']} other file(s); {counts['errors']} error(s)\n"
    )
    for patient in tree.patients.values():
        write(f"Patient: {patient.label}\n")
        for study in patient.studies.values():
            write(f"  Study: {study.label}\n")
            for series in study.series.values():
                write(f"    Series: {series.label}\n")
                for entry in series.entries:
                    write(f"      {_entry_line(entry, folder)}\n")
    if tree.dicomdirs:
        write(f"DICOMDIR files ({len(tree.dicomdirs)}):\n")
        for entry in tree.dicomdirs:
            detail = f": {entry.notes[0]}" if entry.notes else ""
            write(f"  {_relative(entry.path, folder)}{detail}\n")
    if tree.documents:
        write(f"Other files ({len(tree.documents)}, not images):\n")
        for doc in tree.documents:
            write(f"  {_relative(doc.path, folder)}: {doc.message}\n")
    if tree.errors:
        write(f"Errors ({len(tree.errors)}):\n")
        for error in tree.errors:
            write(f"  {_relative(error.path, folder)} [{error.stage}] {error.message}\n")
    return EXIT_OK


def _entry_line(entry: ScanEntry, folder: Path) -> str:
    if entry.kind == "image":
        size = f", {entry.cols}x{entry.rows}" if entry.rows and entry.cols else ""
        frames = f", {entry.frames} frames" if entry.frames and entry.frames > 1 else ""
        view = f", {entry.view}" if entry.view else ""
        head = f"Image: {entry.instance_label} [{entry.object_kind}{size}{frames}{view}]"
    elif entry.kind == "result":  # an SR / SEG / GSPS about images (SOP Instance UIDs in --json's result_for)
        head = f"Results: {entry.instance_label} [{entry.object_kind} about {len(entry.result_for)} image(s)]"
    else:
        head = f"Object: {entry.instance_label} [{entry.object_kind}, not an image]"
    where = _relative(entry.path, folder)
    return head if where == entry.path.name else f"{head} in {where}"


def _replace_unencodable(stream: TextIO) -> None:
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors="replace")


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------------
# The parser and main()


def build_parser() -> argparse.ArgumentParser:
    """The full parser: built-in commands, then those of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="pneumoview",
        description=(
            "PneumoView command line: browse chest X-ray folders and run the pneumonia models. "
            "Run 'pneumoview COMMAND --help' for a command's options; run 'pneumoview' without a command "
            f"(or with a path) to open the viewer. {RESEARCH_USE_NOTICE}."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pneumoview {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_scan(subparsers)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def command_names() -> frozenset[str]:
    """The subcommands the CLI knows (``pneumoview.__main__`` uses this to choose between CLI and viewer)."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return frozenset(action.choices)
    return frozenset()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the exit code, never calls sys.exit."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"pneumoview {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pneumoview: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `pneumoview scan DIR | head`: stop quietly, as other Unix tools do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return EXIT_OK
