"""Where the ONNX exports of the models live, how they are named, and how they are verified (torch-free).

Two places, searched in this order for a model ``spec``:

1. **Shipped**, in each models folder (the manifest's own folder first): ``onnx/<id>-<sha256[:12]>.onnx`` with a
   JSON sidecar ``onnx/<id>-<sha256[:12]>.json`` ``{model_id, source_sha256, onnx_sha256, opset, exporter_version,
   torch}``. ``pneumoview models export-onnx --out DIR`` writes them (the desktop bundle ships them). The file is
   used only when the sidecar names this model and its full weights sha256, and the file's sha256 equals
   ``onnx_sha256``.
2. **Cached**, in the per-user cache folder (:func:`~pneumoview.inference.manifest.user_cache_dir`):
   ``onnx/<id>-<sha12>-ort<onnxruntime version>-x<EXPORTER_VERSION>.onnx`` with the same sidecar. The engine
   exports there on first use when PyTorch is installed; a new weights file, ONNX Runtime version or exporter
   version gives a new name, so a stale export is never used (and is deleted when the new one is written).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumoview.atomic import atomic_write_bytes
from pneumoview.errors import ModelError
from pneumoview.inference.manifest import ModelSpec, user_cache_dir
from pneumoview.inference.weights import file_digest, sha256_file

__all__ = [
    "EXPORTER_VERSION",
    "OPSET",
    "OnnxArtefact",
    "OnnxExportMissingError",
    "cache_path",
    "find_artefact",
    "shipped_path",
    "sidecar_path",
    "write_sidecar",
]

#: Bumped whenever the export code changes what it writes; part of the cache key.
EXPORTER_VERSION = 2
#: ONNX opset of the exports (torchvision's RoIAlign and NMS need ≥ 11).
OPSET = 17


class OnnxExportMissingError(ModelError):
    """No usable ONNX export of a model, and no PyTorch to make one."""


@dataclass(frozen=True)
class OnnxArtefact:
    """A verified ONNX file of one model."""

    path: Path
    model_id: str
    source_sha256: str
    onnx_sha256: str
    opset: int
    exporter_version: int
    torch: str


def sidecar_path(onnx_path: Path) -> Path:
    """The JSON sidecar beside an ``.onnx`` file (same name, ``.json``)."""
    return onnx_path.with_suffix(".json")


def shipped_path(spec: ModelSpec, models_dir: Path) -> Path:
    """Where a models folder ships ``spec``'s export: ``<models_dir>/onnx/<id>-<sha12>.onnx``."""
    return Path(models_dir) / "onnx" / f"{spec.id}-{spec.sha256[:12]}.onnx"


def _ort_version() -> str:
    # lazy: optional (the onnx extra): imported only when installed and asked for
    import onnxruntime

    return str(onnxruntime.__version__)


def cache_path(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """Where the per-user cache keeps ``spec``'s export for the installed ONNX Runtime and this exporter."""
    root = cache_dir if cache_dir is not None else user_cache_dir()
    name = f"{spec.id}-{spec.sha256[:12]}-ort{_ort_version()}-x{EXPORTER_VERSION}.onnx"
    return Path(root) / "onnx" / name


def write_sidecar(onnx_path: Path, spec: ModelSpec, *, opset: int, torch_version: str) -> Path:
    """Write the sidecar of a finished export (atomically) and return its path."""
    meta = {
        "model_id": spec.id,
        "source_sha256": spec.sha256,
        "onnx_sha256": sha256_file(onnx_path),
        "opset": opset,
        "exporter_version": EXPORTER_VERSION,
        "torch": torch_version,
    }
    return atomic_write_bytes(sidecar_path(onnx_path), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))


def read_artefact(onnx_path: Path, spec: ModelSpec, *, exporter_version: int | None = None) -> OnnxArtefact:
    """Verify ``onnx_path`` against its sidecar and ``spec``; raises ModelError saying what is wrong.

    ``exporter_version`` (for cached files) must match the sidecar's; shipped files may come from any exporter.
    """
    side = sidecar_path(onnx_path)
    try:
        meta: dict[str, Any] = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{side}: cannot read the sidecar of {onnx_path.name} ({exc})") from None
    if meta.get("model_id") != spec.id or meta.get("source_sha256") != spec.sha256:
        raise ModelError(
            f"{onnx_path}: its sidecar says it was exported from {meta.get('model_id')!r} with weights "
            f"{str(meta.get('source_sha256'))[:12]}, not {spec.id!r} {spec.sha256[:12]}; export it again with "
            "`pneumoview models export-onnx`"
        )
    if exporter_version is not None and meta.get("exporter_version") != exporter_version:
        raise ModelError(f"{onnx_path}: exported by exporter version {meta.get('exporter_version')}")
    actual = file_digest(onnx_path)  # hashed once per file identity: this runs on every batch
    if actual != meta.get("onnx_sha256"):
        raise ModelError(
            f"{onnx_path}: the file's sha256 {actual[:12]} is not the {str(meta.get('onnx_sha256'))[:12]} its "
            "sidecar records (damaged or replaced); delete it and export again with `pneumoview models export-onnx`"
        )
    return OnnxArtefact(
        onnx_path, spec.id, spec.sha256, actual, int(meta.get("opset", 0)),
        int(meta.get("exporter_version", 0)), str(meta.get("torch", "")),
    )  # fmt: skip


def find_artefact(
    spec: ModelSpec, dirs: Iterable[Path], cache_dir: Path | None = None
) -> tuple[OnnxArtefact | None, list[str]]:
    """The first verified export of ``spec`` (shipped, then cached), and why other candidates were refused."""
    search = list(dirs)
    if spec.source is not None:
        search.insert(0, spec.source.parent)
    problems: list[str] = []
    candidates: list[tuple[Path, int | None]] = [
        (shipped_path(spec, Path(d)), None) for d in dict.fromkeys(search)
    ]
    candidates.append((cache_path(spec, cache_dir), EXPORTER_VERSION))
    for path, version in candidates:
        if not path.is_file():
            continue
        try:
            return read_artefact(path, spec, exporter_version=version), problems
        except ModelError as exc:
            problems.append(str(exc))
    return None, problems


def missing_message(spec: ModelSpec, problems: list[str]) -> str:
    """The note for a stage that cannot run because ``spec`` has no usable export and PyTorch is not installed."""
    why = f" ({'; '.join(problems)})" if problems else ""
    return (
        f"no ONNX export of {spec.id}{why}; run `pneumoview models export-onnx` where PyTorch is installed "
        "(or install PyTorch, which exports it on first use)"
    )
