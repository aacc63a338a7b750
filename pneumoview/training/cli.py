"""``pneumoview train classifier|detector|segmenter|ensemble``: train models and register them in a manifest.

Registered by :mod:`pneumoview.cli` through :func:`register`; also runnable as
``python -m pneumoview.training.cli train ...`` (e.g. under ``torchrun --nproc_per_node N`` for several GPUs).
Importing this module is cheap: torch is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumoview import RESEARCH_USE_NOTICE

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FAMILY_COMMANDS = ("classifier", "detector", "segmenter", "ensemble")

_EPILOG = (
    "Data: --labels stage_2_train_labels.csv [--classes stage_2_detailed_class_info.csv] --images DIR for the RSNA "
    "layout (boxes in the 1024-px frame are scaled to each image), or --images ROOT with one folder per class "
    "(seed 002's covid/ lung_opacity/ normal/ pneumonia/, ids covid 0, lung_opacity 1, pneumonia 2, normal 3). "
    "Validation is a patient-level stratified split (--val-fraction, or --folds K --fold I). Writes "
    "<id>-<sha256[:8]>.pt and its manifest.toml entry into --out, and runs/<id>/ (checkpoint.pt for --resume, "
    "log.csv, curves.png). Several GPUs: torchrun --nproc_per_node N -m pneumoview.training.cli train ... "
    + RESEARCH_USE_NOTICE
)


def _add_options(p: argparse.ArgumentParser, family: str) -> None:
    """The options of ``train <family>``, group by group (as ``--help`` lists them)."""
    _add_data_options(p, family)
    _add_output_options(p)
    _add_model_options(p, family)
    _add_hyperparameter_options(p)
    _add_split_options(p)
    _add_running_options(p)


def _add_data_options(p: argparse.ArgumentParser, family: str) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--images", type=Path, required=True, help="images folder (RSNA) or class-folder root")
    data.add_argument(
        "--labels", type=Path, help="RSNA stage_2_train_labels.csv (boxes in the 1024-px frame)"
    )
    data.add_argument("--classes", type=Path, help="RSNA stage_2_detailed_class_info.csv (3-way class)")
    data.add_argument(
        "--index", type=Path, help="CSV restricting the images used (may give nih_patient groups)"
    )
    if family == "classifier":
        data.add_argument(
            "--val-images",
            type=Path,
            help="class-folder root of a fixed validation split (e.g. seed 002's layout val/); no patient may be "
            "on both sides (patients from --index)",
        )
    data.add_argument("--limit", type=int, help="use only N images, drawn evenly per class (smoke tests)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="models folder to write into (default: the user models folder)")
    out.add_argument("--id", dest="model_id", help="model id (default from the family and builder)")
    out.add_argument("--version", default="1.0.0", help="model version written to the manifest")
    out.add_argument("--resume", type=Path, help="training checkpoint (runs/<id>/checkpoint.pt) to resume")


def _add_model_options(p: argparse.ArgumentParser, family: str) -> None:
    m = p.add_argument_group("model and recipe")
    m.add_argument(
        "--recipe", default="default", help="preset: default, or seed001/seed002/seed003 per family"
    )
    if family == "ensemble":
        m.add_argument(
            "--members",
            help="comma-separated BUILDER:ENCODER list, e.g. unet:resnet34,scse_unet:vgg11,deeplabv3plus:resnet18",
        )
        m.add_argument("--ensemble-id", default="seg-ensemble", help="id of the [[ensemble]] entry")
    else:
        m.add_argument(
            "--model",
            "--builder",
            dest="model",
            help="builder name (segmenters: BUILDER:ENCODER, e.g. unet:resnet34)",
        )
    if family in ("segmenter", "ensemble"):
        m.add_argument(
            "--seg-bce-weight", type=float, help="BCE share of the loss (the soft IoU gets the rest)"
        )
    if family == "classifier":
        m.add_argument("--preset", dest="scheme", choices=("rsna3", "rsna2", "acse4"), help="class preset")
        m.add_argument("--dropout", type=float, help="dropout before the classifier head")
        m.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing")
        m.add_argument("--balanced", action="store_true", default=None, help="class-balanced sampling")
    m.add_argument(
        "--builder-arg", action="append", default=[], metavar="KEY=VALUE", help="extra builder argument"
    )
    m.add_argument("--imagenet", action="store_true", default=None, help="start from ImageNet weights")
    m.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start the ResNet backbone from a trained PneumoView model: a model id in --out or the models "
        "folders (e.g. rsna3-classifier), or a .pt file; stages of the same shape are copied",
    )
    m.add_argument(
        "--require-imagenet",
        action="store_true",
        default=None,
        help="stop if ImageNet weights are unavailable",
    )


def _add_hyperparameter_options(p: argparse.ArgumentParser) -> None:
    h = p.add_argument_group("hyperparameters (override the recipe)")
    h.add_argument("--epochs", type=int)
    h.add_argument("--batch-size", type=int)
    h.add_argument("--eval-batch-size", type=int)
    h.add_argument("--lr", type=float, help="peak learning rate")
    h.add_argument("--weight-decay", type=float)
    h.add_argument("--momentum", type=float, help="SGD momentum")
    h.add_argument("--optimizer", choices=("adamw", "adam", "sgd"))
    h.add_argument("--scheduler", choices=("cosine", "step", "constant"))
    h.add_argument("--warmup-epochs", type=float)
    h.add_argument("--step-size", type=int, help="StepLR step in epochs")
    h.add_argument("--gamma", type=float, help="StepLR factor")
    h.add_argument("--size", type=int, help="square input size in pixels")
    h.add_argument("--channels", type=int, choices=(1, 3), help="input channels")
    h.add_argument("--resize", choices=("stretch", "center_crop"), help="how images are fitted to --size")
    h.add_argument("--mean", type=float, nargs="+", help="input normalisation mean (values in [0, 1])")
    h.add_argument("--std", type=float, nargs="+", help="input normalisation std")
    h.add_argument("--warmup-factor", type=float, help="learning-rate factor at the start of the warm-up")
    h.add_argument("--augment", choices=("full", "flip", "none"))
    h.add_argument("--accumulate", type=int, help="gradient accumulation steps")
    h.add_argument("--grad-clip", type=float, help="clip the gradient norm (0 = off)")
    h.add_argument("--patience", type=int, help="early stopping after N epochs without improvement (0 = off)")


def _add_split_options(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("split")
    s.add_argument(
        "--val-fraction", type=float, help="share of patients held out for validation (default 0.2)"
    )
    s.add_argument("--folds", type=int, help="K-fold split: number of folds")
    s.add_argument("--fold", type=int, help="K-fold split: validation fold (0-based)")
    s.add_argument("--split-seed", type=int, help="seed of the patient split (default 0)")
    s.add_argument("--seed", type=int, help="seed of initialisation, shuffling and augmentation")


def _add_running_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("running")
    r.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    r.add_argument("--workers", type=int, help="DataLoader workers (default 2)")
    r.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), help="mixed precision on CUDA")
    r.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    r.add_argument("--max-minutes", type=float, help="time budget; the schedule is shortened to fit")
    r.add_argument("--max-steps", type=int, help="optimiser steps per epoch at most (smoke tests)")
    r.add_argument("--stop-after", type=int, help="stop this session after N epochs (resume later)")
    r.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` command with its ``classifier|detector|segmenter|ensemble`` sub-commands."""
    parser = subparsers.add_parser(
        "train",
        help="train a classifier, detector, segmenter or segmentation ensemble",
        description="Train PneumoView models from scratch (or ImageNet) and add them to a models folder.",
        epilog=_EPILOG,
    )
    parser.set_defaults(run=run)
    sub = parser.add_subparsers(dest="family", metavar="FAMILY", required=True)
    helps = {
        "classifier": "whole-image classifier (rsna3: Normal / No Lung Opacity-Not Normal / Lung Opacity)",
        "detector": "Faster R-CNN opacity detector",
        "segmenter": "one segmentation model (box masks as targets)",
        "ensemble": "several segmenters in turn, plus an equal-weight [[ensemble]] entry",
    }
    for family in FAMILY_COMMANDS:
        p = sub.add_parser(family, help=helps[family], description=helps[family], epilog=_EPILOG)
        _add_options(p, family)
        p.set_defaults(run=run)


