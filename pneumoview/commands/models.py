"""``pneumoview models``: every model and ensemble with its status (torch is imported only with ``--check-load``)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from pneumoview.errors import ManifestError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the models and ensembles: task, version, status, file, hash, size",
        description="List every model and ensemble in the manifests of the models folders (the --models-dir "
        "setting, $PNEUMOVIEW_MODELS, the per-user data folder, the repository's models/). Status: ok, not "
        "installed (weights file missing), checksum mismatch (file damaged or replaced), load error.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--models-dir", type=Path, default=None, help="extra folder searched first")
    p.add_argument(
        "--check-load", action="store_true", help="also build each model and load its weights (slower)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    statuses = {m.id: model_status(m, dirs, try_load=args.check_load) for m in manifest.models.values()}
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
        line = metrics_line(m["metrics"])
        if line:
            pad = " " * 27
            print(textwrap.fill(line, 118, initial_indent=pad, subsequent_indent=pad + "  "))
    for ens in ensembles:
        members = ", ".join(f"{mid}×{w:g}" for mid, w in zip(ens["members"], ens["weights"], strict=True))
        # No file and no hash of its own: those columns stay empty, the members go in the file column.
        print(
            f"{ens['id']:26s} {ens['task']:9s} {ens['version']:8s} {ens['status']:18s} {'-':12s} {'':>9s}  "
            f"ensemble of {members}"
        )
    for m in models:
        if m["status"] != STATUS_OK:
            print(f"\n{m['id']}: {m['message']}")
    return 0


def metrics_line(metrics: dict) -> str:
    """The validation numbers of a model card on one line (scalars only; the confusion matrix is in ``--json``)."""
    parts = []
    for k, v in metrics.items():
        if k == "metric" or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        parts.append(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}")
    return ("validation: " + ", ".join(parts)) if parts else ""
