"""``pneumoview predict``: analyse folders/files and write RSNA submission, findings, annotated PNGs and run.json."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


class _UsageError(Exception):
    """A usage or setup error: printed after ``pneumoview predict: `` on stderr, exit status 2."""


@dataclass
class _Job:
    """One ``pneumoview predict`` run: what to analyse (``mine``: this rank's or shard's share of ``inputs``),
    where, with which thresholds, and its place among ranks (torchrun) or shards (``--shard``)."""

    args: argparse.Namespace
    out: Path
    inputs: list[Any]
    thresholds: Any
    source: str
    run_info: dict[str, Any]
    dicom: Any
    shard_arg: tuple[int, int] | None
    rank: int = 0
    world: int = 1
    mine: list[Any] = field(default_factory=list)

    @property
    def single_writer(self) -> bool:
        """True when this process writes the CSVs and run.json itself (no ranks, no shards)."""
        return self.world == 1 and self.shard_arg is None


def run(args: argparse.Namespace) -> int:
    try:
        job = _prepare(args)
        if args.merge_only:
            return _merge_only(job)
        job.rank, job.world = _distributed()
        job.mine = _my_share(job)
        engine = _engine(job)
    except _UsageError as exc:
        print(f"pneumoview predict: {exc}", file=sys.stderr)
        return 2
    counts = _analyse(job, engine)
    if counts is None:
        return 1
    return _conclude(job, engine, *counts)


def _prepare(args: argparse.Namespace) -> _Job:
    """Check the options, the inputs and the output folder before any model loads (a bad --out must cost
    nothing); raises :class:`_UsageError`."""
    from pneumoview.batch import collect_inputs, output_conflict
    from pneumoview.output_folder import output_folder_problem

    try:
        thresholds, source = thresholds_from_args(args)
    except (ValueError, OSError) as exc:
        raise _UsageError(f"bad thresholds: {exc}") from None
    shard_arg = _parse_shard(args.shard)
    if (args.gsps or args.probability_map) and not args.dicom:
        raise _UsageError("--gsps and --probability-map need --dicom")
    dicom = None
    if args.dicom:
        from pneumoview.dicom_results.batch_outputs import DicomOptions

        dicom = DicomOptions(gsps=args.gsps, probability_map=args.probability_map)
    out = args.out
    if any(Path(i).resolve() == out.resolve() for i in args.inputs):
        raise _UsageError("--out must not be an input folder (inputs are never written to)")
    for i in args.inputs:
        if not Path(i).exists():
            raise _UsageError(f"{i}: no such file or folder")
    problem = output_folder_problem(out)
    if problem is not None:
        raise _UsageError(problem)
    try:
        ignored: list[Path] = []
        inputs = collect_inputs(args.inputs, ignored)
    except FileNotFoundError as exc:
        raise _UsageError(str(exc)) from None
    if ignored:
        print(
            f"note: {len(ignored)} document file(s) (e.g. {ignored[0].name}) are not images and were left out"
        )
    if not inputs:
        raise _UsageError(f"no images found in {', '.join(map(str, args.inputs))}")
    if not args.force and not args.merge_only:
        conflict = output_conflict(out, thresholds)
        if conflict is not None:
            raise _UsageError(conflict)
    return _Job(args, out, inputs, thresholds, source, {"thresholds_source": source}, dicom, shard_arg)


def _merge_only(job: _Job) -> int:
    from pneumoview.batch import finalize

    summary = finalize(job.out, job.inputs, None, job.thresholds, run_info=job.run_info)
    print(f"merged {summary.done} done, {len(summary.failed)} failed of {summary.total} into {job.out}")
    return summary.exit_status


def _my_share(job: _Job) -> list[Any]:
    from pneumoview.batch import shard

    if job.world > 1:
        return shard(job.inputs, job.rank, job.world)
    if job.shard_arg is not None:
        return shard(job.inputs, *job.shard_arg)
    return job.inputs


def _engine(job: _Job) -> Any:
    """The models (on this rank's GPU under torchrun); raises :class:`_UsageError` when none can run."""
    from pneumoview.errors import ModelError, PneumoViewError

    try:
        engine = engine_from_args(job.args)
        if job.world > 1 and engine.device.startswith("cuda"):
            engine.use_device(f"cuda:{int(os.environ.get('LOCAL_RANK', job.rank))}")
    except (PneumoViewError, ModelError) as exc:
        raise _UsageError(f"cannot set up the models: {exc}") from None
    problems = {k: v for k, v in engine.available_stages().items() if v is not None}
    if len(problems) == 3:
        raise _UsageError(
            "no model can run:" + "".join(f"\n  {stage}: {why}" for stage, why in problems.items())
        )
    if job.rank == 0:
        for stage, why in problems.items():
            print(f"note: {stage} will be skipped: {why}", file=sys.stderr)
        print(thresholds_line(job.thresholds, job.source))
    return engine


def _analyse(job: _Job, engine: Any) -> tuple[int, int] | None:
    """Analyse this process's images with a progress bar; ``(failed, skipped)``, or None when interrupted."""
    from pneumoview.batch import iter_batch

    args = job.args
    progress = _progress_bar(len(job.mine), disable=args.quiet or job.rank != 0)
    failed = skipped = 0
    gen = iter_batch(
        job.mine,
        job.out,
        engine,
        job.thresholds,
        force=args.force,
        write_png=not args.no_png,
        include_identifiers=args.include_identifiers,
        chunk=max(1, args.batch_size),
        finalize_outputs=job.single_writer,
        run_info=job.run_info,
        dicom=job.dicom,
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
            f"\ninterrupted: finished images are kept in {job.out}; run the same command again to resume",
            file=sys.stderr,
        )
        return None
    progress.close()
    return failed, skipped


def _conclude(job: _Job, engine: Any, failed: int, skipped: int) -> int:
    """Merge (rank 0) or hand over (other ranks, shards), print the summary; returns the exit status."""
    from pneumoview.batch import finalize, read_summary

    out, world = job.out, job.world
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if job.rank != 0:
            dist.destroy_process_group()
            return 0
    if not job.single_writer and job.shard_arg is not None:
        print(
            f"shard {job.args.shard} finished; merge all shards with: pneumoview predict ... --out {out} --merge-only"
        )
        return 1 if failed else 0
    if job.single_writer:
        summary = read_summary(out)
    else:
        summary = finalize(
            out, job.inputs, engine, job.thresholds, analysed=len(job.mine), run_info=job.run_info
        )
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    print(_summary_line(summary, skipped if world == 1 else 0, out))
    if job.dicom is not None:
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
