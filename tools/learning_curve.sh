#!/usr/bin/env bash
# Learning curve of the shipped recipes (issue #11: what more data buys): a classifier (5 epochs, 128 px) and a
# `light` detector (16 epochs, 256 px, backbone from that classifier, exported at its last epoch) trained on a nested,
# patient-level random share of the training split, then scored on the held-out DICOMs through `pneumoview predict`
# (one pass, no segmenters): the detector alone (no gate) for RSNA mAP, the classifier alone for P(opacity) AUC.
# The trainer keeps 20 % of each share's patients as its own monitor split, so the detector is trained on about
# 25 % and 50 % of the 1,282 training images; the 100 % point is the shipped pair.
#
#   tools/learning_curve.sh WORK HELDOUT_DICOMS [SHARES="0.3125 0.625"]   # HELDOUT from tools/make_heldout_dicoms.py
#
# About 40 and 80 minutes of training on this 2-core CPU when both run side by side (OMP_NUM_THREADS=1 each).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$1"
HELDOUT="$2"
SHARES="${3:-0.3125 0.625}"
D="${DATA_DIR:-$REPO/../shared/data/rsna}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
cd "$REPO"
mkdir -p "$WORK"
DATA=(--labels "$D/stage_2_train_labels.csv" --classes "$D/stage_2_detailed_class_info.csv" --images "$D/images-512")
COMMON=(--device cpu --split-seed 0 --val-fraction 0.2 --seed 0 --workers 0 --no-progress)

"$PY" - "$D" "$WORK" $SHARES <<'PY'
"""index-SHARE.csv: the training split's images of a random share of its NIH patients (seed 0; nested shares)."""
import csv, random, sys
from pathlib import Path
sys.path.insert(0, ".")
from tools.validation_split import split_ids
data, work, shares = Path(sys.argv[1]), Path(sys.argv[2]), [float(s) for s in sys.argv[3:]]
train = set(split_ids(data)[0])
with open(data / "index.csv", newline="") as f:
    rows = [r for r in csv.DictReader(f) if r["patientId"] in train]
key = "nih_patient" if "nih_patient" in rows[0] else "patientId"
patients = sorted({r[key] for r in rows})
order = {p: i for i, p in enumerate(random.Random(0).sample(patients, len(patients)))}
for share in shares:
    keep = {p for p in patients if order[p] < round(share * len(patients))}
    with open(work / f"index-{share}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if r[key] in keep)
    print(f"share {share}: {len(keep)} patients, {sum(r[key] in keep for r in rows)} images")
PY

train_share() {  # the classifier, then the detector from it, for one share
  local s="$1" out="$WORK/models-$1"
  mkdir -p "$out"
  OMP_NUM_THREADS=1 "$PY" -m pneumoview train classifier --recipe default --preset rsna3 --id "lc-cls" --size 128 \
    --epochs 5 "${DATA[@]}" --index "$WORK/index-$s.csv" --out "$out" "${COMMON[@]}" >"$WORK/cls-$s.log" 2>&1
  OMP_NUM_THREADS=1 "$PY" -m pneumoview train detector --recipe light --init-from "$(ls "$out"/lc-cls-*.pt)" \
    --id "lc-det" --size 256 --epochs 16 "${DATA[@]}" --index "$WORK/index-$s.csv" --out "$out" "${COMMON[@]}" \
    >"$WORK/det-$s.log" 2>&1
  "$PY" tools/crossval_pipeline.py last-epoch --models "$out" --id lc-det
}
for s in $SHARES; do
  if [[ ! -e "$WORK/models-$s/manifest.toml" ]] || ! grep -q '"lc-det-last"' "$WORK/models-$s/manifest.toml"; then
    train_share "$s" &
  fi
done
wait

score() {  # score NAME MODELS_DIR CLASSIFIER DETECTOR
  local name="$1" models="$2"
  for what in det cls; do
    local args=(--classifier none --detector "$4")
    [[ "$what" == cls ]] && args=(--classifier "$3" --detector none)
    "$PY" -m pneumoview predict "$HELDOUT" --out "$WORK/run-$name-$what" --models-dir "$models" --device cpu \
      --segmenter none --no-tta --no-png "${args[@]}" >/dev/null 2>&1
    echo "== $name, $what"
    "$PY" -m pneumoview evaluate "$WORK/run-$name-$what/submission.csv" --labels "$D/stage_2_train_labels.csv" \
      --classes "$D/stage_2_detailed_class_info.csv" --findings "$WORK/run-$name-$what/findings.csv" 2>&1 |
      grep -E "^RSNA mAP|^P\(opacity\) as reported"
  done
}
for s in $SHARES; do
  score "$s" "$WORK/models-$s" lc-cls lc-det-last
done
score 1.0 "$REPO/models" rsna3-classifier detector
