#!/usr/bin/env bash
# Build the desktop app: dist/PneumoView/ (PyInstaller one-folder, ONNX Runtime, no PyTorch) and, on Linux,
# dist/PneumoView-<version>-linux-x86_64.tar.gz with the .desktop file and the icons.
#
#   tools/build_app.sh [--dist DIR] [--work DIR] [--models DIR] [--no-tar]
#
#   --dist DIR     where the app and the archive go (default: dist)
#   --work DIR     PyInstaller's work folder and the exported models (default: build/app)
#   --models DIR   the models folder to ship (manifest.toml + *.pt; default: the repository's models/)
#   --no-tar       skip the .tar.gz
#
# Run it from a Python environment where PneumoView is importable with its build-time extras (torch, to export the
# models; onnx and onnxruntime; pyinstaller): $PYTHON, else .venv/bin/python, else python3. The app itself carries
# no torch: the models are exported to ONNX first (`pneumoview models export-onnx`) and only the manifest and the
# ONNX artefacts are bundled. See packaging/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3
fi
DIST=dist WORK=build/app MODELS=models TAR=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --dist) DIST=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --no-tar) TAR=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build_app.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIST" "$WORK"
DIST=$(cd "$DIST" && pwd) WORK=$(cd "$WORK" && pwd)
"$PY" -c "import PyInstaller, onnxruntime" 2>/dev/null || {
  echo "build_app.sh: $PY lacks pyinstaller or onnxruntime: $PY -m pip install -e '.[app]'" >&2
  exit 2
}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, even when another one is installed
VERSION=$("$PY" -c "import pneumoview; print(pneumoview.__version__)")
t0=$(date +%s)

# 1. The models to ship: the manifest and the ONNX artefacts, no .pt weights.
APP_MODELS=$WORK/models
rm -rf "$APP_MODELS" && mkdir -p "$APP_MODELS"
if [[ -f "$MODELS/manifest.toml" ]]; then
  cp "$MODELS/manifest.toml" "$APP_MODELS/"
  # An empty per-user data folder, so that only this models folder is exported (writes $APP_MODELS/onnx/).
  XDG_DATA_HOME=$WORK/no-user-data PNEUMOVIEW_MODELS="" \
    "$PY" -m pneumoview models export-onnx --models-dir "$MODELS" --out "$APP_MODELS"
else
  echo "note: $MODELS has no manifest.toml; the app is built without models"
fi
t1=$(date +%s)

# 2. The app folder.
PNEUMOVIEW_BUNDLE_MODELS=$APP_MODELS "$PY" -m PyInstaller packaging/pneumoview.spec --noconfirm --log-level WARN \
  --distpath "$DIST" --workpath "$WORK/pyinstaller"
APP=$DIST/PneumoView
t2=$(date +%s)

# 3. Linux: desktop entry, icons, and an installer for them; then the archive.
if [[ $(uname -s) == Linux ]]; then
  # On Linux the two launchers differ only in name (a console matters on Windows only), and each carries its own
  # copy of the Python archive (~20 MB): the viewer's becomes a link to the other.
  ln -sfn pneumoview "$APP/pneumoview-gui"
  install -Dm644 packaging/pneumoview.desktop "$APP/share/applications/pneumoview.desktop"
  for n in 16 32 48 64 128 256; do
    install -Dm644 "resources/pneumoview-$n.png" "$APP/share/icons/hicolor/${n}x${n}/apps/pneumoview.png"
  done
  install -Dm644 resources/pneumoview.svg "$APP/share/icons/hicolor/scalable/apps/pneumoview.svg"
  install -m755 packaging/install-desktop-entry.sh "$APP/install-desktop-entry.sh"
  if [[ $TAR == 1 ]]; then
    ARCHIVE=$DIST/PneumoView-$VERSION-linux-$(uname -m).tar.gz
    tar -C "$DIST" -czf "$ARCHIVE" PneumoView
  fi
fi
t3=$(date +%s)

echo
echo "built $APP in $((t3 - t0)) s (models export $((t1 - t0)) s, PyInstaller $((t2 - t1)) s, desktop files and archive $((t3 - t2)) s)"
"$PY" tools/bundle_sizes.py "$APP"
[[ -n "${ARCHIVE:-}" ]] && echo "archive: $ARCHIVE ($(( $(stat -c %s "$ARCHIVE") / 1000000 )) MB)"
"$APP/pneumoview" --version
