"""The model registry: ``manifest.toml`` files describing every model and ensemble.

A manifest is TOML (read with :mod:`tomllib`) with ``schema = 1`` and any number of ``[[model]]`` and
``[[ensemble]]`` tables; see ``models/manifest.toml`` for a documented example. Manifests are looked up in the models
folders (:func:`models_dirs`); when two folders describe the same id, the earlier folder wins, so a user's own
trained model can replace a shipped one.

This module imports no torch: listing models and validating manifests stays cheap.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from pneumoview.atomic import atomic_write_text
from pneumoview.calibration import Calibration
from pneumoview.errors import ManifestError
from pneumoview.preprocess import InputSpec
from pneumoview.types import STAGES

MANIFEST_NAME = "manifest.toml"
TASKS = STAGES  # a manifest task is the stage it serves
APP_NAME = "PneumoView"

_MODEL_KEYS = {
    "id": True,
    "task": True,
    "builder": True,
    "builder_args": False,
    "classes": False,
    "positive_class": False,
    "gate_classes": False,
    "input": True,
    "weights": True,
    "sha256": True,
    "version": True,
    "training": False,
    "metrics": False,
    "intended_use": False,
    "limitations": False,
    "description": False,
    "calibration": False,
    "fusion": False,
}
_ENSEMBLE_KEYS = {
    "id": True,
    "task": True,
    "members": True,
    "weights": False,
    "version": True,
    "description": False,
    "intended_use": False,
    "limitations": False,
    "metrics": False,
    "calibration": False,
    "fusion": False,
}


@dataclass(frozen=True)
class ModelSpec:
    """One model: how to build it, its weights file and checksum, its input, and its model card."""

    id: str
    task: str
    builder: str
    builder_args: Mapping[str, Any]
    input: InputSpec
    weights: str
    sha256: str
    version: str
    classes: tuple[str, ...] = ()
    positive_class: str | None = None
    gate_classes: tuple[str, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    limitations: str = ""
    description: str = ""
    calibration: Calibration | None = None
    fusion: Calibration | None = None
    source: Path | None = None

    @property
    def positive_index(self) -> int | None:
        """Index of the class whose probability is P(pneumonia-like opacity), for classifiers."""
        if self.positive_class is None:
            return None
        return self.classes.index(self.positive_class)

    @property
    def gate_names(self) -> tuple[str, ...]:
        """The classes whose probabilities add up to the gate probability P(opacity): ``gate_classes`` when the
        manifest gives them (acse4: covid, lung_opacity, pneumonia), else ``positive_class`` (rsna3: Lung
        Opacity), else none (no gate)."""
        if self.gate_classes:
            return self.gate_classes
        return (self.positive_class,) if self.positive_class is not None else ()

    @property
    def gate_indices(self) -> tuple[int, ...]:
        """Indices of :attr:`gate_names` in ``classes``."""
        return tuple(self.classes.index(c) for c in self.gate_names)


@dataclass(frozen=True)
class EnsembleSpec:
    """A weighted average of member models' probability maps (members share one task)."""

    id: str
    task: str
    members: tuple[str, ...]
    weights: tuple[float, ...]
    version: str
    description: str = ""
    intended_use: str = ""
    limitations: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    fusion: Calibration | None = None
    source: Path | None = None


@dataclass(frozen=True)
class Manifest:
    """All known models and ensembles, by id."""

    models: Mapping[str, ModelSpec]
    ensembles: Mapping[str, EnsembleSpec]

    def model(self, model_id: str) -> ModelSpec:
        try:
            return self.models[model_id]
        except KeyError:
            raise ManifestError(
                f"unknown model {model_id!r}; valid models: {', '.join(sorted(self.models)) or '(none)'}"
            ) from None

    def ensemble(self, ensemble_id: str) -> EnsembleSpec:
        try:
            return self.ensembles[ensemble_id]
        except KeyError:
            raise ManifestError(
                f"unknown ensemble {ensemble_id!r}; valid ensembles: "
                f"{', '.join(sorted(self.ensembles)) or '(none)'}"
            ) from None

    def by_task(self, task: str) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.task == task]


def repository_models_dir() -> Path:
    """The ``models/`` folder of a source checkout (next to the ``pneumoview`` package)."""
    return Path(__file__).resolve().parents[2] / "models"


