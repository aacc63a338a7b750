#!/usr/bin/env bash
# Train PneumoView's shipped default models from the RSNA subset (research use only — not for diagnosis).
#
# Produces, in OUT (default: models/), the three defaults the app selects:
#   rsna3-classifier  ResNet-18, 1 channel, 256 px (Normal / No Lung Opacity-Not Normal / Lung Opacity)
#   detector          Faster R-CNN ResNet-18 FPN, 384 px, its ResNet-18 started from the classifier (--init-from)
#   seg-ensemble      equal-weight mean of seg-unet-resnet18, seg-scse_unet-vgg11, seg-deeplabv3plus-resnet18 (256 px)
# each as <id>-<sha256[:8]>.pt (fp16 where that costs no accuracy) plus its manifest.toml entry, and
# OUT/runs/<id>/ with checkpoint.pt, log.csv and curves.png. All from scratch; validation is the same
# patient-level stratified split for every model (20 % of NIH patients, split seed 0), never trained on.
#
# Usage:
#   tools/train_defaults.sh [--quick] [--data DIR] [--out DIR] [--device DEV] [--budget MINUTES]
#
#   --data DIR     an rsna/ folder (images-512/ + stage_2_*.csv + index.csv), the challenge's own download
#                  (stage_2_train_images/ + stage_2_*.csv: the full 26,684 images, with --budget 150 or so), or a
#                  packed copy made by
#                  tools/pack_rsna_subset.py (images/ + the same CSVs). Default: ../shared/data/rsna
#   --out DIR      models folder to write (default: models)
#   --device DEV   auto (default), cuda, cpu
#   --budget MIN   minutes of training for the three stages together (default 7; start-up, decoding and the
#                  fp16 checks add about one more); each stage gets a share (--max-minutes) and fits its
#                  schedule to it after the first epoch
#   --quick        smoke test on CPU: 40 images at 64 px, 1 epoch of 2 steps per model (about 2 minutes)
#   --no-calibrate skip the P(opacity) calibration and fusion (below); the classifier then reports its softmax
#
# Then, as for the shipped CPU set (tools/train_shipped_cpu.sh), P(opacity) is made a probability from out-of-fold
# outputs of the training split, never the validation split: five fold classifiers (--folds 5) give every training
# image an out-of-fold P(opacity) for the Platt calibration, and a fold-0 detector (its last epoch) with the fold-0
# classifier gives the fusion of P(opacity) with the detector's top box score. Both go into the classifier's
# manifest entry (the fusion tied to the detector trained above). This takes a further 45 % of --budget, plus the
# start-up of six more runs and two CPU passes over the training images (not yet timed on a GPU).
#
# Targets one H100: about 8 minutes in total without the calibration. Measured there (torch 2.11, bf16): classifier 0.75 s/epoch,
# detector 13.7 s/epoch (+20 s the first), segmenters 2-2.7 s/epoch (+8 s the first). On a GPU machine without
# the dataset, pack it first (python tools/pack_rsna_subset.py --data ../shared/data/rsna --out out/rsna384
# --size 384 --format jpg; out/ is git-ignored, 38 MB) and pass --data out/rsna384. Without platformdirs installed (a bare machine), a stand-in module is put on
# PYTHONPATH; without pydicom, PNG/JPEG images are read with Pillow (the same pixels).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$REPO/../shared/data/rsna"
OUT="$REPO/models"
DEVICE="auto"
BUDGET="7"
QUICK=0
CALIBRATE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data) DATA="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-calibrate) CALIBRATE=0; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"
else PY="python3"; fi

if [[ -d "$DATA/images-512" ]]; then IMAGES="$DATA/images-512"
elif [[ -d "$DATA/images" ]]; then IMAGES="$DATA/images"
elif [[ -d "$DATA/stage_2_train_images" ]]; then IMAGES="$DATA/stage_2_train_images"  # the challenge's own download
else echo "no images-512/, images/ or stage_2_train_images/ folder in $DATA" >&2; exit 2; fi
for f in stage_2_train_labels.csv stage_2_detailed_class_info.csv; do
  [[ -f "$DATA/$f" ]] || { echo "missing $DATA/$f" >&2; exit 2; }
