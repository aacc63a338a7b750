#!/usr/bin/env bash
# The exact commands that produced the weights shipped in models/ (research demonstrations; not for diagnosis).
#
# They ran on a 2-core CPU (no GPU was left for this run), with time budgets, so a rerun on another machine gives a
# similar but not bit-identical model: --max-minutes shortens the cosine schedule to the epochs that fit. On a GPU
# use tools/train_defaults.sh instead (larger inputs, more epochs). The detector starts from the classifier, so the
# classifier comes first.
#
#   tools/train_shipped_cpu.sh [DATA_DIR=../shared/data/rsna] [OUT=models]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${1:-$REPO/../shared/data/rsna}"
OUT="${2:-$REPO/models}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
cd "$REPO"
DATA=(--labels "$D/stage_2_train_labels.csv" --classes "$D/stage_2_detailed_class_info.csv" --index "$D/index.csv"
      --images "$D/images-512")
COMMON=(--out "$OUT" --device cpu --split-seed 0 --val-fraction 0.2 --no-progress)
T=("$PY" -m pneumoview train)

# rsna3 classifier: ResNet-18, 1 channel, 128 px (≈ 9 min)
"${T[@]}" classifier --recipe default --preset rsna3 --id rsna3-classifier --size 128 --epochs 14 --max-minutes 13 \
  --seed 0 --workers 1 "${DATA[@]}" "${COMMON[@]}"
# P(opacity) calibration (≈ 20 min): the same recipe on 5 patient-level folds of the 1,282 training images (the
# validation split is never read), their out-of-fold predictions, and Platt scaling fitted on those into the
# classifier's manifest entry. `fit` also prints the header-feature variant (view, age, sex), which did not help.
KF="$(mktemp -d)"
"$PY" - "$D" "$KF/index-train.csv" <<'PY'
import csv, sys
from pathlib import Path
sys.path.insert(0, ".")
from tools.validation_split import split_ids
data, out = Path(sys.argv[1]), sys.argv[2]
train = set(split_ids(data)[0])
with open(data / "index.csv", newline="") as f:
    rows = [r for r in csv.DictReader(f) if r["patientId"] in train]
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
PY
for i in 0 1 2 3 4; do
  "${T[@]}" classifier --recipe default --preset rsna3 --id "rsna3-fold$i" --size 128 --epochs 5 --folds 5 --fold "$i" \
    --seed 0 --workers 1 "${DATA[@]:0:4}" --index "$KF/index-train.csv" "${DATA[@]:6}" --out "$KF/models" \
    --device cpu --split-seed 0 --no-progress
done
"$PY" tools/fit_calibration.py oof --models "$KF/models" --prefix rsna3-fold --folds 5 --index "$KF/index-train.csv" \
  --data "$D" --out "$KF/oof.csv"
"$PY" tools/fit_calibration.py fit --oof "$KF/oof.csv" --features platt --write "$OUT/manifest.toml" \
  --id rsna3-classifier --fitted-on "5-fold patient-level out-of-fold predictions of the 1,282 training images (seed 0)"
# segmentation members, 128 px (≈ 20 and 26 min)
"${T[@]}" segmenter --recipe default --model deeplabv3plus:resnet18 --id seg-deeplabv3plus-resnet18 --size 128 \
  --epochs 12 --max-minutes 11 --seed 0 --workers 1 "${DATA[@]}" "${COMMON[@]}"
OMP_NUM_THREADS=1 "${T[@]}" segmenter --recipe default --model unet:resnet18 --id seg-unet-resnet18 --size 128 \
  --epochs 10 --max-minutes 26 --seed 1 --workers 0 "${DATA[@]}" "${COMMON[@]}"
# the ensemble entry: equal-weight mean of the two members
"$PY" - "$OUT" <<'PY'
import sys
from pathlib import Path
from pneumoview.inference.manifest import ensemble_entry_toml, upsert_entries
entry = {
    "id": "seg-ensemble", "task": "segment", "version": "1.0.0",
    "members": ["seg-unet-resnet18", "seg-deeplabv3plus-resnet18"], "weights": [1.0, 1.0],
    "description": "equal-weight mean of U-Net/ResNet-18 and DeepLabV3+/ResNet-18 (128 px)",
    "intended_use": "Research use only — not for diagnosis.",
}
upsert_entries(Path(sys.argv[1]) / "manifest.toml", {"seg-ensemble": ensemble_entry_toml(entry)})
PY
# detector: the light Faster R-CNN ResNet-18 FPN at 256 px, its ResNet-18 started from the rsna3 classifier above
# (trained on the same split, so it never saw a validation patient); ≈ 80 min
"${T[@]}" detector --recipe light --init-from rsna3-classifier --id detector --epochs 20 --max-minutes 80 \
  --seed 0 --workers 1 "${DATA[@]}" "${COMMON[@]}"