def user_models_dir() -> Path:
    """Per-user models folder (platformdirs user data dir), e.g. ``~/.local/share/PneumoView/models``."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "models"


def user_cache_dir() -> Path:
    """Per-user cache folder (platformdirs user cache dir, e.g. ``~/.cache/PneumoView``), or ``$PNEUMOVIEW_CACHE_DIR``.

    Only rebuildable files live here (ONNX exports of the models); deleting the folder loses nothing.
    """
    env = os.environ.get("PNEUMOVIEW_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def models_dirs(setting: str | Path | None = None) -> list[Path]:
    """Models folders in lookup order: the user setting, ``$PNEUMOVIEW_MODELS`` (``os.pathsep``-separated),
    the per-user data folder, then the repository's ``models/``. Folders that do not exist are kept (a status report
    names them), duplicates removed."""
    dirs: list[Path] = []
    if setting:
        dirs.append(Path(setting).expanduser())
    env = os.environ.get("PNEUMOVIEW_MODELS", "")
    dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p.strip())
    dirs.append(user_models_dir())
    dirs.append(repository_models_dir())
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(d)
    return unique


def _check_keys(table: Mapping[str, Any], spec: Mapping[str, bool], what: str, source: Path | None) -> None:
    where = f" in {source}" if source else ""
    unknown = set(table) - set(spec)
    if unknown:
        raise ManifestError(
            f"{what}{where}: unknown key(s) {', '.join(sorted(unknown))}; valid keys: {', '.join(sorted(spec))}"
        )
    missing = [k for k, required in spec.items() if required and k not in table]
    if missing:
        raise ManifestError(f"{what}{where}: missing required key(s) {', '.join(missing)}")


def _calibration(t: Mapping[str, Any], what: str, key: str = "calibration") -> Calibration | None:
    """The ``calibration`` table (classifier output and header facts only) or the ``fusion`` table (which must
    read the detector's evidence, :mod:`pneumoview.calibration`)."""
    if key not in t:
        return None
    if t["task"] != "classify":
        raise ManifestError(f"{what}: only classify models and ensembles take a {key}")
    try:
        cal = Calibration.from_dict(t[key])
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{what}: bad {key}: {exc}") from None
    if cal.uses_evidence != (key == "fusion"):
        need = "must" if key == "fusion" else "must not"
        raise ManifestError(f"{what}: a {key} {need} read another model's output (det_score)")
    return cal


def _parse_model(t: Mapping[str, Any], source: Path | None) -> ModelSpec:
    what = f"model {t.get('id', '?')!r}"
    _check_keys(t, _MODEL_KEYS, what, source)
    if t["task"] not in TASKS:
        raise ManifestError(f"{what}: task must be one of {', '.join(TASKS)}, got {t['task']!r}")
    sha = str(t["sha256"]).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ManifestError(f"{what}: sha256 must be the full 64-hex-digit digest of the weights file")
    try:
        input_spec = InputSpec.from_dict(t["input"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{what}: bad input spec: {exc}") from None
    classes = tuple(str(c) for c in t.get("classes", ()))
    positive = t.get("positive_class")
    if positive is not None and positive not in classes:
        raise ManifestError(f"{what}: positive_class {positive!r} is not one of its classes {list(classes)}")
    gate = tuple(str(c) for c in t.get("gate_classes", ()))
    stray = [c for c in gate if c not in classes]
    if stray or len(set(gate)) != len(gate):
        raise ManifestError(
            f"{what}: gate_classes {list(gate)} must be distinct names among its classes {list(classes)}"
        )
    return ModelSpec(
        id=str(t["id"]),
        task=t["task"],
        builder=str(t["builder"]),
        builder_args=dict(t.get("builder_args", {})),
        input=input_spec,
        weights=str(t["weights"]),
        sha256=sha,
        version=str(t["version"]),
        classes=classes,
        positive_class=positive,
        gate_classes=gate,
        training=dict(t.get("training", {})),
        metrics=dict(t.get("metrics", {})),
        intended_use=str(t.get("intended_use", "")),
        limitations=str(t.get("limitations", "")),
        description=str(t.get("description", "")),
        calibration=_calibration(t, what),
        fusion=_calibration(t, what, "fusion"),
        source=source,
    )


def _parse_ensemble(t: Mapping[str, Any], source: Path | None) -> EnsembleSpec:
    what = f"ensemble {t.get('id', '?')!r}"
    _check_keys(t, _ENSEMBLE_KEYS, what, source)
    members = tuple(str(m) for m in t["members"])
    if not members:
        raise ManifestError(f"{what}: needs at least one member")
    weights = tuple(float(w) for w in t.get("weights", [1.0] * len(members)))
    if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ManifestError(
            f"{what}: weights must be {len(members)} non-negative numbers with a positive sum"
        )
    return EnsembleSpec(
        id=str(t["id"]),
        task=str(t["task"]),
        members=members,
        weights=weights,
        version=str(t["version"]),
        description=str(t.get("description", "")),
        intended_use=str(t.get("intended_use", "")),
        limitations=str(t.get("limitations", "")),
        metrics=dict(t.get("metrics", {})),
        calibration=_calibration(t, what),
        fusion=_calibration(t, what, "fusion"),
        source=source,
    )


def parse_manifest(text: str, source: Path | None = None) -> tuple[list[ModelSpec], list[EnsembleSpec]]:
    """Parse one manifest's TOML text (not yet cross-checked against other manifests)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{source or 'manifest'} is not valid TOML: {exc}") from None
    unknown = set(doc) - {"schema", "model", "ensemble"}
    if unknown:
        raise ManifestError(
            f"{source or 'manifest'}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            "valid: schema, model, ensemble"
        )
    if doc.get("schema", 1) != 1:
        raise ManifestError(
            f"{source or 'manifest'}: unsupported schema {doc.get('schema')!r} (this version reads 1)"
        )
    return (
        [_parse_model(t, source) for t in doc.get("model", [])],
        [_parse_ensemble(t, source) for t in doc.get("ensemble", [])],
    )


def validate(manifest: Manifest, check_builders: bool = True) -> None:
    """Cross-check: builders exist, ensemble members exist and share the ensemble's task."""
    if check_builders:
        # lazy: imports torch/torchvision; importing this module stays light
        from pneumoview.inference.builders import builder_names

        valid = builder_names()
        for m in manifest.models.values():
            if m.builder not in valid:
                raise ManifestError(
                    f"model {m.id!r}: unknown builder {m.builder!r}; valid builders: {', '.join(sorted(valid))}"
                )
    for e in manifest.ensembles.values():
        for member in e.members:
            if member not in manifest.models:
                raise ManifestError(
                    f"ensemble {e.id!r}: member {member!r} is not a known model; valid models: "
                    f"{', '.join(sorted(manifest.models)) or '(none)'}"
                )
            if manifest.models[member].task != e.task:
                raise ManifestError(
                    f"ensemble {e.id!r} ({e.task}): member {member!r} is a {manifest.models[member].task} model"
                )
        classes = {manifest.models[m].classes for m in e.members}
        if e.task == "classify" and len(classes) > 1:
            raise ManifestError(
                f"ensemble {e.id!r}: its classifiers must share their classes to be averaged; "
                + "; ".join(f"{m}: {list(manifest.models[m].classes)}" for m in e.members)
            )


def load_manifest(dirs: Iterable[Path] | None = None, *, check_builders: bool = True) -> Manifest:
    """Read and merge the manifests of ``dirs`` (default :func:`models_dirs`); earlier folders win."""
    models: dict[str, ModelSpec] = {}
    ensembles: dict[str, EnsembleSpec] = {}
    for d in dirs if dirs is not None else models_dirs():
        path = Path(d) / MANIFEST_NAME
        if not path.is_file():
            continue
        ms, es = parse_manifest(path.read_text(encoding="utf-8"), path)
        for m in ms:
            models.setdefault(m.id, m)
        for e in es:
            ensembles.setdefault(e.id, e)
    manifest = Manifest(models=models, ensembles=ensembles)
    validate(manifest, check_builders=check_builders)
    return manifest


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def model_entry_toml(entry: Mapping[str, Any]) -> str:
    """A ``[[model]]`` table as TOML text, from a dict with the manifest's model keys (used by training)."""
    _check_keys(entry, _MODEL_KEYS, f"model {entry.get('id', '?')!r}", None)
    lines = ["[[model]]"] + [f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None]
    return "\n".join(lines) + "\n"


def ensemble_entry_toml(entry: Mapping[str, Any]) -> str:
    """An ``[[ensemble]]`` table as TOML text."""
    _check_keys(entry, _ENSEMBLE_KEYS, f"ensemble {entry.get('id', '?')!r}", None)
    lines = ["[[ensemble]]"] + [f"{k} = {_toml_value(v)}" for k, v in entry.items() if v is not None]
    return "\n".join(lines) + "\n"


def upsert_entries(manifest_path: Path, entries_toml: Mapping[str, str]) -> None:
    """Add or replace ``[[model]]``/``[[ensemble]]`` tables (by id) in a manifest file, written atomically."""
    manifest_path = Path(manifest_path)
    blocks: list[tuple[str | None, str]] = []
    if manifest_path.is_file():
        current: list[str] = []
        for line in manifest_path.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.strip() in ("[[model]]", "[[ensemble]]") and current:
                blocks.append(_block_id(current))
                current = []
            current.append(line)
        if current:
            blocks.append(_block_id(current))
    else:
        blocks.append((None, "schema = 1\n\n"))
    kept = [(bid, text) for bid, text in blocks if bid not in entries_toml]
    text = "".join(t if t.endswith("\n\n") else t.rstrip("\n") + "\n\n" for _, t in kept)
    text += "\n".join(entries_toml.values())
    parse_manifest(text, manifest_path)  # never write a manifest we cannot read back
    atomic_write_text(manifest_path, text)


def _block_id(lines: list[str]) -> tuple[str | None, str]:
    text = "".join(lines)
    if lines[0].strip() in ("[[model]]", "[[ensemble]]"):
        for line in lines[1:]:
            key, _, value = line.partition("=")
            if key.strip() == "id":
                return tomllib.loads(f"v = {value.strip()}")["v"], text
    return None, text
