"""``pneumoview models``: every model and ensemble with its status (torch is imported only with ``--check-load``);
``pneumoview models export-onnx --out DIR``: the ONNX exports a models folder (or the desktop bundle) ships."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumoview.errors import ManifestError, ModelError

if TYPE_CHECKING:
    from pneumoview.inference.manifest import ModelSpec
    from pneumoview.inference.weights import ModelStatus


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the models and ensembles: task, version, status, file, hash, size",
        description="List every model and ensemble in the manifests of the models folders (the --models-dir "
        "setting, $PNEUMOVIEW_MODELS, the per-user data folder, the repository's models/). Status: ok, not "
        "installed (weights file missing), checksum mismatch (file damaged or replaced), load error.",
    )
    p.add_argument(
        "action", nargs="?", choices=("list", "export-onnx"), default="list",
        help="list (default) or export-onnx: write every installed model's ONNX export to DIR/onnx/ (needs "
        "PyTorch; copy DIR/onnx into a models folder to run without PyTorch)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="export-onnx: the output folder")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--models-dir", type=Path, default=None, help="extra folder searched first")
    p.add_argument(
        "--check-load", action="store_true", help="also build each model and load its weights (slower)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "export-onnx":
        return export_onnx(args)
    return list_models(args)


def export_onnx(args: argparse.Namespace) -> int:
    """Export every model whose weights are installed; exit 2 when nothing could be exported."""
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.manifest import load_manifest, models_dirs

    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.runtime import TORCH_INSTALL_HINT, torch_installed

    if args.out is None:
        print("pneumoview models export-onnx: give the output folder with --out DIR", file=sys.stderr)
        return 2
    if not torch_installed():
        print(
            f"pneumoview models export-onnx: exporting needs PyTorch; {TORCH_INSTALL_HINT}", file=sys.stderr
        )
        return 2
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.onnx_artifacts import shipped_path

    # lazy: needs torch or onnxruntime, which are optional here
    from pneumoview.inference.onnx_export import export_to_file

    dirs = models_dirs(args.models_dir)
    try:
        manifest = load_manifest(dirs)
    except ModelError as exc:
        print(f"pneumoview models export-onnx: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for spec in manifest.models.values():
        try:
            art = export_to_file(spec, dirs, shipped_path(spec, args.out))
        except ModelError as exc:
            failed += 1
            print(f"{spec.id}: not exported: {exc}", file=sys.stderr)
            continue
        print(
            f"{spec.id}: {art.path} ({art.path.stat().st_size / 1e6:.1f} MB, sha256 {art.onnx_sha256[:12]})"
        )
    return 2 if failed == len(manifest.models) else (1 if failed else 0)


def list_models(args: argparse.Namespace) -> int:
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.manifest import load_manifest, models_dirs

    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.weights import STATUS_OK, model_status

    dirs = models_dirs(args.models_dir)
    try:
        manifest = load_manifest(dirs, check_builders=args.check_load)
    except ManifestError as exc:
        print(f"pneumoview models: {exc}", file=sys.stderr)
        return 2
    statuses = {
        m.id: with_onnx_export(model_status(m, dirs, try_load=args.check_load), m, dirs)
        for m in manifest.models.values()
    }
    models: list[dict[str, Any]] = []
    for spec in manifest.models.values():
        st = statuses[spec.id]
        models.append(
            {
                "id": spec.id,
                "task": spec.task,
                "version": spec.version,
                "builder": spec.builder,
                "status": st.status,
                "file": None if st.path is None else str(st.path),
                "sha256_prefix": st.sha256_prefix,
                "size_bytes": st.size_bytes,
                "metrics": dict(spec.metrics),
                "calibration": None if spec.calibration is None else spec.calibration.to_dict(),
                "message": st.message,
            }
        )
    ensembles: list[dict[str, Any]] = []
    for e in manifest.ensembles.values():
        member_status = [statuses[mid].status for mid in e.members]
        ensembles.append(
            {
                "id": e.id,
                "task": e.task,
                "version": e.version,
                "members": list(e.members),
                "weights": list(e.weights),
                "status": STATUS_OK if all(s == STATUS_OK for s in member_status) else "incomplete",
                "metrics": dict(e.metrics),
                "calibration": None if e.calibration is None else e.calibration.to_dict(),
            }
        )
    if args.json:
        json.dump(
            {"models_dirs": [str(d) for d in dirs], "models": models, "ensembles": ensembles},
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    _print_table(dirs, models, ensembles)
    for m in models:
        if m["status"] != STATUS_OK:
            print(f"\n{m['id']}: {m['message']}")
    return 0


def _print_table(dirs: list[Path], models: list[dict[str, Any]], ensembles: list[dict[str, Any]]) -> None:
    print("models folders (searched in this order): " + ", ".join(str(d) for d in dirs))
    if not models:
        print("no models found: train some with `pneumoview train` or copy a models folder (see the README)")
    print(f"{'id':26s} {'task':9s} {'version':8s} {'status':18s} {'sha256':12s} {'size':>9s}  file")
    for m in models:
        size = "" if m["size_bytes"] is None else f"{m['size_bytes'] / 1e6:.1f} MB"
        print(
            f"{m['id']:26s} {m['task']:9s} {m['version']:8s} {m['status']:18s} {m['sha256_prefix']:12s} "
            f"{size:>9s}  {m['file'] or '-'}"
        )
        _print_card_lines(metrics_line(m["metrics"]), _calibration_line(m["calibration"]))
    for ens in ensembles:
        members = ", ".join(f"{mid}×{w:g}" for mid, w in zip(ens["members"], ens["weights"], strict=True))
        # No file and no hash of its own: those columns stay empty, the members go in the file column.
        print(
            f"{ens['id']:26s} {ens['task']:9s} {ens['version']:8s} {ens['status']:18s} {'-':12s} {'':>9s}  "
            f"ensemble of {members}"
        )
        _print_card_lines(metrics_line(ens["metrics"]), _calibration_line(ens["calibration"]))


def _print_card_lines(*lines: str) -> None:
    pad = " " * 27
    for line in lines:
        if line:
            print(textwrap.fill(line, 118, initial_indent=pad, subsequent_indent=pad + "  "))


def _calibration_line(calibration: dict | None) -> str:
    if not calibration:
        return ""
    header = [f for f in calibration["features"] if f != "logit"]
    return (
        "P(opacity) calibrated (logistic"
        + (", with header facts: " + ", ".join(header) if header else "")
        + ")"
    )


def metrics_line(metrics: dict) -> str:
    """The validation numbers of a model card on one line (scalars only; the confusion matrix is in ``--json``)."""
    parts = []
    for k, v in metrics.items():
        if k == "metric" or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        parts.append(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}")
    return ("validation: " + ", ".join(parts)) if parts else ""


def with_onnx_export(status: ModelStatus, spec: ModelSpec, dirs: list[Path]) -> ModelStatus:
    """A model whose weights file is absent still runs (status ok, the file column names the .onnx) when a verified
    ONNX export of those weights is installed and ONNX Runtime is there to run it: the desktop app ships only the
    exports."""
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.runtime import onnxruntime_available

    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.weights import STATUS_NOT_INSTALLED, STATUS_OK

    if status.status != STATUS_NOT_INSTALLED or not onnxruntime_available():
        return status
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.inference.onnx_artifacts import find_artefact

    artefact, _ = find_artefact(spec, dirs)
    if artefact is None:
        return status
    return replace(
        status, status=STATUS_OK, path=artefact.path, size_bytes=artefact.path.stat().st_size, message=""
    )
