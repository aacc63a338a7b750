"""``pneumoview predict``: analyse folders/files and write RSNA submission, findings, annotated PNGs and run.json."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from pneumoview.commands.common import (
    add_model_options,
    add_threshold_options,
    engine_from_args,
    thresholds_from_args,
    thresholds_line,
)

EPILOG = textwrap.dedent(
    """
    outputs (in --out DIR):
      submission.csv   RSNA format: patientId,PredictionString ("conf x y w h ..." in original pixels; empty = none)
      findings.csv     one row per image and box: probabilities, box source, confidence, x y w h, area px/mm²,
                       thresholds, model versions and hash prefixes
      annotated/       one annotated PNG per image (heat map, mask outline, boxes, footer with models/thresholds)
      run.json         app version, models and hashes, thresholds, device, timings, failed files with reasons
      dicom/           with --dicom, for every DICOM input: <id>_SR.dcm (TID 1500 Comprehensive 3D SR, always),
                       <id>_SEG.dcm (when the mask has a pixel; with --probability-map also the probability map),
                       <id>_GSPS.dcm (with --gsps); same study as the source, listed in run.json under "dicom"

    patientId is the file stem for RSNA-style names (<patientId>.dcm), otherwise a non-identifying hash;
    --include-identifiers uses the DICOM PatientID instead and adds identifier columns.

    re-running into the same DIR resumes: images already done with the same thresholds are skipped (their PNGs and
    journal records are left as they are) and the CSVs/run.json are rebuilt with every row; a killed run resumes
    where it stopped. Existing results are never replaced without --force: a DIR whose images were done with other
    thresholds, or that holds submission.csv/findings.csv/run.json/annotated/ not made by a PneumoView run, is
    refused (exit status 2). --force redoes every image and replaces the outputs. Inputs are never modified.

    many GPUs or machines:
      torchrun --nproc_per_node 4 -m pneumoview predict IN --out OUT   (each rank takes a shard; rank 0 merges)
      pneumoview predict IN --out OUT --shard K/N                       (job arrays; then --merge-only)

    exit status: 0 all images done; 1 finished but some files failed (listed in run.json); 2 usage or setup error.
    """
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="analyse images and write submission.csv, findings.csv, annotated PNGs and run.json",
        description="Analyse chest X-rays (DICOM, DICOMDIR, PNG, JPEG) with the classifier, segmentation ensemble "
        "and detector. Research use only — not for diagnosis.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="folders (searched recursively) or files"
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument(
        "--force", action="store_true", help="redo every image and replace the results already in DIR"
    )
    p.add_argument("--no-png", action="store_true", help="skip the annotated PNGs")
    p.add_argument(
        "--include-identifiers",
        action="store_true",
        help="use PatientID as patientId and add patient identifier columns (off by default: privacy)",
    )
    p.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default 4)"
    )
    p.add_argument("--shard", default=None, metavar="K/N", help="process only shard K of N (0-based)")
    p.add_argument(
        "--merge-only", action="store_true", help="only rebuild the CSVs/run.json from DIR's journal"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dicom",
        action="store_true",
        help="also write DICOM results for DICOM inputs into DIR/dicom/: SR always, SEG when the mask has a pixel",
    )
    p.add_argument("--gsps", action="store_true", help="with --dicom: also a GSPS drawing the boxes")
    p.add_argument(
        "--probability-map",
        action="store_true",
        help="with --dicom: the SEG also holds the probability map (FRACTIONAL, PROBABILITY)",
    )
    add_threshold_options(p)
    add_model_options(p)
    p.set_defaults(run=run)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"pneumoview predict: --shard must look like K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise SystemExit(f"pneumoview predict: --shard {text}: K must be between 0 and N-1")
    return k, n


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run(args: argparse.Namespace) -> int:
    from pneumoview.batch import collect_inputs, finalize, iter_batch, output_conflict, shard
    from pneumoview.errors import ModelError, PneumoViewError
    from pneumoview.output_folder import output_folder_problem

    try:
        thresholds, source = thresholds_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"pneumoview predict: bad thresholds: {exc}", file=sys.stderr)
        return 2
    shard_arg = _parse_shard(args.shard)
    if (args.gsps or args.probability_map) and not args.dicom:
        print("pneumoview predict: --gsps and --probability-map need --dicom", file=sys.stderr)
        return 2
    dicom = None
    if args.dicom:
        from pneumoview.dicom_results.batch_outputs import DicomOptions

        dicom = DicomOptions(gsps=args.gsps, probability_map=args.probability_map)
    out = args.out
    if any(Path(i).resolve() == out.resolve() for i in args.inputs):
        print(
            "pneumoview predict: --out must not be an input folder (inputs are never written to)",
            file=sys.stderr,
        )
        return 2
    for i in args.inputs:
        if not Path(i).exists():
            print(f"pneumoview predict: {i}: no such file or folder", file=sys.stderr)
            return 2
    problem = output_folder_problem(out)  # before the models load: a bad --out must cost nothing
    if problem is not None:
        print(f"pneumoview predict: {problem}", file=sys.stderr)
        return 2
    run_info = {"thresholds_source": source}
    try:
        ignored: list[Path] = []
        inputs = collect_inputs(args.inputs, ignored)
    except FileNotFoundError as exc:
        print(f"pneumoview predict: {exc}", file=sys.stderr)
        return 2
    if ignored:
        print(
            f"note: {len(ignored)} document file(s) (e.g. {ignored[0].name}) are not images and were left out"
        )
    if not inputs:
        print(f"pneumoview predict: no images found in {', '.join(map(str, args.inputs))}", file=sys.stderr)
        return 2
    if not args.force and not args.merge_only:
        conflict = output_conflict(out, thresholds)
        if conflict is not None:
            print(f"pneumoview predict: {conflict}", file=sys.stderr)
            return 2
    if args.merge_only:
        summary = finalize(out, inputs, None, thresholds, run_info=run_info)
        print(f"merged {summary.done} done, {len(summary.failed)} failed of {summary.total} into {out}")
        return summary.exit_status

    rank, world = _distributed()
    mine = inputs
    if world > 1:
        mine = shard(inputs, rank, world)
    elif shard_arg is not None:
        mine = shard(inputs, *shard_arg)
    try:
        engine = engine_from_args(args)
        if world > 1 and engine.device.startswith("cuda"):
            engine.use_device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}")
    except (PneumoViewError, ModelError) as exc:
        print(f"pneumoview predict: cannot set up the models: {exc}", file=sys.stderr)
        return 2
    problems = {k: v for k, v in engine.available_stages().items() if v is not None}
    if len(problems) == 3:
        print("pneumoview predict: no model can run:", file=sys.stderr)
        for stage, why in problems.items():
            print(f"  {stage}: {why}", file=sys.stderr)
        return 2
    if rank == 0:
        for stage, why in problems.items():
            print(f"note: {stage} will be skipped: {why}", file=sys.stderr)
        print(thresholds_line(thresholds, source))

    progress = _progress_bar(len(mine), disable=args.quiet or rank != 0)
    failed = skipped = 0
    single_writer = world == 1 and shard_arg is None
    gen = iter_batch(
        mine,
        out,
        engine,
        thresholds,
        force=args.force,
        write_png=not args.no_png,
        include_identifiers=args.include_identifiers,
        chunk=max(1, args.batch_size),
        finalize_outputs=single_writer,
        run_info=run_info,
        dicom=dicom,
    )
    try:
        for p in gen:
            failed += p.item.status == "failed"
            if p.item.status == "skipped":  # not analysed: kept out of the bar, so its img/s is the real rate
                skipped += 1
                progress.total -= 1
                progress.set_postfix(failed=failed, skipped=skipped, refresh=True)
                continue
            progress.set_postfix(failed=failed, refresh=False)
            progress.update(1)
    except KeyboardInterrupt:
        gen.close()
        progress.close()
        print(
            f"\ninterrupted: finished images are kept in {out}; run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    progress.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank != 0:
            dist.destroy_process_group()
            return 0
    if not single_writer and shard_arg is not None:
        print(
            f"shard {args.shard} finished; merge all shards with: pneumoview predict ... --out {out} --merge-only"
        )
        return 1 if failed else 0
    summary = (
        finalize(out, inputs, engine, thresholds, analysed=len(mine), run_info=run_info)
        if not single_writer
        else None
    )
    if summary is None:
        from pneumoview.batch import read_summary

        summary = read_summary(out)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    print(_summary_line(summary, skipped if world == 1 else 0, out))
    if dicom is not None:
        n_dicom = len(list((out / "dicom").glob("*.dcm")))
        print(f"DICOM results: {n_dicom} file(s) in {out / 'dicom'} (listed in run.json)")
    for path, why in summary.failed[:20]:
        print(f"  failed: {path}: {why}")
    if len(summary.failed) > 20:
        print(f"  … and {len(summary.failed) - 20} more (see run.json)")
    _print_header_warnings(out)
    return summary.exit_status


def _print_header_warnings(out: Path) -> None:
    """One line on stderr when some images are not adult frontal chest radiographs by their header."""
    import json

    warned = json.loads((out / "run.json").read_text(encoding="utf-8")).get("warnings", [])
    if warned:
        first = warned[0]
        print(
            f"warning: {len(warned)} image(s) are not adult frontal chest radiographs by their header, so their "
            f"findings are unsupported (e.g. {Path(first['path']).name}: {first['warnings'][0].split(';')[0]}); "
            "see the warnings column of findings.csv and run.json",
            file=sys.stderr,
        )


def _summary_line(summary, skipped: int, out: Path) -> str:
    """ "N of T images analysed, F failed; outputs in …", saying how many were already done and skipped, and listing
    annotated/ only when it holds PNGs."""
    analysed = summary.done - skipped
    parts = [f"{skipped} already done, skipped"] if skipped else []
    if analysed or not skipped:
        parts.append(f"{analysed} of {summary.total} images analysed")
    parts.append(f"{len(summary.failed)} failed")
    files = ["submission.csv", "findings.csv"]
    annotated = out / "annotated"
    if annotated.is_dir() and any(annotated.glob("*.png")):
        files.append("annotated/")
    files.append("run.json")
    return f"{', '.join(parts)}; outputs in {out} ({', '.join(files)})"


def _progress_bar(total: int, disable: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="img", desc="analysing", disable=disable, file=sys.stderr, dynamic_ncols=True
    )
