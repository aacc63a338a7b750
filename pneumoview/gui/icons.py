"""Icons bundled in ``pneumoview/gui/resources`` (SVG, drawn for PneumoView), loaded through importlib.resources."""

from __future__ import annotations

import functools
from importlib import resources

from PySide6 import QtGui


def _resource_dir():
    return resources.files("pneumoview.gui") / "resources"


@functools.cache
def icon_names() -> tuple[str, ...]:
    """Names of the bundled icons (file names without ``.svg``)."""
    return tuple(sorted(p.name[:-4] for p in _resource_dir().iterdir() if p.name.endswith(".svg")))


@functools.cache
def icon(name: str) -> QtGui.QIcon:
    """The bundled icon ``name``; unknown names raise KeyError listing the known ones."""
    if name not in icon_names():
        raise KeyError(f"unknown icon {name!r}; known icons: {', '.join(icon_names())}")
    with resources.as_file(_resource_dir() / f"{name}.svg") as path:
        return QtGui.QIcon(str(path))


def status_icon(status: str) -> QtGui.QIcon:
    """The browser's icon for an image status (``"not analysed"``, ``"finding"`` …)."""
    return icon("status-" + status.replace(" ", "-"))
