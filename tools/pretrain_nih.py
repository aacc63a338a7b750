#!/usr/bin/env python3
"""Pretrain a ResNet-18 classifier's encoder on the NIH ChestX-ray14 labels of the images we have (issue #11).

Every radiograph in ``../shared/data/rsna`` is an NIH image, and ``acse4/`` holds 458 more NIH images (149
"Pneumonia", 309 "No Finding") outside the RSNA set. ``../shared/data/nih/Data_Entry_2017_v2020.csv.gz`` gives each
of them NIH's 14 text-mined findings. This trains the shipped classifier's architecture (ResNet-18, 1 channel, the
``default`` recipe's input, optimiser and augmentation) on those 14 findings as independent sigmoid outputs, and
writes its state dict: ``pneumoview train classifier --init-from OUT.pt`` then starts the rsna3 classifier from it
(the ResNet stages are copied, the 14-output head is not).

Leakage: only the RSNA images of ``--index`` are used (the training split), and with ``--folds K --fold I`` only
those outside fold I (recomputed with the trainer's own split call), so a fold model's out-of-fold score stays
honest. An acse4 image is used only when its NIH patient has no RSNA image outside what is used, so no
validation or held-out patient's other films come in either.

    python tools/pretrain_nih.py --index TRAIN_INDEX --out nih.pt [--folds 5 --fold 0] [--size 128] [--epochs 5]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip


def nih_labels(path: Path) -> dict[str, np.ndarray]:
    """NIH image name → multi-hot ``(14,)`` float32 vector of :data:`FINDINGS` ("No Finding" is all zeros)."""
    out: dict[str, np.ndarray] = {}
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            found = set(row["Finding Labels"].split("|"))
            out[row["Image Index"]] = np.asarray([name in found for name in FINDINGS], dtype=np.float32)
    return out


def training_images(args: argparse.Namespace) -> tuple[list[Path], list[str], list[str]]:
    """The files to pretrain on, their NIH image names and NIH patients, leakage rules applied (module doc)."""
    from pneumoview.training.datasets import load_rsna, patient_strata
    from pneumoview.training.splits import patient_split

    rsna = args.data / "rsna"
    src = load_rsna(
        rsna / "stage_2_train_labels.csv", rsna / "images-512", classes_csv=rsna / "stage_2_detailed_class_info.csv",
        index_csv=args.index,
    )  # fmt: skip
    recs = src.records
    if args.folds is not None:
        split = patient_split(
            [r.patient for r in recs],
            patient_strata(recs),
            seed=args.split_seed,
            folds=args.folds,
            fold=args.fold,
        )
        recs = [recs[i] for i in split.train]
    with open(rsna / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    nih_image = {row["patientId"]: row["nih_image"] for row in index}
    used_patients = {r.patient for r in recs}
    forbidden = {row["nih_patient"] for row in index} - used_patients
    paths = [r.path for r in recs]
    names = [nih_image[r.key] for r in recs]
    patients = [r.patient for r in recs]
    with open(args.data / "acse4" / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["nih_image"] and row["nih_patient"] not in forbidden:
                paths.append(args.data / "acse4" / row["file"])
                names.append(row["nih_image"])
                patients.append(row["nih_patient"])
    return paths, names, patients


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--index", type=Path, required=True, help="index CSV of the RSNA images allowed (training split)"
    )
    ap.add_argument("--out", type=Path, required=True, help="weights file to write (.pt)")
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--fold", type=int, default=None)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=SHARED)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from pneumoview.inference.classifier import resnet18_classifier
    from pneumoview.metrics import roc_auc
    from pneumoview.training.augment import AugmentConfig, augment
    from pneumoview.training.datasets import Record, build_cache
    from pneumoview.training.family import model_input
    from pneumoview.training.recipes import recipe

    torch.manual_seed(args.seed)
    cfg = recipe("classifier", "default", size=args.size)
    paths, names, patients = training_images(args)
    labels_of = nih_labels(args.data / "nih" / "Data_Entry_2017_v2020.csv.gz")
    missing = [n for n in names if n not in labels_of]
    if missing:
        raise SystemExit(f"{len(missing)} images have no NIH labels (e.g. {missing[0]})")
    records = [
        Record(name, path, "nih", 0, np.zeros((0, 4), np.float32), None, patient)
        for name, path, patient in zip(names, paths, patients, strict=True)
    ]
    t0 = time.perf_counter()
    cache = build_cache(records, cfg.input_spec, threads=2)
    if cache.failed:
        raise SystemExit(f"{len(cache.failed)} images could not be read (e.g. {cache.failed[0]})")
    y = np.stack([labels_of[r.key] for r in cache.records])
    print(
        f"{len(cache)} images ({len(set(patients))} NIH patients) read in {time.perf_counter() - t0:.0f} s; "
        f"positives per finding: "
        + ", ".join(f"{n} {int(c)}" for n, c in zip(FINDINGS, y.sum(0), strict=True)),
        flush=True,
    )

    model = resnet18_classifier(
        num_classes=len(FINDINGS), in_channels=cfg.channels, dropout=float(cfg.dropout)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(cache) / cfg.batch_size)
    total, warm = args.epochs * steps_per_epoch, steps_per_epoch  # one warm-up epoch, then cosine to 0

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    aug = AugmentConfig.named("full")
    targets = torch.from_numpy(y)
    for epoch in range(args.epochs):
        model.train()
        rng = np.random.default_rng([args.seed, epoch])
        order = rng.permutation(len(cache))
        seen, loss_sum, t_epoch = 0, 0.0, time.perf_counter()
        scores = np.zeros_like(y)
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            x = torch.stack([model_input(augment(cache.images[i], rng, aug)[0], cfg) for i in rows])
            logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, targets[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(rows)
            loss_sum += float(loss.detach()) * len(rows)
            scores[rows] = torch.sigmoid(logits.detach()).numpy()
        aucs = [roc_auc(y[:, k], scores[:, k]) for k in range(len(FINDINGS)) if 0 < y[:, k].sum() < len(y)]
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.4f}, mean training AUC over the findings "
            f"{np.nanmean(aucs):.3f} (in-sample, augmented), {time.perf_counter() - t_epoch:.0f} s",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
