"""``pneumoview deidentify IN --out DIR``: de-identified copies of DICOM images (DICOM PS3.15 Annex E basic profile)."""

from __future__ import annotations

import argparse
import secrets
import sys
import textwrap
from pathlib import Path

EPILOG = textwrap.dedent(
    """
    what changes (DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile):
      names, IDs, addresses, institution, physicians, operators, descriptions, comments, request details: removed
      or emptied; Patient ID and Patient's Name become one pseudonym (ANON-…) per patient
      dates and times: removed or emptied (--shift-dates N shifts every date by N days instead; birth date removed)
      UIDs: replaced by 2.25.… UIDs from a keyed hash, the same in every copy, so series and studies stay together
      private attributes, overlays, curves: removed
      added: Patient Identity Removed = YES, De-identification Method and its Code Sequence (DCM 113100)
      pixels: copied byte for byte; images with Burned In Annotation = YES are not copied (see --allow-burned-in)

    copies are written as DIR/<study UID>/<series UID>/<instance UID>.dcm (no input name appears); PNG/JPEG
    files, DICOMDIRs and non-image objects are skipped. Inputs are never modified.

    The UID key is random for each run; give --key-file to map UIDs the same way in several runs (keep that file
    secret: with it, anyone can check whether a given original UID is in the copies).

    exit status: 0 every DICOM image copied; 1 some files were skipped (listed); 2 usage error.
    """
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deidentify",
        help="write de-identified copies of DICOM images (DICOM PS3.15 basic profile)",
        description="Write de-identified copies of the DICOM images in INPUT folders/files into DIR, following the "
        "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile. Research use only.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="folders (searched recursively) or files"
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument(
        "--shift-dates",
        type=int,
        default=None,
        metavar="DAYS",
        help="shift dates by DAYS (may be negative) instead of removing them (Modified Dates option, DCM 113107)",
    )
    p.add_argument(
        "--keep-patient-characteristics",
        action="store_true",
        help="keep age, sex, size and weight (Retain Patient Characteristics option, DCM 113108)",
    )
    p.add_argument(
        "--key-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="secret key (at least 16 bytes) for the UID and pseudonym hashes; created with a random key if missing",
    )
    p.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="also copy images whose header says the pixels carry burned-in text (check them yourself)",
    )
    p.add_argument("--force", action="store_true", help="replace copies that already exist in DIR")
    p.set_defaults(run=run)


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    if path.exists():
        key = path.read_bytes()
        if len(key) < 16:
            raise ValueError(f"{path}: the key file holds {len(key)} bytes; it needs at least 16")
        return key

    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.export import atomic_write_bytes

    key = secrets.token_hex(32).encode("ascii")
    atomic_write_bytes(path, key, private=True)  # a secret: 0600
    return key


def run(args: argparse.Namespace) -> int:
    # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
    from pneumoview.deidentify import DeidentifyOptions, deidentify_tree

    try:
        key = _key(args.key_file)
    except (OSError, ValueError) as exc:
        print(f"pneumoview deidentify: {exc}", file=sys.stderr)
        return 2
    options = DeidentifyOptions(
        date_shift_days=args.shift_dates,
        keep_patient_characteristics=args.keep_patient_characteristics,
        allow_burned_in=args.allow_burned_in,
    )
    try:
        report = deidentify_tree(args.inputs, args.out, key=key, options=options, force=args.force)
    except (FileNotFoundError, ValueError) as exc:
        print(f"pneumoview deidentify: {exc}", file=sys.stderr)
        return 2
    print(f"{len(report.written)} de-identified cop{'y' if len(report.written) == 1 else 'ies'} written to "
          f"{args.out}; {len(report.skipped)} file(s) skipped")  # fmt: skip
    for path, why in report.skipped[:50]:
        print(f"  skipped: {path}: {why}")
    if len(report.skipped) > 50:
        print(f"  … and {len(report.skipped) - 50} more")
    return 1 if report.skipped else 0
