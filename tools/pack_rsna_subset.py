#!/usr/bin/env python3
"""Make a compact copy of an RSNA-layout dataset for carrying to a GPU machine.

Every image in ``--images`` that the labels file (and ``--index``, when given) lists is read as PneumoView reads it
(display pixels: windowed, MONOCHROME1 inverted), resized to ``--size`` × ``--size`` with Pillow's Lanczos filter
and written as 8-bit grey PNG (lossless, the default) or JPEG. The label CSVs (and the index) are copied with only
the rows of the packed patients. Boxes stay in the labels' 1024-px frame: training scales them by image size / 1024,
so the packed set trains exactly like the original.

Sizes measured on the 1,617 images of ``rsna/images-512``: PNG ≈ 48 MB at 256 px and ≈ 99 MB at 384 px; JPEG
quality 90 ≈ 37 MB at 384 px and ≈ 27 MB at 320 px. For a < 40 MB copy at 384 px use ``--format jpg``.

Usage::

    python tools/pack_rsna_subset.py --data ../shared/data/rsna --out out/rsna384 --size 384 --format jpg

Then train from it with ``--labels OUT/stage_2_train_labels.csv --classes OUT/stage_2_detailed_class_info.csv
--index OUT/index.csv --images OUT/images`` (``tools/train_defaults.sh --data OUT`` does this). The input folders
are only read. Research use only — not for diagnosis; the packed images keep their source licences (see the data
README): do not redistribute them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pneumoview.training.datasets import read_display, read_index, scan_images  # noqa: E402

LABELS = "stage_2_train_labels.csv"
CLASSES = "stage_2_detailed_class_info.csv"
INDEX = "index.csv"


def _filter_csv(src: Path, dst: Path, keep: set[str], column: str = "patientId") -> int:
    with open(src, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = [r for r in reader if r.get(column, "").strip() in keep]
    with open(dst, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def pack(
    images: Path,
    labels: Path,
    out: Path,
    *,
    classes: Path | None = None,
    index: Path | None = None,
    size: int = 384,
    fmt: str = "png",
    quality: int = 90,
    threads: int = 4,
) -> dict[str, int]:
    """Write the packed copy into ``out`` (``images/`` + filtered CSVs); returns counts and bytes written."""
    if out.resolve() in (images.resolve(), labels.parent.resolve()):
        raise ValueError("--out must be a new folder, not the source folder (inputs are never written)")
    with open(labels, newline="", encoding="utf-8-sig") as f:
        labelled = {row["patientId"].strip() for row in csv.DictReader(f)}
    files = scan_images(images)
    wanted = read_index(index).keys if index is not None else None
    todo = sorted(
        (pid, path) for pid, path in files.items() if pid in labelled and (wanted is None or pid in wanted)
    )
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if fmt == "png" else ".jpg"

    def work(item: tuple[str, Path]) -> tuple[str, int | str]:
        pid, path = item
        try:
            display = read_display(path)
        except Exception as exc:  # noqa: BLE001 - report the file and go on
            return pid, f"{type(exc).__name__}: {exc}"
        im = Image.fromarray(display).resize((size, size), Image.LANCZOS)
        target = img_dir / f"{pid}{suffix}"
        if fmt == "png":
            im.save(target, "PNG", optimize=True)
        else:
            im.save(target, "JPEG", quality=quality)
        return pid, target.stat().st_size

    packed: set[str] = set()
    total = 0
    failed = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for pid, res in pool.map(work, todo):
            if isinstance(res, str):
                failed.append((pid, res))
            else:
                packed.add(pid)
                total += res
    _filter_csv(labels, out / LABELS, packed)
    if classes is not None:
        _filter_csv(classes, out / CLASSES, packed)
    if index is not None:
        _filter_csv(index, out / INDEX, packed)
    for pid, message in failed:
        print(f"skipped {pid}: {message}", file=sys.stderr)
    csv_bytes = sum(p.stat().st_size for p in out.glob("*.csv"))
    return {"images": len(packed), "failed": len(failed), "image_bytes": total, "csv_bytes": csv_bytes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", type=Path, help="an rsna/ folder with images-512/ and the label CSVs (sets the rest)"
    )
    p.add_argument("--images", type=Path, help="images folder (<patientId>.dcm|.png|.jpg)")
    p.add_argument("--labels", type=Path, help=LABELS)
    p.add_argument("--classes", type=Path, help=CLASSES)
    p.add_argument("--index", type=Path, help="index CSV restricting the images (copied, filtered)")
    p.add_argument("--out", type=Path, required=True, help="new folder for the packed copy")
    p.add_argument("--size", type=int, default=384, help="square output size in pixels (default 384)")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="png (lossless, default) or jpg")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    if args.data is not None:
        args.images = args.images or args.data / "images-512"
        args.labels = args.labels or args.data / LABELS
        if args.classes is None and (args.data / CLASSES).is_file():
            args.classes = args.data / CLASSES
        if args.index is None and (args.data / INDEX).is_file():
            args.index = args.data / INDEX
    if args.images is None or args.labels is None:
        p.error("give --data, or --images and --labels")
    counts = pack(
        args.images, args.labels, args.out, classes=args.classes, index=args.index, size=args.size,
        fmt=args.format, quality=args.quality, threads=args.threads,
    )  # fmt: skip
    mb = (counts["image_bytes"] + counts["csv_bytes"]) / 1e6
    print(
        f"packed {counts['images']} images at {args.size} px ({args.format}) into {args.out}: {mb:.1f} MB"
        + (f"; {counts['failed']} unreadable files skipped" if counts["failed"] else "")
    )
    if mb > 40:
        print("note: over 40 MB; use --format jpg or a smaller --size for a lighter copy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
