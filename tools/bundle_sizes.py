"""Size of a frozen PneumoView app folder by component: ``python tools/bundle_sizes.py dist/PneumoView [--json]``.

Every file under the folder is counted once, in the first component whose pattern matches its path relative to the
app's ``_internal/`` folder (PyInstaller 6's layout); sizes are apparent sizes in bytes, reported in MB (10^6 B).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

#: (component, pattern on the path relative to _internal/, with "/" separators), first match wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("models", r"^models/"),
    ("onnxruntime", r"^onnxruntime"),
    (
        "Qt (PySide6, shiboken, Qt libraries)",
        r"^(PySide6|shiboken6)/|^libQt6|^libicu|^libshiboken|^libpyside",
    ),
    ("numpy / scipy / scikit-image", r"^(numpy|scipy|skimage)(\.libs)?/|^lazy_loader|^imageio|^tifffile"),
    (
        "DICOM (pydicom, decoders, gdcm, highdicom, pynetdicom)",
        r"^(pydicom|pylibjpeg|openjpeg|jpeg_ls|_gdcm|python_gdcm\.libs|highdicom|pynetdicom|dicomweb_client)"
        r"|^_openjpeg|^_CharLS|^gdcm|^libgdcm",
    ),  # fmt: skip
    (
        "Python (interpreter, standard library)",
        r"^libpython|^base_library\.zip$|^python3\.\d+/|^lib-dynload/",
    ),
    ("PneumoView (code, sample study, icons)", r"^pneumoview/"),
    ("Pillow, pyqtgraph, other Python packages", r"^[A-Za-z_][\w.-]*/|__mypyc\."),  # mypyc: psygnal's
    ("system libraries (X11, GL, fonts, ssl …)", r"^lib.*\.so"),
)


def component_sizes(app: Path) -> dict[str, int]:
    """Bytes per component (plus "executables" for the launchers and "other" for what no pattern matched)."""
    internal = app / "_internal"
    sizes: dict[str, int] = {name: 0 for name, _ in COMPONENTS}
    sizes["executables"] = sizes["other"] = 0
    patterns = [(name, re.compile(p)) for name, p in COMPONENTS]
    for path in app.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        try:
            rel = path.relative_to(internal).as_posix()
        except ValueError:  # outside _internal: the launchers, the .desktop file and icons
            sizes["executables"] += size
            continue
        name = next((n for n, rx in patterns if rx.search(rel)), "other")
        sizes[name] += size
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", type=Path, help="the app folder (dist/PneumoView)")
    parser.add_argument("--json", action="store_true", help="print {component: bytes} as JSON")
    args = parser.parse_args(argv)
    if not (args.app / "_internal").is_dir():
        print(f"{args.app} is not a PyInstaller one-folder app (no _internal/ inside)", file=sys.stderr)
        return 2
    sizes = component_sizes(args.app)
    if args.json:
        print(json.dumps({**sizes, "total": sum(sizes.values())}, indent=1))
        return 0
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{size / 1e6:8.1f} MB  {name}")
    print(f"{sum(sizes.values()) / 1e6:8.1f} MB  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