# Default thresholds and the P(opacity) fusion (≈ 75 min), both chosen on out-of-fold outputs of the training split:
# fold-0 models (the fold-0 classifier above, two fold-0 segmenters and a fold-0 detector with the shipped recipes)
# score the 258 fold-0 validation images. `tune` picks the post-processing thresholds (they are built into
# pneumoview/thresholds.py as the defaults: detector boxes only, score >= 0.6, shrink 0.95, gate 0.1), and
# measure_fusion.py fits P(opacity) = sigmoid(a logit(p) + b top-detector-score + c) into the classifier's entry.
F0=(--folds 5 --fold 0 --index "$KF/index-train.csv" --out "$KF/models" --device cpu --split-seed 0 --no-progress)
"${T[@]}" segmenter --recipe default --model deeplabv3plus:resnet18 --id seg-dl-fold0 --size 128 --epochs 8 --seed 0 \
  --workers 1 "${DATA[@]:0:4}" "${DATA[@]:6}" "${F0[@]}"
"${T[@]}" segmenter --recipe default --model unet:resnet18 --id seg-unet-fold0 --size 128 --epochs 7 --seed 1 \
  --workers 1 "${DATA[@]:0:4}" "${DATA[@]:6}" "${F0[@]}"
"${T[@]}" detector --recipe light --init-from "$(ls "$KF"/models/rsna3-fold0-*.pt)" --id det-fold0 --size 256 \
  --epochs 16 --seed 0 --workers 1 "${DATA[@]:0:4}" "${DATA[@]:6}" "${F0[@]}"
"$PY" - "$KF/models" <<'PY'
import sys
from pathlib import Path
from pneumoview.inference.manifest import ensemble_entry_toml, upsert_entries
entry = {"id": "seg-fold0", "task": "segment", "version": "1.0.0", "members": ["seg-unet-fold0", "seg-dl-fold0"],
         "weights": [1.0, 1.0], "description": "fold-0 segmenters (out-of-fold threshold choice only)"}
upsert_entries(Path(sys.argv[1]) / "manifest.toml", {"seg-fold0": ensemble_entry_toml(entry)})
PY
awk -F, 'NR == 1 || $3 == "0"' "$KF/oof.csv" > "$KF/fold0.csv"  # columns: patientId, nih_patient, fold, …
FOLD0=(--classifier rsna3-fold0 --segmenter seg-fold0 --detector det-fold0)
PNEUMOVIEW_MODELS="$KF/models" "$PY" -m pneumoview tune "$D/images-512" --labels "$D/stage_2_train_labels.csv" \
  --only "$KF/fold0.csv" "${FOLD0[@]}" --out "$KF/tune-fold0"
PNEUMOVIEW_MODELS="$KF/models" "$PY" tools/measure_fusion.py collect --ids "$KF/fold0.csv" --images "$D/images-512" \
  --labels "$D/stage_2_train_labels.csv" --data "$D" "${FOLD0[@]}" --cache "$KF/fold0.pkl"
"$PY" tools/measure_fusion.py report --choose "$KF/fold0.pkl"
"$PY" tools/measure_fusion.py fit --choose "$KF/fold0.pkl" --write "$OUT/manifest.toml" --id rsna3-classifier \
  --detector detector --fitted-on "258 fold-0 validation images of the training split, scored by fold-0 models that never saw them (a classifier and a detector trained with the shipped recipes on the other 1,024)"
# Cross-validation of the shipped rules (docs/evidence/README.md; ≈ 80 min per fold, two folds at a time with
# OMP_NUM_THREADS=1 each): for fold I, a detector with the shipped recipe from the fold-I classifier above, its and
# the classifier's outputs on fold I's images kept as docs/evidence/oof-fold$I.csv, then the per-fold and pooled table
# of the README and the declared refit rule for the fusion. Fold 0 is left out: the thresholds and the fusion were
# chosen on it.
"$PY" tools/crossval_pipeline.py folds --index "$KF/index-train.csv" --out "$KF/folds.csv"
for i in 1 2 3 4; do
  FI=(--folds 5 --fold "$i" --index "$KF/index-train.csv" --out "$KF/models" --device cpu --split-seed 0 --no-progress)
  "${T[@]}" detector --recipe light --init-from "$(ls "$KF"/models/rsna3-fold"$i"-*.pt)" --id "det-fold$i" --size 256 \
    --epochs 16 --seed 0 --workers 0 "${DATA[@]:0:4}" "${DATA[@]:6}" "${FI[@]}"
  "$PY" tools/crossval_pipeline.py last-epoch --models "$KF/models" --id "det-fold$i"  # never the epoch picked on fold I
  PNEUMOVIEW_MODELS="$KF/models" "$PY" tools/measure_fusion.py collect --ids "$KF/folds.csv" --fold "$i" \
    --images "$D/images-512" --labels "$D/stage_2_train_labels.csv" --data "$D" --classifier "rsna3-fold$i" \
    --detector "det-fold$i-last" --cache "$KF/fold$i.pkl"
  "$PY" tools/crossval_pipeline.py export --cache "$KF/fold$i.pkl" --fold "$i" --out "docs/evidence/oof-fold$i.csv"
done
"$PY" tools/crossval_pipeline.py report docs/evidence/oof-fold*.csv
"$PY" tools/crossval_pipeline.py refit docs/evidence/oof-fold*.csv
