"""``pneumoview pacs echo|find|get|send``: talk to a PACS from scripts.

The peer is given on the command line (``--host --port --aet [--our-aet] [--our-port] [--move]`` for DIMSE,
``--url`` for DICOMweb) or by the name of a peer saved in the viewer's settings (``--peer NAME``).

Exit codes: 0 when everything worked; 1 when the command ran but some files or instances failed (each is listed
on stderr); 2 for usage and setup errors, including a PACS that cannot be reached or that rejects us.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from pneumoview import RESEARCH_USE_NOTICE
from pneumoview.cli import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _add_peer_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "PACS peer", "a saved peer (--peer), a DIMSE peer (--host --port --aet) or a DICOMweb one (--url)"
    )
    g.add_argument("--peer", metavar="NAME", help="a peer saved in the viewer's Settings ▸ PACS peers")
    g.add_argument("--host", help="the PACS's host name or address (DIMSE)")
    g.add_argument("--port", type=int, help="the PACS's DICOM port (DIMSE; often 104 or 4242)")
    g.add_argument("--aet", help="the PACS's AE title (DIMSE, the called AE)")
    g.add_argument(
        "--our-aet", default="PNEUMOVIEW", help="our AE title (DIMSE, the calling AE; default %(default)s)"
    )
    g.add_argument(
        "--our-port", type=int, default=0, help="port of our storage SCP, for --move (the PACS must know it)"
    )
    g.add_argument("--move", action="store_true", help="retrieve with C-MOVE to --our-port instead of C-GET")
    g.add_argument("--url", help="DICOMweb service root, e.g. http://pacs:8042/dicom-web (instead of --host)")
    g.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds before a PACS counts as down"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pacs",
        help="echo, search, retrieve from and send to a PACS (DIMSE or DICOMweb)",
        description=(
            "Talk to a PACS. Exit codes: 0 all worked, 1 some files or instances failed (listed on stderr), "
            "2 usage or setup errors (bad options, PACS unreachable or rejecting us)."
        ),
        epilog=RESEARCH_USE_NOTICE,
    )
    sub = parser.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)

    p = sub.add_parser("echo", help="test the connection (C-ECHO, or a QIDO query for DICOMweb)")
    _add_peer_options(p)

    p = sub.add_parser("find", help="list studies (C-FIND or QIDO-RS)")
    _add_peer_options(p)
    p.add_argument("--patient-name", default="", help="patient name; * and ? are wildcards")
    p.add_argument("--patient-id", default="")
    p.add_argument("--date-from", type=_date, default=None, metavar="YYYY-MM-DD", help="first study date")
    p.add_argument("--date-to", type=_date, default=None, metavar="YYYY-MM-DD", help="last study date")
    p.add_argument("--modality", default="", help="a modality in the study (CR, DX …)")
    p.add_argument("--accession", default="", help="accession number")
    p.add_argument("--limit", type=int, default=0, help="at most N studies (0: all)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line and study (StudyInstanceUID, PatientName, PatientID, StudyDate, "
        "StudyTime, StudyDescription, AccessionNumber, ModalitiesInStudy, NumberOfStudyRelatedSeries, "
        "NumberOfStudyRelatedInstances)",
    )

    p = sub.add_parser(
        "get",
        help="retrieve studies into a folder (C-GET, C-MOVE or WADO-RS); resumable",
        description="Retrieve each study into OUT/<StudyInstanceUID>/<SOPInstanceUID>.dcm. Instances already "
        "there are not fetched again, so re-running after an interruption fetches only the rest.",
    )
    _add_peer_options(p)
    p.add_argument("study_uids", nargs="+", metavar="STUDY_UID")
    p.add_argument(
        "--out", type=Path, default=None, help="the folder (default: the PACS cache in the user data dir)"
    )

    p = sub.add_parser(
        "send",
        help="send DICOM files and folders (C-STORE or STOW-RS)",
        description="Send each DICOM file, and every DICOM file under each folder (other files in a folder are "
        "skipped). Objects keep their SOP Instance UIDs, so sending twice stores nothing twice.",
    )
    _add_peer_options(p)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.set_defaults(run=run)


def _date(text: str) -> dt.date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD or YYYYMMDD)")


def peer_from_args(args: argparse.Namespace):
    """The peer the options name; raises UsageError saying what is missing."""
    # lazy: the PACS stack (pynetdicom, DICOMweb) is loaded only when PACS is used
    from pneumoview.pacs import DimsePeer, WebPeer

    if args.peer:
        # lazy: the CLI imports every command module to build its parser, so their top level stays cheap
        from pneumoview.settings import load_settings

        peers = {p.name: p for p in load_settings().get_peers()}
        if args.peer not in peers:
            known = ", ".join(sorted(peers)) or "none saved yet"
            raise UsageError(
                f"no saved PACS peer named {args.peer!r} (saved: {known}); add it in Settings ▸ PACS"
            )
        return peers[args.peer]
    try:
        if args.url:
            return WebPeer("command line", args.url, timeout_s=args.timeout)
        missing = [f"--{n}" for n in ("host", "port", "aet") if not getattr(args, n)]
        if missing:
            raise UsageError(
                f"say which PACS: give {' '.join(missing)} (DIMSE), --url (DICOMweb) or --peer NAME"
            )
        return DimsePeer(
            "command line",
            args.host,
            args.port,
            args.aet,
            our_aet=args.our_aet,
            our_port=args.our_port,
            retrieve="move" if args.move else "get",
            timeout_s=args.timeout,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    # lazy: the PACS stack (pynetdicom, DICOMweb) is loaded only when PACS is used
    from pneumoview import pacs

    peer = peer_from_args(args)
    try:
        return _ACTIONS[args.pacs_command](args, peer)
    except (pacs.PacsUnreachable, pacs.AssociationRejected) as exc:
        print(f"pneumoview pacs {args.pacs_command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except pacs.PacsError as exc:
        print(f"pneumoview pacs {args.pacs_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # a malformed UID
        raise UsageError(str(exc)) from None


def _echo(args: argparse.Namespace, peer) -> int:
    # lazy: the PACS stack (pynetdicom, DICOMweb) is loaded only when PACS is used
    from pneumoview import pacs

    pacs.echo(peer)
    print(f"{peer.address}: OK")
    return EXIT_OK


def _find(args: argparse.Namespace, peer) -> int:
    # lazy: the PACS stack (pynetdicom, DICOMweb) is loaded only when PACS is used
    from pneumoview import pacs

    query = pacs.StudyQuery(
        patient_name=args.patient_name,
        patient_id=args.patient_id,
        date_from=args.date_from,
        date_to=args.date_to,
        modality=args.modality,
        accession=args.accession,
        limit=max(args.limit, 0),
    )
    studies = pacs.find_studies(peer, query)
    for s in studies:
        if args.json:
            print(json.dumps(s.to_dict()))
        else:
            n = "?" if s.n_instances is None else s.n_instances
            mods = "/".join(s.modalities) or "-"
            print(
                f"{s.study_uid}  {s.study_date or '-':8}  {mods:6}  {n:>4} inst.  {s.patient_id}  {s.patient_name}"
            )
    if not args.json:
        print(f"{len(studies)} study(ies)", file=sys.stderr)
    return EXIT_OK


def _get(args: argparse.Namespace, peer) -> int:
    # lazy: the PACS stack (pynetdicom, DICOMweb) is loaded only when PACS is used
    from pneumoview import pacs

    root = args.out if args.out is not None else pacs.cache_root()
    status = EXIT_OK
    for uid in args.study_uids:
        folder = pacs.study_folder(root, uid)
        try:
            result = pacs.retrieve_study(peer, uid, folder)
        except (pacs.PacsUnreachable, pacs.AssociationRejected):
            raise
        except pacs.PacsError as exc:
            print(f"{uid}: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        non_images = f", {len(result.non_images)} non-image object(s)" if result.non_images else ""
        print(
            f"{uid}: {len(result.fetched)} fetched, {len(result.already_present)} already there{non_images} "
            f"→ {folder}"
        )
        for sop_uid, reason in result.failed:
            print(f"{uid}: instance {sop_uid}: {reason}", file=sys.stderr)
        if result.failed:
            status = EXIT_FAILED
    return status


def _send(args: argparse.Namespace, peer) -> int:
    # lazy: the PACS stack (pynetdicom, DICOMweb) is loaded only when PACS is used
    from pneumoview import pacs

    result = pacs.send_files(peer, args.paths)
    skipped = f", {len(result.skipped)} non-DICOM file(s) skipped" if result.skipped else ""
    print(f"{peer.address}: {len(result.sent)} sent, {len(result.failed)} failed{skipped}")
    for path, reason in result.failed:
        print(f"{path}: {reason}", file=sys.stderr)
    return EXIT_FAILED if result.failed else EXIT_OK


_ACTIONS = {"echo": _echo, "find": _find, "get": _get, "send": _send}
