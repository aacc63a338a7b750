#!/usr/bin/env bash
# Regenerate the README screenshots in docs/screenshots/ by running the real viewer under Xvfb.
#
#   tools/screenshots.sh                 # with the models of the default models folders (models/ …)
#   tools/screenshots.sh --test-models   # with the tiny test models of tests/model_fixtures.py (their boxes and
#                                        # heat maps follow bright pixels: a demo of the interface, not of results)
#
# Needs Debian's xvfb (apt-get install -y xvfb) and the system libraries the README names. Runs Qt's real xcb
# platform (as on a desktop), never offscreen. Uses a throw-away settings folder, never the user's settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=docs/screenshots
mkdir -p "$OUT"
export QT_QPA_PLATFORM=xcb  # the platform users get on Linux (not offscreen), under Xvfb
export PNEUMOVIEW_CONFIG_DIR
PNEUMOVIEW_CONFIG_DIR=$(mktemp -d)
MODELS_TMP=""
trap 'rm -rf "$PNEUMOVIEW_CONFIG_DIR" ${MODELS_TMP:+"$MODELS_TMP"}' EXIT

prelude="import sys; sys.path.insert(0, '.')"
extra=()
if [[ "${1:-}" == "--test-models" ]]; then
  MODELS_TMP=$(mktemp -d)
  "$PY" -c "$prelude; from pathlib import Path; from tests.model_fixtures import equivariant_models_dir as m; m(Path(sys.argv[1]))" "$MODELS_TMP"
  prelude="$prelude; import tests.model_fixtures"  # registers the test models' builders
  extra=(--models-dir "$MODELS_TMP")
fi

shot() {  # shot PATH OUTPUT.png
  xvfb-run -a -s "-screen 0 1600x1000x24" \
    "$PY" -c "$prelude; from pneumoview.gui.app import main; sys.exit(main(sys.argv[1:]))" \
    "$1" --screenshot "$2" --device cpu "${extra[@]}"
  # A dithered 256-colour palette keeps each file under 500 kB with no visible banding at this size.
  "$PY" -c "
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert('RGB')
palette = im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(sys.argv[1], optimize=True)
print(sys.argv[1], im.size)" "$2"
}

shot pneumoview/data/sample_study "$OUT/main-window.png"
shot ../shared/data/dicom/chest/WG04_RG1_J2KI.dcm "$OUT/dicom-jpeg2000.png"  # 15-bit MONOCHROME1, 1955 × 1841
# The four-class acse4-classifier (Settings ▸ Classifier) on a held-out COVID-19 radiograph of the Cohen collection
# (validation side of tools/make_acse4_layout.py; skipped without the shipped acse4-classifier). That collection may
# be used for research but not redistributed (../shared/data/acse4/README.md), so this one goes to build/local-docs/,
# which git ignores, never to docs/.
if [[ -z "$MODELS_TMP" ]] && grep -q '"acse4-classifier"' models/manifest.toml; then
  mkdir -p build/local-docs
  echo '{"classifier": "acse4-classifier", "first_run_done": true}' >"$PNEUMOVIEW_CONFIG_DIR/settings.json"
  shot "../shared/data/acse4/covid/${ACSE4_SHOT:-covid-19-pneumonia-28.jpg}" build/local-docs/acse4-covid.png
fi
ls -l "$OUT"