done

cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import platformdirs" 2>/dev/null; then
  SHIM="$(mktemp -d)"
  cat >"$SHIM/platformdirs.py" <<'EOF'
"""Stand-in for platformdirs on a bare training machine (only the user data dir is used)."""
import os


def user_data_dir(appname=None, appauthor=None, *args, **kwargs):
    return os.path.join(os.path.expanduser("~/.local/share"), appname or "")


def user_config_dir(appname=None, appauthor=None, *args, **kwargs):
    return os.path.join(os.path.expanduser("~/.config"), appname or "")


def user_cache_dir(appname=None, appauthor=None, *args, **kwargs):
    return os.path.join(os.path.expanduser("~/.cache"), appname or "")


def user_log_dir(appname=None, appauthor=None, *args, **kwargs):
    return os.path.join(user_cache_dir(appname), "log")
EOF
  export PYTHONPATH="$PYTHONPATH:$SHIM"
  echo "platformdirs is not installed: using a stand-in from $SHIM"
fi

LABELS=(--labels "$DATA/stage_2_train_labels.csv" --classes "$DATA/stage_2_detailed_class_info.csv"
        --images "$IMAGES")
DATA_ARGS=("${LABELS[@]}")
# index.csv (this project's subset) gives NIH patient groups; without it each patientId is its own patient
[[ -f "$DATA/index.csv" ]] && DATA_ARGS+=(--index "$DATA/index.csv")
RUN=(--device "$DEVICE" --split-seed 0 --seed 0)
if [[ "$QUICK" == 1 ]]; then
  RUN+=(--limit 40 --epochs 1 --max-steps 2 --batch-size 4 --workers 0 --device cpu --no-progress)
  CLS_SIZE=(--size 64); DET_SIZE=(--size 64); SEG_SIZE=(--size 64)
  MEMBERS="unet:resnet18,deeplabv3plus:resnet18"
  CLS_MIN=""; DET_MIN=""; SEG_MIN=""; FOLD_CLS_MIN=""; FOLD_DET_MIN=""
  CLS_EPOCHS=(); DET_EPOCHS=(); SEG_EPOCHS=()
else
  NPROC="$(nproc 2>/dev/null || echo 4)"
  WORKERS=$(( NPROC > 10 ? 8 : (NPROC > 2 ? NPROC - 2 : 0) ))
  RUN+=(--workers "$WORKERS")
  CLS_SIZE=(--size 256); DET_SIZE=(--size 384); SEG_SIZE=(--size 256)
  MEMBERS="unet:resnet18,scse_unet:vgg11,deeplabv3plus:resnet18"
  CLS_EPOCHS=(--epochs 40); DET_EPOCHS=(--epochs 14); SEG_EPOCHS=(--epochs 30)
  # Shares of the budget: classifier 13 %, detector 42 %, each of the three segmenters 13.5 %.
  share() { "$PY" -c "print(round($BUDGET * $1, 2))"; }
  CLS_MIN="$(share 0.13)"; DET_MIN="$(share 0.42)"; SEG_MIN="$(share 0.135)"
  # The calibration's runs, on top: each fold classifier 4 %, the fold-0 detector 25 %.
  FOLD_CLS_MIN="$(share 0.04)"; FOLD_DET_MIN="$(share 0.25)"
fi
COMMON=(--out "$OUT" --val-fraction 0.2 "${RUN[@]}")
budget() { [[ -n "$1" ]] && echo "--max-minutes $1" || true; }

TRAIN=("$PY" -m pneumoview.training.cli train)
START=$(date +%s)
echo "== classifier (rsna3) =="
# shellcheck disable=SC2046
"${TRAIN[@]}" classifier --recipe default --preset rsna3 --id rsna3-classifier "${CLS_SIZE[@]}" \
  "${CLS_EPOCHS[@]}" \
  "${DATA_ARGS[@]}" "${COMMON[@]}" $(budget "$CLS_MIN")
