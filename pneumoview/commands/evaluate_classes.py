"""``pneumoview evaluate --class-folders ROOT``: a classifier's per-class ROC AUC and confusion matrix on a
class-folder layout (seed 002's ``ROOT/<class>/<image>``; the folder names must be the classifier's classes)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumoview.commands.common import add_runtime_option
from pneumoview.errors import ModelError
from pneumoview.types import DEFAULT_SELECTION, DEVICE_HELP

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def add_options(p: argparse.ArgumentParser) -> None:
    """The ``--class-folders`` mode's options on the ``evaluate`` parser."""
    g = p.add_argument_group("classifier on a class-folder layout")
    g.add_argument(
        "--class-folders",
        type=Path,
        metavar="ROOT",
        help="ROOT/<class>/<image> (e.g. ROOT/covid/, ROOT/normal/ ...): run the classifier on every image and "
        "report one-vs-rest ROC AUC per class and the confusion matrix",
    )
    g.add_argument(
        "--classifier",
        default=None,
        metavar="ID",
        help="classifier id (default: acse4-classifier if installed)",
    )
    g.add_argument("--device", default=None, help=DEVICE_HELP)
    add_runtime_option(g)
    g.add_argument("--models-dir", type=Path, default=None, help="extra folder searched first for models")
    g.add_argument(
        "--per-file", type=Path, default=None, metavar="CSV", help="write each file's probabilities"
    )


def run_class_folders(args: argparse.Namespace) -> int:
    """Run the classifier on ``args.class_folders`` and print the report; returns the exit code."""
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.class_eval import classify_files, folder_items, report_lines

    try:
        items = folder_items(args.class_folders)
    except (OSError, ValueError) as exc:
        print(f"pneumoview evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
        from pneumoview.inference.engine import Engine, StageSelection

        engine = Engine(
            device=args.device, selection=StageSelection(classify=None), models_dir=args.models_dir,
            runtime=args.runtime,
        )  # fmt: skip
        ident = args.classifier or (
            "acse4-classifier"
            if "acse4-classifier" in engine.manifest.models
            else DEFAULT_SELECTION["classify"]
        )
        engine.selection = StageSelection(classify=ident, segment=None, detect=None)
        spec = engine.stage_specs("classify")[0][0]
        stray = sorted({label for _, label in items} - set(spec.classes))
        if stray:
            print(
                f"pneumoview evaluate: {args.class_folders}: folder(s) {', '.join(stray)} are not classes of "
                f"{ident} ({', '.join(spec.classes)}); rename them or choose another --classifier",
                file=sys.stderr,
            )
            return EXIT_USAGE
        result = classify_files(engine, items)
    except ModelError as exc:
        print(f"pneumoview evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.class_folders}: {len(items)} images, classifier {result.model} on {engine.device}")
    for path, reason in result.failed:
        print(f"  could not classify {path}: {reason}")
    if len(result.paths) == 0:
        print("pneumoview evaluate: no image could be classified", file=sys.stderr)
        return EXIT_SOME_FAILED
    for line in report_lines(result.report(), len(result.paths)):
        print(line)
    if args.per_file is not None:
        result.write_csv(args.per_file)
        print(f"per-file probabilities: {args.per_file}")
    return EXIT_SOME_FAILED if result.failed else EXIT_OK
