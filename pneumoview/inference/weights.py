"""Finding, verifying and loading model weights.

Weights files are plain state dicts saved with ``torch.save``. Every load checks the file's full sha256 against the
manifest first and then uses ``torch.load(..., weights_only=True)`` so a file carrying pickled code is refused, and
``load_state_dict(strict=True)`` so a file for another architecture is refused too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoview.errors import ChecksumError, ModelLoadError, ModelNotInstalledError
from pneumoview.inference.manifest import ModelSpec, models_dirs

if TYPE_CHECKING:
    import torch

STATUS_OK = "ok"
STATUS_NOT_INSTALLED = "not installed"
STATUS_CHECKSUM = "checksum mismatch"
STATUS_LOAD_ERROR = "load error"


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Full hex sha256 of a file, streamed in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


# Digest per file identity (path, size, mtime, inode): start-up checks the models that can run and then loads them,
# and each used to hash every weights file again. A file that is replaced or rewritten has a new identity.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """:func:`sha256_file` of ``path``, hashed once per file identity in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = sha256_file(path)
    return digest


def find_weights(spec: ModelSpec, dirs: Iterable[Path] | None = None) -> Path:
    """The first existing weights file for ``spec`` in the models folders (manifest's own folder first)."""
    search = list(dirs) if dirs is not None else models_dirs()
    if spec.source is not None:
        search.insert(0, spec.source.parent)
    for d in search:
        p = Path(d) / spec.weights
        if p.is_file():
            return p
    where = ", ".join(str(d) for d in dict.fromkeys(search))
    raise ModelNotInstalledError(
        f"model {spec.id!r} is not installed: its weights file {spec.weights!r} is in none of the models folders "
        f"({where}). Train it with `pneumoview train` (see the README) or copy the file into one of those "
        "folders, or point PNEUMOVIEW_MODELS at the folder that holds it."
    )


def verified_weights(spec: ModelSpec, dirs: Iterable[Path] | None = None) -> Path:
    """Find the weights file and check its sha256; raises ModelNotInstalledError or ChecksumError."""
    path = find_weights(spec, dirs)
    actual = file_digest(path)
    if actual != spec.sha256:
        raise ChecksumError(path, spec.sha256, actual)
    return path


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True``; a checkpoint that carries pickled code raises ModelLoadError.

    Accepts a bare state dict or a training checkpoint dict with a ``"model"`` state dict inside.
    """
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ModelLoadError(
            f"{path}: refused to load: the file is not a plain weights file (it may carry pickled code, or be "
            f"damaged). Only state dicts saved by PneumoView are accepted. Details: {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: not a state dict of tensors; cannot load it as model weights")
    return obj


def build_and_load(spec: ModelSpec, weights_path: str | Path | None) -> torch.nn.Module:
    """Build ``spec``'s architecture and load ``weights_path`` strictly (``None`` leaves random weights)."""
    from pneumoview.inference.builders import build

    model = build(spec.builder, **dict(spec.builder_args))
    if weights_path is not None:
        state = load_state_dict_file(weights_path)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"{weights_path}: the weights do not fit model {spec.id!r} (builder {spec.builder}): "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return model.eval()


@dataclass(frozen=True)
class ModelStatus:
    """What ``pneumoview models`` reports for one model."""

    id: str
    task: str
    version: str
    status: str
    path: Path | None
    sha256_prefix: str
    size_bytes: int | None
    message: str = ""


def model_status(
    spec: ModelSpec, dirs: Iterable[Path] | None = None, *, try_load: bool = False
) -> ModelStatus:
    """Check one model without raising: installed? checksum right? (optionally) loads?"""
    prefix = spec.sha256[:12]
    try:
        path = find_weights(spec, dirs)
    except ModelNotInstalledError as exc:
        return ModelStatus(
            spec.id, spec.task, spec.version, STATUS_NOT_INSTALLED, None, prefix, None, str(exc)
        )
    size = path.stat().st_size
    actual = sha256_file(path)
    if actual != spec.sha256:
        return ModelStatus(
            spec.id,
            spec.task,
            spec.version,
            STATUS_CHECKSUM,
            path,
            prefix,
            size,
            str(ChecksumError(path, spec.sha256, actual)),
        )
    if try_load:
        try:
            build_and_load(spec, path)
        except Exception as exc:  # noqa: BLE001 - a report must list every failure, whatever its type
            return ModelStatus(
                spec.id, spec.task, spec.version, STATUS_LOAD_ERROR, path, prefix, size, str(exc)
            )
    return ModelStatus(spec.id, spec.task, spec.version, STATUS_OK, path, prefix, size)
