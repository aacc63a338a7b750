#!/usr/bin/env python3
"""Measure a four-class (acse4) classifier for its model card: held-out and cross-source, plus Grad-CAM examples.

    python tools/acse4_model_card.py --model acse4-classifier [--models-dir DIR] \
        --layout /work/data/acse4-layout --figure1 ../shared/data/other-cxr/figure1-covid \
        --json card.json [--montage build/local-docs/acse4-gradcam.png] [--update-manifest models/manifest.toml]

* **held-out**: the layout's ``val/`` (patients never trained on): per-class one-vs-rest ROC AUC from the
  probabilities, the confusion matrix, and COVID-vs-rest AUC.
* **cross-source**: the Figure 1 COVID-19 collection (``other-cxr/figure1-covid``, never trained on; ``finding`` =
  COVID-19 in its Latin-1 ``metadata.csv``) as the positives, against the same held-out non-COVID images as the
  negatives: P(covid) must rank radiographs of COVID-19 from *another source* above the training collection's
  non-COVID images. Also within Figure 1 alone (COVID-19 vs its few "No finding"/"Pneumonia" images; tiny).
  A large drop from held-out to cross-source means the model learned the source (borders, letters, processing),
  not the disease.
* **leaks checked**: Figure 1 images that are the same radiograph as a training-collection COVID file (thumbnail
  correlation ≥ 0.95; one is) are left out of the cross-source set; and since COVID files are split by file, several
  held-out COVID files have a sibling in training (another panel or day of the same case, :func:`covid_case`), so
  the held-out COVID AUC is also given for the held-out files of cases with no training file.
* **Grad-CAM montage**: for each class, held-out images of that class with the map of that class's logit, plus
  Figure 1 COVID images; saved as a PNG to look at.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pneumoview.class_eval import ClassifiedFiles, classify_files, folder_items, report_lines  # noqa: E402


def figure1_items(folder: Path) -> list[tuple[Path, str]]:
    """(image, finding) of the Figure 1 collection: ``COVID-19``, ``No finding`` or ``Pneumonia`` (blank skipped)."""
    images = {p.stem: p for p in (folder / "images").iterdir() if p.is_file()}
    out = []
    with open(folder / "metadata.csv", newline="", encoding="latin-1") as f:
        for row in csv.DictReader(f):
            finding = row["finding"].strip()
            path = images.get(row["patientid"].strip())
            if finding and path is not None:
                out.append((path, finding))
    return out


def covid_case(stem: str) -> str:
    """The publication or case a COVID file name belongs to (panels and days of one case share it), from the
    naming of the Cohen collection: ``nejmoa2001191_f4`` → ``nejmoa2001191``, ``covid-19-pneumonia-24-day6`` →
    ``covid-19-pneumonia-24``, ``…Singapore.pdf-001-fig2a`` → ``…singapore``. A heuristic: it can only merge."""
    s = stem.lower()
    s = re.sub(r"\.pdf.*$", "", s)
    s = re.sub(r"(\.annot\.original|_lrg|_jumbo)$", "", s)
    s = re.sub(r"[-_.](fig|f|g|gr|fx)-?\d.*$", "", s)
    s = re.sub(r"-(day-?\d+|\d+-(days|hours)|admission)(-.*)?$", "", s)
    s = re.sub(r"^(auntminnie)-[a-z]-", r"\1-", s)
    for _ in range(2):
        s = re.sub(r"-(pa|ap|left|right|[a-z])$", "", s)
    return s


def _thumbs(paths) -> np.ndarray:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            a = np.asarray(im.convert("L").resize((32, 32)), np.float32).ravel()
        out.append((a - a.mean()) / (a.std() + 1e-6))
    return np.stack(out)


def duplicates_of(candidates, reference, threshold: float = 0.95) -> set:
    """The ``candidates`` whose 32-px thumbnail correlates ≥ ``threshold`` with one of ``reference`` (the same
    radiograph, re-encoded or resized; different radiographs stay below 0.9 here)."""
    c = _thumbs(candidates) @ _thumbs(reference).T / 1024.0
    return {p for p, row in zip(candidates, c, strict=True) if row.max() >= threshold}


def _auc_two(pos: np.ndarray, neg: np.ndarray) -> float:
    from pneumoview.metrics import roc_auc

    y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return roc_auc(y, np.concatenate([pos, neg]))


def _se_two(pos: np.ndarray, neg: np.ndarray, n_boot: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of :func:`_auc_two`, positives and negatives resampled by file (stratified)."""
    rng = np.random.default_rng(seed)
    aucs = [
        _auc_two(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
        for _ in range(n_boot)
    ]
    return float(np.std(aucs, ddof=1))


def measure(held: ClassifiedFiles, fig: ClassifiedFiles, train_covid_cases: set[str] | None = None) -> dict:
    """The numbers of the card (see the module docstring); ``fig`` without the near-duplicates of training files."""
    rep = held.report()
    d = rep.to_dict()
    ci = held.classes.index("covid")
    held_labels = np.asarray(held.labels)
    held_neg = held.probs[held_labels != "covid", ci]
    held_pos = held.probs[held_labels == "covid", ci]
    fig_labels = np.asarray(fig.labels)
    fig_pos = fig.probs[fig_labels == "COVID-19", ci]
    fig_neg = fig.probs[fig_labels != "COVID-19", ci]
    pred = np.asarray(held.classes)[np.argmax(fig.probs, axis=1)]
    out = {
        "heldout_images": len(held.paths),
        "accuracy": d["accuracy"],
        "macro_auc": d["macro_auc"],
        **{f"auc_{c['name']}": c["auc"] for c in d["classes"]},
        "confusion": d["confusion"],
        "confusion_classes": list(held.classes),
        "heldout_covid_auc": _auc_two(held_pos, held_neg),
        "heldout_covid_n": int(len(held_pos)),
        "heldout_covid_auc_se": _se_two(held_pos, held_neg),
        **{
            f"auc_{c}_se": _se_two(held.probs[held_labels == c, i], held.probs[held_labels != c, i])
            for i, c in enumerate(held.classes)
        },
        "cross_source_covid_auc_se": _se_two(fig_pos, held_neg),
        "cross_source_covid_auc": _auc_two(fig_pos, held_neg),
        "cross_source_covid_n": int(len(fig_pos)),
        "cross_source_negatives_n": int(len(held_neg)),
        "cross_source_covid_recall": float(np.mean(pred[fig_labels == "COVID-19"] == "covid")),
        "heldout_covid_recall": float(rep.classes[ci].recall),
        "figure1_only_covid_auc": _auc_two(fig_pos, fig_neg) if len(fig_neg) else None,
        "figure1_only_negatives_n": int(len(fig_neg)),
        "figure1_predicted": {c: int(np.sum(pred[fig_labels == "COVID-19"] == c)) for c in held.classes},
    }
    if train_covid_cases is not None:
        new = np.asarray(
            [
                lab == "covid" and covid_case(p.stem) not in train_covid_cases
                for p, lab in zip(held.paths, held.labels, strict=True)
            ]
        )
        out["heldout_covid_new_case_n"] = int(new.sum())
        out["heldout_covid_new_case_auc"] = _auc_two(held.probs[new, ci], held_neg)
    return out


def montage(engine, held: ClassifiedFiles, fig: ClassifiedFiles, path: Path, per_class: int = 3) -> Path:
    """Grad-CAM of each class's own logit on ``per_class`` held-out images of that class (the first ones in
    sorted file order, not chosen by score) and on Figure 1 COVID images; tiles of 224 px with a caption."""
    from PIL import Image, ImageDraw

    from pneumoview.imaging import load_image
    from pneumoview.inference.saliency import gradcam
    from pneumoview.render import heat_colormap

    lut = heat_colormap()
    tile = 224
    rows = []
    groups = [
        (c, [p for p, lab in zip(held.paths, held.labels, strict=True) if lab == c]) for c in held.classes
    ]
    groups.append(("covid", [p for p, lab in zip(fig.paths, fig.labels, strict=True) if lab == "COVID-19"]))
    titles = [f"held-out {c}" for c in held.classes] + ["Figure 1 COVID-19 (other source)"]
    for (klass, paths), title in zip(groups, titles, strict=True):
        tiles = []
        for p in sorted(paths)[:per_class]:
            image = load_image(p)
            k = held.classes.index(klass)
            cam = gradcam(engine, image, class_index=k)
            grey = np.asarray(Image.fromarray(image.display).resize((tile, tile)), dtype=np.float32)
            heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((tile, tile)))
            rgba = lut[heat].astype(np.float32) / 255.0
            alpha = rgba[..., 3:4] * 0.6
            rgb = grey[..., None] * (1 - alpha) + rgba[..., :3] * 255.0 * alpha
            im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
            i = held.paths.index(p) if p in held.paths else None
            probs = held.probs[i] if i is not None else fig.probs[fig.paths.index(p)]
            ImageDraw.Draw(im).text((4, 4), f"P({klass}) {probs[k]:.2f}", fill=(255, 255, 0))
            tiles.append(im)
        row = Image.new("RGB", (tile * per_class, tile + 18), (20, 20, 20))
        ImageDraw.Draw(row).text((4, 3), f"{title}: Grad-CAM of '{klass}'", fill=(230, 230, 230))
        for j, im in enumerate(tiles):
            row.paste(im, (j * tile, 18))
        rows.append(row)
    sheet = Image.new("RGB", (tile * per_class, sum(r.height for r in rows)), (20, 20, 20))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    path.parent.mkdir(parents=True, exist_ok=True)
    # A dithered 256-colour palette, as for the screenshots: a third of the size, no visible banding.
    palette = sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    sheet.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="acse4-classifier")
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--layout", type=Path, default=Path("/work/data/acse4-layout"))
    ap.add_argument("--figure1", type=Path, default=REPO.parent / "shared/data/other-cxr/figure1-covid")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--montage", type=Path, default=None)
    ap.add_argument(
        "--update-manifest", type=Path, default=None, help="add the cross-source metrics to this entry"
    )
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from pneumoview.inference.engine import Engine, StageSelection

    engine = Engine(
        device=args.device,
        models_dir=args.models_dir,
        selection=StageSelection(classify=args.model, segment=None, detect=None),
    )
    held = classify_files(engine, folder_items(args.layout / "val"))
    train_covid = sorted((args.layout / "train" / "covid").iterdir())
    items = figure1_items(args.figure1)
    dups = duplicates_of([p for p, _ in items], [*train_covid, *(args.layout / "val" / "covid").iterdir()])
    for p in sorted(dups):
        print(f"figure1: {p.name} is the same radiograph as a training-collection COVID file; left out")
    fig = classify_files(engine, [(p, f) for p, f in items if p not in dups])
    for what, r in (("held-out", held), ("figure1", fig)):
        for p, why in r.failed:
            print(f"{what}: could not classify {p}: {why}")
    card = measure(held, fig, {covid_case(p.stem) for p in train_covid})
    card["model"] = held.model
    card["figure1_duplicates_left_out"] = sorted(p.name for p in dups)
    print("\n".join(report_lines(held.report(), len(held.paths))))
    print(json.dumps({k: v for k, v in card.items() if k != "confusion"}, indent=2))
    args.json.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if args.montage is not None:
        montage(engine, held, fig, args.montage)
        print(f"Grad-CAM montage: {args.montage}")
    if args.update_manifest is not None:
        update_manifest(args.update_manifest, args.model, card)
        print(f"metrics added to {args.model} in {args.update_manifest}")
    return 0


def update_manifest(path: Path, model_id: str, card: dict) -> None:
    """Add the card's held-out and cross-source numbers to the model's ``metrics`` table (rounded)."""
    import tomllib

    from pneumoview.inference.manifest import model_entry_toml, upsert_entries

    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    entry = next(m for m in doc["model"] if m["id"] == model_id)
    keep = (
        "heldout_covid_auc", "heldout_covid_n", "heldout_covid_recall", "cross_source_covid_auc",
        "cross_source_covid_n", "cross_source_negatives_n", "cross_source_covid_recall", "figure1_only_covid_auc",
        "heldout_covid_new_case_auc", "heldout_covid_new_case_n",
        "figure1_only_negatives_n", "confusion",
    )  # fmt: skip
    metrics = dict(entry.get("metrics", {}))
    for k in keep:
        v = card.get(k)
        if v is not None:
            metrics[k] = round(v, 6) if isinstance(v, float) else v
    entry["metrics"] = metrics
    upsert_entries(path, {model_id: model_entry_toml(entry)})


if __name__ == "__main__":
    raise SystemExit(main())
