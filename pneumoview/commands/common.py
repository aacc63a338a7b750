"""Options shared by the model-running subcommands (thresholds, device, model selection)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pneumoview.thresholds import CONFIDENCE_MODES, FUSION_MODES, MODES, Thresholds
from pneumoview.types import DEFAULT_SELECTION, DEFAULT_TTA, DEVICE_HELP

_FLOAT_OPTIONS = {
    "seg_threshold": ("--seg-threshold", "segmentation probability above which a pixel is opacity"),
    "min_area_fraction": (
        "--min-area",
        "minimum bounding-box area of a segmentation region, as a fraction of the image area "
        "(seed 001: 25,000 px² on a 1024² image = 0.0238); reported in mm² when the spacing is known",
    ),
    "shrink": ("--shrink", "fraction of box width/height kept (0.875 = shrink to 87.5%%; 1 = off)"),
    "det_score": ("--det-score", "minimum detector score"),
    "nms_iou": ("--nms-iou", "IoU above which overlapping detector boxes are suppressed"),
    "fusion_iou": ("--fusion-iou", "IoU at which detector and segmentation boxes are merged"),
    "gate": ("--gate", "P(opacity) gate: no boxes when P(opacity) is below this (0 = off)"),
}


THRESHOLD_PROFILES = ("defaults", "viewer")


def add_threshold_source_options(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--thresholds-file`` and ``--thresholds-profile``: where the starting thresholds come from."""
    group.add_argument(
        "--thresholds-file",
        type=Path,
        default=None,
        metavar="JSON",
        help="thresholds saved as JSON (e.g. best_thresholds.json from pneumoview tune)",
    )
    group.add_argument(
        "--thresholds-profile",
        choices=THRESHOLD_PROFILES,
        default=None,
        help="'defaults' (the default): the documented built-in thresholds; 'viewer': those the viewer saved "
        "(also where 'tune --save' puts them)",
    )


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "thresholds",
        "post-processing operating points: the built-in defaults unless --thresholds-file or --thresholds-profile "
        "says otherwise, then any option below; the command prints the thresholds it used and run.json records "
        "where they came from",
    )
    for field, (flag, text) in _FLOAT_OPTIONS.items():
        g.add_argument(flag, dest=field, type=float, default=None, metavar="X", help=text)
    g.add_argument(
        "--fusion", choices=FUSION_MODES, default=None, help="how detector and segmentation boxes combine"
    )
    g.add_argument("--confidence", choices=CONFIDENCE_MODES, default=None, help="score of a segmentation box")
    g.add_argument(
        "--mode", choices=MODES, default=None, help="'seed001' reproduces seed 001's post-processing exactly"
    )
    add_threshold_source_options(g)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models")
    g.add_argument(
        "--device", default=None, help=f"{DEVICE_HELP} (also $PNEUMOVIEW_DEVICE)"
    )  # fmt: skip
    add_runtime_option(g)
    g.add_argument("--models-dir", type=Path, default=None, help="extra folder searched first for models")
    for stage, default in (
        ("classifier", DEFAULT_SELECTION["classify"]),
        ("segmenter", DEFAULT_SELECTION["segment"]),
        ("detector", DEFAULT_SELECTION["detect"]),
    ):
        g.add_argument(
            f"--{stage}",
            default=default,
            metavar="ID",
            help=f"model or ensemble id ('none' to skip; default {default})",
        )
    g.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_TTA,
        help="flip test-time augmentation: also analyse the mirrored image and combine both (about 1.9× the "
        "model time; on by default, --no-tta for one pass per model)",
    )


def add_runtime_option(group: Any) -> None:
    """``--runtime auto|onnx|openvino|torch`` (see :mod:`pneumoview.inference.runtime`)."""
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.runtime import RUNTIMES

    group.add_argument(
        "--runtime", choices=RUNTIMES, default=None,
        help="what runs the models: auto (default; on the CPU OpenVINO, else ONNX Runtime, when installed; else "
        "PyTorch), openvino, onnx or torch (also $PNEUMOVIEW_RUNTIME)",
    )  # fmt: skip


def saved_thresholds() -> Thresholds:
    """The thresholds the viewer saved (settings file); the built-in defaults when there are none.

    Raises:
        ValueError: the saved thresholds are not valid.
    """
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.settings import load_settings

    return Thresholds.from_dict(load_settings().thresholds)


# What `pneumoview tune` adds to the thresholds in best_thresholds.json (its score; keep in step with tune.py), so
# that the file it writes can be given straight to `--thresholds-file`.
TUNE_REPORT_KEYS = ("map", "images")


def base_thresholds(args: argparse.Namespace) -> tuple[Thresholds, str]:
    """The starting thresholds and, in words, where they came from.

    The command line is reproducible: it uses the documented built-in defaults unless ``--thresholds-file`` or
    ``--thresholds-profile viewer`` names other ones; moving a slider in the viewer never changes what it computes.

    Raises:
        ValueError, OSError: the file cannot be read or holds invalid thresholds.
    """
    file = getattr(args, "thresholds_file", None)
    profile = getattr(args, "thresholds_profile", None)
    if file is not None and profile is not None:
        raise ValueError("give either --thresholds-file or --thresholds-profile, not both")
    if file is not None:
        saved = json.loads(Path(file).read_text(encoding="utf-8"))
        if isinstance(saved, dict):
            saved = {k: v for k, v in saved.items() if k not in TUNE_REPORT_KEYS}
        return Thresholds.from_dict(saved), f"file {Path(file).expanduser().absolute()}"
    if profile == "viewer":
        # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
        from pneumoview.settings import settings_path

        return saved_thresholds(), f"profile 'viewer' (saved in {settings_path()})"
    return Thresholds(), "built-in defaults"


def thresholds_from_args(args: argparse.Namespace) -> tuple[Thresholds, str]:
    """The thresholds a command runs with, and where they came from (with any options that changed them)."""
    base, source = base_thresholds(args)
    changes = {
        k: getattr(args, k)
        for k in (*_FLOAT_OPTIONS, "fusion", "confidence", "mode")
        if getattr(args, k, None) is not None
    }
    if not changes:
        return base, source
    flags = ", ".join(
        f"{_FLOAT_OPTIONS[k][0] if k in _FLOAT_OPTIONS else '--' + k} {v}" for k, v in changes.items()
    )
    return base.replace(**changes), f"{source}, changed by {flags}"


def thresholds_line(thresholds: Thresholds, source: str) -> str:
    """One line for the console: every threshold and where they came from."""
    values = ", ".join(f"{k} {v}" for k, v in thresholds.to_dict().items())
    return f"thresholds ({source}): {values}"


def engine_from_args(args: argparse.Namespace):
    """An Engine for the selected models and runtime (imports the runtime)."""
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.engine import Engine, StageSelection

    def pick(v: str | None) -> str | None:
        return None if v is None or v.lower() == "none" else v

    selection = StageSelection(
        classify=pick(args.classifier), segment=pick(args.segmenter), detect=pick(args.detector)
    )
    return Engine(
        device=args.device, selection=selection, models_dir=args.models_dir, tta=getattr(args, "tta", DEFAULT_TTA),
        runtime=getattr(args, "runtime", None),
    )  # fmt: skip