echo "== detector (Faster R-CNN ResNet-18 FPN) =="
# shellcheck disable=SC2046
"${TRAIN[@]}" detector --recipe default --model fasterrcnn_resnet18_fpn --id detector "${DET_SIZE[@]}" \
  --init-from rsna3-classifier \
  "${DET_EPOCHS[@]}" \
  "${DATA_ARGS[@]}" "${COMMON[@]}" $(budget "$DET_MIN")
echo "== segmentation ensemble ($MEMBERS) =="
# shellcheck disable=SC2046
"${TRAIN[@]}" ensemble --recipe default --members "$MEMBERS" --ensemble-id seg-ensemble "${SEG_SIZE[@]}" \
  "${SEG_EPOCHS[@]}" \
  "${DATA_ARGS[@]}" "${COMMON[@]}" $(budget "$SEG_MIN")
if [[ "$CALIBRATE" == 1 ]]; then
  echo "== P(opacity) calibration and fusion (5 fold classifiers, a fold-0 detector) =="
  KF="$OUT/runs/calibration"
  mkdir -p "$KF"
  # the training side of the split above (the validation patients are never read), as an index with patient groups
  "$PY" tools/validation_split.py --data "$DATA" --images "$IMAGES" --train --out "$KF/train-index.csv"
  FOLDS=("${LABELS[@]}" --index "$KF/train-index.csv" --out "$KF/models" --folds 5 "${RUN[@]}")
  for i in 0 1 2 3 4; do
    # shellcheck disable=SC2046
    "${TRAIN[@]}" classifier --recipe default --preset rsna3 --id "rsna3-fold$i" "${CLS_SIZE[@]}" \
      "${CLS_EPOCHS[@]}" --fold "$i" "${FOLDS[@]}" $(budget "$FOLD_CLS_MIN")
  done
  "$PY" tools/fit_calibration.py oof --models "$KF/models" --prefix rsna3-fold --folds 5 \
    --index "$KF/train-index.csv" --data "$DATA" --images "$IMAGES" --out "$KF/oof.csv"
  "$PY" tools/fit_calibration.py fit --oof "$KF/oof.csv" --features platt --write "$OUT/manifest.toml" \
    --id rsna3-classifier --fitted-on "5-fold patient-level out-of-fold predictions of the training split (seed 0)"
  # shellcheck disable=SC2046
  "${TRAIN[@]}" detector --recipe default --model fasterrcnn_resnet18_fpn --id det-fold0 "${DET_SIZE[@]}" \
    --init-from "$(ls "$KF"/models/rsna3-fold0-*.pt)" "${DET_EPOCHS[@]}" --fold 0 "${FOLDS[@]}" \
    $(budget "$FOLD_DET_MIN")
  # its last epoch: the trainer picked its best epoch on the very images the fusion is fitted on
  "$PY" tools/crossval_pipeline.py last-epoch --models "$KF/models" --id det-fold0
  awk -F, 'NR == 1 || $3 == "0"' "$KF/oof.csv" >"$KF/fold0.csv"  # columns: patientId, nih_patient, fold, …
  PNEUMOVIEW_MODELS="$KF/models" "$PY" tools/measure_fusion.py collect --ids "$KF/fold0.csv" --images "$IMAGES" \
    --ext auto --labels "$DATA/stage_2_train_labels.csv" --data "$DATA" --classifier rsna3-fold0 \
    --detector det-fold0-last --cache "$KF/fold0.pkl"
  "$PY" tools/measure_fusion.py report --choose "$KF/fold0.pkl"
  "$PY" tools/measure_fusion.py fit --choose "$KF/fold0.pkl" --write "$OUT/manifest.toml" --id rsna3-classifier \
    --detector detector --fitted-on "fold-0 validation images of the training split, scored by fold-0 models that never saw them (a classifier and a detector trained with this script's recipes on the other folds)"
fi
END=$(date +%s)
echo "== done in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s; weights and manifest in $OUT =="
ls -l "$OUT"/*.pt
du -ch "$OUT"/*.pt | tail -1
