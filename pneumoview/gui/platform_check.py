"""Before Qt starts on Linux: are the system libraries of Qt's ``xcb`` platform plugin there?

When one is missing, Qt prints a hint that names the wrong package (``xcb-cursor0``) and aborts the process
(exit status 134). :func:`startup_problem` finds the missing libraries first, by loading each one as Qt would
(``dlopen``, so ``LD_LIBRARY_PATH`` counts), and returns one sentence naming the packages for Debian/Ubuntu and
Fedora; the viewer then prints it and exits with status 2. Qt-free and cheap (the libraries are loaded by Qt
right after anyway).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["XCB_LIBRARIES", "missing_libraries", "qt_platform", "startup_problem"]

#: What Qt's xcb platform plugin (``libqxcb.so``, ``libQt6XcbQpa``) loads from the system:
#: soname → (Debian/Ubuntu package, Fedora package).
XCB_LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}


def qt_platform(env: Mapping[str, str]) -> str:
    """The platform plugin Qt will try first: ``QT_QPA_PLATFORM``'s first entry, else ``wayland`` in a Wayland
    session, else ``xcb``."""
    explicit = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if explicit:
        return explicit
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return "wayland"
    return "xcb"


def missing_libraries(sonames: Sequence[str]) -> list[str]:
    """The libraries of ``sonames`` that the dynamic loader cannot load (absent, damaged or of the wrong kind)."""
    missing = []
    for soname in sonames:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def startup_problem(env: Mapping[str, str] | None = None, platform: str | None = None) -> str | None:
    """One sentence saying why Qt's platform plugin cannot start, or None (always None off Linux and for
    platforms other than ``xcb``, e.g. ``offscreen``)."""
    env = os.environ if env is None else env
    if not (platform or sys.platform).startswith("linux") or qt_platform(env) != "xcb":
        return None
    missing = missing_libraries(list(XCB_LIBRARIES))
    if missing:
        debian = " ".join(dict.fromkeys(XCB_LIBRARIES[m][0] for m in missing))
        fedora = " ".join(dict.fromkeys(XCB_LIBRARIES[m][1] for m in missing))
        return (
            f"the viewer cannot start: Qt's xcb platform needs system libraries that are missing "
            f"({', '.join(missing)}); install them with 'sudo apt-get install {debian}' (Debian/Ubuntu) or "
            f"'sudo dnf install {fedora}' (Fedora), then start pneumoview again (the command line, "
            f"'pneumoview --help', works without them)."
        )
    if not env.get("DISPLAY"):
        return (
            "the viewer cannot start: there is no X display (DISPLAY is not set); run it in a desktop session, "
            "under 'xvfb-run pneumoview …', or with QT_QPA_PLATFORM=offscreen for --screenshot."
        )
    return None
