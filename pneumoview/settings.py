"""The viewer's persistent settings: one JSON file under the per-user config folder.

The file lives in ``platformdirs.user_config_dir("PneumoView")`` (e.g. ``~/.config/PneumoView/settings.json``);
``$PNEUMOVIEW_CONFIG_DIR`` names another folder (tests use it). Reading never fails: a missing file gives the
defaults, and a corrupt or unreadable file, or a field with a wrong type or value, logs a warning and falls back to
the default for what could not be used, because a settings file must never stop the viewer from starting.
Writing is atomic (a temporary file in the same folder, then ``os.replace``).

This module is Qt-free; the window geometry is stored here too, as base64 text the GUI produces.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from pneumoview.atomic import atomic_write_text
from pneumoview.pacs.peers import Peer, peer_from_dict, peer_to_dict
from pneumoview.thresholds import Thresholds
from pneumoview.types import DEFAULT_SELECTION, DEFAULT_TTA, DEVICES

__all__ = [
    "CONFIG_DIR_ENV",
    "DEVICES",
    "OVERLAY_LAYERS",
    "SETTINGS_FILE",
    "Settings",
    "config_dir",
    "load_settings",
    "save_settings",
    "settings_path",
]

log = logging.getLogger(__name__)

APP_NAME = "PneumoView"
CONFIG_DIR_ENV = "PNEUMOVIEW_CONFIG_DIR"
SETTINGS_FILE = "settings.json"

MAX_RECENT = 10

#: Overlay layers the canvas draws; each has an opacity in [0, 1] and a visibility flag.
OVERLAY_LAYERS = (
    "heatmap", "mask_fill", "mask_outline", "detector", "segmentation", "fused", "saliency", "truth", "review",
    "stored",
)  # fmt: skip

_DEFAULT_OPACITY = {
    "heatmap": 0.45,
    "mask_fill": 0.25,
    "mask_outline": 1.0,
    "detector": 1.0,
    "segmentation": 1.0,
    "fused": 1.0,
    "saliency": 0.5,
    "truth": 1.0,
    "review": 1.0,
    "stored": 1.0,
}
_DEFAULT_VISIBLE = {
    "heatmap": True,
    "mask_fill": False,
    "mask_outline": True,
    "detector": True,
    "segmentation": True,
    "fused": True,
    "saliency": False,
    "truth": True,
    "review": True,
    "stored": True,
}


@dataclass
class Settings:
    """Everything the viewer remembers between runs.

    Attributes:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        models_dir: a models folder searched before the default ones (empty: none).
        classifier: id of the classifier the viewer runs (``rsna3-classifier``, or e.g. ``acse4-classifier``).
        thresholds: post-processing settings as ``Thresholds.to_dict()``; see :meth:`get_thresholds`.
        recent_folders: absolute paths, each once, most recent first, at most 10.
        overlay_opacity: opacity in ``[0, 1]`` per layer of :data:`OVERLAY_LAYERS`.
        overlay_visible: visibility per layer of :data:`OVERLAY_LAYERS`.
        include_identifiers_in_exports: put patient identifiers into export file names and CSVs (off by default).
        last_export_dir: the folder of the last export (empty: none yet).
        first_run_done: False until the viewer has started once (the first run opens the sample study).
        auto_analyse: analyse an image as soon as it is selected.
        info_overlay: show view position, age, sex and study date in the image corner (screen only).
        window_geometry, window_state: the main window's geometry and dock state, base64 text from Qt.
        pacs_peers: PACS peers as ``pneumoview.pacs.peer_to_dict`` dictionaries; see :meth:`get_peers`.
        reader_name: the name the reader review records (asked for at the first review decision).
        tta: run flip test-time augmentation (about 1.9× the model time; on by default, see
            :data:`pneumoview.types.DEFAULT_TTA`).
    """

    device: str = "auto"
    models_dir: str = ""
    classifier: str = DEFAULT_SELECTION["classify"]
    thresholds: dict[str, Any] = field(default_factory=lambda: Thresholds().to_dict())
    recent_folders: list[str] = field(default_factory=list)
    overlay_opacity: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_OPACITY))
    overlay_visible: dict[str, bool] = field(default_factory=lambda: dict(_DEFAULT_VISIBLE))
    include_identifiers_in_exports: bool = False
    last_export_dir: str = ""
    first_run_done: bool = False
    auto_analyse: bool = True
    info_overlay: bool = True
    window_geometry: str = ""
    window_state: str = ""
    reader_name: str = ""
    pacs_peers: list[dict[str, Any]] = field(default_factory=list)
    tta: bool = DEFAULT_TTA

    def get_peers(self) -> list[Peer]:
        """The stored PACS peers (already validated when loaded)."""
        return [peer_from_dict(p) for p in self.pacs_peers]

    def set_peers(self, peers: list[Peer]) -> None:
        self.pacs_peers = [peer_to_dict(p) for p in peers]

    def get_thresholds(self) -> Thresholds:
        """The stored thresholds; the defaults (with a warning) when the stored ones are invalid."""
        try:
            return Thresholds.from_dict(self.thresholds)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring the saved thresholds (%s); using the defaults", exc)
            return Thresholds()

    def set_thresholds(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds.to_dict()

    def add_recent_folder(self, folder: str | Path) -> None:
        """Put ``folder`` first in :attr:`recent_folders` as an absolute path (relative paths are taken from the
        current folder; no duplicates, at most 10 kept)."""
        text = _absolute(folder)
        self.recent_folders = [text, *[f for f in self.recent_folders if f != text]][:MAX_RECENT]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Settings:
        """Build from parsed JSON, keeping each valid field and warning about (and dropping) the rest."""
        settings = cls()
        if not isinstance(data, dict):
            log.warning("settings file does not hold a JSON object; using the defaults")
            return settings
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("ignoring unknown settings: %s", ", ".join(unknown))
        for name in known & set(data):
            try:
                setattr(settings, name, _CHECKS[name](data[name], getattr(settings, name)))
            except (ValueError, TypeError) as exc:
                log.warning("ignoring setting %r (%s); using the default", name, exc)
        return settings


def _str(value: Any, _default: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _bool(value: Any, _default: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true/false, got {type(value).__name__}")
    return value


def _device(value: Any, default: Any) -> str:
    text = _str(value, default).strip().lower()
    if text not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {value!r}")
    return text


def _thresholds(value: Any, _default: Any) -> dict[str, Any]:
    return Thresholds.from_dict(value).to_dict()  # raises ValueError naming the bad key or value


def _absolute(folder: str | Path) -> str:
    """One spelling per folder: absolute, ``~`` expanded, ``..`` and ``.`` removed (symbolic links kept)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(folder))))