def _parse_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import fields

    from pneumoview.training.recipes import TrainConfig

    # Every TrainConfig field that has an option of the same name; the recipe sets the rest.
    fixed = {"family", "recipe", "builder", "builder_args"}
    names = [f.name for f in fields(TrainConfig) if f.name not in fixed and hasattr(args, f.name)]
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    for key in ("mean", "std"):
        if key in out:
            out[key] = tuple(out[key])
    if out.get("require_imagenet"):
        out["imagenet"] = True
    extra = {}
    for item in args.builder_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--builder-arg {item!r}: write KEY=VALUE")
        extra[key.strip()] = _parse_value(value.strip())
    if extra:
        out["builder_args"] = extra
    return out


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, for the manifest (``pneumoview train ...``)."""
    argv = list(sys.argv if argv is None else argv)
    head = "python -m pneumoview.training.cli" if argv and argv[0].endswith("cli.py") else "pneumoview"
    return " ".join([head, *(shlex.quote(a) for a in argv[1:])])


def load_source(args: argparse.Namespace) -> Any:
    from pneumoview.training.datasets import load_image_folder, load_rsna

    if args.labels is not None:
        if getattr(args, "val_images", None) is not None:
            raise ValueError(
                "--val-images is for the class-folder layout; the RSNA layout is split by patient"
            )
        return load_rsna(args.labels, args.images, classes_csv=args.classes, index_csv=args.index)
    if args.family != "classifier":
        raise ValueError(
            f"training a {args.family} needs RSNA box labels: pass --labels stage_2_train_labels.csv"
        )
    source = load_image_folder(args.images, index_csv=args.index)
    if getattr(args, "val_images", None) is not None:
        from pneumoview.training.datasets import with_validation_folder

        val = load_image_folder(args.val_images, class_order=source.classes, index_csv=args.index)
        source = with_validation_folder(source, val, args.val_images)
    return source


def run(args: argparse.Namespace) -> int:
    """Run ``pneumoview train <family>``; returns the exit code."""
    from pneumoview.inference.runtime import needs_torch

    missing = needs_torch("training")
    if missing is not None:
        print(f"pneumoview train: error: {missing}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted; resume with --resume <out>/runs/<id>/checkpoint.pt", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError) as exc:
        print(f"pneumoview train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from pneumoview.errors import PneumoViewError

        if isinstance(exc, PneumoViewError):
            print(f"pneumoview train: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


def _run(args: argparse.Namespace) -> int:
    from pneumoview.inference.manifest import user_models_dir
    from pneumoview.training import distributed as ddp
    from pneumoview.training.loop import summary_text, train_model
    from pneumoview.training.recipes import find_recipe, recipe
    from pneumoview.training.segmenter import train_ensemble

    main = ddp.env_info().is_main
    log = print if main else (lambda _m: None)
    out_dir = (args.out or user_models_dir()).expanduser()
    source = load_source(args)
    log(source.summary())
    for note in source.notes:
        log(f"note: {note}")
    overrides = _overrides(args)
    command = getattr(args, "command_line", None) or command_line()
    try:
        if args.family == "ensemble":
            if args.resume is not None:
                raise ValueError(
                    "--resume applies to one model: resume a member with `train segmenter --resume`"
                )
            default = find_recipe("segmenter", args.recipe).members
            members = [m.strip() for m in (args.members or ",".join(default)).split(",") if m.strip()]
            overrides.pop("model_id", None)
            results, entry = train_ensemble(
                members, overrides, source, out_dir, ensemble_id=args.ensemble_id, recipe_name=args.recipe,
                version=args.version, command=command, log=log,
            )  # fmt: skip
            for res in results:
                log(summary_text(res))
            if entry:
                m = entry["metrics"]
                log(
                    f"== ensemble {entry['id']}: members {', '.join(entry['members'])}; validation rsna_map "
                    f"{m.get('rsna_map', float('nan')):.4f} → {out_dir / 'manifest.toml'} =="
                )
            return EXIT_OK
        if args.family == "classifier" and "scheme" not in overrides and source.layout == "folders":
            overrides["scheme"] = "acse4"
        cfg = recipe(args.family, args.recipe, model=args.model, **overrides)
        res = train_model(cfg, source, out_dir, resume=args.resume, command=command, log=log)
        log(summary_text(res))
        return EXIT_OK
    finally:
        ddp.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pneumoview.training.cli train <family> ...``."""
    parser = argparse.ArgumentParser(prog="python -m pneumoview.training.cli", epilog=RESEARCH_USE_NOTICE)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if argv is not None:
        args.command_line = command_line(["pneumoview", *argv])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