def _folders(value: Any, _default: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of folder names")
    return list(dict.fromkeys(_absolute(v) for v in value if v.strip()))[:MAX_RECENT]


def _layer_map(kind: type) -> Any:
    def check(value: Any, default: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError("expected an object of layer → value")
        out = dict(default)
        for layer, v in value.items():
            if layer not in OVERLAY_LAYERS:
                log.warning("ignoring unknown overlay layer %r", layer)
                continue
            if kind is bool:
                if isinstance(v, bool):
                    out[layer] = v
                continue
            if isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0:
                out[layer] = float(v)
            else:
                log.warning("ignoring opacity %r of layer %r: it must be a number in [0, 1]", v, layer)
        return out

    return check


def _peers(value: Any, _default: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TypeError("expected a list of PACS peers")
    out = []
    for item in value:
        try:
            out.append(peer_to_dict(peer_from_dict(item)))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring a saved PACS peer (%s)", exc)
    return out


_CHECKS = {
    "device": _device,
    "models_dir": _str,
    "classifier": _str,
    "thresholds": _thresholds,
    "recent_folders": _folders,
    "overlay_opacity": _layer_map(float),
    "overlay_visible": _layer_map(bool),
    "include_identifiers_in_exports": _bool,
    "last_export_dir": _str,
    "first_run_done": _bool,
    "auto_analyse": _bool,
    "info_overlay": _bool,
    "window_geometry": _str,
    "window_state": _str,
    "pacs_peers": _peers,
    "reader_name": _str,
    "tta": _bool,
}


def config_dir() -> Path:
    """The settings folder: ``$PNEUMOVIEW_CONFIG_DIR`` when set, else the platform's per-user config folder."""
    env = os.environ.get(CONFIG_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def settings_path() -> Path:
    """The settings file, ``config_dir() / "settings.json"``."""
    return config_dir() / SETTINGS_FILE


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the settings; never raises. Missing file → defaults; unusable file or fields → warning + defaults."""
    p = Path(path) if path is not None else settings_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the settings file %s (%s); using the defaults", p, exc)
        return Settings()
    try:
        data = json.loads(text)
    except ValueError as exc:
        log.warning("the settings file %s is not valid JSON (%s); using the defaults", p, exc)
        return Settings()
    return Settings.from_dict(data)


def save_settings(settings: Settings, path: str | Path | None = None) -> Path | None:
    """Write the settings atomically; returns the file, or None (with a warning) when it cannot be written."""
    p = Path(path) if path is not None else settings_path()
    try:
        atomic_write_text(p, json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning("cannot save the settings to %s (%s)", p, exc)
        return None
    return p
